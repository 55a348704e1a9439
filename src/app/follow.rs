//! `messages --follow` without a daemon (`protocol-spec/app.md` §5).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AppError, Device, MessageLine};
use crate::event::RoomId;
use crate::store::StoreError;

/// `messages --follow` without a daemon: every `interval`, opens the data
/// directory, reads the room's messages, closes the store again (so other
/// commands can use it between polls), and passes each line not shown
/// before to `emit` (with `last`, of the last `last` messages only). A
/// poll that finds the store in use is skipped. Stops
/// when `emit` fails or `keep_going` returns false (checked once per poll).
pub fn follow_messages(
    dir: &Path,
    room: &RoomId,
    last: Option<usize>,
    interval: Duration,
    mut now_ms: impl FnMut() -> u64,
    mut emit: impl FnMut(&MessageLine) -> io::Result<()>,
    mut keep_going: impl FnMut() -> bool,
) -> Result<(), AppError> {
    let mut shown: BTreeSet<String> = BTreeSet::new();
    loop {
        match Device::open(dir, now_ms()) {
            Ok(dev) => {
                let lines = dev.messages_last(room, last);
                drop(dev);
                for line in lines? {
                    let k = serde_json::to_string(&line)
                        .map_err(|e| AppError::Corrupt(e.to_string()))?;
                    if shown.insert(k) {
                        emit(&line).map_err(|source| AppError::Io {
                            path: PathBuf::from("-"),
                            source,
                        })?;
                    }
                }
            }
            Err(AppError::Store(StoreError::Locked { .. })) => {}
            Err(e) => return Err(e),
        }
        if !keep_going() {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
