//! Crash safety: the real `hearth serve` binary is killed with SIGKILL in the middle of a stream
//! of acknowledged writes (API keys created, accounts registered). Every write that got a 2xx
//! must be in the database afterwards — read straight from the file, and through a restarted
//! server on the same data directory — and `PRAGMA integrity_check` must say `ok`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
/// Concurrent API-key writers (each keeps one request in flight).
const KEY_WRITERS: usize = 4;

/// A running `hearth serve` and the address it printed.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never leave a server behind when a test fails half-way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path) -> PathBuf {
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
        data = dir.join("data").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// Start `hearth serve` and wait for its "hearth listening on http://ADDR" line.
fn start(config: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn hearth serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix("hearth listening on http://") {
                let _ = tx.send(addr.trim().to_string());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the server printed its address")
        .parse()
        .expect("an address");
    Server { child, addr }
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
    let (status, v) = post(
        &client,
        addr,
        "/api/auth/register",
        None,
        json!({"username": "root", "password": PASSWORD}),
    )
    .await
    .expect("register root");
    assert_eq!(status, 201, "{v}");
    let token = Arc::new(login(&client, addr, "root").await);

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
    let listed = get(&client, addr, "/api/keys", &token).await;
    let names: std::collections::HashSet<&str> = listed["data"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    for k in &keys {
        assert!(
            names.contains(k.as_str()),
            "key {k} is not listed after restart"
        );
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
