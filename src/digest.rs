//! Content digests and the streams that compute them in one pass: a hashing
//! writer for what kiln produces, a verifying reader for what it reads.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// A digest from its 32 raw bytes (a finished SHA-256).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The 64 hex characters, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::invalid("digest", s, reason);
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("only sha256 digests are supported (`sha256:` followed by 64 hex digits)"))?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("expected 64 lowercase hex digits after `sha256:`"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad("not hex"))?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner writer, the digest and the size of what went through.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest(self.hasher.finalize().into()), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that fails before EOF unless the bytes match the expected digest
/// and size: corrupt content never reaches a consumer as a clean end.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected: Digest,
    size: u64,
    what: String,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, expecting exactly `size` bytes hashing to `expected`.
    pub fn new(inner: R, expected: Digest, size: u64, what: impl Into<String>) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            expected,
            size,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never read past the declared size: a longer stream is an error too.
        let room = (self.size - self.count).min(buf.len() as u64) as usize;
        let n = if room == 0 {
            let mut probe = [0u8; 1];
            let extra = self.inner.read(&mut probe)?;
            if extra != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: more than the declared {} bytes", self.what, self.size),
                ));
            }
            0
        } else {
            self.inner.read(&mut buf[..room])?
        };
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if n == 0 && !buf.is_empty() {
            if self.count != self.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: expected {} bytes, got {}", self.what, self.size, self.count),
                ));
            }
            let found = Digest(self.hasher.clone().finalize().into());
            if found != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: expected digest {}, found {}", self.what, self.expected, found),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_round_trip_and_rejects() {
        let d = Digest::of(b"kiln");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("sha512:00".parse::<Digest>().is_err());
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "G".repeat(64)).parse::<Digest>().is_err());
    }

    #[test]
    fn verifying_reader_catches_corruption_and_length() {
        let data = b"hello world";
        let d = Digest::of(data);
        let mut ok = Vec::new();
        VerifyingReader::new(&data[..], d.clone(), 11, "blob")
            .read_to_end(&mut ok)
            .unwrap();
        assert_eq!(ok, data);
        let mut sink = Vec::new();
        assert!(
            VerifyingReader::new(&b"hello worle"[..], d.clone(), 11, "blob")
                .read_to_end(&mut sink)
                .is_err()
        );
        assert!(
            VerifyingReader::new(&b"hello"[..], d.clone(), 11, "blob")
                .read_to_end(&mut sink)
                .is_err()
        );
        assert!(
            VerifyingReader::new(&b"hello world!"[..], d, 11, "blob")
                .read_to_end(&mut sink)
                .is_err()
        );
    }
}
