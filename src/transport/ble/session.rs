//! One BLE link, sans-IO: Noise handshake, sealed records, fragmentation to
//! the ATT MTU and in-order delivery (`protocol-spec/ble.md`, "Link session").
//!
//! ```text
//! core datagram ──seal (Noise, explicit nonce)──▶ record ──wire::Fragmenter──▶ ATT values ≤ MTU − 3
//! core datagram ◀──open, reorder window──────── record ◀──wire::Reassembler── ATT values
//! ```
//!
//! * The central is the Noise initiator. `Noise_NN_25519_ChaChaPoly_SHA256`
//!   with fresh ephemeral keys only: confidentiality and integrity against
//!   anyone who did not take part, and no device identity revealed (events
//!   carry their own signatures).
//! * Records: `0x01 ‖ noise handshake message` or
//!   `0x02 ‖ nonce:u64 ‖ ciphertext`. Each direction numbers its data
//!   records from 0; record 0 is the link hello (version, flags, the
//!   sender's advertisement token), the rest carry one core datagram each.
//! * A receiver opens records as they complete, holds at most
//!   [`REORDER_WINDOW`] ahead of the next expected one, and hands datagrams
//!   to the core in order. A gap not filled within [`REORDER_TIMEOUT_MS`]
//!   is a lost packet: the link closes and the next link reconciles.
//! * Nothing but handshake records leaves before the handshake completes,
//!   and nothing is accepted but handshake records before it.
//!
//! Every error closes the link; no input panics.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use thiserror::Error;

use super::adv::{ADV_TOKEN_BYTES, AdvToken};
use crate::wire::{FragmentError, Fragmenter, MAX_FRAME_BYTES, Reassembler};

/// The Noise protocol every BLE link runs.
pub const NOISE_PARAMS: &str = "Noise_NN_25519_ChaChaPoly_SHA256";
/// The Noise prologue: binds the handshake to this protocol and version.
pub const NOISE_PROLOGUE: &[u8] = b"meshrelay/v1/ble-link\0";
/// Noise authentication tag length.
pub const NOISE_TAG_BYTES: usize = 16;
/// Largest Noise message.
pub const NOISE_MAX_MESSAGE: usize = 65_535;

/// ATT header bytes of a write command or notification (opcode + handle).
pub const ATT_HEADER_BYTES: usize = 3;
/// The ATT MTU every link starts with.
pub const ATT_MTU_DEFAULT: usize = 23;
/// Largest ATT MTU used (an attribute value holds at most 512 bytes).
pub const ATT_MTU_MAX: usize = 515;
/// Largest attribute value (Bluetooth Core, Vol 3 Part F 3.2.9).
pub const MAX_ATT_VALUE: usize = 512;

/// Record kind: a Noise handshake message.
pub const RECORD_HANDSHAKE: u8 = 0x01;
/// Record kind: a sealed data record.
pub const RECORD_DATA: u8 = 0x02;
/// Header bytes of a data record (kind + nonce).
pub const DATA_RECORD_HEADER_BYTES: usize = 9;

/// Largest core datagram on a BLE link: the MTU the adapter reports to the
/// core. The core's frames are cut to this size, then sealed, then cut again
/// to the ATT MTU, so the per-record cost (25 bytes) is paid once per 4 KiB.
pub const BLE_CORE_MTU: usize = 4096;

/// Version byte of the link hello.
pub const LINK_VERSION: u8 = 1;
/// Bytes of the link hello plaintext: version, flags, token.
pub const HELLO_BYTES: usize = 2 + ADV_TOKEN_BYTES;

/// A handshake not finished this long after the link came up closes it.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Most records held ahead of the next expected one.
pub const REORDER_WINDOW: u64 = 32;
/// A gap in the record sequence not filled this long closes the link.
pub const REORDER_TIMEOUT_MS: u64 = 2_000;
/// Most bytes of ATT values queued for the radio before `send` fails.
pub const MAX_OUTBOUND_BYTES: usize = 512 * 1024;

/// Which side of the GATT connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Scanned, connected, writes; the Noise initiator.
    Central,
    /// Advertised, serves the characteristic, notifies; the Noise responder.
    Peripheral,
}

impl Role {
    /// Lowercase name for status output.
    pub fn name(self) -> &'static str {
        match self {
            Role::Central => "central",
            Role::Peripheral => "peripheral",
        }
    }
}

/// Why a link session failed. Every one closes the link.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// A packet or its reassembly was malformed.
    #[error("fragment: {0}")]
    Fragment(#[from] FragmentError),
    /// A record was empty, of unknown kind or too short.
    #[error("malformed record")]
    MalformedRecord,
    /// A handshake record arrived when none was expected.
    #[error("unexpected handshake record")]
    UnexpectedHandshake,
    /// A data record arrived before the handshake completed.
    #[error("data before the handshake completed")]
    DataBeforeHandshake,
    /// The Noise layer rejected a message (bad key, tag, or length).
    #[error("noise: {0}")]
    Noise(String),
    /// A record number already delivered (replay or duplicate).
    #[error("record {0} replayed")]
    Replay(u64),
    /// A record beyond the reorder window.
    #[error("record {0} beyond the reorder window")]
    BeyondWindow(u64),
    /// The link hello was malformed or of another version.
    #[error("bad link hello")]
    BadHello,
    /// The handshake did not complete in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A record went missing (lost packet).
    #[error("record {0} missing after the reorder timeout")]
    Lost(u64),
    /// The core sent a datagram larger than [`BLE_CORE_MTU`].
    #[error("datagram of {0} bytes exceeds the BLE core MTU")]
    TooLarge(usize),
    /// The outbound queue is full: the peer stopped reading.
    #[error("outbound queue full")]
    QueueFull,
    /// Sending before the handshake completed, or after a failure.
    #[error("link not established")]
    NotEstablished,
}

/// What a session tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The handshake and both hellos are done: the link may go to the core.
    Established {
        /// The peer's advertisement token, for the one-link-per-pair rule.
        peer_token: AdvToken,
    },
    /// A core datagram arrived, in order.
    Datagram(Vec<u8>),
}

enum State {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<snow::StatelessTransportState>),
    Failed,
}

/// One link's session. See the module docs.
pub struct Session {
    role: Role,
    my_token: AdvToken,
    state: State,
    att_mtu: usize,
    fragmenter: Fragmenter,
    reassembler: Reassembler,
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    events: VecDeque<SessionEvent>,
    handshake_deadline: Option<u64>,
    send_nonce: u64,
    recv_next: u64,
    reorder: BTreeMap<u64, Vec<u8>>,
    gap_deadline: Option<u64>,
    peer_token: Option<AdvToken>,
    stats: SessionStats,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("att_mtu", &self.att_mtu)
            .field("established", &self.is_established())
            .field("keys", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// ATT values produced for the radio.
    pub packets_out: u64,
    /// Bytes of those values.
    pub att_bytes_out: u64,
    /// ATT values received.
    pub packets_in: u64,
    /// Bytes of those values.
    pub att_bytes_in: u64,
    /// Core datagrams sealed.
    pub datagrams_out: u64,
    /// Core datagrams delivered.
    pub datagrams_in: u64,
}

fn noise_err(e: snow::Error) -> SessionError {
    SessionError::Noise(e.to_string())
}

/// Clamps an ATT MTU to the supported range.
pub fn clamp_att_mtu(mtu: usize) -> usize {
    mtu.clamp(ATT_MTU_DEFAULT, ATT_MTU_MAX)
}

/// The largest ATT value a link with this ATT MTU carries.
pub fn att_payload(att_mtu: usize) -> usize {
    (clamp_att_mtu(att_mtu) - ATT_HEADER_BYTES).min(MAX_ATT_VALUE)
}

impl Session {
    /// A session for a link that came up at `now_ms` with ATT MTU `att_mtu`.
    /// The central queues its first handshake message at once.
    pub fn new(
        role: Role,
        att_mtu: usize,
        my_token: AdvToken,
        now_ms: u64,
    ) -> Result<Self, SessionError> {
        Self::with_ephemeral(role, att_mtu, my_token, now_ms, None)
    }

    /// Like [`Session::new`] with a fixed Noise ephemeral key: for test
    /// vectors only (a fixed key gives no forward secrecy).
    #[doc(hidden)]
    pub fn with_ephemeral(
        role: Role,
        att_mtu: usize,
        my_token: AdvToken,
        now_ms: u64,
        ephemeral: Option<&[u8; 32]>,
    ) -> Result<Self, SessionError> {
        let params = NOISE_PARAMS
            .parse()
            .map_err(|e: snow::Error| SessionError::Noise(e.to_string()))?;
        let mut b = snow::Builder::new(params)
            .prologue(NOISE_PROLOGUE)
            .map_err(noise_err)?;
        if let Some(k) = ephemeral {
            b = b.fixed_ephemeral_key_for_testing_only(k);
        }
        let hs = match role {
            Role::Central => b.build_initiator(),
            Role::Peripheral => b.build_responder(),
        }
        .map_err(noise_err)?;
        let mut s = Self {
            role,
            my_token,
            state: State::Handshake(Box::new(hs)),
            att_mtu: clamp_att_mtu(att_mtu),
            fragmenter: Fragmenter::new(),
            reassembler: Reassembler::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            events: VecDeque::new(),
            handshake_deadline: Some(now_ms.saturating_add(HANDSHAKE_TIMEOUT_MS)),
            send_nonce: 0,
            recv_next: 0,
            reorder: BTreeMap::new(),
            gap_deadline: None,
            peer_token: None,
            stats: SessionStats::default(),
        };
        if role == Role::Central {
            s.write_handshake()?;
        }
        Ok(s)
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The ATT MTU in use.
    pub fn att_mtu(&self) -> usize {
        self.att_mtu
    }

    /// The peer's token, once its hello arrived.
    pub fn peer_token(&self) -> Option<AdvToken> {
        self.peer_token
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Whether the handshake and the peer's hello are done.
    pub fn is_established(&self) -> bool {
        self.peer_token.is_some() && matches!(self.state, State::Transport(_))
    }

    /// The ATT MTU changed (an exchange after the connection came up).
    /// Later packets use it; packets already queued keep their size.
    pub fn set_att_mtu(&mut self, att_mtu: usize) {
        self.att_mtu = clamp_att_mtu(att_mtu);
    }

    /// The next ATT value to write (central) or notify (peripheral).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let p = self.out.pop_front()?;
        self.out_bytes -= p.len();
        Some(p)
    }

    /// Whether ATT values wait for the radio.
    pub fn has_outbound(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            self.handshake_deadline,
            self.gap_deadline,
            self.reassembler.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Checks the timers at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), SessionError> {
        self.reassembler.expire(now_ms);
        if self.handshake_deadline.is_some_and(|d| d <= now_ms) {
            return self.fail(SessionError::HandshakeTimeout);
        }
        if self.gap_deadline.is_some_and(|d| d <= now_ms) {
            return self.fail(SessionError::Lost(self.recv_next));
        }
        Ok(())
    }

    /// Seals one core datagram (at most [`BLE_CORE_MTU`] bytes) and queues
    /// its ATT values.
    pub fn send(&mut self, datagram: &[u8]) -> Result<(), SessionError> {
        if !self.is_established() {
            return Err(SessionError::NotEstablished);
        }
        if datagram.len() > BLE_CORE_MTU {
            return Err(SessionError::TooLarge(datagram.len()));
        }
        self.seal_and_queue(datagram)?;
        self.stats.datagrams_out += 1;
        Ok(())
    }

    /// Accepts one ATT value received at `now_ms`.
    pub fn receive(&mut self, now_ms: u64, packet: &[u8]) -> Result<(), SessionError> {
        if matches!(self.state, State::Failed) {
            return Err(SessionError::NotEstablished);
        }
        self.stats.packets_in += 1;
        self.stats.att_bytes_in += packet.len() as u64;
        if packet.len() > MAX_ATT_VALUE {
            return self.fail(SessionError::Fragment(FragmentError::TooLarge(
                packet.len(),
            )));
        }
        let record = match self.reassembler.receive(now_ms, packet) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => return self.fail(e.into()),
        };
        let r = self.on_record(now_ms, &record);
        if let Err(e) = r {
            return self.fail(e);
        }
        Ok(())
    }

    fn fail(&mut self, e: SessionError) -> Result<(), SessionError> {
        self.state = State::Failed;
        self.out.clear();
        self.out_bytes = 0;
        self.reorder.clear();
        Err(e)
    }

    fn queue_record(&mut self, record: &[u8]) -> Result<(), SessionError> {
        let packets = self
            .fragmenter
            .fragment(record, att_payload(self.att_mtu))?;
        let bytes: usize = packets.iter().map(Vec::len).sum();
        if self.out_bytes + bytes > MAX_OUTBOUND_BYTES {
            return Err(SessionError::QueueFull);
        }
        self.out_bytes += bytes;
        self.stats.packets_out += packets.len() as u64;
        self.stats.att_bytes_out += bytes as u64;
        self.out.extend(packets);
        Ok(())
    }

    fn write_handshake(&mut self) -> Result<(), SessionError> {
        let State::Handshake(hs) = &mut self.state else {
            return Err(SessionError::UnexpectedHandshake);
        };
        let mut buf = vec![0u8; 1 + 256];
        buf[0] = RECORD_HANDSHAKE;
        let n = hs.write_message(&[], &mut buf[1..]).map_err(noise_err)?;
        buf.truncate(1 + n);
        let done = hs.is_handshake_finished();
        self.queue_record(&buf)?;
        if done {
            self.finish_handshake()?;
        }
        Ok(())
    }

    fn finish_handshake(&mut self) -> Result<(), SessionError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::Handshake(hs) = state else {
            return Err(SessionError::UnexpectedHandshake);
        };
        let t = hs.into_stateless_transport_mode().map_err(noise_err)?;
        self.state = State::Transport(Box::new(t));
        let mut hello = [0u8; HELLO_BYTES];
        hello[0] = LINK_VERSION;
        hello[2..].copy_from_slice(&self.my_token.0);
        self.seal_and_queue(&hello)
    }

    fn seal_and_queue(&mut self, plain: &[u8]) -> Result<(), SessionError> {
        let State::Transport(t) = &self.state else {
            return Err(SessionError::NotEstablished);
        };
        let nonce = self.send_nonce;
        let mut rec = vec![0u8; DATA_RECORD_HEADER_BYTES + plain.len() + NOISE_TAG_BYTES];
        rec[0] = RECORD_DATA;
        rec[1..9].copy_from_slice(&nonce.to_be_bytes());
        let n = t
            .write_message(nonce, plain, &mut rec[DATA_RECORD_HEADER_BYTES..])
            .map_err(noise_err)?;
        rec.truncate(DATA_RECORD_HEADER_BYTES + n);
        self.send_nonce += 1;
        self.queue_record(&rec)
    }

    fn on_record(&mut self, now_ms: u64, record: &[u8]) -> Result<(), SessionError> {
        match record {
            [RECORD_HANDSHAKE, msg @ ..] => {
                let State::Handshake(hs) = &mut self.state else {
                    return Err(SessionError::UnexpectedHandshake);
                };
                if hs.is_my_turn() {
                    return Err(SessionError::UnexpectedHandshake);
                }
                let mut payload = vec![0u8; msg.len()];
                hs.read_message(msg, &mut payload).map_err(noise_err)?;
                if hs.is_handshake_finished() {
                    self.finish_handshake()
                } else {
                    self.write_handshake()
                }
            }
            [RECORD_DATA, rest @ ..] if rest.len() >= 8 + NOISE_TAG_BYTES => {
                let State::Transport(t) = &self.state else {
                    return Err(SessionError::DataBeforeHandshake);
                };
                let (n, ct) = rest.split_at(8);
                let mut nb = [0u8; 8];
                nb.copy_from_slice(n);
                let nonce = u64::from_be_bytes(nb);
                if nonce < self.recv_next || self.reorder.contains_key(&nonce) {
                    return Err(SessionError::Replay(nonce));
                }
                if nonce >= self.recv_next + REORDER_WINDOW {
                    return Err(SessionError::BeyondWindow(nonce));
                }
                if ct.len() > NOISE_MAX_MESSAGE || ct.len() > MAX_FRAME_BYTES {
                    return Err(SessionError::MalformedRecord);
                }
                let mut plain = vec![0u8; ct.len()];
                let len = t.read_message(nonce, ct, &mut plain).map_err(noise_err)?;
                plain.truncate(len);
                self.reorder.insert(nonce, plain);
                self.deliver_in_order(now_ms)
            }
            _ => Err(SessionError::MalformedRecord),
        }
    }

    fn deliver_in_order(&mut self, now_ms: u64) -> Result<(), SessionError> {
        while let Some(plain) = self.reorder.remove(&self.recv_next) {
            if self.recv_next == 0 {
                self.on_hello(&plain)?;
            } else {
                if plain.len() > BLE_CORE_MTU {
                    return Err(SessionError::TooLarge(plain.len()));
                }
                self.stats.datagrams_in += 1;
                self.events.push_back(SessionEvent::Datagram(plain));
            }
            self.recv_next += 1;
        }
        self.gap_deadline = if self.reorder.is_empty() {
            None
        } else {
            Some(
                self.gap_deadline
                    .unwrap_or(now_ms.saturating_add(REORDER_TIMEOUT_MS)),
            )
        };
        Ok(())
    }

    fn on_hello(&mut self, plain: &[u8]) -> Result<(), SessionError> {
        // Flags (byte 1) are reserved: unknown bits are ignored.
        let [LINK_VERSION, _flags, token @ ..] = plain else {
            return Err(SessionError::BadHello);
        };
        let token = AdvToken::from_bytes(token).ok_or(SessionError::BadHello)?;
        self.peer_token = Some(token);
        self.handshake_deadline = None;
        self.events
            .push_back(SessionEvent::Established { peer_token: token });
        Ok(())
    }
}

/// Fuzz entry point (`fuzz/fuzz_targets/ble_session.rs`): feeds arbitrary
/// bytes as ATT values to a fresh peripheral session, and also to a
/// peripheral whose handshake is done (fixed keys, as in the test vectors),
/// so both the handshake and the transport decoders see hostile input.
/// Returns how many datagrams the established one delivered. Each input byte string is split
/// into packets by a two-byte big-endian length prefix. Never panics.
pub fn fuzz_session(data: &[u8]) -> usize {
    let token = AdvToken([7; ADV_TOKEN_BYTES]);
    let Ok(mut fresh) = Session::with_ephemeral(Role::Peripheral, 185, token, 0, Some(&[1; 32]))
    else {
        return 0;
    };
    let mut linked = established_pair(185);
    let mut delivered = 0;
    let mut rest = data;
    let mut now = 0u64;
    while let [l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        now += 10;
        let _ = fresh.receive(now, packet);
        let _ = fresh.handle_timeout(now);
        if let Some((_, p)) = linked.as_mut() {
            let _ = p.receive(now, packet);
            while let Some(ev) = p.poll_event() {
                if matches!(ev, SessionEvent::Datagram(_)) {
                    delivered += 1;
                }
            }
        }
        while fresh.poll_transmit().is_some() {}
        rest = next;
    }
    delivered
}

/// A central and a peripheral session with the handshake done (fixed keys),
/// for tests and fuzzing.
#[doc(hidden)]
pub fn established_pair(att_mtu: usize) -> Option<(Session, Session)> {
    let mut c = Session::with_ephemeral(
        Role::Central,
        att_mtu,
        AdvToken([1; ADV_TOKEN_BYTES]),
        0,
        Some(&[0x11; 32]),
    )
    .ok()?;
    let mut p = Session::with_ephemeral(
        Role::Peripheral,
        att_mtu,
        AdvToken([2; ADV_TOKEN_BYTES]),
        0,
        Some(&[0x22; 32]),
    )
    .ok()?;
    for _ in 0..4 {
        while let Some(x) = c.poll_transmit() {
            p.receive(0, &x).ok()?;
        }
        while let Some(x) = p.poll_transmit() {
            c.receive(0, &x).ok()?;
        }
    }
    c.poll_event()?;
    p.poll_event()?;
    (c.is_established() && p.is_established()).then_some((c, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump(from: &mut Session, to: &mut Session, now: u64) -> Result<usize, SessionError> {
        let mut n = 0;
        while let Some(x) = from.poll_transmit() {
            to.receive(now, &x)?;
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn handshake_then_datagrams_at_every_mtu() {
        for mtu in [23, 185, 512] {
            let mut c = Session::new(Role::Central, mtu, AdvToken([1; 6]), 0).unwrap();
            let mut p = Session::new(Role::Peripheral, mtu, AdvToken([2; 6]), 0).unwrap();
            assert!(
                !p.has_outbound(),
                "the peripheral speaks only when spoken to"
            );
            assert_eq!(c.send(b"x"), Err(SessionError::NotEstablished));
            pump(&mut c, &mut p, 1).unwrap();
            pump(&mut p, &mut c, 1).unwrap();
            pump(&mut c, &mut p, 1).unwrap();
            assert_eq!(
                c.poll_event(),
                Some(SessionEvent::Established {
                    peer_token: AdvToken([2; 6])
                })
            );
            assert_eq!(
                p.poll_event(),
                Some(SessionEvent::Established {
                    peer_token: AdvToken([1; 6])
                })
            );
            let big: Vec<u8> = (0..BLE_CORE_MTU).map(|i| i as u8).collect();
            c.send(&big).unwrap();
            c.send(b"small").unwrap();
            while let Some(x) = c.poll_transmit() {
                assert!(x.len() <= att_payload(mtu));
                p.receive(2, &x).unwrap();
            }
            assert_eq!(p.poll_event(), Some(SessionEvent::Datagram(big.clone())));
            assert_eq!(
                p.poll_event(),
                Some(SessionEvent::Datagram(b"small".to_vec()))
            );
            p.send(b"back").unwrap();
            pump(&mut p, &mut c, 3).unwrap();
            assert_eq!(
                c.poll_event(),
                Some(SessionEvent::Datagram(b"back".to_vec()))
            );
        }
    }

    #[test]
    fn data_before_handshake_is_rejected() {
        let (mut c, _) = established_pair(185).unwrap();
        let mut fresh = Session::new(Role::Peripheral, 185, AdvToken([3; 6]), 0).unwrap();
        c.send(b"hello").unwrap();
        let pkt = c.poll_transmit().unwrap();
        assert_eq!(
            fresh.receive(0, &pkt),
            Err(SessionError::DataBeforeHandshake)
        );
    }

    #[test]
    fn handshake_times_out() {
        let mut p = Session::new(Role::Peripheral, 185, AdvToken([3; 6]), 100).unwrap();
        assert_eq!(p.poll_timeout(), Some(100 + HANDSHAKE_TIMEOUT_MS));
        assert!(p.handle_timeout(100 + HANDSHAKE_TIMEOUT_MS - 1).is_ok());
        assert_eq!(
            p.handle_timeout(100 + HANDSHAKE_TIMEOUT_MS),
            Err(SessionError::HandshakeTimeout)
        );
    }

    #[test]
    fn tampering_and_replay_close_the_link() {
        let (mut c, mut p) = established_pair(185).unwrap();
        c.send(b"one").unwrap();
        let mut pkt = c.poll_transmit().unwrap();
        let copy = pkt.clone();
        let last = pkt.len() - 1;
        pkt[last] ^= 1;
        assert!(matches!(p.receive(0, &pkt), Err(SessionError::Noise(_))));
        let (mut c, mut p) = established_pair(185).unwrap();
        c.send(b"one").unwrap();
        let pkt2 = c.poll_transmit().unwrap();
        assert_eq!(pkt2, copy, "fixed keys give fixed bytes");
        p.receive(0, &pkt2).unwrap();
        assert_eq!(p.receive(0, &pkt2), Err(SessionError::Replay(1)));
    }

    #[test]
    fn reordered_records_are_delivered_in_order_and_gaps_time_out() {
        let (mut c, mut p) = established_pair(185).unwrap();
        for i in 0..5u8 {
            c.send(&[i; 10]).unwrap();
        }
        let mut pkts: Vec<_> = std::iter::from_fn(|| c.poll_transmit()).collect();
        pkts.reverse();
        for x in &pkts {
            p.receive(5, x).unwrap();
        }
        for i in 0..5u8 {
            assert_eq!(p.poll_event(), Some(SessionEvent::Datagram(vec![i; 10])));
        }
        c.send(b"lost").unwrap();
        c.send(b"kept").unwrap();
        let _lost = c.poll_transmit().unwrap();
        p.receive(10, &c.poll_transmit().unwrap()).unwrap();
        assert_eq!(p.poll_event(), None);
        assert_eq!(p.poll_timeout(), Some(10 + REORDER_TIMEOUT_MS));
        assert_eq!(
            p.handle_timeout(10 + REORDER_TIMEOUT_MS),
            Err(SessionError::Lost(6))
        );
    }

    #[test]
    fn oversize_and_garbage_are_errors() {
        let (mut c, mut p) = established_pair(185).unwrap();
        assert_eq!(
            c.send(&vec![0; BLE_CORE_MTU + 1]),
            Err(SessionError::TooLarge(BLE_CORE_MTU + 1))
        );
        assert!(p.receive(0, &[]).is_err());
        let (_, mut p2) = established_pair(185).unwrap();
        assert_eq!(
            p2.receive(0, &[0, 9, 9]),
            Err(SessionError::MalformedRecord)
        );
        assert!(p.send(b"x").is_err(), "a failed session stays failed");
    }
}
