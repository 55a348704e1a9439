//! The contact book: verified contact cards of other devices.
//!
//! For now the book is a JSON file in the data directory (`contacts.json`,
//! mode 0600, replaced atomically); the durable store will take it over
//! behind the same API. The file holds only card texts: every card is
//! verified again when the book is loaded, so a tampered file is detected.
//!
//! One card per device: adding a card for a known device keeps whichever
//! card is newer (`created_ms`), so an old card pasted again cannot roll
//! back a contact's prekey or name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{CardError, ContactCard, DeviceId};
use crate::datadir::{DataDir, DataDirError};

/// File name of the contact book inside the data directory.
pub const CONTACTS_FILE: &str = "contacts.json";
/// Most contacts one book holds (bounds memory on small boards).
pub const MAX_CONTACTS: usize = 10_000;

/// Why the contact book could not be read or changed.
#[derive(Debug, Error)]
pub enum ContactError {
    /// The data directory failed.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The card to add is invalid (forged, altered or malformed).
    #[error("invalid contact card: {0}")]
    BadCard(#[from] CardError),
    /// The contact book file is not valid.
    #[error("contact book {CONTACTS_FILE} is corrupt: {0}")]
    Corrupt(String),
    /// The file was written by a newer meshrelay (a downgrade).
    #[error(
        "contact book {CONTACTS_FILE} was written by a newer meshrelay (format version {0}; this build reads up to {BOOK_FILE_VERSION}); upgrade meshrelay again (downgrades are refused)"
    )]
    TooNew(u32),
    /// The book already holds [`MAX_CONTACTS`] devices.
    #[error("contact book is full ({MAX_CONTACTS} contacts)")]
    Full,
    /// The card is this device's own.
    #[error("that is this device's own card")]
    OwnCard,
}

impl ContactError {
    /// Whether a file was written by a newer meshrelay (a downgrade).
    pub fn is_too_new(&self) -> bool {
        match self {
            ContactError::TooNew(_) => true,
            ContactError::DataDir(d) => d.is_too_new(),
            _ => false,
        }
    }
}

/// What [`ContactBook::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new contact.
    Added,
    /// A newer card replaced the stored one.
    Updated,
    /// The stored card is the same or newer; nothing changed.
    Unchanged,
}

#[derive(Serialize, Deserialize)]
struct BookFile {
    version: u32,
    cards: Vec<String>,
}

/// Only the version of a book file (read before the rest).
#[derive(Deserialize)]
struct BookVersion {
    version: u32,
}

/// Version of the contact book file format this build writes and reads
/// (`protocol-spec/store.md`, "Upgrades").
pub const BOOK_FILE_VERSION: u32 = 1;

/// Verified contact cards, keyed and listed by device ID.
#[derive(Debug, Default, Clone)]
pub struct ContactBook {
    cards: BTreeMap<DeviceId, ContactCard>,
}

impl ContactBook {
    /// Loads the book from `dir` (empty if the file does not exist yet),
    /// verifying every card.
    pub fn load(dir: &DataDir) -> Result<Self, ContactError> {
        let Some(raw) = dir.read_optional(CONTACTS_FILE)? else {
            return Ok(Self::default());
        };
        // The version first: a newer layout may not parse as this one.
        let head: BookVersion =
            serde_json::from_slice(&raw).map_err(|e| ContactError::Corrupt(e.to_string()))?;
        if head.version > BOOK_FILE_VERSION {
            return Err(ContactError::TooNew(head.version));
        }
        let file: BookFile =
            serde_json::from_slice(&raw).map_err(|e| ContactError::Corrupt(e.to_string()))?;
        if file.version != BOOK_FILE_VERSION {
            return Err(ContactError::Corrupt(format!(
                "unknown version {}",
                file.version
            )));
        }
        if file.cards.len() > MAX_CONTACTS {
            return Err(ContactError::Corrupt("too many contacts".into()));
        }
        let mut book = Self::default();
        for text in &file.cards {
            let card = ContactCard::from_text(text)
                .map_err(|e| ContactError::Corrupt(format!("stored card: {e}")))?;
            book.cards.insert(card.device_id, card);
        }
        Ok(book)
    }

    /// Writes the book to `dir` atomically.
    pub fn save(&self, dir: &DataDir) -> Result<(), ContactError> {
        let file = BookFile {
            version: BOOK_FILE_VERSION,
            cards: self.cards.values().map(ContactCard::to_text).collect(),
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| ContactError::Corrupt(e.to_string()))?;
        dir.write_atomic(CONTACTS_FILE, &json)?;
        Ok(())
    }

    /// Adds a verified card (see the module docs for the update rule).
    pub fn add(&mut self, card: ContactCard) -> Result<AddOutcome, ContactError> {
        match self.cards.get(&card.device_id) {
            Some(old) if old.created_ms >= card.created_ms => Ok(AddOutcome::Unchanged),
            Some(_) => {
                self.cards.insert(card.device_id, card);
                Ok(AddOutcome::Updated)
            }
            None if self.cards.len() >= MAX_CONTACTS => Err(ContactError::Full),
            None => {
                self.cards.insert(card.device_id, card);
                Ok(AddOutcome::Added)
            }
        }
    }

    /// Stores `card` in `dir`'s book (`meshrelay contact add`, the web
    /// app's contacts): refused when it is `own` device's card or the book
    /// is full; the file is rewritten only when something changed.
    pub fn store_card(
        dir: &DataDir,
        own: &DeviceId,
        card: ContactCard,
    ) -> Result<AddOutcome, ContactError> {
        if card.device_id == *own {
            return Err(ContactError::OwnCard);
        }
        let mut book = ContactBook::load(dir)?;
        let outcome = book.add(card)?;
        if outcome != AddOutcome::Unchanged {
            book.save(dir)?;
        }
        Ok(outcome)
    }

    /// Parses, verifies and adds a card in text form.
    pub fn add_text(&mut self, text: &str) -> Result<(ContactCard, AddOutcome), ContactError> {
        let card = ContactCard::from_text(text)?;
        let outcome = self.add(card.clone())?;
        Ok((card, outcome))
    }

    /// The card of `device`, if known.
    pub fn get(&self, device: &DeviceId) -> Option<&ContactCard> {
        self.cards.get(device)
    }

    /// All cards, ordered by device ID.
    pub fn iter(&self) -> impl Iterator<Item = &ContactCard> {
        self.cards.values()
    }

    /// Number of contacts.
    pub fn len(&self) -> usize {
        self.cards.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;

    #[test]
    fn newer_card_wins_and_book_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create().unwrap();
        let bob = Identity::from_seed(&[2; 32]);
        let old = ContactCard::create(&bob, "Bob", 10).unwrap();
        let new = ContactCard::create(&bob, "Robert", 20).unwrap();
        let mut book = ContactBook::load(&dir).unwrap();
        assert!(book.is_empty());
        assert_eq!(book.add(new.clone()).unwrap(), AddOutcome::Added);
        assert_eq!(book.add(old.clone()).unwrap(), AddOutcome::Unchanged);
        book.save(&dir).unwrap();
        let back = ContactBook::load(&dir).unwrap();
        assert_eq!(back.get(&bob.device_id()), Some(&new));
        let mut book2 = ContactBook::default();
        book2.add(old).unwrap();
        assert_eq!(book2.add(new).unwrap(), AddOutcome::Updated);
    }
}
