//! Strict deterministic CBOR (RFC 8949 §4.2.1, "core deterministic encoding").
//!
//! Every structure meshrelay signs or sends is a CBOR *array* (or a map with
//! unsigned-integer keys) written field by field in a fixed order, so the
//! canonical form of a value is unique. [`Writer`] emits only shortest-form
//! heads. [`Reader`] accepts only what [`Writer`] would emit:
//!
//! * heads must use the shortest argument encoding,
//! * no indefinite lengths, tags, floats or negative integers,
//! * a declared length is checked against the bytes that remain **before**
//!   anything is allocated (a header claiming 2^32 items in 9 bytes fails at
//!   once),
//! * nesting is bounded by the caller's depth limit,
//! * map keys must be strictly increasing unsigned integers (which is the
//!   bytewise order of their canonical encodings),
//! * text must be valid UTF-8, and nothing may follow the top-level item.
//!
//! See `protocol-spec/encoding.md`.

use thiserror::Error;

/// Why bytes were rejected as CBOR. The class names are used in the test
/// vectors (`protocol-spec/vectors/`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CborError {
    /// The input ended inside an item.
    #[error("truncated CBOR: input ends inside an item")]
    Truncated,
    /// A head used a longer argument encoding than necessary.
    #[error("non-canonical CBOR: integer or length not in shortest form")]
    NonMinimal,
    /// Map keys were not strictly increasing.
    #[error("non-canonical CBOR: map keys out of order or repeated")]
    MapKeyOrder,
    /// A CBOR feature outside the deterministic subset (tags, floats,
    /// negative integers, indefinite lengths, undefined simple values).
    #[error("unsupported CBOR item (major type {major}, additional info {info})")]
    Unsupported {
        /// Major type of the offending head.
        major: u8,
        /// Additional information bits of the offending head.
        info: u8,
    },
    /// Nesting deeper than the decoder's limit.
    #[error("CBOR nested deeper than {0} levels")]
    TooDeep(usize),
    /// A declared length exceeds what the input can possibly hold.
    #[error("CBOR declared length {declared} exceeds the {remaining} bytes that remain")]
    LengthExceedsInput {
        /// Length the head claimed.
        declared: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// Bytes followed the top-level item.
    #[error("{0} trailing bytes after the CBOR item")]
    TrailingBytes(usize),
    /// An item had a different type than the schema requires.
    #[error("expected {expected}")]
    WrongType {
        /// What the schema wanted at this point.
        expected: &'static str,
    },
    /// A text string was not valid UTF-8.
    #[error("text string is not valid UTF-8")]
    InvalidUtf8,
}

impl CborError {
    /// A stable short name for the error class, used by test vectors.
    pub fn class(&self) -> &'static str {
        match self {
            CborError::Truncated => "truncated",
            CborError::NonMinimal | CborError::MapKeyOrder => "non_canonical",
            CborError::Unsupported { .. } => "unsupported",
            CborError::TooDeep(_) => "depth",
            CborError::LengthExceedsInput { .. } => "length",
            CborError::TrailingBytes(_) => "trailing_bytes",
            CborError::WrongType { .. } | CborError::InvalidUtf8 => "schema",
        }
    }
}

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_SIMPLE: u8 = 7;
const SIMPLE_FALSE: u8 = 20;
const SIMPLE_TRUE: u8 = 21;
const SIMPLE_NULL: u8 = 22;

/// Appends canonical CBOR items to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn head(&mut self, major: u8, arg: u64) {
        let m = major << 5;
        if arg < 24 {
            self.buf.push(m | arg as u8);
        } else if arg <= u8::MAX as u64 {
            self.buf.extend_from_slice(&[m | 24, arg as u8]);
        } else if arg <= u16::MAX as u64 {
            self.buf.push(m | 25);
            self.buf.extend_from_slice(&(arg as u16).to_be_bytes());
        } else if arg <= u32::MAX as u64 {
            self.buf.push(m | 26);
            self.buf.extend_from_slice(&(arg as u32).to_be_bytes());
        } else {
            self.buf.push(m | 27);
            self.buf.extend_from_slice(&arg.to_be_bytes());
        }
    }

    /// An unsigned integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.head(MAJOR_UINT, v);
        self
    }

    /// A byte string.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.head(MAJOR_BYTES, b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }

    /// A text string.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.head(MAJOR_TEXT, s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    /// The head of an array of `n` items; the items follow.
    pub fn array(&mut self, n: usize) -> &mut Self {
        self.head(MAJOR_ARRAY, n as u64);
        self
    }

    /// The head of a map of `n` pairs; keys must then be written in
    /// increasing order.
    pub fn map(&mut self, n: usize) -> &mut Self {
        self.head(MAJOR_MAP, n as u64);
        self
    }

    /// `true` or `false`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf
            .push((MAJOR_SIMPLE << 5) | if v { SIMPLE_TRUE } else { SIMPLE_FALSE });
        self
    }

    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.buf.push((MAJOR_SIMPLE << 5) | SIMPLE_NULL);
        self
    }

    /// Bytes that are already one canonical CBOR item (for example an
    /// embedded signed event).
    pub fn raw(&mut self, item: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(item);
        self
    }
}

/// A parsed head: major type and argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    major: u8,
    arg: u64,
}

/// Reads canonical CBOR items from a byte slice, rejecting anything a
/// [`Writer`] would not produce.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Current offset into the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Fails unless the whole input has been consumed.
    pub fn finish(&self) -> Result<(), CborError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CborError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        if n > self.remaining() {
            return Err(CborError::Truncated);
        }
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn peek_byte(&self) -> Result<u8, CborError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(CborError::Truncated)
    }

    fn head(&mut self) -> Result<Head, CborError> {
        let first = self.take(1)?[0];
        let major = first >> 5;
        let info = first & 0x1f;
        if major == MAJOR_SIMPLE {
            return match info {
                SIMPLE_FALSE | SIMPLE_TRUE | SIMPLE_NULL => Ok(Head {
                    major,
                    arg: info as u64,
                }),
                _ => Err(CborError::Unsupported { major, info }),
            };
        }
        if !matches!(
            major,
            MAJOR_UINT | MAJOR_BYTES | MAJOR_TEXT | MAJOR_ARRAY | MAJOR_MAP
        ) {
            return Err(CborError::Unsupported { major, info });
        }
        let (arg, min) = match info {
            0..=23 => (info as u64, 0),
            24 => (self.take(1)?[0] as u64, 24),
            25 => {
                let b = self.take(2)?;
                (u16::from_be_bytes([b[0], b[1]]) as u64, 1 << 8)
            }
            26 => {
                let b = self.take(4)?;
                (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64, 1 << 16)
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 1 << 32)
            }
            _ => return Err(CborError::Unsupported { major, info }),
        };
        if arg < min {
            return Err(CborError::NonMinimal);
        }
        Ok(Head { major, arg })
    }

    fn expect(&mut self, major: u8, expected: &'static str) -> Result<u64, CborError> {
        let h = self.head()?;
        if h.major != major {
            return Err(CborError::WrongType { expected });
        }
        Ok(h.arg)
    }

    /// Checks a declared length of `n` units of at least `unit` bytes each
    /// against the remaining input, before the caller allocates for it.
    fn check_len(&self, n: u64, unit: u64) -> Result<usize, CborError> {
        let remaining = self.remaining();
        match n.checked_mul(unit) {
            Some(need) if need <= remaining as u64 => Ok(n as usize),
            _ => Err(CborError::LengthExceedsInput {
                declared: n,
                remaining,
            }),
        }
    }

    /// An unsigned integer.
    pub fn u64(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_UINT, "unsigned integer")
    }

    /// A byte string, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let n = self.expect(MAJOR_BYTES, "byte string")?;
        let n = self.check_len(n, 1)?;
        self.take(n)
    }

    /// A byte string of exactly `N` bytes.
    pub fn byte_array<const N: usize>(
        &mut self,
        expected: &'static str,
    ) -> Result<[u8; N], CborError> {
        let b = self.bytes()?;
        <[u8; N]>::try_from(b).map_err(|_| CborError::WrongType { expected })
    }

    /// A text string, borrowed from the input.
    pub fn text(&mut self) -> Result<&'a str, CborError> {
        let n = self.expect(MAJOR_TEXT, "text string")?;
        let n = self.check_len(n, 1)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| CborError::InvalidUtf8)
    }

    /// The head of an array; returns its item count, already checked to be
    /// possible in the remaining input (each item takes at least one byte).
    pub fn array(&mut self) -> Result<usize, CborError> {
        let n = self.expect(MAJOR_ARRAY, "array")?;
        self.check_len(n, 1)
    }

    /// The head of an array that must hold exactly `n` items.
    pub fn array_of(&mut self, n: usize, expected: &'static str) -> Result<(), CborError> {
        if self.array()? != n {
            return Err(CborError::WrongType { expected });
        }
        Ok(())
    }

    /// The head of a map; returns its pair count (checked against input).
    pub fn map(&mut self) -> Result<usize, CborError> {
        let n = self.expect(MAJOR_MAP, "map")?;
        self.check_len(n, 2)
    }

    /// `true` or `false`.
    pub fn bool(&mut self) -> Result<bool, CborError> {
        match self.head()? {
            Head {
                major: MAJOR_SIMPLE,
                arg,
            } if arg == SIMPLE_TRUE as u64 => Ok(true),
            Head {
                major: MAJOR_SIMPLE,
                arg,
            } if arg == SIMPLE_FALSE as u64 => Ok(false),
            _ => Err(CborError::WrongType { expected: "bool" }),
        }
    }

    /// Whether the next item is `null` (consumed if so).
    pub fn null(&mut self) -> Result<bool, CborError> {
        if self.peek_byte()? == (MAJOR_SIMPLE << 5) | SIMPLE_NULL {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Skips one complete item, enforcing canonical form and at most
    /// `max_depth` nested containers (an array of byte strings has depth 1). Returns the raw bytes of the item.
    pub fn item(&mut self, max_depth: usize) -> Result<&'a [u8], CborError> {
        let start = self.pos;
        self.skip(max_depth, max_depth)?;
        Ok(&self.input[start..self.pos])
    }

    /// Skips one item. `depth_left` is how many more containers (arrays or
    /// maps) may be opened; scalars need none.
    fn skip(&mut self, depth_left: usize, max_depth: usize) -> Result<(), CborError> {
        let h = self.head()?;
        if matches!(h.major, MAJOR_ARRAY | MAJOR_MAP) && depth_left == 0 {
            return Err(CborError::TooDeep(max_depth));
        }
        match h.major {
            MAJOR_UINT | MAJOR_SIMPLE => {}
            MAJOR_BYTES => {
                let n = self.check_len(h.arg, 1)?;
                self.take(n)?;
            }
            MAJOR_TEXT => {
                let n = self.check_len(h.arg, 1)?;
                std::str::from_utf8(self.take(n)?).map_err(|_| CborError::InvalidUtf8)?;
            }
            MAJOR_ARRAY => {
                let n = self.check_len(h.arg, 1)?;
                for _ in 0..n {
                    self.skip(depth_left - 1, max_depth)?;
                }
            }
            MAJOR_MAP => {
                let n = self.check_len(h.arg, 2)?;
                let mut last: Option<u64> = None;
                for _ in 0..n {
                    let key = self.u64()?;
                    if last.is_some_and(|l| key <= l) {
                        return Err(CborError::MapKeyOrder);
                    }
                    last = Some(key);
                    self.skip(depth_left - 1, max_depth)?;
                }
            }
            // head() only returns the supported major types; refuse anything
            // else as unsupported rather than trusting that here.
            major => return Err(CborError::Unsupported { major, info: 0 }),
        }
        Ok(())
    }
}

/// Checks that `input` is exactly one canonical item no deeper than
/// `max_depth`. Decoders run this first so that the structural error classes
/// (depth, declared length, non-minimal heads, trailing bytes) are reported
/// before schema errors.
pub fn validate(input: &[u8], max_depth: usize) -> Result<(), CborError> {
    let mut r = Reader::new(input);
    r.item(max_depth)?;
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_u64(v: u64) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(v);
        w.into_bytes()
    }

    #[test]
    fn integers_round_trip_at_every_width_boundary() {
        for v in [
            0,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let b = enc_u64(v);
            let mut r = Reader::new(&b);
            assert_eq!(r.u64().unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn non_minimal_integer_is_rejected() {
        // 5 encoded with a one-byte argument.
        assert_eq!(Reader::new(&[0x18, 0x05]).u64(), Err(CborError::NonMinimal));
        // 255 encoded with a two-byte argument.
        assert_eq!(
            Reader::new(&[0x19, 0x00, 0xff]).u64(),
            Err(CborError::NonMinimal)
        );
    }

    #[test]
    fn declared_length_bomb_fails_before_allocating() {
        // array of 2^32 items in a 9-byte input
        let input = [0x9b, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            Reader::new(&input).array(),
            Err(CborError::LengthExceedsInput { .. })
        ));
        assert!(matches!(
            validate(&input, 8),
            Err(CborError::LengthExceedsInput { .. })
        ));
    }

    #[test]
    fn depth_bomb_is_rejected() {
        let input = vec![0x81u8; 10_000];
        assert_eq!(validate(&input, 8), Err(CborError::TooDeep(8)));
    }

    #[test]
    fn indefinite_lengths_tags_and_floats_are_unsupported() {
        for b in [&[0x9f, 0xff][..], &[0xc0, 0x00], &[0xf9, 0, 0], &[0x20]] {
            assert!(matches!(validate(b, 8), Err(CborError::Unsupported { .. })));
        }
    }

    #[test]
    fn map_keys_must_increase() {
        assert_eq!(
            validate(&[0xa2, 0x01, 0x00, 0x00, 0x00], 8),
            Err(CborError::MapKeyOrder)
        );
        assert!(validate(&[0xa2, 0x00, 0x00, 0x01, 0x00], 8).is_ok());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert_eq!(validate(&[0x00, 0x00], 8), Err(CborError::TrailingBytes(1)));
    }
}
