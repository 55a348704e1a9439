//! Runs `protocol-spec/vectors/roster.json`: the sealed roster
//! (`protocol-spec/encryption.md` §6.1). Each output is computed twice:
//! through meshrelay's API, and straight from the HKDF, AEAD and HPKE
//! crates following the spec's formulas, and the two must agree.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR};
use meshrelay::crypto::ContactCard;
use meshrelay::crypto::domain::{ROSTER_CARD, ROSTER_SECRET_INFO};
use meshrelay::crypto::key_share::{PrekeyRing, Recipient};
use meshrelay::crypto::roster::{CARD_PADDED_SIZES, RosterSecret, SealedCard, SealedSecret};
use meshrelay::crypto::sender_chain::{ChainId, ChainShare};
use meshrelay::room::{Membership, derive_room_id};
use serde_json::json;
use zeroize::Zeroizing;

use crate::rooms_vectors::{FixedRng, arr, h, run, seeded, unh};

#[test]
fn roster_vectors() {
    let defaults = json!({
        "description": "protocol-spec/encryption.md §6.1: the creator's card sealed under the \
                        roster secret in a create (op 6), and an invite (op 7) sealing the \
                        invitee's card and the room's two secrets (its own, then a rotation) to the \
                        invitee's prekey 1; an admin's chain share carrying the rotation. The card nonces \
                        are `create_nonce_aead` and `invite_nonce_aead`; the HPKE ephemeral key is \
                        DeriveKeyPair(eph_ikm).",
        "creator_seed": h(&[1; 32]),
        "creator_name": "Ana",
        "invitee_seed": h(&[2; 32]),
        "invitee_name": "Bo",
        "room_nonce": h(&[0x5a; 16]),
        "roster_secret": h(&[0x77; 32]),
        "rotated_secret": h(&[0x78; 32]),
        "create_nonce_aead": h(&[0x31; 24]),
        "invite_nonce_aead": h(&[0x32; 24]),
        "eph_ikm": h(&[0xe7; 32]),
    });
    run("roster.json", defaults, |v| {
        let creator = seeded(&v["creator_seed"]);
        let invitee = seeded(&v["invitee_seed"]);
        let nonce: [u8; 16] = arr(&v["room_nonce"]);
        let room = derive_room_id(&creator.device_id(), &nonce);
        let secret = RosterSecret::from_bytes(arr(&v["roster_secret"]));
        let rotated = RosterSecret::from_bytes(arr(&v["rotated_secret"]));
        let secrets = [secret.clone(), rotated.clone()];
        let card_a = ContactCard::create(&creator, v["creator_name"].as_str().unwrap(), 1).unwrap();
        let card_b = ContactCard::create(&invitee, v["invitee_name"].as_str().unwrap(), 1).unwrap();

        // The card key and one sealed card, straight from the crates.
        let mut card_key = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(room.as_bytes()), secret.as_bytes())
            .expand(ROSTER_CARD, &mut card_key)
            .unwrap();
        let independent = |card: &ContactCard, aead_nonce: &[u8]| {
            let mut padded = card.to_cbor();
            padded.push(0x80);
            padded.resize(CARD_PADDED_SIZES[0], 0);
            let mut aad = ROSTER_CARD.to_vec();
            aad.extend_from_slice(room.as_bytes());
            aad.extend_from_slice(card.device_id.as_bytes());
            let ct = XChaCha20Poly1305::new(&card_key.into())
                .encrypt(
                    &XNonce::try_from(aead_nonce).unwrap(),
                    Payload {
                        msg: &padded,
                        aad: &aad,
                    },
                )
                .unwrap();
            let mut sealed = aead_nonce.to_vec();
            sealed.extend(ct);
            (aad, sealed)
        };
        let seal = |card: &ContactCard, n: &serde_json::Value| {
            let sealed = SealedCard::seal(&secret, &room, card, &mut FixedRng(unh(n))).unwrap();
            let (aad, bytes) = independent(card, &unh(n));
            assert_eq!(sealed.as_bytes(), &bytes[..]);
            assert_eq!(sealed.open(&secret, &room, &card.device_id).unwrap(), *card);
            (aad, sealed)
        };
        let (create_aad, create_card) = seal(&card_a, &v["create_nonce_aead"]);
        let (_, invite_card) = seal(&card_b, &v["invite_nonce_aead"]);

        // The secret sealed to the invitee's prekey, opened with the crate.
        let to = Recipient {
            device: invitee.device_id(),
            prekey_id: invitee.prekey().id,
            prekey: invitee.prekey().public(),
        };
        let sealed_secret = SealedSecret::seal(
            &secrets,
            &room,
            &creator.device_id(),
            &to,
            &mut FixedRng(unh(&v["eph_ikm"])),
        )
        .unwrap();
        let mut info = ROSTER_SECRET_INFO.to_vec();
        info.extend_from_slice(room.as_bytes());
        info.extend_from_slice(creator.device_id().as_bytes());
        info.extend_from_slice(invitee.device_id().as_bytes());
        info.extend_from_slice(&to.prekey_id.to_be_bytes());
        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(
            &invitee.prekey().secret().to_bytes(),
        )
        .unwrap();
        let enc =
            <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&sealed_secret.enc).unwrap();
        let opened = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            &info,
            &sealed_secret.ct,
            room.as_bytes(),
        )
        .unwrap();
        assert_eq!(opened, [*secret.as_bytes(), *rotated.as_bytes()].concat());
        let ring = PrekeyRing::from_identity(&invitee, 0);
        assert_eq!(
            sealed_secret
                .open(&room, &creator.device_id(), &invitee.device_id(), &ring)
                .unwrap(),
            secrets
        );
        let share = ChainShare {
            chain_id: ChainId([0xc1; 16]),
            index: 0,
            chain_key: Zeroizing::new([0x33; 32]),
            roster: Some(Zeroizing::new(*rotated.as_bytes())),
        };
        let share_bytes = share.to_bytes();
        assert_eq!(ChainShare::from_bytes(&share_bytes).unwrap(), share);

        let create = Membership::CreateSealed {
            creator: creator.device_id(),
            nonce,
            card: create_card.clone(),
        }
        .to_bytes();
        let invite = Membership::InviteSealed {
            invitee: invitee.device_id(),
            card: invite_card.clone(),
            secret: sealed_secret.clone(),
        }
        .to_bytes();
        for p in [&create, &invite] {
            assert_eq!(Membership::from_bytes(p).unwrap().to_bytes(), *p);
        }
        let mut out = v.clone();
        out["room"] = json!(h(room.as_bytes()));
        out["creator"] = json!(creator.device_id().to_string());
        out["invitee"] = json!(invitee.device_id().to_string());
        out["card_key"] = json!(h(&card_key));
        out["create_card_cbor"] = json!(h(&card_a.to_cbor()));
        out["create_card_aad"] = json!(h(&create_aad));
        out["create_sealed_card"] = json!(h(create_card.as_bytes()));
        out["invitee_prekey_id"] = json!(to.prekey_id);
        out["invitee_prekey_secret"] = json!(h(&invitee.prekey().secret().to_bytes()));
        out["secret_info"] = json!(h(&info));
        out["secret_enc"] = json!(h(&sealed_secret.enc));
        out["secret_ct"] = json!(h(&sealed_secret.ct));
        out["membership_create_cbor"] = json!(h(&create));
        out["membership_invite_cbor"] = json!(h(&invite));
        out["chain_share_with_rotation_cbor"] = json!(h(&share_bytes));
        out
    });
}
