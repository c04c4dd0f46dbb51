//! Crash safety: the real `hearth serve` binary is killed with SIGKILL in the middle of a stream
//! of acknowledged writes (API keys created, accounts registered). Every write that got a 2xx
//! must be in the database afterwards — read straight from the file, and through a restarted
//! server on the same data directory — and `PRAGMA integrity_check` must say `ok`.
//!
//! Also the other ways storage fails under the binary: a full disk (a real 2 MiB tmpfs: every
//! write answers 201 and is stored, or 507 and is not), a corrupt database at start, a signing
//! secret too short; what the binary logs (request ids, never a credential); and that a burst
//! of password hashing stays within bounded memory.

use crate::common;
use crate::common::process::Served as Server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
/// Concurrent API-key writers (each keeps one request in flight).
const KEY_WRITERS: usize = 4;

fn write_config(dir: &Path) -> PathBuf {
    write_config_with_data(dir, &dir.join("data"))
}

/// A config in `dir` whose database lives in `data`.
fn write_config_with_data(dir: &Path, data: &Path) -> PathBuf {
    let model = common::model_path();
    let config = format!(
        r#"
[model]
path = "{model}"
device = "cpu"

[server]
host = "127.0.0.1"
port = 0

[auth]
registration = "open"
login_per_ip_per_minute = 100000
login_per_username_per_minute = 100000

[storage]
data_dir = "{data}"
"#,
        model = model.display(),
        data = data.display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// Start `hearth serve` and wait for its "hearth listening on http://ADDR" line.
fn start(config: &Path) -> Server {
    start_with(config, "warn", Stdio::inherit())
}

/// Start `hearth serve` with `RUST_LOG=rust_log`, its log written to `log`.
fn start_logged(config: &Path, log: &Path, rust_log: &str) -> Server {
    let file = std::fs::File::create(log).expect("log file");
    start_with(config, rust_log, Stdio::from(file))
}

fn start_with(config: &Path, rust_log: &str, stderr: Stdio) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hearth"));
    command
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", rust_log)
        .env_remove("HEARTH_LOG")
        .stderr(stderr);
    common::process::spawn_listening(command)
}

async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> reqwest::Result<(u16, Value)> {
    let mut req = client.post(format!("http://{addr}{path}")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str, token: &str) -> Value {
    client
        .get(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}

async fn login(client: &reqwest::Client, addr: SocketAddr, name: &str) -> String {
    let (status, v) = post(
        client,
        addr,
        "/api/auth/login",
        None,
        json!({"username": name, "password": PASSWORD}),
    )
    .await
    .expect("login");
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().expect("token").to_string()
}

/// The names of the keys `token`'s user has, as `GET /api/keys` lists them.
async fn key_names(
    client: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
) -> std::collections::HashSet<String> {
    let listed = get(client, addr, "/api/keys", token).await;
    listed["data"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["name"].as_str().map(str::to_string))
        .collect()
}

/// Register `root` (the first account, so an admin) and log in; its access token.
async fn register_root(client: &reqwest::Client, addr: SocketAddr) -> String {
    let body = json!({"username": "root", "password": PASSWORD});
    let (status, v) = post(client, addr, "/api/auth/register", None, body)
        .await
        .expect("register root");
    assert_eq!(status, 201, "{v}");
    login(client, addr, "root").await
}

fn integrity(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .expect("open the database")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

fn column_set(db: &Path, sql: &str) -> std::collections::HashSet<String> {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let mut stmt = conn.prepare(sql).expect("prepare");
    let rows = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_the_database_stays_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let db = dir.path().join("data/hearth.db");
    let client = reqwest::Client::new();

    let mut server = start(&config);
    let addr = server.addr;
    let token = Arc::new(register_root(&client, addr).await);

    // Writers: API keys (fast) on several connections, accounts (Argon2-slow) on one more.
    let acked_keys = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_users = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..KEY_WRITERS {
        let (client, token, acked, stop) = (
            client.clone(),
            token.clone(),
            acked_keys.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("key-{w}-{i}");
                match post(
                    &client,
                    addr,
                    "/api/keys",
                    Some(&token),
                    json!({"name": name}),
                )
                .await
                {
                    Ok((201, _)) => acked.lock().expect("lock").push(name),
                    Ok((status, v)) => panic!("a write was refused: {status} {v}"),
                    // The server is gone: this write was never acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    {
        let (client, acked, stop) = (client.clone(), acked_users.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("user{i}");
                let body = json!({"username": name, "password": PASSWORD});
                match post(&client, addr, "/api/auth/register", None, body).await {
                    Ok((201, _)) => acked.lock().expect("lock").push(name),
                    Ok((status, v)) => panic!("a registration was refused: {status} {v}"),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // SIGKILL with writes in flight: no shutdown, no checkpoint.
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let keys = acked_keys.lock().expect("lock").clone();
    let users = acked_users.lock().expect("lock").clone();
    assert!(
        keys.len() >= 20,
        "only {} key writes were acknowledged",
        keys.len()
    );
    assert!(!users.is_empty(), "no registration was acknowledged");
    eprintln!(
        "acknowledged before SIGKILL: {} keys, {} accounts",
        keys.len(),
        users.len()
    );

    // Straight from the file, as the kill left it (SQLite replays the WAL on open).
    assert_eq!(integrity(&db), "ok");
    let stored_keys = column_set(&db, "SELECT name FROM api_keys");
    let stored_users = column_set(&db, "SELECT username FROM users");
    for k in &keys {
        assert!(stored_keys.contains(k), "acknowledged key {k} is missing");
    }
    for u in &users {
        assert!(
            stored_users.contains(u),
            "acknowledged account {u} is missing"
        );
    }

    // Through a restarted server on the same data directory.
    let server = start(&config);
    let addr = server.addr;
    let token = login(&client, addr, "root").await;
    let names = key_names(&client, addr, &token).await;
    for k in &keys {
        assert!(names.contains(k), "key {k} is not listed after restart");
    }
    let accounts = get(&client, addr, "/api/admin/users", &token).await;
    let usernames: std::collections::HashSet<&str> = accounts["data"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    for u in &users {
        assert!(
            usernames.contains(u.as_str()),
            "account {u} is not listed after restart"
        );
    }
    // An acknowledged account can log in.
    login(&client, addr, &users[0]).await;
    drop(server);
    assert_eq!(integrity(&db), "ok");
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped; `None` (with the
/// reason printed) where mounting is not permitted.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `dir` with `filler` until a write fails, then give back
/// `leave` bytes.
fn fill(filler: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).expect("create filler");
    let chunk = vec![0xA5u8; 16 * 1024];
    while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    let _ = f.sync_all();
    let len = f.metadata().expect("meta").len();
    f.set_len(len.saturating_sub(leave)).expect("shrink filler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_and_loses_none_it_acknowledged() {
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config_with_data(dir.path(), &disk.path().join("data"));
    let log = dir.path().join("server.log");
    let server = start_logged(&config, &log, "warn");
    let addr = server.addr;
    let client = reqwest::Client::new();
    let token = register_root(&client, addr).await;

    let filler = disk.path().join("filler");
    fill(&filler, 96 * 1024);
    let (mut acked_keys, mut acked_users, mut refused) = (Vec::new(), Vec::new(), 0);
    for i in 0..400 {
        let name = format!("k{i}");
        let (status, v) = post(
            &client,
            addr,
            "/api/keys",
            Some(&token),
            json!({"name": name}),
        )
        .await
        .expect("a JSON answer");
        match status {
            201 => acked_keys.push(name),
            507 => {
                assert_eq!(v["error"]["code"], "insufficient_storage", "{v}");
                refused += 1;
            }
            other => panic!("a write answered {other}: {v}"),
        }
        if i % 10 == 0 {
            let user = format!("user{i}");
            let (status, v) = post(
                &client,
                addr,
                "/api/admin/users",
                Some(&token),
                json!({"username": user, "password": PASSWORD}),
            )
            .await
            .expect("a JSON answer");
            match status {
                201 => acked_users.push(user),
                507 => refused += 1,
                other => panic!("a write answered {other}: {v}"),
            }
        }
        if refused >= 10 {
            break;
        }
    }
    assert!(
        refused >= 10,
        "the disk never filled ({} keys stored)",
        acked_keys.len()
    );
    eprintln!(
        "with the disk full: {} keys and {} users acknowledged, {refused} writes refused",
        acked_keys.len(),
        acked_users.len()
    );
    // Reads still work, and list exactly what was acknowledged.
    let names = key_names(&client, addr, &token).await;
    for k in &acked_keys {
        assert!(names.contains(k), "acknowledged key {k} is missing");
    }
    assert_eq!(
        names.len(),
        acked_keys.len(),
        "a refused key was stored after all"
    );

    // Space comes back: so do writes.
    std::fs::remove_file(&filler).expect("remove filler");
    let (status, v) = post(
        &client,
        addr,
        "/api/keys",
        Some(&token),
        json!({"name": "after"}),
    )
    .await
    .expect("answer");
    assert_eq!(status, 201, "{v}");
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("disk holding the database is full"),
        "{logged}"
    );

    // Everything acknowledged is in the file.
    let db = disk.path().join("data/hearth.db");
    assert_eq!(integrity(&db), "ok");
    let stored = column_set(&db, "SELECT name FROM api_keys");
    for k in acked_keys.iter().chain(["after".to_string()].iter()) {
        assert!(
            stored.contains(k),
            "acknowledged key {k} is not in the file"
        );
    }
    let users = column_set(&db, "SELECT username FROM users");
    for u in &acked_users {
        assert!(
            users.contains(u),
            "acknowledged user {u} is not in the file"
        );
    }
}

#[test]
fn a_corrupt_database_is_refused_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let db = dir.path().join("data/hearth.db");
    {
        let store = hearth::store::Store::open(&db, &hearth::config::StoreSettings::default())
            .expect("create");
        store
            .run_blocking(|c| {
                for i in 0..300 {
                    hearth::store::users::create_user(
                        c,
                        &format!("person{i}"),
                        &"h".repeat(200),
                        hearth::store::Role::User,
                        0,
                    )?;
                }
                c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
                Ok(())
            })
            .expect("fill");
    }
    // Scramble a page in the middle of the users table.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .expect("open");
        let len = f.metadata().expect("meta").len();
        assert!(len > 8 * 4096, "{len}");
        f.seek(SeekFrom::Start((len / 4096 / 2) * 4096))
            .expect("seek");
        f.write_all(&[0x5Au8; 4096]).expect("scramble");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .output()
        .expect("run");
    assert!(!out.status.success(), "a corrupt database was served");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") && err.contains("hearth restore"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_short_jwt_secret_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("HEARTH__AUTH__JWT_SECRET", "x")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.jwt_secret") && err.contains("32 bytes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_carry_the_request_id_and_never_a_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let log = dir.path().join("server.log");
    // RUST_LOG, as the README says (HEARTH_LOG is unset).
    let server = start_logged(&config, &log, "hearth=debug,tower_http=debug");
    let addr = server.addr;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/ws?api_key=sk-hearth-QUERYSECRET"))
        .header("x-request-id", "req-abc123")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "req-abc123");
    let r = client
        .get(format!("http://{addr}/v1/models?token=OTHERSECRET&limit=5"))
        .bearer_auth("sk-hearth-HEADERSECRET")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let (status, _) = post(
        &client,
        addr,
        "/api/auth/login",
        None,
        json!({"username": "nobody", "password": "PASSWORDSECRET"}),
    )
    .await
    .expect("login");
    assert_eq!(status, 401);
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("req-abc123"),
        "the request id is in the span:\n{logged}"
    );
    assert!(logged.contains("api_key=[redacted]"), "{logged}");
    assert!(logged.contains("token=[redacted]&limit=5"), "{logged}");
    for secret in [
        "QUERYSECRET",
        "OTHERSECRET",
        "HEADERSECRET",
        "PASSWORDSECRET",
    ] {
        assert!(!logged.contains(secret), "{secret} was logged:\n{logged}");
    }
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_registrations_hashes_a_bounded_number_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let server = start(&config);
    let (addr, pid) = (server.addr, server.child.id());
    let client = reqwest::Client::new();
    let register = |name: String| {
        let client = client.clone();
        async move {
            post(
                &client,
                addr,
                "/api/auth/register",
                None,
                json!({"username": name, "password": PASSWORD}),
            )
            .await
            .expect("register")
        }
    };
    // Warm up: the first hash sets up what every later one reuses.
    assert_eq!(register("warmup".into()).await.0, 201);
    let before = rss_mib(pid);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_mib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let answers = futures::future::join_all((0..60).map(|i| register(format!("burst{i}")))).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    for (status, v) in &answers {
        assert_eq!(*status, 201, "{v}");
    }
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("60 concurrent registrations: peak RSS {before} MiB + {grown} MiB");
    // 60 hashes at once took 1.1 GiB; 4 at a time (auth.max_concurrent_hashes) need
    // at most 4 × 19 MiB, allocated once.
    assert!(
        grown < 150,
        "60 registrations grew the server by {grown} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_off_by_sigkill_is_there_after_restart_as_interrupted() {
    let _model = common::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let server = start(&config);
    let client = reqwest::Client::new();
    let token = register_root(&client, server.addr).await;
    let (status, conv) = post(
        &client,
        server.addr,
        "/api/conversations",
        Some(&token),
        // End-of-text tokens banned: the answer runs on until the kill.
        json!({"params": {"max_tokens": 3000, "logit_bias": {"0": -100, "2": -100}}}),
    )
    .await
    .expect("create");
    assert_eq!(status, 201, "{conv}");
    let conv = conv["id"].as_str().expect("id").to_string();
    let response = client
        .post(format!(
            "http://{}/api/conversations/{conv}/messages",
            server.addr
        ))
        .bearer_auth(&token)
        .json(&json!({"content": "Write a long story."}))
        .send()
        .await
        .expect("send");
    let mut reader = common::app::SseReader::new(response);
    let head = reader.next().await.expect("message frame");
    let id = head["message"]["id"].as_str().expect("id").to_string();
    // Past the first partial saves (every 32 tokens or 250 ms).
    let started = std::time::Instant::now();
    let mut shown = String::new();
    let mut tokens = 0;
    while tokens < 48 || started.elapsed() < Duration::from_millis(600) {
        let f = reader.next().await.expect("token");
        shown.push_str(f["text"].as_str().expect("text"));
        tokens += 1;
    }
    drop(server); // SIGKILL
    drop(reader);
    let server = start(&config);
    let m = get(&client, server.addr, &format!("/api/messages/{id}"), &token).await;
    assert_eq!(m["status"], "interrupted", "{m}");
    let saved = m["content"].as_str().expect("content");
    assert!(
        !saved.is_empty(),
        "the partial text was saved as it streamed: {m}"
    );
    assert!(
        shown.starts_with(saved) || saved.starts_with(&shown),
        "saved {saved:?} vs shown {shown:?}"
    );
}
