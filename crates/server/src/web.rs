//! The web client: serves the page's files (from `web/`, embedded at build time, so
//! `cargo build` needs neither npm nor the network) at `/`, with their content types,
//! caching rules and security headers, and decides whether a browser `Origin` is the
//! server's own page (docs/protocol.md §1.2).
//!
//! Owns: the asset table, the `/`, `/sw.js`, `/manifest.webmanifest`, `/app.css`,
//! `/js/…`, `/icons/…` and `/v/<version>/…` routes, the response headers of those
//! routes, and [`own_origin_allowed`]. Must not: know about sessions, keys or frames
//! (the page speaks the same WebSocket protocol as every other client).
//!
//! Caching: the shell (`/`, `/sw.js`, the manifest) is `no-cache`; every asset is also
//! reachable under `/v/<version>/`, where `<version>` is a hash of all embedded files,
//! and those responses are `immutable` for a year. ES module imports are relative, so
//! a page loaded from `/v/<version>/js/app.js` only ever fetches files of one build.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use crate::names::{Arrival, Origin, ServerNames};
use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// The Content-Security-Policy of every response the page's routes give: only this
/// origin, no inline script or style, no framing, no `<base>`, no form posts.
/// `connect-src 'self'` covers `ws:`/`wss:` to this same host and port (CSP Level 3).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
font-src 'self'; connect-src 'self'; manifest-src 'self'; worker-src 'self'; object-src 'none'; \
frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The placeholder in text assets replaced by the build version.
const VERSION_MARK: &str = "__VERSION__";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("sw.js", JS),
    asset!("manifest.webmanifest", "application/manifest+json"),
    asset!("js/app.js", JS),
    asset!("js/connection.js", JS),
    asset!("js/controls.js", JS),
    asset!("js/deeplink.js", JS),
    asset!("js/directory.js", JS),
    asset!("js/drafts.js", JS),
    asset!("js/highlight.js", JS),
    asset!("js/idb.js", JS),
    asset!("js/keys.js", JS),
    asset!("js/peek.js", JS),
    asset!("js/protocol.js", JS),
    asset!("js/push.js", JS),
    asset!("js/qr.js", JS),
    asset!("js/session.js", JS),
    asset!("js/sshsig.js", JS),
    asset!("js/vendor/qrcode.js", JS),
    asset!("js/views/attach.js", JS),
    asset!("js/views/cards.js", JS),
    asset!("js/views/composer.js", JS),
    asset!("js/views/controls.js", JS),
    asset!("js/views/devices.js", JS),
    asset!("js/views/diff.js", JS),
    asset!("js/views/dom.js", JS),
    asset!("js/views/markdown.js", JS),
    asset!("js/views/panel.js", JS),
    asset!("js/views/sessions.js", JS),
    asset!("js/views/sheet.js", JS),
    asset!("js/views/stream.js", JS),
    asset!("js/views/text.js", JS),
    asset!("js/views/workspace.js", JS),
    asset!("js/workspace.js", JS),
    asset!("icons/icon.svg", "image/svg+xml"),
    asset!("icons/icon-192.png", "image/png"),
    asset!("icons/icon-512.png", "image/png"),
    asset!("icons/maskable-512.png", "image/png"),
];

/// The build version: the first 12 hex digits of SHA-256 over every asset.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut h = Sha256::new();
        for a in ASSETS {
            h.update(a.path.as_bytes());
            h.update((a.body.len() as u64).to_be_bytes());
            h.update(a.body);
        }
        h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// An asset's bytes as served: text assets get the version filled in.
fn body_of(a: &Asset) -> Vec<u8> {
    let text_like = a.content_type.starts_with("text/") || a.content_type.contains("json");
    match std::str::from_utf8(a.body) {
        Ok(s) if text_like && s.contains(VERSION_MARK) => {
            s.replace(VERSION_MARK, version()).into_bytes()
        }
        _ => a.body.to_vec(),
    }
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

#[derive(Clone, Copy)]
enum Caching {
    /// Revalidate every time (the shell, the service worker, unversioned paths).
    NoCache,
    /// Under `/v/<version>/`: never changes.
    Immutable,
}

fn serve(a: &Asset, caching: Caching, req_headers: &HeaderMap) -> Response {
    let etag = format!("\"{}:{}\"", version(), a.path);
    let cache = match caching {
        Caching::NoCache => "no-cache",
        Caching::Immutable => "public, max-age=31536000, immutable",
    };
    let not_modified = req_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            )],
            body_of(a),
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if a.path == "sw.js" {
        // The worker may control the whole origin although it is served from /sw.js.
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    response
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "not found\n",
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(a) => serve(a, Caching::NoCache, &headers),
        None => not_found(),
    }
}

async fn top_level(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match file.as_str() {
        "sw.js" | "manifest.webmanifest" | "app.css" => match find(&file) {
            Some(a) => serve(a, Caching::NoCache, &headers),
            None => not_found(),
        },
        _ => not_found(),
    }
}

async fn unversioned(Path((dir, rest)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let path = format!("{dir}/{rest}");
    match find(&path) {
        Some(a) if dir == "js" || dir == "icons" => serve(a, Caching::NoCache, &headers),
        _ => not_found(),
    }
}

async fn versioned(Path((ver, rest)): Path<(String, String)>, headers: HeaderMap) -> Response {
    match find(&rest) {
        Some(a) if ver == version() && a.path != "index.html" && a.path != "sw.js" => {
            serve(a, Caching::Immutable, &headers)
        }
        // An older or newer build's URL: serve this build's file, but do not let it
        // be cached under the other version's name.
        Some(a) if a.path != "index.html" && a.path != "sw.js" => {
            serve(a, Caching::NoCache, &headers)
        }
        _ => not_found(),
    }
}

/// The headers every response of the page's routes carries.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    response
}

/// The page's routes (stateless), merged into the server's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/{file}", get(top_level))
        .route("/{dir}/{*rest}", get(unversioned))
        .route("/v/{ver}/{*rest}", get(versioned))
        .layer(middleware::from_fn(security_headers))
}

/// Whether a WebSocket request with this `Origin` comes from the server's own page
/// (docs/protocol.md, "Transport"): the Origin must be exactly `http(s)://<the
/// request's Host>` (so another site, or another port on the same machine, is
/// refused), and that host and port must be one of this server's names as seen on
/// this connection (see [`crate::names`]): the name is what defeats DNS rebinding (a
/// page on `evil.example` that resolves here sends `Host: evil.example`). A proxy or
/// forwarder on another port is admitted by naming it with `--server-name`.
pub fn own_origin_allowed(
    origin: &str,
    host: Option<&str>,
    names: &ServerNames,
    arrival: &Arrival,
) -> bool {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return false;
    };
    let authority = match origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    {
        Some(a) => a.trim_end_matches('/'),
        None => return false,
    };
    if !authority.eq_ignore_ascii_case(host) {
        return false;
    }
    match Origin::parse_page(origin) {
        Ok(origin) => names.admit(&origin, arrival).is_ok(),
        Err(_) => false,
    }
}

/// The page's URL for a server listening on `addr` (printed by `serve` and `demo`).
pub fn page_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match addr.ip() {
        // A browser on this machine reaches a dual-stack wildcard listener as
        // localhost (a name of this server there), an IPv4 wildcard as 127.0.0.1.
        IpAddr::V6(ip) if ip.is_unspecified() => format!("{scheme}://localhost:{}/", addr.port()),
        IpAddr::V4(ip) if ip.is_unspecified() => format!("{scheme}://127.0.0.1:{}/", addr.port()),
        IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}/", addr.port()),
        IpAddr::V4(ip) => format!("{scheme}://{ip}:{}/", addr.port()),
    }
}

/// A QR code of `text` drawn with Unicode half blocks (two modules per character
/// cell) and a quiet zone, for a terminal with a dark background: light modules are
/// printed (█ ▀ ▄), dark modules are left blank. On a light background the image is
/// inverted, which common phone camera apps also read.
pub fn qr_half_blocks(text: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let quiet = 2usize;
    let size = width + 2 * quiet;
    let dark = |x: usize, y: usize| -> bool {
        if x < quiet || y < quiet || x >= width + quiet || y >= width + quiet {
            return false;
        }
        colors[(y - quiet) * width + (x - quiet)] == qrcode::Color::Dark
    };
    let mut out = String::new();
    for row in (0..size).step_by(2) {
        for x in 0..size {
            let top = dark(x, row);
            let bottom = row + 1 < size && dark(x, row + 1);
            // Light = printed, dark = the terminal's (dark) background.
            out.push(match (top, bottom) {
                (false, false) => '█',
                (false, true) => '▀',
                (true, false) => '▄',
                (true, true) => ' ',
            });
        }
        out.push('\n');
    }
    Some(out)
}

/// Tell where the page is: its URL as a log event (stderr, in the configured log
/// format; stdout carries only the listening line), and when stderr is a terminal
/// also as a plain line with a QR code of it for a phone's camera.
pub fn announce_page(addr: SocketAddr, tls: bool, self_signed_fingerprint: Option<&str>) {
    use std::io::{IsTerminal, Write};
    let url = page_url(addr, tls);
    tracing::info!(url = %url, tls_fingerprint = self_signed_fingerprint, "web client");
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = writeln!(err, "ccrelay web client: {url}");
        // A phone cannot check a self-signed certificate by itself: the QR code
        // carries the fingerprint (in the fragment, never sent to the server) so
        // the person can compare it with what the browser's certificate view shows.
        let qr_text = match self_signed_fingerprint {
            Some(fp) => {
                let _ = writeln!(err, "certificate fingerprint (self-signed): {fp}");
                format!("{url}#cert={fp}")
            }
            None => url.clone(),
        };
        if let Some(qr) = qr_half_blocks(&qr_text) {
            let _ = write!(err, "{qr}");
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(listen: &str, declared: &[&str]) -> ServerNames {
        let declared: Vec<_> = declared
            .iter()
            .map(|d| crate::names::ServerName::parse(d).unwrap())
            .collect();
        ServerNames::new(None, &declared, &[], None, listen.parse().unwrap(), false)
    }

    fn at(local: &str) -> Arrival {
        Arrival {
            tls: false,
            local: local.parse().unwrap(),
            peer: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn own_origin_same_host_on_a_name() {
        let n = names("127.0.0.1:7878", &["relay.example"]);
        let here = at("127.0.0.1:7878");
        assert!(own_origin_allowed(
            "http://127.0.0.1:7878",
            Some("127.0.0.1:7878"),
            &n,
            &here
        ));
        // TLS ends at a proxy in front of a declared name.
        assert!(own_origin_allowed(
            "https://relay.example",
            Some("relay.example"),
            &n,
            &here
        ));
        // A loopback forwarder on another port: only once it is named.
        assert!(!own_origin_allowed(
            "http://127.0.0.1:9999",
            Some("127.0.0.1:9999"),
            &n,
            &here
        ));
        let n = names("127.0.0.1:7878", &["127.0.0.1:9999"]);
        assert!(own_origin_allowed(
            "http://127.0.0.1:9999",
            Some("127.0.0.1:9999"),
            &n,
            &here
        ));
    }

    #[test]
    fn own_origin_refuses_rebinding_other_sites_and_junk() {
        let n = names("127.0.0.1:7878", &["relay.example"]);
        let here = at("127.0.0.1:7878");
        let allowed = |o: &str, h: Option<&str>| own_origin_allowed(o, h, &n, &here);
        // DNS rebinding: the attacker's name resolves here.
        assert!(!allowed(
            "http://evil.example:7878",
            Some("evil.example:7878")
        ));
        // Another page on this machine (other port) calling our socket.
        assert!(!allowed("http://127.0.0.1:3000", Some("127.0.0.1:7878")));
        assert!(!allowed("http://127.0.0.1:7878", None));
        assert!(!allowed("null", Some("127.0.0.1:7878")));
        assert!(!allowed("ftp://127.0.0.1:7878", Some("127.0.0.1:7878")));
        assert!(!allowed("http://127.0.0.1:7878", Some("127.0.0.1:78x8")));
        assert!(!allowed("http://127.0.0.2:7878", Some("127.0.0.2:7878")));
        // localhost is a name only for a listener holding both loopback addresses.
        assert!(!allowed("http://localhost:7878", Some("localhost:7878")));
    }

    #[test]
    fn ipv6_and_dual_stack() {
        let n = names("[::1]:7878", &[]);
        let here = at("[::1]:7878");
        assert!(own_origin_allowed(
            "http://[::1]:7878",
            Some("[::1]:7878"),
            &n,
            &here
        ));
        assert!(!own_origin_allowed(
            "http://[::2]:7878",
            Some("[::2]:7878"),
            &n,
            &here
        ));
        let dual = ServerNames::new(None, &[], &[], None, "[::]:7878".parse().unwrap(), true);
        let here = at("[::ffff:127.0.0.1]:7878");
        assert!(own_origin_allowed(
            "http://localhost:7878",
            Some("localhost:7878"),
            &dual,
            &here
        ));
        assert!(!own_origin_allowed(
            "http://0.0.0.0:7878",
            Some("0.0.0.0:7878"),
            &dual,
            &here
        ));
    }

    #[test]
    fn every_asset_is_embedded_and_versioned() {
        assert_eq!(version().len(), 12);
        let index = String::from_utf8(body_of(find("index.html").unwrap())).unwrap();
        assert!(!index.contains(VERSION_MARK));
        assert!(index.contains(&format!("/v/{}/js/app.js", version())));
        // No inline script or style in the shell (CSP forbids them anyway).
        assert!(!index.contains("<script>"));
        assert!(!index.contains("<style"));
        assert!(!index.contains(" style="));
    }

    #[test]
    fn page_url_forms() {
        assert_eq!(
            page_url("127.0.0.1:7878".parse().unwrap(), false),
            "http://127.0.0.1:7878/"
        );
        assert_eq!(
            page_url("[::]:1".parse().unwrap(), true),
            "https://localhost:1/"
        );
        assert_eq!(
            page_url("0.0.0.0:1".parse().unwrap(), false),
            "http://127.0.0.1:1/"
        );
    }

    #[test]
    fn qr_code_is_square_and_made_of_half_blocks() {
        let qr = qr_half_blocks("http://127.0.0.1:7878/").unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        let w = lines[0].chars().count();
        assert!(w >= 25);
        assert!(lines.iter().all(|l| l.chars().count() == w));
        assert_eq!(lines.len(), w.div_ceil(2));
        assert!(qr.chars().all(|c| "█▀▄ \n".contains(c)));
    }
}
