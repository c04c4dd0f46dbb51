//! What Hearth adds in front of a remote OpenAI-compatible server: the same streamed and plain
//! chat requests sent straight to a loopback server that speaks the protocol
//! (tests/integration/common/fake_openai.rs, replying at once) and through Hearth, which routes them to it
//! with async-openai. Requests alternate between the two paths in one process, and the report
//! gives time to first content chunk and to the whole reply for each, and their ratio.
//!
//! Run: `cargo bench --bench remote` (under `cargo test` it runs a few requests as a smoke
//! test). `HEARTH_BENCH_REQUESTS=300` sets the requests per path.

#[path = "../tests/integration/common/mod.rs"]
mod common;
use common::fake_openai;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth::config::{BackendKind, BackendSettings};
use serde_json::json;

/// The real server (tests/integration/common's start-up) with `gpt-fake` routed to the stand-in.
fn spawn_hearth(remote_url: String) -> SocketAddr {
    common::spawn_server(move |config| {
        let mut remote = BackendSettings::local_default();
        remote.name = "remote".into();
        remote.kind = BackendKind::Openai;
        remote.base_url = remote_url;
        remote.models = vec!["gpt-fake".into()];
        config.backends = vec![remote];
    })
}

/// Time to the first content chunk (streamed) and to the end of the reply.
async fn one(client: &reqwest::Client, base: &str, stream: bool) -> (Duration, Duration) {
    let body = json!({
        "model": "gpt-fake",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": stream,
    });
    let started = Instant::now();
    let r = client
        .post(format!("{base}/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert!(r.status().is_success(), "{}", r.status());
    if !stream {
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            fake_openai::reply_text()
        );
        let t = started.elapsed();
        return (t, t);
    }
    let mut first = None;
    let mut text = Vec::new();
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        if first.is_none() && String::from_utf8_lossy(&chunk).contains("\"content\":\"Hello") {
            first = Some(started.elapsed());
        }
        text.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    assert!(String::from_utf8_lossy(&text).contains("[DONE]"));
    (first.unwrap_or(total), total)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let requests: usize = if bench {
        std::env::var("HEARTH_BENCH_REQUESTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300)
    } else {
        3
    };
    let fake = fake_openai::FakeOpenAi::start(Duration::ZERO);
    let hearth = spawn_hearth(fake.base_url.clone());
    let via = format!("http://{hearth}/v1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    println!(
        "{:<8} {:<7} {:>11} {:>11} {:>11} {:>11}",
        "mode", "path", "first p50", "first p99", "total p50", "total p99"
    );
    for stream in [true, false] {
        let mut direct = (Vec::new(), Vec::new());
        let mut proxied = (Vec::new(), Vec::new());
        rt.block_on(async {
            // Warm both paths (connections, first-use allocations).
            for _ in 0..5.min(requests) {
                one(&client, &fake.base_url, stream).await;
                one(&client, &via, stream).await;
            }
            for _ in 0..requests {
                let (f, t) = one(&client, &fake.base_url, stream).await;
                direct.0.push(f);
                direct.1.push(t);
                let (f, t) = one(&client, &via, stream).await;
                proxied.0.push(f);
                proxied.1.push(t);
            }
        });
        let mode = if stream { "stream" } else { "plain" };
        let mut p50s = Vec::new();
        for (name, (mut first, mut total)) in [("direct", direct), ("hearth", proxied)] {
            first.sort();
            total.sort();
            println!(
                "{mode:<8} {name:<7} {:>9.3}ms {:>9.3}ms {:>9.3}ms {:>9.3}ms",
                percentile(&first, 0.5).as_secs_f64() * 1e3,
                percentile(&first, 0.99).as_secs_f64() * 1e3,
                percentile(&total, 0.5).as_secs_f64() * 1e3,
                percentile(&total, 0.99).as_secs_f64() * 1e3,
            );
            p50s.push((percentile(&first, 0.5), percentile(&total, 0.5)));
        }
        let added_first = p50s[1].0.saturating_sub(p50s[0].0);
        let added_total = p50s[1].1.saturating_sub(p50s[0].1);
        println!(
            "{mode:<8} Hearth adds {:.3} ms to the first chunk and {:.3} ms to the whole reply at p50 ({:.2}x direct)",
            added_first.as_secs_f64() * 1e3,
            added_total.as_secs_f64() * 1e3,
            p50s[1].1.as_secs_f64() / p50s[0].1.as_secs_f64().max(1e-9),
        );
    }
}
