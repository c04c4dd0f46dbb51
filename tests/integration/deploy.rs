//! The deployment files in `deploy/` and the `Dockerfile`, checked without a container engine
//! (none runs in CI): the container's entrypoint script run directly with the real binary (a
//! mounted model, a configured one, a failed fetch, SIGTERM), the Kubernetes manifest parsed and
//! its probes asked of a real server (tests/python/test_deploy.py), the systemd unit through
//! `systemd-analyze verify` and its hardening read back, the Dockerfile's stages and user read.

use crate::common;
use crate::common::process::{spawn_listening, Served};
use crate::common::python;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The entrypoint as the image runs it: `serve`, Hearth from `HEARTH_BIN`, the fetch script
/// and models directory given, port 0.
fn entrypoint(data: &Path, models: &Path, fetch: &Path) -> Command {
    let mut c = Command::new(root().join("deploy/docker-entrypoint.sh"));
    c.arg("serve")
        .env("HEARTH_BIN", env!("CARGO_BIN_EXE_hearth"))
        .env("HEARTH_MODELS_DIR", models)
        .env("HEARTH_FETCH_MODEL", fetch)
        .env("HEARTH__STORAGE__DATA_DIR", data)
        .env("HEARTH__SERVER__HOST", "127.0.0.1")
        .env("HEARTH__SERVER__PORT", "0")
        .env("HEARTH_CONFIG", data.join("absent.toml"))
        .env_remove("HEARTH__MODEL__PATH")
        .env_remove("HEARTH_LOG")
        .current_dir(data);
    c
}

async fn ready_model(server: &Served) -> String {
    let v: serde_json::Value = reqwest::get(format!("http://{}/ready", server.addr))
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(v["status"], "ready", "{v}");
    v["model"].as_str().expect("model").to_string()
}

#[tokio::test]
async fn the_container_entrypoint_serves_a_mounted_or_configured_model_and_stops_on_sigterm() {
    let _model = common::serial();
    let dir = tempfile::tempdir().expect("tmp");
    let (data, models) = (dir.path().join("data"), dir.path().join("models"));
    std::fs::create_dir_all(&data).expect("data");
    std::fs::create_dir_all(&models).expect("models");
    let fetch = root().join("scripts/fetch-model.sh");

    // A model already in the volume (mounted, or fetched at an earlier start): checked, kept.
    std::os::unix::fs::symlink(
        common::model_path(),
        models.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    .expect("link the model");
    let mut server = spawn_listening(entrypoint(&data, &models, &fetch));
    assert_eq!(ready_model(&server).await, "SmolLM2-135M-Instruct.Q4_1");
    assert!(
        data.join("hearth.db").exists(),
        "the database is in the data volume"
    );
    server.terminate();
    assert_eq!(
        server.wait_exit(Duration::from_secs(60)),
        Some(0),
        "SIGTERM: a clean exit"
    );

    // A config naming a model: no fetch at all (the fetch script here would fail).
    let config = data.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = \"{}\"\ndevice = \"cpu\"\n",
            common::model_path().display()
        ),
    )
    .expect("config");
    let mut c = entrypoint(&data, &dir.path().join("empty"), Path::new("/bin/false"));
    c.env("HEARTH_CONFIG", &config);
    let server = spawn_listening(c);
    assert_eq!(ready_model(&server).await, "SmolLM2-135M-Instruct.Q4_1");
    drop(server);

    // No model anywhere and the fetch fails: the container stops with that error, no server.
    let out = entrypoint(&data, &dir.path().join("empty"), Path::new("/bin/false"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "{out:?}"
    );
}

#[test]
fn the_kubernetes_manifest_is_wired_and_its_probes_answer_on_a_real_server() {
    let _model = common::serial();
    let addr = common::spawn_server(|_| {});
    python::run(
        &["tests/python/test_deploy.py", "-v"],
        &[("HEARTH_BASE_URL", format!("http://{addr}"))],
        Duration::from_secs(120),
        "the deployment-file suite",
    );
}

#[test]
fn the_systemd_unit_verifies_and_confines_the_service() {
    let unit = read("deploy/systemd/hearth.service");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{key} is not set"))
    };
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "hearth"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("Environment", "HEARTH__STORAGE__DATA_DIR=/var/lib/hearth"),
    ] {
        assert_eq!(value(key), want, "{key}");
    }
    let stop: u64 = value("TimeoutStopSec").parse().expect("seconds");
    let grace = hearth::config::Config::default().server.shutdown_grace_secs;
    assert!(
        stop > grace + 10,
        "systemd must wait out the shutdown grace"
    );
    assert_eq!(value("ExecStart"), "/usr/local/bin/hearth serve");
    assert_eq!(
        value("WorkingDirectory"),
        "-/etc/hearth",
        "config.toml there, if any"
    );

    // systemd's own checker, with ExecStart on the binary just built.
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        eprintln!("systemd-analyze is not installed: the unit's syntax was not verified");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let copy = dir.path().join("hearth.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/hearth", env!("CARGO_BIN_EXE_hearth")),
    )
    .expect("copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_dockerfile_builds_in_two_stages_and_runs_hearth_unprivileged() {
    let file = read("Dockerfile");
    let lines: Vec<&str> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let from: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(from[0].starts_with("FROM rust:") && from[0].ends_with(" AS build"));
    assert!(from[1].contains("-slim"), "a slim runtime: {}", from[1]);
    let user = lines
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert_ne!(user, "root");
    assert!(file.contains("useradd --system --uid 10001"));
    for needle in [
        "cargo build --release --locked",
        "COPY --from=build /src/target/release/hearth /usr/local/bin/hearth",
        "COPY deploy/docker-entrypoint.sh /usr/local/bin/hearth-entrypoint",
        "COPY scripts/fetch-model.sh /usr/local/share/hearth/fetch-model.sh",
        "HEARTH__STORAGE__DATA_DIR=/data",
        "HEARTH__SERVER__HOST=0.0.0.0",
        "VOLUME [\"/data\"]",
        "ENTRYPOINT [\"/usr/local/bin/hearth-entrypoint\"]",
        "STOPSIGNAL SIGTERM",
    ] {
        assert!(file.contains(needle), "missing {needle:?}");
    }
    let health = lines
        .iter()
        .position(|l| l.starts_with("HEALTHCHECK"))
        .expect("HEALTHCHECK");
    assert!(
        lines[health + 1].contains("/ready"),
        "{}",
        lines[health + 1]
    );
    // What the image copies is in the build context.
    let ignored = read(".dockerignore");
    for path in ["deploy/", "scripts/", "src/", "Cargo.lock"] {
        assert!(root().join(path).exists());
        assert!(!ignored.lines().any(|l| l.trim() == path), "{path} ignored");
    }
}
