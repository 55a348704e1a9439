//! The homeserver adapter against a real Synapse on 127.0.0.1, started once
//! per test run by `scripts/synapse.sh` (state in `target/synapse-it-<pid>`,
//! stopped by the script's watcher when this process exits).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use meshrelay::crypto::Identity;
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::transport::homeserver::{
    AccessToken, BUNDLE_EVENT_TYPE, BundleError, Client, HomeserverError, MAX_BUNDLE_BYTES,
    RetryPolicy, RoomEvent, decode_content, pack,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

/// Long-poll timeout used by the tests' `/sync` calls.
const POLL: Duration = Duration::from_secs(5);

pub(crate) struct Synapse {
    pub(crate) url: String,
    pub(crate) dir: PathBuf,
}

pub(crate) fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/synapse.sh")
}

pub(crate) fn synapse() -> &'static Synapse {
    static S: OnceLock<Synapse> = OnceLock::new();
    S.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("synapse-it-{}", std::process::id()));
        let t0 = Instant::now();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .env("SYNAPSE_DIR", &dir)
            .env("SYNAPSE_WATCH_PID", std::process::id().to_string())
            .env("SYNAPSE_CLEANUP", "1")
            .output()
            .expect("run scripts/synapse.sh");
        assert!(
            out.status.success(),
            "synapse.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        eprintln!("synapse at {url} (started in {:?})", t0.elapsed());
        Synapse { url, dir }
    })
}

pub(crate) struct User {
    pub(crate) user_id: String,
    pub(crate) token: String,
}

pub(crate) fn register(prefix: &str, admin: bool) -> User {
    static N: AtomicU32 = AtomicU32::new(0);
    let s = synapse();
    let name = format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed));
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("register")
        .arg(&name)
        .arg("--json")
        .env("SYNAPSE_DIR", &s.dir);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().expect("run synapse.sh register");
    assert!(
        out.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("register json");
    User {
        user_id: v["user_id"].as_str().expect("user_id").to_owned(),
        token: v["access_token"].as_str().expect("token").to_owned(),
    }
}

fn client_with(user: &User, policy: RetryPolicy) -> Client {
    Client::new(&synapse().url, policy, Box::new(StdRng::seed_from_u64(42)))
        .expect("client")
        .with_token(AccessToken::new(user.token.clone()))
}

fn client(user: &User) -> Client {
    client_with(user, RetryPolicy::default())
}

/// `n` signed events from one sender with `payload` bytes each.
fn events(seed: u8, n: u64, payload: usize) -> Vec<Event> {
    let id = Identity::from_seed(&[seed; 32]);
    (1..=n)
        .map(|seq| {
            UnsignedEvent {
                room: RoomId([seed; 16]),
                sender: id.device_id(),
                seq,
                prev: vec![],
                origin_ts_ms: 1_700_000_000_000 + seq,
                expires_ms: 1_700_000_000_000 + seq + 86_400_000,
                kind: EventKind::Message,
                payload: (0..payload).map(|i| (i as u64 * 31 + seq) as u8).collect(),
            }
            .sign(&id)
            .expect("sign")
        })
        .collect()
}

/// Two users in a fresh transport room: A created it, B joined.
async fn room_with_two() -> (Client, Client, String) {
    let a = register("alice", false);
    let b = register("bob", false);
    let ca = client(&a);
    let cb = client(&b);
    let room = ca.create_room(&[&b.user_id]).await.expect("create room");
    assert!(room.starts_with('!'));
    assert_eq!(cb.join_room(&room).await.expect("join"), room);
    (ca, cb, room)
}

/// What a reader keeps from a list of room events: verified envelopes by ID,
/// and counts of bundles rejected whole and envelopes skipped.
#[derive(Default)]
struct Read {
    ids: BTreeSet<EventId>,
    bundles: usize,
    bad_bundles: Vec<BundleError>,
    bad_envelopes: usize,
}

fn read(events: &[RoomEvent]) -> Read {
    let mut r = Read::default();
    for e in events {
        if e.event_type != BUNDLE_EVENT_TYPE {
            continue;
        }
        r.bundles += 1;
        match decode_content(&e.content) {
            Ok(d) => {
                r.bad_envelopes += d.rejected.len();
                r.ids.extend(d.events.iter().map(|e| e.id()));
            }
            Err(err) => r.bad_bundles.push(err),
        }
    }
    r
}

/// Syncs B from `since` until `want` envelopes have arrived (or a generous
/// deadline passes), filling gaps. Returns all room events seen and the
/// next token.
async fn sync_until(
    c: &Client,
    room: &str,
    since: Option<String>,
    want: usize,
) -> (Vec<RoomEvent>, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut since = since;
    let mut all = Vec::new();
    loop {
        let batch = c
            .sync_filling_gaps(room, since.as_deref(), POLL, 1000)
            .await
            .expect("sync");
        assert!(batch.gap.is_none(), "gap left after 1000 pages");
        all.extend(batch.events);
        since = Some(batch.next_batch);
        if read(&all).ids.len() >= want || Instant::now() > deadline {
            return (all, since);
        }
    }
}

#[tokio::test]
async fn bundles_round_trip_and_txn_ids_deduplicate() {
    let (ca, cb, room) = room_with_two().await;
    let evs = events(1, 300, 1024);
    let bundles = pack(evs.clone(), MAX_BUNDLE_BYTES);
    assert!(bundles.len() >= 7, "300 KiB needs several bundles");
    let mut matrix_ids = Vec::new();
    for b in &bundles {
        let id = ca
            .send(&room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
            .await
            .expect("send bundle");
        matrix_ids.push(id);
    }
    // A retry after a "crash": the same composition gives the same
    // transaction ID, and the homeserver returns the original event.
    let again = pack(evs.clone(), MAX_BUNDLE_BYTES);
    assert_eq!(again[0].txn_id(), bundles[0].txn_id());
    let id = ca
        .send(
            &room,
            BUNDLE_EVENT_TYPE,
            again[0].txn_id(),
            &again[0].content(),
        )
        .await
        .expect("resend");
    assert_eq!(id, matrix_ids[0]);

    let (seen, _) = sync_until(&cb, &room, None, evs.len()).await;
    let r = read(&seen);
    let want: BTreeSet<_> = evs.iter().map(|e| e.id()).collect();
    assert_eq!(r.ids, want, "B verified every envelope");
    assert_eq!(r.bundles, bundles.len(), "no duplicate bundle in B's view");
    assert!(r.bad_bundles.is_empty() && r.bad_envelopes == 0);
}

#[tokio::test]
async fn limited_sync_is_backfilled_through_messages() {
    let (ca, cb, room) = room_with_two().await;
    // Five bundles B has already seen, then B is up to date before A uploads.
    let old = events(8, 5, 64);
    for e in &old {
        let b = &pack([e.clone()], MAX_BUNDLE_BYTES)[0];
        ca.send(&room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
            .await
            .expect("send");
    }
    let (_, since) = sync_until(&cb, &room, None, old.len()).await;
    let first = cb
        .sync(&room, since.as_deref(), Duration::ZERO)
        .await
        .expect("sync");
    // 130 bundles of one event each: more than the 100-event timeline cap.
    let evs = events(2, 130, 64);
    for e in &evs {
        let b = &pack([e.clone()], MAX_BUNDLE_BYTES)[0];
        ca.send(&room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
            .await
            .expect("send");
    }
    let batch = cb
        .sync(&room, Some(&first.next_batch), Duration::ZERO)
        .await
        .expect("sync");
    let gap = batch.gap.clone().expect("timeline is limited");
    assert!(batch.events.len() <= 100);
    let mut all = batch.events.clone();
    let mut next = Some(gap);
    let mut pages = 0;
    while let Some(g) = next {
        let page = cb.backfill(&g).await.expect("messages");
        pages += 1;
        assert!(pages < 100, "backfill terminates");
        all.extend(page.events);
        next = page.rest;
    }
    let r = read(&all);
    let want: BTreeSet<_> = evs.iter().map(|e| e.id()).collect();
    assert_eq!(r.ids, want, "gap filled: all 130 envelopes");

    // The convenience wrapper does the same in one call.
    let filled = cb
        .sync_filling_gaps(&room, Some(&first.next_batch), Duration::ZERO, 100)
        .await
        .expect("sync");
    assert_eq!(read(&filled.events).ids, want);
    assert_eq!(
        read(&filled.events).bundles,
        130,
        "no duplicates across pages"
    );
}

#[tokio::test]
async fn hostile_events_in_the_room_are_skipped_rest_kept() {
    let (ca, cb, room) = room_with_two().await;
    let good = events(3, 3, 200);
    let mut forged = events(4, 1, 200)[0].bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x40; // break the signature
    // A bundle whose envelopes are: forged, good[0], garbage.
    let mut cbor = vec![0x83];
    for item in [&forged[..], good[0].bytes(), b"not an event"] {
        let n = item.len();
        if n < 24 {
            cbor.push(0x40 | n as u8);
        } else if n < 256 {
            cbor.extend([0x58, n as u8]);
        } else {
            cbor.extend([0x59, (n >> 8) as u8, n as u8]);
        }
        cbor.extend_from_slice(item);
    }
    let mixed = json!({"v": 1, "envelopes": data_encoding::BASE64_NOPAD.encode(&cbor)});
    ca.send(&room, BUNDLE_EVENT_TYPE, "hostile-1", &mixed)
        .await
        .expect("send");
    for (i, bad) in [
        json!({"v": 1, "envelopes": "@@not base64@@"}),
        json!({"v": 9, "envelopes": ""}),
        json!({"hello": "world"}),
    ]
    .iter()
    .enumerate()
    {
        ca.send(&room, BUNDLE_EVENT_TYPE, &format!("hostile-bad-{i}"), bad)
            .await
            .expect("send");
    }
    // A plain message is filtered out by the sync filter.
    ca.send(
        &room,
        "m.room.message",
        "chat",
        &json!({"msgtype": "m.text", "body": "hi"}),
    )
    .await
    .expect("send");
    let b = &pack(good[1..].to_vec(), MAX_BUNDLE_BYTES)[0];
    ca.send(&room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
        .await
        .expect("send");

    let (seen, _) = sync_until(&cb, &room, None, 3).await;
    assert!(seen.iter().all(|e| e.event_type == BUNDLE_EVENT_TYPE));
    let r = read(&seen);
    let want: BTreeSet<_> = good.iter().map(|e| e.id()).collect();
    assert_eq!(r.ids, want, "the three good envelopes are kept");
    assert_eq!(r.bad_envelopes, 2, "forged and garbage envelopes skipped");
    let classes: Vec<_> = r.bad_bundles.iter().map(|e| e.class()).collect();
    assert_eq!(classes, ["bad_base64", "unknown_version", "not_a_bundle"]);
}

#[tokio::test]
async fn rate_limit_429_is_honoured() {
    let admin = register("admin", true);
    let user = register("limited", false);
    // Tighten this one user's message rate with the admin API.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!(
            "{}/_synapse/admin/v1/users/{}/override_ratelimit",
            synapse().url,
            user.user_id
        ))
        .bearer_auth(&admin.token)
        .json(&json!({"messages_per_second": 1, "burst_count": 1}))
        .send()
        .await
        .expect("override_ratelimit");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);

    let c1 = client_with(
        &user,
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
    );
    let room = c1.create_room(&[]).await.expect("create");
    // Without retries, a burst hits the limit and reports the server's wait.
    let mut limited = None;
    for i in 0..10 {
        match c1
            .send(
                &room,
                "org.meshrelay.test",
                &format!("burst-{i}"),
                &json!({"i": i}),
            )
            .await
        {
            Ok(_) => {}
            Err(HomeserverError::RateLimited { retry_after_ms }) => {
                limited = Some(retry_after_ms);
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let wait = limited.expect("a 429 within 10 rapid sends");
    assert!(wait > 0 && wait <= 10_000, "retry_after_ms = {wait}");

    // With retries, every send succeeds by waiting as told.
    let c = client(&user);
    let t0 = Instant::now();
    for i in 0..6 {
        c.send(
            &room,
            "org.meshrelay.test",
            &format!("paced-{i}"),
            &json!({"i": i}),
        )
        .await
        .expect("send succeeds after waiting");
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "waited for the limiter"
    );
}

#[tokio::test]
async fn bad_token_too_large_and_unreachable_have_distinct_errors() {
    let (ca, _cb, room) = room_with_two().await;
    let bogus = Client::new(
        &synapse().url,
        RetryPolicy::default(),
        Box::new(StdRng::seed_from_u64(1)),
    )
    .expect("client")
    .with_token(AccessToken::new("syt_not_a_token"));
    match bogus.sync(&room, None, Duration::ZERO).await {
        Err(e @ HomeserverError::LoginRequired { .. }) => {
            assert!(e.to_string().contains("log in again"));
        }
        other => panic!("expected LoginRequired, got {other:?}"),
    }

    // The bundle size limit is accepted by the real server: maximum-size
    // events packed into full bundles all go through.
    let big = events(6, 5, meshrelay::limits::MAX_PAYLOAD_BYTES);
    let full = pack(big, MAX_BUNDLE_BYTES);
    assert_eq!(full.len(), 3);
    assert!(full[0].encoded().len() > 30_000, "two ~15.5 KB events");
    for b in &full {
        ca.send(&room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
            .await
            .expect("a full bundle is under the homeserver's event limit");
    }
    let huge = json!({"v": 1, "envelopes": "A".repeat(70_000)});
    match ca.send(&room, BUNDLE_EVENT_TYPE, "too-big", &huge).await {
        Err(HomeserverError::TooLarge { .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }

    // Nothing listens on this port (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let down = Client::new(
        &format!("http://127.0.0.1:{port}"),
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        Box::new(StdRng::seed_from_u64(2)),
    )
    .expect("client");
    match down.whoami().await {
        Err(HomeserverError::Network { attempts: 3, .. }) => {}
        other => panic!("expected Network after 3 attempts, got {other:?}"),
    }
}

/// Runs `synapse.sh CMD` against a private instance in `dir`.
pub(crate) fn private_synapse(dir: &std::path::Path, args: &[&str]) -> String {
    private_synapse_env(dir, args, &[])
}

/// [`private_synapse`] with extra environment variables (e.g.
/// `SYNAPSE_APPSERVICE`).
pub(crate) fn private_synapse_env(
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &std::path::Path)],
) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .envs(envs.iter().copied())
        .env("SYNAPSE_DIR", dir)
        .env("SYNAPSE_WATCH_PID", std::process::id().to_string())
        .env("SYNAPSE_CLEANUP", "1")
        .output()
        .expect("run synapse.sh");
    assert!(
        out.status.success(),
        "synapse.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn sync_resumes_after_the_homeserver_restarts() {
    // A private instance: stopping the shared one would break other tests.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("synapse-it-{}-restart", std::process::id()));
    let url = private_synapse(&dir, &["start"]);
    let v: Value = serde_json::from_str(&private_synapse(&dir, &["register", "carol", "--json"]))
        .expect("json");
    let policy = RetryPolicy {
        max_attempts: 200,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        ..RetryPolicy::default()
    };
    let c = Client::new(&url, policy, Box::new(StdRng::seed_from_u64(3)))
        .expect("client")
        .with_token(AccessToken::new(v["access_token"].as_str().expect("token")));
    let room = c.create_room(&[]).await.expect("room");
    let first = c.sync(&room, None, Duration::ZERO).await.expect("sync");

    let evs = events(7, 5, 100);
    let b = &pack(evs.clone(), MAX_BUNDLE_BYTES)[0];
    c.send(&room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
        .await
        .expect("send");

    private_synapse(&dir, &["stop"]);
    // The sync starts while the server is down and retries with backoff.
    let (restarted, batch) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || private_synapse(&dir, &["start"])
            })
            .await
            .expect("restart")
        },
        c.sync_filling_gaps(&room, Some(&first.next_batch), Duration::ZERO, 10)
    );
    assert_eq!(restarted, url, "same port after restart");
    let batch = batch.expect("sync resumes once the server is back");
    let want: BTreeSet<_> = evs.iter().map(|e| e.id()).collect();
    assert_eq!(read(&batch.events).ids, want);
    // The transaction ID survives the restart too: no duplicate.
    let id2 = c
        .send(&room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
        .await
        .expect("resend");
    assert_eq!(Some(&id2), batch.events.first().map(|e| &e.event_id));
    private_synapse(&dir, &["stop"]);
}
