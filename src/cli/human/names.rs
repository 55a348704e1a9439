//! Who a device is, for people: the name from the room's roster, else from
//! this device's own card, else from the contact book; a short fingerprint
//! only where it is needed.
//!
//! A name is ambiguous when more than one device known here (the roster,
//! this device, the contact book) carries it, compared without case and
//! surrounding spaces: then every one of them is shown with its short
//! fingerprint (`Ben (77831 67776 …)`), so a newcomer cannot pass as a
//! known person by taking their name. A device with no known name is
//! `unknown device (…)`.

use std::collections::BTreeMap;

use super::short_fingerprint;
use crate::app::MemberInfo;
use crate::crypto::DeviceId;
use crate::safe_text::for_terminal;

/// What a device without a known name is called.
pub const UNKNOWN_NAME: &str = "unknown device";

/// The names this device knows, and the labels made from them.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Device ID → name (escaped for the terminal), by precedence.
    names: BTreeMap<String, String>,
    /// Folded name → how many devices carry it.
    carriers: BTreeMap<String, usize>,
    /// Labels already made (a fingerprint costs thousands of hashes).
    labels: BTreeMap<String, String>,
    /// This device's ID.
    own: Option<String>,
    /// Members of the room other than this device.
    others: usize,
}

fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

impl Names {
    /// Names from `roster` (the room's members), then `own` (this device:
    /// ID and card name), then `contacts` (ID and name); the first source
    /// that names a device wins. Empty names count as unknown.
    pub fn new<'a>(
        roster: &'a [MemberInfo],
        own: Option<(&'a str, &'a str)>,
        contacts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Names {
        let mut names = BTreeMap::new();
        let sources = roster
            .iter()
            .map(|m| (m.device_id.as_str(), m.name.as_str()))
            .chain(own)
            .chain(contacts);
        for (device, name) in sources {
            if fold(name).is_empty() {
                continue;
            }
            names
                .entry(device.to_owned())
                .or_insert_with(|| for_terminal(name.trim()).into_owned());
        }
        let mut carriers = BTreeMap::new();
        for name in names.values() {
            *carriers.entry(fold(name)).or_insert(0) += 1;
        }
        let own_id = own.map(|(d, _)| d.to_owned());
        let others = roster
            .iter()
            .filter(|m| Some(&m.device_id) != own_id.as_ref())
            .count();
        Names {
            names,
            carriers,
            labels: BTreeMap::new(),
            own: own_id,
            others,
        }
    }

    /// Whether `device` is this device.
    pub fn is_own(&self, device: &str) -> bool {
        self.own.as_deref() == Some(device)
    }

    /// How many members the room has besides this device.
    pub fn others(&self) -> usize {
        self.others
    }

    /// Whether `device` has a known name.
    pub fn knows(&self, device: &str) -> bool {
        self.names.contains_key(device)
    }

    /// `device`'s name, if known (escaped).
    pub fn name(&self, device: &str) -> Option<&str> {
        self.names.get(device).map(String::as_str)
    }

    /// How `device` is shown: `Ana`; `Ben (77831 67776 …)` when the name is
    /// ambiguous; `unknown device (…)` when there is no name.
    pub fn label(&mut self, device: &str) -> String {
        if let Some(l) = self.labels.get(device) {
            return l.clone();
        }
        let l = match self.names.get(device) {
            Some(n) if self.carriers.get(&fold(n)).copied().unwrap_or(0) <= 1 => n.clone(),
            Some(n) => format!("{n} ({})", fingerprint_of(device)),
            None => format!("{UNKNOWN_NAME} ({})", fingerprint_of(device)),
        };
        self.labels.insert(device.to_owned(), l.clone());
        l
    }
}

/// The short fingerprint of a device ID string; a malformed one is shown
/// (escaped, shortened) instead.
fn fingerprint_of(device: &str) -> String {
    match device.parse::<DeviceId>() {
        Ok(d) => short_fingerprint(&d),
        Err(_) => {
            let head: String = device.chars().take(12).collect();
            format!("{}…", for_terminal(&head))
        }
    }
}
