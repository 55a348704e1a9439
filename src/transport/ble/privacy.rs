//! LE privacy as the controller reports it (`protocol-spec/ble.md`,
//! "Address privacy").
//!
//! BlueZ does not expose the privacy state over D-Bus (`Adapter1.AddressType`
//! names the identity address, not the one on air), so the node asks the
//! kernel's Bluetooth management interface for the controller's *current
//! settings* through BlueZ's `btmgmt` tool (a read-only command that needs no
//! privileges). The `privacy` setting on means the kernel advertises and
//! connects from resolvable private addresses. What `status` says is read
//! from there, never from a configuration file, and it is read again at
//! every advertisement rotation.
//!
//! Peers' addresses are classified too ([`address_kind`]): a node's links
//! show whether the other side's radio used a resolvable private address,
//! which is what a passive listener saw.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The management tool asked for the controller's settings (BlueZ's, in the
/// same package as `bluetoothd` on Debian, Ubuntu, Fedora and Arch).
pub const PRIVACY_PROBE_COMMAND: &str = "btmgmt";

/// How long the probe may take before it is killed and the state reported
/// unknown.
pub const PRIVACY_PROBE_TIMEOUT_MS: u64 = 2_000;

/// Most bytes of the probe's output read.
pub const PRIVACY_PROBE_MAX_OUTPUT: u64 = 64 * 1024;

/// `status` value when the controller advertises from resolvable private
/// addresses.
pub const PRIVACY_RPA: &str = "rpa";

/// The controller's LE privacy state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privacy {
    /// The `privacy` setting is on: resolvable private addresses.
    Rpa,
    /// Supported but off: the controller uses its identity address.
    Off,
    /// The controller cannot do LE privacy.
    Unsupported,
    /// The settings could not be read (why).
    Unknown(String),
}

impl Privacy {
    /// The `privacy` value of the `ble` status field: `"rpa"`, or a sentence
    /// starting with `off:`, `unsupported:` or `unknown:`.
    pub fn status(&self) -> String {
        match self {
            Privacy::Rpa => PRIVACY_RPA.into(),
            Privacy::Off => "off: the controller advertises its identity address; set \
                             Privacy = device under [General] in /etc/bluetooth/main.conf \
                             and restart bluetoothd"
                .into(),
            Privacy::Unsupported => {
                "unsupported: the controller cannot use resolvable private addresses; \
                 it advertises its identity address"
                    .into()
            }
            Privacy::Unknown(why) => format!(
                "unknown: cannot read the controller's settings ({why}); \
                 the controller may advertise its identity address"
            ),
        }
    }
}

/// Parses `btmgmt --index hciN info` output: the `current settings` and
/// `supported settings` lines of the controller.
pub fn parse_mgmt_info(text: &str) -> Privacy {
    let settings = |label: &str| -> Option<Vec<&str>> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .map(|rest| rest.split_whitespace().collect())
    };
    match (
        settings("current settings:"),
        settings("supported settings:"),
    ) {
        (Some(cur), _) if cur.contains(&"privacy") => Privacy::Rpa,
        (Some(_), Some(sup)) if !sup.contains(&"privacy") => Privacy::Unsupported,
        (Some(_), _) => Privacy::Off,
        (None, _) => Privacy::Unknown("no controller settings in the management reply".into()),
    }
}

/// Reads the privacy state of controller `adapter` (`hciN`). Blocking (up
/// to [`PRIVACY_PROBE_TIMEOUT_MS`]): call it from a blocking task.
pub fn read_privacy(adapter: &str) -> Privacy {
    if !adapter
        .strip_prefix("hci")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Privacy::Unknown(format!("{adapter:?} is not an hciN controller name"));
    }
    // btmgmt's shell quits at end of input, possibly before the reply: its
    // stdin is a pipe kept open until it exits.
    let mut child = match Command::new(PRIVACY_PROBE_COMMAND)
        .args(["--index", adapter, "info"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Privacy::Unknown(format!("{PRIVACY_PROBE_COMMAND}: {e}")),
    };
    let stdin = child.stdin.take();
    let deadline = Instant::now() + Duration::from_millis(PRIVACY_PROBE_TIMEOUT_MS);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Privacy::Unknown(format!("{PRIVACY_PROBE_COMMAND} did not answer"));
            }
        }
    }
    drop(stdin);
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = stdout
            .take(PRIVACY_PROBE_MAX_OUTPUT)
            .read_to_string(&mut out);
    }
    parse_mgmt_info(&out)
}

/// What kind of address a peer used: `"public"`, or for random addresses
/// (`random == Some(true)`) the kind the two top bits of the most
/// significant byte give — `"rpa"` (01, resolvable private), `"static"`
/// (11), `"nrpa"` (00, non-resolvable private) — or `"unknown"`.
pub fn address_kind(address: &str, random: Option<bool>) -> &'static str {
    match random {
        Some(false) => "public",
        Some(true) => {
            let top = address
                .get(..2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|b| b >> 6);
            match top {
                Some(0b01) => "rpa",
                Some(0b11) => "static",
                Some(0b00) => "nrpa",
                _ => "unknown",
            }
        }
        None => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `btmgmt --index hci1 info` from BlueZ 5.66 in the QEMU guest.
    const OFF: &str = "hci1:\tPrimary controller\n\taddr 00:AA:01:01:00:01 version 9 manufacturer 1521 class 0x000000\n\
        \tsupported settings: powered connectable discoverable bondable le advertising secure-conn debug-keys privacy static-addr phy-configuration \n\
        \tcurrent settings: powered le secure-conn \n\tname BlueZ 5.66\n";

    #[test]
    fn privacy_is_read_from_current_settings() {
        assert_eq!(parse_mgmt_info(OFF), Privacy::Off);
        let on = OFF.replace(
            "current settings: powered le",
            "current settings: powered le privacy",
        );
        assert_eq!(parse_mgmt_info(&on), Privacy::Rpa);
        assert_eq!(Privacy::Rpa.status(), "rpa");
        let unsupported = OFF.replace("debug-keys privacy static-addr", "debug-keys static-addr");
        assert_eq!(parse_mgmt_info(&unsupported), Privacy::Unsupported);
        assert!(matches!(parse_mgmt_info(""), Privacy::Unknown(_)));
        assert!(Privacy::Off.status().starts_with("off: "));
        assert!(matches!(read_privacy("hci0; rm"), Privacy::Unknown(_)));
    }

    #[test]
    fn address_kinds() {
        assert_eq!(address_kind("4A:00:00:00:00:01", Some(true)), "rpa");
        assert_eq!(address_kind("C0:00:00:00:00:01", Some(true)), "static");
        assert_eq!(address_kind("3A:00:00:00:00:01", Some(true)), "nrpa");
        assert_eq!(address_kind("00:AA:01:01:00:01", Some(false)), "public");
        assert_eq!(address_kind("zz", Some(true)), "unknown");
        assert_eq!(address_kind("4A:00:00:00:00:01", None), "unknown");
    }
}
