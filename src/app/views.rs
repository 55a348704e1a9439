//! What a device shows of its rooms, and what it exports
//! (`protocol-spec/app.md` §4 "Messages", §3 bundles): `rooms`, a room's
//! members and name, `messages` with its gap and fork lines, and `export`.
//! Views rebuild the room's session and keep the DAG only (never the
//! events' bodies); what a line shows is read from the store one event at
//! a time.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::proto::urgent::UrgentWindow;
use crate::store::{DeliveryState, Destination};

impl<S: Store> Device<S> {
    /// The current members of a room this device holds events of (the
    /// node's standing for it).
    pub fn room_members(&self, room: &RoomId) -> Result<BTreeSet<DeviceId>, AppError> {
        let mut s = self.known_session(room)?;
        Ok(s.members().members.keys().copied().collect())
    }

    /// Rooms this device is or was a member of, ascending by room ID.
    ///
    /// With a session cache (the device core's), a cached room costs
    /// neither a replay nor a scan of its history (its name is remembered,
    /// [`SessionCache`]); a room rebuilt here joins the cache while it has
    /// space, never evicting a session.
    pub fn rooms(&mut self) -> Result<Vec<RoomInfo>, AppError> {
        let mut out = Vec::new();
        for r in self.store.rooms()? {
            if self.stored_keys(&r.room)?.is_none() {
                continue;
            }
            let room = r.room;
            let (mut s, cached) = match self.cache.as_mut().and_then(|c| c.take(&room)) {
                Some(s) => (s, true),
                None => (self.session(&room)?, false),
            };
            let keep = cached || self.cache.as_ref().is_some_and(SessionCache::has_space);
            let known = self.cache.as_ref().and_then(|c| c.name(&room));
            let name = match known {
                Some(n) if keep => n.to_owned(),
                _ => self.room_name(&mut s)?,
            };
            out.push(RoomInfo {
                room_id: room.to_string(),
                name: name.clone(),
                members: member_infos(&s.members()),
            });
            if keep && let Some(c) = self.cache.as_mut() {
                c.set_name(room, name);
                c.put(room, s);
            }
        }
        Ok(out)
    }

    pub(super) fn room_name(&self, s: &mut RoomSession) -> Result<String, AppError> {
        let mut name = String::new();
        let dag = s.dag();
        for id in dag.display_order() {
            if dag.held(&id).is_none_or(|n| n.kind != EventKind::Message) {
                continue;
            }
            if let Some(pt) = self.store.get_secret(&pt_key(&id))?
                && let Ok(Content::RoomName(n)) = Content::from_bytes(&pt)
            {
                name = n;
            }
        }
        Ok(name)
    }

    /// The room's messages in display order (the DAG's deterministic
    /// topological order), with undecryptable messages and sequence gaps.
    pub fn messages(&self, room: &RoomId) -> Result<Vec<MessageLine>, AppError> {
        self.messages_last(room, None)
    }

    /// [`Device::messages`], or with `last` only the lines of the room's
    /// last `last` messages (with the gap and fork lines among them, and
    /// those after every message): only their texts are read, so the
    /// memory of a view of the end of a large room is bounded by `last`
    /// (`protocol-spec/app.md` §4).
    pub fn messages_last(
        &self,
        room: &RoomId,
        last: Option<usize>,
    ) -> Result<Vec<MessageLine>, AppError> {
        Ok(self.messages_view(room, last)?.0)
    }

    /// Where event `id` stands in `room`'s history here (a check).
    pub fn place_of(&self, room: &RoomId, id: &EventId) -> Result<EventPlace, AppError> {
        let mut s = self.known_session(room)?;
        let dag = s.dag();
        if dag.contains(id) {
            return Ok(EventPlace::Admitted);
        }
        if let Some(prev) = dag.pending_prev(id) {
            let missing = prev.iter().filter(|p| !dag.contains(p)).copied().collect();
            return Ok(EventPlace::Pending(missing));
        }
        let listed = s
            .dropped_events()
            .iter()
            .find(|d| d.event_id == *id)
            .cloned();
        if let Some(d) = listed {
            let ev = self.stored_event(id)?;
            let standing = ev.is_some_and(|e| s.dag().standing().contains(&e.sender()));
            return Ok(EventPlace::Absent(format!(
                "left out: {} (the sender has standing after the rebuild: {standing}; \
                 {} dropped)",
                d.reason,
                s.dropped()
            )));
        }
        let Some(ev) = self.stored_event(id)? else {
            return Ok(EventPlace::Absent("not stored".into()));
        };
        // Offered again to this throwaway session: what the room says now.
        Ok(EventPlace::Absent(
            match s.receive(&self.keys.prekeys, &ev) {
                Ok(_) if s.dag().contains(id) => "admitted when offered again".into(),
                Ok(_) => "pending when offered again".into(),
                Err(e) => format!("refused when offered again: {e}"),
            },
        ))
    }

    /// [`Device::messages_last`] with the read marks of what it shows: per
    /// other sender, the highest sequence number of a message line shown
    /// (what a read receipt says, `protocol-spec/rooms.md` §9).
    pub fn messages_view(
        &self,
        room: &RoomId,
        last: Option<usize>,
    ) -> Result<(Vec<MessageLine>, ReadMarks), AppError> {
        let mut s = self.known_session(room)?;
        let order = s.dag().display_order();
        let book = self.receipt_book(&mut s, &order, None)?;
        let mut marks = ReadMarks::new();
        // Gaps keyed by (sender, first seq after the gap): the DAG's and
        // the store's (which also counts events waiting for predecessors).
        // Only senders with standing (named by a valid create or invite):
        // an outsider's events waiting in quarantine are no one's missing
        // messages (`protocol-spec/rooms.md`, "Admission").
        let mut gaps: BTreeMap<(DeviceId, u64), GapInfo> = BTreeMap::new();
        let standing = s.dag().standing().clone();
        let senders: BTreeSet<DeviceId> = s
            .dag()
            .held_senders()
            .into_iter()
            .filter(|d| standing.contains(d))
            .collect();
        let mut all_gaps: Vec<(DeviceId, u64, u64)> = s
            .gaps()
            .into_iter()
            .filter(|g| standing.contains(&g.sender))
            .map(|g| (g.sender, g.from_seq, g.to_seq))
            .collect();
        for sender in &senders {
            for g in self.store.gaps(room, sender, MAX_GAP_LINES)? {
                all_gaps.push((*sender, g.from_seq, g.to_seq));
            }
        }
        for (sender, from_seq, to_seq) in all_gaps {
            gaps.entry((sender, to_seq.saturating_add(1)))
                .or_insert_with(|| GapInfo {
                    sender: sender.to_string(),
                    from_seq,
                    to_seq,
                });
        }
        let mut forks = self.fork_lines(room)?;
        // Where this device joined: its create or its invites.
        let me = self.device_id();
        let joins: Vec<EventId> = order
            .iter()
            .filter(|id| {
                s.dag().membership(id).is_some_and(|m| {
                    (m.creation().is_some() || m.invitee().is_some()) && m.named() == Some(me)
                })
            })
            .copied()
            .collect();
        // Events waiting for predecessors (withheld or not yet received)
        // are shown after the ordered history, by (time, ID): only those of
        // senders with standing (an outsider's are not the room's).
        let dag = s.dag();
        let mut waiting: Vec<(u64, EventId)> = dag
            .pending_ids()
            .filter_map(|id| {
                dag.held(id)
                    .filter(|h| standing.contains(&h.sender))
                    .map(|h| (h.ts, *id))
            })
            .collect();
        waiting.sort();
        let full_order: Vec<EventId> = order
            .iter()
            .copied()
            .chain(waiting.into_iter().map(|(_, id)| id))
            .collect();
        // With `last`: start at the last `last` messages; the gap and fork
        // lines of what comes before are not shown (nor read).
        let start = match last {
            None => 0,
            Some(n) => {
                let mut seen = 0;
                let mut start = full_order.len();
                for (i, id) in full_order.iter().enumerate().rev() {
                    if seen == n {
                        break;
                    }
                    if s.dag()
                        .held(id)
                        .is_some_and(|h| h.kind == EventKind::Message)
                    {
                        seen += 1;
                        start = i;
                    }
                }
                if seen < n { 0 } else { start }
            }
        };
        for id in &full_order[..start] {
            if let Some(ev) = s.dag().held(id) {
                gaps.remove(&(ev.sender, ev.seq));
                forks.remove(&(ev.sender, ev.seq));
            }
        }
        let mut out = Vec::new();
        let mut urgent_windows: BTreeMap<DeviceId, UrgentWindow> = BTreeMap::new();
        let mut chunk_seqs: Vec<(DeviceId, u64, u64)> = Vec::new();
        for &id in &full_order[start..] {
            let Some(ev) = s.dag().held(&id) else {
                continue;
            };
            if let Some(gap) = gaps.remove(&(ev.sender, ev.seq)) {
                out.push(MessageLine::Gap { gap });
            }
            if let Some(fork) = forks.remove(&(ev.sender, ev.seq)) {
                out.push(MessageLine::Fork { fork });
            }
            if ev.kind != EventKind::Message {
                continue;
            }
            let (event_id, sender, ts) = (id.to_string(), ev.sender.to_string(), ev.ts);
            // Admitted (in the DAG's order), not waiting for predecessors.
            let in_dag = s.dag().admitted(&id);
            if in_dag && ev.sender != me {
                let m = marks.entry(ev.sender).or_default();
                *m = (*m).max(ev.seq);
            }
            if in_dag && !s.dag().sender_authorized_at(&id, &ev.sender) {
                // A removed member's message (concurrent with or after its
                // removal): flagged, its text never shown (`rooms.md` §5).
                out.push(MessageLine::Unauthorized {
                    event_id,
                    sender,
                    ts,
                    unauthorized: true,
                    reason: crate::room::UNAUTHORIZED_REASON.to_owned(),
                });
                continue;
            }
            match self.store.get_secret(&pt_key(&id))? {
                Some(pt) => match Content::from_bytes(&pt) {
                    Ok(c) if c.is_chat() => {
                        let chat = c.into_chat();
                        // Shown urgent within its sender's burst, as the
                        // node's queues honour it (`wire.md`, "Urgent
                        // messages"), counted over the lines shown.
                        let urgent = chat.urgent
                            && urgent_windows.entry(ev.sender).or_default().admit(ev.ts);
                        let attachment = match &chat.attachment {
                            Some(a) => {
                                // Its chunks' sequence numbers follow it:
                                // not shown as gaps (`attachments.md` §5).
                                chunk_seqs.push((ev.sender, ev.seq + 1, ev.seq + a.chunks()));
                                let n = a.chunks() as usize;
                                let held = s.dag().chunks_of(&id, n).len() as u64;
                                let path = self
                                    .store
                                    .get_secret(&saved_key(&id))?
                                    .map(|p| String::from_utf8_lossy(&p).into_owned());
                                Some(Box::new(AttachmentInfo {
                                    name: a.name.clone(),
                                    size: a.size,
                                    media_type: a.media_type.clone(),
                                    complete: held >= a.chunks(),
                                    path,
                                }))
                            }
                            None => None,
                        };
                        out.push(MessageLine::Text {
                            event_id,
                            sender,
                            ts,
                            text: chat.text,
                            delivered_to: ids(book.delivered_to(&ev.sender, ev.seq)),
                            read_by: ids(book.read_by(&ev.sender, ev.seq)),
                            next_hop: ev.sender == me && self.on_next_hop(&id)?,
                            via: chat.via,
                            location: chat.location,
                            urgent,
                            attachment,
                        })
                    }
                    Ok(_) => {}
                    Err(e) => out.push(MessageLine::Undecryptable {
                        event_id,
                        sender,
                        ts,
                        undecryptable: true,
                        reason: format!("unsupported content: {e}"),
                    }),
                },
                None => {
                    let before_join = !joins.iter().any(|j| s.dag().is_ancestor(j, &id));
                    let reason = match self.store.get_secret(&ud_key(&id))? {
                        _ if !in_dag => {
                            "waiting for earlier events it cites (withheld or not yet received)"
                                .to_owned()
                        }
                        _ if joins.is_empty() => NOT_IN_ROOM_REASON.to_owned(),
                        _ if before_join => BEFORE_JOIN_REASON.to_owned(),
                        Some(r) => String::from_utf8_lossy(&r).into_owned(),
                        None => "no key for this message".to_owned(),
                    };
                    out.push(MessageLine::Undecryptable {
                        event_id,
                        sender,
                        ts,
                        undecryptable: true,
                        reason,
                    });
                }
            }
        }
        // Gaps before events not yet in the DAG (pending) still show.
        out.extend(gaps.into_values().map(|gap| MessageLine::Gap { gap }));
        // A file's missing chunks are its progress, not missing messages.
        out.retain(|l| match l {
            MessageLine::Gap { gap } => !chunk_seqs.iter().any(|(sender, from, to)| {
                gap.sender == sender.to_string() && gap.from_seq >= *from && gap.to_seq <= *to
            }),
            _ => true,
        });
        out.extend(forks.into_values().map(|fork| MessageLine::Fork { fork }));
        Ok((out, marks))
    }

    /// The room's recorded forks, keyed by (sender, seq): every copy's ID,
    /// ascending (the held copy, which counts, is the lowest unless it was
    /// held before a lower one could displace it).
    fn fork_lines(&self, room: &RoomId) -> Result<BTreeMap<(DeviceId, u64), ForkInfo>, AppError> {
        let mut ids: BTreeMap<(DeviceId, u64), BTreeSet<EventId>> = BTreeMap::new();
        for f in self.store.room_forks(room, MAX_FORK_LINES)? {
            let set = ids.entry((f.sender, f.seq)).or_default();
            set.insert(f.existing);
            set.insert(f.conflicting);
        }
        Ok(ids
            .into_iter()
            .map(|((sender, seq), set)| {
                let fork = ForkInfo {
                    sender: sender.to_string(),
                    seq,
                    event_ids: set.iter().map(EventId::to_string).collect(),
                };
                ((sender, seq), fork)
            })
            .collect())
    }

    // ---- bundles --------------------------------------------------------------

    /// A bundle of every stored event of `room` (or of every room), in
    /// (origin time, ID) order per room.
    pub fn export(&self, room: Option<&RoomId>, now_ms: u64) -> Result<Vec<u8>, AppError> {
        let rooms: Vec<RoomId> = match room {
            Some(r) => vec![*r],
            None => self.store.rooms()?.into_iter().map(|r| r.room).collect(),
        };
        let mut events = Vec::new();
        for r in &rooms {
            // A room of this device exports its history as the room's
            // admission sees it (`rooms.md` §3.1): an outsider's events
            // stored as strangers' traffic do not travel on in this
            // device's bundles. A carried room exports what is stored.
            let evs = if self.stored_keys(r)?.is_some() {
                let (_, mut evs) = self.restore_session(r, &BTreeSet::new(), true)?;
                evs.sort_by_key(|e| (e.origin_ts_ms(), e.id()));
                evs
            } else {
                self.room_events(r)?
            };
            if room.is_some() && evs.is_empty() {
                return Err(AppError::UnknownRoom(*r));
            }
            events.extend(evs);
            if events.len() > MAX_BUNDLE_EVENTS {
                return Err(AppError::BadInput(format!(
                    "more than {MAX_BUNDLE_EVENTS} events; export one room at a time"
                )));
            }
        }
        Ok(bundle::export(&events, now_ms))
    }

    /// Whether an own event reached the next hop: a peer showed it holds
    /// it, or the homeserver accepted it.
    pub(super) fn on_next_hop(&self, id: &EventId) -> Result<bool, AppError> {
        for dest in [Destination::Mesh, Destination::Homeserver] {
            if self.store.delivery_state(&dest, id)? == Some(DeliveryState::Acked) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn ids(set: BTreeSet<DeviceId>) -> Vec<String> {
    set.iter().map(DeviceId::to_string).collect()
}

fn member_infos(state: &MembershipState) -> Vec<MemberInfo> {
    state
        .members
        .values()
        .map(|m| MemberInfo {
            device_id: m.device.to_string(),
            // A card its inviter sealed so that it does not open has no name.
            name: m.card.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
            admin: m.admin,
            bridge: m.card.as_ref().is_some_and(|c| c.bridge),
        })
        .collect()
}
