//! The rooms commands through the real `meshrelay` binary: two data
//! directories exchanging a contact card and a bundle file.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn mr(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshrelay"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = mr(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn demo_shares_a_room_through_a_bundle() {
    let o = Command::new(env!("CARGO_BIN_EXE_meshrelay"))
        .args(["demo", "--basics"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("Bo reads"), "{out}");
    assert!(out.contains("Demo complete"), "{out}");
}

#[test]
fn room_shared_through_a_bundle_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&a, &["init", "--name", "Ana"]);
    ok(&b, &["init", "--name", "Bo"]);
    let b_id: Value = serde_json::from_str(&ok(&b, &["id", "--json"])).unwrap();
    let b_card = b_id["card"].as_str().unwrap();

    let created: Value =
        serde_json::from_str(&ok(&a, &["room", "create", "ops", "--json"])).unwrap();
    let room = created["room_id"].as_str().unwrap();
    ok(&a, &["room", "invite", room, b_card]);
    let sent: Value = serde_json::from_str(&ok(&a, &["send", room, "hello Bo", "--json"])).unwrap();
    let rooms: Value = serde_json::from_str(&ok(&a, &["rooms", "--json"])).unwrap();
    assert_eq!(rooms[0]["room_id"], room);
    assert_eq!(rooms[0]["members"].as_array().unwrap().len(), 2);

    let file = tmp.path().join("stick.bundle");
    let file = file.to_str().unwrap();
    ok(&a, &["export", "--room", room, file]);
    let sum: Value = serde_json::from_str(&ok(&b, &["import", file, "--json"])).unwrap();
    assert!(sum["imported"].as_u64().unwrap() > 0, "{sum}");
    assert_eq!(sum["rejected"], 0);
    let again: Value = serde_json::from_str(&ok(&b, &["import", file, "--json"])).unwrap();
    assert_eq!(again["imported"], 0);

    let lines = ok(&b, &["messages", room, "--json"]);
    let text = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v.get("text").is_some())
        .unwrap();
    assert_eq!(text["text"], "hello Bo");
    assert_eq!(text["event_id"], sent["event_id"]);

    // `decode` understands bundles.
    let decoded: Value = serde_json::from_str(&ok(&b, &["decode", "--json", file])).unwrap();
    let evs = decoded["bundle"]["events"].as_array().unwrap();
    assert!(evs.iter().any(|e| e["event_id"] == sent["event_id"]));
    assert!(!decoded.to_string().contains("hello Bo"));

    // Bad input exits 2; an uninitialised directory too.
    assert_eq!(mr(&a, &["send", "zz", "x"]).status.code(), Some(2));
    assert_eq!(
        mr(&tmp.path().join("none"), &["rooms"]).status.code(),
        Some(2)
    );
}

#[test]
fn store_check_reports_integrity_and_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(&a, &["init", "--name", "Ana"]);
    // No store yet: a clear usage error, not a crash.
    let o = mr(&a, &["store", "check", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let created: Value =
        serde_json::from_str(&ok(&a, &["room", "create", "ops", "--json"])).unwrap();
    let room = created["room_id"].as_str().unwrap();
    ok(&a, &["send", room, "one", "--json"]);
    ok(&a, &["send", room, "two", "--json"]);
    let report: Value = serde_json::from_str(&ok(&a, &["store", "check", "--json"])).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["stats"]["events"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["stats"]["forks"], 0);
    assert!(report["stats"]["evictions"].is_object());
    let text = ok(&a, &["store", "check"]);
    assert!(text.contains("integrity: ok"), "{text}");
}

/// Issue 15: names and texts from peers reach the terminal escaped (ESC,
/// `\r`, bidirectional overrides), while `--json` stays exact.
#[test]
fn hostile_names_and_texts_print_escaped_and_json_stays_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&a, &["init", "--name", "Ana"]);
    ok(&b, &["init", "--name", "Bo"]);
    let b_id: Value = serde_json::from_str(&ok(&b, &["id", "--json"])).unwrap();
    let b_card = b_id["card"].as_str().unwrap();

    let name = "ops\u{1b}[2J\rroot\u{202e}gpj.exe";
    let text = "hi\u{1b}]0;pwned\u{7}\rAdmin: trust me \u{2066}x\u{2069}";
    let created: Value =
        serde_json::from_str(&ok(&a, &["room", "create", name, "--json"])).unwrap();
    let room = created["room_id"].as_str().unwrap();
    ok(&a, &["room", "invite", room, b_card]);
    ok(&a, &["send", room, text]);
    let file = tmp.path().join("stick.bundle");
    let file = file.to_str().unwrap();
    ok(&a, &["export", "--room", room, file]);
    ok(&b, &["import", file]);

    let escaped_name = "ops\\u{1b}[2J\\u{d}root\\u{202e}gpj.exe";
    let escaped_text = "hi\\u{1b}]0;pwned\\u{7}\\u{d}Admin: trust me \\u{2066}x\\u{2069}";
    for dir in [&a, &b] {
        let human = ok(dir, &["rooms"]);
        assert!(human.contains(escaped_name), "{human}");
        let human = ok(dir, &["messages", room]);
        assert!(human.contains(escaped_text), "{human}");
        for out in [ok(dir, &["rooms"]), human] {
            assert!(
                !out.chars().any(|c| c == '\u{1b}'
                    || c == '\r'
                    || c == '\u{7}'
                    || ('\u{2066}'..='\u{2069}').contains(&c)
                    || c == '\u{202e}'),
                "{out:?}"
            );
        }
        let rooms: Value = serde_json::from_str(&ok(dir, &["rooms", "--json"])).unwrap();
        assert_eq!(rooms[0]["name"], name);
        let lines = ok(dir, &["messages", room, "--json"]);
        assert!(
            lines
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .any(|v| v["text"] == text),
            "{lines}"
        );
    }
}

/// Peak resident set of `meshrelay args` in KiB: `/usr/bin/time -f %M` when
/// installed, else the highest `VmHWM` seen in `/proc/<pid>/status` while
/// it runs (a lower bound). Returns (exit code, peak KiB, stderr).
fn peak_rss(dir: &Path, args: &[&str]) -> (Option<i32>, u64, String) {
    let bin = env!("CARGO_BIN_EXE_meshrelay");
    if Path::new("/usr/bin/time").exists() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let o = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(tmp.path())
            .arg(bin)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        let kib = std::fs::read_to_string(tmp.path()).unwrap();
        let kib = kib.lines().last().unwrap().trim().parse().unwrap();
        return (
            o.status.code(),
            kib,
            String::from_utf8_lossy(&o.stderr).into(),
        );
    }
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(l) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: u64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            peak = peak.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        peak,
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Issue 15, import memory: a 100 MB (sparse) junk file is refused from its
/// size, exit 2, without reading it: peak RSS stays under 32 MiB.
#[test]
fn oversize_import_is_refused_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    ok(&dir, &["init", "--name", "Ana"]);
    let junk = tmp.path().join("junk.bundle");
    std::fs::File::create(&junk)
        .unwrap()
        .set_len(100 * 1000 * 1000)
        .unwrap();
    let (code, kib, err) = peak_rss(&dir, &["import", junk.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bundle limit"), "{err}");
    eprintln!("import of a 100 MB junk file: exit 2, peak RSS {kib} KiB");
    assert!(kib <= 32 * 1024, "peak RSS {kib} KiB");

    // Through standard input redirected from the file: refused the same way.
    let o = Command::new(env!("CARGO_BIN_EXE_meshrelay"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["import", "-"])
        .stdin(std::fs::File::open(&junk).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
