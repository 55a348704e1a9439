//! The data directory: where a device keeps its identity and contacts.
//!
//! Resolution order (`protocol-spec/identity.md`, "Storage"):
//! 1. an explicit path (`--data-dir DIR`),
//! 2. the `MESHRELAY_DATA_DIR` environment variable,
//! 3. the platform data directory (`$XDG_DATA_HOME` or `~/.local/share` on
//!    Linux) followed by `meshrelay`.
//!
//! The directory is created with mode 0700. Every file in it is created with
//! mode 0600 *at open time* (never widened and narrowed later), and replaced
//! atomically: written to a temporary file in the same directory, synced,
//! renamed over the old one, and the directory synced.
//!
//! **Secrets at rest** (`protocol-spec/identity.md`, "Storage"): every open
//! ([`DataDir::secure`], called by the CLI before any command and by
//! [`DataDir::load`]) checks the directory and each file that holds
//! secrets or private data ([`CHECKED_FILES`]). One owned by another user
//! is refused; group or world permission bits are narrowed back to 0700 /
//! 0600 with a warning, or refused when that fails.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::crypto::{CardError, ContactCard, Identity, identity::IdentityError};

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "MESHRELAY_DATA_DIR";
/// Name of the data directory under the platform data directory.
pub const APP_DIR_NAME: &str = "meshrelay";
/// File holding the secret identity (canonical CBOR, 0600).
pub const IDENTITY_FILE: &str = "identity.cbor";
/// File holding this device's own signed contact card (`MRC1:` text).
pub const CARD_FILE: &str = "card.txt";
/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the data directory.
pub const FILE_MODE: u32 = 0o600;
/// Largest file this module reads back (identity, card, contact book).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// File name of the homeserver configuration (it holds the access token).
pub const HOMESERVER_CONFIG_FILE: &str = "homeserver.toml";
/// Files whose owner and mode [`DataDir::secure`] checks: the identity,
/// the homeserver configuration (access token), the store (room keys and
/// plaintexts), the own card and the contact book.
pub const CHECKED_FILES: &[&str] = &[
    IDENTITY_FILE,
    HOMESERVER_CONFIG_FILE,
    crate::store::redb_backend::STORE_FILE_NAME,
    CARD_FILE,
    crate::contacts::CONTACTS_FILE,
];

/// Why the data directory could not be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// No explicit directory, no environment variable, and the platform has
    /// no data directory (no `$HOME`).
    #[error("cannot find a data directory: pass --data-dir or set {DATA_DIR_ENV}")]
    NoDataDir,
    /// `init` found an identity already there.
    #[error("an identity already exists in {0}; refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    /// No identity has been created yet.
    #[error("no identity in {0}; run `meshrelay init` first")]
    NotInitialized(PathBuf),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The identity file is corrupt.
    #[error("cannot read identity file {0}: {1}")]
    BadIdentity(PathBuf, IdentityError),
    /// The stored card is corrupt or does not belong to the identity.
    #[error("own contact card {0} is invalid: {1}")]
    BadCard(PathBuf, String),
    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error("{0} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge(PathBuf),
    /// The directory or a secret file belongs to another user.
    #[error(
        "{path} is owned by user {owner}, not by this user ({me}); refusing to use it (fix the owner or pick another --data-dir)"
    )]
    ForeignOwner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        me: u32,
    },
    /// Group or world permission bits could not be removed.
    #[error("{path} is readable by other users (mode {mode:o}) and cannot be narrowed: {source}")]
    Exposed {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Why `chmod` failed.
        source: io::Error,
    },
}

impl DataDirError {
    /// Whether a file was written by a newer meshrelay (a downgrade).
    pub fn is_too_new(&self) -> bool {
        matches!(self, DataDirError::BadIdentity(_, e) if e.is_too_new())
    }
}

/// The effective user ID of this process: the owner of `/proc/self`
/// (Linux; `None` without procfs, and then ownership is not checked).
fn effective_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Picks the data directory: `explicit`, else `env` (the value of
/// [`DATA_DIR_ENV`]), else the platform data directory + `meshrelay`.
/// Empty values count as unset.
pub fn resolve(explicit: Option<&Path>, env: Option<OsString>) -> Result<PathBuf, DataDirError> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p.to_owned());
    }
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return Ok(PathBuf::from(e));
    }
    dirs::data_dir()
        .map(|d| d.join(APP_DIR_NAME))
        .ok_or(DataDirError::NoDataDir)
}

/// An open data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Uses `root` without touching the file system.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a file inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (and missing parents) with mode 0700, and
    /// narrows an existing directory to 0700.
    pub fn create(&self) -> Result<(), DataDirError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.root)
            .map_err(io_err(&self.root))?;
        let meta = fs::metadata(&self.root).map_err(io_err(&self.root))?;
        if meta.permissions().mode() & 0o777 != DIR_MODE {
            fs::set_permissions(&self.root, fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_err(&self.root))?;
        }
        Ok(())
    }

    /// Checks the directory and [`CHECKED_FILES`] (see the module docs):
    /// refuses any owned by another user; narrows group/world bits to
    /// [`DIR_MODE`] / [`FILE_MODE`] and returns one warning per narrowed
    /// path (the caller shows them). A missing directory or file is fine.
    pub fn secure(&self) -> Result<Vec<String>, DataDirError> {
        let mut warnings = Vec::new();
        let me = effective_uid();
        let mut check = |path: PathBuf, want: u32| -> Result<(), DataDirError> {
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(&path)(e)),
            };
            if let Some(me) = me
                && meta.uid() != me
            {
                return Err(DataDirError::ForeignOwner {
                    owner: meta.uid(),
                    path,
                    me,
                });
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                if let Err(source) = fs::set_permissions(&path, fs::Permissions::from_mode(want)) {
                    return Err(DataDirError::Exposed { path, mode, source });
                }
                warnings.push(format!(
                    "{} had mode {mode:o} (readable by other users); narrowed to {want:o}",
                    path.display()
                ));
            }
            Ok(())
        };
        check(self.root.clone(), DIR_MODE)?;
        for name in CHECKED_FILES {
            check(self.path(name), FILE_MODE)?;
        }
        Ok(warnings)
    }

    /// Whether an identity exists.
    pub fn has_identity(&self) -> bool {
        self.path(IDENTITY_FILE).exists()
    }

    /// Creates the directory and stores a new identity with its card.
    /// Refuses if an identity is already there.
    pub fn init(&self, identity: &Identity, card: &ContactCard) -> Result<(), DataDirError> {
        self.create()?;
        let id_path = self.path(IDENTITY_FILE);
        // create_new makes the refusal race-free: two concurrent `init`s
        // cannot both write an identity.
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&id_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(DataDirError::AlreadyInitialized(self.root.clone()));
            }
            Err(e) => return Err(io_err(&id_path)(e)),
        };
        let secret = identity.to_secret_bytes();
        let written = f
            .write_all(&secret)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&id_path));
        if let Err(e) = written {
            let _ = fs::remove_file(&id_path);
            return Err(e);
        }
        self.write_atomic(CARD_FILE, card.to_text().as_bytes())?;
        sync_dir(&self.root)
    }

    /// Loads the identity and this device's own card, checking that they
    /// belong together.
    pub fn load(&self) -> Result<(Identity, ContactCard), DataDirError> {
        let id_path = self.path(IDENTITY_FILE);
        if !id_path.exists() {
            return Err(DataDirError::NotInitialized(self.root.clone()));
        }
        for w in self.secure()? {
            tracing::warn!("{w}");
        }
        let secret = zeroize::Zeroizing::new(self.read(IDENTITY_FILE)?);
        let identity = Identity::from_secret_bytes(&secret)
            .map_err(|e| DataDirError::BadIdentity(id_path, e))?;
        let card_path = self.path(CARD_FILE);
        let text = self.read(CARD_FILE)?;
        let text = String::from_utf8(text)
            .map_err(|_| DataDirError::BadCard(card_path.clone(), "not UTF-8".into()))?;
        let card = ContactCard::from_text(&text)
            .map_err(|e: CardError| DataDirError::BadCard(card_path.clone(), e.to_string()))?;
        if card.device_id != identity.device_id() {
            return Err(DataDirError::BadCard(
                card_path,
                "belongs to another device".into(),
            ));
        }
        Ok((identity, card))
    }

    /// Reads a whole file from the directory, up to [`MAX_FILE_BYTES`].
    /// Returns `Ok(None)` if it does not exist.
    pub fn read_optional(&self, name: &str) -> Result<Option<Vec<u8>>, DataDirError> {
        let path = self.path(name);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut buf = Vec::new();
        f.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io_err(&path))?;
        if buf.len() as u64 > MAX_FILE_BYTES {
            return Err(DataDirError::TooLarge(path));
        }
        Ok(Some(buf))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DataDirError> {
        let path = self.path(name);
        self.read_optional(name)?.ok_or_else(|| DataDirError::Io {
            path,
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    /// Replaces file `name` atomically with `data`: a 0600 temporary file
    /// in the same directory is written, synced and renamed over it, then
    /// the directory is synced. A crash leaves the old or the new file,
    /// never a mix.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), DataDirError> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        // A stale temporary file from a crash is ours to replace.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp)(e)),
        }
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        sync_dir(&self.root)
    }
}

fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_flag_then_env_then_platform() {
        let flag = Path::new("/a");
        assert_eq!(
            resolve(Some(flag), Some("/b".into())).unwrap(),
            PathBuf::from("/a")
        );
        assert_eq!(
            resolve(None, Some("/b".into())).unwrap(),
            PathBuf::from("/b")
        );
        assert_eq!(
            resolve(Some(Path::new("")), Some("".into())).ok(),
            dirs::data_dir().map(|d| d.join(APP_DIR_NAME))
        );
    }

    #[test]
    fn init_then_load_and_refuse_second_init() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::new(tmp.path().join("x/y"));
        let id = Identity::from_seed(&[4; 32]);
        let card = ContactCard::create(&id, "Ana", 5).unwrap();
        dd.init(&id, &card).unwrap();
        let (back, back_card) = dd.load().unwrap();
        assert_eq!(back.device_id(), id.device_id());
        assert_eq!(back_card, card);
        assert!(matches!(
            dd.init(&id, &card),
            Err(DataDirError::AlreadyInitialized(_))
        ));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dd.root()), DIR_MODE);
        assert_eq!(mode(&dd.path(IDENTITY_FILE)), FILE_MODE);
        assert_eq!(mode(&dd.path(CARD_FILE)), FILE_MODE);
    }
}
