//! Replays the committed fuzz corpora (`fuzz/corpus/*`) through the same
//! library entry points the fuzz targets call.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn event_decode_corpus_replays() {
    let inputs = corpus("event_decode");
    assert!(inputs.len() >= 10, "seed corpus is missing");
    let mut accepted = 0;
    for (_path, bytes) in &inputs {
        meshrelay::event::fuzz_decode(bytes);
        if meshrelay::event::Event::decode(bytes).is_ok() {
            accepted += 1;
        }
    }
    // The seed corpus holds valid events as well as invalid ones.
    assert!(accepted >= 3, "only {accepted} valid events in the corpus");
}

#[test]
fn ble_session_corpus_replays() {
    let inputs = corpus("ble_session");
    assert!(inputs.len() >= 10, "seed corpus is missing");
    let mut delivered = 0;
    for (_path, bytes) in &inputs {
        delivered += meshrelay::transport::ble::session::fuzz_session(bytes);
    }
    // The seeds hold the vectors' sealed datagram (fixed keys) at MTU 23,
    // 185 and 512: each opens in the fuzz target's established session.
    assert!(delivered >= 3, "only {delivered} datagrams opened");
}
