//! Field relay (issue 19): the configuration file, the logs, systemd
//! readiness and the unit's hardening, the Debian package and the metrics
//! endpoint, each against the real `meshrelay` binary.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{BIN, Daemon, mr, ok, wait_until};

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tool the tests need. When it is missing, the project's own
/// `scripts/test-deps.sh` installs it (once per test run), so `cargo test
/// --workspace` alone works on a fresh machine, as the homeserver tests do
/// with Synapse.
pub fn need(tool: &str) -> PathBuf {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let find = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    };
    if let Some(found) = find() {
        return found;
    }
    INSTALL.call_once(|| {
        let status = Command::new("bash")
            .arg(repo().join("scripts/test-deps.sh"))
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "scripts/test-deps.sh failed: {status:?}"
        );
    });
    find().unwrap_or_else(|| panic!("{tool} is missing: run scripts/test-deps.sh"))
}

#[test]
fn config_check_accepts_the_example_and_names_key_and_line_of_errors() {
    let t = tempfile::tempdir().unwrap();
    let example = repo().join("packaging/meshrelay.toml");
    let o = Command::new(BIN)
        .args(["config", "check"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(": OK"), "{out}");

    let cases = [
        (
            "no-mdns = true\n\nlisen = []\n",
            "bad.toml:3: unknown key `lisen`",
        ),
        (
            "# relay\nlink-budget-kib = \"fast\"\n",
            "bad.toml:2: key `link-budget-kib`: expected an integer, found string",
        ),
        (
            "profile = \"relay\"\nmetrics = \"nowhere\"\n",
            "bad.toml:2: key `metrics`:",
        ),
        ("no-ble = \n", "bad.toml:1: not valid TOML"),
    ];
    for (text, want) in cases {
        let bad = t.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let o = Command::new(BIN)
            .args(["config", "check"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{text:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{text:?}: {}", stderr(&o));
    }
    let o = Command::new(BIN)
        .args(["config", "check"])
        .arg(t.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn run_reads_the_data_directory_config_and_refuses_a_bad_one() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n");
    ok(&dir, &["init", "--name", "n"]);
    // A bad key in the default file stops `run` before it starts (exit 2).
    std::fs::write(dir.join("meshrelay.toml"), "no-mdns = true\nspeed = 3\n").unwrap();
    let o = mr(&dir, &["run"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("meshrelay.toml:2: unknown key `speed`"),
        "{}",
        stderr(&o)
    );
    // --config wins over the default file.
    let good = t.path().join("good.toml");
    std::fs::write(
        &good,
        "no-mdns = true\nno-ble = true\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n",
    )
    .unwrap();
    let mut d = Daemon::spawn(
        &dir,
        vec![
            "run".into(),
            "--config".into(),
            good.to_str().unwrap().into(),
        ],
    );
    wait_until("a listen address", || {
        d.status()["daemon"]["listening"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let addrs = d.status()["daemon"]["listening"].to_string();
    assert!(addrs.contains("/ip4/127.0.0.1/tcp/"), "{addrs}");
    assert!(!addrs.contains("0.0.0.0"), "{addrs}");
    assert!(d.terminate().success());
}

/// The daemon's log file (stderr redirected by [`Daemon`]).
fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
}

#[test]
fn redirected_logs_have_no_escape_codes_and_json_lines_parse() {
    let t = tempfile::tempdir().unwrap();
    for (name, json) in [("text", false), ("json", true)] {
        let dir = t.path().join(name);
        let extra: &[&str] = if json {
            &["--no-ble", "--log-format", "json"]
        } else {
            &["--no-ble"]
        };
        let mut d = Daemon::start_with(&dir, name, 0, &[], extra);
        wait_until("the start-up lines", || {
            log_of(&dir).contains("daemon running")
        });
        assert!(d.terminate().success());
        let log = log_of(&dir);
        assert!(log.lines().count() >= 3, "{log}");
        assert!(
            !log.contains('\x1b'),
            "escape codes in a redirected log:\n{log}"
        );
        if json {
            for line in log.lines() {
                let v: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v["level"].is_string() && v["fields"]["message"].is_string());
            }
        } else {
            assert!(log.contains(" INFO "), "{log}");
        }
    }
}

#[test]
fn run_tells_systemd_it_is_ready_and_alive() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("n");
    ok(&dir, &["init", "--name", "n"]);
    let sock_path = t.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "run",
            "--no-mdns",
            "--no-ble",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    let start = Instant::now();
    while got.iter().filter(|m: &&String| *m == "WATCHDOG=1").count() < 2 {
        let n = sock.recv(&mut buf).expect("a notification within 30 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        assert!(start.elapsed() < Duration::from_secs(60), "{got:?}");
    }
    assert_eq!(got[0], "READY=1", "{got:?}");
    // READY=1 means the control socket serves.
    assert!(std::os::unix::net::UnixStream::connect(dir.join("control.sock")).is_ok());
    ok(&dir, &["stop"]);
    let n = sock.recv(&mut buf).unwrap();
    let mut last = String::from_utf8_lossy(&buf[..n]).into_owned();
    while last == "WATCHDOG=1" {
        let n = sock.recv(&mut buf).unwrap();
        last = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    assert_eq!(last, "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_service_unit_verifies_and_is_rated_ok_or_better() {
    let analyze = need("systemd-analyze");
    let t = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("packaging/meshrelay.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/meshrelay --data-dir /var/lib/meshrelay run"));
    // `verify` checks that ExecStart's binary exists: point it at this build.
    let copy = t.path().join("meshrelay.service");
    std::fs::write(&copy, unit.replace("/usr/bin/meshrelay", BIN)).unwrap();
    let o = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "verify: {}{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        stderr(&o).trim().is_empty(),
        "verify warned: {}",
        stderr(&o)
    );

    let o = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo().join("packaging/meshrelay.service"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating: {out}{}", stderr(&o)));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line}"));
    // systemd rates < 5.0 "OK", < 2.0 "SAFE".
    assert!(score < 5.0, "{line}");
    assert!(line.contains("OK") || line.contains("SAFE"), "{line}");
    println!("{}", line.trim());
}

/// `dpkg-deb --field` of one field.
fn field(deb: &Path, name: &str) -> String {
    let o = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg(name)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_debian_package_holds_binary_unit_config_and_sound_scripts() {
    need("dpkg-deb");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let o = Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .arg("--binary")
        .arg(BIN)
        .arg("--out")
        .arg(&out)
        .arg("--fast")
        .output()
        .unwrap();
    assert!(o.status.success(), "package.sh: {}", stderr(&o));
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];
    assert_eq!(field(deb, "Package"), "meshrelay");
    assert_eq!(field(deb, "Version"), env!("CARGO_PKG_VERSION"));
    let arch = field(deb, "Architecture");
    assert!(!arch.is_empty());
    assert!(field(deb, "Depends").contains("adduser"));
    assert!(!field(deb, "Maintainer").is_empty());

    let root = t.path().join("root");
    let ctl = t.path().join("control");
    for (flag, dest) in [("-x", &root), ("-e", &ctl)] {
        let o = Command::new("dpkg-deb")
            .arg(flag)
            .arg(deb)
            .arg(dest)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let bin = root.join("usr/bin/meshrelay");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(BIN).unwrap());
    let unit = root.join("lib/systemd/system/meshrelay.service");
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(
        std::fs::read(&unit).unwrap(),
        std::fs::read(repo().join("packaging/meshrelay.service")).unwrap()
    );
    let conf = root.join("etc/meshrelay/meshrelay.toml");
    assert_eq!(mode(&conf), 0o644);
    // The packaged config is valid for the packaged binary.
    let o = Command::new(&bin)
        .args(["config", "check"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(root.join("usr/share/doc/meshrelay/copyright").is_file());
    let conffiles = std::fs::read_to_string(ctl.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/meshrelay/meshrelay.toml");
    for script in ["postinst", "postrm"] {
        let p = ctl.join(script);
        assert_eq!(mode(&p), 0o755, "{script}");
        let o = Command::new("sh").arg("-n").arg(&p).output().unwrap();
        assert!(o.status.success(), "{script}: {}", stderr(&o));
    }
    let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system") && postinst.contains("useradd --system"));
    // Nothing is enabled or started by default.
    for s in [
        "systemctl enable",
        "systemctl start",
        "deb-systemd-helper enable",
    ] {
        assert!(!postinst.contains(s), "postinst runs {s}");
    }
}

/// `GET /metrics` over a plain TCP connection: (status line, body).
fn scrape(addr: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    let ctype = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .unwrap_or_default()
        .to_owned();
    (status, ctype, body.to_owned())
}

/// The value of an unlabelled or labelled sample line, e.g.
/// `meshrelay_links{kind="lan"}`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_endpoint_serves_prometheus_text_from_a_real_daemon() {
    let t = tempfile::tempdir().unwrap();
    let a_dir = t.path().join("a");
    let b_dir = t.path().join("b");
    let a = Daemon::start_with(
        &a_dir,
        "a",
        0,
        &[],
        &["--no-ble", "--metrics", "127.0.0.1:0"],
    );
    let b = Daemon::start(&b_dir, "b", &[a.tcp_addr()]);
    let mut addr = None;
    wait_until("the metrics address in the log", || {
        addr = log_of(&a_dir).lines().find_map(|l| {
            let rest = l.split("metrics on http://").nth(1)?;
            Some(rest.split('/').next()?.to_owned())
        });
        addr.is_some()
    });
    let addr = addr.unwrap();
    wait_until("a LAN link in the metrics", || {
        sample(&scrape(&addr).2, "meshrelay_links{kind=\"lan\"}") == Some(1.0)
    });
    let (status, ctype, body) = scrape(&addr);
    assert!(status.contains("200"), "{status}");
    assert!(ctype.contains("text/plain; version=0.0.4"), "{ctype}");
    for (name, kind) in [
        ("meshrelay_links", "gauge"),
        ("meshrelay_link_received_bytes", "gauge"),
        ("meshrelay_link_sent_bytes", "gauge"),
        ("meshrelay_events_stored_total", "counter"),
        ("meshrelay_links_penalised_total", "counter"),
        ("meshrelay_store_events", "gauge"),
        ("meshrelay_store_evictions_total", "counter"),
        ("meshrelay_queue_length", "gauge"),
        ("meshrelay_homeserver_sync", "gauge"),
        ("meshrelay_last_commit_age_seconds", "gauge"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{body}"
        );
    }
    assert_eq!(
        sample(&body, "meshrelay_homeserver_sync{state=\"off\"}"),
        Some(1.0)
    );
    assert!(sample(&body, "meshrelay_link_received_bytes{kind=\"lan\"}").unwrap() > 0.0);
    // Every line is a comment or `series value`.
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample {l}"));
    }
    // Other paths are not served.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    drop(b);
}
