//! Attachments: a file encrypted once under a fresh key, split into chunks
//! that each fit one event (`protocol-spec/attachments.md`).
//!
//! The sender seals the file ([`seal_file`]): a fresh 32-byte file key, the
//! file's SHA-256, its name, media type and size go into an
//! [`Announcement`], a small chat message (content type 5, encrypted with
//! the sender's chain like any message). Then each chunk of at most
//! [`CHUNK_BYTES`] is encrypted with ChaCha20-Poly1305 under the file key
//! ([`seal_chunks`]), bound by its associated data to the announcement's
//! event ID, the file's size and its own index, and travels as its own
//! `chunk` event ([`ChunkBody`], cleartext framing, ciphertext data) that
//! relays carry without reading. A receiver opens the file
//! ([`open_file`]) only when it holds every chunk, and only if the
//! decrypted whole has the announced hash: a missing, forged or corrupt
//! chunk never yields a file.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::event::EventId;

/// Largest attachment, in bytes (1 MiB).
pub const MAX_ATTACHMENT_BYTES: u64 = 1024 * 1024;
/// Plaintext bytes per chunk (the last may be shorter): 12 KiB, so a chunk
/// event stays under `MAX_PAYLOAD_BYTES` with its framing and tag.
pub const CHUNK_BYTES: usize = 12 * 1024;
/// Most chunks of one file: `MAX_ATTACHMENT_BYTES / CHUNK_BYTES`, rounded up.
pub const MAX_CHUNKS: u64 = MAX_ATTACHMENT_BYTES.div_ceil(CHUNK_BYTES as u64);
/// Longest file name, in UTF-8 bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest media type (`type/subtype`), in bytes.
pub const MAX_MEDIA_TYPE_BYTES: usize = 127;
/// Authentication tag per chunk.
pub const CHUNK_TAG_BYTES: usize = 16;
/// Domain of a chunk's associated data.
pub const CHUNK_AAD_DOMAIN: &[u8] = b"meshrelay/v1/attachment-chunk\0";

/// Why an attachment or a chunk was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AttachmentError {
    /// Malformed encoding.
    #[error("attachment encoding: {0}")]
    Cbor(#[from] CborError),
    /// An empty file or one over [`MAX_ATTACHMENT_BYTES`].
    #[error("file is {0} bytes; an attachment is 1 to {MAX_ATTACHMENT_BYTES} bytes")]
    Size(u64),
    /// A file name that is empty, too long, a path or has control characters.
    #[error("file name: {0}")]
    Name(&'static str),
    /// A media type that is not `type/subtype` in at most 127 token bytes.
    #[error("media type must be type/subtype, e.g. image/jpeg")]
    MediaType,
    /// A chunk index at or past the file's chunk count, or data of the wrong size.
    #[error("chunk {0} does not belong to this file")]
    Chunk(u64),
    /// Some chunks are not held yet.
    #[error("{missing} of {chunks} chunks have not arrived yet")]
    Incomplete {
        /// Chunks not held.
        missing: u64,
        /// The file's chunk count.
        chunks: u64,
    },
    /// A chunk did not decrypt (altered, or sealed for another file).
    #[error("chunk {0} does not decrypt")]
    Decrypt(u64),
    /// The decrypted file does not have the announced hash.
    #[error("the file does not match its announced SHA-256")]
    Hash,
}

/// A file's key: fresh per file, zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey(pub Zeroizing<[u8; 32]>);

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(<redacted>)")
    }
}

/// What a receiver needs to fetch, decrypt and check a file (inside the
/// announcement message, end-to-end encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The file's name (no path).
    pub name: String,
    /// Its media type, e.g. `image/jpeg`.
    pub media_type: String,
    /// Its size in bytes (1 to [`MAX_ATTACHMENT_BYTES`]).
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
    /// The key its chunks are encrypted with.
    pub key: FileKey,
}

impl Announcement {
    /// The file's chunk count.
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(CHUNK_BYTES as u64)
    }

    /// Checks the limits of `protocol-spec/attachments.md`.
    pub fn check(&self) -> Result<(), AttachmentError> {
        if self.size == 0 || self.size > MAX_ATTACHMENT_BYTES {
            return Err(AttachmentError::Size(self.size));
        }
        check_name(&self.name)?;
        check_media_type(&self.media_type)
    }

    /// Writes `[name, media_type, size, sha256, key]` (the announcement's
    /// part of content type 5).
    pub fn write(&self, w: &mut Writer) {
        w.text(&self.name)
            .text(&self.media_type)
            .u64(self.size)
            .bytes(&self.sha256)
            .bytes(&*self.key.0);
    }

    /// Reads what [`Announcement::write`] wrote, checked.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, AttachmentError> {
        let a = Announcement {
            name: r.text()?.to_owned(),
            media_type: r.text()?.to_owned(),
            size: r.u64()?,
            sha256: r.byte_array("sha256 of 32 bytes")?,
            key: FileKey(Zeroizing::new(r.byte_array("file key of 32 bytes")?)),
        };
        a.check()?;
        Ok(a)
    }

    /// The length of a chunk's plaintext.
    fn chunk_len(&self, index: u64) -> usize {
        let start = index * CHUNK_BYTES as u64;
        (self.size - start).min(CHUNK_BYTES as u64) as usize
    }

    /// A chunk's nonce and associated data.
    fn chunk_aead(&self, file: &EventId, index: u64) -> (Nonce, Vec<u8>) {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&index.to_be_bytes());
        let mut aad = Vec::with_capacity(CHUNK_AAD_DOMAIN.len() + 48);
        aad.extend_from_slice(CHUNK_AAD_DOMAIN);
        aad.extend_from_slice(file.as_bytes());
        aad.extend_from_slice(&self.size.to_be_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        (Nonce::from(nonce), aad)
    }
}

/// A name that a file system and a terminal take as it is.
fn check_name(name: &str) -> Result<(), AttachmentError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(AttachmentError::Name("empty"));
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(AttachmentError::Name("longer than 255 bytes"));
    }
    if name.contains(['/', '\\']) {
        return Err(AttachmentError::Name("a name, not a path"));
    }
    if name.chars().any(char::is_control) {
        return Err(AttachmentError::Name("control characters"));
    }
    Ok(())
}

/// `type/subtype`, RFC 6838 token characters.
fn check_media_type(m: &str) -> Result<(), AttachmentError> {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match m.split_once('/') {
        Some((t, s)) if m.len() <= MAX_MEDIA_TYPE_BYTES && token(t) && token(s) => Ok(()),
        _ => Err(AttachmentError::MediaType),
    }
}

/// The framing of a `chunk` event's payload (cleartext, so relays can
/// carry it): `[file: bstr .size 32, index: uint, data: bstr]`, where
/// `file` is the announcement's event ID and `data` the encrypted chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkBody {
    /// The announcement's event ID.
    pub file: EventId,
    /// The chunk's index, from 0.
    pub index: u64,
    /// The encrypted chunk (plaintext length + [`CHUNK_TAG_BYTES`]).
    pub data: Vec<u8>,
}

impl ChunkBody {
    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.data.len() + 48);
        w.array(3)
            .bytes(self.file.as_bytes())
            .u64(self.index)
            .bytes(&self.data);
        w.into_bytes()
    }

    /// Strict decoding: at most [`MAX_CHUNKS`] chunks, data of 1 to
    /// `CHUNK_BYTES + CHUNK_TAG_BYTES` bytes beyond the tag.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AttachmentError> {
        cbor::validate(bytes, 2)?;
        let mut r = Reader::new(bytes);
        r.array_of(3, "chunk array of 3")?;
        let file = EventId(r.byte_array("event ID of 32 bytes")?);
        let index = r.u64()?;
        let data = r.bytes()?.to_vec();
        r.finish()?;
        if index >= MAX_CHUNKS
            || data.len() <= CHUNK_TAG_BYTES
            || data.len() > CHUNK_BYTES + CHUNK_TAG_BYTES
        {
            return Err(AttachmentError::Chunk(index));
        }
        Ok(ChunkBody { file, index, data })
    }
}

/// Seals `file`: a fresh key from `rng`, its hash, name and media type.
pub fn seal_file<R: CryptoRng + ?Sized>(
    file: &[u8],
    name: &str,
    media_type: &str,
    rng: &mut R,
) -> Result<Announcement, AttachmentError> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *key);
    let a = Announcement {
        name: name.to_owned(),
        media_type: media_type.to_owned(),
        size: file.len() as u64,
        sha256: Sha256::digest(file).into(),
        key: FileKey(key),
    };
    a.check()?;
    Ok(a)
}

/// The chunks of `file` (announced by `a`, whose event ID is `file_id`),
/// in index order.
pub fn seal_chunks(
    a: &Announcement,
    file_id: &EventId,
    file: &[u8],
) -> Result<Vec<ChunkBody>, AttachmentError> {
    if file.len() as u64 != a.size {
        return Err(AttachmentError::Size(file.len() as u64));
    }
    let cipher = ChaCha20Poly1305::new(&(*a.key.0).into());
    file.chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, piece)| {
            let index = i as u64;
            let (nonce, aad) = a.chunk_aead(file_id, index);
            let data = cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: piece,
                        aad: &aad,
                    },
                )
                .map_err(|_| AttachmentError::Decrypt(index))?;
            Ok(ChunkBody {
                file: *file_id,
                index,
                data,
            })
        })
        .collect()
}

/// Opens the file announced by `a` (event `file_id`) from its chunks, in
/// any order (repeats are ignored): every chunk must be held, decrypt and
/// have its length, and the whole must have the announced hash.
pub fn open_file<'a>(
    a: &Announcement,
    file_id: &EventId,
    chunks: impl IntoIterator<Item = &'a ChunkBody>,
) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
    a.check()?;
    let n = a.chunks();
    let mut slots: Vec<Option<&ChunkBody>> = vec![None; n as usize];
    for c in chunks {
        if c.file != *file_id {
            continue;
        }
        let slot = slots
            .get_mut(c.index as usize)
            .ok_or(AttachmentError::Chunk(c.index))?;
        slot.get_or_insert(c);
    }
    let missing = slots.iter().filter(|s| s.is_none()).count() as u64;
    if missing > 0 {
        return Err(AttachmentError::Incomplete { missing, chunks: n });
    }
    let cipher = ChaCha20Poly1305::new(&(*a.key.0).into());
    let mut out = Zeroizing::new(Vec::with_capacity(a.size as usize));
    for (index, c) in slots.into_iter().flatten().enumerate() {
        let index = index as u64;
        if c.data.len() != a.chunk_len(index) + CHUNK_TAG_BYTES {
            return Err(AttachmentError::Chunk(index));
        }
        let (nonce, aad) = a.chunk_aead(file_id, index);
        let piece = Zeroizing::new(
            cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &c.data,
                        aad: &aad,
                    },
                )
                .map_err(|_| AttachmentError::Decrypt(index))?,
        );
        out.extend_from_slice(&piece);
    }
    if <[u8; 32]>::from(Sha256::digest(&*out)) != a.sha256 {
        return Err(AttachmentError::Hash);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn file(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    proptest! {
        #[test]
        fn any_file_round_trips_in_any_chunk_order(n in 1usize..40_000, seed in any::<u64>()) {
            let f = file(n);
            let mut rng = StdRng::seed_from_u64(seed);
            let a = seal_file(&f, "photo.jpg", "image/jpeg", &mut rng).unwrap();
            let id = EventId([7; 32]);
            let mut chunks = seal_chunks(&a, &id, &f).unwrap();
            prop_assert_eq!(chunks.len() as u64, a.chunks());
            chunks.reverse();
            let again: Vec<ChunkBody> = chunks
                .iter()
                .map(|c| ChunkBody::from_bytes(&c.to_bytes()).unwrap())
                .collect();
            prop_assert_eq!(&*open_file(&a, &id, &again).unwrap(), &f);
        }

        #[test]
        fn garbage_chunks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ChunkBody::from_bytes(&bytes);
        }
    }

    #[test]
    fn a_missing_altered_or_foreign_chunk_never_yields_a_file() {
        let f = file(30_000);
        let mut rng = StdRng::seed_from_u64(1);
        let a = seal_file(&f, "map.png", "image/png", &mut rng).unwrap();
        let id = EventId([1; 32]);
        let chunks = seal_chunks(&a, &id, &f).unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            open_file(&a, &id, &chunks[..2]),
            Err(AttachmentError::Incomplete {
                missing: 1,
                chunks: 3
            })
        );
        let mut bad = chunks.clone();
        bad[1].data[0] ^= 1;
        assert_eq!(open_file(&a, &id, &bad), Err(AttachmentError::Decrypt(1)));
        // Sealed for another announcement: does not decrypt here.
        let other = seal_chunks(&a, &EventId([2; 32]), &f).unwrap();
        let mixed: Vec<ChunkBody> = other
            .into_iter()
            .map(|c| ChunkBody { file: id, ..c })
            .collect();
        assert_eq!(open_file(&a, &id, &mixed), Err(AttachmentError::Decrypt(0)));
        // A wrong hash in the announcement: refused after decryption.
        let lying = Announcement {
            sha256: [0; 32],
            ..a.clone()
        };
        assert_eq!(open_file(&lying, &id, &chunks), Err(AttachmentError::Hash));
        assert_eq!(&*open_file(&a, &id, &chunks).unwrap(), &f);
        assert_eq!(format!("{:?}", a.key), "FileKey(<redacted>)");
    }

    #[test]
    fn limits_are_checked() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(
            seal_file(&[], "x", "text/plain", &mut rng),
            Err(AttachmentError::Size(0))
        );
        let big = vec![0; MAX_ATTACHMENT_BYTES as usize + 1];
        assert!(matches!(
            seal_file(&big, "x", "text/plain", &mut rng),
            Err(AttachmentError::Size(_))
        ));
        for name in ["", "..", "a/b", "a\\b", "a\u{1b}[2J", &"n".repeat(256)] {
            assert!(
                matches!(
                    seal_file(b"x", name, "text/plain", &mut rng),
                    Err(AttachmentError::Name(_))
                ),
                "{name:?}"
            );
        }
        for m in [
            "",
            "image",
            "image/",
            "/png",
            "image/png; q=1",
            "ima ge/png",
        ] {
            assert_eq!(
                seal_file(b"x", "a", m, &mut rng),
                Err(AttachmentError::MediaType),
                "{m:?}"
            );
        }
        assert_eq!(MAX_CHUNKS, 86);
        let max = vec![1; MAX_ATTACHMENT_BYTES as usize];
        let a = seal_file(&max, "big.bin", "application/octet-stream", &mut rng).unwrap();
        let chunks = seal_chunks(&a, &EventId([3; 32]), &max).unwrap();
        assert_eq!(chunks.len() as u64, MAX_CHUNKS);
        assert!(
            chunks
                .iter()
                .all(|c| c.to_bytes().len() < crate::limits::MAX_PAYLOAD_BYTES)
        );
    }
}
