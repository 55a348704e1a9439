//! Event encode / decode / sign / verify for 256 B, 1 KiB and the largest
//! event, plus raw ed25519 `verify_strict` over the same number of bytes as
//! the baseline the event path is judged against (goal: ratio <= 1.10).
//!
//! `cargo bench --bench event` runs the criterion groups, then measures the
//! ratio (event verification = decode + verify, over raw `verify_strict`)
//! in interleaved rounds in the same process and prints a table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey};
use meshrelay::crypto::{Identity, KeyCache};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::limits::{MAX_PAYLOAD_BYTES, MAX_PREV_EVENTS};

/// One benchmark case: an unsigned event whose signed encoding has a given
/// size, and its signed form.
struct Case {
    label: &'static str,
    unsigned: UnsignedEvent,
    signed: Event,
}

fn unsigned(id: &Identity, prev: usize, payload: usize) -> UnsignedEvent {
    UnsignedEvent {
        room: RoomId([7; 16]),
        sender: id.device_id(),
        seq: 42,
        prev: (0..prev as u8).map(|i| EventId([i; 32])).collect(),
        origin_ts_ms: 1_700_000_000_000,
        expires_ms: 1_700_000_000_000 + 86_400_000,
        kind: EventKind::Message,
        payload: vec![0x5a; payload],
    }
}

/// An event of exactly `size` encoded bytes with two predecessors.
fn sized(id: &Identity, label: &'static str, size: usize) -> Case {
    let mut payload = size.saturating_sub(250);
    loop {
        let u = unsigned(id, 2, payload);
        let ev = u.clone().sign(id).expect("sign");
        match ev.bytes().len() {
            n if n == size => {
                return Case {
                    label,
                    unsigned: u,
                    signed: ev,
                };
            }
            n if n < size => payload += 1,
            _ => payload -= 1,
        }
    }
}

fn cases(id: &Identity) -> Vec<Case> {
    let largest = unsigned(id, MAX_PREV_EVENTS, MAX_PAYLOAD_BYTES);
    let largest_ev = largest.clone().sign(id).expect("sign");
    vec![
        sized(id, "256B", 256),
        sized(id, "1KiB", 1024),
        Case {
            label: "16KiB",
            unsigned: largest,
            signed: largest_ev,
        },
    ]
}

/// The baseline: a raw ed25519 key, message and signature of `len` bytes.
fn raw(
    len: usize,
) -> (
    ed25519_dalek::VerifyingKey,
    Vec<u8>,
    ed25519_dalek::Signature,
) {
    let sk = SigningKey::from_bytes(&[9; 32]);
    let msg = vec![0x5a; len];
    let sig = sk.sign(&msg);
    (sk.verifying_key(), msg, sig)
}

fn bench(c: &mut Criterion) {
    let id = Identity::from_seed(&[1; 32]);
    for case in cases(&id) {
        let n = case.signed.bytes().len();
        let mut g = c.benchmark_group(format!("event/{}", case.label));
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(BenchmarkId::new("encode", n), |b| {
            b.iter(|| black_box(&case.unsigned).signing_bytes())
        });
        g.bench_function(BenchmarkId::new("decode", n), |b| {
            b.iter(|| Event::decode_unverified(black_box(case.signed.bytes())))
        });
        g.bench_function(BenchmarkId::new("sign", n), |b| {
            b.iter(|| black_box(&case.unsigned).clone().sign(&id))
        });
        g.bench_function(BenchmarkId::new("verify", n), |b| {
            b.iter(|| Event::decode(black_box(case.signed.bytes())))
        });
        let mut cache = KeyCache::default();
        g.bench_function(BenchmarkId::new("verify_cached_key", n), |b| {
            b.iter(|| Event::decode_cached(black_box(case.signed.bytes()), &mut cache))
        });
        let (vk, msg, sig) = raw(n);
        g.bench_function(BenchmarkId::new("raw_verify_strict", n), |b| {
            b.iter(|| vk.verify_strict(black_box(&msg), &sig))
        });
        g.finish();
    }
}

/// Mean per-operation time of `f` over `iters` calls.
fn per_op(iters: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / iters
}

/// Measures decode+verify against raw `verify_strict` in interleaved
/// rounds and prints the ratios of the best (least disturbed) rounds. Two
/// baselines: the key already parsed (pure signature check), and the key
/// parsed from its 32 bytes first, as any receiver of an event must.
fn ratio_report() {
    let id = Identity::from_seed(&[1; 32]);
    println!();
    println!(
        "| event | bytes | raw verify_strict | decode+verify | ratio | decode_cached+verify | ratio | key from bytes + verify_strict | decode+verify / it |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for case in cases(&id) {
        let bytes = case.signed.bytes();
        let (vk, msg, sig) = raw(bytes.len());
        let key_bytes = vk.to_bytes();
        let mut cache = KeyCache::default();
        // Each round times every variant back to back; the fastest round of
        // each is its cost free of interference from other processes (noise
        // on a shared machine only ever adds time).
        let mut best = [f64::INFINITY; 4];
        for _ in 0..301 {
            let t = [
                per_op(20, || {
                    black_box(vk.verify_strict(black_box(&msg), &sig).is_ok());
                }),
                per_op(20, || {
                    black_box(Event::decode(black_box(bytes)).is_ok());
                }),
                per_op(20, || {
                    black_box(Event::decode_cached(black_box(bytes), &mut cache).is_ok());
                }),
                per_op(20, || {
                    let k = ed25519_dalek::VerifyingKey::from_bytes(black_box(&key_bytes));
                    black_box(k.is_ok_and(|k| k.verify_strict(black_box(&msg), &sig).is_ok()));
                }),
            ];
            for (b, t) in best.iter_mut().zip(t) {
                *b = b.min(us(t));
            }
        }
        let [r, e, c, p] = best;
        let (rr, rc, rp) = (e / r, c / r, e / p);
        println!(
            "| {} | {} | {r:.1} µs | {e:.1} µs | {rr:.3} | {c:.1} µs | {rc:.3} | {p:.1} µs | {rp:.3} |",
            case.label,
            bytes.len(),
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    // MESHRELAY_BENCH_RATIO_ONLY=1 skips the criterion groups.
    if std::env::var_os("MESHRELAY_BENCH_RATIO_ONLY").is_none() {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c);
        c.final_summary();
    }
    if !quick {
        ratio_report();
    }
}
