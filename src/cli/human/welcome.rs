//! `meshrelay` without arguments.
//!
//! On a machine without an identity in the data directory it explains the
//! first three steps (create an identity, share the contact card, create a
//! room or wait to be invited) instead of only the usage. With an identity
//! it prints the usage and one line saying who this device is and what to
//! try next. Either way it succeeds (exit 0): asking for help is not an
//! error.

use super::short_fingerprint;
use crate::crypto::DeviceId;
use crate::safe_text::for_terminal;

/// The first-run guide, for a data directory `dir` without an identity.
pub fn first_steps(dir: &str) -> String {
    format!(
        "\
meshrelay: end-to-end encrypted rooms over Bluetooth, the local network
and files carried by hand.

There is no identity for this device yet (in {dir}).
Three steps to start:

  1. Create this device's identity:
       meshrelay init --name \"Your name\"
  2. Share your contact card with the people you will talk to, and add
     theirs:
       meshrelay id --qr            (or send the MRC1:… text of `meshrelay id`)
       meshrelay contact add MRC1:…
  3. Create a room and invite them, or wait for someone to invite you:
       meshrelay room create \"north camp\"
       meshrelay room invite ROOM_ID MRC1:…
     then keep `meshrelay run` going to meet others nearby (or pass a
     bundle file: `meshrelay export` / `meshrelay import`).

All commands: meshrelay --help
",
        dir = for_terminal(dir)
    )
}

/// The hint after the usage when this device has an identity.
pub fn status_hint(name: &str, device: &DeviceId) -> String {
    let who = if name.trim().is_empty() {
        "This device has no name".to_owned()
    } else {
        format!("This device is {}", for_terminal(name.trim()))
    };
    format!(
        "{who} (fingerprint {}). See your rooms with `meshrelay rooms`, \
         a room's messages with `meshrelay messages ROOM_ID`, and the node with \
         `meshrelay status`.\n",
        short_fingerprint(device)
    )
}
