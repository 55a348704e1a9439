//! What every web request must pass, and the headers of every response
//! (`protocol-spec/web.md`, "Access").
//!
//! - **Host.** A request must name the app by the address it was opened
//!   with (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`): a page of
//!   another site whose name an attacker re-points at 127.0.0.1 (DNS
//!   rebinding) sends its own name, and is refused.
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

use super::api::{Ctx, error_body};

/// The header a write must carry (with any value).
pub const WRITE_HEADER: &str = "x-meshrelay";

/// Largest request body (a message is at most 15 KiB of text; a contact
/// card is far smaller).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The content security policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The hosts the app answers to, for the bound address.
pub fn allowed_hosts(local: std::net::SocketAddr) -> Vec<String> {
    let port = local.port();
    let mut hosts = vec![format!("localhost:{port}")];
    match local.ip() {
        std::net::IpAddr::V4(ip) => hosts.push(format!("{ip}:{port}")),
        std::net::IpAddr::V6(ip) => hosts.push(format!("[{ip}]:{port}")),
    }
    hosts
}

/// Why a request is refused, if it is.
pub fn refusal(hosts: &[String], method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = header(header::HOST) else {
        return Some("the request names no host");
    };
    if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
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

/// The middleware: refuses what [`refusal`] refuses (403), and sets the
/// security headers on every response.
pub async fn check(State(ctx): State<Ctx>, req: Request<Body>, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut resp = match refusal(&ctx.hosts, req.method(), req.headers()) {
        Some(why) => {
            tracing::info!(why, path = %req.uri().path(), "web request refused");
            (StatusCode::FORBIDDEN, error_body("forbidden", why)).into_response()
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
        let hosts = allowed_hosts("127.0.0.1:8642".parse().unwrap());
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            refusal(&hosts, &get, &headers(&[("host", "127.0.0.1:8642")])),
            None
        );
        assert_eq!(
            refusal(&hosts, &get, &headers(&[("host", "LOCALHOST:8642")])),
            None
        );
        assert!(refusal(&hosts, &get, &headers(&[("host", "evil.example:8642")])).is_some());
        assert!(refusal(&hosts, &get, &headers(&[("host", "127.0.0.1:9999")])).is_some());
        assert!(refusal(&hosts, &get, &headers(&[])).is_some());
        let ok = [
            ("host", "127.0.0.1:8642"),
            ("x-meshrelay", "1"),
            ("content-type", "application/json"),
            ("origin", "http://127.0.0.1:8642"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(refusal(&hosts, &post, &headers(&ok)), None);
        for drop in ["x-meshrelay", "content-type"] {
            let h: Vec<_> = ok.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert!(
                refusal(&hosts, &post, &headers(&h)).is_some(),
                "without {drop}"
            );
        }
        let mut h = ok;
        h[3] = ("origin", "http://evil.example");
        assert!(refusal(&hosts, &post, &headers(&h)).is_some());
        let mut h = ok;
        h[4] = ("sec-fetch-site", "cross-site");
        assert!(refusal(&hosts, &post, &headers(&h)).is_some());
        let mut h = ok;
        h[2] = ("content-type", "text/plain");
        assert!(refusal(&hosts, &post, &headers(&h)).is_some());
    }
}
