//! A bundle read from a stream, one event at a time
//! (`protocol-spec/rooms.md` §8, `protocol-spec/app.md` §3): memory stays
//! bounded by one event whatever the bundle's size, so `import` of the
//! largest bundle (or of 100 MB of junk from a pipe) costs a few MiB.
//!
//! The framing checks are those of [`super::parse`]: canonical heads
//! (shortest form), the four-item array with the magic and the version, at
//! most [`MAX_BUNDLE_EVENTS`] byte strings, at most [`MAX_BUNDLE_BYTES`] in
//! all, and nothing after the last event. An event's byte string longer
//! than [`MAX_EVENT_BYTES`] is skipped without being buffered and reported
//! as [`RawEvent::Oversize`] (the whole-buffer path rejects it the same way,
//! as one bad event).

use std::io::Read;

use super::{BUNDLE_MAGIC, BUNDLE_VERSION, BundleError, MAX_BUNDLE_BYTES, MAX_BUNDLE_EVENTS};
use crate::cbor::CborError;
use crate::limits::MAX_EVENT_BYTES;

/// One event slot of a streamed bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    /// The event's bytes (at most [`MAX_EVENT_BYTES`]).
    Bytes(Vec<u8>),
    /// A byte string of this many bytes, over [`MAX_EVENT_BYTES`]: skipped.
    Oversize(u64),
}

/// A bundle being read from `R` (see the module docs).
#[derive(Debug)]
pub struct BundleStream<R> {
    r: R,
    consumed: u64,
    left: usize,
    created_ms: u64,
}

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;

impl<R: Read> BundleStream<R> {
    /// Reads and checks the bundle's header.
    pub fn new(r: R) -> Result<Self, BundleError> {
        let mut s = BundleStream {
            r,
            consumed: 0,
            left: 0,
            created_ms: 0,
        };
        let (major, n) = s.head()?;
        if major != MAJOR_ARRAY || n != 4 {
            return Err(BundleError::NotABundle);
        }
        let magic = match s.head()? {
            (MAJOR_TEXT, n) if n == BUNDLE_MAGIC.len() as u64 => s.take(BUNDLE_MAGIC.len())?,
            _ => return Err(BundleError::NotABundle),
        };
        if magic != BUNDLE_MAGIC.as_bytes() {
            return Err(BundleError::NotABundle);
        }
        let v = s.uint()?;
        if v != BUNDLE_VERSION {
            return Err(BundleError::UnknownVersion(v));
        }
        s.created_ms = s.uint()?;
        let count = match s.head()? {
            (MAJOR_ARRAY, n) => n,
            _ => return Err(CborError::WrongType { expected: "array" }.into()),
        };
        if count > MAX_BUNDLE_EVENTS as u64 {
            return Err(BundleError::TooManyEvents);
        }
        s.left = usize::try_from(count).map_err(|_| BundleError::TooManyEvents)?;
        Ok(s)
    }

    /// The bundle's creation time.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The next event slot, or `None` after the last one (once the input
    /// is checked to end there).
    pub fn next_event(&mut self) -> Result<Option<RawEvent>, BundleError> {
        if self.left == 0 {
            let mut b = [0u8; 1];
            return loop {
                match self.r.read(&mut b) {
                    Ok(0) => break Ok(None),
                    Ok(_) => break Err(CborError::TrailingBytes(1).into()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(BundleError::Read(e.to_string())),
                }
            };
        }
        self.left -= 1;
        let n = match self.head()? {
            (MAJOR_BYTES, n) => n,
            _ => {
                return Err(CborError::WrongType {
                    expected: "byte string",
                }
                .into());
            }
        };
        self.charge(n)?;
        if n > MAX_EVENT_BYTES as u64 {
            let skipped = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
                .map_err(|e| BundleError::Read(e.to_string()))?;
            if skipped < n {
                return Err(CborError::Truncated.into());
            }
            return Ok(Some(RawEvent::Oversize(n)));
        }
        // n <= MAX_EVENT_BYTES: fits usize.
        let mut buf = vec![0u8; n as usize];
        self.fill(&mut buf)?;
        Ok(Some(RawEvent::Bytes(buf)))
    }

    /// Counts `n` more bytes against [`MAX_BUNDLE_BYTES`].
    fn charge(&mut self, n: u64) -> Result<(), BundleError> {
        self.consumed = self.consumed.saturating_add(n);
        if self.consumed > MAX_BUNDLE_BYTES as u64 {
            return Err(BundleError::TooLarge(
                usize::try_from(self.consumed).unwrap_or(usize::MAX),
            ));
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), BundleError> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => BundleError::Cbor(CborError::Truncated),
            _ => BundleError::Read(e.to_string()),
        })
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, BundleError> {
        self.charge(n as u64)?;
        let mut b = vec![0u8; n];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn uint(&mut self) -> Result<u64, BundleError> {
        match self.head()? {
            (MAJOR_UINT, v) => Ok(v),
            _ => Err(CborError::WrongType {
                expected: "unsigned integer",
            }
            .into()),
        }
    }

    /// One canonical CBOR head: (major type, argument).
    fn head(&mut self) -> Result<(u8, u64), BundleError> {
        let mut first = [0u8; 1];
        self.charge(1)?;
        self.fill(&mut first)?;
        let (major, info) = (first[0] >> 5, first[0] & 0x1f);
        if !matches!(major, MAJOR_UINT | MAJOR_BYTES | MAJOR_TEXT | MAJOR_ARRAY) {
            return Err(CborError::Unsupported { major, info }.into());
        }
        let (len, min) = match info {
            0..=23 => return Ok((major, u64::from(info))),
            24 => (1, 24),
            25 => (2, 1 << 8),
            26 => (4, 1 << 16),
            27 => (8, 1 << 32),
            _ => return Err(CborError::Unsupported { major, info }.into()),
        };
        let mut b = [0u8; 8];
        self.charge(len as u64)?;
        self.fill(&mut b[..len])?;
        let arg = b[..len].iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
        if arg < min {
            return Err(CborError::NonMinimal.into());
        }
        Ok((major, arg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor::Writer;

    fn all(bytes: &[u8]) -> Result<Vec<RawEvent>, BundleError> {
        let mut s = BundleStream::new(bytes)?;
        let mut v = Vec::new();
        while let Some(e) = s.next_event()? {
            v.push(e);
        }
        Ok(v)
    }

    #[test]
    fn stream_agrees_with_parse() {
        let mut w = Writer::new();
        w.array(4)
            .text(BUNDLE_MAGIC)
            .u64(1)
            .u64(77)
            .array(3)
            .bytes(b"one")
            .bytes(&vec![9u8; MAX_EVENT_BYTES + 1])
            .bytes(b"");
        let b = w.into_bytes();
        let (t, raw) = super::super::parse(&b).unwrap();
        assert_eq!(t, 77);
        let got = all(&b).unwrap();
        assert_eq!(got.len(), raw.len());
        assert_eq!(got[0], RawEvent::Bytes(b"one".to_vec()));
        assert_eq!(got[1], RawEvent::Oversize(MAX_EVENT_BYTES as u64 + 1));
        assert_eq!(BundleStream::new(&b[..]).unwrap().created_ms(), 77);
        // Trailing bytes, truncation, junk: whole-bundle errors, as parse.
        let mut t = b.clone();
        t.push(0);
        assert!(all(&t).is_err() && super::super::parse(&t).is_err());
        for cut in [1, 5, b.len() / 2, b.len() - 1] {
            assert!(all(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(all(b"\x80").unwrap_err(), BundleError::NotABundle);
        // A non-minimal head is refused.
        let mut nm = b.clone();
        nm[0] = 0x98;
        nm.insert(1, 4);
        assert!(all(&nm).is_err());
    }
}
