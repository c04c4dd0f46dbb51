//! The web UI, served by the binary: the files of `ui/` (embedded at build time by `build.rs`)
//! under `/assets/<bundle hash>/…`, and the page that loads them at `/`.
//!
//! - `/` (and `/index.html`) is the app's one page, `Cache-Control: no-cache` with an ETag, under
//!   the UI's strict [`UI_CSP`]: scripts, styles and connections only from this origin, no inline
//!   script or style, no `eval`, images only from here or `data:`, no framing.
//! - `/assets/<hash>/<path>`: modules, styles and vendored libraries. The hash covers every file,
//!   so the URLs change whenever any file does and the answers are `immutable` for a year; a
//!   request naming another hash is a 404 (a page from before an upgrade reloads). ES modules
//!   import each other by relative paths, which stay inside the hashed folder.
//! - Answers are gzip or brotli when the client accepts it (`Vary: Accept-Encoding`); the
//!   compressed copies are made once, on a background thread at start ([`warm`]).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));
}

/// The Content-Security-Policy of the UI's page and assets.
pub const UI_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'";

/// Where the page's template says the assets are.
const ASSETS_PLACEHOLDER: &str = "{{assets}}";

/// Where the page's template wants a `modulepreload` link for every module.
const PRELOAD_PLACEHOLDER: &str = "{{modulepreload}}";

/// Files smaller than this are sent as they are.
const COMPRESS_MIN_BYTES: usize = 512;

/// One file, ready to send.
struct Asset {
    body: Vec<u8>,
    gzip: Option<Vec<u8>>,
    brotli: Option<Vec<u8>>,
    etag: String,
    content_type: &'static str,
}

/// Every file of the UI and the page.
struct Bundle {
    hash: String,
    files: HashMap<&'static str, Asset>,
    index: Asset,
}

static BUNDLE: OnceLock<Bundle> = OnceLock::new();

/// Build the bundle (hash every file, compress the text ones) on a background thread, so that
/// the first page load does not pay for it.
pub fn warm() {
    std::thread::Builder::new()
        .name("hearth-ui-assets".into())
        .spawn(|| {
            bundle();
        })
        .ok();
}

fn bundle() -> &'static Bundle {
    BUNDLE.get_or_init(|| {
        let mut hasher = Sha256::new();
        for (path, bytes) in embedded::FILES {
            hasher.update((path.len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        let hash = hex(&hasher.finalize()[..6]);
        let files = embedded::FILES
            .iter()
            .filter(|(path, _)| *path != "index.html")
            .map(|(path, bytes)| (*path, asset(path, bytes.to_vec())))
            .collect();
        // Every module is asked for up front, not one import level at a time: on a distant
        // server the waterfall would cost a round trip per level.
        let preload: String = embedded::FILES
            .iter()
            .filter(|(path, _)| path.ends_with(".js"))
            .map(|(path, _)| {
                format!("<link rel=\"modulepreload\" href=\"/assets/{hash}/{path}\">\n")
            })
            .collect();
        let page = embedded::FILES
            .iter()
            .find(|(path, _)| *path == "index.html")
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default()
            .replace(PRELOAD_PLACEHOLDER, &preload)
            .replace(ASSETS_PLACEHOLDER, &format!("/assets/{hash}"));
        Bundle {
            index: asset("index.html", page.into_bytes()),
            hash,
            files,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "txt" | "tsv" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn asset(path: &str, body: Vec<u8>) -> Asset {
    let content_type = content_type(path);
    let compressible = body.len() >= COMPRESS_MIN_BYTES
        && (content_type.starts_with("text/") || content_type == "image/svg+xml");
    let etag = format!("\"{}\"", hex(&Sha256::digest(&body)[..8]));
    let (gzip, brotli) = if compressible {
        (gzip(&body), brotli(&body))
    } else {
        (None, None)
    };
    Asset {
        body,
        gzip,
        brotli,
        etag,
        content_type,
    }
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

fn brotli(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut out = Vec::new();
    {
        let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 10, 22);
        enc.write_all(body).ok()?;
    }
    Some(out)
}

/// The UI's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/favicon.ico", get(favicon))
        .route("/assets/{hash}/{*path}", get(file))
}

/// `GET /`: the app's page.
async fn index(req: Request) -> Response {
    let bundle = tokio::task::spawn_blocking(bundle).await;
    match bundle {
        Ok(b) => send(&b.index, req.headers(), "no-cache"),
        Err(e) => ApiError::Internal(format!("ui bundle: {e}")).into_response(),
    }
}

/// `GET /favicon.ico`: browsers ask for it whatever the page says; the icon is an SVG.
async fn favicon(req: Request) -> Response {
    let bundle = bundle();
    match bundle.files.get("icon.svg") {
        Some(a) => send(a, req.headers(), "public, max-age=86400"),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /assets/{hash}/{*path}`.
async fn file(Path((hash, path)): Path<(String, String)>, req: Request) -> Response {
    let bundle = match tokio::task::spawn_blocking(bundle).await {
        Ok(b) => b,
        Err(e) => return ApiError::Internal(format!("ui bundle: {e}")).into_response(),
    };
    match bundle.files.get(path.as_str()) {
        Some(a) if hash == bundle.hash => {
            send(a, req.headers(), "public, max-age=31536000, immutable")
        }
        _ => ApiError::NotFound(format!("No such asset: {}", super::error::clip(&path, 128)))
            .into_response(),
    }
}

/// Whether `If-None-Match` in `req` names `etag` (weakly compared, as GET allows) or `*`.
pub(crate) fn etag_matches(req: &HeaderMap, etag: &str) -> bool {
    let bare = etag.strip_prefix("W/").unwrap_or(etag);
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == bare
        })
}

/// The encodings a request accepts, in our order of preference.
fn accepts(headers: &HeaderMap, coding: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';');
            let name = it.next().unwrap_or("").trim();
            let refused = it.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            name.eq_ignore_ascii_case(coding) && !refused
        })
}

fn send(asset: &Asset, req: &HeaderMap, cache_control: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(UI_CSP),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, v);
    }
    if etag_matches(req, &asset.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let (coding, body) = match (&asset.brotli, &asset.gzip) {
        (Some(br), _) if accepts(req, "br") => (Some("br"), br.clone()),
        (_, Some(gz)) if accepts(req, "gzip") => (Some("gzip"), gz.clone()),
        _ => (None, asset.body.clone()),
    };
    if let Some(coding) = coding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    (StatusCode::OK, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_points_at_the_hashed_assets_it_has() {
        let b = bundle();
        let page = String::from_utf8_lossy(&b.index.body);
        assert!(!page.contains(ASSETS_PLACEHOLDER) && !page.contains(PRELOAD_PLACEHOLDER));
        let modules = b.files.keys().filter(|p| p.ends_with(".js")).count();
        assert_eq!(page.matches("rel=\"modulepreload\"").count(), modules);
        let prefix = format!("/assets/{}/", b.hash);
        for part in page.split(&prefix).skip(1) {
            let path = part.split('"').next().unwrap();
            assert!(b.files.contains_key(path), "{path} is not embedded");
        }
        assert!(page.matches(&prefix).count() >= 2, "{page}");
    }

    #[test]
    fn compressed_copies_round_trip() {
        use std::io::Read;
        let b = bundle();
        let a = b.files.get("app.js").expect("app.js");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(a.gzip.as_deref().unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, a.body);
        let mut out = Vec::new();
        brotli::Decompressor::new(a.brotli.as_deref().unwrap(), 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, a.body);
    }

    #[test]
    fn encodings_refused_with_q_0_are_not_used() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0, br".parse().unwrap());
        assert!(accepts(&h, "br") && !accepts(&h, "gzip"));
        h.insert(header::ACCEPT_ENCODING, "GZIP".parse().unwrap());
        assert!(accepts(&h, "gzip") && !accepts(&h, "br"));
    }
}
