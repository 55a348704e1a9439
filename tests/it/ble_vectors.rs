//! `protocol-spec/vectors/ble.json` against the implementation: tokens,
//! the session's exact bytes at MTU 23/185/512, and the tie-break.

use meshrelay::transport::ble::adv::{AdvSecret, AdvToken};
use meshrelay::transport::ble::policy::central_wins;
use meshrelay::transport::ble::session::{NOISE_PARAMS, Role, Session, SessionEvent};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn token(s: &Value) -> AdvToken {
    AdvToken::from_bytes(&unhex(s.as_str().unwrap())).unwrap()
}

fn values(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| unhex(x.as_str().unwrap()))
        .collect()
}

fn drain(s: &mut Session) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn doc() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/protocol-spec/vectors/ble.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn adv_token_vectors() {
    let d = doc();
    assert_eq!(d["noise"], NOISE_PARAMS);
    let cases = d["adv_tokens"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for c in cases {
        let epoch = c["epoch"].as_u64().unwrap();
        let secret = match c.get("ikm") {
            Some(ikm) => AdvSecret::derive(&unhex(ikm.as_str().unwrap())),
            None => {
                let b: [u8; 32] = unhex(c["secret"].as_str().unwrap()).try_into().unwrap();
                AdvSecret::from_bytes(b)
            }
        };
        assert_eq!(secret.token(epoch), token(&c["token"]), "{c}");
    }
}

#[test]
fn session_vectors_reproduce_and_decode() {
    let d = doc();
    for c in d["sessions"].as_array().unwrap() {
        let mtu = c["att_mtu"].as_u64().unwrap() as usize;
        let ec: [u8; 32] = unhex(c["central_ephemeral"].as_str().unwrap())
            .try_into()
            .unwrap();
        let ep: [u8; 32] = unhex(c["peripheral_ephemeral"].as_str().unwrap())
            .try_into()
            .unwrap();
        let (tc, tp) = (token(&c["central_token"]), token(&c["peripheral_token"]));
        let mut cs = Session::with_ephemeral(Role::Central, mtu, tc, 0, Some(&ec)).unwrap();
        let mut ps = Session::with_ephemeral(Role::Peripheral, mtu, tp, 0, Some(&ep)).unwrap();
        // The central's first message is the expected one, byte for byte.
        assert_eq!(drain(&mut cs), values(&c["central_handshake"]), "MTU {mtu}");
        for v in values(&c["central_handshake"]) {
            ps.receive(0, &v).unwrap();
        }
        assert_eq!(
            drain(&mut ps),
            values(&c["peripheral_handshake_and_hello"]),
            "MTU {mtu}"
        );
        for v in values(&c["peripheral_handshake_and_hello"]) {
            cs.receive(0, &v).unwrap();
        }
        assert_eq!(
            cs.poll_event(),
            Some(SessionEvent::Established { peer_token: tp })
        );
        assert_eq!(drain(&mut cs), values(&c["central_hello"]), "MTU {mtu}");
        for v in values(&c["central_hello"]) {
            ps.receive(0, &v).unwrap();
        }
        assert_eq!(
            ps.poll_event(),
            Some(SessionEvent::Established { peer_token: tc })
        );
        let datagram = unhex(c["datagram"].as_str().unwrap());
        cs.send(&datagram).unwrap();
        let dv = values(&c["datagram_values"]);
        assert_eq!(drain(&mut cs), dv, "MTU {mtu}");
        for v in &dv {
            assert!(v.len() <= (mtu - 3).min(512));
            ps.receive(0, v).unwrap();
        }
        assert_eq!(ps.poll_event(), Some(SessionEvent::Datagram(datagram)));
    }
}

#[test]
fn tie_break_vectors() {
    let d = doc();
    for c in d["tie_break"].as_array().unwrap() {
        assert_eq!(
            central_wins(token(&c["central"]), token(&c["peripheral"])),
            c["central_link_kept"].as_bool().unwrap(),
            "{c}"
        );
    }
}
