//! The control API, version 1 (`protocol-spec/daemon.md`, "Control API"),
//! spoken with raw JSON lines to a real daemon's socket: typed operations
//! and replies, typed refusals of bad lines (the daemon runs on), follow
//! streaming, and the CLI printing the same bytes with and without a
//! daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{Daemon, create_room, mr, ok, wait_until};

/// Writes `line` (a newline is added) and reads reply lines up to and
/// including the final one.
fn raw(dir: &Path, line: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(dir.join("control.sock")).unwrap();
    s.write_all(line).unwrap();
    s.write_all(b"\n").unwrap();
    read_replies(&mut BufReader::new(s))
}

fn read_replies(r: &mut impl BufRead) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let mut l = String::new();
        assert!(
            r.read_line(&mut l).unwrap() > 0,
            "closed before a final reply: {out:?}"
        );
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["v"], 1, "{v}");
        let last = v.get("line").is_none();
        out.push(v);
        if last {
            return out;
        }
    }
}

/// One request; its single final reply.
fn call(dir: &Path, req: Value) -> Value {
    let mut r = raw(dir, req.to_string().as_bytes());
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

fn ok_data(dir: &Path, req: Value) -> Value {
    let r = call(dir, req.clone());
    assert!(r.get("ok").is_some(), "{req} → {r}");
    r["ok"].clone()
}

fn error_code(dir: &Path, line: &[u8]) -> String {
    let r = raw(dir, line);
    assert_eq!(r.len(), 1, "{r:?}");
    r[0]["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn typed_json_lines_against_a_real_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&db, &["init", "--name", "Bo"]);
    let bo_card = ok(&db, &["id", "--json"]);
    let bo_card: Value = serde_json::from_str(&bo_card).unwrap();
    let a = Daemon::start(&da, "Ana", &[]);

    let created = ok_data(&da, json!({"v":1,"op":"room_create","name":"ops"}));
    let room = created["room_id"].as_str().unwrap().to_owned();
    assert_eq!(room.len(), 32);
    let invited = ok_data(
        &da,
        json!({"v":1,"op":"room_invite","room":room,"contact":bo_card["card"]}),
    );
    assert!(invited["event_id"].is_string(), "{invited}");
    let sent = ok_data(
        &da,
        json!({"v":1,"op":"send","room":room,"text":"hi over json"}),
    );
    let event_id = sent["event_id"].as_str().unwrap().to_owned();

    let rooms = ok_data(&da, json!({"v":1,"op":"rooms"}));
    assert_eq!(rooms["rooms"][0]["room_id"], room.as_str());
    assert_eq!(rooms["rooms"][0]["name"], "ops");
    assert_eq!(rooms["rooms"][0]["members"].as_array().unwrap().len(), 2);

    let msgs = raw(
        &da,
        json!({"v":1,"op":"messages","room":room})
            .to_string()
            .as_bytes(),
    );
    let (last, lines) = msgs.split_last().unwrap();
    assert_eq!(last["ok"]["lines"], lines.len(), "{msgs:?}");
    let text = lines
        .iter()
        .find(|l| l["line"]["text"] == "hi over json")
        .unwrap();
    assert_eq!(text["line"]["event_id"], event_id.as_str());

    // The CLI through the daemon sees what the raw API wrote.
    let cli_lines = ok(&da, &["messages", &room, "--json"]);
    assert!(cli_lines.contains(&event_id), "{cli_lines}");

    let exported = ok_data(&da, json!({"v":1,"op":"export","room":room}));
    let bundle = exported["bundle"].as_str().unwrap().to_owned();
    let imported = ok_data(&da, json!({"v":1,"op":"import","bundle":bundle}));
    assert_eq!(imported["import"]["imported"], 0, "{imported}");
    assert!(imported["import"]["duplicates"].as_u64().unwrap() > 0);

    let status = ok_data(&da, json!({"v":1,"op":"status"}));
    assert_eq!(status["status"]["rooms"], 1);
    assert_eq!(status["status"]["daemon"]["running"], true);
    let peers = ok_data(&da, json!({"v":1,"op":"peers"}));
    assert_eq!(peers["peers"], json!([]));

    // Typed refusals; each keeps the daemon running.
    assert_eq!(
        error_code(&da, br#"{"v":1,"op":"frobnicate"}"#),
        "unknown_op"
    );
    assert_eq!(
        error_code(&da, br#"{"v":1,"op":"cli","argv":["rooms"]}"#),
        "unknown_op"
    );
    assert_eq!(
        error_code(&da, br#"{"v":2,"op":"rooms"}"#),
        "unsupported_version"
    );
    assert_eq!(error_code(&da, br#"{"op":"rooms"}"#), "bad_request");
    assert_eq!(error_code(&da, b"not json"), "bad_request");
    assert_eq!(
        error_code(&da, br#"{"v":1,"op":"send","room":"ab"}"#),
        "bad_request"
    );
    assert_eq!(
        error_code(&da, br#"{"v":1,"op":"send","room":"nothex","text":"x"}"#),
        "bad_input"
    );
    let unknown = "ab".repeat(16);
    assert_eq!(
        error_code(
            &da,
            json!({"v":1,"op":"messages","room":unknown})
                .to_string()
                .as_bytes()
        ),
        "not_found"
    );
    assert_eq!(
        error_code(&da, br#"{"v":1,"op":"import","bundle":"!!"}"#),
        "bad_input"
    );

    // An oversize line: a typed error, and the daemon serves on.
    {
        let mut s = UnixStream::connect(da.join("control.sock")).unwrap();
        let chunk = vec![b' '; 1 << 20];
        let mut left = meshrelay::control::MAX_REQUEST_BYTES + 1;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        let r = read_replies(&mut BufReader::new(s));
        assert_eq!(r[0]["error"]["code"], "too_large", "{r:?}");
    }
    assert_eq!(
        ok_data(&da, json!({"v":1,"op":"rooms"}))["rooms"][0]["room_id"],
        room.as_str()
    );

    // Follow: the current lines, then a new one as it is committed.
    let mut f = UnixStream::connect(da.join("control.sock")).unwrap();
    f.write_all(
        json!({"v":1,"op":"follow","room":room})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    f.write_all(b"\n").unwrap();
    f.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut fr = BufReader::new(f.try_clone().unwrap());
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|v: &Value| v["line"]["event_id"] == event_id.as_str())
    {
        let mut l = String::new();
        assert!(fr.read_line(&mut l).unwrap() > 0);
        seen.push(serde_json::from_str(&l).unwrap());
    }
    let later = ok_data(&da, json!({"v":1,"op":"send","room":room,"text":"later"}));
    loop {
        let mut l = String::new();
        assert!(fr.read_line(&mut l).unwrap() > 0);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert!(v.get("line").is_some(), "{v}");
        if v["line"]["text"] == "later" {
            assert_eq!(v["line"]["event_id"], later["event_id"]);
            break;
        }
    }

    // Shutdown ends the follower with `{}` and stops the daemon.
    assert_eq!(ok_data(&da, json!({"v":1,"op":"shutdown"})), json!({}));
    let mut rest = String::new();
    let _ = fr.read_to_string(&mut rest);
    assert!(rest.trim_end().ends_with(r#"{"v":1,"ok":{}}"#), "{rest}");
    wait_until("the daemon to stop", || !da.join("control.sock").exists());
    drop(a);
}

/// Every rooms command prints the same bytes and exits with the same code
/// through a daemon and without one (one formatting function per command).
#[test]
fn cli_output_is_identical_with_and_without_a_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let da = tmp.path().join("a");
    let mut a = Some(Daemon::start(&da, "Ana", &[]));
    let room = create_room(&da, "ops");
    ok(&da, &["send", &room, "one"]);
    ok(&da, &["send", &room, "two", "--json"]);
    let bundle = tmp.path().join("x.bundle");
    let bundle = bundle.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["rooms"],
        vec!["rooms", "--json"],
        vec!["messages", &room],
        vec!["messages", &room, "--json"],
        vec!["export", "--room", &room, "-"],
        vec!["import", bundle],
        vec!["send", "nothex", "x"],
        vec!["messages", "abababababababababababababababab"],
        vec!["room", "remove", &room, "not-a-device"],
    ];
    let mut with = Vec::new();
    for pass in 0..2 {
        if pass == 1 {
            ok(&da, &["stop"]);
            a.take();
            wait_until("the daemon to stop", || !da.join("control.sock").exists());
        }
        ok(&da, &["export", "--room", &room, bundle]);
        for c in &commands {
            let o = mr(&da, c);
            let got = (
                o.status.code(),
                o.stdout,
                String::from_utf8_lossy(&o.stderr).into_owned(),
            );
            if pass == 0 {
                with.push(got);
            } else {
                let w = &with[commands.iter().position(|x| x == c).unwrap()];
                assert_eq!(w.0, got.0, "{c:?}: exit code");
                if c[0] == "export" {
                    // A bundle carries its creation time: compare its events.
                    assert_eq!(w.1.len(), got.1.len(), "{c:?}");
                } else {
                    assert_eq!(
                        String::from_utf8_lossy(&w.1),
                        String::from_utf8_lossy(&got.1),
                        "{c:?}: stdout"
                    );
                }
                assert_eq!(w.2, got.2, "{c:?}: stderr");
            }
        }
    }
}
