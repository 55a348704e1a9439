//! Text from peers made safe for a terminal (`protocol-spec/app.md`,
//! "Human-readable output").
//!
//! Names, room names, message texts, reasons and card fields come from
//! other devices. Printed raw, an `ESC` sequence could repaint the screen or
//! rewrite the window title, a `\r` could overwrite the start of a line
//! with a forged sender, and a bidirectional override could make
//! `gnp.exe` read as `exe.png`. [`for_terminal`] is the one function every
//! human-readable output path passes such strings through: it replaces each
//! dangerous character with a visible `\u{…}` escape (the backslash itself
//! is left alone; an escape is only ever produced for a character that was
//! really there). JSON output never uses it: JSON stays exact.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as itself: C0 and C1 controls,
/// DEL, bidirectional marks, embeddings, overrides and isolates, and other
/// invisible formatting characters (zero-width space and joiners, word
/// joiner and invisible operators, byte-order mark, soft hyphen, Mongolian
/// vowel separator, interlinear annotation marks, line and paragraph
/// separators).
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'          // C0 controls (ESC, \r, \n, \t, BEL ...)
        | '\u{7f}'..='\u{9f}'       // DEL and C1 controls (CSI 0x9b ...)
        | '\u{ad}'                  // soft hyphen
        | '\u{61c}'                 // Arabic letter mark
        | '\u{180e}'                // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}'   // zero-width space/(non-)joiner, LRM, RLM
        | '\u{2028}'..='\u{202e}'   // line/paragraph separator, LRE RLE PDF LRO RLO
        | '\u{2060}'..='\u{206f}'   // word joiner, invisible operators, LRI RLI FSI PDI, deprecated format
        | '\u{feff}'                // byte-order mark / zero-width no-break space
        | '\u{fff9}'..='\u{fffb}'   // interlinear annotation
    )
}

/// `s` with every [`is_unsafe`] character replaced by `\u{hex}`; borrowed
/// when nothing needed escaping.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["", "hello", "Zoë 東京 مرحبا 👋", "a\\u{1b}b", "tab-free"] {
            assert!(matches!(for_terminal(s), Cow::Borrowed(x) if x == s));
        }
    }

    #[test]
    fn hostile_strings_are_escaped() {
        let cases = [
            (
                "\u{1b}[2J\u{1b}]0;pwned\u{7}",
                "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}",
            ),
            ("ok\rAdmin: trust me", "ok\\u{d}Admin: trust me"),
            ("line\nnext", "line\\u{a}next"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("del\u{7f}", "del\\u{7f}"),
            ("invoice\u{202e}fdp.exe", "invoice\\u{202e}fdp.exe"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
            (
                "a\u{200e}b\u{200f}c\u{61c}",
                "a\\u{200e}b\\u{200f}c\\u{61c}",
            ),
            (
                "z\u{200b}w\u{200d}j\u{2060}\u{feff}",
                "z\\u{200b}w\\u{200d}j\\u{2060}\\u{feff}",
            ),
            ("\u{0}", "\\u{0}"),
        ];
        for (input, want) in cases {
            assert_eq!(for_terminal(input), want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn output_never_holds_an_unsafe_character(s in any::<String>()) {
            let out = for_terminal(&s);
            prop_assert!(!out.chars().any(is_unsafe));
            if !s.chars().any(is_unsafe) {
                prop_assert_eq!(out.as_ref(), s.as_str());
            }
        }
    }
}
