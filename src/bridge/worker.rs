//! The bridge's loop (`protocol-spec/bridge.md`, "Behaviour"): a client of
//! the daemon's control API on one side and of the homeserver on the
//! other. Each pass mirrors every mesh room of the bridge device: its
//! Matrix room (created once, renamed as the mesh room is), its roster as
//! puppets, its readable messages posted by their senders' puppets at
//! their original times, then sends the Matrix messages waiting for the
//! mesh. Every step is recorded in the state before and after it, so a
//! crash at any point neither loses nor repeats a message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::state::RoomMap;
use super::{BridgeError, Shared};
use crate::app::{MessageLine, RoomInfo};
use crate::control::{OkData, Op, client};
use crate::room::content::{Location, Via};

/// How often the bridge looks for new mesh messages when nothing wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Lines read per room on a routine pass; a window with nothing posted
/// yet is read again in full.
pub const RECENT_LINES: usize = 256;
/// Every this many passes a room is read in full (messages that arrived
/// late, older than the window).
pub const FULL_PASS_EVERY: u64 = 120;
/// What a puppet's display name ends with.
pub const PUPPET_NAME_SUFFIX: &str = " (mesh)";
/// What a bridged urgent message's Matrix body starts with.
pub const URGENT_PREFIX: &str = "🚨 URGENT: ";

/// Runs one control operation on the daemon of the bridge's data
/// directory.
async fn control(shared: &Shared, op: Op) -> Result<(Vec<MessageLine>, OkData), BridgeError> {
    let dir = shared.dir.clone();
    tokio::task::spawn_blocking(move || client::run(&dir, op))
        .await
        .map_err(|e| BridgeError::State(e.to_string()))?
        .map_err(BridgeError::from)
}

/// Blocking state access off the runtime's threads.
async fn with_state<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&super::state::State) -> Result<T, BridgeError> + Send + 'static,
) -> Result<T, BridgeError> {
    let s = shared.clone();
    tokio::task::spawn_blocking(move || f(&s.state))
        .await
        .map_err(|e| BridgeError::State(e.to_string()))?
}

/// The loop; returns only when the task is aborted.
pub async fn run(shared: Arc<Shared>) {
    let mut pass = 0u64;
    let mut doubts_cleared = false;
    loop {
        if !doubts_cleared {
            match clear_doubts(&shared).await {
                Ok(()) => doubts_cleared = true,
                Err(e) => tracing::warn!(error = %e, "bridge: checking unconfirmed sends"),
            }
        }
        if doubts_cleared && let Err(e) = one_pass(&shared, pass).await {
            tracing::warn!(error = %e, "bridge: pass failed; trying again");
        }
        pass += 1;
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// After a crash: sends that were started but not confirmed are looked up
/// where they went (the Matrix room, or the mesh room) and recorded when
/// found, so they are not sent twice.
async fn clear_doubts(shared: &Arc<Shared>) -> Result<(), BridgeError> {
    for (event, room) in with_state(shared, |s| s.posting()).await? {
        let found = shared.matrix.find_posted(&room, &event).await?;
        tracing::info!(
            event,
            found = found.is_some(),
            "bridge: unconfirmed send to Matrix checked"
        );
        with_state(shared, move |s| match found {
            Some(m) => s.set_posted(&event, &m),
            None => s.clear_posting(&event),
        })
        .await?;
    }
    let sending: Vec<_> = with_state(shared, |s| s.inbound())
        .await?
        .into_iter()
        .filter(|(_, m)| m.sending)
        .collect();
    for (key, m) in sending {
        let (lines, _) = control(
            shared,
            Op::Messages {
                room: m.room.clone(),
                last: None,
                mark_read: false,
            },
        )
        .await?;
        let found = lines.iter().find_map(|l| match l {
            MessageLine::Text {
                event_id,
                via: Some(v),
                ..
            } if v.matrix_event == m.matrix_event => Some(event_id.clone()),
            _ => None,
        });
        tracing::info!(
            matrix_event = m.matrix_event,
            found = found.is_some(),
            "bridge: unconfirmed send to the mesh checked"
        );
        if let Some(id) = found {
            with_state(shared, move |s| s.set_sent(&key, &m, Some(&id))).await?;
        }
    }
    Ok(())
}

async fn one_pass(shared: &Arc<Shared>, pass: u64) -> Result<(), BridgeError> {
    let me = shared.device_id.clone();
    let OkData::Rooms { rooms } = control(shared, Op::Rooms).await?.1 else {
        return Err(BridgeError::State("rooms: unexpected reply".into()));
    };
    for room in rooms
        .iter()
        .filter(|r| r.members.iter().any(|m| m.device_id == me))
    {
        // One room's failure does not hold up the others.
        if let Err(e) = mirror_room(shared, room, pass).await {
            tracing::warn!(room = room.room_id, error = %e, "bridge: room not mirrored this pass");
        }
    }
    send_to_mesh(shared).await
}

async fn mirror_room(shared: &Arc<Shared>, room: &RoomInfo, pass: u64) -> Result<(), BridgeError> {
    let map = ensure_room(shared, room).await?;
    post_messages(shared, room, &map, pass.is_multiple_of(FULL_PASS_EVERY)).await?;
    mirror_roster(shared, room, &map).await
}

fn topic(room_hex: &str) -> String {
    format!(
        "Bridged from the meshrelay mesh room {room_hex}. Messages from the mesh are posted by \
         puppets; the homeserver can read this room."
    )
}

/// The Matrix room of a mesh room, made on first sight; renamed when the
/// mesh room was.
async fn ensure_room(shared: &Arc<Shared>, room: &RoomInfo) -> Result<RoomMap, BridgeError> {
    let hex = room.room_id.clone();
    let known = {
        let h = hex.clone();
        with_state(shared, move |s| s.room(&h)).await?
    };
    let name = if room.name.is_empty() {
        "mesh room".to_owned()
    } else {
        room.name.clone()
    };
    let map = match known {
        Some(m) if m.name == name => return Ok(m),
        Some(m) => {
            shared.matrix.set_name(&m.matrix_room_id, &name).await?;
            tracing::info!(room = hex, "bridge: room renamed");
            RoomMap { name, ..m }
        }
        None => {
            let alias = shared.cfg.alias(&hex);
            let id = shared
                .matrix
                .create_room(
                    &shared.cfg.alias_localpart(&hex),
                    &alias,
                    &name,
                    &topic(&hex),
                )
                .await?;
            tracing::info!(
                room = hex,
                matrix_room = id,
                alias,
                "bridge: Matrix room made"
            );
            RoomMap {
                matrix_room_id: id,
                alias,
                name,
            }
        }
    };
    let m = map.clone();
    with_state(shared, move |s| s.set_room(&hex, &m)).await?;
    Ok(map)
}

/// A mesh device's puppet: made, named and joined to the room as needed.
async fn ensure_puppet(
    shared: &Arc<Shared>,
    map: &RoomMap,
    device: &str,
    name: &str,
) -> Result<String, BridgeError> {
    let user = shared.cfg.puppet(device);
    let display = format!(
        "{}{PUPPET_NAME_SUFFIX}",
        if name.is_empty() { device } else { name }
    );
    let known = {
        let u = user.clone();
        with_state(shared, move |s| s.puppet(&u)).await?
    };
    if known.as_deref() != Some(display.as_str()) {
        if known.is_none() {
            let localpart = user
                .strip_prefix('@')
                .and_then(|u| u.split(':').next())
                .unwrap_or_default();
            shared.matrix.register(localpart).await?;
        }
        shared.matrix.set_display_name(&user, &display).await?;
        let (u, d) = (user.clone(), display.clone());
        with_state(shared, move |s| s.set_puppet(&u, &d)).await?;
    }
    let joined = {
        let (r, u) = (map.matrix_room_id.clone(), user.clone());
        with_state(shared, move |s| s.joined(&r, &u)).await?
    };
    if !joined {
        shared.matrix.invite(&map.matrix_room_id, &user).await?;
        shared.matrix.join(&map.matrix_room_id, &user).await?;
        let (r, u) = (map.matrix_room_id.clone(), user.clone());
        with_state(shared, move |s| s.set_joined(&r, &u, true)).await?;
    }
    Ok(user)
}

/// Posts the room's readable messages not on Matrix yet, in mesh order,
/// each by its sender's puppet with its original time.
async fn post_messages(
    shared: &Arc<Shared>,
    room: &RoomInfo,
    map: &RoomMap,
    full: bool,
) -> Result<(), BridgeError> {
    let read = |last: Option<usize>| {
        control(
            shared,
            Op::Messages {
                room: room.room_id.clone(),
                last,
                mark_read: false,
            },
        )
    };
    let mut lines = read(if full { None } else { Some(RECENT_LINES) }).await?.0;
    type Post = (String, String, u64, String, Option<Location>);
    let texts = |lines: &[MessageLine]| -> Vec<Post> {
        lines
            .iter()
            .filter_map(|l| match l {
                MessageLine::Text {
                    event_id,
                    sender,
                    ts,
                    text,
                    location,
                    urgent,
                    ..
                } if *sender != shared.device_id => Some((
                    event_id.clone(),
                    sender.clone(),
                    *ts,
                    // Urgent: said first, in words every Matrix client shows
                    // (`protocol-spec/bridge.md`, "Messages").
                    if *urgent {
                        format!("{URGENT_PREFIX}{text}")
                    } else {
                        text.clone()
                    },
                    *location,
                )),
                _ => None,
            })
            .collect()
    };
    let ids: Vec<String> = texts(&lines).into_iter().map(|t| t.0).collect();
    let posted: BTreeSet<String> = with_state(shared, move |s| {
        ids.into_iter()
            .filter_map(|id| match s.posted(&id) {
                Ok(true) => Some(Ok(id)),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    })
    .await?;
    if !full && posted.is_empty() && lines.len() >= RECENT_LINES {
        // The window holds nothing posted: older messages may be missing.
        lines = read(None).await?.0;
    }
    let names: BTreeMap<&str, &str> = room
        .members
        .iter()
        .map(|m| (m.device_id.as_str(), m.name.as_str()))
        .collect();
    for (event_id, sender, ts, text, location) in texts(&lines) {
        if posted.contains(&event_id) {
            continue;
        }
        let done = {
            let e = event_id.clone();
            with_state(shared, move |s| s.posted(&e)).await?
        };
        if done {
            continue;
        }
        let name = names.get(sender.as_str()).copied().unwrap_or_default();
        let puppet = ensure_puppet(shared, map, &sender, name).await?;
        let (e, r) = (event_id.clone(), map.matrix_room_id.clone());
        with_state(shared, move |s| s.start_posting(&e, &r)).await?;
        let m = match shared
            .matrix
            .post(
                &map.matrix_room_id,
                &puppet,
                &event_id,
                ts,
                &text,
                location.as_ref(),
            )
            .await
        {
            Ok(m) => m,
            // Refused for what it is: recorded without a Matrix event, so
            // one message cannot stop the bridge.
            Err(e) if super::matrix::is_permanent(&e) => {
                tracing::warn!(event = event_id, error = %e, "bridge: the homeserver refused a message; skipped");
                String::new()
            }
            Err(e) => return Err(e.into()),
        };
        let e = event_id.clone();
        with_state(shared, move |s| s.set_posted(&e, &m)).await?;
        tracing::debug!(event = event_id, "bridge: posted to Matrix");
    }
    Ok(())
}

/// Puppets join as members join the mesh room and leave as they leave or
/// are removed.
async fn mirror_roster(
    shared: &Arc<Shared>,
    room: &RoomInfo,
    map: &RoomMap,
) -> Result<(), BridgeError> {
    let mut current = BTreeSet::new();
    for m in room
        .members
        .iter()
        .filter(|m| m.device_id != shared.device_id)
    {
        current.insert(ensure_puppet(shared, map, &m.device_id, &m.name).await?);
    }
    let joined = {
        let r = map.matrix_room_id.clone();
        with_state(shared, move |s| s.joined_users(&r)).await?
    };
    for user in joined.into_iter().filter(|u| !current.contains(u)) {
        shared.matrix.leave(&map.matrix_room_id, &user).await?;
        let r = map.matrix_room_id.clone();
        tracing::info!(user, "bridge: puppet left (no longer a member)");
        with_state(shared, move |s| s.set_joined(&r, &user, false)).await?;
    }
    Ok(())
}

/// Sends the Matrix messages waiting for the mesh, oldest first, each
/// with its Matrix sender as attribution.
async fn send_to_mesh(shared: &Arc<Shared>) -> Result<(), BridgeError> {
    // A backlog from one person asks the homeserver for their name once.
    let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
    for (key, m) in with_state(shared, |s| s.inbound()).await? {
        let who = (m.room.clone(), m.user.clone());
        let name = match names.get(&who) {
            Some(n) => n.clone(),
            None => {
                let map = {
                    let r = m.room.clone();
                    with_state(shared, move |s| s.room(&r)).await?
                };
                let n = match &map {
                    Some(map) => {
                        shared
                            .matrix
                            .member_name(&map.matrix_room_id, &m.user)
                            .await
                    }
                    None => String::new(),
                };
                names.insert(who, n.clone());
                n
            }
        };
        let via = Via {
            matrix_user: m.user.clone(),
            name: crate::room::content::truncate_name(&name),
            matrix_event: m.matrix_event.clone(),
        };
        let text = crate::bridge::matrix::truncate_with_marker(
            &m.text,
            crate::app::MAX_TEXT_BYTES
                .saturating_sub(via.matrix_user.len() + via.name.len() + via.matrix_event.len()),
        );
        {
            let (k, mm) = (key.clone(), m.clone());
            with_state(shared, move |s| s.start_sending(&k, &mm)).await?;
        }
        let sent = control(
            shared,
            Op::Send {
                room: m.room.clone(),
                text,
                via: Some(via),
                location: None,
                urgent: false,
                file: None,
            },
        )
        .await;
        let id = match sent {
            Ok((_, OkData::Event { event_id })) => Some(event_id),
            Ok(_) => return Err(BridgeError::State("send: unexpected reply".into())),
            // The room is gone or the text is refused: dropped, logged.
            Err(BridgeError::Control(client::ControlError::Api(e)))
                if e.code == crate::control::ErrorCode::BadInput
                    || e.code == crate::control::ErrorCode::NotFound =>
            {
                tracing::warn!(matrix_event = m.matrix_event, error = %e, "bridge: Matrix message not sent to the mesh");
                None
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(
            matrix_event = m.matrix_event,
            ?id,
            "bridge: sent to the mesh"
        );
        with_state(shared, move |s| s.set_sent(&key, &m, id.as_deref())).await?;
    }
    Ok(())
}
