//! Replays the committed fuzz corpus (`fuzz/corpus/`) through the fuzz
//! target bodies, so the seeds keep working on stable Rust.

use std::fs;
use std::path::Path;

use meshrelay::wire::{Frame, fuzz_frame, fuzz_reassembly};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus for {target}");
    files
}

#[test]
fn fuzz_corpus_frame_decode() {
    for (name, data) in corpus("frame_decode") {
        let decoded = fuzz_frame(&data);
        if name.starts_with("ok-") {
            let f = decoded
                .unwrap_or_else(|| panic!("{name} should decode: {:?}", Frame::decode(&data)));
            assert_eq!(f.encode(), data, "{name}");
        } else {
            assert!(
                name.starts_with("bad-"),
                "seed {name} must start with ok- or bad-"
            );
            assert!(
                decoded.is_none(),
                "{name} should be rejected, got {decoded:?}"
            );
        }
    }
}

#[test]
fn fuzz_corpus_reassembly() {
    for (name, data) in corpus("reassembly") {
        let expected: usize = name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("seed {name} must end in -N"));
        assert_eq!(fuzz_reassembly(&data), expected, "{name}");
    }
}
