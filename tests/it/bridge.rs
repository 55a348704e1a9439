//! The Matrix bridge (`protocol-spec/bridge.md`) against a real Synapse
//! that loaded the bridge's registration, real daemons over loopback, and
//! an ordinary Matrix user driven by a Matrix client library from PyPI
//! (matrix-nio, `scripts/matrix_client.py`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::daemon::{Daemon, card, chain, mr, ok, wait_until};
use super::homeserver::{private_synapse, private_synapse_env, script};

/// A private Synapse with the bridge of `bridge_dir` registered; returns
/// its URL, its state directory and the bridge's listen port.
fn synapse_with_bridge(tmp: &Path, bridge_dir: &Path) -> (String, PathBuf, u16) {
    let sdir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("synapse-it-{}-bridge", std::process::id()));
    let url = private_synapse(&sdir, &["init"]);
    let port = super::daemon::free_port();
    let listen = format!("127.0.0.1:{port}");
    let yaml = ok(
        bridge_dir,
        &[
            "bridge",
            "registration",
            "--homeserver",
            &url,
            "--domain",
            "localhost",
            "--listen",
            &listen,
        ],
    );
    let reg = tmp.join("bridge-registration.yaml");
    std::fs::write(&reg, yaml).unwrap();
    private_synapse_env(&sdir, &["start"], &[("SYNAPSE_APPSERVICE", &reg)]);
    private_synapse(&sdir, &["register", "hq"]);
    (url, sdir, port)
}

/// Runs the Matrix client as `@hq:localhost`; its JSON output.
fn hq(url: &str, sdir: &Path, args: &[&str]) -> Value {
    let py = private_synapse(sdir, &["python"]);
    let client = script().with_file_name("matrix_client.py");
    let out = Command::new(py)
        .arg(client)
        .args(["--homeserver", url, "--user", "hq", "--timeout", "120"])
        .args(args)
        .output()
        .expect("run matrix_client.py");
    assert!(
        out.status.success(),
        "matrix_client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

fn device_id(dir: &Path) -> String {
    let v: Value = serde_json::from_str(&ok(dir, &["id", "--json"])).unwrap();
    v["device_id"].as_str().unwrap().to_owned()
}

fn puppet(device: &str) -> String {
    format!("@meshrelay_{}:localhost", &device[..19])
}

fn lines(dir: &Path, room: &str) -> Vec<Value> {
    let o = mr(dir, &["messages", room, "--json"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["text"].is_string())
        .collect()
}

fn bridge_status(dir: &Path) -> Option<Value> {
    let o = mr(dir, &["bridge", "status", "--json"]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

/// One raw HTTP request to the bridge's application-service API; the
/// status code.
fn http_status(port: u16, request: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn people_on_matrix_read_and_answer_a_mesh_room_through_the_bridge() {
    let tmp = tempfile::tempdir().unwrap();
    let dbr = tmp.path().join("bridge");
    ok(&dbr, &["init", "--name", "HQ bridge"]);
    let (url, sdir, port) = synapse_with_bridge(tmp.path(), &dbr);

    // The mesh: A–B–C, the bridge linked to C only, so A is three hops
    // away. A sends while the bridge is offline.
    let ([a, b, c], room) = chain(tmp.path());
    ok(&a.dir, &["room", "invite", &room, &card(&dbr)]);
    let texts = [
        "water at the north gate",
        "road to the clinic is open",
        "need a generator",
    ];
    for t in texts {
        ok(&a.dir, &["send", &room, t]);
    }
    let sent = lines(&a.dir, &room);
    assert_eq!(sent.len(), 3);
    std::thread::sleep(std::time::Duration::from_millis(1500));

    let bridge = Daemon::start_with(&dbr, "HQ bridge", 0, &[c.tcp_addr()], &["--bridge"]);
    wait_until("the bridge mirrors the room", || {
        bridge_status(&dbr).is_some_and(|s| s["rooms"].as_array().is_some_and(|r| r.len() == 1))
    });
    let status = bridge_status(&dbr).unwrap();
    let alias = status["rooms"][0]["alias"].as_str().unwrap().to_owned();
    assert_eq!(alias, format!("#meshrelay_{}:localhost", &room[..16]));
    assert_eq!(status["rooms"][0]["room_id"], room.as_str());
    let invited = ok(&dbr, &["bridge", "invite", "@hq:localhost"]);
    assert!(invited.contains("1 bridged room"), "{invited}");
    hq(&url, &sdir, &["join", &alias]);

    // Every mesh message once, from A's puppet, with its original time.
    let got = hq(
        &url,
        &sdir,
        &["messages", &alias, "--count", "3", "--exact"],
    );
    let got = got["messages"].as_array().unwrap();
    let a_puppet = puppet(&device_id(&a.dir));
    for (m, s) in got.iter().zip(&sent) {
        assert_eq!(m["body"], s["text"]);
        assert_eq!(m["sender"], a_puppet.as_str());
        assert_eq!(m["ts"], s["ts"], "original timestamp");
        assert_eq!(m["mesh_event_id"], s["event_id"]);
        assert_eq!(m["sender_name"], "Ana (mesh)");
    }
    let state = hq(&url, &sdir, &["state", &alias]);
    assert_eq!(state["name"], "camp");
    assert_eq!(state["join_rule"], "invite");
    assert!(state["topic"].as_str().unwrap().contains("Bridged"));
    let members = hq(&url, &sdir, &["members", &alias]);
    let joined: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["membership"] == "join")
        .filter_map(|m| m["user_id"].as_str())
        .collect();
    for d in [&a.dir, &b.dir, &c.dir] {
        let p = puppet(&device_id(d));
        assert!(joined.contains(&p.as_str()), "{p} joined: {joined:?}");
    }

    // HQ answers; A, three hops away, reads it with attribution.
    hq(
        &url,
        &sdir,
        &["send", &alias, "HQ copies: a truck leaves at 14:00"],
    );
    wait_until("A reads HQ's answer", || {
        lines(&a.dir, &room)
            .iter()
            .any(|l| l["text"] == "HQ copies: a truck leaves at 14:00")
    });
    let answer = lines(&a.dir, &room)
        .into_iter()
        .find(|l| l["text"] == "HQ copies: a truck leaves at 14:00")
        .unwrap();
    assert_eq!(answer["via"]["matrix_user"], "@hq:localhost");
    assert_eq!(answer["via"]["name"], "hq");
    assert_eq!(answer["sender"], device_id(&dbr).as_str());
    let human = ok(&a.dir, &["messages", &room]);
    assert!(
        human.contains("hq (@hq:localhost via HQ bridge): HQ copies"),
        "{human}"
    );
    // Not echoed back: Matrix holds the three mesh messages and HQ's.
    std::thread::sleep(std::time::Duration::from_secs(2));
    hq(
        &url,
        &sdir,
        &["messages", &alias, "--count", "4", "--exact"],
    );
    let s = bridge_status(&dbr).unwrap();
    assert_eq!(
        (s["to_matrix"].as_u64(), s["to_mesh"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(s["pending"], 0);
    assert_eq!(s["puppets"], 3);

    // Removal is mirrored: C's puppet leaves the Matrix room.
    let c_puppet = puppet(&device_id(&c.dir));
    ok(&a.dir, &["room", "remove", &room, &device_id(&c.dir)]);
    wait_until("C's puppet leaves", || {
        hq(&url, &sdir, &["members", &alias])["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == c_puppet.as_str() && m["membership"] == "leave")
    });

    // The application-service API refuses a wrong or missing token.
    let body = r#"{"events":[]}"#;
    let put = |auth: &str| {
        format!(
            "PUT /_matrix/app/v1/transactions/t1 HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(
        http_status(port, &put("Authorization: Bearer wrong\r\n")),
        403
    );
    assert_eq!(http_status(port, &put("")), 401);
    drop((bridge, a, b, c));
}
