//! Contact schedules and message workloads, and their import from the ONE
//! simulator's text formats.
//!
//! * Connectivity (`StandardEventsReader` / `ConnectivityONEReport`):
//!   `<time> CONN <a> <b> up|down`, one line per change.
//! * Created messages (`CreatedMessagesReport`):
//!   `<time_s> <id> <size_bytes> <from> <to> <ttl_minutes> [isResponse]`;
//!   `#` starts a comment line and a TTL of `n/a` means no expiry.
//!
//! Host names may carry a letter prefix before the numeric address, as ONE
//! writes them (`p31` is host 31). Times are seconds (fractions allowed).

use std::collections::BTreeSet;

/// Why a trace line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    /// A line did not have the expected fields.
    #[error("line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        why: String,
    },
}

/// Most hosts a trace may name (host addresses are dense indices).
pub const MAX_HOSTS: usize = 100_000;

/// One change of connectivity between two hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Contact {
    /// When, in ms.
    pub t_ms: u64,
    /// One host.
    pub a: usize,
    /// The other host.
    pub b: usize,
    /// Up or down.
    pub up: bool,
    /// Link kind index (0 = the trace's default kind, 1 = LAN when a
    /// mobility model found the pair within LAN range).
    pub lan: bool,
}

/// One message (an event) created at `from` for the hosts in `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The trace's name for it.
    pub name: String,
    /// Creation time, in ms.
    pub t_ms: u64,
    /// Payload bytes.
    pub size: usize,
    /// Creator.
    pub from: usize,
    /// Destinations: one host for a direct message, the other room members
    /// for a room broadcast.
    pub to: Vec<usize>,
    /// Time to live in ms (`None`: no expiry).
    pub ttl_ms: Option<u64>,
    /// Room index for broadcasts (`None`: direct message).
    pub room: Option<usize>,
    /// Sent by a hostile flooder: carried but not scored.
    pub hostile: bool,
}

impl Message {
    /// When it expires, if ever.
    pub fn expires_ms(&self) -> Option<u64> {
        self.ttl_ms.map(|t| self.t_ms.saturating_add(t))
    }
}

/// Everything a run needs: who meets whom when, and who sends what.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// Number of hosts.
    pub nodes: usize,
    /// Contact changes, sorted by time.
    pub contacts: Vec<Contact>,
    /// Messages, sorted by creation time.
    pub messages: Vec<Message>,
    /// End of the run, in ms.
    pub end_ms: u64,
    /// Rooms (member lists) for broadcasts.
    pub rooms: Vec<Vec<usize>>,
    /// Hosts permanently linked over LAN to each other (gateways reaching a
    /// homeserver).
    pub backhaul: Vec<usize>,
}

impl Workload {
    /// Builds a workload from a ONE trace pair; runs until the last line
    /// plus `tail_ms`.
    pub fn from_one(contacts: &str, messages: &str, tail_ms: u64) -> Result<Self, TraceError> {
        let contacts = parse_connectivity(contacts)?;
        let messages = parse_messages(messages)?;
        let mut nodes = 0;
        for c in &contacts {
            nodes = nodes.max(c.a + 1).max(c.b + 1);
        }
        for m in &messages {
            nodes = nodes.max(m.from + 1);
            for &t in &m.to {
                nodes = nodes.max(t + 1);
            }
        }
        let last = contacts
            .iter()
            .map(|c| c.t_ms)
            .chain(messages.iter().map(|m| m.t_ms))
            .max()
            .unwrap_or(0);
        Ok(Self {
            nodes,
            contacts,
            messages,
            end_ms: last + tail_ms,
            rooms: Vec::new(),
            backhaul: Vec::new(),
        })
    }
}

fn err(line: usize, why: impl Into<String>) -> TraceError {
    TraceError::Line {
        line,
        why: why.into(),
    }
}

/// Parses a host name: an optional letter prefix, then the address.
pub fn parse_host(s: &str) -> Option<usize> {
    let digits = s.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let n: usize = digits.parse().ok()?;
    (n < MAX_HOSTS).then_some(n)
}

fn parse_time_ms(s: &str) -> Option<u64> {
    let t: f64 = s.parse().ok()?;
    (t.is_finite() && (0.0..1e12).contains(&t)).then(|| (t * 1000.0).round() as u64)
}

/// Parses a ONE connectivity trace. Duplicate `up`s and `down`s without an
/// `up` are dropped; the result is sorted by time (stable).
pub fn parse_connectivity(text: &str) -> Result<Vec<Contact>, TraceError> {
    let mut out = Vec::new();
    let mut live = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[1] != "CONN" {
            return Err(err(n, "expected `<time> CONN <a> <b> up|down`"));
        }
        let t_ms = parse_time_ms(f[0]).ok_or_else(|| err(n, "bad time"))?;
        let a = parse_host(f[2]).ok_or_else(|| err(n, "bad host"))?;
        let b = parse_host(f[3]).ok_or_else(|| err(n, "bad host"))?;
        if a == b {
            continue;
        }
        let up = match f[4] {
            "up" => true,
            "down" => false,
            _ => return Err(err(n, "expected up or down")),
        };
        let key = (a.min(b), a.max(b));
        let changed = if up {
            live.insert(key)
        } else {
            live.remove(&key)
        };
        if changed {
            out.push(Contact {
                t_ms,
                a: key.0,
                b: key.1,
                up,
                lan: false,
            });
        }
    }
    out.sort_by_key(|c| c.t_ms);
    Ok(out)
}

/// Parses a ONE created-messages report.
pub fn parse_messages(text: &str) -> Result<Vec<Message>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            return Err(err(
                n,
                "expected `<time_s> <id> <size_bytes> <from> <to> <ttl_minutes>`",
            ));
        }
        let t_ms = parse_time_ms(f[0]).ok_or_else(|| err(n, "bad time"))?;
        let size: usize = f[2].parse().map_err(|_| err(n, "bad size"))?;
        let from = parse_host(f[3]).ok_or_else(|| err(n, "bad host"))?;
        let to = parse_host(f[4]).ok_or_else(|| err(n, "bad host"))?;
        let ttl_ms = if f[5] == "n/a" {
            None
        } else {
            let m: f64 = f[5].parse().map_err(|_| err(n, "bad ttl"))?;
            if !(m.is_finite() && m >= 0.0) {
                return Err(err(n, "bad ttl"));
            }
            Some((m * 60_000.0).round() as u64)
        };
        out.push(Message {
            name: f[1].to_string(),
            t_ms,
            size,
            from,
            to: vec![to],
            ttl_ms,
            room: None,
            hostile: false,
        });
    }
    out.sort_by_key(|m| m.t_ms);
    Ok(out)
}
