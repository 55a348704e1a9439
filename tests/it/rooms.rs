//! Rooms end to end at library level: three devices A, B, C exchanging
//! contact cards and sneakernet bundles (bytes), each with its own DAG,
//! prekeys and room keys (`protocol-spec/rooms.md`,
//! `protocol-spec/encryption.md`).

use std::collections::{BTreeMap, BTreeSet};

use meshrelay::bundle;
use meshrelay::crypto::key_share::{PrekeyRing, seal_shares};
use meshrelay::crypto::sender_chain::{ChainError, MessagePayload, OutboundChain};
use meshrelay::crypto::{ContactCard, DeviceId, Identity};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::room::keys::{
    KeyError, accept_key_share, decrypt_message, needs_new_epoch, recipients,
};
use meshrelay::room::{
    AuthError, DagError, Inserted, Membership, RoomDag, RoomKeys, derive_room_id,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const T0: u64 = 1_750_000_000_000;
const DAY: u64 = 86_400_000;

/// One device: what a real node persists (identity, prekeys, room keys,
/// events) plus its derived DAG.
struct Dev {
    id: Identity,
    card: ContactCard,
    prekeys: PrekeyRing,
    rng: StdRng,
    room: Option<RoomId>,
    dag: Option<RoomDag>,
    keys: Option<RoomKeys>,
    events: BTreeMap<EventId, Event>,
    /// Decrypted texts by event, in the order read.
    read: Vec<(EventId, String)>,
    /// Undecryptable messages with reasons.
    undecryptable: Vec<(EventId, KeyError)>,
    clock: u64,
}

impl Dev {
    fn new(seed: u8, name: &str) -> Self {
        let id = Identity::from_seed(&[seed; 32]);
        let card = ContactCard::create(&id, name, T0).unwrap();
        let prekeys = PrekeyRing::from_identity(&id, T0);
        Dev {
            id,
            card,
            prekeys,
            rng: StdRng::seed_from_u64(seed as u64),
            room: None,
            dag: None,
            keys: None,
            events: BTreeMap::new(),
            read: Vec::new(),
            undecryptable: Vec::new(),
            clock: T0,
        }
    }

    fn me(&self) -> DeviceId {
        self.id.device_id()
    }

    fn dag(&mut self) -> &mut RoomDag {
        self.dag.as_mut().unwrap()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1000;
        self.clock
    }

    /// Signs and stores an event of the room with the given payload,
    /// citing the current heads.
    fn emit(&mut self, kind: EventKind, payload: Vec<u8>) -> Event {
        let ev = self.sign_next(kind, payload);
        let dag = self.dag.as_mut().unwrap();
        assert!(matches!(dag.insert(&ev).unwrap(), Inserted::Accepted(_)));
        self.events.insert(ev.id(), ev.clone());
        ev
    }

    /// Signs a membership event citing the current heads *without*
    /// admitting it locally (what a non-member forging one does).
    fn forge_membership(&mut self, m: Membership) -> Event {
        let ev = self.sign_next(EventKind::Membership, m.to_bytes());
        self.events.insert(ev.id(), ev.clone());
        ev
    }

    fn sign_next(&mut self, kind: EventKind, payload: Vec<u8>) -> Event {
        let room = self.room.unwrap();
        let now = self.tick();
        let me = self.me();
        let dag = self.dag.as_mut().unwrap();
        UnsignedEvent {
            room,
            sender: me,
            seq: dag.max_seq(&me) + 1,
            prev: dag.heads(),
            origin_ts_ms: now,
            expires_ms: now + 14 * DAY,
            kind,
            payload,
        }
        .sign(&self.id)
        .unwrap()
    }

    fn create_room(&mut self) -> RoomId {
        let nonce = [self.id.device_id().as_bytes()[0]; 16];
        let room = derive_room_id(&self.me(), &nonce);
        self.room = Some(room);
        self.dag = Some(RoomDag::new(room));
        self.keys = Some(RoomKeys::new(room));
        let card = self.card.clone();
        self.emit(
            EventKind::Membership,
            Membership::Create { card, nonce }.to_bytes(),
        );
        room
    }

    fn membership(&mut self, m: Membership) -> Event {
        self.emit(EventKind::Membership, m.to_bytes())
    }

    /// Starts a new chain (epoch) and shares it with every current member.
    fn new_epoch(&mut self) {
        let room = self.room.unwrap();
        let now = self.clock;
        let chain = OutboundChain::new(room, now, &mut self.rng);
        self.keys.as_mut().unwrap().outbound = Some(chain);
        self.share_chain();
    }

    /// Seals the current chain position to every member but me.
    fn share_chain(&mut self) {
        let room = self.room.unwrap();
        let me = self.me();
        let state = self.dag().members();
        let to = recipients(&state, &me, &BTreeMap::new());
        let share = self
            .keys
            .as_ref()
            .unwrap()
            .outbound
            .as_ref()
            .unwrap()
            .share();
        for p in seal_shares(&room, &me, &share, &to, &mut self.rng).unwrap() {
            self.emit(EventKind::KeyShare, p.to_bytes());
        }
    }

    /// Encrypts and sends a message, committing the chain state first.
    fn send(&mut self, text: &str) -> Event {
        if self.keys.as_ref().unwrap().outbound.is_none() {
            self.new_epoch();
        }
        let me = self.me();
        let chain = self.keys.as_ref().unwrap().outbound.clone().unwrap();
        let pending = chain.encrypt(&me, text.as_bytes(), &mut self.rng).unwrap();
        // "Commit" the advanced state before the ciphertext exists anywhere else.
        let persisted = pending.next_state().to_bytes();
        self.keys.as_mut().unwrap().outbound = Some(OutboundChain::from_bytes(&persisted).unwrap());
        let (_, payload) = pending.release();
        self.emit(EventKind::Message, payload.to_bytes())
    }

    fn export(&self) -> Vec<u8> {
        bundle::export(self.events.values(), self.clock)
    }

    /// Imports a bundle: verify, insert, then read key shares and messages
    /// in display order. Returns (imported, duplicates, rejected).
    fn import(&mut self, bytes: &[u8]) -> (usize, usize, usize) {
        let events = &self.events;
        let rep =
            bundle::import(bytes, self.clock + DAY, None, |id| events.contains_key(id)).unwrap();
        let mut new: BTreeMap<EventId, ()> = BTreeMap::new();
        let mut refused = 0;
        for ev in &rep.imported {
            if self.dag.is_none() {
                self.room = Some(ev.room());
                self.dag = Some(RoomDag::new(ev.room()));
                self.keys = Some(RoomKeys::new(ev.room()));
            }
            match self.dag().insert(ev) {
                Ok(Inserted::Accepted(ids)) => new.extend(ids.into_iter().map(|i| (i, ()))),
                Ok(_) => {}
                // Refused by admission: not the room's, not kept.
                Err(_) => {
                    refused += 1;
                    continue;
                }
            }
            self.events.insert(ev.id(), ev.clone());
        }
        let order = self.dag().display_order();
        for id in order.into_iter().filter(|i| new.contains_key(i)) {
            let ev = self.events[&id].clone();
            if ev.sender() == self.me() {
                continue;
            }
            match ev.kind() {
                EventKind::KeyShare => {
                    let me = self.me();
                    let dag = self.dag.as_mut().unwrap();
                    if let Ok(chain) = accept_key_share(dag, &ev, &me, &self.prekeys) {
                        self.keys.as_mut().unwrap().install(chain.chain);
                    }
                }
                EventKind::Message => match decrypt_message(self.keys.as_mut().unwrap(), &ev) {
                    Ok(pt) => self
                        .read
                        .push((id, String::from_utf8(pt.to_vec()).unwrap())),
                    Err(e) => self.undecryptable.push((id, e)),
                },
                _ => {}
            }
        }
        (
            rep.imported.len() - refused,
            rep.duplicates,
            rep.rejected.len() + refused,
        )
    }

    fn texts(&self) -> Vec<&str> {
        self.read.iter().map(|(_, t)| t.as_str()).collect()
    }

    fn member_ids(&mut self) -> Vec<DeviceId> {
        self.dag().members().members.keys().copied().collect()
    }
}

fn abc() -> (Dev, Dev, Dev) {
    (Dev::new(1, "Ana"), Dev::new(2, "Bo"), Dev::new(3, "Cy"))
}

/// Contact cards travel as text, as in the field.
fn card_of(d: &Dev) -> ContactCard {
    ContactCard::from_text(&d.card.to_text()).unwrap()
}

#[test]
fn invitee_reads_and_outsider_cannot() {
    let (mut a, mut b, mut c) = abc();
    a.create_room();
    let bc = card_of(&b);
    a.membership(Membership::Invite { card: bc });
    a.send("hello Bo");
    a.send("second");
    let bytes = a.export();

    assert_eq!(b.import(&bytes), (a.events.len(), 0, 0));
    assert_eq!(b.texts(), vec!["hello Bo", "second"]);
    assert!(b.undecryptable.is_empty());
    assert_eq!(b.member_ids(), a.member_ids());

    // C holds every event (a courier) but has no key and no share.
    c.import(&bytes);
    assert!(c.read.is_empty());
    assert_eq!(c.undecryptable.len(), 2);
    assert!(matches!(c.undecryptable[0].1, KeyError::NoChain { .. }));
    let share_ev = a
        .events
        .values()
        .find(|e| e.kind() == EventKind::KeyShare)
        .unwrap()
        .clone();
    let cme = c.me();
    let err = accept_key_share(c.dag.as_mut().unwrap(), &share_ev, &cme, &c.prekeys).unwrap_err();
    assert!(matches!(err, KeyError::Share(_)), "{err:?}");

    // B replies; A reads it.
    b.send("hi Ana");
    a.import(&b.export());
    assert_eq!(a.texts(), vec!["hi Ana"]);
}

#[test]
fn removed_member_cannot_read_later_messages_with_every_retained_key() {
    let (mut a, mut b, mut c) = abc();
    a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    a.membership(Membership::Invite { card: card_of(&c) });
    a.send("before removal");
    b.import(&a.export());
    c.import(&a.export());
    assert_eq!(b.texts(), vec!["before removal"]);

    // Everything B keeps: room keys and prekeys, as persisted bytes.
    let b_keys = b.keys.as_ref().unwrap().to_bytes();
    let b_prekeys = b.prekeys.to_bytes();

    let before = a.dag().members();
    a.membership(Membership::Remove { target: b.me() });
    let after = a.dag().members();
    assert!(needs_new_epoch(&before, &after));
    a.new_epoch();
    let secret = a.send("after removal");
    b.import(&a.export());
    c.import(&a.export());
    assert_eq!(c.texts(), vec!["before removal", "after removal"]);
    assert_eq!(b.texts(), vec!["before removal"]);
    assert!(b.undecryptable.iter().any(|(id, _)| *id == secret.id()));

    // Crypto level, with every key B retained.
    let mut keys = RoomKeys::from_bytes(&b_keys).unwrap();
    let prekeys = PrekeyRing::from_bytes(&b_prekeys).unwrap();
    let payload = MessagePayload::from_bytes(secret.payload()).unwrap();
    assert!(matches!(
        decrypt_message(&mut keys, &secret),
        Err(KeyError::NoChain { .. })
    ));
    // Every key share A ever sent, opened with every prekey B holds.
    for ev in a
        .events
        .values()
        .filter(|e| e.kind() == EventKind::KeyShare)
    {
        let p = meshrelay::crypto::key_share::KeySharePayload::from_bytes(ev.payload()).unwrap();
        if p.chain_id == payload.chain_id {
            assert!(p.shares.iter().all(|s| s.recipient != b.me()));
            // Even relabelling C's share as B's does not open it.
            let mut relabel = p.clone();
            relabel.shares[0].recipient = b.me();
            assert!(
                meshrelay::crypto::key_share::open_share(
                    &ev.room(),
                    &ev.sender(),
                    &relabel,
                    &b.me(),
                    &prekeys
                )
                .is_err()
            );
        }
    }
    // B's old chain for A, forced onto the new ciphertext at every nearby index.
    let old_chain_id = MessagePayload::from_bytes(
        a.events
            .values()
            .find(|e| e.kind() == EventKind::Message)
            .unwrap()
            .payload(),
    )
    .unwrap()
    .chain_id;
    let old = keys.inbound(&a.me(), &old_chain_id).unwrap().clone();
    for idx in 0..50 {
        let mut forced = payload.clone();
        forced.chain_id = old_chain_id;
        forced.index = idx;
        let mut chain = old.clone();
        assert!(chain.decrypt(&forced).is_err());
    }
}

#[test]
fn forged_invites_are_rejected() {
    let (mut a, mut b, mut c) = abc();
    a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    b.import(&a.export());
    c.import(&a.export());

    // Non-admin member B, and non-member C, each try to invite C.
    let forged_b = b.membership(Membership::Invite { card: card_of(&c) });
    let forged_c = c.forge_membership(Membership::Invite { card: card_of(&c) });
    a.import(&b.export());
    let (_, _, rejected) = a.import(&c.export());
    assert_eq!(rejected, 1, "admission refuses the non-member's invite");
    let res = a.dag().resolve().clone();
    assert_eq!(
        res.verdicts[&forged_b.id()],
        Err(AuthError::SignerNotAdmin(b.me()))
    );
    assert!(!res.verdicts.contains_key(&forged_c.id()));
    assert!(!a.dag().contains(&forged_c.id()));
    assert!(!a.dag().members().is_member(&c.me()));
}

#[test]
fn invite_by_concurrently_removed_admin_is_rejected_and_all_converge() {
    let (mut a, mut b, mut c) = abc();
    a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    a.membership(Membership::Promote { target: b.me() });
    b.import(&a.export());
    assert!(b.dag().members().is_admin(&b.me()));

    // Partition 1: A removes B. Partition 2: B invites C and talks to C.
    let removal = a.membership(Membership::Remove { target: b.me() });
    let invite = b.membership(Membership::Invite { card: card_of(&c) });
    b.send("hello C");
    c.import(&b.export());
    assert!(
        c.dag().members().is_member(&c.me()),
        "in partition 2, C is in"
    );

    // Merge: everyone exchanges bundles, in different orders.
    let (ab, bb, cb) = (a.export(), b.export(), c.export());
    a.import(&bb);
    a.import(&cb);
    b.import(&cb);
    b.import(&ab);
    c.import(&ab);
    c.import(&bb);
    let ra = a.dag().resolve().clone();
    let rb = b.dag().resolve().clone();
    let rc = c.dag().resolve().clone();
    assert_eq!(ra, rb);
    assert_eq!(ra, rc);
    assert_eq!(ra.verdicts[&removal.id()], Ok(()));
    assert_eq!(
        ra.verdicts[&invite.id()],
        Err(AuthError::RevokedConcurrently(removal.id()))
    );
    let members = a.member_ids();
    assert_eq!(members, vec![a.me()]);
    assert_eq!(b.member_ids(), members);
    assert_eq!(c.member_ids(), members);
    assert_eq!(a.dag().display_order(), c.dag().display_order());
}

#[test]
fn mutual_removal_and_remove_vs_reinvite_resolve_identically() {
    // A and B are admins; C is a member. Partition: A removes B, B removes A.
    let (mut a, mut b, mut c) = abc();
    a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    a.membership(Membership::Promote { target: b.me() });
    a.membership(Membership::Invite { card: card_of(&c) });
    b.import(&a.export());
    c.import(&a.export());
    let ra = a.membership(Membership::Remove { target: b.me() });
    let rb = b.membership(Membership::Remove { target: a.me() });
    let (ab, bb) = (a.export(), b.export());
    a.import(&bb);
    b.import(&ab);
    c.import(&bb);
    c.import(&ab);
    let res = c.dag().resolve().clone();
    assert_eq!(a.dag().resolve().clone(), res);
    assert_eq!(b.dag().resolve().clone(), res);
    // Exactly one of the two removals wins: the one earlier in order T.
    let first = res.order.iter().position(|i| *i == ra.id()).unwrap()
        < res.order.iter().position(|i| *i == rb.id()).unwrap();
    let (win, lose) = if first {
        (ra.id(), rb.id())
    } else {
        (rb.id(), ra.id())
    };
    assert_eq!(res.verdicts[&win], Ok(()));
    assert_eq!(
        res.verdicts[&lose],
        Err(AuthError::RevokedConcurrently(win))
    );
    assert_eq!(res.state.len(), 2);
}

#[test]
fn replayed_bundle_adds_nothing() {
    let (mut a, mut b, _) = abc();
    a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    a.send("once");
    let bytes = a.export();
    let n = a.events.len();
    assert_eq!(b.import(&bytes), (n, 0, 0));
    let dag_len = b.dag().len();
    assert_eq!(b.import(&bytes), (0, n, 0));
    // A bundle repeating every event twice.
    let doubled: Vec<&Event> = a.events.values().chain(a.events.values()).collect();
    assert_eq!(b.import(&bundle::export(doubled, 0)), (0, 2 * n, 0));
    assert_eq!(b.dag().len(), dag_len);
    assert_eq!(b.texts(), vec!["once"]);
    // The raw message event replayed into the chain: key already erased.
    let msg = a
        .events
        .values()
        .find(|e| e.kind() == EventKind::Message)
        .unwrap();
    assert!(matches!(
        decrypt_message(b.keys.as_mut().unwrap(), msg),
        Err(KeyError::Chain(ChainError::KeyUnavailable(0)))
    ));
}

#[test]
fn tampered_ciphertext_or_signature_is_rejected() {
    let (mut a, mut b, _) = abc();
    a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    let msg = a.send("integrity");
    // Relay flips a ciphertext byte: the signature no longer verifies.
    let mut bytes = msg.bytes().to_vec();
    let at = bytes.len() - 80;
    bytes[at] ^= 0x04;
    assert!(Event::decode(&bytes).is_err());
    let mut w = meshrelay::cbor::Writer::new();
    let others: Vec<&Event> = a.events.values().filter(|e| e.id() != msg.id()).collect();
    w.array(4)
        .text(bundle::BUNDLE_MAGIC)
        .u64(1)
        .u64(0)
        .array(others.len() + 1);
    for e in &others {
        w.bytes(e.bytes());
    }
    w.bytes(&bytes);
    let (imported, dups, rejected) = b.import(&w.into_bytes());
    assert_eq!((imported, dups, rejected), (others.len(), 0, 1));
    assert!(b.read.is_empty());

    // The sender itself signing a corrupted ciphertext: the AEAD rejects it,
    // and the chain state is unchanged so the real message still reads.
    let mut p = MessagePayload::from_bytes(msg.payload()).unwrap();
    p.ciphertext[0] ^= 1;
    let mut f = msg.fields().clone();
    f.payload = p.to_bytes();
    f.seq += 100;
    let bad = f.sign(&a.id).unwrap();
    let keys = b.keys.as_mut().unwrap();
    assert!(matches!(
        decrypt_message(keys, &bad),
        Err(KeyError::Chain(ChainError::Decrypt))
    ));
    assert_eq!(&*decrypt_message(keys, &msg).unwrap(), b"integrity");
}

#[test]
fn homeserver_cannot_add_a_member() {
    // The 2022 Matrix attack: the server injects a membership event.
    let (mut a, mut b, _) = abc();
    let room = a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    a.send("members only");
    b.import(&a.export());
    let server = Identity::from_seed(&[0xee; 32]);
    let server_card = ContactCard::create(&server, "server", T0).unwrap();
    let heads = b.dag().heads();
    let sign = |kind: EventKind, payload: Vec<u8>, seq: u64| {
        UnsignedEvent {
            room,
            sender: server.device_id(),
            seq,
            prev: heads.clone(),
            origin_ts_ms: T0 + 50_000,
            expires_ms: T0 + DAY,
            kind,
            payload,
        }
        .sign(&server)
        .unwrap()
    };
    // 1. Invites itself with its own key.
    let inject = sign(
        EventKind::Membership,
        Membership::Invite {
            card: server_card.clone(),
        }
        .to_bytes(),
        1,
    );
    // 2. Writes its own "create" for the room.
    let fake_create = sign(
        EventKind::Membership,
        Membership::Create {
            card: server_card,
            nonce: [0; 16],
        }
        .to_bytes(),
        2,
    );
    // 3. Alters A's invite to carry its own card (signature breaks).
    let a_invite = a
        .events
        .values()
        .find(|e| {
            matches!(
                Membership::from_bytes(e.payload()),
                Ok(Membership::Invite { .. })
            )
        })
        .unwrap();
    let mut altered = a_invite.bytes().to_vec();
    let at = altered.len() / 2;
    altered[at] ^= 1;
    assert!(Event::decode(&altered).is_err());

    // Admission refuses both: the server is not a member where its invite
    // stands, and its create is not this room's (the room ID does not
    // commit to its key).
    let refused = DagError::NotAuthorized(server.device_id());
    assert_eq!(b.dag().insert(&inject), Err(refused.clone()));
    assert_eq!(b.dag().insert(&fake_create), Err(refused.clone()));
    assert!(!b.dag().contains(&inject.id()));
    assert!(!b.dag().members().is_member(&server.device_id()));
    assert_eq!(b.dag().members().len(), 2);

    // The server's key share to B (sealed correctly to B's prekey) is
    // refused: it is not a member.
    let mut rng = StdRng::seed_from_u64(99);
    let chain = OutboundChain::new(room, T0, &mut rng);
    let to = recipients(&b.dag().members(), &server.device_id(), &BTreeMap::new());
    let p = seal_shares(&room, &server.device_id(), &chain.share(), &to, &mut rng).unwrap();
    let ks = sign(EventKind::KeyShare, p[0].to_bytes(), 3);
    assert_eq!(b.dag().insert(&ks), Err(refused));
    let me = b.me();
    let err = accept_key_share(b.dag.as_mut().unwrap(), &ks, &me, &b.prekeys).unwrap_err();
    assert_eq!(err, KeyError::UnknownEvent);
}

#[test]
fn key_share_through_the_wrong_channel_is_refused() {
    // Matrix "protocol confusion": key material must arrive as a key-share
    // event, from a member, and is bound to its signer.
    let (mut a, mut b, mut c) = abc();
    let room = a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    a.membership(Membership::Invite { card: card_of(&c) });
    b.import(&a.export());
    c.import(&a.export());

    // C (a member) builds a valid sealed share for B but sends it as a
    // message and as a receipt.
    let chain = OutboundChain::new(room, T0, &mut c.rng);
    let to = recipients(&c.dag().members(), &c.me(), &BTreeMap::new());
    let p = seal_shares(&room, &c.me(), &chain.share(), &to, &mut c.rng).unwrap();
    let as_message = c.emit(EventKind::Message, p[0].to_bytes());
    let as_receipt = c.emit(EventKind::Receipt, p[0].to_bytes());
    let as_ks = c.emit(EventKind::KeyShare, p[0].to_bytes());
    b.import(&c.export());
    let me = b.me();
    for ev in [&as_message, &as_receipt] {
        let err = accept_key_share(b.dag.as_mut().unwrap(), ev, &me, &b.prekeys).unwrap_err();
        assert!(matches!(err, KeyError::WrongChannel(_)), "{err:?}");
    }
    // And as a message, it decrypts to nothing.
    assert!(decrypt_message(b.keys.as_mut().unwrap(), &as_message).is_err());
    // Through the right channel it installs a chain *for C only*: C cannot
    // make B accept a chain under A's name.
    let chain_in = accept_key_share(b.dag.as_mut().unwrap(), &as_ks, &me, &b.prekeys).unwrap();
    assert_eq!(chain_in.chain.sender(), c.me());
    // A's share re-signed by C (copying A's payload) does not open.
    a.send("from A");
    b.import(&a.export());
    let a_share = a
        .events
        .values()
        .find(|e| e.kind() == EventKind::KeyShare)
        .unwrap();
    let copied = c.emit(EventKind::KeyShare, a_share.payload().to_vec());
    b.import(&c.export());
    assert!(matches!(
        accept_key_share(b.dag.as_mut().unwrap(), &copied, &me, &b.prekeys),
        Err(KeyError::Share(_))
    ));
}

#[test]
fn gaps_are_detected_and_own_sequence_reuse_starts_a_new_chain() {
    let (mut a, mut b, _) = abc();
    a.create_room();
    a.membership(Membership::Invite { card: card_of(&b) });
    let m1 = a.send("1");
    let withheld = a.send("2");
    let m3 = a.send("3");
    // A relay withholds message 2.
    let evs: Vec<&Event> = a
        .events
        .values()
        .filter(|e| e.id() != withheld.id())
        .collect();
    b.import(&bundle::export(evs, 0));
    // Message 3 cites message 2, so it waits; the gap is visible.
    assert!(b.dag().missing().contains(&withheld.id()));
    assert!(!b.dag().admitted(&m3.id()));
    assert!(b.texts().contains(&"1"));
    let _ = m1;
    // A delivers the withheld message later: everything reads.
    b.import(&a.export());
    assert!(b.texts().contains(&"2") && b.texts().contains(&"3"));
    assert!(b.dag().gaps().is_empty());

    // A sequence gap without a causal hole (a sender skipping numbers).
    let mut f = withheld.fields().clone();
    let ame = a.me();
    f.seq = a.dag().max_seq(&ame) + 5;
    f.prev = a.dag().heads();
    let skipped = f.sign(&a.id).unwrap();
    b.dag().insert(&skipped).unwrap();
    let gaps = b.dag().gaps();
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        (gaps[0].sender, gaps[0].to_seq - gaps[0].from_seq),
        (a.me(), 3)
    );

    // A restored copy of A sees its own sequence numbers already used.
    let next = a.dag().max_seq(&ame) + 1;
    assert!(b.dag().own_seq_reused(&a.me(), next));
}

mod convergence {
    //! Property: any arrival order of the same events gives the same
    //! verdicts, membership and display order (`protocol-spec/rooms.md`,
    //! "Resolution rule").
    use super::*;
    use proptest::prelude::*;
    use rand::seq::SliceRandom;

    fn build(ops: &[(u8, u8, u8, u16, u16)]) -> (RoomId, Vec<Event>) {
        let ids: Vec<Identity> = (1..=4u8).map(|i| Identity::from_seed(&[i; 32])).collect();
        let cards: Vec<ContactCard> = ids
            .iter()
            .map(|i| ContactCard::create(i, "x", T0).unwrap())
            .collect();
        let nonce = [9; 16];
        let room = derive_room_id(&ids[0].device_id(), &nonce);
        let mut events: Vec<Event> = Vec::new();
        let mut seqs = [0u64; 4];
        let mut push =
            |events: &mut Vec<Event>, who: usize, prev: Vec<EventId>, m: Membership, ts: u64| {
                seqs[who] += 1;
                let e = UnsignedEvent {
                    room,
                    sender: ids[who].device_id(),
                    seq: seqs[who],
                    prev,
                    origin_ts_ms: ts,
                    expires_ms: ts + DAY,
                    kind: EventKind::Membership,
                    payload: m.to_bytes(),
                }
                .sign(&ids[who])
                .unwrap();
                events.push(e);
            };
        push(
            &mut events,
            0,
            vec![],
            Membership::Create {
                card: cards[0].clone(),
                nonce,
            },
            T0,
        );
        for (k, &(who, op, target, p1, p2)) in ops.iter().enumerate() {
            let who = who as usize % 4;
            let t = target as usize % 4;
            let m = match op % 5 {
                0 => Membership::Invite {
                    card: cards[t].clone(),
                },
                1 => Membership::Remove {
                    target: ids[t].device_id(),
                },
                2 => Membership::Leave,
                3 => Membership::Promote {
                    target: ids[t].device_id(),
                },
                _ => Membership::Demote {
                    target: ids[t].device_id(),
                },
            };
            let n = events.len();
            let mut prev = vec![events[p1 as usize % n].id()];
            let second = events[p2 as usize % n].id();
            if !prev.contains(&second) {
                prev.push(second);
            }
            // Timestamps deliberately collide to exercise the ID tie-break.
            push(&mut events, who, prev, m, T0 + (k as u64 % 3) * 1000);
        }
        (room, events)
    }

    /// Events of devices nobody ever invites: membership changes of every
    /// kind (self-invites, removals of members, promotions, leaves) and
    /// messages, citing honest events and each other.
    fn outsiders(room: RoomId, honest: &[Event], ops: &[(u8, u8, u16, u16)]) -> Vec<Event> {
        let ids: Vec<Identity> = (0xF0..0xF3u8)
            .map(|i| Identity::from_seed(&[i; 32]))
            .collect();
        let victims: Vec<DeviceId> = (1..=4u8)
            .map(|i| Identity::from_seed(&[i; 32]).device_id())
            .collect();
        let mut out: Vec<Event> = Vec::new();
        let mut seqs = [0u64; 3];
        for (k, &(who, op, p1, p2)) in ops.iter().enumerate() {
            let who = who as usize % 3;
            let pool: Vec<EventId> = honest.iter().chain(&out).map(Event::id).collect();
            let mut prev = vec![pool[p1 as usize % pool.len()]];
            let second = pool[p2 as usize % pool.len()];
            if !prev.contains(&second) {
                prev.push(second);
            }
            let (kind, payload) = match op % 6 {
                0 => (
                    EventKind::Membership,
                    Membership::Invite {
                        card: ContactCard::create(&ids[who], "x", T0).unwrap(),
                    }
                    .to_bytes(),
                ),
                1 => (
                    EventKind::Membership,
                    Membership::Remove {
                        target: victims[k % 4],
                    }
                    .to_bytes(),
                ),
                2 => (EventKind::Membership, Membership::Leave.to_bytes()),
                3 => (
                    EventKind::Membership,
                    Membership::Promote {
                        target: ids[who].device_id(),
                    }
                    .to_bytes(),
                ),
                4 => (
                    EventKind::Membership,
                    Membership::Create {
                        card: ContactCard::create(&ids[who], "x", T0).unwrap(),
                        nonce: [9; 16],
                    }
                    .to_bytes(),
                ),
                _ => (EventKind::Message, vec![op; 16]),
            };
            seqs[who] += 1;
            out.push(
                UnsignedEvent {
                    room,
                    sender: ids[who].device_id(),
                    seq: seqs[who],
                    prev: if op % 6 == 4 { vec![] } else { prev },
                    origin_ts_ms: T0 + (k as u64 % 3) * 1000,
                    expires_ms: T0 + DAY,
                    kind,
                    payload,
                }
                .sign(&ids[who])
                .unwrap(),
            );
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// For any interleaving of honest and outsiders' events, the
        /// room's state (verdicts, members, display order) equals the
        /// state from the honest events alone (`rooms.md` §3.1).
        #[test]
        fn outsiders_never_change_the_room(
            ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()), 1..16),
            hostile in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()), 1..24),
            shuffle in any::<u64>(),
        ) {
            let (room, honest) = build(&ops);
            let mut alone = RoomDag::new(room);
            for e in &honest {
                let _ = alone.insert(e);
            }
            let mut mixed_events: Vec<Event> = honest.clone();
            mixed_events.extend(outsiders(room, &honest, &hostile));
            mixed_events.shuffle(&mut StdRng::seed_from_u64(shuffle));
            let mut mixed = RoomDag::new(room);
            for e in &mixed_events {
                let _ = mixed.insert(e);
            }
            // Honest events refused for a pending quota in this order are
            // offered again, as a peer's next anti-entropy round would.
            for e in &honest {
                let _ = mixed.insert(e);
            }
            prop_assert_eq!(alone.resolve().clone(), mixed.resolve().clone());
            prop_assert_eq!(alone.display_order(), mixed.display_order());
            prop_assert_eq!(alone.members(), mixed.members());
        }

        #[test]
        fn every_arrival_order_converges(
            ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()), 1..24),
            shuffle in any::<u64>(),
        ) {
            let (room, events) = build(&ops);
            // Admission refuses non-members' events whatever the order (an
            // event's causal past is fixed), so both DAGs admit the same
            // events and wait for the same ones.
            let mut d1 = RoomDag::new(room);
            let mut refused1 = BTreeSet::new();
            for e in &events {
                if d1.insert(e).is_err() {
                    refused1.insert(e.id());
                }
            }
            let mut shuffled = events.clone();
            shuffled.shuffle(&mut StdRng::seed_from_u64(shuffle));
            let mut d2 = RoomDag::new(room);
            for e in &shuffled {
                let _ = d2.insert(e);
            }
            prop_assert_eq!(d1.pending_len(), d2.pending_len());
            prop_assert_eq!(d1.len() + refused1.len() + d1.pending_len(), events.len());
            let r1 = d1.resolve().clone();
            let r2 = d2.resolve().clone();
            prop_assert_eq!(&r1, &r2);
            prop_assert_eq!(d1.display_order(), d2.display_order());
            prop_assert!(r1.state.len() <= meshrelay::room::ROOM_CAP);
            // Every member got in through a valid create or invite.
            for d in r1.state.members.keys() {
                let entered = events.iter().any(|e| {
                    r1.verdicts.get(&e.id()).is_some_and(|v| v.is_ok())
                        && matches!(Membership::from_bytes(e.payload()), Ok(Membership::Invite { card }) if card.device_id == *d)
                }) || events[0].sender() == *d;
                prop_assert!(entered);
            }
        }
    }
}

#[test]
fn long_membership_history_resolves() {
    // 600 membership events (invite/remove churn with concurrent branches):
    // resolution stays polynomial and deterministic.
    let a = Identity::from_seed(&[1; 32]);
    let others: Vec<Identity> = (10..40u8).map(|i| Identity::from_seed(&[i; 32])).collect();
    let nonce = [3; 16];
    let room = derive_room_id(&a.device_id(), &nonce);
    let mut dag = RoomDag::new(room);
    let mut seq = 0;
    let mut mk = |prev: Vec<EventId>, m: Membership, ts: u64| {
        seq += 1;
        UnsignedEvent {
            room,
            sender: a.device_id(),
            seq,
            prev,
            origin_ts_ms: ts,
            expires_ms: ts + DAY,
            kind: EventKind::Membership,
            payload: m.to_bytes(),
        }
        .sign(&a)
        .unwrap()
    };
    let card = ContactCard::create(&a, "A", T0).unwrap();
    let mut head = mk(vec![], Membership::Create { card, nonce }, T0);
    dag.insert(&head).unwrap();
    for i in 0..600u64 {
        let o = &others[i as usize % others.len()];
        let m = if (i / others.len() as u64).is_multiple_of(2) {
            Membership::Invite {
                card: ContactCard::create(o, "o", T0).unwrap(),
            }
        } else {
            Membership::Remove {
                target: o.device_id(),
            }
        };
        head = mk(dag.heads(), m, T0 + i);
        dag.insert(&head).unwrap();
    }
    let started = std::time::Instant::now();
    let res = dag.resolve().clone();
    eprintln!("resolved 601 membership events in {:?}", started.elapsed());
    assert_eq!(res.verdicts.len(), 601);
    assert!(res.verdicts.values().all(|v| v.is_ok()));
}

#[test]
fn room_cap_holds_when_partitions_merge() {
    // Two admins each invite 200 devices in separate partitions; after the
    // merge the room holds exactly ROOM_CAP devices on every node.
    let a = Identity::from_seed(&[1; 32]);
    let b = Identity::from_seed(&[2; 32]);
    let nonce = [5; 16];
    let room = derive_room_id(&a.device_id(), &nonce);
    let mut seqs = BTreeMap::new();
    let mut mk = |who: &Identity, prev: Vec<EventId>, m: Membership, ts: u64| {
        let s = seqs.entry(who.device_id()).or_insert(0u64);
        *s += 1;
        UnsignedEvent {
            room,
            sender: who.device_id(),
            seq: *s,
            prev,
            origin_ts_ms: ts,
            expires_ms: ts + DAY,
            kind: EventKind::Membership,
            payload: m.to_bytes(),
        }
        .sign(who)
        .unwrap()
    };
    let mut evs = Vec::new();
    let create = mk(
        &a,
        vec![],
        Membership::Create {
            card: ContactCard::create(&a, "A", T0).unwrap(),
            nonce,
        },
        T0,
    );
    let ib = mk(
        &a,
        vec![create.id()],
        Membership::Invite {
            card: ContactCard::create(&b, "B", T0).unwrap(),
        },
        T0 + 1,
    );
    let pb = mk(
        &a,
        vec![ib.id()],
        Membership::Promote {
            target: b.device_id(),
        },
        T0 + 2,
    );
    evs.extend([create, ib, pb.clone()]);
    let (mut ha, mut hb) = (pb.id(), pb.id());
    for i in 0..200u16 {
        for (who, head, base) in [(&a, &mut ha, 0u16), (&b, &mut hb, 200u16)] {
            let mut seed = [0u8; 32];
            seed[..2].copy_from_slice(&(base + i + 100).to_be_bytes());
            seed[2] = 0x77;
            let x = Identity::from_seed(&seed);
            let e = mk(
                who,
                vec![*head],
                Membership::Invite {
                    card: ContactCard::create(&x, "x", T0).unwrap(),
                },
                T0 + 10 + i as u64,
            );
            *head = e.id();
            evs.push(e);
        }
    }
    let mut d1 = RoomDag::new(room);
    let mut d2 = RoomDag::new(room);
    for e in &evs {
        d1.insert(e).unwrap();
    }
    // Newest first: events over the pending quotas of senders without
    // standing yet are refused for now and accepted when offered again.
    for e in evs.iter().rev() {
        let _ = d2.insert(e);
    }
    for e in &evs {
        d2.insert(e).unwrap();
    }
    let m1 = d1.members();
    assert_eq!(m1.len(), meshrelay::room::ROOM_CAP);
    assert_eq!(m1, d2.members());
}

mod session {
    //! The same flows through `RoomSession`, the API the node and CLI use.
    use super::*;
    use meshrelay::room::{Content, Received, RoomSession};

    struct Node {
        id: Identity,
        card: ContactCard,
        prekeys: PrekeyRing,
        rng: StdRng,
        session: Option<RoomSession>,
        store: BTreeMap<EventId, Event>,
        keys_on_disk: Vec<u8>,
    }

    impl Node {
        fn new(seed: u8) -> Self {
            let id = Identity::from_seed(&[seed; 32]);
            let card = ContactCard::create(&id, "n", T0).unwrap();
            let prekeys = PrekeyRing::from_identity(&id, T0);
            Node {
                id,
                card,
                prekeys,
                rng: StdRng::seed_from_u64(seed as u64 + 100),
                session: None,
                store: BTreeMap::new(),
                keys_on_disk: Vec::new(),
            }
        }

        /// Persist keys, store events, then "transmit" (return them).
        fn commit(&mut self, out: meshrelay::room::Outgoing) -> Vec<Event> {
            self.keys_on_disk = out.keys().to_vec();
            let evs = out.release();
            for e in &evs {
                self.store.insert(e.id(), e.clone());
            }
            evs
        }

        /// Creates a room (nonce `[n; 16]`) and keeps its session.
        fn create(&mut self, n: u8) {
            let (s, out) =
                RoomSession::create(&self.id, &self.card, [n; 16], T0, &mut self.rng).unwrap();
            self.session = Some(s);
            self.commit(out);
        }

        /// Makes a membership change at `at` and commits it.
        fn change(&mut self, m: Membership, at: u64) -> Vec<Event> {
            let out = self
                .session
                .as_mut()
                .unwrap()
                .change(&self.id, m, at, &mut self.rng)
                .unwrap();
            self.commit(out)
        }

        fn texts_from(&mut self, bundle_bytes: &[u8]) -> Vec<Received> {
            let store = &self.store;
            let rep =
                bundle::import(bundle_bytes, T0 + DAY, None, |i| store.contains_key(i)).unwrap();
            let mut out = Vec::new();
            for ev in rep.imported {
                let s = self
                    .session
                    .get_or_insert_with(|| RoomSession::new(ev.room(), self.id.device_id()));
                out.extend(s.receive(&self.prekeys, &ev).unwrap());
                self.store.insert(ev.id(), ev);
            }
            self.keys_on_disk = self.session.as_ref().unwrap().keys_bytes().to_vec();
            out
        }

        fn bundle(&self) -> Vec<u8> {
            bundle::export(self.store.values(), T0)
        }
    }

    fn texts(r: &[Received]) -> Vec<String> {
        r.iter()
            .filter_map(|x| match x {
                Received::Message {
                    content: Content::Text(t),
                    ..
                } => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    fn undecryptable(r: &[Received]) -> usize {
        r.iter()
            .filter(|x| matches!(x, Received::Undecryptable { .. }))
            .count()
    }

    /// The names a session reads in its roster, by device.
    fn names_in(s: &mut RoomSession) -> BTreeMap<DeviceId, Option<String>> {
        s.members()
            .members
            .into_values()
            .map(|m| (m.device, m.card.map(|c| c.name)))
            .collect()
    }

    fn roster_names(n: &mut Node) -> BTreeMap<DeviceId, Option<String>> {
        names_in(n.session.as_mut().unwrap())
    }

    fn named(seed: u8, name: &str) -> Node {
        let mut n = Node::new(seed);
        n.card = ContactCard::create(&n.id, name, T0).unwrap();
        n
    }

    #[test]
    fn the_roster_is_sealed_to_members_and_read_from_the_invite() {
        let (mut a, mut b, mut carrier) = (
            named(21, "Ana Fieldlead"),
            named(22, "Bo Rescuer"),
            named(23, "Cy Courier"),
        );
        a.create(21);
        a.change(
            Membership::Invite {
                card: b.card.clone(),
            },
            T0 + 1,
        );
        let bundle = a.bundle();
        // What a relay or the homeserver carries names nobody.
        for name in ["Ana Fieldlead", "Bo Rescuer"] {
            assert!(
                !bundle.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} readable in the carried events"
            );
        }
        for ev in a
            .store
            .values()
            .filter(|e| e.kind() == EventKind::Membership)
        {
            let m = Membership::from_bytes(ev.payload()).unwrap();
            assert!(
                m.clear_card().is_none() && m.sealed_card().is_some(),
                "{m:?}"
            );
        }
        let want: BTreeMap<DeviceId, Option<String>> = [
            (a.id.device_id(), Some("Ana Fieldlead".to_owned())),
            (b.id.device_id(), Some("Bo Rescuer".to_owned())),
        ]
        .into();
        assert_eq!(roster_names(&mut a), want);

        // B reads the whole roster from its invite.
        b.texts_from(&bundle);
        assert_eq!(roster_names(&mut b), want);
        // ... and again after a restart, from its persisted room keys.
        let room = a.session.as_ref().unwrap().room();
        let mut restored =
            RoomSession::restore(room, b.id.device_id(), &b.keys_on_disk, b.store.values())
                .unwrap();
        assert_eq!(names_in(&mut restored), want);

        // A carrier holds the same room and reaches the same membership,
        // without a single card.
        carrier.texts_from(&bundle);
        let carried = roster_names(&mut carrier);
        assert_eq!(
            carried.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        assert!(carried.values().all(Option::is_none), "{carried:?}");
    }

    #[test]
    fn a_removed_member_cannot_read_the_cards_of_members_invited_after() {
        let (mut a, mut m, mut b, mut lee) = (
            named(41, "Ana"),
            named(42, "Mo Removed"),
            named(43, "Bo"),
            named(44, "Lee Later"),
        );
        a.create(41);
        for (i, card) in [m.card.clone(), b.card.clone()].into_iter().enumerate() {
            a.change(Membership::Invite { card }, T0 + 1 + i as u64);
        }
        m.texts_from(&a.bundle());
        b.texts_from(&a.bundle());
        let before = a.session.as_ref().unwrap().keys_bytes().to_vec();
        let rotations = |keys: &[u8]| {
            meshrelay::room::RoomKeys::from_bytes(keys)
                .unwrap()
                .roster
                .len()
        };
        assert_eq!(rotations(&before), 1);
        // A removes M: A's new chain carries a new roster secret, and the
        // next invite is sealed under it.
        a.change(
            Membership::Remove {
                target: m.id.device_id(),
            },
            T0 + 5,
        );
        assert_eq!(rotations(&a.keys_on_disk), 2);
        a.change(
            Membership::Invite {
                card: lee.card.clone(),
            },
            T0 + 6,
        );
        let bundle = a.bundle();
        // M still receives the room's events (it may carry them): it
        // reads no card of Lee's.
        m.texts_from(&bundle);
        assert_eq!(roster_names(&mut m).get(&lee.id.device_id()), Some(&None));
        // B learnt the rotation from A's key share and reads Lee's card,
        // also after a restart.
        b.texts_from(&bundle);
        assert_eq!(
            roster_names(&mut b)[&lee.id.device_id()].as_deref(),
            Some("Lee Later")
        );
        let room = a.session.as_ref().unwrap().room();
        let mut restored =
            RoomSession::restore(room, b.id.device_id(), &b.keys_on_disk, b.store.values())
                .unwrap();
        assert_eq!(names_in(&mut restored), roster_names(&mut b));
        // Lee reads every card from its invite: both secrets came with it.
        lee.texts_from(&bundle);
        let at_lee = roster_names(&mut lee);
        assert_eq!(at_lee.len(), 3);
        assert!(at_lee.values().all(Option::is_some), "{at_lee:?}");

        // B, promoted, sees Lee leave; B's next invite first rotates too.
        a.change(
            Membership::Promote {
                target: b.id.device_id(),
            },
            T0 + 7,
        );
        b.texts_from(&a.bundle());
        lee.change(Membership::Leave, T0 + 8);
        b.texts_from(&lee.bundle());
        let mut dee = named(45, "Dee Newest");
        b.change(
            Membership::Invite {
                card: dee.card.clone(),
            },
            T0 + 9,
        );
        assert_eq!(rotations(&b.keys_on_disk), 3);
        lee.texts_from(&b.bundle());
        assert_eq!(roster_names(&mut lee).get(&dee.id.device_id()), Some(&None));
        a.texts_from(&b.bundle());
        assert_eq!(
            roster_names(&mut a)[&dee.id.device_id()].as_deref(),
            Some("Dee Newest")
        );
        dee.texts_from(&b.bundle());
        assert!(roster_names(&mut dee).values().all(Option::is_some));
    }

    #[test]
    fn an_invite_cannot_hand_over_a_roster_secret_of_its_own() {
        // A promotes B; B invites D with a secret of B's making. D keeps the
        // invite's effect (it is a member) but takes no secret that does not
        // open the creator's card, so it reads no card B could have forged.
        let (mut a, mut b, mut d) = (Node::new(31), Node::new(32), Node::new(34));
        a.create(31);
        for (i, change) in [
            Membership::Invite {
                card: b.card.clone(),
            },
            Membership::Promote {
                target: b.id.device_id(),
            },
        ]
        .into_iter()
        .enumerate()
        {
            a.change(change, T0 + 1 + i as u64);
        }
        b.texts_from(&a.bundle());
        let room = a.session.as_ref().unwrap().room();
        let own = meshrelay::crypto::roster::RosterSecret::generate(&mut b.rng);
        let to = meshrelay::crypto::key_share::Recipient {
            device: d.id.device_id(),
            prekey_id: d.card.prekey_id,
            prekey: d.card.prekey,
        };
        let forged = Membership::InviteSealed {
            invitee: d.id.device_id(),
            card: meshrelay::crypto::roster::SealedCard::seal(&own, &room, &d.card, &mut b.rng)
                .unwrap(),
            secret: meshrelay::crypto::roster::SealedSecret::seal(
                std::slice::from_ref(&own),
                &room,
                &b.id.device_id(),
                &to,
                &mut b.rng,
            )
            .unwrap(),
        };
        b.change(forged, T0 + 5);
        d.texts_from(&b.bundle());
        let names = roster_names(&mut d);
        assert!(names.contains_key(&d.id.device_id()));
        assert!(names.values().all(Option::is_none), "{names:?}");
        // A still reads the members it sealed; D's card (sealed under B's
        // secret) stays unread everywhere.
        a.texts_from(&b.bundle());
        let at_a = roster_names(&mut a);
        assert_eq!(at_a[&a.id.device_id()].as_deref(), Some("n"));
        assert_eq!(at_a[&d.id.device_id()], None);
    }

    #[test]
    fn every_remaining_sender_rotates_after_a_removal() {
        let (mut a, mut b, mut c) = (Node::new(1), Node::new(2), Node::new(3));
        a.create(1);
        for card in [b.card.clone(), c.card.clone()] {
            a.change(Membership::Invite { card }, T0 + 1);
        }
        let out = a
            .session
            .as_mut()
            .unwrap()
            .send(
                &a.id,
                &Content::RoomName("field team".into()),
                T0 + 2,
                &mut a.rng,
            )
            .unwrap();
        a.commit(out);
        let out = a
            .session
            .as_mut()
            .unwrap()
            .send(&a.id, &Content::Text("hi all".into()), T0 + 3, &mut a.rng)
            .unwrap();
        a.commit(out);
        let rb = b.texts_from(&a.bundle());
        let rc = c.texts_from(&a.bundle());
        assert_eq!(texts(&rb), vec!["hi all"]);
        assert_eq!(texts(&rc), vec!["hi all"]);
        assert!(rb.iter().any(|r| matches!(r, Received::Message { content: Content::RoomName(n), .. } if n == "field team")));

        // B speaks: its first message starts B's chain, shared with A and C.
        let out = b
            .session
            .as_mut()
            .unwrap()
            .send(&b.id, &Content::Text("B here".into()), T0 + 4, &mut b.rng)
            .unwrap();
        b.commit(out);
        assert_eq!(texts(&c.texts_from(&b.bundle())), vec!["B here"]);
        assert_eq!(texts(&a.texts_from(&b.bundle())), vec!["B here"]);

        // A removes C and rotates; B learns of the removal and rotates too.
        let cme = c.id.device_id();
        a.change(Membership::Remove { target: cme }, T0 + 5);
        let out = a
            .session
            .as_mut()
            .unwrap()
            .send(
                &a.id,
                &Content::Text("without C".into()),
                T0 + 6,
                &mut a.rng,
            )
            .unwrap();
        a.commit(out);
        let rb = b.texts_from(&a.bundle());
        assert_eq!(texts(&rb), vec!["without C"]);
        let out = b
            .session
            .as_mut()
            .unwrap()
            .send(
                &b.id,
                &Content::Text("B without C".into()),
                T0 + 7,
                &mut b.rng,
            )
            .unwrap();
        b.commit(out);
        assert_eq!(texts(&a.texts_from(&b.bundle())), vec!["B without C"]);
        let rc = c.texts_from(&a.bundle());
        let rc2 = c.texts_from(&b.bundle());
        assert!(texts(&rc).is_empty() && texts(&rc2).is_empty());
        assert_eq!(undecryptable(&rc) + undecryptable(&rc2), 2);
        assert!(!c.session.as_mut().unwrap().members().is_member(&cme));

        // A invites C back; B (who already has a chain) shares it with C
        // before its next message, so C reads B from then on.
        a.change(
            Membership::Invite {
                card: c.card.clone(),
            },
            T0 + 8,
        );
        b.texts_from(&a.bundle());
        let out = b
            .session
            .as_mut()
            .unwrap()
            .send(
                &b.id,
                &Content::Text("welcome back".into()),
                T0 + 9,
                &mut b.rng,
            )
            .unwrap();
        b.commit(out);
        c.texts_from(&a.bundle());
        assert_eq!(texts(&c.texts_from(&b.bundle())), vec!["welcome back"]);
        let c_me = c.id.device_id();
        a.change(Membership::Remove { target: c_me }, T0 + 10);

        // A restarts from its store and persisted keys and keeps going.
        let room = a.session.as_ref().unwrap().room();
        let mut restored =
            RoomSession::restore(room, a.id.device_id(), &a.keys_on_disk, a.store.values())
                .unwrap();
        let out = restored
            .send(
                &a.id,
                &Content::Text("after restart".into()),
                T0 + 11,
                &mut a.rng,
            )
            .unwrap();
        a.session = Some(restored);
        a.commit(out);
        assert_eq!(texts(&b.texts_from(&a.bundle())), vec!["after restart"]);
        // C, removed, cannot change the room any more.
        c.texts_from(&a.bundle());
        assert!(!c.session.as_mut().unwrap().members().is_member(&c_me));
        let err = c.session.as_mut().unwrap().send(
            &c.id,
            &Content::Text("x".into()),
            T0 + 12,
            &mut c.rng,
        );
        assert!(err.is_err());
    }

    /// A rebuild that leaves out this device's newest event (waiting for
    /// a predecessor the store lost, or staged and not received yet) would
    /// take its sequence number again, and the copy with the lower ID
    /// would displace the other at every member as a fork. The device
    /// continues above the store's high-water mark instead.
    #[test]
    fn a_rebuild_missing_an_own_event_never_reuses_its_sequence_number() {
        let mut a = Node::new(1);
        a.create(1);
        let room = a.session.as_ref().unwrap().room();
        let send = |a: &mut Node, s: &mut RoomSession, text: &str, at: u64| {
            let out = s
                .send(&a.id, &Content::Text(text.into()), at, &mut a.rng)
                .unwrap();
            a.commit(out)
        };
        let mut s = a.session.take().unwrap();
        send(&mut a, &mut s, "one", T0 + 1);
        send(&mut a, &mut s, "two", T0 + 2);
        let me = a.id.device_id();
        let newest = a
            .store
            .values()
            .filter(|e| e.sender() == me)
            .map(Event::seq)
            .max()
            .unwrap();
        // Restored from every stored event but the newest: alone, the
        // rebuild would take its number again.
        let kept: Vec<Event> = a
            .store
            .values()
            .filter(|e| e.seq() != newest)
            .cloned()
            .collect();
        let mut restored = RoomSession::restore(room, me, &a.keys_on_disk, &kept).unwrap();
        assert_eq!(restored.dag().max_seq(&me) + 1, newest);
        restored.continue_after(newest);
        let three = send(&mut a, &mut restored, "three", T0 + 3);
        assert!(
            three.iter().all(|e| e.seq() > newest),
            "sequence numbers {:?} reuse {newest}",
            three.iter().map(Event::seq).collect::<Vec<_>>()
        );
    }

    #[test]
    fn restored_copy_that_sees_its_own_sequence_used_starts_a_new_chain() {
        let (mut a, mut b) = (Node::new(1), Node::new(2));
        a.create(4);
        a.change(
            Membership::Invite {
                card: b.card.clone(),
            },
            T0 + 1,
        );
        let out = a
            .session
            .as_mut()
            .unwrap()
            .send(&a.id, &Content::Text("one".into()), T0 + 2, &mut a.rng)
            .unwrap();
        a.commit(out);
        // The data directory is copied here (store + persisted keys).
        let room = a.session.as_ref().unwrap().room();
        let copy_store = a.store.clone();
        let copy_keys = a.keys_on_disk.clone();
        // The original keeps sending.
        let out = a
            .session
            .as_mut()
            .unwrap()
            .send(&a.id, &Content::Text("two".into()), T0 + 3, &mut a.rng)
            .unwrap();
        let two = a.commit(out);
        // The copy comes up and hears the original's newer events first.
        let mut copy =
            RoomSession::restore(room, a.id.device_id(), &copy_keys, copy_store.values()).unwrap();
        let old_chain = !copy.dag().admitted(&two[0].id());
        assert!(old_chain);
        for e in &two {
            copy.receive(&a.prekeys, e).unwrap();
        }
        let out = copy
            .send(
                &a.id,
                &Content::Text("from the copy".into()),
                T0 + 4,
                &mut StdRng::seed_from_u64(77),
            )
            .unwrap();
        let from_copy = out.release();
        // It started (and shared) a new chain and numbered above the original.
        assert!(from_copy.iter().any(|e| e.kind() == EventKind::KeyShare));
        let msg = from_copy
            .iter()
            .find(|e| e.kind() == EventKind::Message)
            .unwrap();
        assert!(msg.seq() > two.iter().map(|e| e.seq()).max().unwrap());
        let p_two = MessagePayload::from_bytes(
            two.iter()
                .find(|e| e.kind() == EventKind::Message)
                .unwrap()
                .payload(),
        )
        .unwrap();
        let p_copy = MessagePayload::from_bytes(msg.payload()).unwrap();
        assert_ne!(p_two.chain_id, p_copy.chain_id);
        // B reads both the original and the copy.
        b.texts_from(&a.bundle());
        let mut got = Vec::new();
        for e in &from_copy {
            got.extend(b.session.as_mut().unwrap().receive(&b.prekeys, e).unwrap());
        }
        assert_eq!(texts(&got), vec!["from the copy"]);
        assert!(b.session.as_mut().unwrap().dag().forks().is_empty());
    }
}

/// `protocol-spec/attachments.md` §5: a chunk hangs off exactly one message
/// of its own sender, and nothing cites a chunk.
#[test]
fn chunks_hang_off_their_senders_message_and_are_never_cited() {
    use meshrelay::room::attachment::{ChunkBody, seal_chunks, seal_file};
    let (mut a, b, _) = abc();
    a.create_room();
    let invite = a.membership(Membership::Invite { card: card_of(&b) });
    let photo = a.send("a photo");
    let file = vec![5u8; 20_000];
    let ann = seal_file(&file, "p.jpg", "image/jpeg", &mut a.rng).unwrap();
    let chunks = seal_chunks(&ann, &photo.id(), &file).unwrap();
    let chunk_event = |d: &mut Dev, signer: &Identity, prev: Vec<EventId>, body: &ChunkBody| {
        let now = d.tick();
        let dag = d.dag.as_mut().unwrap();
        UnsignedEvent {
            room: d.room.unwrap(),
            sender: signer.device_id(),
            seq: dag.max_seq(&signer.device_id()) + 1,
            prev,
            origin_ts_ms: now,
            expires_ms: now + 14 * DAY,
            kind: EventKind::Chunk,
            payload: body.to_bytes(),
        }
        .sign(signer)
        .unwrap()
    };
    let id_a = Identity::from_seed(&[1; 32]);
    let good = chunk_event(&mut a, &id_a, vec![photo.id()], &chunks[0]);
    assert!(matches!(
        a.dag().insert(&good).unwrap(),
        Inserted::Accepted(_)
    ));
    // Refused: citing a membership event, citing two events, framing that
    // names another event, and another sender's chunk of A's message.
    let refusals = [
        chunk_event(&mut a, &id_a, vec![invite.id()], &chunks[1]),
        chunk_event(&mut a, &id_a, vec![photo.id(), invite.id()], &chunks[1]),
        chunk_event(
            &mut a,
            &id_a,
            vec![photo.id()],
            &ChunkBody {
                file: invite.id(),
                ..chunks[1].clone()
            },
        ),
        chunk_event(&mut a, &b.id, vec![photo.id()], &chunks[1]),
    ];
    for ev in &refusals {
        let r = a.dag().insert(ev);
        assert!(
            matches!(r, Err(DagError::Chunk(_)) | Err(DagError::NotAuthorized(_))),
            "{r:?}"
        );
    }
    // The chunk is held for its message, and nothing will cite it.
    assert_eq!(a.dag().chunks_of(&photo.id(), 10), vec![good.id()]);
    assert_eq!(a.dag().heads(), vec![photo.id()]);
    let next = a.send("after the photo");
    assert_eq!(next.prev(), &[photo.id()]);
}

/// A rebuild reads stored events in (time, ID) order, which is not causal
/// when events share a millisecond. Here the creator's events come before
/// its create and exceed the strangers' pending quota, so the invite that
/// gives Bo standing is only admitted in the second pass; Bo's messages
/// the quota refused in the first pass must still be offered in the third
/// (they were left out as "no standing", and members never showed them).
#[test]
fn a_rebuild_admits_a_member_whose_standing_comes_in_a_later_pass() {
    use meshrelay::room::{MAX_PENDING_PER_STRANGER, RoomSession};
    let (mut a, mut b, _) = abc();
    let room = a.create_room();
    // The only event so far.
    let create = a.events.values().next().unwrap().clone();
    a.membership(Membership::Invite { card: card_of(&b) });
    let n = MAX_PENDING_PER_STRANGER + 4;
    for k in 0..n {
        a.emit(EventKind::Message, format!("a{k}").into_bytes());
    }
    b.import(&a.export());
    let mut from_b = Vec::new();
    for k in 0..n {
        from_b.push(b.emit(EventKind::Message, format!("b{k}").into_bytes()));
    }
    // The creator's messages, then its invite, then Bo's, the create last.
    let mut order: Vec<&Event> = a
        .events
        .values()
        .filter(|e| e.kind() == EventKind::Message)
        .collect();
    order.sort_by_key(|e| e.seq());
    order.extend(
        a.events
            .values()
            .filter(|e| e.kind() == EventKind::Membership && e.id() != create.id()),
    );
    order.extend(from_b.iter());
    order.push(&create);
    let keys = RoomKeys::new(room).to_bytes();
    let mut s = RoomSession::restore(room, a.me(), &keys, order).unwrap();
    assert_eq!(s.dropped(), 0, "{:?}", s.dropped_events());
    for e in &from_b {
        assert!(s.dag().contains(&e.id()), "Bo's seq {} left out", e.seq());
    }
}
