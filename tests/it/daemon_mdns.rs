//! mDNS discovery between daemons in separate Linux network namespaces
//! joined by a veth pair (libp2p's mDNS ignores loopback, so loopback alone
//! never discovers anything). Needs root and iproute2, as CI has.

use std::process::Command;

use super::daemon::{Daemon, card, create_room, ok, texts, wait_logged};

/// Two namespaces joined by a veth pair; removed on drop.
struct Netns {
    names: [String; 2],
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("iproute2");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        let tag = std::process::id() % 100_000;
        let names = [format!("mra{tag}"), format!("mrb{tag}")];
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        let n = Netns { names };
        let [a, b] = &n.names;
        ip(&["netns", "add", a]);
        ip(&["netns", "add", b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", a]);
        ip(&["link", "set", &vb, "netns", b]);
        for (ns, dev, addr) in [(a, &va, "10.213.7.1/24"), (b, &vb, "10.213.7.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn daemons_in_separate_namespaces_find_each_other_by_mdns() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&da, &["init", "--name", "Ana"]);
    ok(&db, &["init", "--name", "Bo"]);
    // No --peer and no --no-mdns: discovery only. The control socket is a
    // file, so the CLI reaches it from the host namespace.
    let start = |ns: &str, dir: &std::path::Path| {
        let args = ["netns", "exec", ns, super::daemon::BIN, "--data-dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([dir.to_str().unwrap().to_owned(), "run".to_owned()])
            .collect();
        Daemon::spawn_with("ip", dir, args)
    };
    let a = start(&ns.names[0], &da);
    let b = start(&ns.names[1], &db);
    wait_logged(
        Some(tmp.path()),
        "mDNS discovery in both directions",
        || a.peers() == 1 && b.peers() == 1,
    );
    let peers: serde_json::Value = serde_json::from_str(&ok(&da, &["peers", "--json"])).unwrap();
    assert!(
        peers[0]["address"].as_str().unwrap().contains("10.213.7.2"),
        "{peers}"
    );
    let room = create_room(&da, "ops");
    ok(&da, &["room", "invite", &room, &card(&db)]);
    ok(&da, &["send", &room, "found you by mDNS"]);
    wait_logged(Some(tmp.path()), "B reads A's message", || {
        texts(&db, &room) == ["found you by mDNS"]
    });
    drop((a, b));
}
