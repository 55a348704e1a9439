//! The human form of a fork line of `messages` (`protocol-spec/app.md` §4,
//! `protocol-spec/rooms.md` §7.1): one short plain line naming the sender,
//! the sequence number and the copies, the one that counts first. IDs are
//! hex and device IDs `mr1…`, produced by this program, so nothing here
//! needs escaping.

use crate::app::ForkInfo;

/// `<fork: SENDER signed N events at sequence SEQ; shown: ID; also: ID…>`.
pub fn human_fork(f: &ForkInfo) -> String {
    let (shown, others) = f
        .event_ids
        .split_first()
        .map_or(("?", &[][..]), |(a, b)| (a.as_str(), b));
    format!(
        "<fork: {} signed {} events at sequence {}; shown: {shown}; also: {}>",
        f.sender,
        f.event_ids.len(),
        f.seq,
        others.join(", ")
    )
}
