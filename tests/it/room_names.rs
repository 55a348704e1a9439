//! Issue 18, rooms by name: wherever a command takes `ROOM_ID` it also
//! takes the room's name or a unique ID prefix of at least 4 hex digits;
//! an ambiguous or unknown argument is an error listing the candidates
//! (exit 2). The same without a daemon and through one
//! (`protocol-spec/daemon.md`, "Room arguments").

use std::path::Path;

use crate::daemon::{Daemon, card, create_room, mr, ok, texts};

/// Exit code and standard error of a command that must fail.
fn fails(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = mr(dir, args);
    assert!(!o.status.success(), "{args:?} succeeded");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every room command resolves names and prefixes the same way.
fn exercise(a: &Path, b: &Path) {
    let base = create_room(a, "base");
    let camp1 = create_room(a, "camp");
    let camp2 = create_room(a, "camp");
    let hostile = create_room(a, "camp\x1b[2J");

    // By name: invite, send, messages, export; by prefix (any case).
    ok(a, &["room", "invite", "base", &card(b)]);
    ok(a, &["send", "base", "by name"]);
    let prefix = base[..8].to_ascii_uppercase();
    ok(a, &["send", &prefix, "by prefix"]);
    assert_eq!(texts(a, "base"), ["by name", "by prefix"]);
    let human = ok(a, &["send", "base", "told"]);
    assert!(human.contains("base"), "{human}");
    let json = ok(a, &["rooms", "--json"]);
    assert!(json.contains(&base), "{json}");
    let bundle = a.with_extension("bundle");
    ok(a, &["export", bundle.to_str().unwrap(), "--room", "base"]);
    ok(b, &["import", bundle.to_str().unwrap()]);
    assert_eq!(texts(b, &base[..6]), ["by name", "by prefix", "told"]);

    // Two rooms named "camp": refused, both listed, exit 2.
    let (code, err) = fails(a, &["send", "camp", "which one?"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&camp1) && err.contains(&camp2), "{err}");
    assert!(!err.contains(&hostile), "{err}");
    // A full ID still picks one of them.
    ok(a, &["send", &camp2, "this one"]);
    assert_eq!(texts(a, &camp2), ["this one"]);
    // A hostile name is matched exactly and listed escaped.
    ok(a, &["send", "camp\x1b[2J", "hostile"]);
    assert_eq!(texts(a, &hostile), ["hostile"]);
    // Unknown, too short a prefix: refused.
    let (code, err) = fails(a, &["messages", "nowhere"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no room"), "{err}");
    let (code, err) = fails(a, &["send", &base[..3], "short"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains('\x1b'), "{err}");
}

#[test]
fn rooms_by_name_or_prefix_without_a_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&a, &["init", "--name", "Ana"]);
    ok(&b, &["init", "--name", "Bo"]);
    exercise(&a, &b);
}

#[test]
fn rooms_by_name_or_prefix_through_a_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&b, &["init", "--name", "Bo"]);
    let _d = Daemon::start(&a, "Ana", &[]);
    exercise(&a, &b);
}
