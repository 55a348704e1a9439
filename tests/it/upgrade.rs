//! Upgrades without loss (issue 19, `protocol-spec/store.md` "Upgrades").
//!
//! `tests/fixtures/upgrade-v1` is a data directory written by the release
//! that introduced the store schema 1 (made by
//! `scripts/make-upgrade-fixture.sh`). This build must open it, read every
//! message exactly as that release did (`messages --json` against the
//! committed expected output) and send. A data directory from a newer
//! release (store schema, identity or contact book format) is refused with
//! exit code 2 and a clear message, and its files are left byte for byte.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::daemon::{mr, ok};

/// The fixture generation this build must read.
fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade-v1")
}

/// A private copy of the fixture's data directory (git does not keep the
/// 0700 / 0600 modes; they are restored as `init` creates them). Returns
/// the directory and the room ID.
fn copy_fixture(to: &Path) -> (PathBuf, String) {
    let dir = to.join("data");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    for e in fs::read_dir(fixture().join("data")).unwrap() {
        let e = e.unwrap();
        let dst = dir.join(e.file_name());
        fs::copy(e.path(), &dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let room = fs::read_to_string(fixture().join("room.txt"))
        .unwrap()
        .trim()
        .to_owned();
    (dir, room)
}

/// The lines without the receipt fields (which the release did not have).
fn without_receipts(mut lines: Vec<Value>) -> Vec<Value> {
    for l in lines.iter_mut().filter_map(Value::as_object_mut) {
        for k in ["delivered_to", "read_by", "next_hop"] {
            l.remove(k);
        }
    }
    lines
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_release_fixture_reads_every_message_and_can_still_send() {
    let t = tempfile::tempdir().unwrap();
    let (dir, room) = copy_fixture(t.path());
    let want = lines(&fs::read_to_string(fixture().join("expected-messages.jsonl")).unwrap());
    assert!(want.len() >= 50, "the fixture holds {} lines", want.len());
    let got = lines(&ok(&dir, &["messages", &room, "--json"]));
    // Receipts came later (issue 18): nobody of the fixture sent one.
    assert!(
        got.iter().all(|l| l.get("text").is_none()
            || (l["delivered_to"] == Value::Array(vec![]) && l["read_by"] == Value::Array(vec![]))),
        "{got:?}"
    );
    // Every field of every line: IDs, senders, times, texts, membership.
    let got = without_receipts(got);
    assert_eq!(got, want);
    let texts: Vec<&str> = got.iter().filter_map(|l| l["text"].as_str()).collect();
    assert!(texts.contains(&"bo 3: ça va, 👍 route clear"), "{texts:?}");

    let contacts: Value = serde_json::from_str(&ok(&dir, &["contacts", "--json"])).unwrap();
    assert_eq!(contacts.as_array().unwrap().len(), 3, "{contacts}");
    // The members after the invites, the promotion, the removal and the
    // leave, exactly as the release showed them.
    let rooms: Value = serde_json::from_str(&ok(&dir, &["rooms", "--json"])).unwrap();
    let want_rooms: Value =
        serde_json::from_str(&fs::read_to_string(fixture().join("expected-rooms.json")).unwrap())
            .unwrap();
    assert_eq!(rooms, want_rooms);
    assert_eq!(rooms[0]["room_id"], room.as_str(), "{rooms}");

    let sent: Value = serde_json::from_str(&ok(
        &dir,
        &["send", &room, "written after the upgrade", "--json"],
    ))
    .unwrap();
    let after = lines(&ok(&dir, &["messages", &room, "--json"]));
    // Reading the room the first time sent this device's receipt.
    assert!(
        after
            .iter()
            .any(|l| l["read_by"].as_array().is_some_and(|r| !r.is_empty())),
        "{after:?}"
    );
    let after = without_receipts(after);
    assert_eq!(after.len(), want.len() + 1);
    assert_eq!(&after[..want.len()], &want[..], "old lines unchanged");
    let last = &after[want.len()];
    assert_eq!(last["text"], "written after the upgrade");
    assert_eq!(last["event_id"], sent["event_id"]);

    let check: Value = serde_json::from_str(&ok(&dir, &["store", "check", "--json"])).unwrap();
    assert_eq!(check["ok"], true, "{check}");
}

/// Runs `args` on `dir` and checks the refusal: exit 2, `needle` in the
/// message, no file of the directory changed.
fn refused(dir: &Path, args: &[&str], needle: &str) {
    let snapshot = |d: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(dir);
    let o = mr(dir, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(needle) && err.contains("newer meshrelay"),
        "{args:?}: {err}"
    );
    assert!(snapshot(dir) == before, "{args:?} changed a file");
}

#[test]
fn a_newer_store_schema_is_refused_and_left_untouched() {
    let t = tempfile::tempdir().unwrap();
    let (dir, room) = copy_fixture(t.path());
    // What a later release with schema 2 would leave behind.
    {
        let db = redb::Database::create(dir.join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("system");
            let mut table = txn.open_table(def).unwrap();
            table
                .insert(b"schema_version".as_slice(), 2u64.to_be_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let listen = "/ip4/127.0.0.1/tcp/0";
    for args in [
        &["messages", &room, "--json"][..],
        &["send", &room, "lost?"],
        &["rooms"],
        &["status", "--json"],
        &["store", "check"],
        &["run", "--no-mdns", "--no-ble", "--listen", listen],
    ] {
        refused(&dir, args, "schema version 2");
    }
}

#[test]
fn a_newer_identity_or_contact_book_is_refused_and_left_untouched() {
    let t = tempfile::tempdir().unwrap();
    let (dir, room) = copy_fixture(t.path());
    let id_path = dir.join("identity.cbor");
    let original = fs::read(&id_path).unwrap();
    // Canonical CBOR: an array header, then the format version 1.
    assert_eq!(&original[..2], &[0x85, 0x01]);
    let mut newer = original.clone();
    newer[1] = 0x02;
    fs::write(&id_path, &newer).unwrap();
    for args in [
        &["id", "--json"][..],
        &["messages", &room],
        &["send", &room, "lost?"],
    ] {
        refused(&dir, args, "identity file");
    }
    fs::write(&id_path, &original).unwrap();

    let book_path = dir.join("contacts.json");
    let mut book: Value = serde_json::from_slice(&fs::read(&book_path).unwrap()).unwrap();
    assert_eq!(book["version"], 1);
    book["version"] = 2.into();
    fs::write(&book_path, serde_json::to_vec(&book).unwrap()).unwrap();
    refused(&dir, &["contacts"], "contact book");
}
