//! `meshrelay demo`: three daemons on 127.0.0.1 with static peers A–B and
//! B–C (A and C never connect), narrated as a timeline.
//!
//! 1. A creates a room, invites B and C by their contact cards, and sends a
//!    message that reaches C through B.
//! 2. C stops; A sends more; C restarts and catches up (store-and-forward).
//!
//! Each node is a real `meshrelay run` process (this binary) in a temporary
//! data directory, driven through its control socket like any CLI user.
//! Needs no external service; the directories are removed at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app::MessageLine;
use crate::control::{self, OkData, Op, Request};

/// How long the demo waits for any one step.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Starting or talking to a node failed.
    #[error("{0}")]
    Node(String),
    /// A step did not finish in time.
    #[error("timed out after {STEP_TIMEOUT:?} waiting for: {0}")]
    Timeout(String),
    /// Writing the timeline failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

struct DemoNode {
    name: &'static str,
    dir: PathBuf,
    child: Option<Child>,
}

impl DemoNode {
    fn start(&mut self, exe: &Path, peer: Option<&str>) -> Result<(), DemoError> {
        let mut cmd = Command::new(exe);
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args([
                "run",
                "--no-mdns",
                "--no-ble",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = peer {
            cmd.args(["--peer", p]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| DemoError::Node(format!("cannot start {}: {e}", self.name)))?;
        self.child = Some(child);
        wait_for(&format!("{} to start", self.name), || {
            Ok(control::connect(&self.dir).is_some())
        })
    }

    /// One typed request through the node's control socket: its streamed
    /// lines and its final data.
    fn call(&self, op: Op) -> Result<(Vec<MessageLine>, OkData), DemoError> {
        let stream = control::connect(&self.dir)
            .ok_or_else(|| DemoError::Node(format!("{} is not running", self.name)))?;
        let mut lines = Vec::new();
        let ok = control::call(&self.dir, stream, &Request::new(op), |l| {
            lines.push(l);
            Ok(())
        })
        .map_err(|e| DemoError::Node(format!("{}: {e}", self.name)))?;
        Ok((lines, ok))
    }

    fn unexpected(&self, ok: &OkData) -> DemoError {
        DemoError::Node(format!("{}: unexpected reply {ok:?}", self.name))
    }

    fn room_create(&self, name: &str) -> Result<String, DemoError> {
        match self.call(Op::RoomCreate { name: name.into() })? {
            (_, OkData::Room { room_id }) => Ok(room_id),
            (_, ok) => Err(self.unexpected(&ok)),
        }
    }

    fn invite(&self, room: &str, contact: &str) -> Result<(), DemoError> {
        self.call(Op::RoomInvite {
            room: room.into(),
            contact: contact.into(),
        })
        .map(drop)
    }

    fn send(&self, room: &str, text: &str) -> Result<(), DemoError> {
        self.call(Op::send_text(room, text)).map(drop)
    }

    fn status(&self) -> Result<Value, DemoError> {
        match self.call(Op::Status)? {
            (_, OkData::Status { status }) => Ok(status),
            (_, ok) => Err(self.unexpected(&ok)),
        }
    }

    /// The texts of the room's readable messages.
    fn texts(&self, room: &str) -> Result<Vec<String>, DemoError> {
        let (lines, _) = self.call(Op::Messages {
            room: room.into(),
            last: None,
            mark_read: true,
        })?;
        Ok(lines
            .into_iter()
            .filter_map(|l| match l {
                MessageLine::Text { text, .. } => Some(text),
                _ => None,
            })
            .collect())
    }

    fn stop(&mut self) -> Result<(), DemoError> {
        if control::connect(&self.dir).is_some() {
            let _ = self.call(Op::Shutdown);
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + STEP_TIMEOUT;
            loop {
                if c.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> Result<bool, DemoError>) -> Result<(), DemoError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DemoError::Timeout(what.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the demo with `exe` (this binary) in a fresh temporary directory,
/// writing the timeline to `out`.
pub fn run(exe: &Path, out: &mut dyn Write) -> Result<(), DemoError> {
    let base = std::env::temp_dir().join(format!("meshrelay-demo-{}", std::process::id()));
    let r = run_in(exe, &base, out);
    let _ = std::fs::remove_dir_all(&base);
    r
}

fn run_in(exe: &Path, base: &Path, out: &mut dyn Write) -> Result<(), DemoError> {
    let t0 = Instant::now();
    let say = |out: &mut dyn Write, s: &str| -> Result<(), DemoError> {
        let t = t0.elapsed();
        writeln!(
            out,
            "[{:>3}.{:01}s] {s}",
            t.as_secs(),
            t.subsec_millis() / 100
        )?;
        out.flush()?;
        Ok(())
    };
    writeln!(
        out,
        "meshrelay demo: three nodes on 127.0.0.1, static links A–B and B–C (A and C never connect)."
    )?;
    let mut nodes: Vec<DemoNode> = [("A (Ana)", "Ana"), ("B (Bo)", "Bo"), ("C (Cy)", "Cy")]
        .iter()
        .map(|(name, user)| {
            let dir = base.join(user.to_lowercase());
            let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
            crate::app::init(&dir, user, super::rooms::now_ms(), &mut rng)
                .map_err(|e| DemoError::Node(format!("init {name}: {e}")))?;
            Ok(DemoNode {
                name,
                dir,
                child: None,
            })
        })
        .collect::<Result<_, DemoError>>()?;
    let card = |n: &DemoNode| -> Result<String, DemoError> {
        let (_, card) =
            crate::app::load_identity(&n.dir).map_err(|e| DemoError::Node(e.to_string()))?;
        Ok(card.to_text())
    };
    let (b_card, c_card) = (card(&nodes[1])?, card(&nodes[2])?);
    say(
        out,
        "created three identities in temporary data directories",
    )?;

    // B first, so A and C can name its address as their static peer.
    nodes[1].start(exe, None)?;
    let b_addr = nodes[1].status()?["daemon"]["listening"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .find(|s| s.contains("/tcp/"))
                .map(str::to_owned)
        })
        .ok_or_else(|| DemoError::Node("B reports no listening address".into()))?;
    say(out, &format!("B is running, listening on {b_addr}"))?;
    nodes[0].start(exe, Some(&b_addr))?;
    nodes[2].start(exe, Some(&b_addr))?;
    say(
        out,
        "A and C are running, each with B as its only static peer",
    )?;
    wait_for("links A–B and B–C", || {
        Ok(nodes[1].status()?["peers"].as_u64() == Some(2))
    })?;
    say(out, "links up: A–B, B–C")?;

    let room = nodes[0].room_create("north camp")?;
    say(out, &format!("A creates room {room} (\"north camp\")"))?;
    nodes[0].invite(&room, &b_card)?;
    nodes[0].invite(&room, &c_card)?;
    say(out, "A invites B and C with their contact cards")?;
    let first = "Water point at the north gate";
    nodes[0].send(&room, first)?;
    say(out, &format!("A sends: {first:?}"))?;
    wait_for("C to read A's message", || {
        Ok(nodes[2]
            .texts(&room)
            .unwrap_or_default()
            .iter()
            .any(|t| t == first))
    })?;
    say(
        out,
        &format!("C reads {first:?} — relayed by B, decrypted only by members"),
    )?;

    nodes[2].stop()?;
    say(out, "C stops (out of range)")?;
    let later = [
        "Moving to the south camp at 14:00",
        "Bring the radio batteries",
        "Road closed at the bridge",
    ];
    for text in later {
        nodes[0].send(&room, text)?;
        say(out, &format!("A sends: {text:?}"))?;
    }
    wait_for("B to hold A's messages", || {
        let t = nodes[1].texts(&room)?;
        Ok(later.iter().all(|l| t.iter().any(|x| x == l)))
    })?;
    say(out, "B holds them (store-and-forward)")?;
    nodes[2].start(exe, Some(&b_addr))?;
    say(out, "C restarts and reconnects to B")?;
    wait_for("C to catch up", || {
        let t = nodes[2].texts(&room).unwrap_or_default();
        Ok(later.iter().all(|l| t.iter().any(|x| x == l)))
    })?;
    let texts = nodes[2].texts(&room)?;
    say(
        out,
        &format!("C caught up: {} messages, each exactly once:", texts.len()),
    )?;
    for t in &texts {
        writeln!(out, "          C reads {t:?}")?;
    }
    let mut dedup = texts.clone();
    dedup.sort();
    dedup.dedup();
    if dedup.len() != texts.len() {
        return Err(DemoError::Node("C shows a duplicate message".into()));
    }
    for n in &mut nodes {
        n.stop()?;
    }
    say(out, "all nodes stopped. Demo complete.")?;
    Ok(())
}
