//! How `meshrelay status` and `meshrelay peers` print the control API's
//! `status` and `peers` data (`protocol-spec/daemon.md`, "Status"): one
//! formatting function each, used whether the data came from a running
//! daemon or (for `status`) from the store directly.

use std::fmt::Write as _;

use serde_json::Value;

use crate::control::PeerInfo;

/// `status` as printed: JSON, or a few human lines.
pub fn render_status(v: &Value, json: bool) -> String {
    if json {
        return format!("{v}\n");
    }
    let mut s = String::new();
    let _ = writeln!(s, "device:     {}", v["device_id"].as_str().unwrap_or("?"));
    let daemon = if v["daemon"]["running"].as_bool() == Some(true) {
        format!("running (pid {})", v["daemon"]["pid"])
    } else {
        "not running".to_owned()
    };
    let _ = writeln!(s, "daemon:     {daemon}");
    let _ = writeln!(s, "rooms:      {}", v["rooms"]);
    let _ = writeln!(
        s,
        "store:      {} events, {} bytes, {} forks",
        v["store"]["events"], v["store"]["bytes"], v["store"]["forks"]
    );
    let _ = writeln!(
        s,
        "queues:     {} for the homeserver, {} for the mesh",
        v["queues"]["homeserver"], v["queues"]["mesh"]
    );
    let _ = writeln!(s, "peers:      {}", v["peers"]);
    if let Some(level) = v["disk"]["level"].as_str() {
        let note = match level {
            "full" => ": storing nothing new, `send` is refused; free space",
            "low" => ": stranger traffic is shed",
            _ => "",
        };
        let _ = writeln!(
            s,
            "disk:       {level}, {} MiB free{note}",
            v["disk"]["free_bytes"].as_u64().unwrap_or(0) / (1024 * 1024)
        );
    }
    let ble = match &v["ble"] {
        Value::String(t) => t.clone(),
        other => match other["state"].as_str() {
            Some("unavailable") => {
                format!("unavailable: {}", other["reason"].as_str().unwrap_or("?"))
            }
            Some(state) => format!(
                "{state} on {} ({} links, privacy: {}, advertising: {})",
                other["adapter"].as_str().unwrap_or("?"),
                other["links"].as_array().map_or(0, Vec::len),
                other["privacy"].as_str().unwrap_or("?"),
                other["advertising"].as_str().unwrap_or("?")
            ),
            None => "?".to_owned(),
        },
    };
    let _ = writeln!(s, "ble:        {ble}");
    let hs = match &v["homeserver"] {
        Value::String(t) => t.clone(),
        other => format!(
            "{} (sync {})",
            other["config"].as_str().unwrap_or("?"),
            other["sync"].as_str().unwrap_or("?")
        ),
    };
    let _ = writeln!(s, "homeserver: {hs}");
    for p in v["syncing"].as_array().into_iter().flatten() {
        let (have, estimate) = (
            p["have"].as_u64().unwrap_or(0),
            p["estimate"].as_u64().unwrap_or(0),
        );
        let _ = writeln!(
            s,
            "syncing:    room {} {}",
            crate::safe_text::for_terminal(p["room_id"].as_str().unwrap_or("?")),
            progress_text(have, estimate)
        );
    }
    s
}

/// Width in cells of [`progress_bar`]'s bar.
const BAR_CELLS: u64 = 20;

/// `1,234 of 4,005 events (30%)`.
pub fn progress_text(have: u64, estimate: u64) -> String {
    let pct = (have.min(estimate) * 100)
        .checked_div(estimate)
        .unwrap_or(100);
    format!(
        "{} of {} events ({pct}%)",
        thousands(have),
        thousands(estimate)
    )
}

/// A one-line progress bar: `[######--------------] 1,234 of 4,005 events (30%)`.
pub fn progress_bar(have: u64, estimate: u64) -> String {
    let filled = (have.min(estimate) * BAR_CELLS)
        .checked_div(estimate)
        .unwrap_or(BAR_CELLS);
    format!(
        "[{}{}] {}",
        "#".repeat(filled as usize),
        "-".repeat((BAR_CELLS - filled) as usize),
        progress_text(have, estimate)
    )
}

/// `4005` as `4,005`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `peers` as printed: one JSON array, or one human line per link.
pub fn render_peers(peers: &[PeerInfo], json: bool) -> String {
    if json {
        // Through a `Value`: keys in the order `peers --json` always had.
        let v = serde_json::to_value(peers).unwrap_or(Value::Null);
        return format!("{v}\n");
    }
    let mut s = String::new();
    if peers.is_empty() {
        s.push_str("no peers connected\n");
    }
    for p in peers {
        let address = if p.address.is_empty() {
            "-"
        } else {
            p.address.as_str()
        };
        let _ = writeln!(
            s,
            "link {} {} {address} since {} in {} B out {} B",
            p.link, p.kind, p.since, p.bytes_in, p.bytes_out
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_as_before() {
        let p = PeerInfo {
            link: 3,
            kind: "lan".into(),
            address: "/ip4/127.0.0.1/tcp/1".into(),
            since: 5,
            bytes_in: 6,
            bytes_out: 7,
        };
        assert_eq!(
            render_peers(std::slice::from_ref(&p), true),
            "[{\"address\":\"/ip4/127.0.0.1/tcp/1\",\"bytes_in\":6,\"bytes_out\":7,\"kind\":\"lan\",\"link\":3,\"since\":5}]\n"
        );
        assert_eq!(
            render_peers(&[p], false),
            "link 3 lan /ip4/127.0.0.1/tcp/1 since 5 in 6 B out 7 B\n"
        );
        assert_eq!(render_peers(&[], false), "no peers connected\n");
    }

    #[test]
    fn progress_reads_as_people_count() {
        assert_eq!(
            progress_bar(1234, 4005),
            "[######--------------] 1,234 of 4,005 events (30%)"
        );
        assert_eq!(
            progress_bar(0, 0),
            "[####################] 0 of 0 events (100%)"
        );
        assert_eq!(progress_text(9, 4), "9 of 4 events (100%)");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
