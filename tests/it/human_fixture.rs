//! A fixed, deterministic set of data directories for the golden tests of
//! the CLI's output (`human.rs`, `human_json.rs`), and the helpers that run
//! the binary on copies of them.
//!
//! Every identity, room key and nonce comes from seeded RNGs and every
//! timestamp from a fixed clock, so the directories (and so every output
//! over them) are the same on every run. The binary runs with the test
//! hook `MESHRELAY_TEST_NOW_MS` set to [`NOW`] (so expiry never catches up
//! with the fixture) and `TZ` set to [`TZ`].
//!
//! The story, in UTC (Berlin is UTC+1 in December):
//!
//! - 2 Dec 21:40 Ana creates "north camp" and invites Ben, another device
//!   also named Ben ("Ben 2"), and Dan;
//! - 21:41 Ana: "Water at the north gate"; 21:45 Ben: "On my way";
//!   21:50 Ben 2: "Me too"; 22:10 Dan: "Bringing the radio";
//! - 22:30 Ana removes Dan; 23:20 Ana invites Cy (00:20 on 3 Dec in
//!   Berlin); 23:25 Ana: "Welcome Cy";
//! - 3 Dec 08:05 Ben: "Gate is open"; Cy imports everything.
//!
//! Ana knows Dan only from the removed membership: a reader sees Dan as an
//! unknown device. Cy joined last: the four earlier messages are one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meshrelay::app::{self, Device};
use meshrelay::crypto::DeviceId;
use meshrelay::event::RoomId;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::daemon::BIN;

/// 2026-12-02T21:40:00Z.
pub const T0: u64 = 1_796_247_600_000;
const MIN: u64 = 60_000;
/// What the binary believes is now: 2026-12-03T09:00:00Z.
pub const NOW: u64 = T0 + 680 * MIN;
/// Central European Time as a POSIX TZ string (needs no tz database).
pub const TZ: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

/// One fixture device: its data directory, RNG and ID.
pub struct Dev {
    pub dir: PathBuf,
    rng: StdRng,
    pub id: DeviceId,
}

impl Dev {
    fn new(base: &Path, label: &str, name: &str, seed: u64) -> Dev {
        let dir = base.join(label);
        let mut rng = StdRng::seed_from_u64(seed);
        let id = app::init(&dir, name, T0 - MIN, &mut rng).unwrap();
        Dev { dir, rng, id }
    }

    fn open(&self, t: u64) -> Device {
        Device::open(&self.dir, t).unwrap()
    }

    pub fn card(&self) -> String {
        self.open(T0).card().to_text()
    }

    fn send(&mut self, room: &RoomId, text: &str, t: u64) {
        let mut d = Device::open(&self.dir, t).unwrap();
        d.send(room, text, t, &mut self.rng).unwrap();
    }

    fn give(&self, room: &RoomId, to: &Dev, t: u64) {
        let bundle = self.open(t).export(Some(room), t).unwrap();
        to.open(t).import(&bundle, t).unwrap();
    }
}

/// The fixture: the devices' data directories under one temporary
/// directory, and the room.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub ana: Dev,
    pub ben: Dev,
    pub ben2: Dev,
    pub cy: Dev,
    pub dan: Dev,
    /// Never in the room: someone to invite.
    pub eve: Dev,
    pub room: RoomId,
}

impl Fixture {
    /// Builds the story of the module docs.
    pub fn build() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path();
        let mut ana = Dev::new(b, "ana", "Ana", 11);
        let mut ben = Dev::new(b, "ben", "Ben", 12);
        let mut ben2 = Dev::new(b, "ben2", "Ben", 13);
        let cy = Dev::new(b, "cy", "Cy", 14);
        let mut dan = Dev::new(b, "dan", "Dan", 15);
        let eve = Dev::new(b, "eve", "Eve", 16);
        let at = |m: u64| T0 + m * MIN;
        let room = ana
            .open(at(0))
            .room_create("north camp", at(0), &mut ana.rng)
            .unwrap();
        for who in [&ben, &ben2, &dan] {
            let card = who.card();
            let mut d = ana.open(at(0));
            d.room_invite(&room, &card, at(0), &mut ana.rng).unwrap();
        }
        ana.send(&room, "Water at the north gate", at(1));
        ana.give(&room, &ben, at(2));
        ben.send(&room, "On my way", at(5));
        ben.give(&room, &ben2, at(6));
        ben2.send(&room, "Me too", at(10));
        ben2.give(&room, &dan, at(11));
        dan.send(&room, "Bringing the radio", at(30));
        dan.give(&room, &ana, at(31));
        {
            let mut d = ana.open(at(50));
            d.room_remove(&room, &dan.id, at(50), &mut ana.rng).unwrap();
        }
        let cy_card = cy.card();
        {
            let mut d = ana.open(at(100));
            d.room_invite(&room, &cy_card, at(100), &mut ana.rng)
                .unwrap();
        }
        ana.send(&room, "Welcome Cy", at(105));
        ana.give(&room, &ben, at(600));
        ben.send(&room, "Gate is open", at(625));
        ben.give(&room, &ana, at(626));
        ana.give(&room, &cy, at(627));
        Fixture {
            _tmp: tmp,
            ana,
            ben,
            ben2,
            cy,
            dan,
            eve,
            room,
        }
    }

    /// A fresh copy of `dev`'s data directory, so a command that writes
    /// leaves the fixture as it was.
    pub fn copy(&self, dev: &Dev) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&dev.dir, &tmp.path().join("data"));
        tmp
    }
}

fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The binary on the data directory in `tmp` (see [`Fixture::copy`]), run
/// in `tmp` (so relative file names land there), at [`NOW`] and in [`TZ`],
/// with stdout a pipe and `NO_COLOR` unset.
pub fn cmd(tmp: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(tmp)
        .arg("--data-dir")
        .arg(tmp.join("data"))
        .args(args)
        .env("MESHRELAY_TEST_NOW_MS", NOW.to_string())
        .env("TZ", TZ)
        .env_remove("NO_COLOR")
        .env_remove("MESHRELAY_DATA_DIR");
    c
}

/// Runs [`cmd`] and returns its stdout; panics unless it succeeded.
pub fn run(tmp: &Path, args: &[&str]) -> Vec<u8> {
    let o: Output = cmd(tmp, args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// `s` with every run of exactly 64 hex digits (a random event ID) or 32
/// (a random room ID) replaced by `<id>`.
pub fn mask_ids(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let end_ok = b.get(i + run).is_none_or(|c| !c.is_ascii_alphanumeric());
        if (run == 64 || run == 32) && boundary && end_ok {
            out.push_str("<id>");
            i += run;
        } else {
            let n = run.max(1);
            let end = (i + n).min(b.len());
            // Advance by whole characters.
            let mut end = end;
            while !s.is_char_boundary(end) {
                end += 1;
            }
            out.push_str(&s[i..end]);
            i = end;
        }
    }
    out
}

/// The golden file `tests/golden/NAME`: compared with `got`, or written
/// when `UPDATE_GOLDEN=1`. The `json/` files are the `--json` contract,
/// written once from the binary before the human output changed: they are
/// rewritten only with `UPDATE_JSON_CONTRACT=1`, never by `UPDATE_GOLDEN`.
pub fn golden(name: &str, got: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let update = if name.starts_with("json/") {
        "UPDATE_JSON_CONTRACT"
    } else {
        "UPDATE_GOLDEN"
    };
    if std::env::var_os(update).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == got,
        "{name} differs from the golden file\n--- want\n{}\n--- got\n{}",
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(got)
    );
}

#[test]
fn mask_ids_masks_only_whole_64_digit_runs() {
    let id = "ab".repeat(32);
    assert_eq!(mask_ids(&format!("{{\"e\":\"{id}\"}}")), "{\"e\":\"<id>\"}");
    assert_eq!(mask_ids(&format!("x{id}")), format!("x{id}"));
    assert_eq!(mask_ids("Zoë 12"), "Zoë 12");
    let room = "0f".repeat(16);
    assert_eq!(mask_ids(&format!("ID {room}.")), "ID <id>.");
}
