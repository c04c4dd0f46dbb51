//! `TestApp`: the real server on 127.0.0.1:0 (fresh SQLite file, or PostgreSQL schema with
//! `HEARTH_TEST_STORE=postgres`; the default model) with the
//! client helpers tests need — JSON requests, SSE streams read frame by frame, WebSockets,
//! accounts. It stops (and frees its model) when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A running server.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory (the SQLite file lives there).
    pub data_dir: PathBuf,
    /// A client for it.
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An SSE response: status, headers, and its `data:` payloads as JSON (`[DONE]` as a string).
pub struct Sse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub frames: Vec<Value>,
}

/// A WebSocket to the server.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl TestApp {
    /// Start a server with the default config on port 0, a fresh data directory, `tweak`
    /// applied last.
    pub fn spawn(tweak: impl FnOnce(&mut hearth::config::Config) + Send + 'static) -> TestApp {
        let data_dir = tempfile::tempdir().expect("data dir").keep();
        Self::spawn_in(data_dir, tweak)
    }

    /// The same on an existing data directory (a restart).
    pub fn spawn_in(
        data_dir: PathBuf,
        tweak: impl FnOnce(&mut hearth::config::Config) + Send + 'static,
    ) -> TestApp {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dir = data_dir.clone();
        let thread = std::thread::spawn(move || {
            let mut config = hearth::config::Config::default();
            config.model.path = super::model_path().to_string_lossy().into_owned();
            config.model.device = hearth::engine::loader::DeviceChoice::Cpu;
            config.server.port = 0;
            config.storage.data_dir = dir;
            super::use_test_store(&mut config);
            tweak(&mut config);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let app = hearth::app::App::build(config).await.expect("build app");
                tx.send(app.local_addr().expect("addr")).expect("send addr");
                app.run_until(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("server started");
        TestApp {
            addr,
            data_dir,
            client: reqwest::Client::new(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The client helpers for a server running elsewhere (another process), which this handle
    /// neither owns nor stops.
    pub fn at(addr: SocketAddr) -> TestApp {
        TestApp {
            addr,
            data_dir: PathBuf::new(),
            client: reqwest::Client::new(),
            stop: None,
            thread: None,
        }
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Send a request; the status, headers and JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.expect("send");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, headers, v)
    }

    /// POST JSON; status and body.
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::POST, path, token, Some(body)).await;
        (s, v)
    }

    /// GET; status and body.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, token, None).await;
        (s, v)
    }

    /// Start a request whose answer is SSE and return the response, to read as it streams.
    pub async fn open_sse(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("send")
    }

    /// A whole SSE exchange.
    pub async fn sse(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Sse {
        let r = self.open_sse(method, path, token, body).await;
        let status = r.status();
        let headers = r.headers().clone();
        let mut reader = SseReader::new(r);
        let mut frames = Vec::new();
        while let Some(f) = reader.next().await {
            frames.push(f);
        }
        Sse {
            status,
            headers,
            frames,
        }
    }

    /// Register `name` (registration must be open, or it the first account) and log in; the
    /// access token.
    pub async fn user(&self, name: &str) -> String {
        let creds = json!({"username": name, "password": "correct horse battery"});
        let (s, v) = self.post_json("/api/auth/register", None, &creds).await;
        assert_eq!(s, StatusCode::CREATED, "register {name}: {v}");
        let (s, v) = self.post_json("/api/auth/login", None, &creds).await;
        assert_eq!(s, StatusCode::OK, "login {name}: {v}");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// A WebSocket on `/ws`, authenticated with `token`.
    pub async fn ws(&self, token: Option<&str>) -> Ws {
        let mut url = format!("ws://{}/ws", self.addr);
        if let Some(t) = token {
            url.push_str(&format!("?api_key={t}"));
        }
        tokio_tungstenite::connect_async(url).await.expect("ws").0
    }
}

/// Send a JSON frame (on any WebSocket: the server's own, or one through a TLS proxy).
pub async fn ws_send<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, frame: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("ws send");
}

/// The next JSON frame (panics after 120 s).
pub async fn ws_next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("json frame");
        }
    }
}

/// Reads an SSE body one `data:` payload at a time.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Over `response`'s body.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next payload (JSON, or the string `[DONE]`); `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                let data = data.join("\n");
                return Some(serde_json::from_str(&data).unwrap_or(Value::String(data)));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(120), self.response.chunk())
                .await
                .expect("SSE data in time")
                .expect("SSE body")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
