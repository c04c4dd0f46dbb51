//! Serving benchmark over the WebSocket API: N concurrent streams (1, 4, 8) against the real
//! server on 127.0.0.1 with the default model. Reports aggregate decode throughput (and its
//! ratio to one stream, measured in the same run), time to first token, and **delivery
//! latency**: for every token, the client's receive time minus the instant the model thread
//! sampled it (`"timestamps": true` makes token frames carry `sampled_at_us`). Server and client
//! share this process, hence one clock.
//!
//! Run: `cargo bench --bench serve` (under `cargo test` it runs one tiny round as a smoke test).
//! Options through the environment: `HEARTH_BENCH_LEVELS=1,4,8`, `HEARTH_BENCH_TOKENS=64`,
//! `HEARTH_BENCH_NICE=5` (the compute threads' `model.nice`; a separate process per value).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hearth::config::Config;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn model_path() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

fn spawn_server(max_active: usize) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut config = Config::default();
        config.model.path = model_path().to_string_lossy().into_owned();
        config.server.port = 0;
        // A fresh SQLite file per server, not ./data.
        config.storage.data_dir = tempfile::tempdir().expect("data dir").keep();
        config.server.max_active = max_active;
        if let Some(nice) = std::env::var("HEARTH_BENCH_NICE")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            config.model.nice = nice;
        }
        config.server.queue_capacity = 64;
        // Every stream starts from the same prompt; reuse would make later levels cheaper.
        config.server.prefix_cache_mb = 0;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = hearth::app::App::build(config).await.expect("build app");
            tx.send(app.local_addr().expect("addr")).expect("send addr");
            app.run_until(std::future::pending()).await.expect("serve");
        });
    });
    rx.recv_timeout(Duration::from_secs(180))
        .expect("server started")
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// One stream's figures.
struct StreamResult {
    ttft: Duration,
    tokens: usize,
    /// Microseconds from sampling to receipt, per token.
    delivery_us: Vec<i64>,
}

async fn one_stream(addr: SocketAddr, i: usize, tokens: usize) -> StreamResult {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    let frame = json!({
        "type": "generate",
        "id": format!("s{i}"),
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "user", "content": format!("Tell me a long story about a lighthouse keeper number {i}.")}],
        "max_tokens": tokens,
        "temperature": 0.8,
        "seed": i,
        // The end-of-text tokens are banned so every stream generates exactly `tokens`.
        "logit_bias": {"0": -100, "2": -100},
        "timestamps": true,
    });
    let start = Instant::now();
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
    let mut ttft = None;
    let mut delivery_us = Vec::new();
    let mut count = 0;
    while let Some(msg) = ws.next().await {
        let Ok(Message::Text(text)) = msg else {
            continue;
        };
        let received = now_us();
        let v: Value = serde_json::from_str(&text).expect("json frame");
        match v["type"].as_str() {
            Some("token") => {
                ttft.get_or_insert_with(|| start.elapsed());
                count += 1;
                if let Some(at) = v["sampled_at_us"].as_i64() {
                    delivery_us.push(received - at);
                }
            }
            Some("done") => break,
            Some("error") => panic!("error frame: {v}"),
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    StreamResult {
        ttft: ttft.unwrap_or_default(),
        tokens: count,
        delivery_us,
    }
}

fn percentile<T: Copy + Ord>(sorted: &[T], p: f64) -> T {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let levels: Vec<usize> = if bench {
        std::env::var("HEARTH_BENCH_LEVELS")
            .unwrap_or_else(|_| "1,4,8".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    } else {
        vec![1]
    };
    let tokens: usize = if bench {
        std::env::var("HEARTH_BENCH_TOKENS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64)
    } else {
        4
    };
    let max_active = levels.iter().copied().max().unwrap_or(1);
    let addr = spawn_server(max_active);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // Warm up (first-use allocations, page faults).
    rt.block_on(one_stream(addr, 999, 4));
    println!(
        "{:>7} {:>12} {:>8} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "streams",
        "agg tok/s",
        "vs 1",
        "TTFT p50",
        "TTFT p99",
        "deliver p50",
        "deliver p99",
        "deliver max"
    );
    let mut single = None;
    for &n in &levels {
        let started = Instant::now();
        let results: Vec<StreamResult> = rt.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|i| tokio::spawn(one_stream(addr, i, tokens)))
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("stream task"));
            }
            out
        });
        let wall = started.elapsed().as_secs_f64();
        let total: usize = results.iter().map(|r| r.tokens).sum();
        let rate = total as f64 / wall;
        let base = *single.get_or_insert(rate);
        let mut ttfts: Vec<Duration> = results.iter().map(|r| r.ttft).collect();
        ttfts.sort();
        let mut delivery: Vec<i64> = results
            .iter()
            .flat_map(|r| r.delivery_us.iter().copied())
            .collect();
        delivery.sort();
        assert!(!delivery.is_empty(), "no timestamped tokens");
        println!(
            "{:>7} {:>12.1} {:>7.2}x {:>8.0}ms {:>8.0}ms {:>10}us {:>10}us {:>10}us",
            n,
            rate,
            rate / base,
            percentile(&ttfts, 0.5).as_secs_f64() * 1e3,
            percentile(&ttfts, 0.99).as_secs_f64() * 1e3,
            percentile(&delivery, 0.5),
            percentile(&delivery, 0.99),
            delivery[delivery.len() - 1],
        );
    }
}
