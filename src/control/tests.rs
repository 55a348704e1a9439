//! The JSON shapes of the control API (`protocol-spec/daemon.md`, "Control
//! API"): a serde round trip of every request and reply, the spec's literal
//! lines, and the typed refusals of bad lines.

use super::*;
use crate::app::{GapInfo, MemberInfo, RejectedInfo, UnauthorizedInfo};

const ROOM: &str = "000102030405060708090a0b0c0d0e0f";

fn every_op() -> Vec<Op> {
    let room = || ROOM.to_owned();
    let device = || "mr1device".to_owned();
    vec![
        Op::RoomCreate { name: "ops".into() },
        Op::RoomInvite {
            room: room(),
            contact: "MRC1:CARD".into(),
        },
        Op::RoomRemove {
            room: room(),
            device: device(),
        },
        Op::RoomPromote {
            room: room(),
            device: device(),
        },
        Op::RoomDemote {
            room: room(),
            device: device(),
        },
        Op::RoomLeave { room: room() },
        Op::RoomRename {
            room: room(),
            name: "ops 2".into(),
        },
        Op::RoomRepair { room: room() },
        Op::Rooms,
        Op::Send {
            room: room(),
            text: "hi".into(),
            via: None,
            location: None,
            urgent: false,
            file: None,
        },
        Op::Send {
            room: room(),
            text: "the bridge".into(),
            via: None,
            location: None,
            urgent: true,
            file: Some(FileData {
                name: "bridge.jpg".into(),
                media_type: "image/jpeg".into(),
                data: "AAEC".into(),
            }),
        },
        Op::Save {
            event: "ab".into(),
            path: Some("/tmp/bridge.jpg".into()),
        },
        Op::Messages {
            room: room(),
            last: None,
            mark_read: true,
        },
        Op::Messages {
            room: room(),
            last: Some(50),
            mark_read: false,
        },
        Op::Follow {
            room: room(),
            last: None,
        },
        Op::Export { room: None },
        Op::Export { room: Some(room()) },
        Op::Import {
            bundle: "AAEC".into(),
        },
        Op::Status,
        Op::Peers,
        Op::PrekeyRotate,
        Op::Shutdown,
    ]
}

fn text_line() -> MessageLine {
    MessageLine::Text {
        event_id: "e1".into(),
        sender: "mr1a".into(),
        ts: 7,
        text: "hi".into(),
        delivered_to: vec![],
        read_by: vec![],
        next_hop: false,
        via: None,
        location: None,
        urgent: false,
        attachment: None,
    }
}

fn every_reply() -> Vec<Reply> {
    vec![
        Reply::ok(OkData::Event {
            event_id: "e1".into(),
        }),
        Reply::ok(OkData::Sent {
            event_id: "e1".into(),
            attachment: SentFile {
                size: 500_000,
                chunks: 41,
            },
        }),
        Reply::ok(OkData::File {
            file: FileData {
                name: "bridge.jpg".into(),
                media_type: "image/jpeg".into(),
                data: "AAEC".into(),
            },
        }),
        Reply::ok(OkData::Room {
            room_id: ROOM.into(),
        }),
        Reply::ok(OkData::Rooms {
            rooms: vec![RoomInfo {
                room_id: ROOM.into(),
                name: "ops".into(),
                members: vec![MemberInfo {
                    device_id: "mr1a".into(),
                    name: "Ana".into(),
                    admin: true,
                    bridge: false,
                }],
            }],
        }),
        Reply::ok(OkData::Rooms { rooms: vec![] }),
        Reply::ok(OkData::Lines { lines: 3 }),
        Reply::ok(OkData::Bundle {
            bundle: "AAEC".into(),
        }),
        Reply::ok(OkData::Import {
            import: Box::new(ImportSummary {
                imported: 1,
                duplicates: 2,
                rejected: 1,
                rejections: vec![RejectedInfo {
                    index: 0,
                    event_id: None,
                    reason: "bad".into(),
                }],
                unauthorized: vec![UnauthorizedInfo {
                    event_id: "e2".into(),
                    reason: "not an admin".into(),
                }],
                ..ImportSummary::default()
            }),
        }),
        Reply::ok(OkData::Prekey {
            prekey: PrekeyRotation {
                prekey_id: 2,
                rooms: 1,
                pruned: 0,
            },
        }),
        Reply::ok(OkData::Peers {
            peers: vec![PeerInfo {
                link: 1,
                kind: "lan".into(),
                address: "/ip4/127.0.0.1/tcp/1".into(),
                since: 5,
                bytes_in: 6,
                bytes_out: 7,
            }],
        }),
        Reply::ok(OkData::Peers { peers: vec![] }),
        Reply::ok(OkData::Status {
            status: serde_json::json!({"device_id": "mr1a", "rooms": 1}),
        }),
        Reply::ok(OkData::Done {}),
        Reply::line(text_line()),
        Reply::line(MessageLine::Undecryptable {
            event_id: "e3".into(),
            sender: "mr1b".into(),
            ts: 8,
            undecryptable: true,
            reason: "no key".into(),
        }),
        Reply::line(MessageLine::Gap {
            gap: GapInfo {
                sender: "mr1b".into(),
                from_seq: 2,
                to_seq: 4,
            },
        }),
        Reply::line(MessageLine::Fork {
            fork: crate::app::ForkInfo {
                sender: "mr1b".into(),
                seq: 3,
                event_ids: vec!["e4".into(), "e5".into()],
            },
        }),
        Reply::ok(OkData::Repair {
            repair: crate::app::RepairReport {
                room_id: ROOM.into(),
                events: 9,
                kept: 8,
                dropped_count: 1,
                dropped: vec![crate::app::DroppedInfo {
                    event_id: "e6".into(),
                    reason: "its sender has no standing in the room".into(),
                }],
                key_state: crate::app::KeyStateInfo {
                    before_bytes: 900,
                    after_bytes: 300,
                },
            },
        }),
    ]
    .into_iter()
    .chain(
        ErrorCode::ALL
            .into_iter()
            .map(|c| Reply::error(c, "what went wrong")),
    )
    .collect()
}

#[test]
fn every_request_round_trips_and_decodes() {
    let ops = every_op();
    let mut names: Vec<String> = Vec::new();
    for op in ops {
        let req = Request::new(op);
        let line = serde_json::to_string(&req).unwrap();
        assert!(line.starts_with(r#"{"v":1,"op":""#), "{line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        assert_eq!(decode_request(line.as_bytes()).unwrap(), req, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        names.push(v["op"].as_str().unwrap().to_owned());
    }
    names.dedup();
    let mut all: Vec<&str> = Op::NAMES.to_vec();
    all.sort_unstable();
    names.sort_unstable();
    assert_eq!(names, all, "Op::NAMES lists every operation");
}

#[test]
fn every_reply_round_trips() {
    for r in every_reply() {
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.starts_with(r#"{"v":1,"#), "{line}");
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), r, "{line}");
    }
}

#[test]
fn requests_have_the_documented_json() {
    let cases = [
        (
            Op::Send {
                room: "ab".into(),
                text: "hi".into(),
                via: None,
                location: None,
                urgent: false,
                file: None,
            },
            r#"{"v":1,"op":"send","room":"ab","text":"hi"}"#,
        ),
        (
            Op::Send {
                room: "ab".into(),
                text: "help".into(),
                via: None,
                location: None,
                urgent: true,
                file: None,
            },
            r#"{"v":1,"op":"send","room":"ab","text":"help","urgent":true}"#,
        ),
        (
            Op::RoomCreate { name: "x".into() },
            r#"{"v":1,"op":"room_create","name":"x"}"#,
        ),
        (
            Op::RoomInvite {
                room: "ab".into(),
                contact: "MRC1:X".into(),
            },
            r#"{"v":1,"op":"room_invite","room":"ab","contact":"MRC1:X"}"#,
        ),
        (
            Op::RoomRemove {
                room: "ab".into(),
                device: "mr1x".into(),
            },
            r#"{"v":1,"op":"room_remove","room":"ab","device":"mr1x"}"#,
        ),
        (Op::Rooms, r#"{"v":1,"op":"rooms"}"#),
        (Op::Export { room: None }, r#"{"v":1,"op":"export"}"#),
        (
            Op::Import {
                bundle: "AAEC".into(),
            },
            r#"{"v":1,"op":"import","bundle":"AAEC"}"#,
        ),
        (Op::PrekeyRotate, r#"{"v":1,"op":"prekey_rotate"}"#),
        (Op::Shutdown, r#"{"v":1,"op":"shutdown"}"#),
    ];
    for (op, json) in cases {
        assert_eq!(
            serde_json::to_string(&Request::new(op.clone())).unwrap(),
            json
        );
        assert_eq!(decode_request(json.as_bytes()).unwrap().op, op);
    }
    // Field order and unknown fields do not matter.
    let r = decode_request(br#"{"text":"hi","op":"send","extra":0,"room":"ab","v":1}"#).unwrap();
    assert_eq!(
        r.op,
        Op::Send {
            room: "ab".into(),
            text: "hi".into(),
            via: None,
            location: None,
            urgent: false,
            file: None,
        }
    );
}

#[test]
fn replies_have_the_documented_json() {
    let cases = [
        (
            Reply::ok(OkData::Event {
                event_id: "e1".into(),
            }),
            r#"{"v":1,"ok":{"event_id":"e1"}}"#,
        ),
        (
            Reply::ok(OkData::Rooms { rooms: vec![] }),
            r#"{"v":1,"ok":{"rooms":[]}}"#,
        ),
        (
            Reply::ok(OkData::Lines { lines: 2 }),
            r#"{"v":1,"ok":{"lines":2}}"#,
        ),
        (Reply::ok(OkData::Done {}), r#"{"v":1,"ok":{}}"#),
        (
            Reply::line(text_line()),
            r#"{"v":1,"line":{"event_id":"e1","sender":"mr1a","ts":7,"text":"hi","delivered_to":[],"read_by":[]}}"#,
        ),
        (
            Reply::error(ErrorCode::UnknownOp, "unknown operation \"x\""),
            r#"{"v":1,"error":{"code":"unknown_op","message":"unknown operation \"x\""}}"#,
        ),
        (
            Reply::error(ErrorCode::NotFound, "unknown room ab"),
            r#"{"v":1,"error":{"code":"not_found","message":"unknown room ab"}}"#,
        ),
    ];
    for (reply, json) in cases {
        assert_eq!(serde_json::to_string(&reply).unwrap(), json);
        assert_eq!(serde_json::from_str::<Reply>(json).unwrap(), reply);
    }
}

#[test]
fn bad_lines_get_typed_errors() {
    let code = |line: &[u8]| decode_request(line).unwrap_err().code;
    assert_eq!(code(b""), ErrorCode::BadRequest);
    assert_eq!(code(b"not json"), ErrorCode::BadRequest);
    assert_eq!(code(b"[1,2]"), ErrorCode::BadRequest);
    assert_eq!(code(br#"{"op":"rooms"}"#), ErrorCode::BadRequest);
    assert_eq!(
        code(br#"{"v":2,"op":"rooms"}"#),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        code(br#"{"v":"1","op":"rooms"}"#),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(code(br#"{"v":1}"#), ErrorCode::BadRequest);
    assert_eq!(code(br#"{"v":1,"op":"rm -rf"}"#), ErrorCode::UnknownOp);
    assert_eq!(code(br#"{"v":1,"op":7}"#), ErrorCode::UnknownOp);
    // The old argv form is an unknown operation now.
    assert_eq!(
        code(br#"{"v":1,"op":"cli","argv":["rooms"]}"#),
        ErrorCode::UnknownOp
    );
    assert_eq!(
        code(br#"{"v":1,"op":"send","room":"ab"}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(br#"{"v":1,"op":"send","room":1,"text":"x"}"#),
        ErrorCode::BadRequest
    );
    let long = vec![b' '; MAX_REQUEST_BYTES + 1];
    assert_eq!(code(&long), ErrorCode::TooLarge);
    // An error message never echoes a long field back.
    let e = decode_request(format!(r#"{{"v":1,"op":"{}"}}"#, "x".repeat(10_000)).as_bytes())
        .unwrap_err();
    assert!(e.message.len() < 100, "{}", e.message);
}

#[test]
fn app_errors_map_to_codes() {
    let room = crate::event::RoomId([1; 16]);
    assert_eq!(
        error_code(&AppError::UnknownRoom(room)),
        ErrorCode::NotFound
    );
    assert_eq!(
        error_code(&AppError::BadInput("x".into())),
        ErrorCode::BadInput
    );
    assert_eq!(
        error_code(&AppError::Corrupt("x".into())),
        ErrorCode::Runtime
    );
    let e = ApiError::from(&AppError::BadInput("text too long".into()));
    assert_eq!(e.message, "text too long");
    assert!(ErrorCode::NotFound.is_client_error());
    assert!(!ErrorCode::Runtime.is_client_error());
    assert!(!ErrorCode::Busy.is_client_error());
}

#[test]
fn only_writing_operations_wait_for_the_commit() {
    let writing: Vec<bool> = every_op().iter().map(Op::writes).collect();
    assert_eq!(writing.iter().filter(|w| **w).count(), 13);
    assert!(
        Op::Send {
            room: "ab".into(),
            text: "x".into(),
            via: None,
            location: None,
            urgent: false,
            file: None,
        }
        .writes()
    );
    assert!(!Op::Rooms.writes());
    assert!(
        !Op::Follow {
            room: "ab".into(),
            last: None,
        }
        .writes()
    );
}
