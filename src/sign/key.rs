//! cosign's key files. The private key is PEM `ENCRYPTED COSIGN PRIVATE
//! KEY` (or cosign ≥ 2.1's `ENCRYPTED SIGSTORE PRIVATE KEY`) around the
//! base64 of `{"kdf":{"name":"scrypt","params":{"N","r","p"},"salt"},
//! "cipher":{"name":"nacl/secretbox","nonce"},"ciphertext"}`: a 32-byte key
//! from scrypt(password, salt), NaCl secretbox (XSalsa20-Poly1305, tag
//! first) over the PKCS#8 DER of an ECDSA P-256 key. kiln writes the COSIGN
//! label with N=32768, r=8, p=1, which every cosign and every
//! sigstore-capable containers/image reads; it reads both labels and the
//! three parameter sets go-securesystemslib accepts (anything else is
//! refused: a tampered N would make scrypt eat memory). The public key is
//! PEM `PUBLIC KEY` (SPKI), as `openssl pkey -pubout` writes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding,
};
use poly1305::Poly1305;
use poly1305::universal_hash::KeyInit as _;
use salsa20::XSalsa20;
use salsa20::cipher::{KeyIvInit as _, StreamCipher as _};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The label kiln writes (read by every cosign and containers/image).
pub const LABEL_COSIGN: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// cosign ≥ 2.1's label, read too.
pub const LABEL_SIGSTORE: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The most bytes of a key file kiln reads.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// scrypt log2(N) values accepted (N = 32768, 65536, 131072), r = 8, p = 1.
const ACCEPTED_LOG_N: [u8; 3] = [15, 16, 17];

#[derive(Serialize, Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// A PEM block: (label, decoded body). Headers (RFC 1421) are refused.
pub fn pem_decode(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let end = body_start.find(&end_marker)?;
    let body: String = body_start[..end].split_whitespace().collect();
    if body.contains(':') {
        return None;
    }
    Some((label, STANDARD.decode(body.as_bytes()).ok()?))
}

/// PEM with 64-column lines, as Go's encoding/pem writes.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// NaCl secretbox seal: tag(16) ‖ ciphertext.
fn secretbox_seal(key: &[u8; 32], nonce: &[u8; 24], msg: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 32 + msg.len()];
    buf[32..].copy_from_slice(msg);
    XSalsa20::new(key.into(), nonce.into()).apply_keystream(&mut buf);
    let otk: [u8; 32] = buf[..32].try_into().expect("32 bytes");
    let tag = Poly1305::new(&otk.into()).compute_unpadded(&buf[32..]);
    let mut out = tag.to_vec();
    out.extend_from_slice(&buf[32..]);
    out
}

/// NaCl secretbox open; None when the tag does not match (wrong password).
fn secretbox_open(key: &[u8; 32], nonce: &[u8; 24], boxed: &[u8]) -> Option<Vec<u8>> {
    if boxed.len() < 16 {
        return None;
    }
    let (tag, ct) = boxed.split_at(16);
    let mut buf = vec![0u8; 32 + ct.len()];
    buf[32..].copy_from_slice(ct);
    let mut stream = XSalsa20::new(key.into(), nonce.into());
    let mut otk = [0u8; 32];
    stream.apply_keystream(&mut otk);
    let want = Poly1305::new(&otk.into()).compute_unpadded(ct);
    // Constant time: every byte compared whatever the first difference.
    if want.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
        return None;
    }
    let mut out = ct.to_vec();
    stream.apply_keystream(&mut out);
    Some(out)
}

fn derive(password: &[u8], salt: &[u8], log_n: u8) -> Result<[u8; 32]> {
    let params = scrypt::Params::new(log_n, 8, 1).map_err(|e| Error::invalid("key", "scrypt", e.to_string()))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).map_err(|e| Error::invalid("key", "scrypt", e.to_string()))?;
    Ok(key)
}

/// An ECDSA P-256 private key.
pub struct PrivateKey(SigningKey);

/// An ECDSA P-256 public key.
#[derive(Debug, Clone)]
pub struct PublicKey(VerifyingKey);

impl PrivateKey {
    /// A new random key (the operating system's RNG).
    pub fn generate() -> PrivateKey {
        use p256::elliptic_curve::Generate as _;
        PrivateKey(SigningKey::generate())
    }

    /// Reads a cosign private key file's text with `password`. `what` names
    /// the file in errors.
    pub fn decrypt(pem: &str, password: &[u8], what: &str) -> Result<PrivateKey> {
        let bad = |m: &str| Error::invalid("key", what, m.to_string());
        let (label, body) =
            pem_decode(pem).ok_or_else(|| bad("not a PEM file; expected a cosign private key (cosign.key)"))?;
        if label != LABEL_COSIGN && label != LABEL_SIGSTORE {
            return Err(bad(&format!(
                "a PEM `{label}`, not `{LABEL_COSIGN}`; kiln signs with cosign's encrypted key format (`kiln generate-key-pair` makes one)"
            )));
        }
        let enc: Encrypted =
            serde_json::from_slice(&body).map_err(|e| bad(&format!("not cosign's encrypted key JSON: {e}")))?;
        if enc.kdf.name != "scrypt" || enc.cipher.name != "nacl/secretbox" {
            return Err(bad("only scrypt with nacl/secretbox is supported"));
        }
        let log_n = ACCEPTED_LOG_N
            .iter()
            .copied()
            .find(|l| 1u64 << l == enc.kdf.params.n)
            .filter(|_| enc.kdf.params.r == 8 && enc.kdf.params.p == 1)
            .ok_or_else(|| bad("its scrypt parameters are not one of cosign's (N 32768/65536/131072, r 8, p 1)"))?;
        let nonce: [u8; 24] = enc
            .cipher
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| bad("the nonce is not 24 bytes"))?;
        let key = derive(password, &enc.kdf.salt, log_n)?;
        let der = secretbox_open(&key, &nonce, &enc.ciphertext)
            .ok_or_else(|| bad("the password is wrong (COSIGN_PASSWORD), or the file is damaged"))?;
        let sk = SigningKey::from_pkcs8_der(&der)
            .map_err(|_| bad("the decrypted key is not a PKCS#8 ECDSA P-256 key (kiln signs with P-256 only)"))?;
        Ok(PrivateKey(sk))
    }

    /// The encrypted PEM (COSIGN label, N=32768, r=8, p=1).
    pub fn encrypt(&self, password: &[u8]) -> Result<String> {
        use rand::RngCore as _;
        let der = self
            .0
            .to_pkcs8_der()
            .map_err(|e| Error::invalid("key", "PKCS#8", e.to_string()))?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut salt);
        rand::rng().fill_bytes(&mut nonce);
        let key = derive(password, &salt, 15)?;
        let enc = Encrypted {
            kdf: Kdf {
                name: "scrypt".into(),
                params: KdfParams { n: 32768, r: 8, p: 1 },
                salt: salt.to_vec(),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: nonce.to_vec(),
            },
            ciphertext: secretbox_seal(&key, &nonce, der.as_bytes()),
        };
        let json = serde_json::to_vec(&enc).expect("serializable");
        Ok(pem_encode(LABEL_COSIGN, &json))
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// ECDSA P-256 over SHA-256 of `payload`, ASN.1 DER. Deterministic
    /// (RFC 6979): the same key and payload give the same signature.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let sig: Signature = self.0.sign(payload);
        let der: DerSignature = sig.to_der();
        der.as_bytes().to_vec()
    }
}

impl PublicKey {
    /// From PEM `PUBLIC KEY` (SPKI).
    pub fn from_pem(pem: &str, what: &str) -> Result<PublicKey> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|_| Error::invalid("key", what, "not a PEM `PUBLIC KEY` of an ECDSA P-256 key (cosign.pub)"))
    }

    /// PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key always encodes")
    }

    /// Whether `der` is this key's ECDSA signature over `payload` (SHA-256).
    pub fn verify(&self, payload: &[u8], der: &[u8]) -> bool {
        match Signature::from_der(der) {
            Ok(sig) => self.0.verify(payload, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secretbox_round_trips_and_refuses_a_wrong_key() {
        let (k, n) = ([7u8; 32], [9u8; 24]);
        let sealed = secretbox_seal(&k, &n, b"hello");
        assert_eq!(sealed.len(), 16 + 5);
        assert_eq!(secretbox_open(&k, &n, &sealed).unwrap(), b"hello");
        assert!(secretbox_open(&[8u8; 32], &n, &sealed).is_none());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(secretbox_open(&k, &n, &bad).is_none());
        assert!(secretbox_open(&k, &n, &sealed[..10]).is_none());
    }

    #[test]
    fn key_files_round_trip_sign_and_verify() {
        let k = PrivateKey::generate();
        let pem = k.encrypt(b"pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n"));
        let back = PrivateKey::decrypt(&pem, b"pw", "k").unwrap();
        assert_eq!(back.public().to_pem(), k.public().to_pem());
        let err = PrivateKey::decrypt(&pem, b"nope", "k").err().unwrap().to_string();
        assert!(err.contains("password is wrong"), "{err}");
        let sig = k.sign(b"payload");
        assert_eq!(sig, k.sign(b"payload"), "RFC 6979: deterministic");
        let public = PublicKey::from_pem(&k.public().to_pem(), "p").unwrap();
        assert!(public.verify(b"payload", &sig));
        assert!(!public.verify(b"payload2", &sig));
        assert!(!public.verify(b"payload", b"garbage"));
    }

    #[test]
    fn hostile_key_files_are_errors() {
        let k = PrivateKey::generate();
        let pem = k.encrypt(b"").unwrap();
        let (_, body) = pem_decode(&pem).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // An attacker's N would make scrypt allocate gigabytes.
        v["kdf"]["params"]["N"] = serde_json::json!(1u64 << 30);
        let evil = pem_encode(LABEL_COSIGN, &serde_json::to_vec(&v).unwrap());
        assert!(PrivateKey::decrypt(&evil, b"", "k").is_err());
        for junk in [
            "",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n!!\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n",
        ] {
            assert!(PrivateKey::decrypt(junk, b"", "k").is_err(), "{junk}");
        }
        assert!(PublicKey::from_pem("nope", "p").is_err());
    }
}
