//! The shipped nginx config (`deploy/nginx/hearth.conf`) run by a real nginx in front of the
//! real server, only its addresses and certificate paths changed: HTTPS reaches Hearth, a
//! streamed chat arrives token by token (not buffered to the end), a WebSocket upgrades and
//! streams a generation, and plain HTTP is redirected to HTTPS. nginx comes from
//! scripts/services-env.sh (Debian's nginx-light), which `scripts/test.sh` runs.

use crate::common;
use crate::common::app::{ws_next, ws_send};
use crate::tls::{cert_der, connect, exchange, make_cert};

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;

const NGINX: &str = "/usr/sbin/nginx";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// nginx, killed when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would leave them running).
        let pid = i32::try_from(self.0.id()).expect("pid");
        // SAFETY: kill(2) on our own child with a valid signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped site config with this test's ports, certificate and upstream, inside a minimal
/// main config; started in the foreground.
fn start_nginx(dir: &Path, https: u16, http: u16, upstream: SocketAddr) -> Nginx {
    let shipped = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/hearth.conf"),
    )
    .expect("the shipped config");
    let mut site = shipped.clone();
    for (from, to) in [
        (
            "listen 443 ssl http2;".to_string(),
            format!("listen 127.0.0.1:{https} ssl http2;"),
        ),
        ("listen 80;".into(), format!("listen 127.0.0.1:{http};")),
        (
            "/etc/letsencrypt/live/hearth.example.org/fullchain.pem".into(),
            dir.join("proxy.pem").display().to_string(),
        ),
        (
            "/etc/letsencrypt/live/hearth.example.org/privkey.pem".into(),
            dir.join("proxy.key").display().to_string(),
        ),
        (
            "proxy_pass http://127.0.0.1:8080;".into(),
            format!("proxy_pass http://{upstream};"),
        ),
    ] {
        assert!(site.contains(&from), "the shipped config has no `{from}`");
        site = site.replace(&from, &to);
    }
    std::fs::write(dir.join("site.conf"), site).expect("site");
    let d = dir.display();
    let main = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("main");
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: run ./scripts/services-env.sh (scripts/test.sh does)"
    );
    let test = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-t")
        .output()
        .expect("nginx -t");
    assert!(
        test.status.success(),
        "nginx refuses the config: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .spawn()
        .expect("nginx");
    let nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", https)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

#[tokio::test]
async fn the_shipped_nginx_config_proxies_https_streams_and_websockets() {
    let _model = common::serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    make_cert(dir, "proxy");
    let trusted = cert_der(&dir.join("proxy.pem"));
    let upstream = common::spawn_server(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]);
    let (https, http) = (free_port(), free_port());
    let _nginx = start_nginx(dir, https, http, upstream);
    let proxy: SocketAddr = ([127, 0, 0, 1], https).into();

    let ready = exchange(
        proxy,
        &trusted,
        "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    let whole: String = ready.iter().map(|(_, t)| t.as_str()).collect();
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    assert!(whole.contains("\"status\":\"ready\""), "{whole}");

    // A streamed chat: its tokens come through as they are sampled, not all at the end.
    let body = json!({"messages": [{"role": "user", "content": "Tell me a story."}],
        "stream": true, "max_tokens": 80, "temperature": 0,
        "logit_bias": {"0": -100, "2": -100}})
    .to_string();
    let pieces = exchange(
        proxy,
        &trusted,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let whole: String = pieces.iter().map(|(_, t)| t.as_str()).collect();
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    assert!(whole.contains("data: [DONE]"), "{whole}");
    let with_tokens: Vec<f64> = pieces
        .iter()
        .filter(|(_, t)| t.contains("\"content\""))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        with_tokens.len() >= 10,
        "tokens arrived in {} pieces: buffered by the proxy?",
        with_tokens.len()
    );
    let (first, last) = (with_tokens[0], *with_tokens.last().unwrap());
    assert!(
        last - first > 0.1,
        "tokens spread over {:.3} s, as generated",
        last - first
    );

    // A WebSocket through the proxy.
    let tls = connect(proxy, &trusted, &[b"http/1.1"]).await.expect("TLS");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{https}/ws"), tls)
        .await
        .expect("the upgrade passes the proxy");
    ws_send(
        &mut ws,
        json!({"type": "generate", "id": "p", "max_tokens": 8, "temperature": 0,
               "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let mut tokens = 0;
    loop {
        let f = ws_next(&mut ws).await;
        match f["type"].as_str() {
            Some("token") => tokens += 1,
            Some("done") => break,
            Some("error") => panic!("{f}"),
            _ => {}
        }
    }
    assert!(tokens > 0);

    // Plain HTTP is sent to HTTPS.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{http}/v1/models"))
        .header("host", "hearth.example.org")
        .send()
        .await
        .expect("http");
    assert_eq!(r.status().as_u16(), 301);
    assert_eq!(
        r.headers()["location"],
        "https://hearth.example.org/v1/models"
    );
}
