//! Running the Python suites (the official `openai` SDK, Playwright in Chromium) as part of
//! this binary: the interpreter from HEARTH_TEST_PYTHON, else the repo's .venv (made by
//! scripts/python-env.sh with the pinned packages); output echoed line by line as it comes and
//! kept for the failure message; a deadline after which the suite is killed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// HEARTH_TEST_PYTHON, else the repo's .venv Python.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "no Python for the Python suites: {} is missing. Run ./scripts/python-env.sh \
         (creates .venv with the pinned packages) or set HEARTH_TEST_PYTHON",
        venv.display()
    );
}

/// Run `python args…` in the repo root with `env` (proxies and OpenAI variables removed) and
/// expect it to exit 0 within `timeout`; `what` names the suite in failures. Returns its output.
pub fn run(args: &[&str], env: &[(&str, String)], timeout: Duration, what: &str) -> String {
    let python = python();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // stdout and stderr (where unittest reports) share one pipe, so lines keep their order.
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut command = Command::new(&python);
    command
        .args(args)
        .current_dir(&root)
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
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
    // The Command still holds the pipe's write ends; drop them so the reader sees EOF.
    drop(command);

    // Echo the output as it comes (shown with --nocapture, and on failure) and keep it.
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

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran past {} s and were killed", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = echo.join().expect("output reader");
    let tail: Vec<&str> = output.lines().rev().take(8).collect();
    assert!(
        status.success(),
        "{what} failed ({status}); the summary is above:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    output
}
