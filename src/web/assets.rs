//! The app's files, embedded at compile time from `src/web/assets/`: plain
//! HTML, JavaScript and CSS, no build step. Text from the network is only
//! ever put into the page as text (`textContent`), never as markup.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("assets/app.js");
/// Its style.
pub const APP_CSS: &str = include_str!("assets/app.css");
/// The page a browser that is not paired gets (no script).
pub const LOGIN_HTML: &str = include_str!("assets/login.html");

/// The login page as a response body.
pub(super) fn login_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        LOGIN_HTML,
    )
}

pub(super) async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

pub(super) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}
