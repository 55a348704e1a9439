//! The Matrix bridge (`protocol-spec/bridge.md`) against a real Synapse
//! that loaded the bridge's registration, real daemons over loopback, and
//! an ordinary Matrix user driven by a Matrix client library from PyPI
//! (matrix-nio, `scripts/matrix_client.py`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::daemon::{Daemon, card, chain, create_room, mr, ok, wait_logged_for, wait_until};
use super::homeserver::{private_synapse, private_synapse_env, script};
use super::receipts::{device_id, text_lines as lines};

/// A private Synapse with the bridge of `bridge_dir` registered; returns
/// its URL, its state directory and the bridge's listen port.
fn synapse_with_bridge(tmp: &Path, bridge_dir: &Path, tag: &str) -> (String, PathBuf, u16) {
    let sdir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("synapse-it-{}-bridge-{tag}", std::process::id()));
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
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(bridge_dir.join("bridge.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the tokens are private");
    }
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

fn puppet(device: &str) -> String {
    format!("@meshrelay_{}:localhost", &device[..19])
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
    let (url, sdir, port) = synapse_with_bridge(tmp.path(), &dbr, "people");

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
    // Members see that the room is bridged: the bridge's card says so.
    let rooms: Value = serde_json::from_str(&ok(&a.dir, &["rooms", "--json"])).unwrap();
    let bridge_member = rooms[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["device_id"] == device_id(&dbr).as_str())
        .cloned()
        .unwrap();
    assert_eq!(bridge_member["bridge"], true);
    let human = ok(&a.dir, &["rooms"]);
    assert!(
        human.contains("(Matrix bridge)") && human.contains("[bridged to Matrix"),
        "{human}"
    );
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

    // A location pin reaches Matrix as a location message; urgent, it
    // says so first.
    ok(
        &a.dir,
        &[
            "send",
            &room,
            "meet here",
            "--location",
            "52.52,13.405",
            "--urgent",
        ],
    );
    let got = hq(&url, &sdir, &["messages", &alias, "--count", "5"]);
    assert!(
        got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "🚨 URGENT: meet here (location: 52.52000, 13.40500)"),
        "{got}"
    );

    // A rename is mirrored.
    let renamed = ok(&a.dir, &["room", "rename", &room, "camp north"]);
    assert!(renamed.contains("camp north"), "{renamed}");
    wait_until("the Matrix room is renamed", || {
        hq(&url, &sdir, &["state", &alias])["name"] == "camp north"
    });

    // A new member is mirrored: D's puppet joins.
    let dd = tmp.path().join("d");
    ok(&dd, &["init", "--name", "Dee"]);
    ok(&a.dir, &["room", "invite", &room, &card(&dd)]);
    let d_puppet = puppet(&device_id(&dd));
    wait_until("D's puppet joins", || {
        hq(&url, &sdir, &["members", &alias])["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| {
                m["user_id"] == d_puppet.as_str()
                    && m["membership"] == "join"
                    && m["display_name"] == "Dee (mesh)"
            })
    });

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
    // With the right token, a malformed transaction is answered (so the
    // homeserver does not retry it for ever) and skipped; the bridge runs on.
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(dbr.join("bridge.json")).unwrap()).unwrap();
    let auth = format!(
        "Authorization: Bearer {}\r\n",
        cfg["hs_token"].as_str().unwrap()
    );
    for body in [
        "not json",
        r#"{"events":[{"type":"m.room.message"},7,null]}"#,
    ] {
        let req = format!(
            "PUT /_matrix/app/v1/transactions/bad-{} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len(),
            body.len()
        );
        assert_eq!(http_status(port, &req), 200, "{body}");
    }
    assert!(bridge_status(&dbr).is_some(), "the bridge still answers");
    drop((bridge, a, b, c));
}

/// A's daemon and a room of A's with the bridge device invited (by the
/// card `bridge registration` flagged).
fn room_with_bridge(tmp: &Path, bridge_dir: &Path) -> (Daemon, String) {
    let a = Daemon::start_on(&tmp.join("a"), "Ana", super::daemon::free_port(), &[]);
    let room = create_room(&a.dir, "camp");
    ok(&a.dir, &["room", "invite", &room, &card(bridge_dir)]);
    (a, room)
}

/// One `send` through the daemon's control socket (faster than a process
/// per message for a backlog).
fn send_via_socket(dir: &Path, room: &str, text: &str) {
    use meshrelay::control::{Op, Request, client};
    let stream = client::wait_for(dir, std::time::Duration::from_secs(30)).expect("daemon");
    let op = Op::Send {
        room: room.to_owned(),
        text: text.to_owned(),
        via: None,
        location: None,
        urgent: false,
        file: None,
    };
    client::call(dir, stream, &Request::new(op), |_| Ok(())).expect("send");
}

#[test]
fn a_bridge_killed_during_a_backlog_both_ways_delivers_every_message_once() {
    const N: usize = 500;
    let tmp = tempfile::tempdir().unwrap();
    let dbr = tmp.path().join("bridge");
    ok(&dbr, &["init", "--name", "HQ bridge"]);
    let (url, sdir, _) = synapse_with_bridge(tmp.path(), &dbr, "crash");
    let hq_user: Value =
        serde_json::from_str(&private_synapse(&sdir, &["register", "hq2", "--json"])).unwrap();
    let hq_token = hq_user["access_token"].as_str().unwrap().to_owned();

    let (a, room) = room_with_bridge(tmp.path(), &dbr);
    let mut bridge = Daemon::start_with(&dbr, "HQ bridge", 0, &[a.tcp_addr()], &["--bridge"]);
    wait_until("the bridge mirrors the room", || {
        bridge_status(&dbr).is_some_and(|s| s["rooms"].as_array().is_some_and(|r| r.len() == 1))
    });
    let alias = bridge_status(&dbr).unwrap()["rooms"][0]["alias"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&dbr, &["bridge", "invite", "@hq2:localhost"]);
    let py = private_synapse(&sdir, &["python"]);
    let client = script().with_file_name("matrix_client.py");
    let joined = Command::new(&py)
        .arg(&client)
        .args(["--homeserver", &url, "--user", "hq2", "join", &alias])
        .output()
        .unwrap();
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    let matrix_room: Value = serde_json::from_slice(&joined.stdout).unwrap();
    let matrix_room = matrix_room["room_id"].as_str().unwrap().to_owned();

    let t0 = std::time::Instant::now();
    // Both backlogs at once: A's messages and HQ's answers.
    let hq_sender = {
        let (url, room, token) = (url.clone(), matrix_room.clone(), hq_token.clone());
        std::thread::spawn(move || {
            use meshrelay::transport::homeserver::{AccessToken, Client, RetryPolicy};
            use rand::SeedableRng;
            let rt = tokio::runtime::Runtime::new().unwrap();
            let c = Client::new(
                &url,
                RetryPolicy::default(),
                Box::new(rand::rngs::StdRng::seed_from_u64(9)),
            )
            .unwrap()
            .with_token(AccessToken::new(token));
            for i in 0..N {
                let content = serde_json::json!({"msgtype": "m.text", "body": format!("hq {i}")});
                rt.block_on(c.send(&room, "m.room.message", &format!("t{i}"), &content))
                    .unwrap();
            }
        })
    };
    for i in 0..N {
        send_via_socket(&a.dir, &room, &format!("mesh {i}"));
    }
    hq_sender.join().unwrap();

    // kill -9 while both backlogs are crossing, then again; restart.
    for round in 0..2 {
        let target = (round + 1) * N as u64 / 4;
        wait_logged_for(
            Some(tmp.path()),
            std::time::Duration::from_secs(300),
            "some progress",
            || {
                bridge_status(&dbr).is_some_and(|s| {
                    s["to_matrix"].as_u64().unwrap_or(0) + s["to_mesh"].as_u64().unwrap_or(0)
                        >= target
                })
            },
        );
        eprintln!("{:?} kill -9", t0.elapsed());
        bridge.kill();
        bridge.restart();
    }
    wait_logged_for(
        Some(tmp.path()),
        std::time::Duration::from_secs(600),
        "both backlogs across",
        || {
            bridge_status(&dbr).is_some_and(|s| {
                s["to_matrix"] == N as u64 && s["to_mesh"] == N as u64 && s["pending"] == 0
            })
        },
    );

    eprintln!("{:?} both backlogs across", t0.elapsed());
    // Matrix: every mesh message exactly once (and HQ's own, once).
    let out = Command::new(&py)
        .arg(&client)
        .args(["--homeserver", &url, "--user", "hq2", "--timeout", "120"])
        .args([
            "messages",
            &alias,
            "--count",
            &(2 * N).to_string(),
            "--exact",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bodies: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    for i in 0..N {
        for want in [format!("mesh {i}"), format!("hq {i}")] {
            let n = bodies.iter().filter(|b| **b == want).count();
            assert_eq!(n, 1, "{want:?} on Matrix {n} times");
        }
    }
    eprintln!("{:?} Matrix checked", t0.elapsed());
    // The mesh: every HQ message exactly once, in HQ's order.
    let hq_lines = || -> Vec<String> {
        lines(&a.dir, &room)
            .iter()
            .filter(|l| l["via"]["matrix_user"] == "@hq2:localhost")
            .filter_map(|l| l["text"].as_str().map(str::to_owned))
            .collect()
    };
    wait_logged_for(
        Some(tmp.path()),
        std::time::Duration::from_secs(300),
        "A holds HQ's messages",
        || {
            // A full view of 1,000 lines is not free: poll gently.
            std::thread::sleep(std::time::Duration::from_secs(1));
            hq_lines().len() >= N
        },
    );
    eprintln!("{:?} A holds HQ's messages", t0.elapsed());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let want: Vec<String> = (0..N).map(|i| format!("hq {i}")).collect();
    assert_eq!(hq_lines(), want);
    drop((bridge, a));
}

/// `reports/bridge.md`: a backlog of mesh messages reaching Matrix through
/// the bridge against a naive bot (one ordinary account, one send per
/// message, under a rate limit like Synapse's defaults), measured in the
/// same run, and the delay from a mesh send to Matrix while linked. A
/// measurement, not a check: run it by hand with
/// `cargo test --release --test it bridge::report -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement for reports/bridge.md"]
fn report_backlog_and_delay() {
    use meshrelay::transport::homeserver::{AccessToken, Client, RetryPolicy};
    use rand::SeedableRng;
    use std::time::{Duration, Instant};
    let n: usize = std::env::var("BRIDGE_REPORT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let tmp = tempfile::tempdir().unwrap();
    let dbr = tmp.path().join("bridge");
    ok(&dbr, &["init", "--name", "HQ bridge"]);
    let (url, sdir, _) = synapse_with_bridge(tmp.path(), &dbr, "report");
    let reg = |u: &str| -> String {
        let v: Value =
            serde_json::from_str(&private_synapse(&sdir, &["register", u, "--json"])).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    let hq_token = reg("hq3");
    let bot_token = reg("naivebot");
    let admin: Value = serde_json::from_str(&private_synapse(
        &sdir,
        &["register", "admin", "--admin", "--json"],
    ))
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = |token: &str| {
        Client::new(
            &url,
            RetryPolicy {
                max_attempts: 100,
                ..RetryPolicy::default()
            },
            Box::new(rand::rngs::StdRng::seed_from_u64(5)),
        )
        .unwrap()
        .with_token(AccessToken::new(token))
    };

    // The mesh backlog reaches the bridge device while its bridge is off.
    let (a, room) = room_with_bridge(tmp.path(), &dbr);
    let mut plain = Daemon::start_with(&dbr, "HQ bridge", 0, &[a.tcp_addr()], &[]);
    for i in 0..n {
        send_via_socket(
            &a.dir,
            &room,
            &format!("backlog message {i} from the north gate"),
        );
    }
    wait_logged_for(
        Some(tmp.path()),
        Duration::from_secs(600),
        "the bridge device holds the backlog",
        || {
            std::thread::sleep(Duration::from_secs(1));
            lines(&dbr, &room).len() >= n
        },
    );
    assert!(plain.terminate().success());

    // Bridge: from start to every message on Matrix.
    let t0 = Instant::now();
    let bridge = Daemon::start_with(&dbr, "HQ bridge", 0, &[a.tcp_addr()], &["--bridge"]);
    wait_logged_for(
        Some(tmp.path()),
        Duration::from_secs(1800),
        "the backlog on Matrix",
        || {
            std::thread::sleep(Duration::from_millis(200));
            bridge_status(&dbr).is_some_and(|s| s["to_matrix"].as_u64() >= Some(n as u64))
        },
    );
    let bridge_s = t0.elapsed().as_secs_f64();
    let alias = bridge_status(&dbr).unwrap()["rooms"][0]["alias"]
        .as_str()
        .unwrap()
        .to_owned();
    let matrix_room = bridge_status(&dbr).unwrap()["rooms"][0]["matrix_room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&dbr, &["bridge", "invite", "@hq3:localhost"]);
    let hq = client(&hq_token);
    rt.block_on(hq.join_room(&alias)).unwrap();

    // Naive bot: an ordinary account under a message rate limit (Synapse's
    // default is 0.2/s with a burst of 10; the admin API takes whole
    // numbers, so 1/s, five times more lenient), one send per message.
    let bot = client(&bot_token);
    let bot_room = rt.block_on(bot.create_room(&[])).unwrap();
    // First without a limit: the cost of one send per message alone.
    let free_n = 300usize;
    let tf = Instant::now();
    for i in 0..free_n {
        let content = serde_json::json!({"msgtype": "m.text", "body": format!("free {i}")});
        rt.block_on(bot.send(&bot_room, "m.room.message", &format!("f{i}"), &content))
            .unwrap();
    }
    let free_rate = free_n as f64 / tf.elapsed().as_secs_f64();
    let limited = rt.block_on(async {
        reqwest::Client::new()
            .post(format!(
                "{url}/_synapse/admin/v1/users/@naivebot:localhost/override_ratelimit"
            ))
            .bearer_auth(admin["access_token"].as_str().unwrap())
            .json(&serde_json::json!({"messages_per_second": 1, "burst_count": 10}))
            .send()
            .await
    });
    assert!(limited.unwrap().status().is_success());
    let bot_n = 30usize;
    let t1 = Instant::now();
    for i in 0..bot_n {
        let content = serde_json::json!({"msgtype": "m.text", "body": format!("bot {i}")});
        rt.block_on(bot.send(&bot_room, "m.room.message", &format!("b{i}"), &content))
            .unwrap();
    }
    let bot_s = t1.elapsed().as_secs_f64();
    let bot_rate = bot_n as f64 / bot_s;

    // Delay from a mesh send to the Matrix room, the link up.
    let mut delays = Vec::new();
    for i in 0..10 {
        let text = format!("live {i}");
        let t = Instant::now();
        send_via_socket(&a.dir, &room, &text);
        loop {
            let v = rt
                .block_on(hq.call(
                    reqwest::Method::GET,
                    &["rooms", &matrix_room, "messages"],
                    &[("dir", "b".into()), ("limit", "5".into())],
                    None,
                ))
                .unwrap();
            let seen = v["chunk"]
                .as_array()
                .is_some_and(|c| c.iter().any(|e| e["content"]["body"] == text.as_str()));
            if seen {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "live message never seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        delays.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    let bridge_rate = n as f64 / bridge_s;
    println!(
        "{}",
        serde_json::json!({
            "messages": n,
            "bridge_s": bridge_s,
            "bridge_per_s": bridge_rate,
            "bot_messages": bot_n,
            "bot_s": bot_s,
            "bot_per_s": bot_rate,
            "bot_s_for_backlog": n as f64 / bot_rate,
            "ratio": bridge_rate / bot_rate,
            "bot_unlimited_per_s": free_rate,
            "ratio_unlimited": bridge_rate / free_rate,
            "delay_ms_median": delays[delays.len() / 2],
            "delay_ms_max": delays[delays.len() - 1],
        })
    );
    drop((bridge, a));
}
