//! Golden tests of the CLI's output for people (issue 22): each command's
//! human output over the fixed data directories of `human_fixture.rs`, at
//! a fixed "now" (`MESHRELAY_TEST_NOW_MS`) in a fixed time zone (`TZ`),
//! compared with `tests/golden/human/` (regenerate with `UPDATE_GOLDEN=1`).
//! Also: a pipe gets no escape codes, a terminal (a pty from `script`) gets
//! colour unless `NO_COLOR` is set, `meshrelay` alone explains the first
//! steps, and `messages --follow` prints the same way, through a daemon too.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::daemon::{BIN, Daemon, create_room, ok};
use super::human_fixture::{Fixture, NOW, TZ, cmd, golden, mask_ids, run};

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

/// Reads `child`'s stdout on a thread; `until` polls what arrived.
struct Reader(mpsc::Receiver<Vec<u8>>, Vec<u8>);

impl Reader {
    fn new(mut out: impl Read + Send + 'static) -> Reader {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Reader(rx, Vec::new())
    }

    fn until(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !String::from_utf8_lossy(&self.1).contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(b) => self.1.extend(b),
                Err(_) => panic!("no {what:?} in:\n{}", String::from_utf8_lossy(&self.1)),
            }
        }
        String::from_utf8_lossy(&self.1).into_owned()
    }
}

/// Runs a command that writes, again while the store is busy (a follower
/// polling it holds it for a moment).
fn run_retrying(tmp: &Path, args: &[&str]) -> Vec<u8> {
    for _ in 0..20 {
        let o = cmd(tmp, args).output().unwrap();
        if o.status.success() {
            return o.stdout;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{args:?} kept failing");
}

#[test]
fn golden_human_output_of_each_command() {
    let f = Fixture::build();
    let room = f.room.to_string();
    let mut outputs = Vec::new();
    let mut check = |name: &str, out: Vec<u8>| {
        golden(&format!("human/{name}"), &out);
        outputs.push((name.to_owned(), out));
    };

    let t = f.copy(&f.ana);
    let ana = run(t.path(), &["messages", &room]);
    // Dan was removed and is no contact of Ana's: unknown, with a
    // fingerprint; the two Bens carry theirs.
    let fp = |d: &meshrelay::crypto::DeviceId| meshrelay::cli::human::short_fingerprint(d);
    let shown = String::from_utf8_lossy(&ana).into_owned();
    assert!(
        shown.contains(&format!(
            "unknown device ({}): Bringing the radio",
            fp(&f.dan.id)
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("Ben ({}): On my way", fp(&f.ben.id))),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("Ben ({}): Me too", fp(&f.ben2.id))),
        "{shown}"
    );
    check("messages-ana.txt", ana);
    check(
        "messages-ana-utc.txt",
        run(t.path(), &["messages", &room, "--utc"]),
    );
    let t = f.copy(&f.cy);
    check("messages-cy.txt", run(t.path(), &["messages", &room]));
    let t = f.copy(&f.eve);
    std::fs::write(
        t.path().join("stick.bundle"),
        run(f.copy(&f.ana).path(), &["export", "--room", &room, "-"]),
    )
    .unwrap();
    check("import-eve.txt", run(t.path(), &["import", "stick.bundle"]));
    check("messages-eve.txt", run(t.path(), &["messages", &room]));
    check(
        "import-eve-again.txt",
        run(t.path(), &["import", "stick.bundle"]),
    );

    let t = f.copy(&f.ana);
    check("send.txt", run(t.path(), &["send", &room, "Fresh water"]));
    let created = text(run(t.path(), &["room", "create", "south camp"]));
    check("room-create.txt", mask_ids(&created).into_bytes());
    let eve = f.eve.card();
    check(
        "room-invite.txt",
        run(t.path(), &["room", "invite", &room, &eve]),
    );
    let ben2 = f.ben2.id.to_string();
    check(
        "room-promote.txt",
        run(t.path(), &["room", "promote", &room, &ben2]),
    );
    check(
        "room-remove.txt",
        run(t.path(), &["room", "remove", &room, &ben2]),
    );
    check(
        "export.txt",
        run(t.path(), &["export", "--room", &room, "stick.bundle"]),
    );
    check("export-all.txt", run(t.path(), &["export", "all.bundle"]));
    let t2 = f.copy(&f.ben);
    std::fs::copy(t.path().join("stick.bundle"), t2.path().join("s.bundle")).unwrap();
    check("import.txt", run(t2.path(), &["import", "s.bundle"]));

    // Output to a pipe is plain: no escape code anywhere.
    for (name, out) in &outputs {
        assert!(!out.contains(&0x1b), "{name} has escape codes");
    }
}

#[test]
fn meshrelay_alone_explains_the_first_steps_or_who_this_is() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    let o = Command::new(BIN)
        .env("MESHRELAY_DATA_DIR", &fresh)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = text(o.stdout).replace(fresh.to_str().unwrap(), "<data-dir>");
    golden("human/no-arguments-fresh.txt", out.as_bytes());
    assert!(!fresh.exists(), "asking for help creates nothing");

    let f = Fixture::build();
    let t = f.copy(&f.ana);
    let o = cmd(t.path(), &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = text(o.stdout);
    assert!(out.starts_with("Delay-tolerant"), "{out}");
    assert!(out.contains("Usage: meshrelay"), "{out}");
    let hint = out.lines().last().unwrap();
    golden("human/no-arguments-hint.txt", hint.as_bytes());
}

/// The command line that `script` runs in a pty.
fn in_pty(tmp: &Path, args: &[&str], no_color: Option<&str>) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = vec![quote(BIN), "--data-dir".into()];
    line.push(quote(tmp.join("data").to_str().unwrap()));
    line.extend(args.iter().map(|a| quote(a)));
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env("MESHRELAY_TEST_NOW_MS", NOW.to_string())
        .env("TZ", TZ)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let o = c
        .output()
        .expect("`script` (util-linux) runs a command in a pty");
    assert!(o.status.success(), "{o:?}");
    text(o.stdout)
}

#[test]
fn colour_on_a_terminal_unless_no_color_and_never_in_a_pipe() {
    let f = Fixture::build();
    let room = f.room.to_string();
    let t = f.copy(&f.ana);
    let args = ["messages", room.as_str()];
    let tty = in_pty(t.path(), &args, None);
    assert!(
        tty.contains("\u{1b}[1m-- Wednesday 2 December --\u{1b}[0m"),
        "{tty:?}"
    );
    assert!(tty.contains("\u{1b}[2m22:41\u{1b}[0m"), "{tty:?}");
    let no_color = in_pty(t.path(), &args, Some("1"));
    assert!(!no_color.contains('\u{1b}'), "{no_color:?}");
    // An empty NO_COLOR does not count (no-color.org).
    assert!(in_pty(t.path(), &args, Some("")).contains('\u{1b}'));
    // The pty turns \n into \r\n; otherwise NO_COLOR output is the pipe's.
    let piped = text(run(t.path(), &args));
    assert_eq!(no_color.replace("\r\n", "\n"), piped);
    assert!(!piped.contains('\u{1b}'));
}

#[test]
fn follow_prints_history_then_new_messages() {
    let f = Fixture::build();
    let room = f.room.to_string();
    let t = f.copy(&f.cy);
    let mut child = cmd(t.path(), &["messages", &room, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = Reader::new(child.stdout.take().unwrap());
    r.until("Gate is open\n");
    let sent = run_retrying(t.path(), &["send", &room, "Cy here"]);
    assert_eq!(text(sent), "Sent to north camp.\n");
    let out = r.until("Cy here\n");
    child.kill().unwrap();
    child.wait().unwrap();
    golden("human/messages-cy-follow.txt", out.as_bytes());
}

/// Through a daemon, `messages --follow` summarises the history the same
/// way and then prints each new message once.
#[test]
fn follow_through_a_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let da = tmp.path().join("a");
    let _d = Daemon::start(&da, "Ana", &[]);
    let room = create_room(&da, "ops");
    assert_eq!(ok(&da, &["send", &room, "one"]), "Sent to ops.\n");
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&da)
        .args(["messages", &room, "--follow", "--utc"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = Reader::new(child.stdout.take().unwrap());
    r.until("Ana: one\n");
    ok(&da, &["send", &room, "two"]);
    let out = r.until("Ana: two\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("-- ") && lines[0].ends_with(" (UTC) --"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].ends_with(" Ana: one") && lines[2].ends_with(" Ana: two"),
        "{out}"
    );
    assert_eq!(out.matches("one").count(), 1, "{out}");
}
