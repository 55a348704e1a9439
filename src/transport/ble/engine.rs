//! The adapter's sans-IO heart (`protocol-spec/ble.md`): every link's
//! [`Session`], the [`Scheduler`], and the mapping to core links and
//! [`BleEvent`]s. The hardware adapter and the simulated GATT link both
//! drive an `Engine`; only the radio differs.

use std::collections::{BTreeMap, VecDeque};

use super::adv::{AdvSchedule, AdvSecret, AdvToken};
use super::policy::{Admit, PolicyConfig, Scheduler, Skip};
use super::session::{BLE_CORE_MTU, Role, Session, SessionError, SessionEvent};
use super::{BleEvent, BleLinkStatus};
use crate::proto::LinkId;
use crate::proto::io::SourceKey;

/// Most links (admitted or handshaking) an engine holds: the budget plus
/// room for handshakes that may lose the tie-break.
pub const MAX_ENGINE_LINKS: usize = 2 * super::policy::MAX_BLE_LINKS + 2;

struct LinkState {
    session: Session,
    role: Role,
    address: String,
    /// The token seen in the advertisement (central side).
    advertised: Option<AdvToken>,
    admitted: bool,
    /// ATT values were handed to the radio since the last `Drained`.
    in_flight: bool,
}

/// See the module docs.
pub struct Engine {
    secret: AdvSecret,
    adv: AdvSchedule,
    sched: Scheduler,
    links: BTreeMap<LinkId, LinkState>,
    next_link: u64,
    source: SourceKey,
    events: VecDeque<BleEvent>,
    close: VecDeque<LinkId>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine numbering its links from `first_link_id`; `source` is the
    /// penalty key every BLE link of this adapter reports.
    pub fn new(
        secret: AdvSecret,
        policy: PolicyConfig,
        first_link_id: u64,
        source: SourceKey,
    ) -> Self {
        Self {
            secret,
            adv: AdvSchedule::default(),
            sched: Scheduler::new(policy),
            links: BTreeMap::new(),
            next_link: first_link_id,
            source,
            events: VecDeque::new(),
            close: VecDeque::new(),
        }
    }

    /// The token to advertise at `now_ms` (wall clock).
    pub fn token(&self, now_ms: u64) -> AdvToken {
        self.secret.token_at(now_ms)
    }

    /// The token to (re-)register now, if the advertisement is due: at
    /// start, at every rotation epoch boundary, and
    /// [`super::adv::ADV_RETRY_MS`] after a failed registration
    /// ([`AdvSchedule`]). The radio calls this on every wake-up.
    pub fn advert_due(&self, now_ms: u64) -> Option<AdvToken> {
        self.adv.due(&self.secret, now_ms)
    }

    /// The radio registered (`ok`) or failed to register the advertisement
    /// [`Engine::advert_due`] returned at `due_ms`.
    pub fn advert_registered(&mut self, due_ms: u64, ok: bool) {
        self.adv.registered(due_ms, ok);
    }

    /// The scheduling policy.
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// Whether the radio should scan now.
    pub fn scanning(&self, now_ms: u64) -> bool {
        self.sched.scanning(now_ms) && self.links.len() < MAX_ENGINE_LINKS
    }

    /// An advertiser was seen: returns whether to connect to it (and then
    /// counts the attempt as started).
    pub fn on_advert(
        &mut self,
        now_ms: u64,
        token: AdvToken,
        rssi_dbm: Option<i16>,
    ) -> Result<(), Skip> {
        if self.links.len() >= MAX_ENGINE_LINKS {
            return Err(Skip::Budget);
        }
        if self
            .links
            .values()
            .any(|l| l.advertised == Some(token) || l.session.peer_token() == Some(token))
        {
            return Err(Skip::Linked);
        }
        let me = self.token(now_ms);
        self.sched.seen(now_ms, token);
        self.sched.consider(now_ms, me, token, rssi_dbm)?;
        self.sched.connect_started(now_ms, token);
        Ok(())
    }

    /// The attempt to `token` failed before a link existed.
    pub fn connect_failed(&mut self, now_ms: u64, token: AdvToken) {
        self.sched.connect_failed(now_ms, token);
    }

    /// A GATT connection is ready to carry values (central: subscribed to
    /// notifications; peripheral: the central subscribed and can write).
    /// Returns the new link's number, or `None` when the engine is full
    /// (the caller disconnects).
    pub fn link_opened(
        &mut self,
        now_ms: u64,
        role: Role,
        att_mtu: usize,
        address: String,
        advertised: Option<AdvToken>,
    ) -> Option<LinkId> {
        if self.links.len() >= MAX_ENGINE_LINKS {
            if let Some(t) = advertised {
                self.sched.connect_failed(now_ms, t);
            }
            return None;
        }
        let me = self.token(now_ms);
        let session = match Session::new(role, att_mtu, me, now_ms) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot start a BLE session: {e}");
                return None;
            }
        };
        let link = LinkId(self.next_link);
        self.next_link += 1;
        self.links.insert(
            link,
            LinkState {
                session,
                role,
                address,
                advertised,
                admitted: false,
                in_flight: false,
            },
        );
        Some(link)
    }

    /// The ATT MTU of a link changed.
    pub fn set_att_mtu(&mut self, link: LinkId, att_mtu: usize) {
        if let Some(l) = self.links.get_mut(&link) {
            l.session.set_att_mtu(att_mtu);
        }
    }

    /// An ATT value arrived on a link.
    pub fn radio_received(&mut self, now_ms: u64, link: LinkId, value: &[u8]) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let r = l.session.receive(now_ms, value);
        self.after_session(now_ms, link, r);
    }

    /// The core sends a datagram on a link.
    pub fn core_send(&mut self, now_ms: u64, link: LinkId, datagram: &[u8]) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let r = l.session.send(datagram);
        self.after_session(now_ms, link, r);
    }

    /// The core closes a link.
    pub fn core_close(&mut self, link: LinkId) {
        if self.drop_link(link) {
            self.close.push_back(link);
        }
    }

    /// The radio lost a link (disconnect, write failure).
    pub fn radio_closed(&mut self, link: LinkId) {
        self.drop_link(link);
    }

    /// The next ATT value to write on `link`.
    pub fn poll_radio(&mut self, link: LinkId) -> Option<Vec<u8>> {
        let l = self.links.get_mut(&link)?;
        let v = l.session.poll_transmit()?;
        l.in_flight = true;
        Some(v)
    }

    /// Links with ATT values waiting.
    pub fn links_with_outbound(&self) -> Vec<LinkId> {
        self.links
            .iter()
            .filter(|(_, l)| l.session.has_outbound())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The radio wrote everything `poll_radio` gave it on `link`: the core
    /// may send its next window.
    pub fn radio_flushed(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(&link)
            && l.in_flight
            && !l.session.has_outbound()
        {
            l.in_flight = false;
            if l.admitted {
                self.events.push_back(BleEvent::Drained(link));
            }
        }
    }

    /// The next event for the daemon.
    pub fn poll_event(&mut self) -> Option<BleEvent> {
        self.events.pop_front()
    }

    /// The next link the radio must disconnect.
    pub fn poll_close(&mut self) -> Option<LinkId> {
        self.close.pop_front()
    }

    /// Whether the engine asked for `link` to be disconnected; forgets the
    /// request (for radios that handle each link apart, like the simulator).
    pub fn take_close(&mut self, link: LinkId) -> bool {
        match self.close.iter().position(|l| *l == link) {
            Some(i) => {
                self.close.remove(i);
                true
            }
            None => false,
        }
    }

    /// When [`Engine::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.links
            .values()
            .filter_map(|l| l.session.poll_timeout())
            .chain(self.sched.next_connect_deadline())
            .min()
    }

    /// Runs the timers at `now_ms`. Returns the tokens whose connection
    /// attempts timed out (the radio abandons them).
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<AdvToken> {
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for link in ids {
            if let Some(l) = self.links.get_mut(&link) {
                let r = l.session.handle_timeout(now_ms);
                self.after_session(now_ms, link, r);
            }
        }
        let late = self.sched.expired_connects(now_ms);
        let stuck: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| !l.admitted && l.advertised.is_some_and(|t| late.contains(&t)))
            .map(|(id, _)| *id)
            .collect();
        for link in stuck {
            if self.drop_link(link) {
                self.close.push_back(link);
            }
        }
        late
    }

    /// Admitted links, for `status`.
    pub fn link_status(&self) -> Vec<BleLinkStatus> {
        self.links
            .iter()
            .filter(|(_, l)| l.admitted)
            .map(|(id, l)| BleLinkStatus {
                link: id.0,
                role: l.role.name().to_string(),
                att_mtu: l.session.att_mtu(),
                address: l.address.clone(),
                address_type: None,
            })
            .collect()
    }

    /// Session counters of a link (tests and benchmarks).
    pub fn session_stats(&self, link: LinkId) -> Option<super::session::SessionStats> {
        self.links.get(&link).map(|l| l.session.stats())
    }

    fn after_session(&mut self, now_ms: u64, link: LinkId, r: Result<(), SessionError>) {
        if let Err(e) = r {
            tracing::debug!(link = link.0, "BLE link failed: {e}");
            let token = self
                .links
                .get(&link)
                .and_then(|l| l.session.peer_token().or(l.advertised));
            if let Some(t) = token {
                self.sched.penalise(now_ms, t);
            }
            if self.drop_link(link) {
                self.close.push_back(link);
            }
            return;
        }
        let me = self.token(now_ms);
        loop {
            let Some(l) = self.links.get_mut(&link) else {
                return;
            };
            let Some(ev) = l.session.poll_event() else {
                return;
            };
            match ev {
                SessionEvent::Established { peer_token } => {
                    let role = l.role;
                    let address = l.address.clone();
                    match self.sched.admit(link, role, me, peer_token) {
                        Admit::Accept => self.up(link, address),
                        Admit::Replace(old) => {
                            if self.drop_link(old) {
                                self.close.push_back(old);
                            }
                            self.up(link, address);
                        }
                        Admit::Reject(why) => {
                            tracing::debug!(link = link.0, ?why, "BLE link not admitted");
                            if self.drop_link(link) {
                                self.close.push_back(link);
                            }
                            return;
                        }
                    }
                }
                SessionEvent::Datagram(bytes) => {
                    if l.admitted {
                        self.events.push_back(BleEvent::Received { link, bytes });
                    }
                }
            }
        }
    }

    fn up(&mut self, link: LinkId, address: String) {
        if let Some(l) = self.links.get_mut(&link) {
            l.admitted = true;
        }
        self.events.push_back(BleEvent::Up {
            link,
            mtu: BLE_CORE_MTU,
            source: self.source,
            address,
        });
    }

    /// Forgets a link; reports `Down` if the core knew it. Returns whether
    /// it existed.
    fn drop_link(&mut self, link: LinkId) -> bool {
        let Some(l) = self.links.remove(&link) else {
            return false;
        };
        self.sched.link_down(link);
        if l.admitted {
            self.events.push_back(BleEvent::Down(link));
        } else if l.role == Role::Central
            && let Some(t) = l.advertised
        {
            // Never admitted: the attempt is over (a failed handshake was
            // already penalised; a lost tie-break is not a failure).
            self.sched.connect_done(t);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ble::adv::{ADV_RETRY_MS, ADV_ROTATION_MS, epoch_of};

    /// The radio's loop in miniature: ask `advert_due` every tick, register
    /// what it returns (the hardware path does exactly this).
    #[test]
    fn advertisement_is_reregistered_at_each_epoch_boundary_with_the_epochs_token() {
        let secret = AdvSecret::from_bytes([9; 32]);
        let mut e = Engine::new(
            secret.clone(),
            PolicyConfig::default(),
            1,
            SourceKey([0; 16]),
        );
        // Start in the middle of an epoch, tick every 250 ms for 3 epochs.
        let start = 1_000 * ADV_ROTATION_MS + ADV_ROTATION_MS / 3;
        let mut registered = Vec::new();
        let mut t = start;
        while t < start + 3 * ADV_ROTATION_MS {
            if let Some(token) = e.advert_due(t) {
                registered.push((t, token));
                e.advert_registered(t, true);
            }
            t += 250;
        }
        // Once at start, then exactly at each of the three boundaries.
        let times: Vec<u64> = registered.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            times,
            vec![
                start,
                1_001 * ADV_ROTATION_MS,
                1_002 * ADV_ROTATION_MS,
                1_003 * ADV_ROTATION_MS
            ]
        );
        for (t, token) in &registered {
            assert_eq!(*token, secret.token(epoch_of(*t)));
            assert_eq!(*token, e.token(*t));
        }
        let tokens: std::collections::BTreeSet<_> = registered.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            tokens.len(),
            registered.len(),
            "every epoch has a new token"
        );

        // A failed registration is retried after ADV_RETRY_MS, and a
        // registration that completed after the boundary is redone at once.
        let b = 2_000 * ADV_ROTATION_MS;
        let mut e = Engine::new(
            secret.clone(),
            PolicyConfig::default(),
            1,
            SourceKey([0; 16]),
        );
        e.advert_registered(b - 10_000, false);
        assert_eq!(e.advert_due(b - 10_001), None);
        assert_eq!(e.advert_due(b), Some(secret.token(epoch_of(b))));
        e.advert_registered(b + 1, false);
        assert_eq!(e.advert_due(b + ADV_RETRY_MS), None);
        assert_eq!(
            e.advert_due(b + 1 + ADV_RETRY_MS),
            Some(secret.token(epoch_of(b)))
        );
        e.advert_registered(b - 1, true); // due just before the boundary, done after it
        assert_eq!(e.advert_due(b + 5), Some(secret.token(epoch_of(b))));
    }
}
