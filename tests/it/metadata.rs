//! What a stranger learns from a daemon's room announcements
//! (`protocol-spec/metadata.md`, `protocol-spec/wire.md`, "Room
//! announcements"): a raw LAN peer over real libp2p meets the same daemon
//! in two sessions (restarted, so new link keys and nonces) and records its
//! `Hello`, `Rooms` and `Members` frames. The rooms are named by tokens the
//! stranger cannot recognise and that share no 4 bytes across sessions;
//! a peer that knows the room IDs (a co-member or carrier) recognises every
//! one, and learns which are the daemon's own only if it asks for roles.

use std::time::Duration;

use meshrelay::event::RoomId;
use meshrelay::proto::LinkId;
use meshrelay::transport::lan::{self, LanConfig, LanEvent, LanHandle};
use meshrelay::wire::{
    FEATURE_ROLES, Fragmenter, Frame, MAX_FRAME_BYTES, MAX_MTU, Reassembler, RoomToken,
    device_token, room_token,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, timeout_at};

use super::daemon::{Daemon, create_room};

/// Frames one session's stranger received, with their bytes.
struct Seen {
    /// The daemon's Hello nonce.
    nonce: u64,
    frames: Vec<(Frame, Vec<u8>)>,
}

impl Seen {
    /// The announcement frames' bytes: `Hello`, `Rooms`, `Members`.
    fn announcements(&self) -> Vec<&[u8]> {
        self.frames
            .iter()
            .filter(|(f, _)| {
                matches!(
                    f,
                    Frame::Hello { .. } | Frame::Rooms { .. } | Frame::Members { .. }
                )
            })
            .map(|(_, b)| b.as_slice())
            .collect()
    }

    /// The variable bytes of the announcements: the nonce and every token
    /// (the rest is the frames' fixed headers and the Hello's fixed fields).
    fn variable(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.nonce.to_be_bytes().to_vec()];
        for (f, _) in &self.frames {
            let lists: Vec<Vec<RoomToken>> = match f {
                Frame::Rooms {
                    held,
                    members,
                    spraying,
                    device,
                } => vec![
                    held.clone(),
                    members.clone(),
                    spraying.clone(),
                    device.iter().copied().collect(),
                ],
                Frame::Members { tokens } => vec![tokens.clone()],
                _ => continue,
            };
            for l in lists {
                out.push(l.iter().flat_map(|t| t.0).collect());
            }
        }
        out
    }

    /// The daemon's `Rooms`: its three lists and its device token.
    #[allow(clippy::type_complexity)]
    fn rooms(
        &self,
    ) -> (
        &Vec<RoomToken>,
        &Vec<RoomToken>,
        &Vec<RoomToken>,
        Option<RoomToken>,
    ) {
        self.frames
            .iter()
            .find_map(|(f, _)| match f {
                Frame::Rooms {
                    held,
                    members,
                    spraying,
                    device,
                } => Some((held, members, spraying, *device)),
                _ => None,
            })
            .expect("the daemon's Rooms")
    }
}

/// A raw LAN peer: connects to `addr`, sends a Hello with `nonce` and
/// `features` and an empty `Rooms`, and records what the daemon sends until
/// `until` holds (at most 30 s).
struct Stranger {
    handle: LanHandle,
    rx: Receiver<LanEvent>,
    link: LinkId,
    reassembler: Reassembler,
    seen: Seen,
}

impl Stranger {
    async fn meet(addr: &str, nonce: u64, features: u64) -> Stranger {
        let (handle, mut rx, _) = lan::spawn(LanConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            peers: vec![addr.parse().unwrap()],
            mdns: false,
        })
        .expect("stranger adapter");
        let deadline = Instant::now() + Duration::from_secs(30);
        let link = timeout_at(deadline, async {
            loop {
                if let Some(LanEvent::Up { link, .. }) = rx.recv().await {
                    return link;
                }
            }
        })
        .await
        .expect("link up within 30 s");
        let mut fragmenter = Fragmenter::new();
        for frame in [
            Frame::Hello {
                max_frame_bytes: MAX_FRAME_BYTES as u64,
                features,
                nonce,
            },
            Frame::Rooms {
                held: vec![],
                members: vec![],
                spraying: vec![],
                device: None,
            },
        ] {
            for d in fragmenter.fragment(&frame.encode(), MAX_MTU).unwrap() {
                handle.send(link, d);
            }
        }
        Stranger {
            handle,
            rx,
            link,
            reassembler: Reassembler::new(),
            seen: Seen {
                nonce: 0,
                frames: Vec::new(),
            },
        }
    }

    /// Records frames until `until` holds for what was seen.
    async fn record(&mut self, what: &str, until: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let start = std::time::Instant::now();
        while !until(&self.seen) {
            let ev = timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{what} within 30 s"));
            let Some(LanEvent::Received { link, bytes, .. }) = ev else {
                continue;
            };
            assert_eq!(link, self.link);
            let ms = start.elapsed().as_millis() as u64;
            if let Ok(Some(frame)) = self.reassembler.receive(ms, &bytes) {
                let f = Frame::decode(&frame).expect("the daemon's frames decode");
                if let Frame::Hello { nonce, .. } = f {
                    self.seen.nonce = nonce;
                }
                self.seen.frames.push((f, frame));
            }
        }
    }

    /// Ends the link (drops the adapter); returns what was seen.
    fn close(self) -> Seen {
        drop(self.handle);
        self.seen
    }
}

fn has_rooms(s: &Seen) -> bool {
    s.frames
        .iter()
        .any(|(f, _)| matches!(f, Frame::Rooms { .. }))
}

/// Whether `a` and `b` share a byte string of `n` bytes.
fn share(a: &[u8], b: &[u8], n: usize) -> bool {
    a.windows(n).any(|w| b.windows(n).any(|v| v == w))
}

#[test]
fn announcements_give_a_stranger_nothing_to_link_two_sessions_by() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let mut a = Daemon::start(&dir, "Ana", &[]);
    let room1: RoomId = create_room(&dir, "ops").parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Session 1: the stranger initiates (nonce 0) and asks for no roles.
    let addr = a.tcp_addr();
    let first = rt.block_on(async {
        let mut s = Stranger::meet(&addr, 0, 0).await;
        s.record("the daemon's Hello and Rooms", has_rooms).await;
        s.close()
    });
    let (held, members, spraying, device) = first.rooms();
    // A co-member or carrier knows the room ID: it recognises the token.
    assert_eq!(held, &vec![room_token(&room1, 0, first.nonce)]);
    // Without a copy budget the stranger is not told which rooms are own,
    // nor given a device token.
    assert!(members.is_empty() && spraying.is_empty(), "no roles asked");
    assert_eq!(device, None);
    // The stranger lacked the room: the responder offered it by ID (what
    // store-and-forward hands a peer anyway: `metadata.md`).
    assert!(
        first
            .frames
            .iter()
            .any(|(f, _)| *f == Frame::Offer { rooms: vec![room1] }),
        "the responder offers what the initiator lacks"
    );

    // Session 2: restarted daemon; the stranger answers (largest nonce)
    // and asks for roles, as a peer under a copy budget does.
    a.kill();
    a.restart();
    let addr = a.tcp_addr();
    let mut room2 = None;
    let second = rt.block_on(async {
        let mut s = Stranger::meet(&addr, u64::MAX, FEATURE_ROLES).await;
        s.record("the daemon's Hello and Rooms", has_rooms).await;
        // A new own room while linked: a `Members` update follows.
        let d = dir.clone();
        room2 = Some(
            tokio::task::spawn_blocking(move || create_room(&d, "logistics"))
                .await
                .unwrap(),
        );
        s.record("a Members update", |s| {
            s.frames
                .iter()
                .any(|(f, _)| matches!(f, Frame::Members { .. }))
        })
        .await;
        s.close()
    });
    let room2: RoomId = room2.unwrap().parse().unwrap();
    let token = |r: &RoomId| room_token(r, second.nonce, u64::MAX);
    let (held, members, _, device) = second.rooms();
    assert_eq!(held, &vec![token(&room1)]);
    // Roles asked: the daemon names itself by a device token that a peer
    // knowing its device ID (a holder of an invite for it) recognises.
    let id: serde_json::Value =
        serde_json::from_str(&super::daemon::ok(&dir, &["id", "--json"])).unwrap();
    let me: meshrelay::crypto::DeviceId = id["device_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(device, Some(device_token(&me, second.nonce, u64::MAX)));
    assert_eq!(
        members,
        &vec![token(&room1)],
        "roles asked: own rooms named"
    );
    let update = second
        .frames
        .iter()
        .find_map(|(f, _)| match f {
            Frame::Members { tokens } => Some(tokens.clone()),
            _ => None,
        })
        .unwrap();
    let mut want = vec![token(&room1), token(&room2)];
    want.sort();
    assert_eq!(update, want, "the update names both own rooms");

    // Nothing links the two sessions: no 4-byte string of the variable
    // fields (a token's length) repeats, and no room ID appears in any
    // announcement.
    assert_ne!(first.nonce, second.nonce);
    for x in first.variable() {
        for y in second.variable() {
            assert!(
                !share(&x, &y, 4),
                "sessions share 4 bytes: {x:02x?} / {y:02x?}"
            );
        }
    }
    for frame in first
        .announcements()
        .into_iter()
        .chain(second.announcements())
    {
        for room in [&room1, &room2] {
            assert!(
                !share(frame, &room.0, 8),
                "a room ID in an announcement: {frame:02x?}"
            );
        }
    }
    drop(rt);
    assert!(a.alive());
}

/// Issue 16: the roster is readable by members only. A room is created,
/// invited to and renamed through the CLI; a relay in none of its rooms
/// imports it and uploads it to a real Synapse, from which a member
/// downloads it. No member's name is anywhere in what the relay stores, in
/// the bundle, or in the envelopes on the homeserver; the member reads
/// every name from its invite.
#[test]
fn a_relay_and_the_homeserver_read_no_member_name() {
    use super::homeserver::{register, synapse};
    use super::homeserver_sync::{card, js, ok, server_events, sync_once};

    let tmp = tempfile::tempdir().unwrap();
    let url = synapse().url.clone();
    let names = ["Ana Fieldlead", "Bo Rescuer", "Cy Mapmaker"];
    let dirs: Vec<_> = ["ana", "bo", "cy", "relay"]
        .iter()
        .map(|d| tmp.path().join(d))
        .collect();
    let (ana, bo, cy, relay) = (&dirs[0], &dirs[1], &dirs[2], &dirs[3]);
    for (dir, name) in [
        (ana, names[0]),
        (bo, names[1]),
        (cy, names[2]),
        (relay, "relay"),
    ] {
        ok(dir, &["init", "--name", name]);
    }
    let (r_user, b_user) = (register("relay", false), register("gwbo", false));
    ok(relay, &["homeserver", "set-token", &url, &r_user.token]);
    ok(bo, &["homeserver", "set-token", &url, &b_user.token]);
    let transport = ok(
        relay,
        &[
            "homeserver",
            "transport",
            "--create",
            "--invite",
            &b_user.user_id,
        ],
    )
    .trim()
    .to_owned();
    ok(bo, &["homeserver", "transport", &transport]);

    let room = js(ana, &["room", "create", "north camp", "--json"])["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(ana, &["room", "invite", &room, &card(bo)]);
    ok(ana, &["room", "invite", &room, &card(cy)]);
    ok(ana, &["room", "rename", &room, "south camp"]);
    ok(ana, &["send", &room, "all here"]);
    let file = tmp.path().join("ana.bundle");
    ok(ana, &["export", file.to_str().unwrap()]);
    ok(relay, &["import", file.to_str().unwrap()]);
    assert_eq!(js(relay, &["rooms", "--json"]), serde_json::json!([]));
    let up = sync_once(relay);
    assert!(up["uploaded"].as_u64().unwrap() >= 7, "{up}");
    sync_once(bo);

    let contains = |hay: &[u8], name: &str| hay.windows(name.len()).any(|w| w == name.as_bytes());
    let bundle = std::fs::read(&file).unwrap();
    let (on_server, bundles) = server_events(&url, &b_user.token, &transport);
    assert!(
        on_server.len() >= 7,
        "{} envelopes in {bundles} bundles on the homeserver ({transport}); uploaded {up}",
        on_server.len()
    );
    let mut relay_files = Vec::new();
    let mut stack = vec![relay.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                relay_files.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    for name in names {
        assert!(!contains(&bundle, name), "{name} in the bundle");
        for ev in &on_server {
            assert!(!contains(ev.bytes(), name), "{name} on the homeserver");
        }
        for (path, bytes) in &relay_files {
            assert!(!contains(bytes, name), "{name} in {}", path.display());
        }
    }

    // The member reads the whole roster, and the room's name.
    let rooms = js(bo, &["rooms", "--json"]);
    assert_eq!(rooms[0]["name"], "south camp", "{rooms}");
    let mut seen: Vec<&str> = rooms[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, names, "{rooms}");
}
