//! The Bluetooth LE adapter (`protocol-spec/ble.md`).
//!
//! Every device is both a central (scan, connect, write) and a peripheral
//! (advertise, serve one GATT characteristic, notify). Each GATT connection
//! is one core link ([`crate::proto::LinkId`], [`crate::proto::LinkKind::Ble`]),
//! shaped like the LAN adapter's: [`spawn`] returns a [`BleHandle`] for
//! sending and closing, and a stream of [`BleEvent`]s.
//!
//! | module | holds |
//! |---|---|
//! | [`adv`] | rotating advertisement tokens (HKDF of a secret and the epoch) |
//! | [`session`] | one link, sans-IO: Noise NN handshake, sealed records, ATT fragmentation, reorder window |
//! | [`privacy`] | LE privacy as the controller reports it, peers' address kinds |
//! | [`policy`] | scan duty cycle, connection budget, RSSI threshold, connect timeout, backoff, tie-break |
//! | [`engine`] | all links of one adapter and their mapping to core links, sans-IO |
//! | [`sim`] | a simulated GATT link (MTU, loss, reordering, disconnects) driving two engines |
//! | [`harness`] | real core nodes over the simulated link (tests, benchmark) |
//! | `adapter` | [`spawn`], [`BleHandle`]: the radio task on tokio, restarted with backoff (feature `runtime`) |
//! | `hw` | the radio: btleplug central and BlueZ peripheral over D-Bus (feature `ble`, Linux) |
//!
//! Without an adapter or a system bus the adapter reports
//! [`BleStatus::Unavailable`] and sends no events; that is not an error.

pub mod adv;
pub mod engine;
pub mod harness;
pub mod policy;
pub mod privacy;
pub mod session;
pub mod sim;

#[cfg(feature = "runtime")]
mod adapter;
#[cfg(all(feature = "ble", target_os = "linux"))]
mod hw;

use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

#[cfg(feature = "runtime")]
pub use adapter::{BleHandle, spawn};
#[cfg(feature = "runtime")]
pub(crate) use adapter::{Command, set_status};

pub use adv::{AdvSecret, AdvToken};
pub use policy::PolicyConfig;
pub use session::{BLE_CORE_MTU, Role};

use crate::proto::LinkId;
use crate::proto::io::SourceKey;

/// The meshrelay GATT service.
pub const SERVICE_UUID: u128 = 0xe6eb0279_b943_402f_867e_df6b83672942;
/// Its one characteristic: write without response (central → peripheral),
/// notify (peripheral → central), read (presence only: an empty value).
pub const CHARACTERISTIC_UUID: u128 = 0x6e0d75c7_3296_4cf2_a83b_6f5295219362;
/// Manufacturer-data company ID carrying the advertisement token
/// (0xFFFF: "for testing", no company is identified).
pub const MANUFACTURER_ID: u16 = 0xFFFF;

/// BLE link numbers start here, far from the LAN adapter's, so both can
/// feed one core.
pub const BLE_LINK_ID_BASE: u64 = 1 << 62;
/// Events queued from the adapter to the daemon before the adapter waits.
pub const EVENT_QUEUE: usize = 1024;
/// Value of the characteristic served to reads: presence only.
pub const READ_VALUE: &[u8] = b"";

/// Configuration of the BLE adapter.
#[derive(Debug, Clone)]
pub struct BleConfig {
    /// `false` for `--no-ble`.
    pub enabled: bool,
    /// `--ble-adapter hciN`; `None` picks the first controller.
    pub adapter: Option<String>,
    /// The secret advertisement tokens derive from.
    pub secret: AdvSecret,
    /// Scheduling tunables.
    pub policy: PolicyConfig,
    /// The first link number this adapter hands out.
    pub first_link_id: u64,
}

impl Default for BleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            adapter: None,
            secret: AdvSecret::random(),
            policy: PolicyConfig::default(),
            first_link_id: BLE_LINK_ID_BASE,
        }
    }
}

/// Why the adapter could not start. Missing hardware is not one of these
/// (it is [`BleStatus::Unavailable`]).
#[derive(Debug, Error)]
pub enum BleError {
    /// `spawn` was called outside a tokio runtime.
    #[error("the BLE adapter needs a tokio runtime")]
    NoRuntime,
}

/// What the adapter reports to the daemon (mirrors `LanEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BleEvent {
    /// A link finished its handshake: give it to the core as
    /// `Input::LinkUp { kind: LinkKind::Ble, mtu, source, .. }`.
    Up {
        /// The link.
        link: LinkId,
        /// The datagram size to give the core ([`BLE_CORE_MTU`]).
        mtu: usize,
        /// The penalty key ([`ble_source`]).
        source: SourceKey,
        /// The peer's Bluetooth address, for status output.
        address: String,
    },
    /// A link went down.
    Down(LinkId),
    /// A datagram arrived.
    Received {
        /// The link.
        link: LinkId,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Everything queued on the link was written to the radio.
    Drained(LinkId),
}

/// One link in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BleLinkStatus {
    /// The core link number.
    pub link: u64,
    /// `central` or `peripheral`.
    pub role: String,
    /// The negotiated ATT MTU.
    pub att_mtu: usize,
    /// The peer's address as this radio saw it.
    pub address: String,
    /// Its kind ([`privacy::address_kind`]): `rpa` when the peer used a
    /// resolvable private address, else `public`, `static`, `nrpa` or
    /// `unknown`; absent where the radio does not report it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
}

/// The `ble` field of `meshrelay status --json`:
/// `{"state":"off"}`, `{"state":"unavailable","reason":…}` or
/// `{"state":"running","adapter":…,"privacy":…,"advertising":…,"links":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum BleStatus {
    /// Disabled (`--no-ble`).
    Off,
    /// No adapter, no system bus, or built without the `ble` feature.
    Unavailable {
        /// Why, for people.
        reason: String,
    },
    /// Advertising and scanning.
    Running {
        /// The controller (`hci0`).
        adapter: String,
        /// `"rpa"` when the controller advertises from resolvable private
        /// addresses, as read from the controller's current settings
        /// ([`privacy`]); otherwise `off: …`, `unsupported: …` or
        /// `unknown: …` saying why.
        privacy: String,
        /// `"on"`, or why advertising failed (then only this device's
        /// central role finds peers).
        advertising: String,
        /// Links admitted.
        links: Vec<BleLinkStatus>,
    },
}

impl BleStatus {
    /// The JSON value of the `ble` field.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// One line for the human `status` output.
    pub fn summary(&self) -> String {
        match self {
            BleStatus::Off => "off".into(),
            BleStatus::Unavailable { reason } => format!("unavailable: {reason}"),
            BleStatus::Running {
                adapter,
                privacy,
                advertising,
                links,
            } => format!(
                "running on {adapter} ({} link{}, address privacy: {privacy}, advertising: {advertising})",
                links.len(),
                if links.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Whether a core link number belongs to the BLE adapter (numbers from
/// [`BLE_LINK_ID_BASE`] on), so a driver can route `Output::Transmit`.
pub fn is_ble_link(link: LinkId) -> bool {
    link.0 >= BLE_LINK_ID_BASE
}

/// The penalty key of BLE links on one controller: an attacker can rotate
/// every radio identity, so one radio neighbourhood is one source.
pub fn ble_source(adapter: &str) -> SourceKey {
    let h = Sha256::new()
        .chain_update(b"meshrelay/v1/ble-source\0")
        .chain_update(adapter.as_bytes())
        .finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    SourceKey(k)
}

/// Source file of the known upstream panic ([`is_upstream_cleanup_panic`]).
pub const UPSTREAM_CLEANUP_PANIC_FILE: &str = "messagestream.rs";

/// Whether a panic is bluez-async 0.9's known one: dropping one of its
/// D-Bus signal streams spawns a task that removes the stream's match rule
/// and unwraps the result; when a signal arrived in between, the D-Bus
/// library has already removed the rule ("No match with that id found")
/// and that task panics. Nothing is lost (the rule is gone either way) and
/// tokio confines the panic to that task, but the default hook would print
/// it as if the process had failed. Matched narrowly: that crate, that
/// file, a D-Bus error.
pub fn is_upstream_cleanup_panic(file: &str, message: &str) -> bool {
    file.contains("bluez-async")
        && file.ends_with(UPSTREAM_CLEANUP_PANIC_FILE)
        && message.contains("D-Bus error")
}

/// First wait before the radio is tried again after it failed (no adapter,
/// no bus, a D-Bus error, a panic inside the Bluetooth stack).
pub const RESTART_MIN_MS: u64 = 5_000;
/// Longest wait between attempts (doubling from [`RESTART_MIN_MS`]).
pub const RESTART_MAX_MS: u64 = 300_000;
/// Each start of the radio numbers its links from its own range, so a
/// restarted adapter never reuses a link number the core still knows.
pub const RESTART_LINK_ID_STRIDE: u64 = 1 << 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_shapes() {
        assert_eq!(
            BleStatus::Off.to_json(),
            serde_json::json!({"state": "off"})
        );
        assert_eq!(
            BleStatus::Unavailable {
                reason: "no system bus".into()
            }
            .to_json(),
            serde_json::json!({"state": "unavailable", "reason": "no system bus"})
        );
        let running = BleStatus::Running {
            adapter: "hci0".into(),
            privacy: "rpa".into(),
            advertising: "on".into(),
            links: vec![BleLinkStatus {
                link: BLE_LINK_ID_BASE,
                role: "central".into(),
                att_mtu: 185,
                address: "4A:00:00:00:00:01".into(),
                address_type: Some("rpa".into()),
            }],
        };
        assert_eq!(
            running.to_json(),
            serde_json::json!({"state": "running", "adapter": "hci0", "privacy": "rpa",
                "advertising": "on", "links": [{"link": BLE_LINK_ID_BASE, "role": "central", "att_mtu": 185,
                           "address": "4A:00:00:00:00:01", "address_type": "rpa"}]})
        );
        assert_eq!(
            running.summary(),
            "running on hci0 (1 link, address privacy: rpa, advertising: on)"
        );
        assert_ne!(ble_source("hci0"), ble_source("hci1"));
        // The panic seen in the QEMU run, and what must stay a panic.
        let file = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bluez-async-0.9.0/src/messagestream.rs";
        let msg = "called `Result::unwrap()` on an `Err` value: D-Bus error: No match with that id found (org.freedesktop.DBus.Error.Failed)";
        assert!(is_upstream_cleanup_panic(file, msg));
        assert!(!is_upstream_cleanup_panic(
            file,
            "there is no reactor running"
        ));
        assert!(!is_upstream_cleanup_panic("src/transport/ble/hw.rs", msg));
        assert!(is_ble_link(LinkId(BLE_LINK_ID_BASE)));
        assert!(!is_ble_link(LinkId(1)));
    }

    #[cfg(feature = "runtime")]
    #[tokio::test]
    async fn off_stays_off_and_quiet() {
        let (h, mut rx) = spawn(BleConfig {
            enabled: false,
            ..BleConfig::default()
        })
        .unwrap();
        assert_eq!(h.status(), BleStatus::Off);
        h.send(LinkId(1), vec![1]);
        assert!(rx.try_recv().is_err());
    }
}
