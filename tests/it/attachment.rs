//! Issue 20, attachments (`protocol-spec/attachments.md`): a 500 KB photo
//! from A reaches C through B over LAN daemons with a slow link budget;
//! text A sends after the photo reaches C before the photo is complete; B
//! restarts mid-transfer and the transfer resumes; `save` on C writes
//! identical bytes (and refuses while chunks are missing); bad files are
//! refused with exit 2 and nothing is sent.

use serde_json::Value;

use crate::daemon::{Daemon, card, create_room, free_port, mr, ok, texts, wait_logged};

const BUDGET: [&str; 2] = ["--link-budget-kib", "32"];

/// C's line for `event`.
fn line_of(dir: &std::path::Path, room: &str, event: &str) -> Option<Value> {
    ok(dir, &["messages", room, "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["event_id"] == event)
}

#[test]
fn a_photo_crosses_a_relay_that_restarts_and_is_saved_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (da, db, dc) = (base.join("a"), base.join("b"), base.join("c"));
    let mut b = Daemon::start_with(&db, "Bo", free_port(), &[], &BUDGET);
    let b_addr = b.tcp_addr();
    let a = Daemon::start_with(&da, "Ana", 0, std::slice::from_ref(&b_addr), &BUDGET);
    let c = Daemon::start_with(&dc, "Cy", 0, std::slice::from_ref(&b_addr), &BUDGET);
    wait_logged(Some(base), "links A–B and B–C", || b.peers() == 2);
    let room = create_room(&da, "camp");
    ok(&da, &["room", "invite", &room, &card(&db)]);
    ok(&da, &["room", "invite", &room, &card(&dc)]);
    ok(&da, &["send", &room, "hello"]);
    wait_logged(Some(base), "C reads A's first message", || {
        texts(&dc, &room) == ["hello"]
    });

    // Bad files: exit 2, a clear message, nothing sent.
    let empty = base.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let big = base.join("big.bin");
    std::fs::write(&big, vec![7u8; 1024 * 1024 + 1]).unwrap();
    for (path, says) in [
        (base.join("missing.jpg"), "cannot read"),
        (empty, "is empty"),
        (big, "over 1 MiB"),
    ] {
        let o = mr(&da, &["send", &room, "--file", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{path:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{path:?}: {err}");
    }

    // A 500 KB photo, then text.
    let photo: Vec<u8> = (0..500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = base.join("bridge.jpg");
    std::fs::write(&path, &photo).unwrap();
    let sent: Value = serde_json::from_str(&ok(
        &da,
        &[
            "send",
            &room,
            "--file",
            path.to_str().unwrap(),
            "damage at the bridge",
            "--json",
        ],
    ))
    .unwrap();
    let event = sent["event_id"].as_str().unwrap().to_owned();
    assert_eq!(sent["attachment"]["size"], 500_000);
    assert_eq!(sent["attachment"]["chunks"], 41);
    ok(&da, &["send", &room, "text after the photo"]);

    wait_logged(Some(base), "C reads the text sent after the photo", || {
        texts(&dc, &room)
            .iter()
            .any(|t| t == "text after the photo")
    });
    let at_c = line_of(&dc, &room, &event).expect("the announcement is shown at once");
    assert_eq!(at_c["text"], "damage at the bridge");
    assert_eq!(at_c["attachment"]["name"], "bridge.jpg");
    assert_eq!(at_c["attachment"]["media_type"], "image/jpeg");
    assert_eq!(at_c["attachment"]["size"], 500_000);
    assert_eq!(
        at_c["attachment"]["complete"], false,
        "the text overtook the photo: {at_c}"
    );
    let out = base.join("saved.jpg");
    let early = mr(&dc, &["save", &event, out.to_str().unwrap()]);
    assert_eq!(early.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("chunks have not arrived yet"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    assert!(!out.exists());

    // B restarts mid-transfer; the transfer resumes.
    assert!(b.terminate().success());
    b.restart();
    wait_logged(Some(base), "the photo completes at C", || {
        line_of(&dc, &room, &event).is_some_and(|l| l["attachment"]["complete"] == true)
    });
    let said = ok(&dc, &["save", &event, out.to_str().unwrap()]);
    assert!(said.contains("Saved bridge.jpg (500000 bytes)"), "{said}");
    assert_eq!(std::fs::read(&out).unwrap(), photo, "identical bytes");
    let l = line_of(&dc, &room, &event).unwrap();
    assert_eq!(
        l["attachment"]["path"].as_str().unwrap(),
        std::path::absolute(&out).unwrap().to_str().unwrap()
    );
    drop((a, c));
}
