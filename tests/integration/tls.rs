//! HTTPS on the real binary: `server.tls_cert` / `server.tls_key` (certificates made by the
//! `openssl` command line) serve `/ready` over TLS with ALPN offering h2 and http/1.1; a plain
//! HTTP request to the port gets no answer; SIGHUP loads a new certificate for new connections
//! and keeps the old one when the new files are broken; the session cookie is `Secure`; a key that does not match its
//! certificate stops the start with an error naming the setting.

use crate::common;
use crate::common::process::{spawn_listening, Served};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed P-256 server certificate for 127.0.0.1 and localhost: writes `{name}.pem` and
/// `{name}.key` into `dir`.
pub(crate) fn make_cert(dir: &Path, name: &str) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A leaf, not a CA: the client trusts it directly, and webpki refuses a CA as a leaf.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .output()
        .expect("the openssl command line");
    assert!(out.status.success(), "{out:?}");
}

pub(crate) fn cert_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("a certificate")
}

fn start(dir: &Path) -> Served {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = \"{}\"\ndevice = \"cpu\"\n\n[server]\nhost = \"127.0.0.1\"\nport = 0\n\
             tls_cert = \"live.pem\"\ntls_key = \"live.key\"\n\n[storage]\ndata_dir = \"data\"\n",
            common::model_path().display(),
        ),
    )
    .expect("config");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.arg("--config")
        .arg(&config)
        .arg("serve")
        .env("HEARTH_LOG", "hearth=info")
        .stderr(std::fs::File::create(dir.join("log")).expect("log"));
    spawn_listening(c)
}

/// A TLS connection to `addr` trusting only `trusted`, offering `alpn`.
pub(crate) async fn connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())
}

/// One HTTPS request trusting only `trusted`: the certificate the server presented, the ALPN
/// protocol it picks when h2 is offered too, and the HTTP/1.1 response (status line and body).
async fn get(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    path: &str,
) -> Result<(CertificateDer<'static>, Option<Vec<u8>>, String), String> {
    let offered = connect(addr, trusted, &[b"h2", b"http/1.1"]).await?;
    let (_, session) = offered.get_ref();
    let presented = session.peer_certificates().expect("a certificate")[0].clone();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    drop(offered);
    // The request itself over HTTP/1.1, to read it without an h2 client.
    let mut tls = connect(addr, trusted, &[b"http/1.1"]).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // The server may close without a TLS close_notify once the response is out.
    let _ = tls.read_to_end(&mut response).await;
    Ok((
        presented,
        alpn,
        String::from_utf8_lossy(&response).into_owned(),
    ))
}

/// Send `request` (raw HTTP/1.1) over HTTPS trusting only `trusted`, and read the response to its end, noting when each
/// piece arrived (seconds since the request was sent).
pub(crate) async fn exchange(
    addr: SocketAddr,
    trusted: &rustls::pki_types::CertificateDer<'static>,
    request: String,
) -> Vec<(f64, String)> {
    let mut tls = connect(addr, trusted, &[b"http/1.1"]).await.expect("TLS");
    let sent = Instant::now();
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut pieces = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), tls.read(&mut buf))
            .await
            .expect("data in time")
            .unwrap_or(0);
        if n == 0 {
            return pieces;
        }
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        pieces.push((sent.elapsed().as_secs_f64(), text));
    }
}

fn install(dir: &Path, name: &str) {
    std::fs::copy(dir.join(format!("{name}.pem")), dir.join("live.pem")).expect("cert");
    std::fs::copy(dir.join(format!("{name}.key")), dir.join("live.key")).expect("key");
}

fn hangup(server: &Served) {
    let pid = i32::try_from(server.child.id()).expect("pid");
    // SAFETY: kill(2) on our own child with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

#[tokio::test]
async fn https_serves_reloads_its_certificate_on_sighup_and_refuses_a_bad_pair() {
    let _model = common::serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    for name in ["first", "second", "other"] {
        make_cert(dir, name);
    }
    let (first, second) = (
        cert_der(&dir.join("first.pem")),
        cert_der(&dir.join("second.pem")),
    );
    install(dir, "first");
    let server = start(dir);
    let addr = server.addr;

    let (presented, alpn, response) = get(addr, &first, "/ready").await.expect("https");
    assert_eq!(presented, first);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "HTTP/2 is offered");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ready\""), "{response}");
    // Served over HTTPS, a browser session's cookie is marked Secure without being asked.
    let creds = r#"{"username": "admin", "password": "correct horse battery"}"#;
    for path in ["/api/auth/register", "/api/auth/login"] {
        let pieces = exchange(
            addr,
            &first,
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 x-hearth-csrf: 1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{creds}",
                creds.len()
            ),
        )
        .await;
        let response: String = pieces.into_iter().map(|(_, t)| t).collect();
        assert!(response.starts_with("HTTP/1.1 20"), "{path}: {response}");
        if path.ends_with("login") {
            let cookie = response
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
                .unwrap_or_else(|| panic!("no cookie: {response}"));
            assert!(cookie.contains("; Secure"), "{cookie}");
        }
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/ready"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // A new pair and SIGHUP: new connections get it.
    install(dir, "second");
    hangup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((presented, _, response)) = get(addr, &second, "/health").await {
            assert_eq!(presented, second);
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        get(addr, &first, "/ready").await.is_err(),
        "the old one is gone"
    );

    // Broken files and SIGHUP: the running certificate stays.
    std::fs::write(dir.join("live.key"), "broken").expect("break the key");
    hangup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .contains("TLS certificate not reloaded")
    {
        assert!(Instant::now() < deadline, "no reload error logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (presented, _, _) = get(addr, &second, "/ready").await.expect("still serving");
    assert_eq!(presented, second);
    drop(server);

    // A key that is not the certificate's: refused at start.
    std::fs::copy(dir.join("first.pem"), dir.join("live.pem")).expect("cert");
    std::fs::copy(dir.join("other.key"), dir.join("live.key")).expect("key");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.arg("--config").arg(dir.join("config.toml")).arg("serve");
    let out = c.output().expect("run");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("server.tls_cert/tls_key"), "{said}");
}
