//! Writes `protocol-spec/vectors/ble.json` and the seed corpus of the
//! `ble_session` fuzz target from the implementation, with fixed keys.
//! Run from the repository root: `cargo run --example ble_vectors`.
//! `tests/it/ble_vectors.rs` checks the committed file against the code.

use meshrelay::transport::ble::adv::{AdvSecret, AdvToken};
use meshrelay::transport::ble::policy::central_wins;
use meshrelay::transport::ble::session::{Role, Session};
use serde_json::json;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn drain(s: &mut Session) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn main() {
    let mut adv = Vec::new();
    for (ikm, epoch) in [
        (&b"device secret one"[..], 0u64),
        (b"device secret one", 1_960_000),
        (b"another device", 1_960_000),
    ] {
        let s = AdvSecret::derive(ikm);
        adv.push(json!({"ikm": hex(ikm), "epoch": epoch, "token": hex(&s.token(epoch).0)}));
    }
    let raw = AdvSecret::from_bytes([0x42; 32]);
    adv.push(json!({"secret": hex(&[0x42; 32]), "epoch": 5, "token": hex(&raw.token(5).0)}));

    let mut sessions = Vec::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for mtu in [23usize, 185, 512] {
        let (tc, tp) = (AdvToken([0xc1; 6]), AdvToken([0xd2; 6]));
        let mut c = Session::with_ephemeral(Role::Central, mtu, tc, 0, Some(&[0x11; 32])).unwrap();
        let mut p =
            Session::with_ephemeral(Role::Peripheral, mtu, tp, 0, Some(&[0x22; 32])).unwrap();
        let m1 = drain(&mut c);
        for v in &m1 {
            p.receive(0, v).unwrap();
        }
        let m2 = drain(&mut p);
        for v in &m2 {
            c.receive(0, v).unwrap();
        }
        let m3 = drain(&mut c);
        for v in &m3 {
            p.receive(0, v).unwrap();
        }
        let datagram: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        c.send(&datagram).unwrap();
        let m4 = drain(&mut c);
        let hx = |m: &Vec<Vec<u8>>| m.iter().map(|v| hex(v)).collect::<Vec<_>>();
        sessions.push(json!({
            "att_mtu": mtu,
            "central_ephemeral": hex(&[0x11; 32]),
            "peripheral_ephemeral": hex(&[0x22; 32]),
            "central_token": hex(&tc.0),
            "peripheral_token": hex(&tp.0),
            "central_handshake": hx(&m1),
            "peripheral_handshake_and_hello": hx(&m2),
            "central_hello": hx(&m3),
            "datagram": hex(&datagram),
            "datagram_values": hx(&m4),
        }));
        // Fuzz seeds: length-prefixed values as fuzz_session reads them.
        for set in [&m1, &m3, &m4] {
            let mut seed = Vec::new();
            for v in set.iter() {
                seed.extend_from_slice(&(v.len() as u16).to_be_bytes());
                seed.extend_from_slice(v);
            }
            corpus.push(seed);
        }
    }
    let tie: Vec<_> = [([1u8; 6], [2u8; 6]), ([2; 6], [1; 6]), ([0, 0, 0, 0, 0, 9], [0, 0, 0, 0, 1, 0])]
        .iter()
        .map(|(a, b)| json!({"central": hex(a), "peripheral": hex(b), "central_link_kept": central_wins(AdvToken(*a), AdvToken(*b))}))
        .collect();
    let doc = json!({
        "description": "BLE link vectors (protocol-spec/ble.md). Session values are ATT values in order; ephemeral keys are fixed for reproducibility only.",
        "noise": meshrelay::transport::ble::session::NOISE_PARAMS,
        "adv_tokens": adv,
        "sessions": sessions,
        "tie_break": tie,
    });
    std::fs::write(
        "protocol-spec/vectors/ble.json",
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
    let dir = std::path::Path::new("fuzz/corpus/ble_session");
    std::fs::create_dir_all(dir).unwrap();
    corpus.push(vec![]);
    corpus.push(vec![0, 7, 1, 0, 0, 5, 0, 1, 0]);
    corpus.push(vec![0, 10, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]);
    for (i, seed) in corpus.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
    println!(
        "wrote protocol-spec/vectors/ble.json and {} seeds",
        corpus.len()
    );
}
