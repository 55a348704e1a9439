//! Issue 20, urgent messages (`protocol-spec/wire.md`, "Urgent messages";
//! `encryption.md` §7, content flags): `send ROOM TEXT --urgent` marks a
//! message inside the encryption; another member reads it from a bundle as
//! `"urgent":true` and sees it marked in `messages`; a fourth urgent
//! message within ten minutes is refused with a clear error (exit 2) and
//! nothing is sent; outside the room, the events are ordinary messages.

use serde_json::Value;

use crate::daemon::{ana_invites_ben, mr, ok};
use crate::receipts::text_lines;

#[test]
fn urgent_messages_are_marked_for_members_and_limited_per_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, room) = ana_invites_ben(tmp.path());
    ok(&a, &["send", &room, "all quiet"]);
    let sent: Value = serde_json::from_str(&ok(
        &a,
        &[
            "send",
            &room,
            "--urgent",
            "injured person at the bridge",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(sent["event_id"].as_str().unwrap().len(), 64);
    ok(
        &a,
        &[
            "send",
            &room,
            "--urgent",
            "--location",
            "52.52,13.405",
            "here",
        ],
    );
    ok(&a, &["send", &room, "--urgent", "third call"]);

    // A fourth within ten minutes: exit 2, a clear message, nothing sent.
    let o = mr(&a, &["send", &room, "--urgent", "fourth call"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("at most 3 urgent messages per 10 minutes") && err.contains("--urgent"),
        "{err}"
    );
    // Without the mark it goes.
    ok(&a, &["send", &room, "fourth call"]);

    let bundle = tmp.path().join("x.bundle");
    ok(&a, &["export", bundle.to_str().unwrap(), "--room", &room]);
    ok(&b, &["import", bundle.to_str().unwrap()]);
    let lines = text_lines(&b, &room);
    let marks: Vec<(String, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["text"].as_str().unwrap().to_owned(),
                l.get("urgent") == Some(&Value::Bool(true)),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [
            ("all quiet".to_owned(), false),
            ("injured person at the bridge".to_owned(), true),
            ("here".to_owned(), true),
            ("third call".to_owned(), true),
            ("fourth call".to_owned(), false),
        ]
    );
    assert!(lines[0].get("urgent").is_none(), "left out when not urgent");
    assert_eq!(lines[2]["location"]["lat"], 52.52);
    let human = ok(&b, &["messages", &room]);
    assert!(
        human.contains("🚨 URGENT Ana: injured person at the bridge"),
        "{human}"
    );
    assert!(
        human.contains("🚨 URGENT Ana: 📍 52.52000, 13.40500  here"),
        "{human}"
    );
    assert!(!human.contains("🚨 URGENT Ana: fourth call"), "{human}");

    // What anyone outside the room can see of the bundle (`decode`: every
    // event verified and described, nothing decrypted) names no mark: the
    // urgent messages are messages like the others.
    let described = ok(&a, &["decode", bundle.to_str().unwrap(), "--json"]);
    assert!(!described.to_lowercase().contains("urgent"), "{described}");
    assert!(described.contains("message"), "{described}");
}
