//! The identity files of a data directory, in the format the `meshrelay
//! init` command writes (`protocol-spec/identity.md`, "Storage"):
//! `identity.cbor` ([`Identity::to_secret_bytes`], mode 0600) and
//! `card.txt` (this device's own signed `MRC1:` card, mode 0600), in a
//! directory of mode 0700.
//!
//! This is a minimal loader and writer so the application layer works on
//! its own; it reads and writes exactly the files of the data-directory
//! module and can be replaced by it.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::AppError;
use crate::crypto::{ContactCard, Identity};

/// File holding the secret identity.
pub const IDENTITY_FILE: &str = "identity.cbor";
/// File holding this device's own contact card.
pub const CARD_FILE: &str = "card.txt";
/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the data directory.
pub const FILE_MODE: u32 = 0o600;
/// Largest identity or card file read back.
pub const MAX_ID_FILE_BYTES: u64 = 64 * 1024;

fn io(path: &Path) -> impl FnOnce(io::Error) -> AppError + '_ {
    move |source| AppError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_small(path: &Path) -> Result<Zeroizing<Vec<u8>>, AppError> {
    let f = fs::File::open(path).map_err(io(path))?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(MAX_ID_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io(path))?;
    if buf.len() as u64 > MAX_ID_FILE_BYTES {
        return Err(AppError::BadIdentity(format!(
            "{} is larger than {MAX_ID_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

fn write_new(path: &Path, data: &[u8]) -> Result<(), AppError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                AppError::AlreadyInitialized(path.to_owned())
            } else {
                AppError::Io {
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

/// Creates `dir` (mode 0700) and writes a new identity with its card.
/// Refuses to overwrite an existing identity.
pub fn write_identity(dir: &Path, identity: &Identity, card: &ContactCard) -> Result<(), AppError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io(dir))?;
    write_new(&dir.join(IDENTITY_FILE), &identity.to_secret_bytes())?;
    write_new(&dir.join(CARD_FILE), card.to_text().as_bytes())?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Loads the identity and its own card, checking they belong together.
pub fn load_identity(dir: &Path) -> Result<(Identity, ContactCard), AppError> {
    let id_path = dir.join(IDENTITY_FILE);
    if !id_path.exists() {
        return Err(AppError::NotInitialized(dir.to_owned()));
    }
    let identity = Identity::from_secret_bytes(&read_small(&id_path)?)
        .map_err(|e| AppError::BadIdentity(format!("{}: {e}", id_path.display())))?;
    let card_path = dir.join(CARD_FILE);
    let text = read_small(&card_path)?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| AppError::BadIdentity(format!("{}: not UTF-8", card_path.display())))?;
    let card = ContactCard::from_text(text.trim())
        .map_err(|e| AppError::BadIdentity(format!("{}: {e}", card_path.display())))?;
    if card.device_id != identity.device_id() {
        return Err(AppError::BadIdentity(format!(
            "{} belongs to another device",
            card_path.display()
        )));
    }
    Ok((identity, card))
}
