//! Plaintext padding to size buckets (`protocol-spec/encryption.md`,
//! "Padding").
//!
//! Before encryption a plaintext is extended with one `0x80` byte and then
//! `0x00` bytes up to the smallest bucket in [`PAD_BUCKETS`] that holds it
//! (ISO/IEC 7816-4 padding). Relays then learn only the bucket, not the
//! length. Unpadding strips the zeros and requires the `0x80` marker; it
//! never decompresses or otherwise expands anything.

use thiserror::Error;

/// Padded sizes, in bytes. A padded plaintext is exactly one of these.
pub const PAD_BUCKETS: [usize; 10] = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 12288];

/// Largest padded plaintext (the last bucket).
pub const MAX_PADDED_BYTES: usize = 12288;

/// Largest plaintext that can be padded (one byte goes to the marker).
pub const MAX_PLAINTEXT_BYTES: usize = MAX_PADDED_BYTES - 1;

/// Why padding or unpadding failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PaddingError {
    /// The plaintext is longer than [`MAX_PLAINTEXT_BYTES`].
    #[error("plaintext of {0} bytes exceeds the {MAX_PLAINTEXT_BYTES}-byte limit")]
    TooLong(usize),
    /// The padded length is not a bucket size.
    #[error("padded length {0} is not a bucket size")]
    NotABucket(usize),
    /// No `0x80` marker before the zero run.
    #[error("padding marker missing")]
    BadMarker,
}

/// The bucket a plaintext of `len` bytes pads to.
pub fn bucket_for(len: usize) -> Result<usize, PaddingError> {
    PAD_BUCKETS
        .iter()
        .copied()
        .find(|b| *b > len)
        .ok_or(PaddingError::TooLong(len))
}

/// Pads `plaintext` to its bucket.
pub fn pad(plaintext: &[u8]) -> Result<Vec<u8>, PaddingError> {
    let size = bucket_for(plaintext.len())?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(size, 0);
    Ok(out)
}

/// Pads `plaintext` to exactly `size` bytes, the same marker and zeros as
/// [`pad`], for values of one fixed size (sealed contact cards). Unpad with
/// [`unpad_fixed`].
pub fn pad_to(plaintext: &[u8], size: usize) -> Result<Vec<u8>, PaddingError> {
    if plaintext.len() >= size {
        return Err(PaddingError::TooLong(plaintext.len()));
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(size, 0);
    Ok(out)
}

/// Removes the padding [`pad_to`] added to a value of `size` bytes.
pub fn unpad_fixed(padded: &[u8], size: usize) -> Result<&[u8], PaddingError> {
    if padded.len() != size {
        return Err(PaddingError::NotABucket(padded.len()));
    }
    strip(padded)
}

/// Removes the padding of a padded plaintext, returning the original.
pub fn unpad(padded: &[u8]) -> Result<&[u8], PaddingError> {
    if !PAD_BUCKETS.contains(&padded.len()) {
        return Err(PaddingError::NotABucket(padded.len()));
    }
    strip(padded)
}

/// Strips the zeros and the `0x80` marker.
fn strip(padded: &[u8]) -> Result<&[u8], PaddingError> {
    let end = padded
        .iter()
        .rposition(|b| *b != 0)
        .ok_or(PaddingError::BadMarker)?;
    match padded.get(end) {
        Some(0x80) => Ok(&padded[..end]),
        _ => Err(PaddingError::BadMarker),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_size_padding() {
        let p = pad_to(b"abc", 8).unwrap();
        assert_eq!(p, [b'a', b'b', b'c', 0x80, 0, 0, 0, 0]);
        assert_eq!(unpad_fixed(&p, 8).unwrap(), b"abc");
        assert!(unpad_fixed(&p, 9).is_err());
        assert!(pad_to(&[1; 8], 8).is_err());
        assert!(unpad_fixed(&[0; 8], 8).is_err());
    }

    #[test]
    fn boundaries() {
        assert_eq!(pad(&[]).unwrap().len(), 32);
        assert_eq!(pad(&[1; 31]).unwrap().len(), 32);
        assert_eq!(pad(&[1; 32]).unwrap().len(), 64);
        assert_eq!(
            pad(&[1; MAX_PLAINTEXT_BYTES]).unwrap().len(),
            MAX_PADDED_BYTES
        );
        assert_eq!(
            pad(&[1; MAX_PADDED_BYTES]),
            Err(PaddingError::TooLong(MAX_PADDED_BYTES))
        );
        assert_eq!(unpad(&[0; 32]), Err(PaddingError::BadMarker));
        assert_eq!(unpad(&[0x80; 33]), Err(PaddingError::NotABucket(33)));
        let mut p = vec![0u8; 32];
        p[3] = 0x81;
        assert_eq!(unpad(&p), Err(PaddingError::BadMarker));
    }

    proptest! {
        #[test]
        fn pad_round_trips(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let padded = pad(&data).unwrap();
            prop_assert!(PAD_BUCKETS.contains(&padded.len()));
            prop_assert_eq!(unpad(&padded).unwrap(), &data[..]);
        }
    }
}
