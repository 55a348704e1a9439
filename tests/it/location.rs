//! Issue 20, location pins (`protocol-spec/encryption.md` §7, content type
//! 4): `send ROOM --location LAT,LON [--accuracy M] [TEXT]` stores an
//! encrypted pin; another member reads it from a bundle with its
//! coordinates, accuracy and text; malformed coordinates are refused with
//! a clear error (exit 2) and nothing is sent.

use serde_json::Value;

use crate::daemon::{ana_invites_ben, mr, ok};
use crate::receipts::text_lines;

#[test]
fn a_location_pin_reaches_another_member_with_its_coordinates() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, room) = ana_invites_ben(tmp.path());
    let sent: Value = serde_json::from_str(&ok(
        &a,
        &[
            "send",
            &room,
            "--location",
            "-33.92487,18.42406",
            "--accuracy",
            "15",
            "water here",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(sent["event_id"].as_str().unwrap().len(), 64);
    ok(&a, &["send", &room, "--location", "52.52,13.405"]);

    // Malformed or out-of-range coordinates: exit 2, a clear message, nothing sent.
    for bad in [
        vec!["--location", "91,0"],
        vec!["--location", "12.5"],
        vec!["--location", "north,east"],
        vec!["--location", "0,0", "--accuracy", "2000000"],
        vec!["--accuracy", "5", "no location"],
    ] {
        let mut args = vec!["send", room.as_str()];
        args.extend(bad.iter().copied());
        let o = mr(&a, &args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.is_empty() && !err.contains("panicked"),
            "{bad:?}: {err}"
        );
    }
    assert!(
        String::from_utf8_lossy(&mr(&a, &["send", &room, "--location", "91,0"]).stderr)
            .contains("latitude must be between -90 and 90")
    );

    // Ben reads both pins from a bundle.
    let bundle = tmp.path().join("x.bundle");
    ok(&a, &["export", bundle.to_str().unwrap(), "--room", &room]);
    ok(&b, &["import", bundle.to_str().unwrap()]);
    let lines = text_lines(&b, &room);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let pin = &lines[0]["location"];
    assert_eq!(pin["lat"], -33.92487);
    assert_eq!(pin["lon"], 18.42406);
    assert_eq!(pin["accuracy_m"], 15);
    assert_eq!(lines[0]["text"], "water here");
    assert_eq!(lines[1]["location"]["lat"], 52.52);
    assert!(
        lines[1]["location"].get("accuracy_m").is_none(),
        "unknown accuracy left out"
    );
    assert_eq!(lines[1]["text"], "");
    let human = ok(&b, &["messages", &room]);
    assert!(
        human.contains("📍 -33.92487, 18.42406 ±15 m  water here"),
        "{human}"
    );
    assert!(human.contains("📍 52.52000, 13.40500"), "{human}");
}
