//! Commands that author events: creating and changing rooms, sending
//! messages and files (`protocol-spec/app.md` §2, `protocol-spec/rooms.md`).
//!
//! Each restores the room's session, makes the change, and stages the new
//! events with the advanced room keys and their plaintexts in one store
//! transaction ([`Device::persist`]); nothing is reported before it commits.

use super::*;

impl<S: Store> Device<S> {
    /// Creates a room named `name` with this device as its first admin.
    /// The name travels encrypted, as the room's first message.
    pub fn room_create<R: CryptoRng + ?Sized>(
        &mut self,
        name: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<RoomId, AppError> {
        check_room_name(name)?;
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let (mut s, created) =
            RoomSession::create(&self.keys.identity, &self.keys.card, nonce, now_ms, rng)?;
        let room = s.room();
        let mut events = created.release();
        let content = Content::RoomName(name.to_owned());
        let named = s.send(&self.keys.identity, &content, now_ms, rng)?;
        let keys = zeroize::Zeroizing::new(named.keys().to_vec());
        events.extend(named.release());
        let pts = last_message_plaintext(&events, &content);
        self.persist(&room, &keys, &events, &pts, now_ms)?;
        Ok(room)
    }

    fn change<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        change: Membership,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        let mut s = self.known_session(room)?;
        let out = s.change(&self.keys.identity, change, now_ms, rng)?;
        let keys = zeroize::Zeroizing::new(out.keys().to_vec());
        let events = out.release();
        let id = events
            .first()
            .map(Event::id)
            .ok_or_else(|| AppError::Corrupt("a change produced no event".into()))?;
        self.persist(room, &keys, &events, &[], now_ms)?;
        Ok(id)
    }

    /// Invites a contact (a card text, or the device ID of a stored
    /// contact). Returns the invite event's ID.
    pub fn room_invite<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        contact: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        let card = self.resolve_contact(contact)?;
        let mut s = self.known_session(room)?;
        let name = self.room_name(&mut s)?;
        let out = s.change(
            &self.keys.identity,
            Membership::Invite { card },
            now_ms,
            rng,
        )?;
        let mut keys = zeroize::Zeroizing::new(out.keys().to_vec());
        let mut events = out.release();
        let id = events
            .first()
            .map(Event::id)
            .ok_or_else(|| AppError::Corrupt("an invite produced no event".into()))?;
        let mut pts = Vec::new();
        if !name.is_empty() {
            // The invitee receives this device's chain from its current
            // position, so it cannot read the earlier name event: repeat it.
            let content = Content::RoomName(name);
            let named = s.send(&self.keys.identity, &content, now_ms, rng)?;
            keys = zeroize::Zeroizing::new(named.keys().to_vec());
            events.extend(named.release());
            pts = last_message_plaintext(&events, &content);
        }
        self.persist(room, &keys, &events, &pts, now_ms)?;
        Ok(id)
    }

    /// Renames a room: a name event in this device's chain, read by every
    /// member (the latest readable one names the room).
    pub fn room_rename<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        name: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        check_room_name(name)?;
        let ids = self.send_contents(
            room,
            &[Content::RoomName(name.to_owned())],
            None,
            now_ms,
            rng,
        )?;
        ids.first()
            .copied()
            .ok_or_else(|| AppError::Corrupt("a rename produced no event".into()))
    }

    /// Removes a member; this device then starts a new chain shared only
    /// with the remaining members.
    pub fn room_remove<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        target: &DeviceId,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        self.change(room, Membership::Remove { target: *target }, now_ms, rng)
    }

    /// Leaves the room.
    pub fn room_leave<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        self.change(room, Membership::Leave, now_ms, rng)
    }

    /// Makes a member an admin.
    pub fn room_promote<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        target: &DeviceId,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        self.change(room, Membership::Promote { target: *target }, now_ms, rng)
    }

    /// Takes admin rights away.
    pub fn room_demote<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        target: &DeviceId,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        self.change(room, Membership::Demote { target: *target }, now_ms, rng)
    }

    /// Encrypts, signs and durably stores a message. The returned ID is
    /// acknowledged: the event, the advanced chain state and the plaintext
    /// were committed together.
    pub fn send<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        text: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        self.send_draft(room, &Draft::text(text), now_ms, rng)
    }

    /// [`Self::send`] for any chat content a person composes: text a bridge
    /// brought from Matrix (`via`, `protocol-spec/bridge.md`,
    /// "Attribution"), a location pin with optional text, either of them
    /// urgent (`protocol-spec/wire.md`, "Urgent messages": refused beyond
    /// the sender's burst).
    pub fn send_draft<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        draft: &Draft<'_>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<EventId, AppError> {
        let text = draft.text.to_owned();
        let content = match (draft.via, draft.location) {
            _ if draft.file.is_some() && (draft.via.is_some() || draft.location.is_some()) => {
                return Err(AppError::BadInput(
                    "a file goes with a caption only, not a location or attribution".into(),
                ));
            }
            (None, None) if draft.file.is_some() => {
                let f = draft
                    .file
                    .as_ref()
                    .ok_or(AppError::Corrupt("no file".into()))?;
                let file = crate::room::attachment::seal_file(f.bytes, f.name, f.media_type, rng)
                    .map_err(|e| AppError::BadInput(e.to_string()))?;
                Content::Attachment {
                    file: Box::new(file),
                    text,
                }
            }
            (Some(_), Some(_)) => {
                return Err(AppError::BadInput(
                    "a message cannot be both bridged and a location pin".into(),
                ));
            }
            (Some(via), None) => {
                via.check().map_err(|e| AppError::BadInput(e.to_string()))?;
                Content::Bridged {
                    text,
                    via: via.clone(),
                }
            }
            (None, Some(at)) => Content::Location { at: *at, text },
            (None, None) => Content::Text(text),
        };
        let content = if draft.urgent {
            self.check_urgent_burst(room, now_ms)?;
            Content::urgent(content)
        } else {
            content
        };
        let file = draft.file.as_ref().map(|f| f.bytes);
        let ids = self.send_contents(room, std::slice::from_ref(&content), file, now_ms, rng)?;
        let id = ids
            .first()
            .copied()
            .ok_or_else(|| AppError::Corrupt("send produced no message".into()))?;
        if draft.urgent {
            self.urgent.push(UrgentMark {
                id,
                room: *room,
                sender: self.device_id(),
                ts_ms: now_ms,
            });
        }
        Ok(id)
    }

    /// This device's newest own messages and receipts in the room that no
    /// peer and not the homeserver is known to hold, back to the first
    /// that one does or to an own control event (membership, key shares:
    /// always cited): what an urgent message does not cite
    /// (`protocol-spec/wire.md`, "Urgent messages").
    fn own_backlog(&self, s: &mut RoomSession) -> Result<BTreeSet<EventId>, AppError> {
        let me = self.device_id();
        let dag: &crate::room::RoomDag = s.dag();
        let mut backlog = BTreeSet::new();
        for id in dag.sender_events_newest_first(&me) {
            let in_chain = dag.held(&id).is_some_and(|h| h.kind.in_sender_chain());
            if !in_chain || self.on_next_hop(&id)? {
                break;
            }
            backlog.insert(id);
        }
        Ok(backlog)
    }

    /// A complete attachment (`protocol-spec/attachments.md` §4): the
    /// announcement of message `id` and the file, its hash checked; records
    /// `path`, if given, as where it is saved (the line's `path`). Refused while
    /// chunks are missing, naming how many.
    pub fn save_attachment(
        &mut self,
        id: &EventId,
        path: Option<&str>,
    ) -> Result<
        (
            crate::room::attachment::Announcement,
            zeroize::Zeroizing<Vec<u8>>,
        ),
        AppError,
    > {
        use crate::room::attachment::{ChunkBody, open_file};
        let not_file = || AppError::BadInput(format!("no file announced by event {id}"));
        let room = self.store.event_info(id)?.ok_or_else(not_file)?.room;
        let pt = self.store.get_secret(&pt_key(id))?.ok_or_else(not_file)?;
        let a = match Content::from_bytes(&pt).map(Content::into_chat) {
            Ok(crate::room::content::ChatParts {
                attachment: Some(a),
                ..
            }) => *a,
            _ => return Err(not_file()),
        };
        let mut s = self.cached_session(&room)?;
        // At most `MAX_CHUNK_EVENTS_READ` chunk events are read, and one
        // kept per index: a sender repeating chunks costs a reader at most
        // about two files' worth of memory (`attachments.md` §5).
        let ids = s.dag().chunks_of(id, MAX_CHUNK_EVENTS_READ);
        self.keep_session(room, s);
        let n = a.chunks() as usize;
        let mut slots: Vec<Option<ChunkBody>> = vec![None; n];
        let mut have = 0;
        for c in &ids {
            if have == n {
                break;
            }
            let Some(bytes) = self.store.get_event(c)? else {
                continue;
            };
            if let Ok(ev) = Event::decode(&bytes)
                && let Ok(body) = ChunkBody::from_bytes(ev.payload())
                && body.file == *id
                && let Some(slot) = slots.get_mut(body.index as usize)
                && slot.is_none()
            {
                *slot = Some(body);
                have += 1;
            }
        }
        let chunks: Vec<ChunkBody> = slots.into_iter().flatten().collect();
        let file = open_file(&a, id, &chunks).map_err(|e| AppError::BadInput(e.to_string()))?;
        if let Some(path) = path {
            self.store.put_secret(&saved_key(id), path.as_bytes())?;
            if self.deferred.is_none() {
                self.store.commit()?;
            }
        }
        Ok((a, file))
    }

    /// Refuses an urgent message that would exceed this device's own burst
    /// in `room` ([`crate::proto::urgent::URGENT_BURST`] within
    /// [`crate::proto::urgent::URGENT_WINDOW_MS`]), counted from its own
    /// messages the room holds.
    fn check_urgent_burst(&mut self, room: &RoomId, now_ms: u64) -> Result<(), AppError> {
        use crate::proto::urgent::{URGENT_BURST, URGENT_WINDOW_MS, UrgentWindow};
        let me = self.device_id();
        let mut s = self.cached_session(room)?;
        let dag: &crate::room::RoomDag = s.dag();
        let mut recent = Vec::new();
        for id in dag.sender_events_newest_first(&me) {
            let Some(h) = dag.held(&id) else { continue };
            if h.ts.saturating_add(URGENT_WINDOW_MS) <= now_ms {
                break;
            }
            if h.kind == EventKind::Message
                && let Some(pt) = self.store.get_secret(&pt_key(&id))?
                && Content::from_bytes(&pt).is_ok_and(|c| c.is_urgent())
            {
                recent.push(h.ts);
            }
        }
        self.keep_session(*room, s);
        let mut window = UrgentWindow::default();
        for ts in recent.into_iter().rev() {
            window.admit(ts);
        }
        if !window.allows(now_ms) {
            return Err(AppError::BadInput(format!(
                "at most {URGENT_BURST} urgent messages per {} minutes in a room; \
                 send this one without --urgent",
                URGENT_WINDOW_MS / 60_000
            )));
        }
        Ok(())
    }

    /// Sends several messages in order with one session restore and one
    /// commit (a backlog composed offline, a benchmark). All or nothing:
    /// the IDs are returned only after the commit.
    pub fn send_many<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        texts: &[&str],
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<EventId>, AppError> {
        let contents: Vec<Content> = texts
            .iter()
            .map(|t| Content::Text((*t).to_owned()))
            .collect();
        self.send_contents(room, &contents, None, now_ms, rng)
    }

    /// [`Self::send_many`] for chat content of any kind.
    /// With `file`, `contents` is one attachment announcement of it, sent
    /// with the file's chunks (`protocol-spec/attachments.md`).
    fn send_contents<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        contents: &[Content],
        file: Option<&[u8]>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<EventId>, AppError> {
        if let Some(n) = contents
            .iter()
            .map(Content::chat_len)
            .find(|&n| n > MAX_TEXT_BYTES)
        {
            return Err(AppError::BadInput(format!(
                "message is {n} bytes, over the {MAX_TEXT_BYTES}-byte limit"
            )));
        }
        let mut s = self.cached_session(room)?;
        let mut events = Vec::new();
        let mut pts = Vec::new();
        let mut keys = zeroize::Zeroizing::new(Vec::new());
        let mut ids = Vec::with_capacity(contents.len());
        for content in contents {
            let around = if content.is_urgent() {
                self.own_backlog(&mut s)?
            } else {
                BTreeSet::new()
            };
            let out = match file {
                Some(f) => s.send_file(&self.keys.identity, content, f, around, now_ms, rng)?,
                None => s.send_citing_around(&self.keys.identity, content, around, now_ms, rng)?,
            };
            keys = zeroize::Zeroizing::new(out.keys().to_vec());
            let evs = out.release();
            let pt = last_message_plaintext(&evs, content);
            let id = pt
                .first()
                .map(|(id, _)| *id)
                .ok_or_else(|| AppError::Corrupt("send produced no message".into()))?;
            ids.push(id);
            pts.extend(pt);
            events.extend(evs);
        }
        if contents.is_empty() {
            return Ok(ids);
        }
        self.persist(room, &keys, &events, &pts, now_ms)?;
        // The session now holds the new events and chain state exactly as
        // staged; a failed commit clears the whole cache.
        self.keep_session(*room, s);
        Ok(ids)
    }
}

/// Refuses a room name over `MAX_ROOM_NAME_BYTES`.
fn check_room_name(name: &str) -> Result<(), AppError> {
    if name.len() > crate::room::content::MAX_ROOM_NAME_BYTES {
        return Err(AppError::BadInput(format!(
            "room name longer than {} bytes",
            crate::room::content::MAX_ROOM_NAME_BYTES
        )));
    }
    Ok(())
}
