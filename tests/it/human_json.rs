//! `--json` output is a contract (issue 22): the human output changed, the
//! machine output must not. The files under `tests/golden/json/` were
//! written by the binary as it was before the human output changed (the
//! commit that added the test clock hook, on main's output code), over the
//! fixture of `human_fixture.rs`; this test compares today's bytes with
//! them. Random IDs (the event or room a command creates now, from the OS
//! RNG) are masked as `<id>`; everything else is compared byte for byte,
//! including the exported bundle.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;

use super::human_fixture::{Fixture, cmd, golden, mask_ids, run};

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

#[test]
fn json_outputs_are_byte_identical_to_before() {
    let f = Fixture::build();
    let room = f.room.to_string();
    let ben2 = f.ben2.id.to_string();
    let eve_card = f.eve.card();

    let t = f.copy(&f.ana);
    golden("json/rooms.json", &run(t.path(), &["rooms", "--json"]));
    golden(
        "json/messages-ana.jsonl",
        &run(t.path(), &["messages", &room, "--json"]),
    );
    let t = f.copy(&f.cy);
    golden(
        "json/messages-cy.jsonl",
        &run(t.path(), &["messages", &room, "--json"]),
    );

    // Commands that write: each on a fresh copy.
    let t = f.copy(&f.ana);
    let sent = text(run(t.path(), &["send", &room, "json check", "--json"]));
    golden("json/send.json", mask_ids(&sent).as_bytes());
    let id: Value = serde_json::from_str(&sent).unwrap();
    let after = text(run(t.path(), &["messages", &room, "--json"]));
    assert!(
        after.contains(id["event_id"].as_str().unwrap()),
        "the sent event is stored"
    );
    let t = f.copy(&f.ana);
    let out = text(run(t.path(), &["room", "create", "south camp", "--json"]));
    golden("json/room-create.json", mask_ids(&out).as_bytes());
    let t = f.copy(&f.ana);
    let out = text(run(
        t.path(),
        &["room", "invite", &room, &eve_card, "--json"],
    ));
    golden("json/room-invite.json", mask_ids(&out).as_bytes());
    let t = f.copy(&f.ana);
    let out = text(run(t.path(), &["room", "remove", &room, &ben2, "--json"]));
    golden("json/room-remove.json", mask_ids(&out).as_bytes());

    // Export (the bundle bytes on stdout) and import of them.
    let t = f.copy(&f.ana);
    let bundle = run(t.path(), &["export", "--room", &room, "-"]);
    golden("json/export.bundle", &bundle);
    let t = f.copy(&f.ben2);
    std::fs::write(t.path().join("stick.bundle"), &bundle).unwrap();
    golden(
        "json/import.json",
        &run(t.path(), &["import", "stick.bundle", "--json"]),
    );

    // `messages --follow --json`: the first poll prints what `messages`
    // prints (once Ana's read receipt from a first `messages` is stored:
    // it shows in every later view).
    let t = f.copy(&f.ana);
    run(t.path(), &["messages", &room, "--json"]);
    let want = run(t.path(), &["messages", &room, "--json"]);
    let lines = want.iter().filter(|b| **b == b'\n').count();
    let mut child = cmd(t.path(), &["messages", &room, "--json", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..lines {
        r.read_until(b'\n', &mut got).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(text(got), text(want), "--follow --json");
}
