//! The real server on 127.0.0.1:0 with the real model, driven by the official `openai` Python SDK:
//! runs tests/python/test_openai_sdk.py (stdlib unittest) against it and expects it to pass.
//!
//! First as users run it: a server on the default config (no key required) and the SDK with a
//! dummy key (`api_key="unused"`), with the local model and, unchanged, with a model the same
//! server routes to a remote OpenAI-compatible backend (the loopback stand-in in
//! tests/integration/common/fake_openai.rs), to show the SDK sees no difference. Then against a server that
//! requires `server.api_key`, with that key.
//!
//! The Python comes from HEARTH_TEST_PYTHON, else the repo's .venv (made by
//! scripts/python-env.sh, which pins the SDK version).

use crate::common;
use crate::common::fake_openai;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearth::config::{BackendKind, BackendSettings};

/// The id the server gives the default model (its file stem).
const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";
/// The key the keyed server requires and the SDK sends to it.
const API_KEY: &str = "sk-sdk-test";
/// What users pass where no key is needed (the SDK refuses to start without one).
const DUMMY_KEY: &str = "unused";
/// The whole Python suite must finish within this.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(600);

/// The id of the model served by the remote backend.
const REMOTE_MODEL: &str = "gpt-fake";

/// The default-config server (one per test binary): the local model, and `REMOTE_MODEL`
/// routed to the fake OpenAI server.
fn server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| spawn_server(None))
}

/// The same, with `server.api_key` set.
fn keyed_server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| spawn_server(Some(API_KEY)))
}

fn spawn_server(api_key: Option<&'static str>) -> SocketAddr {
    let remote = fake_openai::FakeOpenAi::start(Duration::ZERO);
    common::spawn_server(move |config| {
        let mut backend = BackendSettings::local_default();
        backend.name = "remote".into();
        backend.kind = BackendKind::Openai;
        backend.base_url = remote.base_url.clone();
        backend.models = vec![REMOTE_MODEL.into()];
        config.backends = vec![backend];
        config.server.api_key = api_key.map(str::to_string);
        // The suite compares greedy outputs across requests (stream vs not, with and without a
        // stop string). Prefix reuse computes the prompt's last tokens in a different pass, and
        // with quantized activations that can change greedy text (seen: a temperature-0 chat
        // answer differed between the first request and a repeat with 36 cached tokens), so it is
        // off here as in tests/integration/server.rs. Every other setting is the default.
        config.server.prefix_cache_mb = 0;
    })
}

/// HEARTH_TEST_PYTHON, else the repo's .venv Python.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "no Python for the OpenAI SDK tests: {} is missing. Run ./scripts/python-env.sh \
         (creates .venv with the pinned openai package) or set HEARTH_TEST_PYTHON",
        venv.display()
    );
}

#[test]
fn the_official_openai_python_sdk_works_against_a_default_server_with_a_dummy_key() {
    let _model = common::serial();
    run_suite(server(), MODEL, DUMMY_KEY, false);
}

#[test]
fn the_same_sdk_suite_passes_with_a_remote_model() {
    let _model = common::serial();
    run_suite(server(), REMOTE_MODEL, DUMMY_KEY, false);
}

#[test]
fn the_sdk_suite_passes_against_a_server_that_requires_its_key() {
    let _model = common::serial();
    run_suite(keyed_server(), MODEL, API_KEY, true);
}

/// Run the Python suite against `model` on the server at `addr`, with `key`, and expect it to
/// pass.
fn run_suite(addr: SocketAddr, model: &str, key: &str, key_required: bool) {
    let python = python();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/python/test_openai_sdk.py");

    // stdout and stderr (where unittest reports) share one pipe, so lines keep their order.
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg("-v")
        .current_dir(&root)
        .env("HEARTH_BASE_URL", format!("http://{addr}/v1"))
        .env("HEARTH_API_KEY", key)
        .env("HEARTH_KEY_REQUIRED", if key_required { "1" } else { "0" })
        .env("HEARTH_MODEL", model)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("clone pipe"))
        .stderr(writer);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
    ] {
        command.env_remove(var);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
    // The Command still holds the pipe's write ends; drop them so the reader sees EOF.
    drop(command);

    // Echo Python's output as it comes (shown with --nocapture, and on failure) and keep it.
    let echo = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(reader).lines() {
            let line = line.unwrap_or_else(|e| format!("<unreadable output: {e}>"));
            println!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });

    let deadline = Instant::now() + PYTHON_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the OpenAI SDK tests ({model}) ran past {} s and were killed",
                PYTHON_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = echo.join().expect("output reader");
    assert!(
        status.success(),
        "the OpenAI SDK tests with {model} failed ({status}); the summary is above:\n{}",
        output
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
