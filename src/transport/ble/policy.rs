//! Scheduling policy, sans-IO (`protocol-spec/ble.md`, "Scheduling"):
//! duty-cycled scanning, the connection budget, the RSSI threshold, connect
//! timeouts, backoff for peers that fail, and the one-link-per-pair
//! tie-break.
//!
//! Peers are known only by their current [`AdvToken`]; the table of tokens
//! is bounded and forgets a token when it rotates away.

use std::collections::BTreeMap;

use super::adv::AdvToken;
use super::session::Role;
use crate::proto::LinkId;

/// Default scan window: scanning runs this long…
pub const SCAN_WINDOW_MS: u64 = 2_000;
/// …at the start of every scan interval (a 20 % duty cycle).
pub const SCAN_INTERVAL_MS: u64 = 10_000;
/// Default connection budget: most BLE links at once, both roles together.
pub const MAX_BLE_LINKS: usize = 6;
/// Default RSSI threshold: weaker advertisers are not connected to.
pub const RSSI_MIN_DBM: i16 = -90;
/// A connection attempt (connect, MTU exchange, discovery, subscribe)
/// abandoned after this long.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Connection attempts in flight at once (controllers serialise them).
pub const MAX_CONCURRENT_CONNECTS: usize = 1;
/// First backoff after a failed attempt or a link that failed.
pub const BACKOFF_MIN_MS: u64 = 5_000;
/// Largest backoff.
pub const BACKOFF_MAX_MS: u64 = 300_000;
/// Most tokens remembered for backoff; the entry that frees up first is
/// forgotten first.
pub const MAX_BACKOFF_ENTRIES: usize = 256;
/// When two devices see each other, the one with the larger token waits
/// this long after first seeing the other before it connects, so the
/// smaller one (whose link wins the tie-break) connects first and the two
/// controllers do not both initiate at once.
pub const CONNECT_DEFER_MS: u64 = 4_000;
/// Most advertisers remembered for the deferral (oldest forgotten first).
pub const MAX_SEEN_ENTRIES: usize = 256;

/// Tunables of the policy (defaults are the constants above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Scan window per interval.
    pub scan_window_ms: u64,
    /// Scan interval.
    pub scan_interval_ms: u64,
    /// Connection budget.
    pub max_links: usize,
    /// RSSI threshold in dBm.
    pub rssi_min_dbm: i16,
    /// Connection attempt timeout.
    pub connect_timeout_ms: u64,
    /// First backoff.
    pub backoff_min_ms: u64,
    /// Largest backoff.
    pub backoff_max_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            scan_window_ms: SCAN_WINDOW_MS,
            scan_interval_ms: SCAN_INTERVAL_MS,
            max_links: MAX_BLE_LINKS,
            rssi_min_dbm: RSSI_MIN_DBM,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            backoff_min_ms: BACKOFF_MIN_MS,
            backoff_max_ms: BACKOFF_MAX_MS,
        }
    }
}

/// Why an advertiser is not connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// It is this device.
    Own,
    /// A link to it exists.
    Linked,
    /// An attempt to it is in flight.
    Connecting,
    /// The budget is used up (links plus attempts).
    Budget,
    /// Another attempt is in flight.
    Busy,
    /// Its signal is below the threshold.
    Weak,
    /// Its token is smaller: it gets [`CONNECT_DEFER_MS`] to connect first.
    Defer,
    /// It failed recently.
    Backoff,
}

/// What to do with a link whose hello just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the core.
    Accept,
    /// Hand it to the core and close this older link to the same peer.
    Replace(LinkId),
    /// Close it: the budget is full or the other link to this peer wins.
    Reject(Skip),
}

#[derive(Debug, Clone, Copy)]
struct LinkInfo {
    token: AdvToken,
    role: Role,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: u64,
}

/// The scheduling state of one adapter.
#[derive(Debug)]
pub struct Scheduler {
    cfg: PolicyConfig,
    links: BTreeMap<LinkId, LinkInfo>,
    connecting: BTreeMap<AdvToken, u64>,
    backoff: BTreeMap<AdvToken, Backoff>,
    first_seen: BTreeMap<AdvToken, u64>,
}

/// Whether the link `(central_token, peripheral_token)` wins over the
/// reverse link between the same two devices: the link whose central has
/// the smaller token is kept. Both devices compute the same answer.
pub fn central_wins(central: AdvToken, peripheral: AdvToken) -> bool {
    central < peripheral
}

impl Scheduler {
    /// A scheduler with these tunables.
    pub fn new(cfg: PolicyConfig) -> Self {
        Self {
            cfg,
            links: BTreeMap::new(),
            connecting: BTreeMap::new(),
            backoff: BTreeMap::new(),
            first_seen: BTreeMap::new(),
        }
    }

    /// Records that `token` was seen advertising at `now_ms` (for the
    /// deferral); returns when it was first seen.
    pub fn seen(&mut self, now_ms: u64, token: AdvToken) -> u64 {
        if !self.first_seen.contains_key(&token)
            && self.first_seen.len() >= MAX_SEEN_ENTRIES
            && let Some(oldest) = self
                .first_seen
                .iter()
                .min_by_key(|(t, at)| (**at, **t))
                .map(|(t, _)| *t)
        {
            self.first_seen.remove(&oldest);
        }
        *self.first_seen.entry(token).or_insert(now_ms)
    }

    /// The tunables.
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Links admitted.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Whether the radio should scan at `now_ms`: in the window of each
    /// interval, and only while the budget has room.
    pub fn scanning(&self, now_ms: u64) -> bool {
        let interval = self.cfg.scan_interval_ms.max(1);
        self.links.len() + self.connecting.len() < self.cfg.max_links
            && now_ms % interval < self.cfg.scan_window_ms
    }

    /// When [`Scheduler::scanning`] may next change (absent link changes).
    pub fn next_scan_change(&self, now_ms: u64) -> u64 {
        let interval = self.cfg.scan_interval_ms.max(1);
        let start = now_ms - now_ms % interval;
        if now_ms % interval < self.cfg.scan_window_ms {
            start + self.cfg.scan_window_ms
        } else {
            start + interval
        }
    }

    /// Whether to connect to an advertiser seen at `now_ms`.
    pub fn consider(
        &self,
        now_ms: u64,
        me: AdvToken,
        token: AdvToken,
        rssi_dbm: Option<i16>,
    ) -> Result<(), Skip> {
        if token == me {
            return Err(Skip::Own);
        }
        if self.links.values().any(|l| l.token == token) {
            return Err(Skip::Linked);
        }
        if self.connecting.contains_key(&token) {
            return Err(Skip::Connecting);
        }
        if self.links.len() + self.connecting.len() >= self.cfg.max_links {
            return Err(Skip::Budget);
        }
        if self.connecting.len() >= MAX_CONCURRENT_CONNECTS {
            return Err(Skip::Busy);
        }
        if rssi_dbm.is_some_and(|r| r < self.cfg.rssi_min_dbm) {
            return Err(Skip::Weak);
        }
        if self.backoff.get(&token).is_some_and(|b| b.until > now_ms) {
            return Err(Skip::Backoff);
        }
        if me > token
            && self
                .first_seen
                .get(&token)
                .is_none_or(|at| now_ms < at.saturating_add(CONNECT_DEFER_MS))
        {
            return Err(Skip::Defer);
        }
        Ok(())
    }

    /// An attempt to `token` started at `now_ms`.
    pub fn connect_started(&mut self, now_ms: u64, token: AdvToken) {
        self.connecting
            .insert(token, now_ms.saturating_add(self.cfg.connect_timeout_ms));
    }

    /// Attempts whose deadline passed at `now_ms` (the caller abandons
    /// them); each counts as a failure.
    pub fn expired_connects(&mut self, now_ms: u64) -> Vec<AdvToken> {
        let late: Vec<AdvToken> = self
            .connecting
            .iter()
            .filter(|(_, d)| **d <= now_ms)
            .map(|(t, _)| *t)
            .collect();
        for t in &late {
            self.connect_failed(now_ms, *t);
        }
        late
    }

    /// The earliest attempt deadline.
    pub fn next_connect_deadline(&self) -> Option<u64> {
        self.connecting.values().copied().min()
    }

    /// The attempt to `token` ended without a verdict on the peer.
    pub fn connect_done(&mut self, token: AdvToken) {
        self.connecting.remove(&token);
    }

    /// The attempt to `token` failed at `now_ms`: back off exponentially.
    pub fn connect_failed(&mut self, now_ms: u64, token: AdvToken) {
        self.connecting.remove(&token);
        self.penalise(now_ms, token);
    }

    /// A link to `token` failed (protocol error, lost packet): back off.
    pub fn penalise(&mut self, now_ms: u64, token: AdvToken) {
        let failures = self.backoff.get(&token).map_or(0, |b| b.failures) + 1;
        let shift = (failures - 1).min(16);
        let delay = self
            .cfg
            .backoff_min_ms
            .saturating_mul(1u64 << shift)
            .min(self.cfg.backoff_max_ms);
        self.backoff.insert(
            token,
            Backoff {
                failures,
                until: now_ms.saturating_add(delay),
            },
        );
        if self.backoff.len() > MAX_BACKOFF_ENTRIES {
            // Forget the entry that would free up first (expired ones included).
            if let Some(t) = self
                .backoff
                .iter()
                .min_by_key(|(t, b)| (b.until, **t))
                .map(|(t, _)| *t)
            {
                self.backoff.remove(&t);
            }
        }
    }

    /// How long `token` is backed off past `now_ms`, if at all.
    pub fn backoff_until(&self, token: AdvToken) -> Option<u64> {
        self.backoff.get(&token).map(|b| b.until)
    }

    /// A link completed its handshake; `me` is this device's token at
    /// link setup. Decides the one-link-per-pair rule and the budget.
    pub fn admit(&mut self, link: LinkId, role: Role, me: AdvToken, peer: AdvToken) -> Admit {
        if role == Role::Central {
            self.connecting.remove(&peer);
            self.backoff.remove(&peer);
        }
        if peer == me {
            return Admit::Reject(Skip::Own);
        }
        let other = self
            .links
            .iter()
            .find(|(_, l)| l.token == peer)
            .map(|(id, l)| (*id, *l));
        let decision = match other {
            // Both sides connected: keep the link whose central has the
            // smaller token.
            Some((old, info)) if info.role != role => {
                let (central, peripheral) = match role {
                    Role::Central => (me, peer),
                    Role::Peripheral => (peer, me),
                };
                if central_wins(central, peripheral) {
                    Admit::Replace(old)
                } else {
                    Admit::Reject(Skip::Linked)
                }
            }
            // Same role twice (a reconnect racing the old link's
            // teardown): the newer link replaces it.
            Some((old, _)) => Admit::Replace(old),
            None if self.links.len() >= self.cfg.max_links => Admit::Reject(Skip::Budget),
            None => Admit::Accept,
        };
        match decision {
            Admit::Accept => {
                self.links.insert(link, LinkInfo { token: peer, role });
            }
            Admit::Replace(old) => {
                self.links.remove(&old);
                self.links.insert(link, LinkInfo { token: peer, role });
            }
            Admit::Reject(_) => {}
        }
        decision
    }

    /// A link went down.
    pub fn link_down(&mut self, link: LinkId) {
        self.links.remove(&link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: AdvToken = AdvToken([5; 6]);

    /// Tokens above `ME`, so the deferral does not apply.
    fn t(b: u8) -> AdvToken {
        AdvToken([100 + b; 6])
    }

    #[test]
    fn duty_cycle_and_budget() {
        let mut s = Scheduler::new(PolicyConfig::default());
        assert!(s.scanning(0));
        assert!(!s.scanning(SCAN_WINDOW_MS));
        assert_eq!(s.next_scan_change(0), SCAN_WINDOW_MS);
        assert_eq!(s.next_scan_change(SCAN_WINDOW_MS), SCAN_INTERVAL_MS);
        assert!(s.scanning(SCAN_INTERVAL_MS + 1));
        for i in 0..MAX_BLE_LINKS as u8 {
            assert_eq!(
                s.admit(LinkId(i as u64), Role::Peripheral, ME, t(10 + i)),
                Admit::Accept
            );
        }
        assert!(!s.scanning(0), "no scanning with a full budget");
        assert_eq!(s.consider(0, ME, t(99), Some(-40)), Err(Skip::Budget));
        assert_eq!(
            s.admit(LinkId(99), Role::Peripheral, ME, t(99)),
            Admit::Reject(Skip::Budget)
        );
        s.link_down(LinkId(0));
        assert_eq!(s.consider(0, ME, t(99), Some(-40)), Ok(()));
    }

    #[test]
    fn rssi_own_linked_busy() {
        let mut s = Scheduler::new(PolicyConfig::default());
        assert_eq!(s.consider(0, ME, ME, None), Err(Skip::Own));
        assert_eq!(
            s.consider(0, ME, t(1), Some(RSSI_MIN_DBM - 1)),
            Err(Skip::Weak)
        );
        assert_eq!(s.consider(0, ME, t(1), Some(RSSI_MIN_DBM)), Ok(()));
        s.connect_started(0, t(1));
        assert_eq!(s.consider(0, ME, t(1), None), Err(Skip::Connecting));
        assert_eq!(s.consider(0, ME, t(2), None), Err(Skip::Busy));
        assert_eq!(s.admit(LinkId(1), Role::Central, ME, t(1)), Admit::Accept);
        assert_eq!(s.consider(0, ME, t(1), None), Err(Skip::Linked));
    }

    #[test]
    fn timeouts_back_off_exponentially() {
        let mut s = Scheduler::new(PolicyConfig::default());
        s.connect_started(0, t(1));
        assert_eq!(s.next_connect_deadline(), Some(CONNECT_TIMEOUT_MS));
        assert!(s.expired_connects(CONNECT_TIMEOUT_MS - 1).is_empty());
        assert_eq!(s.expired_connects(CONNECT_TIMEOUT_MS), vec![t(1)]);
        let now = CONNECT_TIMEOUT_MS;
        assert_eq!(s.backoff_until(t(1)), Some(now + BACKOFF_MIN_MS));
        assert_eq!(s.consider(now, ME, t(1), None), Err(Skip::Backoff));
        s.connect_failed(now, t(1));
        assert_eq!(s.backoff_until(t(1)), Some(now + 2 * BACKOFF_MIN_MS));
        for _ in 0..30 {
            s.connect_failed(now, t(1));
        }
        assert_eq!(s.backoff_until(t(1)), Some(now + BACKOFF_MAX_MS));
        for i in 0..(MAX_BACKOFF_ENTRIES + 10) {
            s.penalise(
                now,
                AdvToken((i as u64).to_be_bytes()[2..].try_into().unwrap()),
            );
        }
        assert!(s.backoff.len() <= MAX_BACKOFF_ENTRIES);
    }

    #[test]
    fn the_larger_token_defers_its_connect() {
        let mut s = Scheduler::new(PolicyConfig::default());
        let small = AdvToken([1; 6]);
        assert_eq!(s.consider(0, ME, small, None), Err(Skip::Defer));
        assert_eq!(s.seen(1_000, small), 1_000);
        assert_eq!(s.seen(2_000, small), 1_000);
        assert_eq!(
            s.consider(1_000 + CONNECT_DEFER_MS - 1, ME, small, None),
            Err(Skip::Defer)
        );
        assert_eq!(
            s.consider(1_000 + CONNECT_DEFER_MS, ME, small, None),
            Ok(())
        );
        // The smaller side connects at once.
        assert_eq!(s.consider(0, ME, t(1), None), Ok(()));
        for i in 0..(MAX_SEEN_ENTRIES + 5) as u64 {
            s.seen(i, AdvToken(i.to_be_bytes()[2..].try_into().unwrap()));
        }
        assert!(s.first_seen.len() <= MAX_SEEN_ENTRIES);
    }

    #[test]
    fn tie_break_is_the_same_on_both_sides() {
        let (a, b) = (AdvToken([1; 6]), AdvToken([2; 6]));
        // Device A: first its central link to B, then B's link to it.
        let mut sa = Scheduler::new(PolicyConfig::default());
        assert_eq!(sa.admit(LinkId(1), Role::Central, a, b), Admit::Accept);
        assert_eq!(
            sa.admit(LinkId(2), Role::Peripheral, a, b),
            Admit::Reject(Skip::Linked)
        );
        // Device B sees the links in the other order and keeps the same one
        // (A central, B peripheral): A's token is smaller.
        let mut sb = Scheduler::new(PolicyConfig::default());
        assert_eq!(sb.admit(LinkId(7), Role::Central, b, a), Admit::Accept);
        assert_eq!(
            sb.admit(LinkId(8), Role::Peripheral, b, a),
            Admit::Replace(LinkId(7))
        );
        assert_eq!(sb.links(), 1);
    }
}
