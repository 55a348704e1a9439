//! Receipts through the CLI and two real daemons over loopback
//! (`protocol-spec/rooms.md` §9): A sends while B is offline; B comes
//! online and catches up; A sees B's delivered receipt, then B's read
//! receipt once a person on B reads the room; nobody answers a receipt
//! with a receipt.

use std::path::Path;

use meshrelay::event::{Event, EventKind};
use serde_json::Value;

use super::daemon::{Daemon, card, create_room, free_port, mr, ok, wait_logged};

/// The text lines of `messages --json` as JSON values.
pub(crate) fn text_lines(dir: &Path, room: &str) -> Vec<Value> {
    let o = mr(dir, &["messages", room, "--json"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["text"].is_string())
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn device_id(dir: &Path) -> String {
    let v: Value = serde_json::from_str(&ok(dir, &["id", "--json"])).unwrap();
    v["device_id"].as_str().unwrap().to_owned()
}

/// The senders of the room's receipt events `dir` holds, one per event.
fn receipt_senders(dir: &Path, room: &str) -> Vec<String> {
    senders(dir, room, Some(EventKind::Receipt))
}

/// The senders of the room's events (of `kind`, or all) `dir` holds, one
/// per event.
pub fn senders(dir: &Path, room: &str, kind: Option<EventKind>) -> Vec<String> {
    let file = dir.with_extension("bundle");
    ok(dir, &["export", "--room", room, file.to_str().unwrap()]);
    let bytes = std::fs::read(&file).unwrap();
    let (_, events) = meshrelay::bundle::parse(&bytes).unwrap();
    events
        .iter()
        .filter_map(|b| Event::decode(b).ok())
        .filter(|e| kind.is_none_or(|k| e.kind() == k))
        .map(|e| e.sender().to_string())
        .collect()
}

#[test]
fn receipts_show_delivery_and_reading_after_a_store_and_forward_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&db, &["init", "--name", "Ben"]);
    let a = Daemon::start_on(&da, "Ana", free_port(), &[]);
    let room = create_room(&da, "camp");
    ok(&da, &["room", "invite", &room, &card(&db)]);
    let texts = ["water at the gate", "bring the radio", "north road closed"];
    for t in texts {
        ok(&da, &["send", &room, t]);
    }
    let lines = text_lines(&da, &room);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| ids(&l["delivered_to"]).is_empty()));
    assert!(
        lines.iter().all(|l| l.get("next_hop").is_none()),
        "no peer yet"
    );
    assert!(!ok(&da, &["messages", &room]).contains('✓'));

    // B comes online and catches up; its delivered receipt comes back.
    let b_id = device_id(&db);
    let b = Daemon::start(&db, "Ben", &[a.tcp_addr()]);
    let delivered =
        |l: &Value| ids(&l["delivered_to"]) == vec![b_id.clone()] && l["next_hop"] == true;
    wait_logged(Some(tmp.path()), "B's delivered receipt on A", || {
        let lines = text_lines(&da, &room);
        lines.len() == 3 && lines.iter().all(delivered)
    });
    assert!(
        text_lines(&da, &room)
            .iter()
            .all(|l| ids(&l["read_by"]).is_empty()),
        "nobody on B read the room yet"
    );
    let human = ok(&da, &["messages", &room]);
    assert!(human.contains("north road closed  ✓✓"), "{human}");
    assert!(!human.contains("read by"), "{human}");

    // A person on B reads the room: the read receipt comes back.
    let shown = ok(&db, &["messages", &room]);
    assert!(shown.contains("north road closed"), "{shown}");
    wait_logged(Some(tmp.path()), "B's read receipt on A", || {
        text_lines(&da, &room)
            .iter()
            .all(|l| ids(&l["read_by"]) == vec![b_id.clone()])
    });
    let human = ok(&da, &["messages", &room]);
    assert!(
        human.contains("north road closed  ✓✓ read by all"),
        "{human}"
    );

    // Receipts are not answered: A received B's receipts and no message,
    // so it sent none; B sent one per thing it had to say (joined and
    // delivered, read), however often A and B read the room.
    for _ in 0..3 {
        ok(&da, &["messages", &room]);
        ok(&db, &["messages", &room]);
    }
    std::thread::sleep(std::time::Duration::from_secs(7));
    let senders = receipt_senders(&da, &room);
    let a_id = device_id(&da);
    assert_eq!(
        senders.iter().filter(|s| **s == a_id).count(),
        0,
        "{senders:?}"
    );
    let from_b = senders.iter().filter(|s| **s == b_id).count();
    assert!((2..=3).contains(&from_b), "{senders:?}");
    drop(b);
}
