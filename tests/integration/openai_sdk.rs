//! The real server on 127.0.0.1:0 with the real model, driven by the official `openai` Python SDK:
//! runs tests/python/test_openai_sdk.py (stdlib unittest) against it and expects it to pass.
//!
//! First as users run it: a server on the default config (no key required) and the SDK with a
//! dummy key (`api_key="unused"`), with the local model and, unchanged, with a model the same
//! server routes to a remote OpenAI-compatible backend (the loopback stand-in in
//! tests/integration/common/fake_openai.rs), to show the SDK sees no difference. Then against a server that
//! requires `server.api_key`, with that key.
//!
//! The Python comes from HEARTH_TEST_PYTHON, else the repo's .venv (`common::python`).

use crate::common;
use crate::common::{fake_openai, python};

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

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
        // Every other setting is the default, prefix reuse included: the suite compares greedy
        // outputs across requests (stream vs not, with and without a stop string), and a
        // request's tokens do not depend on what the prefix cache held.
    })
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
    python::run(
        &["tests/python/test_openai_sdk.py", "-v"],
        &[
            ("HEARTH_BASE_URL", format!("http://{addr}/v1")),
            ("HEARTH_API_KEY", key.to_string()),
            (
                "HEARTH_KEY_REQUIRED",
                (if key_required { "1" } else { "0" }).to_string(),
            ),
            ("HEARTH_MODEL", model.to_string()),
            (
                "HEARTH_REMOTE",
                (if model == REMOTE_MODEL { "1" } else { "0" }).to_string(),
            ),
        ],
        PYTHON_TIMEOUT,
        &format!("the OpenAI SDK tests ({model})"),
    );
}
