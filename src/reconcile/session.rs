//! The two-party reconciliation session state machine.

use std::collections::BTreeMap;

use super::estimate;
use super::riblt::{Decoder, Encoder, PeelError};
use super::{
    DOUBLING_BELOW, FAIL_INCONSISTENT, FAIL_TOO_MANY_DIFFERENCES, Item, ItemHash, MAX_DIFFERENCES,
    MAX_SESSION_SYMBOLS, MAX_SYMBOLS_PER_MESSAGE, MIN_MORE_SYMBOLS, Message, Part, ReconcileError,
    SKETCH_COUNTERS, SPLIT_ESTIMATE_ABOVE, SYMBOL_SLACK, SYMBOLS_PER_DIFFERENCE, ShortId,
    item_hash, set_fingerprint,
};
use crate::event::RoomId;

/// Which side of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent `Init`, encodes symbols.
    Initiator,
    /// Answered `Init`, decodes.
    Responder,
}

/// What a finished session learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Local items the peer lacks, sorted: send these events.
    pub peer_lacks: Vec<Item>,
    /// Short IDs of peer items this side lacks, sorted: the peer will send
    /// them (their count tells the Node how many events to expect).
    pub i_lack: Vec<ShortId>,
    /// Whether the session failed (then both lists are empty): a `FAIL_*` code.
    pub failed: Option<u64>,
    /// The initiator's estimate of the difference size, when the session
    /// failed early because the estimate was above [`SPLIT_ESTIMATE_ABOVE`]
    /// (the Node splits the slice that many ways at once).
    pub estimate: Option<u64>,
}

#[derive(Debug)]
enum State {
    /// Initiator waiting for `Equal`, `Sketch` or `Failed`.
    AwaitSketch,
    /// Initiator streaming symbols.
    Encoding { encoder: Encoder, sent: usize },
    /// Responder decoding.
    Decoding {
        decoder: Box<Decoder>,
        peer_count: u64,
    },
    /// Over.
    Done(Outcome),
}

/// A reconciliation session over one room's item set (see the module docs).
#[derive(Debug)]
pub struct Session {
    role: Role,
    room: RoomId,
    part: Part,
    salt: [u8; 8],
    items: Vec<Item>,
    hashes: Vec<ItemHash>,
    state: State,
}

fn by_short(items: &[Item], hashes: &[ItemHash]) -> BTreeMap<ShortId, Item> {
    hashes
        .iter()
        .map(|h| h.short)
        .zip(items.iter().copied())
        .collect()
}

impl Session {
    /// Starts a session as initiator over `items` (any order; duplicates
    /// removed) with a fresh random `salt` drawn by the caller. Returns the
    /// session and the `Init` message to send.
    pub fn initiate(room: RoomId, items: Vec<Item>, salt: [u8; 8]) -> (Session, Message) {
        Session::initiate_part(room, Part::WHOLE, items, salt)
    }

    /// [`Session::initiate`] over one slice of the room's set: the caller
    /// passes only the items `part` contains.
    pub fn initiate_part(
        room: RoomId,
        part: Part,
        mut items: Vec<Item>,
        salt: [u8; 8],
    ) -> (Session, Message) {
        items.sort_unstable();
        items.dedup();
        let msg = Message::Init {
            room,
            part,
            salt,
            count: items.len() as u64,
            fingerprint: set_fingerprint(&items),
        };
        let s = Session {
            role: Role::Initiator,
            room,
            part,
            salt,
            items,
            hashes: Vec::new(),
            state: State::AwaitSketch,
        };
        (s, msg)
    }

    /// Answers a received `Init` with the local `items` of its room. Returns
    /// `None` if `init` is not an `Init` message.
    pub fn respond(mut items: Vec<Item>, init: &Message) -> Option<(Session, Vec<Message>)> {
        let Message::Init {
            room,
            part,
            salt,
            count,
            fingerprint,
        } = init
        else {
            return None;
        };
        items.sort_unstable();
        items.dedup();
        let mut s = Session {
            role: Role::Responder,
            room: *room,
            part: *part,
            salt: *salt,
            items,
            hashes: Vec::new(),
            state: State::Done(Outcome::default()),
        };
        if *count == s.items.len() as u64 && *fingerprint == set_fingerprint(&s.items) {
            return Some((s, vec![Message::Equal]));
        }
        s.hash_items();
        let sketch = estimate::sketch(&s.hashes);
        let decoder = Decoder::new(s.hashes.iter().map(|h| h.short).collect(), MAX_DIFFERENCES);
        s.state = State::Decoding {
            decoder: Box::new(decoder),
            peer_count: *count,
        };
        let reply = Message::Sketch {
            count: s.items.len() as u64,
            counters: sketch,
        };
        Some((s, vec![reply]))
    }

    fn hash_items(&mut self) {
        self.hashes = self
            .items
            .iter()
            .map(|i| item_hash(&self.salt, i))
            .collect();
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The room being reconciled.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// The slice of the room's set being reconciled.
    pub fn part(&self) -> Part {
        self.part
    }

    /// How many items this side's set holds (what the session keeps in
    /// memory grows with it).
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// This side's set (sorted), taken out of a finished session.
    pub fn take_items(&mut self) -> Vec<Item> {
        std::mem::take(&mut self.items)
    }

    /// The result, once the session is over.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the session is over.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    fn finish(&mut self, o: Outcome) {
        self.state = State::Done(o);
    }

    fn fail(&mut self, reason: u64) -> Vec<Message> {
        self.finish(Outcome {
            failed: Some(reason),
            ..Outcome::default()
        });
        vec![Message::Failed { reason }]
    }

    /// Feeds one message from the peer; returns the messages to send back.
    /// An `Err` ends the session (the peer misbehaved); the caller should
    /// penalise the link.
    pub fn handle(&mut self, msg: Message) -> Result<Vec<Message>, ReconcileError> {
        let r = self.handle_inner(msg);
        if r.is_err() {
            self.finish(Outcome {
                failed: Some(FAIL_INCONSISTENT),
                ..Outcome::default()
            });
        }
        r
    }

    fn handle_inner(&mut self, msg: Message) -> Result<Vec<Message>, ReconcileError> {
        if self.is_done() {
            return Err(ReconcileError::Finished);
        }
        match (self.role, msg) {
            (_, Message::Failed { reason }) => {
                self.finish(Outcome {
                    failed: Some(reason),
                    ..Outcome::default()
                });
                Ok(Vec::new())
            }
            (Role::Initiator, Message::Equal) => match self.state {
                State::AwaitSketch => {
                    self.finish(Outcome::default());
                    Ok(Vec::new())
                }
                _ => Err(ReconcileError::Unexpected("Equal")),
            },
            (Role::Initiator, Message::Sketch { count, counters }) => {
                if !matches!(self.state, State::AwaitSketch) {
                    return Err(ReconcileError::Unexpected("Sketch"));
                }
                if counters.len() != SKETCH_COUNTERS {
                    return Err(ReconcileError::BadSketch(counters.len()));
                }
                self.hash_items();
                let mine = estimate::sketch(&self.hashes);
                let d = estimate::estimate(&mine, self.items.len() as u64, &counters, count);
                if d > SPLIT_ESTIMATE_ABOVE {
                    // Too many for one session: say so before any symbol
                    // is spent, so the slices can be sized from `d`.
                    let reply = self.fail(FAIL_TOO_MANY_DIFFERENCES);
                    if let State::Done(o) = &mut self.state {
                        o.estimate = Some(d);
                    }
                    return Ok(reply);
                }
                let want = (d as f64 * SYMBOLS_PER_DIFFERENCE).ceil() as usize + SYMBOL_SLACK;
                let first = want.min(MAX_SYMBOLS_PER_MESSAGE).min(MAX_SESSION_SYMBOLS);
                let mut encoder = Encoder::new(self.hashes.iter().map(|h| h.short));
                let symbols = encoder.next_symbols(first);
                self.state = State::Encoding {
                    encoder,
                    sent: first,
                };
                Ok(vec![Message::Symbols { start: 0, symbols }])
            }
            (Role::Initiator, Message::More { count }) => {
                let State::Encoding { encoder, sent } = &mut self.state else {
                    return Err(ReconcileError::Unexpected("More"));
                };
                let n = usize::try_from(count).unwrap_or(usize::MAX);
                if n == 0 || n > MAX_SYMBOLS_PER_MESSAGE || *sent + n > MAX_SESSION_SYMBOLS {
                    return Err(ReconcileError::TooManySymbols(count));
                }
                let start = *sent as u64;
                *sent += n;
                Ok(vec![Message::Symbols {
                    start,
                    symbols: encoder.next_symbols(n),
                }])
            }
            (Role::Initiator, Message::Decoded { you_lack, i_lack }) => {
                if !matches!(self.state, State::Encoding { .. }) {
                    return Err(ReconcileError::Unexpected("Decoded"));
                }
                if you_lack.len() + i_lack.len() > MAX_DIFFERENCES {
                    return Err(ReconcileError::TooManyDifferences);
                }
                let mut map = by_short(&self.items, &self.hashes);
                let mut peer_lacks = Vec::with_capacity(i_lack.len());
                for s in &i_lack {
                    // Removing makes a repeated ID fail as unknown.
                    match map.remove(s) {
                        Some(it) => peer_lacks.push(it),
                        None => return Err(ReconcileError::UnknownShortId(*s)),
                    }
                }
                if let Some(s) = you_lack.iter().find(|s| map.contains_key(s)) {
                    // The peer claims we lack an item we hold.
                    return Err(ReconcileError::UnknownShortId(*s));
                }
                peer_lacks.sort_unstable();
                let mut i_lack_sorted = you_lack;
                i_lack_sorted.sort_unstable();
                if i_lack_sorted.windows(2).any(|w| w[0] == w[1]) {
                    return Err(ReconcileError::TooManyDifferences);
                }
                self.finish(Outcome {
                    peer_lacks,
                    i_lack: i_lack_sorted,
                    failed: None,
                    estimate: None,
                });
                Ok(Vec::new())
            }
            (Role::Responder, Message::Symbols { start, symbols }) => {
                let State::Decoding {
                    decoder,
                    peer_count,
                } = &mut self.state
                else {
                    return Err(ReconcileError::Unexpected("Symbols"));
                };
                let expected = decoder.received() as u64;
                if start != expected {
                    return Err(ReconcileError::OutOfOrder {
                        expected,
                        got: start,
                    });
                }
                if decoder.received() + symbols.len() > MAX_SESSION_SYMBOLS {
                    return Ok(self.fail(FAIL_TOO_MANY_DIFFERENCES));
                }
                match decoder.add_symbols(&symbols) {
                    Ok(()) => {}
                    Err(PeelError::TooManyDifferences) => {
                        return Ok(self.fail(FAIL_TOO_MANY_DIFFERENCES));
                    }
                    Err(PeelError::Inconsistent) => return Ok(self.fail(FAIL_INCONSISTENT)),
                }
                let peer_count = *peer_count;
                if decoder.is_decoded() {
                    let mine = self.items.len() as u64;
                    let remote = decoder.remote_only().len() as u64;
                    let local = decoder.local_only().len() as u64;
                    // |peer| - |mine| must equal |peer only| - |mine only|.
                    if peer_count.wrapping_sub(mine) != remote.wrapping_sub(local) {
                        return Ok(self.fail(FAIL_INCONSISTENT));
                    }
                    let mut you_lack = decoder.local_only().to_vec();
                    you_lack.sort_unstable();
                    let mut i_lack = decoder.remote_only().to_vec();
                    i_lack.sort_unstable();
                    let map = by_short(&self.items, &self.hashes);
                    let mut peer_lacks: Vec<Item> = you_lack
                        .iter()
                        .filter_map(|s| map.get(s).copied())
                        .collect();
                    peer_lacks.sort_unstable();
                    self.finish(Outcome {
                        peer_lacks,
                        i_lack: i_lack.clone(),
                        failed: None,
                        estimate: None,
                    });
                    return Ok(vec![Message::Decoded { you_lack, i_lack }]);
                }
                let received = decoder.received();
                if received >= MAX_SESSION_SYMBOLS {
                    return Ok(self.fail(FAIL_TOO_MANY_DIFFERENCES));
                }
                let peeled = (decoder.local_only().len() + decoder.remote_only().len()) as u64;
                let total = peeled + decoder.estimate_remaining();
                let target = (total as f64 * SYMBOLS_PER_DIFFERENCE).ceil() as usize + SYMBOL_SLACK;
                let cap = MAX_SYMBOLS_PER_MESSAGE.min(MAX_SESSION_SYMBOLS - received);
                let more = target
                    .saturating_sub(received)
                    .max(if received < DOUBLING_BELOW {
                        received
                    } else {
                        received / 2
                    })
                    .max(MIN_MORE_SYMBOLS)
                    .min(cap);
                Ok(vec![Message::More { count: more as u64 }])
            }
            (_, Message::Init { .. }) => Err(ReconcileError::Unexpected("Init")),
            (_, Message::Sketch { .. }) => Err(ReconcileError::Unexpected("Sketch")),
            (_, Message::Symbols { .. }) => Err(ReconcileError::Unexpected("Symbols")),
            (_, Message::More { .. }) => Err(ReconcileError::Unexpected("More")),
            (_, Message::Equal) => Err(ReconcileError::Unexpected("Equal")),
            (_, Message::Decoded { .. }) => Err(ReconcileError::Unexpected("Decoded")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;
    use crate::reconcile::Symbol;
    use crate::reconcile::riblt::mix64;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn item(i: u64) -> Item {
        let mut id = [0u8; 32];
        for (k, c) in id.chunks_mut(8).enumerate() {
            c.copy_from_slice(&mix64(i.wrapping_mul(4).wrapping_add(k as u64)).to_be_bytes());
        }
        Item {
            ts_ms: 1_700_000_000_000 + i * 1000,
            id: EventId(id),
        }
    }

    /// Runs a session pair to completion; returns (initiator, responder, flights).
    fn run(a: &[Item], b: &[Item], salt: u64) -> (Outcome, Outcome, usize) {
        let (mut ini, init) = Session::initiate(RoomId([1; 16]), a.to_vec(), salt.to_be_bytes());
        let (mut resp, mut msgs) = Session::respond(b.to_vec(), &init).unwrap();
        let mut flights = 1;
        let mut to_ini = true;
        while !msgs.is_empty() {
            flights += 1;
            assert!(flights < 40, "no convergence");
            let s = if to_ini { &mut ini } else { &mut resp };
            let mut next = Vec::new();
            for m in msgs {
                next.extend(s.handle(m).unwrap());
            }
            msgs = next;
            to_ini = !to_ini;
        }
        (
            ini.outcome().unwrap().clone(),
            resp.outcome().unwrap().clone(),
            flights,
        )
    }

    fn check(a: &[Item], b: &[Item], salt: u64) -> usize {
        let (oa, ob, flights) = run(a, b, salt);
        let sa: BTreeSet<Item> = a.iter().copied().collect();
        let sb: BTreeSet<Item> = b.iter().copied().collect();
        let a_only: Vec<Item> = sa.difference(&sb).copied().collect();
        let b_only: Vec<Item> = sb.difference(&sa).copied().collect();
        assert_eq!(oa.failed, None);
        assert_eq!(ob.failed, None);
        assert_eq!(oa.peer_lacks, a_only);
        assert_eq!(ob.peer_lacks, b_only);
        assert_eq!(oa.i_lack.len(), b_only.len());
        assert_eq!(ob.i_lack.len(), a_only.len());
        flights
    }

    /// Two sets from a universe of `n` items: `mask` bit 0 → in a, bit 1 → in b.
    fn split(n: u64, base: u64, diffs: &[(u64, bool)]) -> (Vec<Item>, Vec<Item>) {
        let diff: std::collections::BTreeMap<u64, bool> = diffs.iter().copied().collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..n {
            let it = item(base + i);
            match diff.get(&i) {
                None => {
                    a.push(it);
                    b.push(it);
                }
                Some(true) => a.push(it),
                Some(false) => b.push(it),
            }
        }
        (a, b)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_pairs_reconcile(
            n in 0u64..3000,
            diffs in proptest::collection::vec((any::<u64>(), any::<bool>()), 0..200),
            base in any::<u32>(),
            salt in any::<u64>(),
        ) {
            let diffs: Vec<(u64, bool)> =
                diffs.into_iter().map(|(i, s)| (if n == 0 { 0 } else { i % n }, s)).collect();
            let (a, b) = split(n, u64::from(base), &diffs);
            check(&a, &b, salt);
        }

        #[test]
        fn identical_sets_take_one_round_trip(n in 0u64..3000, salt in any::<u64>()) {
            let (a, b) = split(n, 0, &[]);
            prop_assert_eq!(check(&a, &b, salt), 2);
        }

        #[test]
        fn disjoint_and_one_sided(n in 1u64..400, salt in any::<u64>()) {
            let a: Vec<Item> = (0..n).map(item).collect();
            let b: Vec<Item> = (n..2 * n).map(item).collect();
            check(&a, &b, salt);
            check(&a, &[], salt);
            check(&[], &a, salt);
        }
    }

    #[test]
    fn large_sets_scattered_and_clustered() {
        let n = 100_000u64;
        let scattered: Vec<(u64, bool)> =
            (0..1000u64).map(|i| (mix64(i) % n, i % 2 == 0)).collect();
        let (a, b) = split(n, 0, &scattered);
        check(&a, &b, 7);
        let clustered: Vec<(u64, bool)> = (n - 1000..n).map(|i| (i, i % 3 == 0)).collect();
        let (a, b) = split(n, 0, &clustered);
        check(&a, &b, 8);
    }

    #[test]
    fn beyond_the_bound_fails_cleanly() {
        let a: Vec<Item> = (0..6000).map(item).collect();
        let (oa, ob, flights) = run(&a, &[], 3);
        assert_eq!(oa.failed, Some(FAIL_TOO_MANY_DIFFERENCES));
        assert_eq!(ob.failed, Some(FAIL_TOO_MANY_DIFFERENCES));
        // The estimate said so: Init, Sketch, Failed, and no symbol spent.
        assert_eq!(flights, 3);
        let est = oa.estimate.expect("an early failure carries the estimate");
        assert!((4000..9000).contains(&est), "estimate {est} for 6000");
    }

    #[test]
    fn hostile_symbols_are_bounded() {
        let mine: Vec<Item> = (0..500).map(item).collect();
        let init = Message::Init {
            room: RoomId([0; 16]),
            part: Part::WHOLE,
            salt: [0; 8],
            count: 10,
            fingerprint: [0; 16],
        };
        let (mut s, _) = Session::respond(mine, &init).unwrap();
        // Garbage symbols: the responder asks for more, never loops, and
        // stops at the session cap.
        let mut start = 0u64;
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 100);
            let symbols: Vec<Symbol> = (0..MAX_SYMBOLS_PER_MESSAGE as u64)
                .map(|i| Symbol {
                    key: mix64(start + i),
                    check: 0,
                })
                .collect();
            let n = symbols.len() as u64;
            match s
                .handle(Message::Symbols { start, symbols })
                .unwrap()
                .as_slice()
            {
                [Message::More { .. }] => start += n,
                [Message::Failed { .. }] => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(s.is_done());
        assert_eq!(s.handle(Message::Equal), Err(ReconcileError::Finished));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let a: Vec<Item> = (0..50).map(item).collect();
        let (mut ini, _) = Session::initiate(RoomId([0; 16]), a.clone(), [1; 8]);
        assert_eq!(
            ini.handle(Message::More { count: 5 }),
            Err(ReconcileError::Unexpected("More"))
        );
        let (mut ini, init) = Session::initiate(RoomId([0; 16]), a.clone(), [1; 8]);
        let (mut resp, _) = Session::respond(a[..40].to_vec(), &init).unwrap();
        assert!(matches!(
            resp.handle(Message::Symbols {
                start: 3,
                symbols: vec![]
            }),
            Err(ReconcileError::OutOfOrder { .. })
        ));
        let sketch = Message::Sketch {
            count: 40,
            counters: vec![0; 7],
        };
        assert_eq!(ini.handle(sketch), Err(ReconcileError::BadSketch(7)));
        let (mut ini, init) = Session::initiate(RoomId([0; 16]), a.clone(), [1; 8]);
        let (_, reply) = Session::respond(a[..40].to_vec(), &init).unwrap();
        for m in reply {
            ini.handle(m).unwrap();
        }
        assert!(matches!(
            ini.handle(Message::Decoded {
                you_lack: vec![],
                i_lack: vec![42]
            }),
            Err(ReconcileError::UnknownShortId(42))
        ));
        assert_eq!(
            ini.outcome().and_then(|o| o.failed),
            Some(FAIL_INCONSISTENT)
        );
    }
}
