//! Shared fixtures for integration tests: the real default model, loaded once per test binary.
//!
//! Candle's CPU threads spin, so tests in one binary must not run the model at the same time:
//! every engine accessor hands out a guard that serialises model work.
#![allow(dead_code)]

pub mod app;
pub mod fake_openai;
pub mod process;
pub mod python;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use hearth::engine::generate::Engine;
use hearth::engine::loader::{DeviceChoice, LoadOptions};
use hearth::engine::source::ModelSource;

/// Path of the default model (override with HEARTH_TEST_MODEL).
pub fn model_path() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// llama.cpp's reference outputs for the default model.
pub fn reference() -> serde_json::Value {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2-q4_1-llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("reference fixture"))
        .expect("reference json")
}

/// The pieces llama.cpp ranks top five for the first generated token of the reference chat
/// whose single user message is `question`.
pub fn first_step_candidates(question: &str) -> Vec<String> {
    let r = reference();
    let chat = r["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .find(|c| {
            c["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 1 && m[0]["content"] == question)
        })
        .unwrap_or_else(|| panic!("no reference chat asks {question:?}"));
    chat["first_step_top5"]
        .as_array()
        .expect("top5")
        .iter()
        .map(|c| c["piece"].as_str().expect("piece").to_string())
        .collect()
}

static MODEL_LOCK: Mutex<()> = Mutex::new(());

/// Taken by tests whose server (or CLI process) runs the model, as the engine accessors take
/// it for in-process engines: model threads use all cores, so such tests take turns across
/// every module of the binary.
pub fn serial() -> MutexGuard<'static, ()> {
    lock()
}

/// Holds the model lock while a test uses an engine.
pub struct Guarded<'a> {
    engine: &'a Engine,
    _guard: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Guarded<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine
    }
}

fn lock() -> MutexGuard<'static, ()> {
    MODEL_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn load(exact: bool) -> Engine {
    Engine::load(
        &ModelSource::Gguf(model_path()),
        &LoadOptions {
            exact,
            device: DeviceChoice::Cpu,
        },
    )
    .expect("load the default model (run scripts/fetch-model.sh)")
}

/// The default model with weights exactly as shipped.
pub fn exact_engine() -> Guarded<'static> {
    static E: OnceLock<Engine> = OnceLock::new();
    let guard = lock();
    Guarded {
        engine: E.get_or_init(|| load(true)),
        _guard: guard,
    }
}

/// The default model in fast mode (the server's default).
pub fn fast_engine() -> Guarded<'static> {
    static E: OnceLock<Engine> = OnceLock::new();
    let guard = lock();
    Guarded {
        engine: E.get_or_init(|| load(false)),
        _guard: guard,
    }
}

/// The default model with a Q8_0 KV cache (`model.kv_cache = "q8_0"`).
pub fn q8_kv_engine() -> Guarded<'static> {
    static E: OnceLock<Engine> = OnceLock::new();
    let guard = lock();
    Guarded {
        engine: E.get_or_init(|| {
            load(false)
                .with_kv_type(hearth::engine::model::KvType::Q8_0)
                .expect("q8_0 KV cache")
        }),
        _guard: guard,
    }
}

/// The fast-mode engine as an `Arc` (for the scheduler), with the model lock held.
pub fn shared_fast_engine() -> (Arc<Engine>, MutexGuard<'static, ()>) {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    let guard = lock();
    (E.get_or_init(|| Arc::new(load(false))).clone(), guard)
}

/// The exact-mode engine as an `Arc`, with the model lock held.
pub fn shared_exact_engine() -> (Arc<Engine>, MutexGuard<'static, ()>) {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    let guard = lock();
    (E.get_or_init(|| Arc::new(load(true))).clone(), guard)
}

/// With `HEARTH_TEST_STORE=postgres`, point `config` at a PostgreSQL schema of its own (one per
/// data directory, so a restart on the same directory finds its data again) instead of the
/// SQLite file: the same server tests then run on the other store. Schemas live as long as the
/// test process; the test script's throwaway cluster takes them away.
pub fn use_test_store(config: &mut hearth::config::Config) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    if std::env::var("HEARTH_TEST_STORE").as_deref() != Ok("postgres") {
        return;
    }
    static SCHEMAS: Mutex<Option<HashMap<std::path::PathBuf, String>>> = Mutex::new(None);
    let mut schemas = SCHEMAS.lock().unwrap_or_else(|p| p.into_inner());
    let url = schemas
        .get_or_insert_with(HashMap::new)
        .entry(config.storage.data_dir.clone())
        .or_insert_with(|| {
            let scratch = hearth::store::scratch::Scratch::new()
                .expect("HEARTH_TEST_STORE=postgres needs HEARTH_TEST_POSTGRES");
            let url = scratch.url.clone();
            std::mem::forget(scratch);
            url
        })
        .clone();
    config.storage.url = Some(url);
}

/// Start the real server (in this process, on its own thread and runtime) on 127.0.0.1:0 with the
/// default model on the CPU and a fresh data directory; `tweak` adjusts the config first.
/// Returns the address once it listens.
pub fn spawn_server(
    tweak: impl FnOnce(&mut hearth::config::Config) + Send + 'static,
) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut config = hearth::config::Config::default();
        config.model.path = model_path().to_string_lossy().into_owned();
        config.model.device = DeviceChoice::Cpu;
        config.server.port = 0;
        // A fresh SQLite file per server, not ./data.
        config.storage.data_dir = tempfile::tempdir().expect("data dir").keep();
        use_test_store(&mut config);
        tweak(&mut config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = hearth::app::App::build(config).await.expect("build app");
            tx.send(app.local_addr().expect("addr")).expect("send addr");
            app.run_until(std::future::pending()).await.expect("serve");
        });
    });
    rx.recv_timeout(std::time::Duration::from_secs(180))
        .expect("server started")
}

/// The value of one sample line of `/metrics` (name with labels, exactly as rendered); 0 when
/// the series does not exist yet.
pub async fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    metric_with_key(addr, series, None).await
}

/// [`metric`] on a server that needs a credential for `/metrics`.
pub async fn metric_with_key(addr: std::net::SocketAddr, series: &str, key: Option<&str>) -> f64 {
    let mut req = reqwest::Client::new().get(format!("http://{addr}/metrics"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().await.expect("get /metrics");
    // A refused scrape must fail the test, not read as "no such series".
    assert_eq!(r.status(), 200, "GET /metrics");
    let text = r.text().await.expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}
