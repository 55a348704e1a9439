//! Authorization and deterministic resolution of membership
//! (`protocol-spec/rooms.md`, "Authorization" and "Resolution rule").
//!
//! Input: the membership events of a room's DAG and their ancestry. Output:
//! a verdict for every membership event and the resulting member list,
//! identical on every node holding the same events, whatever order they
//! arrived in.
//!
//! 1. **Order T.** Membership events in a deterministic topological order:
//!    Kahn's algorithm on the ancestry relation, taking among the ready
//!    events the smallest `(origin_ts_ms, event_id)`.
//! 2. **Pass.** Walk T. An event is valid when its signer is authorized in
//!    the state *at its causal position* (the state obtained by applying the
//!    valid membership events among its ancestors) and it is not knocked out.
//! 3. **Concurrent revocation.** A valid remove/demote of X, or X's leave,
//!    *attacks* every valid membership event signed by X that is concurrent
//!    with it (neither ancestor nor descendant), except other revocations
//!    of X itself (they agree). Events *after* a
//!    revocation fail step 2 already, so a removed admin cannot keep its
//!    power by citing old predecessors. Victims of attackers that are not
//!    themselves attacked are knocked out; if every attacker is attacked
//!    (admins removing each other), the attacker earliest in T wins. Repeat
//!    from 2 until no valid event is attacked. The knocked-out set only
//!    grows, so this ends after at most one pass per membership event.
//! 4. **Apply.** Applying valid events in T order: an invite of X that is
//!    concurrent with a valid remove or leave of X is skipped (removal wins
//!    over a concurrent invite); a promote of X concurrent with any valid
//!    revocation of X is skipped (demotion wins); an invite that would take
//!    the room past `ROOM_CAP` is skipped (concurrent invites from several
//!    partitions cannot overfill it).

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::crypto::card::ContactCard;
use crate::crypto::keys::DeviceId;
use crate::event::{EventId, RoomId};
use crate::room::dag::Bits;
use crate::room::membership::{Membership, derive_room_id};

/// Most devices in one room.
pub const ROOM_CAP: usize = 256;

/// Why a membership event is not valid. Invalid events stay in the DAG (they
/// are signed and others cite them) but change nothing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// A create that has predecessors, is not signed by its card's device,
    /// or whose room ID does not commit to its signer.
    #[error(
        "create event is not the room's genesis (room ID does not commit to its signer, or it has membership predecessors)"
    )]
    BadCreate,
    /// Another valid create with a smaller event ID exists.
    #[error("a second create event for the room")]
    DuplicateCreate,
    /// No valid create among the event's ancestors.
    #[error("no room create among the event's ancestors")]
    NoCreate,
    /// The signer was not an admin at the event's causal position.
    #[error("signer {0} was not an admin at this point of the room history")]
    SignerNotAdmin(DeviceId),
    /// The signer was not a member at the event's causal position.
    #[error("signer {0} was not a member at this point of the room history")]
    SignerNotMember(DeviceId),
    /// The target was not a member.
    #[error("target {0} is not a member")]
    TargetNotMember(DeviceId),
    /// The invitee is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(DeviceId),
    /// Promote of an admin or demote of a non-admin.
    #[error("{0} already has that role")]
    RoleUnchanged(DeviceId),
    /// The room has `ROOM_CAP` members.
    #[error("room is full ({ROOM_CAP} devices)")]
    RoomFull,
    /// The signer's rights were revoked by a concurrent event.
    #[error("signer's rights were revoked by concurrent event {0}")]
    RevokedConcurrently(EventId),
}

impl AuthError {
    /// Stable error-class name for test vectors.
    pub fn class(&self) -> &'static str {
        match self {
            AuthError::BadCreate => "bad_create",
            AuthError::DuplicateCreate => "duplicate_create",
            AuthError::NoCreate => "no_create",
            AuthError::SignerNotAdmin(_) => "signer_not_admin",
            AuthError::SignerNotMember(_) => "signer_not_member",
            AuthError::TargetNotMember(_) => "target_not_member",
            AuthError::AlreadyMember(_) => "already_member",
            AuthError::RoleUnchanged(_) => "role_unchanged",
            AuthError::RoomFull => "room_full",
            AuthError::RevokedConcurrently(_) => "revoked_concurrently",
        }
    }
}

/// A room member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Device ID.
    pub device: DeviceId,
    /// The contact card it was invited with (keys, prekey, name): `None`
    /// while its card is sealed and this device holds no roster secret
    /// that opens it (a carrier; or a card its inviter sealed wrongly).
    pub card: Option<ContactCard>,
    /// Whether it is an admin.
    pub admin: bool,
}

/// Who is in a room, at some point of its history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipState {
    /// Members by device.
    pub members: BTreeMap<DeviceId, Member>,
}

impl MembershipState {
    /// Whether `d` is a member.
    pub fn is_member(&self, d: &DeviceId) -> bool {
        self.members.contains_key(d)
    }

    /// Whether `d` is an admin member.
    pub fn is_admin(&self, d: &DeviceId) -> bool {
        self.members.get(d).is_some_and(|m| m.admin)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Roles during resolution: device -> (admin, index of the event holding
/// its card). Cheap to build; cards are attached only at the end.
#[derive(Debug, Default)]
struct Roles(BTreeMap<DeviceId, (bool, usize)>);

impl Roles {
    fn is_member(&self, d: &DeviceId) -> bool {
        self.0.contains_key(d)
    }
    fn is_admin(&self, d: &DeviceId) -> bool {
        self.0.get(d).is_some_and(|r| r.0)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A membership event as the resolver sees it.
#[derive(Debug, Clone)]
pub(crate) struct MEvent<'a> {
    pub id: EventId,
    pub sender: DeviceId,
    pub ts: u64,
    pub op: &'a Membership,
    /// The card the event names, when readable (clear, or opened with the
    /// roster secret).
    pub card: Option<&'a ContactCard>,
    /// Membership indices among strict ancestors.
    pub anc: &'a Bits,
}

/// The outcome of resolution. Two resolutions are equal when their order,
/// verdicts and state are (internal indices differ between nodes).
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Membership events in order T.
    pub order: Vec<EventId>,
    /// Verdict per membership event.
    pub verdicts: BTreeMap<EventId, Result<(), AuthError>>,
    /// Current membership: all valid events applied.
    pub state: MembershipState,
    /// Valid membership events, as membership indices (internal).
    pub(crate) valid: Bits,
    /// T as membership indices (internal).
    pub(crate) t_order: Vec<usize>,
}

impl PartialEq for Resolution {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order && self.verdicts == other.verdicts && self.state == other.state
    }
}

impl Eq for Resolution {}

struct Ctx<'a, 'b> {
    ev: &'b [MEvent<'a>],
    /// Revocations (indices) by target device.
    revs: BTreeMap<DeviceId, Vec<usize>>,
    /// Removes and leaves (indices) by target device.
    removals: BTreeMap<DeviceId, Vec<usize>>,
}

impl<'a, 'b> Ctx<'a, 'b> {
    /// Indexes the revocations and removals of `ev` by target.
    fn new(ev: &'b [MEvent<'a>]) -> Self {
        let mut revs: BTreeMap<DeviceId, Vec<usize>> = BTreeMap::new();
        let mut removals: BTreeMap<DeviceId, Vec<usize>> = BTreeMap::new();
        for (i, e) in ev.iter().enumerate() {
            if e.op.is_revocation() {
                let target = e.op.target(&e.sender);
                revs.entry(target).or_default().push(i);
                if !matches!(e.op, Membership::Demote { .. }) {
                    removals.entry(target).or_default().push(i);
                }
            }
        }
        Ctx { ev, revs, removals }
    }

    fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b && !self.ev[a].anc.contains(b) && !self.ev[b].anc.contains(a)
    }

    /// Applies the events of `t` for which `include` holds, in T order.
    fn apply(&self, t: &[usize], include: impl Fn(usize) -> bool) -> Roles {
        let mut st = Roles::default();
        for &i in t {
            if !include(i) {
                continue;
            }
            let e = &self.ev[i];
            match e.op {
                Membership::Create { .. } | Membership::CreateSealed { .. } => {
                    st.0.insert(e.sender, (true, i));
                }
                Membership::Invite { .. } | Membership::InviteSealed { .. } => {
                    let Some(x) = e.op.invitee() else { continue };
                    let removed = self
                        .removals
                        .get(&x)
                        .is_some_and(|rs| rs.iter().any(|&r| include(r) && self.concurrent(r, i)));
                    // The cap holds even when concurrent invites from
                    // several partitions meet: later ones in T are skipped.
                    if !removed && !st.0.contains_key(&x) && st.0.len() < ROOM_CAP {
                        st.0.insert(x, (false, i));
                    }
                }
                Membership::Remove { target } => {
                    st.0.remove(target);
                }
                Membership::Leave => {
                    st.0.remove(&e.sender);
                }
                Membership::Promote { target } => {
                    let revoked = self
                        .revs
                        .get(target)
                        .is_some_and(|rs| rs.iter().any(|&r| include(r) && self.concurrent(r, i)));
                    if let (false, Some(m)) = (revoked, st.0.get_mut(target)) {
                        m.0 = true;
                    }
                }
                Membership::Demote { target } => {
                    if let Some(m) = st.0.get_mut(target) {
                        m.0 = false;
                    }
                }
            }
        }
        st
    }

    /// Turns roles into members with their cards.
    fn materialize(&self, roles: &Roles) -> MembershipState {
        let mut members = BTreeMap::new();
        for (d, &(admin, src)) in &roles.0 {
            if let Some(e) = self.ev.get(src) {
                members.insert(
                    *d,
                    Member {
                        device: *d,
                        card: e.card.cloned(),
                        admin,
                    },
                );
            }
        }
        MembershipState { members }
    }

    fn authorize(
        &self,
        i: usize,
        st: &Roles,
        room: &RoomId,
        genesis: Option<usize>,
    ) -> Result<(), AuthError> {
        let e = &self.ev[i];
        if let Some((creator, nonce)) = e.op.creation() {
            if !e.anc.is_empty() || creator != e.sender || derive_room_id(&e.sender, nonce) != *room
            {
                return Err(AuthError::BadCreate);
            }
            return if genesis == Some(i) {
                Ok(())
            } else {
                Err(AuthError::DuplicateCreate)
            };
        }
        if st.is_empty() {
            return Err(AuthError::NoCreate);
        }
        let admin = |st: &Roles| {
            if st.is_admin(&e.sender) {
                Ok(())
            } else {
                Err(AuthError::SignerNotAdmin(e.sender))
            }
        };
        match e.op {
            Membership::Create { .. } | Membership::CreateSealed { .. } => {
                Err(AuthError::BadCreate)
            }
            Membership::Invite { .. } | Membership::InviteSealed { .. } => {
                admin(st)?;
                let x = e.op.invitee().unwrap_or(e.sender);
                if st.is_member(&x) {
                    Err(AuthError::AlreadyMember(x))
                } else if st.len() >= ROOM_CAP {
                    Err(AuthError::RoomFull)
                } else {
                    Ok(())
                }
            }
            Membership::Remove { target } => {
                admin(st)?;
                if st.is_member(target) {
                    Ok(())
                } else {
                    Err(AuthError::TargetNotMember(*target))
                }
            }
            Membership::Leave => {
                if st.is_member(&e.sender) {
                    Ok(())
                } else {
                    Err(AuthError::SignerNotMember(e.sender))
                }
            }
            Membership::Promote { target } | Membership::Demote { target } => {
                admin(st)?;
                let (is_admin, _) =
                    st.0.get(target)
                        .ok_or(AuthError::TargetNotMember(*target))?;
                let promote = matches!(e.op, Membership::Promote { .. });
                if *is_admin == promote {
                    Err(AuthError::RoleUnchanged(*target))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Order T (see the module docs).
fn order_t(ev: &[MEvent<'_>]) -> Vec<usize> {
    let n = ev.len();
    let mut remaining: Vec<usize> = ev.iter().map(|e| e.anc.count()).collect();
    let mut ready: BTreeSet<(u64, EventId, usize)> = BTreeSet::new();
    for (i, e) in ev.iter().enumerate() {
        if remaining[i] == 0 {
            ready.insert((e.ts, e.id, i));
        }
    }
    let mut out = Vec::with_capacity(n);
    while let Some((_, _, x)) = ready.pop_first() {
        out.push(x);
        for (j, e) in ev.iter().enumerate() {
            if e.anc.contains(x) {
                remaining[j] -= 1;
                if remaining[j] == 0 {
                    ready.insert((e.ts, e.id, j));
                }
            }
        }
    }
    out
}

/// Resolves the membership events `ev` (indexed by membership index) of
/// `room`.
pub(crate) fn resolve(room: &RoomId, ev: &[MEvent<'_>]) -> Resolution {
    let n = ev.len();
    let ctx = Ctx::new(ev);
    let t = order_t(ev);
    let mut pos = vec![0usize; n];
    for (p, &i) in t.iter().enumerate() {
        pos[i] = p;
    }
    // The genesis: the well-formed create with the smallest event ID.
    let genesis = (0..n)
        .filter(|&i| match ev[i].op.creation() {
            Some((creator, nonce)) => {
                ev[i].anc.is_empty()
                    && creator == ev[i].sender
                    && derive_room_id(&ev[i].sender, nonce) == *room
            }
            None => false,
        })
        .min_by_key(|&i| ev[i].id);

    let mut knocked: BTreeMap<usize, usize> = BTreeMap::new(); // victim -> attacker
    loop {
        // Pass.
        let mut valid = Bits::with_len(n);
        let mut verdict: Vec<Result<(), AuthError>> = vec![Ok(()); n];
        for &i in &t {
            if let Some(&by) = knocked.get(&i) {
                verdict[i] = Err(AuthError::RevokedConcurrently(ev[by].id));
                continue;
            }
            let st = ctx.apply(&t, |j| ev[i].anc.contains(j) && valid.contains(j));
            verdict[i] = ctx.authorize(i, &st, room, genesis);
            if verdict[i].is_ok() {
                valid.insert(i);
            }
        }
        // Attacks among valid events.
        let mut attacks: Vec<(usize, usize)> = Vec::new();
        for &c in &t {
            if !valid.contains(c) || !ev[c].op.is_revocation() {
                continue;
            }
            let x = ev[c].op.target(&ev[c].sender);
            for &e in &t {
                // Revocations of the same target agree; they never attack
                // each other.
                let same_target = ev[e].op.is_revocation() && ev[e].op.target(&ev[e].sender) == x;
                if valid.contains(e) && ev[e].sender == x && !same_target && ctx.concurrent(c, e) {
                    attacks.push((c, e));
                }
            }
        }
        if attacks.is_empty() {
            let state = ctx.materialize(&ctx.apply(&t, |j| valid.contains(j)));
            let verdicts = (0..n).map(|i| (ev[i].id, verdict[i].clone())).collect();
            return Resolution {
                order: t.iter().map(|&i| ev[i].id).collect(),
                verdicts,
                state,
                valid,
                t_order: t,
            };
        }
        let attacked: BTreeSet<usize> = attacks.iter().map(|&(_, e)| e).collect();
        let mut winners: Vec<(usize, usize)> = attacks
            .iter()
            .copied()
            .filter(|(c, _)| !attacked.contains(c))
            .collect();
        if winners.is_empty() {
            // Every attacker is attacked: the earliest attacker in T wins.
            let first = attacks
                .iter()
                .map(|&(c, _)| c)
                .min_by_key(|&c| pos[c])
                .unwrap_or(0);
            winners = attacks
                .iter()
                .copied()
                .filter(|(c, _)| *c == first)
                .collect();
        }
        for (c, e) in winners {
            knocked.entry(e).or_insert(c);
        }
    }
}

/// The state at a position whose membership ancestors are `anc`.
pub(crate) fn state_at(ev: &[MEvent<'_>], res: &Resolution, anc: &Bits) -> MembershipState {
    let ctx = Ctx::new(ev);
    ctx.materialize(&ctx.apply(&res.t_order, |j| anc.contains(j) && res.valid.contains(j)))
}

/// Admission (`protocol-spec/rooms.md`, "Admission"): membership as an
/// event's own causal past defines it, independent of anything concurrent
/// or later. `past` lists the membership indices among the event's strict
/// ancestors that are *causally valid* (each authorized by the same rule
/// over its own past), in a topological order fixed by the past alone.
/// Returns the members of that state.
pub(crate) fn causal_members(ev: &[MEvent<'_>], past: &[usize]) -> BTreeSet<DeviceId> {
    let ctx = Ctx::new(ev);
    let in_past: BTreeSet<usize> = past.iter().copied().collect();
    ctx.apply(past, |j| in_past.contains(&j))
        .0
        .into_keys()
        .collect()
}

/// Whether membership event `i` is causally valid: authorized in the state
/// its causally valid past defines (see [`causal_members`]); a create is
/// valid when it is well formed (it is the root of its own past).
pub(crate) fn causally_valid(room: &RoomId, ev: &[MEvent<'_>], past: &[usize], i: usize) -> bool {
    let ctx = Ctx::new(ev);
    let in_past: BTreeSet<usize> = past.iter().copied().collect();
    let st = ctx.apply(past, |j| in_past.contains(&j));
    let genesis = ev
        .get(i)
        .is_some_and(|e| e.op.creation().is_some())
        .then_some(i);
    i < ev.len() && ctx.authorize(i, &st, room, genesis).is_ok()
}
