//! The web app (`meshrelay run --web`, `protocol-spec/web.md`) served by real
//! daemons: its API over the control socket, the access rules against
//! foreign requests, and two people using it in a real headless Chromium
//! (`tests/web/browser_flow.py`, the DevTools protocol on a pipe).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{Daemon, free_port, ok};
use crate::field::need;

/// One HTTP/1.1 request; the status, the response head and its body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// The status of a write of a `len`-byte body.
fn over_limit(addr: &str, path: &str, len: usize) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nConnection: close\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nX-Meshrelay: 1\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(&vec![b'y'; len]).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

const WRITE: [(&str, &str); 2] = [("Content-Type", "application/json"), ("X-Meshrelay", "1")];

fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, b) = http(addr, "POST", path, &WRITE, &body.to_string());
    (status, serde_json::from_str(&b).unwrap_or(Value::Null))
}

fn get(addr: &str, path: &str) -> (u16, Value) {
    let (status, _, b) = http(addr, "GET", path, &[], "");
    (status, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// A daemon with the web app on a free loopback port; its address.
fn start(dir: &std::path::Path, name: &str, port: u16, peers: &[String]) -> (Daemon, String) {
    let web = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(dir, name, port, peers, &["--web", &web]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&web).is_err() {
        assert!(Instant::now() < deadline, "the web app did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    (d, web)
}

#[test]
fn the_api_drives_the_daemon_and_refuses_foreign_requests() {
    let t = tempfile::tempdir().unwrap();
    let (_d, web) = start(&t.path().join("ana"), "Ana", 0, &[]);

    let (status, head, page) = http(&web, "GET", "/", &[], "");
    assert_eq!(status, 200, "{head}");
    assert!(page.contains("<script src=\"/app.js\""), "{page}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(head.contains("x-content-type-options: nosniff"));
    assert!(head.contains("x-frame-options: deny"));

    let (status, me) = get(&web, "/api/v1/me");
    assert_eq!(status, 200);
    assert_eq!(me["name"], "Ana");
    assert!(me["card"].as_str().unwrap().starts_with("MRC1:"));
    let (status, head, svg) = http(&web, "GET", "/api/v1/me/qr.svg", &[], "");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("image/svg+xml") && svg.contains("<svg"));

    // A room and a message through the API, read back through the CLI
    // and the API: both are clients of the same daemon.
    let (status, r) = post(
        &web,
        "/api/v1/rooms",
        &serde_json::json!({"name": "north camp"}),
    );
    assert_eq!(status, 200, "{r}");
    let room = r["room_id"].as_str().unwrap().to_owned();
    let text = "Water at the north gate <b>now</b>";
    let (status, e) = post(
        &web,
        &format!("/api/v1/rooms/{room}/messages"),
        &serde_json::json!({ "text": text }),
    );
    assert_eq!(status, 200, "{e}");
    let event_id = e["event_id"].as_str().unwrap().to_owned();
    assert!(ok(&t.path().join("ana"), &["messages", &room]).contains(text));
    let (status, m) = get(&web, "/api/v1/rooms/north%20camp/messages");
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["lines"][0]["text"], text);
    assert_eq!(m["lines"][0]["event_id"], event_id.as_str());
    let (_, rooms) = get(&web, "/api/v1/rooms");
    assert_eq!(rooms["rooms"][0]["name"], "north camp");
    // Contacts: a card is verified and stored (one's own refused), then
    // listed with its fingerprint.
    let ben = tempfile::tempdir().unwrap();
    let ben_dir = ben.path().join("ben");
    ok(&ben_dir, &["init", "--name", "Ben"]);
    let ben_card: Value = serde_json::from_str(&ok(&ben_dir, &["id", "--json"])).unwrap();
    let (status, added) = post(
        &web,
        "/api/v1/contacts",
        &serde_json::json!({"card": ben_card["card"]}),
    );
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        (added["outcome"].as_str(), &added["fingerprint"]),
        (Some("added"), &ben_card["fingerprint"])
    );
    let (status, own) = post(
        &web,
        "/api/v1/contacts",
        &serde_json::json!({"card": me["card"]}),
    );
    assert_eq!(
        (status, own["error"]["code"].as_str()),
        (400, Some("bad_input")),
        "{own}"
    );
    let (_, list) = get(&web, "/api/v1/contacts");
    assert_eq!(list["contacts"][0]["name"], "Ben", "{list}");
    assert!(ok(&t.path().join("ana"), &["contacts"]).contains("Ben"));
    // A stored contact is invited by device ID.
    let (status, inv) = post(
        &web,
        &format!("/api/v1/rooms/{room}/invite"),
        &serde_json::json!({"contact": ben_card["device_id"]}),
    );
    assert_eq!(status, 200, "{inv}");
    // Admin actions and leaving go through the daemon's room rules.
    let (status, e) = post(
        &web,
        &format!("/api/v1/rooms/{room}/members/{}/remove", "mr1nobody"),
        &serde_json::json!({}),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_input")),
        "{e}"
    );
    let (status, e) = post(
        &web,
        &format!(
            "/api/v1/rooms/{room}/members/{}/frobnicate",
            me["device_id"].as_str().unwrap()
        ),
        &serde_json::json!({}),
    );
    assert_eq!(status, 404, "{e}");
    let (_, other) = post(
        &web,
        "/api/v1/rooms",
        &serde_json::json!({"name": "to leave"}),
    );
    let other = other["room_id"].as_str().unwrap().to_owned();
    let (status, e) = post(
        &web,
        &format!("/api/v1/rooms/{other}/leave"),
        &serde_json::json!({}),
    );
    assert_eq!(status, 200, "{e}");
    assert!(e["event_id"].is_string(), "{e}");
    // A pasted card is checked (and its fingerprint shown) before inviting.
    let (status, who) = post(
        &web,
        "/api/v1/cards/check",
        &serde_json::json!({"card": me["card"]}),
    );
    assert_eq!(status, 200, "{who}");
    assert_eq!(
        (&who["name"], &who["fingerprint"]),
        (&me["name"], &me["fingerprint"])
    );
    let (status, bad) = post(
        &web,
        "/api/v1/cards/check",
        &serde_json::json!({"card": "MRC1:AAAA"}),
    );
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("bad_input")),
        "{bad}"
    );
    let (status, st) = get(&web, "/api/v1/status");
    assert_eq!(status, 200);
    assert!(st["status"].is_object(), "{st}");

    // The live stream starts with the room's lines.
    let mut s = TcpStream::connect(&web).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /api/v1/rooms/{room}/events HTTP/1.1\r\nHost: {web}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(&event_id) {
        let n = s.read(&mut buf).expect("the event stream's first line");
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.contains("text/event-stream") && got.contains("event: line"),
        "{got}"
    );
    drop(s);

    // The daemon's refusals come back with their codes.
    let (status, e) = get(&web, "/api/v1/rooms/nosuchroom/messages");
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_input"))
    );
    let unknown = "00".repeat(16);
    let (status, e) = get(&web, &format!("/api/v1/rooms/{unknown}/messages"));
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    let long = "x".repeat(20_000);
    let (status, e) = post(
        &web,
        &format!("/api/v1/rooms/{room}/messages"),
        &serde_json::json!({ "text": long }),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("limit"),
        "{e}"
    );

    // Foreign requests: another host name (DNS rebinding), a write
    // without the app's header or from another origin, a form post.
    let body = r#"{"name":"x"}"#;
    let refused: [(&str, Vec<(&str, &str)>); 5] = [
        ("GET", vec![("Host", "evil.example")]),
        ("POST", vec![("Content-Type", "application/json")]),
        (
            "POST",
            vec![WRITE[0], WRITE[1], ("Origin", "http://evil.example")],
        ),
        (
            "POST",
            vec![WRITE[0], WRITE[1], ("Sec-Fetch-Site", "cross-site")],
        ),
        (
            "POST",
            vec![
                ("Content-Type", "application/x-www-form-urlencoded"),
                WRITE[1],
            ],
        ),
    ];
    for (method, headers) in refused {
        let (status, _, b) = http(&web, method, "/api/v1/rooms", &headers, body);
        assert_eq!(status, 403, "{method} {headers:?}: {b}");
    }
    let (_, rooms) = get(&web, "/api/v1/rooms");
    let refused_made = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "x")
        .count();
    assert_eq!(refused_made, 0, "a refused request made a room: {rooms}");
    // Bodies are bounded: 64 KiB, and a message (which may carry a file)
    // `MAX_FILE_BODY_BYTES`; within that, an oversize text is refused by
    // the daemon with a clear message.
    let big = format!(r#"{{"name":"{}"}}"#, "y".repeat(100_000));
    let (status, _, _) = http(&web, "POST", "/api/v1/rooms", &WRITE, &big);
    assert_eq!(status, 413);
    // (One byte over: the server reads it all before it refuses, so no
    // unread bytes reset the connection under its answer.)
    let messages = format!("/api/v1/rooms/{room}/messages");
    assert_eq!(
        over_limit(
            &web,
            &messages,
            meshrelay::web::guard::MAX_FILE_BODY_BYTES + 1
        ),
        413
    );
    let long = format!(r#"{{"text":"{}"}}"#, "y".repeat(100_000));
    let (status, _, body) = http(&web, "POST", &messages, &WRITE, &long);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("over the"), "{body}");
}

/// On any address but loopback, nothing but the login page and the
/// pairing link is served until a browser paired; a pairing link works
/// once; `web sessions` lists the paired browser and `web revoke` unpairs
/// it; guessing is rate-limited. The secret never reaches the log.
#[test]
fn a_non_loopback_address_serves_only_paired_browsers() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("ana");
    let port = free_port();
    let _d = Daemon::start_with(&dir, "Ana", 0, &[], &["--web", &format!("0.0.0.0:{port}")]);
    let web = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&web).is_err() {
        assert!(Instant::now() < deadline, "the web app did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Unpaired: every API call is refused, pages are the login page.
    for (method, path) in [
        ("GET", "/api/v1/rooms"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/me/qr.svg"),
        ("POST", "/api/v1/rooms"),
    ] {
        let (status, _, b) = http(&web, method, path, &WRITE, r#"{"name":"x"}"#);
        assert_eq!(status, 401, "{method} {path}: {b}");
        assert!(b.contains("not_paired") && !b.contains("MRC1:"), "{b}");
    }
    let (status, _, page) = http(&web, "GET", "/", &[], "");
    assert_eq!(status, 401);
    assert!(
        page.contains("Pair this browser") && !page.contains("app.js"),
        "{page}"
    );
    let (status, _, _) = http(&web, "GET", "/app.js", &[], "");
    assert_eq!(status, 401);
    let out = ok(&dir, &["web", "pair", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let url = v["url"].as_str().unwrap();
    let token = url.split_once("/pair?t=").unwrap().1;
    assert_eq!(v["expires_in_s"], 600);
    // A wrong token, then the right one (once).
    let (status, _, _) = http(&web, "GET", "/pair?t=AAAAAAAAAAAAAAAAAAAAAAAAAA", &[], "");
    assert_eq!(status, 403);
    let (status, head, _) = http(
        &web,
        "GET",
        &format!("/pair?t={token}"),
        &[("User-Agent", "FieldPhone/1.0")],
        "",
    );
    assert_eq!(status, 303, "{head}");
    let set = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, _) = http(&web, "GET", &format!("/pair?t={token}"), &[], "");
    assert_eq!(status, 403, "a pairing link works once");
    // Paired: the app and its API.
    let (status, _, page) = http(&web, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert!(page.contains("app.js"));
    let mut with = WRITE.to_vec();
    with.push(("Cookie", &cookie));
    let (status, _, b) = http(&web, "POST", "/api/v1/rooms", &with, r#"{"name":"camp"}"#);
    assert_eq!(status, 200, "{b}");
    // The write rules still hold for a paired browser.
    let (status, _, _) = http(
        &web,
        "POST",
        "/api/v1/rooms",
        &[("Cookie", &cookie), WRITE[0]],
        r#"{"name":"x"}"#,
    );
    assert_eq!(status, 403);
    let sessions: Value =
        serde_json::from_str(ok(&dir, &["web", "sessions", "--json"]).trim()).unwrap();
    assert_eq!(sessions[0]["agent"], "FieldPhone/1.0");
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    ok(&dir, &["web", "revoke", &id]);
    let (status, _, _) = http(&web, "GET", "/api/v1/rooms", &[("Cookie", &cookie)], "");
    assert_eq!(status, 401, "a revoked session");
    // Guessing is rate-limited: 10 attempts a minute (3 used above).
    let codes: Vec<u16> = (0..10)
        .map(|i| http(&web, "GET", &format!("/pair?t=GUESS{i}"), &[], "").0)
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 403).count(), 7, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 3, "{codes:?}");
    // Neither the token nor the session secret is in the log.
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(log.contains("for paired browsers"), "{log}");
    let secret = cookie.split_once('.').unwrap().1;
    assert!(!log.contains(token) && !log.contains(secret), "{log}");
    let mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(
        (mode("web-pairing.json"), mode("web-sessions.json")),
        (0o600, 0o600)
    );
}

/// Two people, each with a daemon and its web app, in a real browser: A
/// creates a room (with a name made of markup), invites B by the card B's
/// page shows, and sends; B's page shows the room, the message, and then a
/// new message live. Screenshots at phone and desktop width go to a
/// temporary directory (`WEB_SHOTS=DIR` keeps them, as in `reports/web/`).
#[test]
fn two_people_use_the_web_app_in_a_real_browser() {
    let chromium = need("chromium");
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_a, web_a) = start(&t.path().join("ana"), "Ana", port, &[]);
    let (_b, web_b) = start(
        &t.path().join("ben"),
        "Ben",
        0,
        &[format!("/ip4/127.0.0.1/tcp/{port}")],
    );
    let shots = std::env::var_os("WEB_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| t.path().join("shots"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web/browser_flow.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(&chromium)
        .arg(format!("http://{web_a}"))
        .arg(format!("http://{web_b}"))
        .arg(&shots)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let result: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    assert!(
        o.status.success() && result["ok"] == true,
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(result["checks"].as_array().unwrap().len(), 9, "{result}");
    eprintln!(
        "live message in {} s, read receipt back in {} s",
        result["live_seconds"], result["receipt_seconds"]
    );
    // Every screen at phone and desktop width.
    for screen in [
        "rooms-empty",
        "me",
        "invite",
        "room",
        "rooms",
        "receipt",
        "room-b",
        "urgent",
        "photo",
        "members",
        "node",
    ] {
        for width in ["phone", "desktop"] {
            let shot = format!("{screen}-{width}");
            let png = std::fs::read(shots.join(format!("{shot}.png"))).unwrap();
            assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "{shot}");
        }
    }
}
