//! Disk full (issue 19, `protocol-spec/daemon.md` "Disk full").
//!
//! 1. The core: what each [`Admission`] level stores (strangers are shed
//!    first), and a failed commit releases nothing.
//! 2. The daemon on a 48 MiB tmpfs in a private mount namespace (the tests
//!    run as root; `unshare -m` needs `CAP_SYS_ADMIN`): filled to "low"
//!    and then "full" with filler files, it keeps serving reads, reports
//!    the condition in `status --json` and the metrics, refuses `send` with
//!    a clear "disk full" error, sends again once space is freed, and after
//!    `kill -9` and a restart holds every acknowledged message.
//! 3. The same tmpfs with room to spare by the watermarks, and one
//!    transaction (an import) larger than the disk: its writes fail with
//!    `ENOSPC`, are rolled back, and the daemon carries on.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshrelay::crypto::identity::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::proto::{Admission, Command as NodeCommand, Input, Node, NodeConfig, Output as Out};
use meshrelay::store::roles::*;
use meshrelay::store::{MemoryStore, Source};
use rand::SeedableRng;
use serde_json::Value;

use crate::daemon::BIN;

fn ident(n: u8) -> Identity {
    Identity::from_seed(&[n; 32])
}

fn event(who: &Identity, room: RoomId, seq: u64, now: u64) -> Event {
    UnsignedEvent {
        room,
        sender: who.device_id(),
        seq,
        prev: vec![],
        origin_ts_ms: now,
        expires_ms: now + 86_400_000,
        kind: EventKind::Message,
        payload: vec![7; 64],
    }
    .sign(who)
    .unwrap()
}

#[test]
fn admission_sheds_strangers_first_then_everything() {
    let now = 1_900_000_000_000;
    let (me, member, stranger) = (ident(1), ident(2), ident(3));
    let room = RoomId([9; 16]);
    let mut node = Node::new(
        me.device_id(),
        MemoryStore::new_memory(),
        rand::rngs::StdRng::seed_from_u64(1),
        NodeConfig::default(),
        now,
    );
    node.handle(
        now,
        Input::Command(NodeCommand::JoinRoom {
            room,
            members: [member.device_id()].into_iter().collect(),
        }),
    )
    .unwrap();
    let mut seq = 0;
    let mut deliver = |node: &mut Node<MemoryStore, _>, who: &Identity| {
        seq += 1;
        let ev = event(who, room, seq, now);
        node.handle(
            now,
            Input::Command(NodeCommand::Deliver {
                event: Box::new(ev.clone()),
                source: Source::Import,
            }),
        )
        .unwrap();
        node.store_mut().commit().unwrap();
        node.handle(now, Input::CommitDone).unwrap();
        while node.poll_output().is_some() {}
        node.store().has_event(&ev.id()).unwrap()
    };
    assert_eq!(node.admission(), Admission::All);
    assert!(deliver(&mut node, &stranger), "all: strangers stored");
    node.set_admission(Admission::NoStrangers);
    assert!(!deliver(&mut node, &stranger), "low: strangers shed");
    assert!(deliver(&mut node, &member), "low: members stored");
    node.set_admission(Admission::Nothing);
    assert!(!deliver(&mut node, &member), "full: nothing stored");
    assert_eq!(node.stats().shed_events, 2);
    node.set_admission(Admission::All);
    assert!(deliver(&mut node, &member), "space again: stored");

    // A commit that fails: nothing is announced or acknowledged.
    let ev = event(&member, room, 100, now);
    node.handle(
        now,
        Input::Command(NodeCommand::Deliver {
            event: Box::new(ev.clone()),
            source: Source::Import,
        }),
    )
    .unwrap();
    assert!(node.needs_commit());
    node.store_mut().rollback().unwrap();
    node.handle(now, Input::CommitFailed).unwrap();
    assert!(!node.needs_commit());
    node.handle(now, Input::CommitDone).unwrap();
    while let Some(o) = node.poll_output() {
        assert!(
            !matches!(o, Out::App(meshrelay::proto::AppEvent::EventStored { id, .. }) if id == ev.id()),
            "a rolled-back event was reported stored"
        );
    }
    assert!(!node.store().has_event(&ev.id()).unwrap());
}

/// Size of the test's file system.
const TMPFS_MIB: u64 = 48;

/// A private mount namespace holding a tmpfs at `mnt`, kept alive by a
/// `sleep` (so a killed daemon can be restarted on the same files).
struct Ns {
    holder: Child,
    mnt: PathBuf,
    base: PathBuf,
    daemon: Option<Child>,
}

impl Ns {
    /// `None` when mount namespaces are not available here.
    fn new(base: &Path) -> Option<Ns> {
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let script = format!(
            "mount -t tmpfs -o size={TMPFS_MIB}m tmpfs '{m}' && touch '{m}/.ready' && exec sleep 600",
            m = mnt.display()
        );
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .ok()?;
        let mut ns = Ns {
            holder,
            mnt,
            base: base.to_owned(),
            daemon: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ns
                .cmd("test")
                .arg("-e")
                .arg(ns.mnt.join(".ready"))
                .status()
                .ok()?
                .success()
            {
                return Some(ns);
            }
            if ns.holder.try_wait().ok()?.is_some() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `program` run inside the namespace.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.holder.id().to_string())
            .arg("-m")
            .arg("--")
            .arg(program);
        c
    }

    fn data(&self) -> PathBuf {
        self.mnt.join("data")
    }

    /// The CLI on the data directory inside the namespace.
    fn mr(&self, args: &[&str]) -> Output {
        self.cmd(BIN)
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .output()
            .unwrap()
    }

    /// Sends one control API request to the daemon's socket (reached
    /// through the namespace's root, `/proc/PID/root`) and returns its
    /// final reply.
    fn request(&self, req: &Value) -> Value {
        use std::io::BufRead;
        let sock = format!(
            "/proc/{}/root{}",
            self.holder.id(),
            self.data().join("control.sock").display()
        );
        let mut conn = std::os::unix::net::UnixStream::connect(sock).unwrap();
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        conn.write_all(&line).unwrap();
        let mut last = String::new();
        for l in std::io::BufReader::new(conn).lines() {
            last = l.unwrap();
        }
        serde_json::from_str(&last).unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.mr(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// Starts the daemon (metrics on `metrics`) and waits for its socket.
    fn start(&mut self, metrics: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("daemon.log"))
            .unwrap();
        let child = self
            .cmd(BIN)
            .arg("--data-dir")
            .arg(self.data())
            .args([
                "run",
                "--no-mdns",
                "--no-ble",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ])
            .args(["--metrics", metrics])
            .env("RUST_LOG", "info,libp2p=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        // The socket first: a `status` without a daemon opens the store
        // itself and would race the daemon's own open.
        let sock = format!(
            "/proc/{}/root{}",
            self.holder.id(),
            self.data().join("control.sock").display()
        );
        self.wait("the control socket", |_| {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        self.wait("the daemon", |ns| {
            let o = ns.mr(&["status", "--json"]);
            o.status.success()
                && serde_json::from_slice::<Value>(&o.stdout)
                    .is_ok_and(|v| v["daemon"]["running"] == true)
        });
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn alive(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn wait(&self, what: &str, mut f: impl FnMut(&Ns) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.base.join("daemon.log")).unwrap_or_default();
                panic!("timed out waiting for {what}\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fills the file system until about `leave` bytes are free.
    fn fill(&self, name: &str, leave: u64) {
        let free = self.status()["disk"]["free_bytes"].as_u64().unwrap();
        let size = free.saturating_sub(leave);
        let o = self
            .cmd("fallocate")
            .arg("-l")
            .arg(size.to_string())
            .arg(self.mnt.join(name))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.kill9();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn texts(ns: &Ns, room: &str) -> Vec<String> {
    ns.ok(&["messages", room, "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_full_disk_refuses_sends_clearly_keeps_serving_and_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let Some(mut ns) = Ns::new(t.path()) else {
        // Without CAP_SYS_ADMIN there is no private tmpfs to fill; the
        // core's part is covered above.
        eprintln!("SKIPPED: unshare -m is not permitted here");
        return;
    };
    ns.ok(&["init", "--name", "Ana"]);
    let port = crate::daemon::free_port();
    let metrics = format!("127.0.0.1:{port}");
    ns.start(&metrics);
    let room = room_id_of(&ns.ok(&["room", "create", "camp", "--json"]));
    let mut acked = Vec::new();
    for i in 0..5 {
        let text = format!("before {i}");
        ns.ok(&["send", &room, &text]);
        acked.push(text);
    }
    let st = ns.status();
    assert_eq!(st["disk"]["full"], false, "{st}");
    assert_eq!(st["disk"]["low"], false, "{st}");

    // Low: strangers are shed, own messages still go.
    ns.fill("filler-low", 20 * 1024 * 1024);
    let st = ns.status();
    assert_eq!(st["disk"]["low"], true, "{st}");
    assert_eq!(st["disk"]["full"], false, "{st}");
    ns.ok(&["send", &room, "while low"]);
    acked.push("while low".to_owned());

    // Full: own messages refused with a clear error, reads served.
    ns.fill("filler-full", 2 * 1024 * 1024);
    let st = ns.status();
    assert_eq!(st["disk"]["full"], true, "{st}");
    assert!(st["disk"]["free_bytes"].as_u64().unwrap() < 8 * 1024 * 1024);
    let o = ns.mr(&["send", &room, "refused"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("disk full") && err.contains("NOT stored"),
        "{err}"
    );
    assert_eq!(texts(&ns, &room), acked, "reads are served");
    let m = scrape(&metrics);
    assert!(m.contains("\nmeshrelay_disk_full 1\n"), "{m}");
    assert!(m.contains("\nmeshrelay_disk_low 1\n"), "{m}");
    assert!(ns.alive(), "the daemon keeps running");

    // Space again: sending works.
    let o = ns
        .cmd("rm")
        .arg(ns.mnt.join("filler-full"))
        .arg(ns.mnt.join("filler-low"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let st = ns.status();
    assert_eq!(st["disk"]["full"], false, "{st}");
    assert_eq!(st["disk"]["low"], false, "{st}");
    ns.ok(&["send", &room, "after freeing"]);
    acked.push("after freeing".to_owned());
    assert!(scrape(&metrics).contains("\nmeshrelay_disk_full 0\n"));

    // kill -9 and restart: the store opens cleanly with every acknowledged
    // message.
    ns.kill9();
    let check: Value = serde_json::from_str(&ns.ok(&["store", "check", "--json"])).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    ns.start(&metrics);
    assert_eq!(texts(&ns, &room), acked);
}

/// The room ID in `room create --json` output.
fn room_id_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v["room_id"].as_str().unwrap().to_owned()
}

/// A bundle of `mib` MiB of strangers' events (14 KiB of incompressible
/// payload each), signed by enough keys that no key's stranger budget
/// refuses any of them.
fn stranger_bundle(mib: usize, now: u64) -> Vec<u8> {
    const PAYLOAD: usize = 14 * 1024;
    const PER_KEY: usize = 60;
    let total = mib * 1024 * 1024 / PAYLOAD;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut events = Vec::with_capacity(total);
    for i in 0..total {
        let key = Identity::from_seed(&[(100 + i / PER_KEY) as u8; 32]);
        let mut room = [0u8; 16];
        room[0] = (i / PER_KEY) as u8;
        room[1] = 0xd1;
        let payload: Vec<u8> = (0..PAYLOAD)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let ev = UnsignedEvent {
            room: RoomId(room),
            sender: key.device_id(),
            seq: (i % PER_KEY) as u64 + 1,
            prev: vec![],
            origin_ts_ms: now,
            expires_ms: now + 86_400_000,
            kind: EventKind::Message,
            payload,
        }
        .sign(&key)
        .unwrap();
        events.push(ev);
    }
    meshrelay::bundle::export(&events, now)
}

/// A write fails with `ENOSPC` (not the free-space watermark): with 34 MiB
/// free (level `ok`) an import of about 40 MiB of carried events is one
/// transaction larger than the disk (redb writes the pages of a large
/// transaction before its commit, so the error comes while it is staged;
/// before this test that was fatal to the daemon). The daemon keeps
/// running, drops the transaction and reopens the store, answers the
/// import with `disk_full`, reports the failure in `status` and the metrics,
/// refuses an own `send` with `disk_full` (exit 1) while the disk is full,
/// sends again once space is freed, loses no acknowledged message, and the
/// store passes `store check`.
#[test]
fn an_import_that_fills_the_disk_is_rolled_back_and_survived() {
    let t = tempfile::tempdir().unwrap();
    let Some(mut ns) = Ns::new(t.path()) else {
        eprintln!("SKIPPED: unshare -m is not permitted here");
        return;
    };
    ns.ok(&["init", "--name", "Ana"]);
    let port = crate::daemon::free_port();
    let metrics = format!("127.0.0.1:{port}");
    ns.start(&metrics);
    let room = room_id_of(&ns.ok(&["room", "create", "camp", "--json"]));
    let mut acked = Vec::new();
    for i in 0..5 {
        let text = format!("before {i}");
        ns.ok(&["send", &room, &text]);
        acked.push(text);
    }
    // The bundle lives outside the small file system.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let bundle = t.path().join("carried.bundle");
    std::fs::write(&bundle, stranger_bundle(40, now)).unwrap();

    ns.fill("ballast", 34 * 1024 * 1024);
    let st = ns.status();
    assert_eq!(st["disk"]["level"], "ok", "{st}");
    // One `import` request of the whole bundle, as a control API client
    // may send (the CLI sends slices of at most 1 MiB).
    let reply = ns.request(&serde_json::json!({
        "v": 1,
        "op": "import",
        "bundle": data_encoding::BASE64.encode(&std::fs::read(&bundle).unwrap()),
    }));
    std::thread::sleep(Duration::from_secs(2));
    let alive = ns.alive();
    let log = std::fs::read_to_string(t.path().join("daemon.log")).unwrap();
    assert_eq!(
        reply["error"]["code"], "disk_full",
        "alive {alive}: {reply}\n{log}"
    );
    let msg = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("disk full") && msg.contains("NOT stored"),
        "{reply}\n{log}"
    );
    assert!(ns.alive(), "the daemon survives a failed commit\n{log}");
    assert!(log.contains("failed for lack of space"), "{log}");

    // The condition is in `status` and the metrics.
    let st = ns.status();
    assert_eq!(st["disk"]["commits_failed_no_space"], 1, "{st}");
    let m = scrape(&metrics);
    assert!(
        m.contains("\nmeshrelay_commits_failed_no_space_total 1\n"),
        "{m}"
    );
    // Nothing of the failed commit was kept; reads are served.
    assert_eq!(texts(&ns, &room), acked, "reads are served");
    let events = st["store"]["events"].as_u64().unwrap();
    assert!(events < 100, "the failed import left {events} events");

    // The pages the failed transaction wrote stay allocated in the file:
    // the disk is full. An own message is refused with `disk_full`, never
    // lost; if the store file already gave space back (redb may, after
    // the reopen), it is stored and acknowledged, never a runtime error.
    assert_eq!(st["disk"]["full"], true, "{st}");
    let o = ns.mr(&["send", &room, "while full"]);
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        acked.push("while full".to_owned());
    } else {
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("disk full") && err.contains("NOT stored"),
            "{err}"
        );
    }
    let o = ns.cmd("rm").arg(ns.mnt.join("ballast")).output().unwrap();
    assert!(o.status.success());
    let st = ns.status();
    assert_eq!(st["disk"]["full"], false, "{st}");
    ns.ok(&["send", &room, "after freeing"]);
    acked.push("after freeing".to_owned());
    assert_eq!(texts(&ns, &room), acked);

    ns.kill9();
    let check: Value = serde_json::from_str(&ns.ok(&["store", "check", "--json"])).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    ns.start(&metrics);
    assert_eq!(texts(&ns, &room), acked);
}
