//! The CLI's output for people (issue 22; `protocol-spec/app.md` §4,
//! "Human-readable output").
//!
//! Everything here is a pure function of what it is given: the data the
//! command produced (the control API's typed answers), the names this
//! device knows ([`Names`]), a time zone and a "now" (the clock is a
//! parameter, as in the core), and a [`Style`] (colour or not). The
//! commands in [`super::rooms`] gather those and print the result, so
//! golden tests over fixed inputs are deterministic (`tests/golden/`).
//!
//! - [`messages`]: `messages` and `messages --follow` — local `HH:MM`, a
//!   date line whenever the date changes, names instead of device IDs, and
//!   gaps, unreadable and hidden messages as short plain lines;
//! - [`sentences`]: one sentence for `send`, `room create|invite|remove|
//!   leave|promote|demote`, `import` and `export`;
//! - [`welcome`]: `meshrelay` without arguments.
//!
//! `--json` output never comes through here: it stays exactly as the
//! contract says. Every string from another device (names, room names,
//! texts, reasons) passes through [`for_terminal`].

pub mod messages;
mod names;
pub mod sentences;
pub mod welcome;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;

pub use messages::MessageView;
pub use names::Names;

use crate::crypto::{DeviceId, fingerprint};
use crate::safe_text::for_terminal;

/// The environment variable that turns colour off whatever the output is
/// (<https://no-color.org>: set and not empty).
pub const NO_COLOR_ENV: &str = "NO_COLOR";

/// Hex digits of a room ID shown where a room has no name.
pub const SHORT_ROOM_ID_CHARS: usize = 8;

/// How output looks: colour (ANSI SGR) or plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// Whether to colour.
    pub color: bool,
}

impl Style {
    /// Plain text.
    pub const PLAIN: Style = Style { color: false };

    /// Colour when `stream` is a terminal and [`NO_COLOR_ENV`] is unset or
    /// empty; plain otherwise (a pipe or a file gets no escape codes).
    pub fn detect(stream: &impl IsTerminal) -> Style {
        let no_color = std::env::var_os(NO_COLOR_ENV).is_some_and(|v| !v.is_empty());
        Style::choose(stream.is_terminal(), no_color)
    }

    /// The decision of [`Style::detect`], from its two facts.
    pub fn choose(terminal: bool, no_color: bool) -> Style {
        Style {
            color: terminal && !no_color,
        }
    }

    fn paint(self, sgr: &str, s: &str) -> String {
        if self.color {
            format!("\u{1b}[{sgr}m{s}\u{1b}[0m")
        } else {
            s.to_owned()
        }
    }

    /// Times and notes: dim.
    pub fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }

    /// Date lines: bold.
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }

    /// A sender's name, in a colour chosen by its device (so two people
    /// with one name differ in colour too).
    pub fn name(self, s: &str, device: &str) -> String {
        const PALETTE: [&str; 6] = ["1;36", "1;33", "1;35", "1;32", "1;34", "1;31"];
        let h = device
            .bytes()
            .fold(0usize, |a, b| a.wrapping_mul(31) ^ b as usize);
        self.paint(PALETTE[h % PALETTE.len()], s)
    }
}

/// The first two groups of `device`'s fingerprint, then an ellipsis:
/// `77831 67776 …` (the whole one is in `meshrelay id` and `contacts`).
pub fn short_fingerprint(device: &DeviceId) -> String {
    let fp = fingerprint(device);
    let head: Vec<&str> = fp.split(' ').take(2).collect();
    format!("{} …", head.join(" "))
}

/// A room as a sentence names it: its name, or `room 1a2b3c4d…` when it
/// has none.
pub fn room_label(name: &str, room_id: &str) -> String {
    if name.trim().is_empty() {
        let short: String = room_id.chars().take(SHORT_ROOM_ID_CHARS).collect();
        format!("room {}…", for_terminal(&short))
    } else {
        for_terminal(name).into_owned()
    }
}

/// `1 message` / `3 messages`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
