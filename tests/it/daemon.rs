//! `meshrelay run` as real processes on 127.0.0.1: a chain of three
//! daemons, offline catch-up, SIGKILL mid-sync, the control socket, and a
//! hostile peer over a real libp2p connection.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_meshrelay");

/// How long a test waits for the mesh to converge.
pub const CONVERGE: Duration = Duration::from_secs(150);

/// Runs the CLI on `dir`.
pub fn mr(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Runs the CLI on `dir` and returns its stdout; panics on failure.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = mr(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `room create NAME --json` on `dir`: the new room's ID.
pub fn create_room(dir: &Path, name: &str) -> String {
    let v: Value = serde_json::from_str(&ok(dir, &["room", "create", name, "--json"])).unwrap();
    v["room_id"].as_str().unwrap().to_owned()
}

/// Polls `f` every 100 ms until it is true or `CONVERGE` passes.
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_logged(None, what, f)
}

/// Like [`wait_until`]; on a timeout the panic message carries the tail of
/// every daemon log (`*.log`) in `base`.
pub fn wait_logged(base: Option<&Path>, what: &str, f: impl FnMut() -> bool) {
    wait_logged_for(base, CONVERGE, what, f)
}

/// [`wait_logged`] with its own deadline.
pub fn wait_logged_for(
    base: Option<&Path>,
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() >= deadline {
            let mut logs = String::new();
            if let Some(base) = base {
                for e in std::fs::read_dir(base).unwrap().flatten() {
                    if e.path().extension().is_some_and(|x| x == "log") {
                        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(40).collect();
                        logs.push_str(&format!("\n--- {} ---\n", e.path().display()));
                        for l in tail.iter().rev() {
                            logs.push_str(l);
                            logs.push('\n');
                        }
                    }
                }
            }
            panic!("timed out waiting for {what}{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free TCP port on 127.0.0.1 (for a daemon that must come back on the
/// same address after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `meshrelay run` process on a data directory; killed on drop.
pub struct Daemon {
    pub dir: PathBuf,
    child: Option<Child>,
    /// The program started (the binary, or a wrapper such as `ip`).
    program: String,
    /// Its arguments (kept for restarts).
    args: Vec<String>,
    /// Extra environment variables (kept for restarts).
    envs: Vec<(String, String)>,
}

impl Daemon {
    /// Initialises `dir` (if needed) and starts a daemon on it, listening on
    /// 127.0.0.1 without mDNS, with `peers` as static peers.
    pub fn start(dir: &Path, name: &str, peers: &[String]) -> Daemon {
        Daemon::start_on(dir, name, 0, peers)
    }

    /// [`Daemon::start`] on a fixed TCP port (0: random).
    pub fn start_on(dir: &Path, name: &str, port: u16, peers: &[String]) -> Daemon {
        Daemon::start_with(dir, name, port, peers, &[])
    }

    /// [`Daemon::start_on`] with extra `run` flags (e.g. `--homeserver-sync`).
    pub fn start_with(
        dir: &Path,
        name: &str,
        port: u16,
        peers: &[String],
        extra: &[&str],
    ) -> Daemon {
        if !dir.exists() {
            ok(dir, &["init", "--name", name]);
        }
        let listen = format!("/ip4/127.0.0.1/tcp/{port}");
        let mut args: Vec<String> = ["run", "--no-mdns", "--listen", &listen]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for p in peers {
            args.extend(["--peer".to_owned(), p.clone()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Daemon::spawn(dir, args)
    }

    /// Starts `meshrelay --data-dir DIR ARGS` on an initialised `dir`.
    pub fn spawn(dir: &Path, args: Vec<String>) -> Daemon {
        let mut full = vec!["--data-dir".to_owned(), dir.to_str().unwrap().to_owned()];
        full.extend(args);
        Daemon::spawn_with(BIN, dir, full)
    }

    /// Starts `PROGRAM ARGS`, a daemon serving `dir` (e.g. under `ip netns exec`).
    pub fn spawn_with(program: &str, dir: &Path, args: Vec<String>) -> Daemon {
        Daemon::spawn_env(program, dir, args, Vec::new())
    }

    /// [`Daemon::spawn_with`] with extra environment variables (e.g. a
    /// libfaketime preload).
    pub fn spawn_env(
        program: &str,
        dir: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Daemon {
        let mut d = Daemon {
            dir: dir.to_owned(),
            child: None,
            program: program.to_owned(),
            args,
            envs,
        };
        d.restart();
        d
    }

    /// The running process's ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// (Re)starts the process with the same arguments.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "info,libp2p=warn")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let sock = self.dir.join("control.sock");
        wait_until("the control socket", || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    /// `status --json` through the control socket.
    pub fn status(&self) -> Value {
        serde_json::from_str(&ok(&self.dir, &["status", "--json"])).unwrap()
    }

    /// The daemon's TCP listen address on 127.0.0.1.
    pub fn tcp_addr(&self) -> String {
        let mut found = None;
        wait_until("a listen address", || {
            found = self.status()["daemon"]["listening"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .find(|s| s.contains("/tcp/"))
                        .map(str::to_owned)
                });
            found.is_some()
        });
        found.unwrap()
    }

    /// Number of connected peers.
    pub fn peers(&self) -> u64 {
        self.status()["peers"].as_u64().unwrap()
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id() as i32;
        // SAFETY-free: `kill` is a plain syscall wrapper via the shell.
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + CONVERGE;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still alive.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The readable texts of a room, in display order.
pub fn texts(dir: &Path, room: &str) -> Vec<String> {
    let o = mr(dir, &["messages", room, "--json"]);
    if !o.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// The contact card of an initialised data directory.
pub fn card(dir: &Path) -> String {
    let v: Value = serde_json::from_str(&ok(dir, &["id", "--json"])).unwrap();
    v["card"].as_str().unwrap().to_owned()
}

/// Two devices without daemons under `base`: Ana, who created room
/// "camp" and invited Ben. Returns their directories and the room ID.
pub fn ana_invites_ben(base: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let (a, b) = (base.join("a"), base.join("b"));
    ok(&a, &["init", "--name", "Ana"]);
    ok(&b, &["init", "--name", "Ben"]);
    let room = create_room(&a, "camp");
    ok(&a, &["room", "invite", &room, &card(&b)]);
    (a, b, room)
}

/// A chain A–B–C (A and C never connect) with a room A created and B, C
/// invited; returns the daemons and the room ID.
pub fn chain(base: &Path) -> ([Daemon; 3], String) {
    let (da, db, dc) = (base.join("a"), base.join("b"), base.join("c"));
    // B keeps its port across restarts: A and C know it as a static peer.
    let b = Daemon::start_on(&db, "Bo", free_port(), &[]);
    let b_addr = b.tcp_addr();
    let a = Daemon::start(&da, "Ana", std::slice::from_ref(&b_addr));
    let c = Daemon::start(&dc, "Cy", std::slice::from_ref(&b_addr));
    wait_logged(Some(base), "links A–B and B–C", || b.peers() == 2);
    let room = create_room(&da, "camp");
    ok(&da, &["room", "invite", &room, &card(&db)]);
    ok(&da, &["room", "invite", &room, &card(&dc)]);
    ([a, b, c], room)
}

fn assert_exactly_once(got: &[String], want: &[String]) {
    for w in want {
        let n = got.iter().filter(|g| *g == w).count();
        assert_eq!(n, 1, "{w:?} appears {n} times in {got:?}");
    }
}

#[test]
fn chain_relays_a_to_c_through_b_and_c_catches_up_after_being_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let ([a, b, mut c], room) = chain(tmp.path());
    // A and C never link: C reads A's message only through B.
    assert_eq!(a.peers(), 1);
    assert_eq!(c.peers(), 1);
    let first = vec!["hello from A".to_owned()];
    let sent: Value =
        serde_json::from_str(&ok(&a.dir, &["send", &room, &first[0], "--json"])).unwrap();
    assert_eq!(sent["event_id"].as_str().unwrap().len(), 64);
    wait_until("C reads A's message", || texts(&c.dir, &room) == first);

    // C offline while A sends.
    assert!(c.terminate().success(), "graceful exit code 0");
    assert!(
        !c.dir.join("control.sock").exists(),
        "the socket is removed on a graceful stop"
    );
    let later: Vec<String> = (0..20).map(|i| format!("while C was away {i}")).collect();
    for t in &later {
        ok(&a.dir, &["send", &room, t]);
    }
    wait_until("B holds A's messages", || {
        texts(&b.dir, &room).len() == first.len() + later.len()
    });
    // With no daemon, C's CLI opens the store directly.
    assert_eq!(texts(&c.dir, &room), first);
    c.restart();
    let all: Vec<String> = first.iter().chain(&later).cloned().collect();
    wait_logged(Some(tmp.path()), "C catches up", || {
        texts(&c.dir, &room).len() >= all.len()
    });
    let got = texts(&c.dir, &room);
    assert_eq!(got.len(), all.len(), "{got:?}");
    assert_exactly_once(&got, &all);
}

#[test]
fn sigkill_mid_sync_loses_nothing_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ([a, mut b, c], room) = chain(tmp.path());
    wait_until("C is in the room", || {
        mr(&c.dir, &["messages", &room]).status.success()
    });
    let mut want = Vec::new();
    for round in 0..4 {
        for i in 0..25 {
            let t = format!("round {round} message {i}");
            ok(&a.dir, &["send", &room, &t]);
            want.push(t);
        }
        // Kill the relay while it is receiving and forwarding.
        std::thread::sleep(Duration::from_millis(30 * round));
        b.kill();
        b.restart();
    }
    wait_logged(
        Some(tmp.path()),
        "C receives every message through the restarted relay",
        || texts(&c.dir, &room).len() >= want.len(),
    );
    let got = texts(&c.dir, &room);
    assert_eq!(got.len(), want.len());
    assert_exactly_once(&got, &want);
    let got_b = texts(&b.dir, &room);
    assert_exactly_once(&got_b, &want);
    // The relay's store is intact after four SIGKILLs.
    let check: Value = serde_json::from_str(&{
        let mut b = b;
        assert!(b.terminate().success());
        ok(&b.dir, &["store", "check", "--json"])
    })
    .unwrap();
    assert_eq!(check["ok"], true, "{check}");
    drop(a);
}

#[test]
fn control_socket_serves_cli_peers_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let b = Daemon::start(&db, "Bo", &[]);
    let a = Daemon::start(&da, "Ana", &[b.tcp_addr()]);
    wait_until("the link", || a.peers() == 1 && b.peers() == 1);
    let mode = std::fs::metadata(da.join("control.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let peers: Value = serde_json::from_str(&ok(&da, &["peers", "--json"])).unwrap();
    let p = &peers.as_array().unwrap()[0];
    for field in ["link", "kind", "address", "since", "bytes_in", "bytes_out"] {
        assert!(p.get(field).is_some(), "peers lacks {field}: {p}");
    }
    assert_eq!(p["kind"], "lan");
    assert!(p["address"].as_str().unwrap().contains("127.0.0.1"));

    // Rooms commands work through the daemon (it holds the store lock).
    let room = create_room(&da, "ops");
    ok(&da, &["room", "invite", &room, &card(&db)]);
    ok(&da, &["send", &room, "through the socket"]);
    let rooms: Value = serde_json::from_str(&ok(&da, &["rooms", "--json"])).unwrap();
    assert_eq!(rooms[0]["room_id"], room.as_str());
    let bundle = tmp.path().join("a.bundle");
    ok(&da, &["export", "--room", &room, bundle.to_str().unwrap()]);
    assert!(std::fs::metadata(&bundle).unwrap().len() > 0);
    let sum: Value =
        serde_json::from_str(&ok(&da, &["import", bundle.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(sum["imported"], 0);
    assert!(sum["duplicates"].as_u64().unwrap() > 0);

    let st = a.status();
    for field in [
        "device_id",
        "rooms",
        "store",
        "queues",
        "peers",
        "ble",
        "homeserver",
    ] {
        assert!(st.get(field).is_some(), "status lacks {field}: {st}");
    }
    for field in ["events", "bytes", "evicted", "forks"] {
        assert!(st["store"].get(field).is_some(), "store lacks {field}");
    }
    assert_eq!(st["rooms"], 1);
    assert_eq!(st["peers"], 1);
    // No Bluetooth adapter or system bus here: unavailable, not an error.
    let ble_state = st["ble"]["state"].as_str().unwrap_or_default();
    assert!(
        ["unavailable", "running"].contains(&ble_state),
        "ble: {}",
        st["ble"]
    );
    wait_until("B reads the message", || {
        texts(&db, &room) == ["through the socket"]
    });

    // A usage error through the socket keeps the CLI's exit code 2.
    let bad = mr(&da, &["send", "not-a-room", "x"]);
    assert_eq!(bad.status.code(), Some(2));
    // A second daemon on the same directory is refused.
    let second = Command::new(BIN)
        .arg("--data-dir")
        .arg(&da)
        .args(["run", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already runs"));
    drop(a);
}

#[test]
fn messages_follow_streams_new_messages_live() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let b = Daemon::start(&db, "Bo", &[]);
    let a = Daemon::start(&da, "Ana", &[b.tcp_addr()]);
    let room = create_room(&da, "ops");
    ok(&da, &["room", "invite", &room, &card(&db)]);
    wait_until("B joins", || mr(&db, &["messages", &room]).status.success());
    let mut follow = Command::new(BIN)
        .arg("--data-dir")
        .arg(&db)
        .args(["messages", &room, "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    for i in 0..3 {
        let t = format!("live {i}");
        ok(&da, &["send", &room, &t]);
        let line = loop {
            let l = lines.next().expect("a line").unwrap();
            let v: Value = serde_json::from_str(&l).unwrap();
            if v.get("text").is_some() {
                break v;
            }
        };
        assert_eq!(line["text"], t.as_str());
    }
    follow.kill().unwrap();
    let _ = follow.wait();
    drop((a, b));
}

#[test]
fn sigkill_of_the_sending_daemon_keeps_every_acknowledged_send() {
    let tmp = tempfile::tempdir().unwrap();
    let ([mut a, _b, c], room) = chain(tmp.path());
    let mut acked: Vec<String> = Vec::new();
    for round in 0..3 {
        // Sends race the kill: those acknowledged (exit 0) must survive.
        let sender = {
            let (dir, room) = (a.dir.clone(), room.clone());
            std::thread::spawn(move || {
                let mut ok_texts = Vec::new();
                for i in 0..40 {
                    let t = format!("round {round} send {i}");
                    let o = mr(&dir, &["send", &room, &t]);
                    if o.status.success() {
                        ok_texts.push(t);
                    }
                }
                ok_texts
            })
        };
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        a.kill();
        acked.extend(sender.join().unwrap());
        a.restart();
    }
    assert!(!acked.is_empty());
    let got_a = texts(&a.dir, &room);
    for t in &acked {
        assert!(got_a.contains(t), "acknowledged {t:?} lost after SIGKILL");
    }
    assert_exactly_once(&got_a, &acked);
    wait_logged(
        Some(tmp.path()),
        "C receives every acknowledged send",
        || {
            let got = texts(&c.dir, &room);
            acked.iter().all(|t| got.contains(t))
        },
    );
    assert_exactly_once(&texts(&c.dir, &room), &acked);
}

#[test]
fn no_ble_turns_the_ble_adapter_off_and_status_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(&tmp.path().join("a"), "Ana", 0, &[], &["--no-ble"]);
    let st = d.status();
    assert_eq!(st["ble"], "off", "{st}");
    let human = ok(&d.dir, &["status"]);
    assert!(human.contains("ble:        off"), "{human}");
}

/// A command run without a daemon holds the store for a moment. A daemon
/// starting meanwhile waits for it instead of refusing to start, and a
/// command that finds the store locked but no control socket yet waits for
/// the starting daemon and runs through it.
#[test]
fn a_daemon_and_a_command_starting_together_both_succeed() {
    use meshrelay::store::{RedbStore, StoreConfig, redb_backend::STORE_FILE_NAME};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    ok(&dir, &["init", "--name", "Ana"]);
    let room = create_room(&dir, "ops");
    // Something else (here: this test) holds the store.
    let held = RedbStore::open(&dir.join(STORE_FILE_NAME), StoreConfig::default()).unwrap();
    let cli = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["rooms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    // Returns once the daemon's socket is up, i.e. after it got the store.
    let mut d = Daemon::spawn(
        &dir,
        vec!["run".into(), "--no-mdns".into(), "--no-ble".into()],
    );
    release.join().unwrap();
    assert!(d.alive(), "the daemon gave up while the store was held");
    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the waiting command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rooms: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rooms[0]["room_id"], room.as_str());
    // A second daemon is still refused at once: the first one answers.
    let second = mr(&dir, &["run", "--no-mdns", "--no-ble"]);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(d.terminate().code(), Some(0));
}
