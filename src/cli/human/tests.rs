//! The renderers over fixed inputs: a fixed clock, a fixed time zone
//! (UTC+1), fixed names. The binary-level golden files are in
//! `tests/golden/` (`tests/it/human.rs`).

use jiff::tz::{self, TimeZone};
use rand::SeedableRng;

use super::*;
use crate::app::{
    BEFORE_JOIN_REASON, FailedRoom, GapInfo, ImportSummary, MemberInfo, MessageLine,
    NOT_IN_ROOM_REASON,
};
use crate::crypto::Identity;

/// 2026-12-02T21:40:00Z.
const T0: u64 = 1_796_247_600_000;
const MIN: u64 = 60_000;
/// 2026-12-03T09:00:00Z.
const NOW: u64 = T0 + 680 * MIN;

fn device(seed: u64) -> DeviceId {
    Identity::generate(&mut rand::rngs::StdRng::seed_from_u64(seed)).device_id()
}

fn member(d: &DeviceId, name: &str) -> MemberInfo {
    MemberInfo {
        device_id: d.to_string(),
        name: name.into(),
        admin: false,
        bridge: false,
    }
}

fn text(sender: &DeviceId, ts: u64, text: &str) -> MessageLine {
    MessageLine::Text {
        event_id: "e".into(),
        sender: sender.to_string(),
        ts,
        text: text.into(),
        delivered_to: vec![],
        read_by: vec![],
        next_hop: false,
        via: None,
        location: None,
        urgent: false,
        attachment: None,
    }
}

fn unreadable(sender: &DeviceId, ts: u64, reason: &str) -> MessageLine {
    MessageLine::Undecryptable {
        event_id: "e".into(),
        sender: sender.to_string(),
        ts,
        undecryptable: true,
        reason: reason.into(),
    }
}

fn berlin() -> MessageView {
    MessageView::new(TimeZone::fixed(tz::offset(1)), false, NOW, Style::PLAIN)
}

struct People {
    ana: DeviceId,
    ben: DeviceId,
    ben2: DeviceId,
    dan: DeviceId,
}

fn people() -> (People, Names) {
    let p = People {
        ana: device(1),
        ben: device(2),
        ben2: device(3),
        dan: device(4),
    };
    let roster = [member(&p.ana, "Ana"), member(&p.ben, "Ben")];
    let ben2 = p.ben2.to_string();
    let names = Names::new(&roster, None, [(ben2.as_str(), " ben ")]);
    (p, names)
}

#[test]
fn messages_show_local_times_dates_names_and_short_notes() {
    let (p, mut names) = people();
    let lines = [
        unreadable(&p.ana, T0, BEFORE_JOIN_REASON),
        text(&p.ana, T0 + MIN, "Water at the north gate"),
        unreadable(&p.ben, T0 + 2 * MIN, BEFORE_JOIN_REASON),
        text(&p.ben, T0 + 5 * MIN, "On my way"),
        text(&p.ben2, T0 + 10 * MIN, "Me too"),
        MessageLine::Gap {
            gap: GapInfo {
                sender: p.ana.to_string(),
                from_seq: 4,
                to_seq: 6,
            },
        },
        text(&p.dan, T0 + 30 * MIN, "Bringing the radio"),
        unreadable(&p.ana, T0 + 70 * MIN, "no key for this message"),
        MessageLine::Unauthorized {
            event_id: "e".into(),
            sender: p.dan.to_string(),
            ts: T0 + 75 * MIN,
            unauthorized: true,
            reason: "whatever the peer says".into(),
        },
        text(&p.ana, T0 + 105 * MIN, "Welcome Cy"),
    ];
    let fp = |d: &DeviceId| short_fingerprint(d);
    let want = format!(
        "      2 earlier messages from before you joined
-- Wednesday 2 December --
22:41 Ana: Water at the north gate
22:45 Ben ({}): On my way
22:50 ben ({}): Me too
      3 messages from Ana have not arrived
23:10 unknown device ({}): Bringing the radio
23:50 Ana: (cannot read this message: no key for this message)
23:55 unknown device ({}): (hidden: the sender was not a member at this point)
-- Thursday 3 December --
00:25 Ana: Welcome Cy
",
        fp(&p.ben),
        fp(&p.ben2),
        fp(&p.dan),
        fp(&p.dan),
    );
    let got = berlin().render(&mut names, &lines);
    assert_eq!(got, want, "\n{got}");
    assert!(fp(&p.ben).ends_with(" …") && fp(&p.ben).len() == 11 + " …".len());
}

#[test]
fn utc_and_other_years_show_in_date_lines() {
    let (p, mut names) = people();
    let mut v = MessageView::new(TimeZone::UTC, true, NOW, Style::PLAIN);
    let year_ago = T0 - 365 * 24 * 60 * MIN;
    let got = v.render(
        &mut names,
        &[
            text(&p.ana, year_ago, "old"),
            text(&p.ana, T0 + 105 * MIN, "new"),
        ],
    );
    assert_eq!(
        got,
        "-- Tuesday 2 December 2025 (UTC) --\n21:40 Ana: old\n\
         -- Wednesday 2 December (UTC) --\n23:25 Ana: new\n"
    );
}

#[test]
fn follow_batches_share_the_date_and_summaries_count_per_batch() {
    let (p, mut names) = people();
    let mut v = berlin();
    let first = v.render(&mut names, &[text(&p.ana, T0, "a")]);
    assert_eq!(first, "-- Wednesday 2 December --\n22:40 Ana: a\n");
    let second = v.render(
        &mut names,
        &[
            text(&p.ana, T0 + MIN, "b"),
            unreadable(&p.ben, T0, NOT_IN_ROOM_REASON),
            unreadable(&p.ana, T0, NOT_IN_ROOM_REASON),
        ],
    );
    assert_eq!(
        second,
        "22:41 Ana: b\n      2 messages this device carries but cannot read (it is not in the room)\n"
    );
    let one = v.render(&mut names, &[unreadable(&p.ana, T0, BEFORE_JOIN_REASON)]);
    assert_eq!(one, "      1 earlier message from before you joined\n");
    assert_eq!(v.empty(), "No messages yet.\n");
}

#[test]
fn times_out_of_range_and_malformed_senders_do_not_panic() {
    let mut names = Names::default();
    let lines = [
        MessageLine::Text {
            event_id: "e".into(),
            sender: "not-a-device\u{1b}[2J".into(),
            ts: u64::MAX,
            text: "x".into(),
            delivered_to: vec![],
            read_by: vec![],
            next_hop: false,
            via: None,
            location: None,
            urgent: false,
            attachment: None,
        },
        MessageLine::Gap {
            gap: GapInfo {
                sender: "x".into(),
                from_seq: 0,
                to_seq: u64::MAX,
            },
        },
    ];
    let got = berlin().render(&mut names, &lines);
    assert_eq!(
        got,
        "--:-- unknown device (not-a-device…): x\n      \
         18446744073709551615 messages from unknown device (x…) have not arrived\n"
    );
}

#[test]
fn hostile_names_and_texts_are_escaped() {
    let (p, _) = people();
    let roster = [member(&p.ana, "Ana\u{1b}]0;pwned\u{7}\rAdmin")];
    let mut names = Names::new(&roster, None, []);
    let got = berlin().render(&mut names, &[text(&p.ana, T0, "hi\u{202e}gpj.exe\r")]);
    assert!(
        got.contains("Ana\\u{1b}]0;pwned\\u{7}\\u{d}Admin: hi\\u{202e}gpj.exe\\u{d}"),
        "{got}"
    );
    assert!(
        !got.chars()
            .filter(|c| *c != '\n')
            .any(crate::safe_text::is_unsafe),
        "{got:?}"
    );
}

#[test]
fn colour_only_when_asked_and_plain_text_is_unchanged() {
    assert_eq!(Style::choose(true, false), Style { color: true });
    assert_eq!(Style::choose(true, true), Style::PLAIN);
    assert_eq!(Style::choose(false, false), Style::PLAIN);
    let (p, mut names) = people();
    let lines = [text(&p.ana, T0, "hello")];
    let coloured = MessageView::new(TimeZone::UTC, false, NOW, Style { color: true })
        .render(&mut names, &lines);
    assert!(coloured.contains("\u{1b}["), "{coloured:?}");
    let stripped = strip_sgr(&coloured);
    let plain =
        MessageView::new(TimeZone::UTC, false, NOW, Style::PLAIN).render(&mut names, &lines);
    assert_eq!(stripped, plain);
    assert!(!plain.contains('\u{1b}'));
}

fn strip_sgr(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn names_prefer_the_roster_and_mark_only_ambiguous_ones() {
    let (p, _) = people();
    let roster = [member(&p.ana, "Ana"), member(&p.ben, "")];
    let own = p.dan.to_string();
    let ben = p.ben.to_string();
    let mut names = Names::new(
        &roster,
        Some((own.as_str(), "Dan")),
        [
            (ben.as_str(), "Ben from the book"),
            (own.as_str(), "Not Dan"),
        ],
    );
    assert_eq!(names.label(&p.ana.to_string()), "Ana");
    // An empty roster name falls through to the contact book.
    assert_eq!(names.label(&ben), "Ben from the book");
    assert_eq!(names.label(&own), "Dan");
    assert!(!names.knows(&p.ben2.to_string()));
}

#[test]
fn sentences_name_the_room_and_the_person() {
    let d = device(2);
    let fp = short_fingerprint(&d);
    assert_eq!(
        sentences::invited(&sentences::person(Some("Ben"), &d), "north camp"),
        format!("Invited Ben (fingerprint {fp}) to north camp.")
    );
    assert_eq!(
        sentences::removed(
            &sentences::person(Some(" "), &d),
            &room_label("", &"ab".repeat(32))
        ),
        format!("Removed a device without a name (fingerprint {fp}) from room abababab….")
    );
    assert_eq!(sentences::sent("north camp"), "Sent to north camp.");
    assert_eq!(
        sentences::created("north\u{1b}camp", "0f"),
        "Created north\\u{1b}camp with room ID 0f."
    );
    let mut s = ImportSummary {
        imported: 7,
        ..ImportSummary::default()
    };
    assert_eq!(
        sentences::imported(&s),
        "Imported 7 events: 7 new, 0 duplicates, 0 refused."
    );
    s.imported = 0;
    s.duplicates = 1;
    s.rejected = 2;
    s.failed_rooms.push(FailedRoom {
        room_id: "cd".repeat(32),
        reason: "store full".into(),
    });
    assert_eq!(
        sentences::imported(&s),
        "Imported 3 events: 0 new, 1 duplicate, 2 refused.\n\
         Room room cdcdcdcd… could not be imported: store full.\n\
         The reasons for refusals are in `meshrelay import --json`."
    );
    assert_eq!(
        sentences::exported(1, Some("north camp"), "stick.bundle"),
        "Exported 1 event of north camp to stick.bundle."
    );
    assert_eq!(sentences::exported(0, None, "x"), "Exported 0 events to x.");
}

#[test]
fn first_steps_explain_init_card_and_room() {
    let t = welcome::first_steps("/home/ana/.local/share/meshrelay\u{1b}");
    let init = t.find("meshrelay init").unwrap();
    let card = t.find("meshrelay id --qr").unwrap();
    let room = t.find("meshrelay room create").unwrap();
    assert!(init < card && card < room, "{t}");
    assert!(t.contains("wait for someone to invite you"), "{t}");
    assert!(t.contains("meshrelay\\u{1b}"), "{t}");
    let d = device(1);
    let hint = welcome::status_hint("Ana", &d);
    assert!(hint.starts_with(&format!(
        "This device is Ana (fingerprint {}).",
        short_fingerprint(&d)
    )));
}

#[test]
fn own_messages_show_receipt_ticks_and_read_counts() {
    use crate::cli::human::messages::ticks;
    assert_eq!(ticks(2, false, 0, 0), "");
    assert_eq!(ticks(2, true, 0, 0), "✓", "stored on the next hop");
    assert_eq!(ticks(2, false, 1, 0), "✓");
    assert_eq!(ticks(2, true, 2, 1), "✓✓ read by 1");
    assert_eq!(ticks(2, true, 2, 2), "✓✓ read by all");
    // A room of one: only the next hop.
    assert_eq!(ticks(0, false, 0, 0), "");
    assert_eq!(ticks(0, true, 0, 0), "✓");
}
