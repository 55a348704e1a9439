//! What every web request must pass, and the headers of every response
//! (`protocol-spec/web.md`, "Access").
//!
//! - **Host.** A request must name the app by an IP address or
//!   `localhost`, with the app's port: a page of another site whose name an
//!   attacker re-points at the node (DNS rebinding) sends its own name, and
//!   is refused.
//! - **Pairing.** On a non-loopback address every request but the pairing
//!   link (`/pair`) and the style sheet needs a paired session's cookie
//!   ([`super::access`]); without one, API requests get `401` and pages the
//!   login page.
//! - **Writes.** Every request but `GET` and `HEAD` must carry the app's
//!   header [`WRITE_HEADER`] and a JSON body, and, when the browser says
//!   where it comes from (`Origin`, `Sec-Fetch-Site`), come from the app
//!   itself. A cross-site form cannot set the header, and a cross-site
//!   script needs a CORS preflight, which the app never grants.
//! - **Bodies** are at most [`MAX_BODY_BYTES`].
//! - **Responses** carry a content security policy that allows only the
//!   app's own script and style (no inline script, so text shown by
//!   mistake as markup still cannot run), `nosniff`, no referrer, no
//!   framing, and `no-store` for the API.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::access;
use super::api::{Ctx, error_body};
use super::assets;

/// The header a write must carry (with any value).
pub const WRITE_HEADER: &str = "x-meshrelay";

/// Largest request body (a message is at most 15 KiB of text; a contact
/// card is far smaller).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest body of a message with a file: a 1 MiB attachment in base64
/// plus the rest of the message.
pub const MAX_FILE_BODY_BYTES: usize =
    (crate::room::attachment::MAX_ATTACHMENT_BYTES as usize).div_ceil(3) * 4 + 64 * 1024;

/// The content security policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// Whether a `Host` header names the app: an IP address (IPv6 in
/// brackets) or `localhost`, with the app's `port`. Names are refused: only
/// DNS rebinding would send the app someone else's name.
pub fn host_ok(host: &str, port: u16) -> bool {
    let Some((name, p)) = host.rsplit_once(':') else {
        return false;
    };
    if p.parse::<u16>().ok() != Some(port) {
        return false;
    }
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Why a request is refused, if it is.
pub fn refusal(port: u16, method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = header(header::HOST) else {
        return Some("the request names no host");
    };
    if !host_ok(host, port) {
        return Some("the request names another host");
    }
    if *method == Method::GET || *method == Method::HEAD {
        return None;
    }
    if !headers.contains_key(WRITE_HEADER) {
        return Some("a write without the app's header");
    }
    let json = header(header::CONTENT_TYPE).is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim() == "application/json")
    });
    if !json {
        return Some("a write without a JSON body");
    }
    if let Some(origin) = header(header::ORIGIN)
        && !origin.eq_ignore_ascii_case(&format!("http://{host}"))
    {
        return Some("a write from another origin");
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some("a write from another site");
    }
    None
}

/// Paths served without a session on a paired address.
const OPEN_PATHS: [&str; 2] = ["/pair", "/app.css"];

/// Whether the request carries a paired session's cookie.
fn has_session(ctx: &Ctx, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(access::cookie_value)
        .any(|c| access::admits(&ctx.data, c))
}

/// The middleware: refuses what [`refusal`] refuses (403), and sets the
/// security headers on every response.
pub async fn check(State(ctx): State<Ctx>, req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path();
    let api = path.starts_with("/api/");
    let mut resp = match refusal(ctx.port, req.method(), req.headers()) {
        Some(why) => {
            tracing::debug!(why, path, "web request refused");
            (StatusCode::FORBIDDEN, error_body("forbidden", why)).into_response()
        }
        None if ctx.pairing && !OPEN_PATHS.contains(&path) && !has_session(&ctx, req.headers()) => {
            if api {
                let why = "this browser is not paired with the node: open a pairing link \
                    (`meshrelay web pair` on the node)";
                (StatusCode::UNAUTHORIZED, error_body("not_paired", why)).into_response()
            } else {
                (StatusCode::UNAUTHORIZED, assets::login_page()).into_response()
            }
        }
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
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
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hosts_and_writes_are_checked() {
        let port = 8642;
        let get = Method::GET;
        let post = Method::POST;
        for ok in [
            "127.0.0.1:8642",
            "LOCALHOST:8642",
            "[::1]:8642",
            "10.0.0.5:8642",
        ] {
            assert_eq!(refusal(port, &get, &headers(&[("host", ok)])), None, "{ok}");
        }
        for bad in [
            "evil.example:8642",
            "127.0.0.1:9999",
            "127.0.0.1",
            "relay.local:8642",
        ] {
            assert!(
                refusal(port, &get, &headers(&[("host", bad)])).is_some(),
                "{bad}"
            );
        }
        assert!(refusal(port, &get, &headers(&[])).is_some());
        let ok = [
            ("host", "127.0.0.1:8642"),
            ("x-meshrelay", "1"),
            ("content-type", "application/json"),
            ("origin", "http://127.0.0.1:8642"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(refusal(port, &post, &headers(&ok)), None);
        for drop in ["x-meshrelay", "content-type"] {
            let h: Vec<_> = ok.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert!(
                refusal(port, &post, &headers(&h)).is_some(),
                "without {drop}"
            );
        }
        let mut h = ok;
        h[3] = ("origin", "http://evil.example");
        assert!(refusal(port, &post, &headers(&h)).is_some());
        let mut h = ok;
        h[4] = ("sec-fetch-site", "cross-site");
        assert!(refusal(port, &post, &headers(&h)).is_some());
        let mut h = ok;
        h[2] = ("content-type", "text/plain");
        assert!(refusal(port, &post, &headers(&h)).is_some());
    }
}
