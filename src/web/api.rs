//! The web app's routes (`protocol-spec/web.md`, "API"): the page and its
//! files, and a JSON API under `/api/v1/` whose every request is one
//! control operation of the daemon (`protocol-spec/daemon.md`, "Control
//! API"); its answers are the control API's data, as JSON.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{access, assets, guard};
use crate::app::MessageLine;
use crate::control::{
    ControlError, ErrorCode, MAX_REPLY_BYTES, OkData, Op, Reply, ReplyBody, Request, client,
};
use crate::datadir::DataDir;

/// Pairing attempts served per minute (all browsers together); more get
/// `429`. A token has 128 bits: this only keeps guessing from costing the
/// node work.
pub const PAIR_ATTEMPTS_PER_MINUTE: u32 = 10;

/// What every handler shares: the data directory of the daemon it is a
/// client of, the port it answers on, whether browsers must pair, and the
/// pairing attempts of the current minute.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub(super) data: DataDir,
    pub(super) port: u16,
    pub(super) pairing: bool,
    attempts: Arc<Mutex<(u64, u32)>>,
}

impl Ctx {
    /// The context of an app bound to `local` for the daemon of `dir`:
    /// pairing is required unless `local` is a loopback address.
    pub fn new(dir: PathBuf, local: std::net::SocketAddr) -> Self {
        Ctx {
            data: DataDir::new(dir),
            port: local.port(),
            pairing: !local.ip().is_loopback(),
            attempts: Arc::new(Mutex::new((0, 0))),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The routes, behind [`guard::check`].
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/pair", get(pair))
        .route("/api/v1/me", get(me))
        .route("/api/v1/me/qr.svg", get(me_qr))
        .route("/api/v1/cards/check", post(card_check))
        .route("/api/v1/contacts", get(contacts).post(contact_add))
        .route("/api/v1/rooms", get(rooms).post(room_create))
        .route(
            "/api/v1/rooms/{room}/messages",
            get(messages)
                .post(send)
                .layer(DefaultBodyLimit::max(guard::MAX_FILE_BODY_BYTES)),
        )
        .route("/api/v1/files/{event}", get(file))
        .route("/api/v1/rooms/{room}/invite", post(invite))
        .route(
            "/api/v1/rooms/{room}/members/{device}/{action}",
            post(member),
        )
        .route("/api/v1/rooms/{room}/leave", post(leave))
        .route("/api/v1/rooms/{room}/events", get(events))
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .fallback(|| async { Failure::new(StatusCode::NOT_FOUND, "not_found", "no such page") })
        .layer(DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(ctx.clone(), guard::check))
        .with_state(ctx)
}

/// `{"error":{"code","message"}}`, as the control API spells errors.
pub fn error_body(code: &str, message: &str) -> Json<Value> {
    Json(json!({"error": {"code": code, "message": message}}))
}

/// A refused or failed API request.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: String,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Failure {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn no_daemon() -> Self {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_daemon",
            "the daemon is not answering (it may be stopping)",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, error_body(&self.code, &self.message)).into_response()
    }
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Api(e) => {
                let status = match e.code {
                    ErrorCode::NotFound => StatusCode::NOT_FOUND,
                    ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
                    ErrorCode::Runtime => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                let code = serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "runtime".to_owned());
                Failure {
                    status,
                    code,
                    message: e.message,
                }
            }
            ControlError::Closed | ControlError::Io { .. } | ControlError::NotRunning => {
                Failure::no_daemon()
            }
            e => Failure::new(StatusCode::BAD_GATEWAY, "runtime", e.to_string()),
        }
    }
}

/// Runs one control operation; its streamed lines and final data.
async fn control(ctx: &Ctx, op: Op) -> Result<(Vec<MessageLine>, OkData), Failure> {
    let data = ctx.data.clone();
    tokio::task::spawn_blocking(move || client::run(data.root(), op).map_err(Failure::from))
        .await
        .unwrap_or_else(|_| Err(Failure::no_daemon()))
}

/// The final data of an operation as the response.
async fn answer(ctx: &Ctx, op: Op) -> Result<Json<OkData>, Failure> {
    Ok(Json(control(ctx, op).await?.1))
}

/// `GET /pair?t=TOKEN`: a valid, unused pairing token makes a session: its
/// cookie is set and the browser goes to the app.
async fn pair(State(ctx): State<Ctx>, uri: Uri, headers: HeaderMap) -> Response {
    let now = now_ms();
    {
        let Ok(mut a) = ctx.attempts.lock() else {
            return Failure::no_daemon().into_response();
        };
        if now.saturating_sub(a.0) >= 60_000 {
            *a = (now, 0);
        }
        a.1 += 1;
        if a.1 > PAIR_ATTEMPTS_PER_MINUTE {
            return Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "too many pairing attempts: wait a minute",
            )
            .into_response();
        }
    }
    let token = query_param(&uri, "t").unwrap_or("").to_owned();
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let data = ctx.data.clone();
    let redeemed = tokio::task::spawn_blocking(move || {
        let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
        access::redeem(&data, &token, &agent, now, &mut rng)
    })
    .await;
    match redeemed {
        Ok(Ok(Some(cookie))) => {
            tracing::info!("a browser paired with the web app");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_owned()),
                    (
                        header::SET_COOKIE,
                        format!(
                            "{}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000",
                            access::COOKIE
                        ),
                    ),
                ],
            )
                .into_response()
        }
        Ok(Ok(None)) => Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this pairing link is not valid (used, expired or mistyped): \
             run `meshrelay web pair` on the node for a new one",
        )
        .into_response(),
        Ok(Err(e)) => runtime(e).into_response(),
        Err(_) => Failure::no_daemon().into_response(),
    }
}

async fn me(State(ctx): State<Ctx>) -> Result<Json<Value>, Failure> {
    let (identity, card) = ctx.data.load().map_err(runtime)?;
    let device_id = identity.device_id();
    Ok(Json(json!({
        "device_id": device_id.to_string(),
        "name": card.name,
        "fingerprint": crate::crypto::fingerprint(&device_id),
        "card": card.to_text(),
    })))
}

/// The contact card as a QR code (SVG).
async fn me_qr(State(ctx): State<Ctx>) -> Result<Response, Failure> {
    let (_, card) = ctx.data.load().map_err(runtime)?;
    let code = qrcode::QrCode::with_error_correction_level(card.to_text(), qrcode::EcLevel::M)
        .map_err(runtime)?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(240, 240)
        .build();
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[derive(Debug, Deserialize)]
struct CardBody {
    card: String,
}

/// `POST /api/v1/cards/check {"card"}`: who a pasted contact card names,
/// with the fingerprint to compare in person before inviting (the card is
/// verified, not stored).
async fn card_check(Json(b): Json<CardBody>) -> Result<Json<Value>, Failure> {
    let card = crate::crypto::ContactCard::from_text(&b.card).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!("not a valid contact card: {e}"),
        )
    })?;
    Ok(Json(json!({
        "device_id": card.device_id.to_string(),
        "name": card.name,
        "fingerprint": crate::crypto::fingerprint(&card.device_id),
    })))
}

fn bad_input(e: impl std::fmt::Display) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, "bad_input", e.to_string())
}

fn runtime(e: impl std::fmt::Display) -> Failure {
    Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "runtime", e.to_string())
}

/// `GET /api/v1/contacts`: the contact book (the data directory's, as
/// `meshrelay contacts` reads it), by name.
async fn contacts(State(ctx): State<Ctx>) -> Result<Json<Value>, Failure> {
    let book = crate::contacts::ContactBook::load(&ctx.data).map_err(runtime)?;
    let mut list: Vec<Value> = book
        .iter()
        .map(|c| {
            json!({
                "device_id": c.device_id.to_string(),
                "name": c.name,
                "fingerprint": crate::crypto::fingerprint(&c.device_id),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({ "contacts": list })))
}

/// `POST /api/v1/contacts {"card"}`: verifies a card and stores it, as
/// `meshrelay contact add` does.
async fn contact_add(
    State(ctx): State<Ctx>,
    Json(b): Json<CardBody>,
) -> Result<Json<Value>, Failure> {
    use crate::contacts::{AddOutcome, ContactBook, ContactError};
    let card = crate::crypto::ContactCard::from_text(&b.card)
        .map_err(|e| bad_input(format!("not a valid contact card: {e}")))?;
    let (identity, _) = ctx.data.load().map_err(runtime)?;
    let outcome = ContactBook::store_card(&ctx.data, &identity.device_id(), card.clone()).map_err(
        |e| match e {
            ContactError::Full | ContactError::OwnCard => bad_input(e),
            e => runtime(e),
        },
    )?;
    let outcome = match outcome {
        AddOutcome::Added => "added",
        AddOutcome::Updated => "updated",
        AddOutcome::Unchanged => "unchanged",
    };
    Ok(Json(json!({
        "device_id": card.device_id.to_string(),
        "name": card.name,
        "fingerprint": crate::crypto::fingerprint(&card.device_id),
        "outcome": outcome,
    })))
}

async fn rooms(State(ctx): State<Ctx>) -> Result<Json<OkData>, Failure> {
    answer(&ctx, Op::Rooms).await
}

async fn status(State(ctx): State<Ctx>) -> Result<Json<OkData>, Failure> {
    answer(&ctx, Op::Status).await
}

async fn peers(State(ctx): State<Ctx>) -> Result<Json<OkData>, Failure> {
    answer(&ctx, Op::Peers).await
}

#[derive(Debug, Deserialize)]
struct NameBody {
    name: String,
}

async fn room_create(
    State(ctx): State<Ctx>,
    Json(b): Json<NameBody>,
) -> Result<Json<OkData>, Failure> {
    answer(&ctx, Op::RoomCreate { name: b.name }).await
}

/// Most message lines one API request asks the daemon for (`?last=N`,
/// default [`DEFAULT_WEB_LINES`]): a phone opening a room of thousands of
/// messages costs the daemon the end of it only.
pub const MAX_WEB_LINES: usize = 1000;
/// Message lines of a room the app shows when it opens it.
pub const DEFAULT_WEB_LINES: usize = 200;

/// The value of `key` in a request's query (`?key=value&…`), if present.
fn query_param<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// `?last=N` of a request, within [`MAX_WEB_LINES`].
fn last_param(uri: &Uri) -> usize {
    query_param(uri, "last")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(DEFAULT_WEB_LINES)
        .min(MAX_WEB_LINES)
}

async fn messages(
    State(ctx): State<Ctx>,
    Path(room): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, Failure> {
    let last = Some(last_param(&uri));
    // `?read=0`: counting unread messages, nobody is shown them.
    let mark_read = query_param(&uri, "read") != Some("0");
    let (lines, _) = control(
        &ctx,
        Op::Messages {
            room,
            last,
            mark_read,
        },
    )
    .await?;
    Ok(Json(json!({ "lines": lines })))
}

/// A message from the composer: text, and optionally a location pin and
/// the urgent mark (`protocol-spec/web.md`).
#[derive(Debug, Deserialize)]
struct TextBody {
    #[serde(default)]
    text: String,
    #[serde(default)]
    location: Option<crate::room::content::Location>,
    #[serde(default)]
    urgent: bool,
    #[serde(default)]
    file: Option<crate::control::FileData>,
}

async fn send(
    State(ctx): State<Ctx>,
    Path(room): Path<String>,
    Json(b): Json<TextBody>,
) -> Result<Json<OkData>, Failure> {
    answer(
        &ctx,
        Op::Send {
            room,
            text: b.text,
            via: None,
            location: b.location,
            urgent: b.urgent,
            file: b.file,
        },
    )
    .await
}

/// Media types shown inline (images a browser decodes itself); anything
/// else is only ever a download, so a file can never run as the app.
const INLINE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// `GET /api/v1/files/EVENT`: a complete attachment, its hash checked
/// (`save` without a path). Images in [`INLINE_TYPES`] are served as
/// themselves; everything else as `application/octet-stream` to download.
async fn file(State(ctx): State<Ctx>, Path(event): Path<String>) -> Result<Response, Failure> {
    let data = answer(&ctx, Op::Save { event, path: None }).await?;
    let OkData::File { file } = data.0 else {
        return Err(runtime("save: unexpected reply"));
    };
    let bytes = data_encoding::BASE64
        .decode(file.data.as_bytes())
        .map_err(runtime)?;
    let inline = INLINE_TYPES.contains(&file.media_type.as_str());
    let kind = if inline {
        file.media_type.clone()
    } else {
        "application/octet-stream".to_owned()
    };
    // The name as a quoted string without quotes, backslashes or controls.
    let name: String = file
        .name
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        percent(&name)
    );
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

/// RFC 5987 percent-encoding of a file name.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct ContactBody {
    contact: String,
}

async fn invite(
    State(ctx): State<Ctx>,
    Path(room): Path<String>,
    Json(b): Json<ContactBody>,
) -> Result<Json<OkData>, Failure> {
    // A stored contact named by device ID goes as its card (the daemon
    // reads no contact book).
    let op = client::with_book_card(
        ctx.data.root(),
        Op::RoomInvite {
            room,
            contact: b.contact.trim().to_owned(),
        },
    );
    answer(&ctx, op).await
}

/// `POST /api/v1/rooms/ROOM/members/DEVICE/{remove|promote|demote}`
/// (body `{}`): an admin's change; the daemon checks the room's rules.
async fn member(
    State(ctx): State<Ctx>,
    Path((room, device, action)): Path<(String, String, String)>,
    Json(_): Json<Value>,
) -> Result<Json<OkData>, Failure> {
    let op = match action.as_str() {
        "remove" => Op::RoomRemove { room, device },
        "promote" => Op::RoomPromote { room, device },
        "demote" => Op::RoomDemote { room, device },
        _ => {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such member action (remove, promote, demote)",
            ));
        }
    };
    answer(&ctx, op).await
}

/// `POST /api/v1/rooms/ROOM/leave` (body `{}`).
async fn leave(
    State(ctx): State<Ctx>,
    Path(room): Path<String>,
    Json(_): Json<Value>,
) -> Result<Json<OkData>, Failure> {
    answer(&ctx, Op::RoomLeave { room }).await
}

/// A room's lines as server-sent events (`event: line`), then each new one
/// as it arrives: the control API's `follow` over an asynchronous
/// connection, so a browser that goes away closes it at once (and frees
/// the daemon's follower slot).
async fn events(
    State(ctx): State<Ctx>,
    Path(room): Path<String>,
    uri: Uri,
) -> Result<Response, Failure> {
    let last = Some(last_param(&uri));
    let mut stream = tokio::net::UnixStream::connect(client::socket_path(ctx.data.root()))
        .await
        .map_err(|_| Failure::no_daemon())?;
    let mut req = serde_json::to_vec(&Request::new(Op::Follow { room, last }))
        .map_err(|_| Failure::no_daemon())?;
    req.push(b'\n');
    stream
        .write_all(&req)
        .await
        .map_err(|_| Failure::no_daemon())?;
    let mut reader = BufReader::new(stream);
    // The first reply decides: an error (unknown room, too many
    // followers) is the response; a line starts the stream.
    let first = read_reply(&mut reader)
        .await
        .ok_or_else(Failure::no_daemon)?;
    let first = match first.body {
        ReplyBody::Error(e) => return Err(ControlError::Api(e).into()),
        ReplyBody::Ok(_) => None,
        ReplyBody::Line(l) => Some(l),
    };
    let stream = line_events(first, reader);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One reply line from the daemon, `None` at the end or on bad input.
async fn read_reply(reader: &mut BufReader<tokio::net::UnixStream>) -> Option<Reply> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_REPLY_BYTES as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
        .ok()?;
    if n == 0 || buf.len() > MAX_REPLY_BYTES {
        return None;
    }
    serde_json::from_slice(&buf).ok()
}

fn line_events(
    first: Option<MessageLine>,
    reader: BufReader<tokio::net::UnixStream>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((first, Some(reader)), |(first, reader)| async move {
        let mut reader = reader?;
        let line = match first {
            Some(l) => l,
            None => match read_reply(&mut reader).await?.body {
                ReplyBody::Line(l) => l,
                // The daemon stopped or gave up on this follower.
                _ => return None,
            },
        };
        let event = Event::default()
            .event("line")
            .json_data(&line)
            .unwrap_or_else(|_| Event::default().comment("unencodable line"));
        Some((Ok(event), (None, Some(reader))))
    })
}
