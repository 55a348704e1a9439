//! Membership event content (`protocol-spec/rooms.md`, "Membership events").
//!
//! Membership payloads are signed, not encrypted, **except the contact
//! cards**: every member, every invitee and every relay can check who may
//! change the room from the device IDs alone, and an invitee can verify the
//! whole history before it holds any key. A device creates and invites
//! with sealed cards (ops 6 and 7, `crate::crypto::roster`): relays learn
//! the members' device IDs, who is admin and when membership changed, never
//! their names, prekeys or card flags. Ops 0 and 1 (cards in clear) are
//! the format of rooms created before the sealed roster; they stay valid.
//!
//! ```text
//! membership = [1, 0, creator_card: bstr, nonce: bstr(16)]   ; create (clear card)
//!            / [1, 1, invitee_card: bstr]                    ; invite (clear card)
//!            / [1, 2, target: bstr(32)]                      ; remove
//!            / [1, 3]                                        ; leave (the signer)
//!            / [1, 4, target: bstr(32)]                      ; promote
//!            / [1, 5, target: bstr(32)]                      ; demote
//!            / [1, 6, creator: bstr(32), nonce: bstr(16), sealed_card: bstr]          ; create
//!            / [1, 7, invitee: bstr(32), sealed_card: bstr, sealed_secret: array]   ; invite
//! room_id = SHA-256("meshrelay/v1/room-id\0" || creator_device_id || nonce)[0..16]
//! ```
//!
//! The room ID commits to its creator, so no one else (no homeserver, no
//! relay) can write a `create` that other nodes would accept for that room.

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::card::{CardError, ContactCard};
use crate::crypto::domain;
use crate::crypto::keys::DeviceId;
use crate::crypto::roster::{RosterError, SealedCard, SealedSecret};
use crate::event::RoomId;

/// Version of the membership payload.
pub const MEMBERSHIP_VERSION: u64 = 1;

/// Why a membership payload was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MembershipError {
    /// Malformed or non-canonical encoding.
    #[error("membership encoding: {0}")]
    Cbor(#[from] CborError),
    /// Unknown payload version.
    #[error("unknown membership version {0}")]
    UnknownVersion(u64),
    /// Unknown operation code.
    #[error("unknown membership operation {0}")]
    UnknownOp(u64),
    /// The embedded contact card is invalid (forged or altered).
    #[error("membership contact card: {0}")]
    Card(#[from] CardError),
    /// A target device key is invalid.
    #[error("membership target is not a valid device key")]
    BadTarget,
    /// A sealed card of an impossible length.
    #[error("membership sealed card: {0}")]
    Sealed(#[from] RosterError),
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Creates the room; the signer (whose card this is) is the first admin.
    Create {
        /// The creator's contact card.
        card: ContactCard,
        /// Random nonce the room ID is derived from.
        nonce: [u8; 16],
    },
    /// Adds a member; carries its card so every member learns its keys.
    Invite {
        /// The invitee's contact card.
        card: ContactCard,
    },
    /// Removes a member.
    Remove {
        /// Who is removed.
        target: DeviceId,
    },
    /// The signer leaves.
    Leave,
    /// Makes a member an admin.
    Promote {
        /// Who is promoted.
        target: DeviceId,
    },
    /// Takes admin rights away.
    Demote {
        /// Who is demoted.
        target: DeviceId,
    },
    /// Creates the room with the creator's card sealed to the roster.
    CreateSealed {
        /// The creator (the signer).
        creator: DeviceId,
        /// Random nonce the room ID is derived from.
        nonce: [u8; 16],
        /// The creator's card, sealed under the roster secret.
        card: SealedCard,
    },
    /// Adds a member; its card is sealed to the roster, and the roster
    /// secret is sealed to it.
    InviteSealed {
        /// The invitee.
        invitee: DeviceId,
        /// Its card, sealed under the roster secret.
        card: SealedCard,
        /// The roster secret, sealed to the invitee's prekey.
        secret: SealedSecret,
    },
}

/// The room ID a creator's nonce gives.
pub fn derive_room_id(creator: &DeviceId, nonce: &[u8; 16]) -> RoomId {
    let h: [u8; 32] = Sha256::new()
        .chain_update(domain::ROOM_ID)
        .chain_update(creator.as_bytes())
        .chain_update(nonce)
        .finalize()
        .into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    RoomId(id)
}

impl Membership {
    /// Operation code on the wire.
    pub fn op(&self) -> u64 {
        match self {
            Membership::Create { .. } => 0,
            Membership::Invite { .. } => 1,
            Membership::Remove { .. } => 2,
            Membership::Leave => 3,
            Membership::Promote { .. } => 4,
            Membership::Demote { .. } => 5,
            Membership::CreateSealed { .. } => 6,
            Membership::InviteSealed { .. } => 7,
        }
    }

    /// A short name for display and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Membership::Create { .. } | Membership::CreateSealed { .. } => "create",
            Membership::Invite { .. } | Membership::InviteSealed { .. } => "invite",
            Membership::Remove { .. } => "remove",
            Membership::Leave => "leave",
            Membership::Promote { .. } => "promote",
            Membership::Demote { .. } => "demote",
        }
    }

    /// The device whose membership or role this changes, given the signer.
    pub fn target(&self, signer: &DeviceId) -> DeviceId {
        match self {
            Membership::Leave => *signer,
            _ => self.named().unwrap_or(*signer),
        }
    }

    /// The device a create or invite makes a member (a remove, promote or
    /// demote names its target; a leave, nobody).
    pub fn named(&self) -> Option<DeviceId> {
        match self {
            Membership::Create { card, .. } | Membership::Invite { card } => Some(card.device_id),
            Membership::CreateSealed { creator, .. } => Some(*creator),
            Membership::InviteSealed { invitee, .. } => Some(*invitee),
            Membership::Remove { target }
            | Membership::Promote { target }
            | Membership::Demote { target } => Some(*target),
            Membership::Leave => None,
        }
    }

    /// A create's creator and nonce.
    pub fn creation(&self) -> Option<(DeviceId, &[u8; 16])> {
        match self {
            Membership::Create { card, nonce } => Some((card.device_id, nonce)),
            Membership::CreateSealed { creator, nonce, .. } => Some((*creator, nonce)),
            _ => None,
        }
    }

    /// The device an invite adds.
    pub fn invitee(&self) -> Option<DeviceId> {
        match self {
            Membership::Invite { card } => Some(card.device_id),
            Membership::InviteSealed { invitee, .. } => Some(*invitee),
            _ => None,
        }
    }

    /// The card of a create or invite, if it travels in clear.
    pub fn clear_card(&self) -> Option<&ContactCard> {
        match self {
            Membership::Create { card, .. } | Membership::Invite { card } => Some(card),
            _ => None,
        }
    }

    /// The sealed card of a create or invite.
    pub fn sealed_card(&self) -> Option<&SealedCard> {
        match self {
            Membership::CreateSealed { card, .. } | Membership::InviteSealed { card, .. } => {
                Some(card)
            }
            _ => None,
        }
    }

    /// Whether this change takes rights away from its target (remove,
    /// leave, demote): the "revocations" of the resolution rule.
    pub fn is_revocation(&self) -> bool {
        matches!(
            self,
            Membership::Remove { .. } | Membership::Leave | Membership::Demote { .. }
        )
    }

    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(600);
        match self {
            Membership::Create { card, nonce } => {
                w.array(4)
                    .u64(MEMBERSHIP_VERSION)
                    .u64(self.op())
                    .bytes(&card.to_cbor())
                    .bytes(nonce);
            }
            Membership::Invite { card } => {
                w.array(3)
                    .u64(MEMBERSHIP_VERSION)
                    .u64(self.op())
                    .bytes(&card.to_cbor());
            }
            Membership::Leave => {
                w.array(2).u64(MEMBERSHIP_VERSION).u64(self.op());
            }
            Membership::Remove { target }
            | Membership::Promote { target }
            | Membership::Demote { target } => {
                w.array(3)
                    .u64(MEMBERSHIP_VERSION)
                    .u64(self.op())
                    .bytes(target.as_bytes());
            }
            Membership::CreateSealed {
                creator,
                nonce,
                card,
            } => {
                w.array(5)
                    .u64(MEMBERSHIP_VERSION)
                    .u64(self.op())
                    .bytes(creator.as_bytes())
                    .bytes(nonce)
                    .bytes(card.as_bytes());
            }
            Membership::InviteSealed {
                invitee,
                card,
                secret,
            } => {
                w.array(5)
                    .u64(MEMBERSHIP_VERSION)
                    .u64(self.op())
                    .bytes(invitee.as_bytes())
                    .bytes(card.as_bytes());
                secret.write(&mut w);
            }
        }
        w.into_bytes()
    }

    /// Strict decoding; embedded cards are verified.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MembershipError> {
        cbor::validate(bytes, 2)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        let v = r.u64()?;
        if v != MEMBERSHIP_VERSION {
            return Err(MembershipError::UnknownVersion(v));
        }
        let op = r.u64()?;
        let want = match op {
            0 => 4,
            1 | 2 | 4 | 5 => 3,
            3 => 2,
            6 | 7 => 5,
            other => return Err(MembershipError::UnknownOp(other)),
        };
        if n != want {
            return Err(CborError::WrongType {
                expected: "membership array of the operation's length",
            }
            .into());
        }
        let target = |r: &mut Reader<'_>| -> Result<DeviceId, MembershipError> {
            DeviceId::from_bytes(&r.byte_array("32-byte target")?)
                .map_err(|_| MembershipError::BadTarget)
        };
        let m = match op {
            0 => {
                let card = ContactCard::from_cbor(r.bytes()?)?;
                let nonce = r.byte_array("16-byte nonce")?;
                Membership::Create { card, nonce }
            }
            1 => Membership::Invite {
                card: ContactCard::from_cbor(r.bytes()?)?,
            },
            2 => Membership::Remove {
                target: target(&mut r)?,
            },
            3 => Membership::Leave,
            4 => Membership::Promote {
                target: target(&mut r)?,
            },
            5 => Membership::Demote {
                target: target(&mut r)?,
            },
            6 => Membership::CreateSealed {
                creator: target(&mut r)?,
                nonce: r.byte_array("16-byte nonce")?,
                card: SealedCard::from_bytes(r.bytes()?)?,
            },
            _ => Membership::InviteSealed {
                invitee: target(&mut r)?,
                card: SealedCard::from_bytes(r.bytes()?)?,
                secret: SealedSecret::read(&mut r)?,
            },
        };
        r.finish()?;
        Ok(m)
    }
}

/// Whether `ev` is a membership event inviting `device` (the invite
/// names it). Says nothing of the invite's authority: the node uses
/// it to expect the room's history (`protocol-spec/wire.md`, "A room that
/// becomes an own room"), the rooms layer judges it.
pub fn invites_device(ev: &crate::event::Event, device: &DeviceId) -> bool {
    ev.kind() == crate::event::EventKind::Membership
        && Membership::from_bytes(ev.payload()).is_ok_and(|m| m.invitee() == Some(*device))
}

/// Whether `ev` creates its room: a `create` signed by the device it names
/// whose nonce gives the event's room ID (`protocol-spec/rooms.md`
/// §1). The room ID commits to its creator, so this names the room's
/// first member from the event alone.
pub fn creates_room(ev: &crate::event::Event) -> bool {
    ev.kind() == crate::event::EventKind::Membership
        && Membership::from_bytes(ev.payload()).is_ok_and(|m| {
            m.creation().is_some_and(|(creator, nonce)| {
                creator == ev.sender() && derive_room_id(&creator, nonce) == ev.room()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use proptest::prelude::*;

    fn arb_membership() -> impl Strategy<Value = Membership> {
        (0u64..8, any::<u8>(), any::<[u8; 16]>(), "[a-z]{0,12}").prop_map(
            |(op, seed, nonce, name)| {
                let id = Identity::from_seed(&[seed; 32]);
                let card = ContactCard::create(&id, &name, seed as u64).unwrap();
                let target = id.device_id();
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed as u64);
                let secret = crate::crypto::roster::RosterSecret::generate(&mut rng);
                let sealed = SealedCard::seal(&secret, &RoomId(nonce), &card, &mut rng).unwrap();
                match op {
                    6 => {
                        return Membership::CreateSealed {
                            creator: target,
                            nonce,
                            card: sealed,
                        };
                    }
                    7 => {
                        return Membership::InviteSealed {
                            invitee: target,
                            card: sealed,
                            secret: SealedSecret {
                                prekey_id: seed as u32,
                                enc: [seed; 32],
                                ct: vec![seed; 48],
                            },
                        };
                    }
                    _ => {}
                }
                match op {
                    0 => Membership::Create { card, nonce },
                    1 => Membership::Invite { card },
                    2 => Membership::Remove { target },
                    3 => Membership::Leave,
                    4 => Membership::Promote { target },
                    _ => Membership::Demote { target },
                }
            },
        )
    }

    proptest! {
        #[test]
        fn membership_round_trips(m in arb_membership()) {
            prop_assert_eq!(Membership::from_bytes(&m.to_bytes()).unwrap(), m);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Membership::from_bytes(&bytes);
        }
    }

    #[test]
    fn altered_card_in_invite_is_rejected() {
        let id = Identity::from_seed(&[1; 32]);
        let mut card = ContactCard::create(&id, "Bo", 1).unwrap();
        card.name = "Eve".into();
        let bytes = Membership::Invite { card }.to_bytes();
        assert!(matches!(
            Membership::from_bytes(&bytes),
            Err(MembershipError::Card(CardError::BadSignature))
        ));
    }

    #[test]
    fn a_create_names_its_room_creator_and_nobody_else() {
        let ana = Identity::from_seed(&[1; 32]);
        let eve = Identity::from_seed(&[2; 32]);
        let nonce = [7u8; 16];
        let room = derive_room_id(&ana.device_id(), &nonce);
        let event = |who: &Identity, room, m: Membership| {
            crate::event::UnsignedEvent {
                room,
                sender: who.device_id(),
                seq: 1,
                prev: vec![],
                origin_ts_ms: 1,
                expires_ms: 2,
                kind: crate::event::EventKind::Membership,
                payload: m.to_bytes(),
            }
            .sign(who)
            .unwrap()
        };
        let card = |who: &Identity| ContactCard::create(who, "x", 1).unwrap();
        let create = |who: &Identity| Membership::Create {
            card: card(who),
            nonce,
        };
        assert!(creates_room(&event(&ana, room, create(&ana))));
        // Eve cannot create Ana's room, nor sign Ana's create.
        assert!(!creates_room(&event(&eve, room, create(&eve))));
        assert!(!creates_room(&event(&eve, room, create(&ana))));
        // Another nonce gives another room.
        let other = derive_room_id(&ana.device_id(), &[8; 16]);
        assert!(!creates_room(&event(&ana, other, create(&ana))));
        assert!(!creates_room(&event(
            &ana,
            room,
            Membership::Invite { card: card(&eve) }
        )));
    }
}
