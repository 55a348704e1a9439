//! The rooms commands through the real `meshrelay` binary: two data
//! directories exchanging a contact card and a bundle file.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn mr(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshrelay"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = mr(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn demo_shares_a_room_through_a_bundle() {
    let o = Command::new(env!("CARGO_BIN_EXE_meshrelay"))
        .args(["demo", "--basics"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("Bo reads"), "{out}");
    assert!(out.contains("Demo complete"), "{out}");
}

#[test]
fn room_shared_through_a_bundle_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&a, &["init", "--name", "Ana"]);
    ok(&b, &["init", "--name", "Bo"]);
    let b_id: Value = serde_json::from_str(&ok(&b, &["id", "--json"])).unwrap();
    let b_card = b_id["card"].as_str().unwrap();

    let created: Value =
        serde_json::from_str(&ok(&a, &["room", "create", "ops", "--json"])).unwrap();
    let room = created["room_id"].as_str().unwrap();
    ok(&a, &["room", "invite", room, b_card]);
    let sent: Value = serde_json::from_str(&ok(&a, &["send", room, "hello Bo", "--json"])).unwrap();
    let rooms: Value = serde_json::from_str(&ok(&a, &["rooms", "--json"])).unwrap();
    assert_eq!(rooms[0]["room_id"], room);
    assert_eq!(rooms[0]["members"].as_array().unwrap().len(), 2);

    let file = tmp.path().join("stick.bundle");
    let file = file.to_str().unwrap();
    ok(&a, &["export", "--room", room, file]);
    let sum: Value = serde_json::from_str(&ok(&b, &["import", file])).unwrap();
    assert!(sum["imported"].as_u64().unwrap() > 0, "{sum}");
    assert_eq!(sum["rejected"], 0);
    let again: Value = serde_json::from_str(&ok(&b, &["import", file])).unwrap();
    assert_eq!(again["imported"], 0);

    let lines = ok(&b, &["messages", room, "--json"]);
    let text = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v.get("text").is_some())
        .unwrap();
    assert_eq!(text["text"], "hello Bo");
    assert_eq!(text["event_id"], sent["event_id"]);

    // `decode` understands bundles.
    let decoded: Value = serde_json::from_str(&ok(&b, &["decode", "--json", file])).unwrap();
    let evs = decoded["bundle"]["events"].as_array().unwrap();
    assert!(evs.iter().any(|e| e["event_id"] == sent["event_id"]));
    assert!(!decoded.to_string().contains("hello Bo"));

    // Bad input exits 2; an uninitialised directory too.
    assert_eq!(mr(&a, &["send", "zz", "x"]).status.code(), Some(2));
    assert_eq!(
        mr(&tmp.path().join("none"), &["rooms"]).status.code(),
        Some(2)
    );
}

#[test]
fn store_check_reports_integrity_and_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(&a, &["init", "--name", "Ana"]);
    // No store yet: a clear usage error, not a crash.
    let o = mr(&a, &["store", "check", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let created: Value =
        serde_json::from_str(&ok(&a, &["room", "create", "ops", "--json"])).unwrap();
    let room = created["room_id"].as_str().unwrap();
    ok(&a, &["send", room, "one", "--json"]);
    ok(&a, &["send", room, "two", "--json"]);
    let report: Value = serde_json::from_str(&ok(&a, &["store", "check", "--json"])).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["stats"]["events"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["stats"]["forks"], 0);
    assert!(report["stats"]["evictions"].is_object());
    let text = ok(&a, &["store", "check"]);
    assert!(text.contains("integrity: ok"), "{text}");
}
