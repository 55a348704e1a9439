//! `messages` and `messages --follow` for people:
//!
//! ```text
//!       2 earlier messages from before you joined
//! -- Wednesday 2 December --
//! 22:41 Ana: Water at the north gate
//! 22:45 Ben (77831 67776 …): On my way
//!       3 messages from Ana have not arrived
//! 23:10 unknown device (40012 99310 …): Bringing the radio
//! -- Thursday 3 December --
//! 00:25 Ana: Welcome Cy
//! ```
//!
//! Times are `HH:MM` in the given time zone (the local one, or UTC with
//! `--utc`); a date line comes before the first timed line and whenever the
//! date changes (the year only when it is not the current one). Messages
//! sent before this device joined (and, on a device that only carries a
//! room, every message) are counted in one line per batch instead of one
//! line each; gaps, unreadable and hidden messages are short plain lines.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::{Names, Style, count};
use crate::app::{BEFORE_JOIN_REASON, ForkInfo, GapInfo, MessageLine, NOT_IN_ROOM_REASON};
use crate::safe_text::for_terminal;

/// Indent of lines without a time, so they line up under the texts.
const NOTE_INDENT: &str = "      ";

/// Renders message lines, batch after batch; remembers the last date shown
/// so `--follow` prints a date line only when the date changes.
#[derive(Debug, Clone)]
pub struct MessageView {
    tz: TimeZone,
    utc: bool,
    /// The current year in `tz` (dates of other years show theirs).
    this_year: Option<i16>,
    style: Style,
    last_date: Option<Date>,
}

/// What one line becomes.
enum Row {
    /// A line with a time (a date line may come first).
    Timed(u64, String),
    /// A line without one.
    Note(String),
    /// Counted into a summary line instead.
    Counted(Summary),
}

#[derive(Clone, Copy)]
enum Summary {
    BeforeJoin,
    NotInRoom,
}

impl MessageView {
    /// A view in time zone `tz` (`utc` marks date lines as UTC), where now
    /// is `now_ms`.
    pub fn new(tz: TimeZone, utc: bool, now_ms: u64, style: Style) -> MessageView {
        let this_year = timestamp(now_ms).map(|t| t.to_zoned_datetime(tz.clone()).year());
        MessageView {
            tz,
            utc,
            this_year,
            style,
            last_date: None,
        }
    }

    /// The text for `lines` (one batch: all of `messages`, or one poll of
    /// `--follow`), each line ending in `\n`. Summaries stand where the
    /// first message they count would have stood.
    pub fn render(&mut self, names: &mut Names, lines: &[MessageLine]) -> String {
        let rows: Vec<Row> = lines.iter().map(|l| self.row(names, l)).collect();
        let before_join = rows
            .iter()
            .filter(|r| matches!(r, Row::Counted(Summary::BeforeJoin)))
            .count();
        let not_in_room = rows
            .iter()
            .filter(|r| matches!(r, Row::Counted(Summary::NotInRoom)))
            .count();
        let mut out = String::new();
        let (mut said_before, mut said_not_in) = (false, false);
        for row in rows {
            match row {
                Row::Timed(ts, text) => {
                    let (date, time) = self.clock(ts);
                    if let Some(d) = date
                        && self.last_date != Some(d)
                    {
                        self.last_date = Some(d);
                        out.push_str(&self.style.bold(&self.date_line(d)));
                        out.push('\n');
                    }
                    out.push_str(&self.style.dim(&time));
                    out.push(' ');
                    out.push_str(&text);
                    out.push('\n');
                }
                Row::Note(text) => self.note(&mut out, &text),
                Row::Counted(Summary::BeforeJoin) if !said_before => {
                    said_before = true;
                    let n = count(before_join as u64, "earlier message", "earlier messages");
                    self.note(&mut out, &format!("{n} from before you joined"));
                }
                Row::Counted(Summary::NotInRoom) if !said_not_in => {
                    said_not_in = true;
                    let n = count(not_in_room as u64, "message", "messages");
                    self.note(
                        &mut out,
                        &format!("{n} this device carries but cannot read (it is not in the room)"),
                    );
                }
                Row::Counted(_) => {}
            }
        }
        out
    }

    /// What `messages` prints for a room without messages.
    pub fn empty(&self) -> String {
        format!("{}\n", self.style.dim("No messages yet."))
    }

    fn note(&self, out: &mut String, text: &str) {
        out.push_str(NOTE_INDENT);
        out.push_str(&self.style.dim(text));
        out.push('\n');
    }

    /// One line, through one match over every kind of line.
    fn row(&self, names: &mut Names, line: &MessageLine) -> Row {
        match line {
            MessageLine::Text {
                sender,
                ts,
                text,
                delivered_to,
                read_by,
                next_hop,
                via,
                location,
                urgent,
                attachment,
                event_id,
                ..
            } => {
                let who = match via {
                    // Bridged from Matrix: the Matrix user, then the bridge
                    // device that vouches for it (`bridge.md`, "Attribution").
                    Some(v) => format!(
                        "{} ({} via {})",
                        for_terminal(if v.name.is_empty() {
                            &v.matrix_user
                        } else {
                            &v.name
                        }),
                        for_terminal(&v.matrix_user),
                        self.who(names, sender)
                    ),
                    None => self.who(names, sender),
                };
                let mut line = match location {
                    // A location pin: where, then any text.
                    Some(at) => {
                        let acc = if at.accuracy_m > 0 {
                            format!(" ±{} m", at.accuracy_m)
                        } else {
                            String::new()
                        };
                        let sep = if text.is_empty() { "" } else { "  " };
                        format!("{who}: 📍 {}{acc}{sep}{}", at.degrees(), for_terminal(text))
                    }
                    None => format!("{who}: {}", for_terminal(text)),
                };
                if let Some(a) = attachment {
                    // A file: what it is, then whether it can be saved.
                    let state = match (&a.path, a.complete) {
                        (Some(p), _) => format!("saved to {}", for_terminal(p)),
                        (None, true) => format!("meshrelay save {event_id} FILE"),
                        (None, false) => "still arriving".to_owned(),
                    };
                    line.push_str(&format!(
                        "  📎 {} ({} bytes, {}; {state})",
                        for_terminal(&a.name),
                        a.size,
                        for_terminal(&a.media_type)
                    ));
                }
                if *urgent {
                    // Urgent: marked before the sender, in bold, where the
                    // eye lands first (`app.md` §4).
                    line = format!("{} {line}", self.style.bold("🚨 URGENT"));
                }
                if names.is_own(sender) {
                    let t = ticks(names.others(), *next_hop, delivered_to.len(), read_by.len());
                    if !t.is_empty() {
                        line.push_str("  ");
                        line.push_str(&self.style.dim(&t));
                    }
                }
                Row::Timed(*ts, line)
            }
            MessageLine::Undecryptable { reason, .. } if reason == BEFORE_JOIN_REASON => {
                Row::Counted(Summary::BeforeJoin)
            }
            MessageLine::Undecryptable { reason, .. } if reason == NOT_IN_ROOM_REASON => {
                Row::Counted(Summary::NotInRoom)
            }
            MessageLine::Undecryptable {
                sender, ts, reason, ..
            } => {
                let note = format!("(cannot read this message: {})", for_terminal(reason));
                Row::Timed(
                    *ts,
                    format!("{}: {}", self.who(names, sender), self.style.dim(&note)),
                )
            }
            MessageLine::Unauthorized { sender, ts, .. } => {
                let note = "(hidden: the sender was not a member at this point)";
                Row::Timed(
                    *ts,
                    format!("{}: {}", self.who(names, sender), self.style.dim(note)),
                )
            }
            MessageLine::Gap { gap } => Row::Note(gap_note(names, gap)),
            MessageLine::Fork { fork } => Row::Note(fork_note(names, fork)),
        }
    }

    fn who(&self, names: &mut Names, sender: &str) -> String {
        self.style.name(&names.label(sender), sender)
    }

    /// The date and `HH:MM` of `ts_ms`; a time out of range is `--:--`
    /// without a date.
    fn clock(&self, ts_ms: u64) -> (Option<Date>, String) {
        match timestamp(ts_ms) {
            Some(t) => {
                let z = t.to_zoned_datetime(self.tz.clone());
                (Some(z.date()), z.strftime("%H:%M").to_string())
            }
            None => (None, "--:--".to_owned()),
        }
    }

    fn date_line(&self, d: Date) -> String {
        let mut s = if Some(d.year()) == self.this_year {
            d.strftime("%A %-d %B").to_string()
        } else {
            d.strftime("%A %-d %B %Y").to_string()
        };
        if self.utc {
            s.push_str(" (UTC)");
        }
        format!("-- {s} --")
    }
}

/// The receipt marks of an own message in a room with `others` other
/// members, stored on the next hop (`next_hop`: a peer or the homeserver
/// holds it), `delivered` members of whom hold it and `read` of whom read
/// it: `✓` (the next hop or another member holds it), `✓✓` (every member
/// does), then `read by N` or `read by all` (`protocol-spec/app.md` §4).
pub fn ticks(others: usize, next_hop: bool, delivered: usize, read: usize) -> String {
    let mut t = String::new();
    if others > 0 && delivered >= others {
        t.push_str("✓✓");
    } else if delivered > 0 || next_hop {
        t.push('✓');
    }
    if read > 0 {
        if !t.is_empty() {
            t.push(' ');
        }
        if others > 0 && read >= others {
            t.push_str("read by all");
        } else {
            t.push_str(&format!("read by {read}"));
        }
    }
    t
}

/// `3 messages from Ben have not arrived`.
pub fn gap_note(names: &mut Names, gap: &GapInfo) -> String {
    let n = gap.to_seq.saturating_sub(gap.from_seq).saturating_add(1);
    let verb = if n == 1 { "has" } else { "have" };
    format!(
        "{} from {} {verb} not arrived",
        count(n, "message", "messages"),
        names.label(&gap.sender)
    )
}

/// A sender signed several events at one sequence number
/// (`protocol-spec/rooms.md` §7.1): the copy that counts (lowest ID) is
/// shown, the others named. IDs are hex produced here, nothing to escape.
pub fn fork_note(names: &mut Names, fork: &ForkInfo) -> String {
    let (shown, others) = fork
        .event_ids
        .split_first()
        .map_or(("?", &[][..]), |(a, b)| (a.as_str(), b));
    format!(
        "fork: {} signed {} different messages at sequence {}; shown: {shown}; also: {}",
        names.label(&fork.sender),
        fork.event_ids.len(),
        fork.seq,
        others.join(", ")
    )
}

fn timestamp(ms: u64) -> Option<Timestamp> {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
}
