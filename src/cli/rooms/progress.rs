//! The progress bar of `messages --follow` on a terminal while the room
//! syncs (`protocol-spec/daemon.md`, "Status"): a thread asks the daemon
//! for `status` every [`PROGRESS_POLL_MS`] and draws the room's `syncing`
//! entry as one line on standard error, which it clears again when the
//! room caught up. Message lines are printed by the follower between
//! [`SyncBar::hide`] and the guard's drop, so they never interleave with
//! the bar.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::control::{self, OkData, Op, Request};

use super::human::Facts;

/// How often the bar asks the daemon for progress.
pub const PROGRESS_POLL_MS: u64 = 500;
/// Erases the terminal line the cursor is on.
const CLEAR_LINE: &str = "\r\x1b[K";

/// A running progress bar (see the module docs); stopped and cleared on
/// drop.
pub struct SyncBar {
    /// Whether the bar is on the screen.
    shown: Arc<Mutex<bool>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SyncBar {
    /// Starts the bar for the room `room_arg` names (an ID, an ID prefix or
    /// a name, resolved among this device's rooms when it is not an ID).
    pub fn start(facts: Facts<'_>, room_arg: &str) -> SyncBar {
        let matcher = RoomMatch::new(facts, room_arg);
        let shown = Arc::new(Mutex::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let dir = facts.dir.to_path_buf();
        let thread = {
            let (shown, stop) = (shown.clone(), stop.clone());
            thread::Builder::new()
                .name("sync-bar".into())
                .spawn(move || run(&dir, &matcher, &shown, &stop))
                .ok()
        };
        SyncBar {
            shown,
            stop,
            thread,
        }
    }

    /// Takes the bar off the screen until the guard is dropped (print
    /// message lines meanwhile).
    pub fn hide(&self) -> MutexGuard<'_, bool> {
        let mut g = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        if *g {
            let mut e = io::stderr().lock();
            let _ = e.write_all(CLEAR_LINE.as_bytes()).and_then(|()| e.flush());
            *g = false;
        }
        g
    }
}

impl Drop for SyncBar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.hide());
    }
}

/// Which `syncing` entry is the followed room's.
enum RoomMatch {
    /// A full ID or an ID prefix, lower case.
    Prefix(String),
    /// A name that resolved to no room yet (the room is not this
    /// device's yet): nothing to show.
    Nothing,
}

impl RoomMatch {
    /// The room among this device's rooms (the shared resolver), else,
    /// for a room that is not this device's yet (its first sync), an ID
    /// prefix of at least `MIN_ROOM_PREFIX` hex digits as given.
    fn new(facts: Facts<'_>, arg: &str) -> RoomMatch {
        if let Some(id) = facts
            .rooms()
            .and_then(|rooms| control::exec::resolve_among(arg, &rooms).ok())
        {
            return RoomMatch::Prefix(id.to_string());
        }
        let prefix = arg.trim().to_ascii_lowercase();
        if prefix.len() >= control::exec::MIN_ROOM_PREFIX
            && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            RoomMatch::Prefix(prefix)
        } else {
            RoomMatch::Nothing
        }
    }

    fn matches(&self, room_id: &str) -> bool {
        match self {
            RoomMatch::Prefix(p) => room_id.starts_with(p.as_str()),
            RoomMatch::Nothing => false,
        }
    }
}

fn run(dir: &Path, matcher: &RoomMatch, shown: &Mutex<bool>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let progress = room_progress(dir, matcher);
        let mut g = shown.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = io::stderr().lock();
        let _ = match progress {
            Some((have, estimate)) => {
                *g = true;
                write!(
                    e,
                    "{CLEAR_LINE}syncing {}",
                    crate::cli::status::progress_bar(have, estimate)
                )
            }
            None if *g => {
                *g = false;
                e.write_all(CLEAR_LINE.as_bytes())
            }
            None => Ok(()),
        };
        let _ = e.flush();
        drop((e, g));
        // Sleep in short steps so a stop is quick.
        for _ in 0..PROGRESS_POLL_MS / 50 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The room's `(have, estimate)` from the daemon's `status`, if it syncs.
fn room_progress(dir: &Path, matcher: &RoomMatch) -> Option<(u64, u64)> {
    let stream = control::connect(dir)?;
    let OkData::Status { status } =
        control::call(dir, stream, &Request::new(Op::Status), |_| Ok(())).ok()?
    else {
        return None;
    };
    status["syncing"]
        .as_array()?
        .iter()
        .find(|p| p["room_id"].as_str().is_some_and(|r| matcher.matches(r)))
        .map(|p| {
            (
                p["have"].as_u64().unwrap_or(0),
                p["estimate"].as_u64().unwrap_or(0),
            )
        })
}
