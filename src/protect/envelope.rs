//! The ciphertext envelope of one protected field, and the AEAD that seals and opens it.
//!
//! A protected field's value on the topic is a JSON string:
//!
//! ```text
//! mg1:<kid>:<base64url, no padding, of nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)>
//! ```
//!
//! - **Cipher:** AES-256-GCM (ring). The key is the data key named by `kid` (see `keys`).
//! - **Plaintext:** the field's value as it was written, as JSON text (`"a@b.example"` with its
//!   quotes, `42`, `{"x": 1}`), so that decryption gives back the exact bytes.
//! - **Associated data:** `meshgate/pii/v1`, the topic, the field's dotted path and the kid,
//!   joined by `\n`. A ciphertext moved to another field, topic or key does not open.
//! - **Nonce:** unique under its key: 4 bytes chosen at random when the key is made and a 64-bit
//!   count of the fields it sealed (a random-mode key seals only in the gateway process that made
//!   it; see `keys`); in deterministic mode the first 12 bytes of
//!   HMAC-SHA256(nonce key, associated data ‖ plaintext), where the nonce key is
//!   HMAC-SHA256(data key, `meshgate/siv`). Equal plaintexts of one field under one key then give
//!   equal envelopes (joinable, usable as a key) and that equality is all it leaks: which records
//!   share a value, and so how often each value occurs.
//!
//! `kid` is `[0-9a-z.]{1,40}`. An independent implementation needs only this comment and the
//! data key (`tests/e2e/pii_envelope.py` is one).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use smallvec::SmallVec;

/// What every envelope starts with.
pub const PREFIX: &str = "mg1:";
const TAG_LEN: usize = 16;
const MAX_KID: usize = 40;

/// A data key ready to seal and open fields.
pub struct Cipher {
    key: LessSafeKey,
    siv: hmac::Key,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

/// Why a field did not open (the message never carries a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a meshgate envelope")]
    NotEnvelope,
    #[error("the envelope does not authenticate under its key")]
    Forged,
}

/// Where a field's value lives: the associated data of its envelope.
#[derive(Debug, Clone, Copy)]
pub struct FieldAt<'a> {
    pub topic: &'a str,
    pub path: &'a str,
}

fn aad(at: FieldAt<'_>, kid: &str) -> SmallVec<[u8; 192]> {
    let mut a = SmallVec::new();
    a.extend_from_slice(b"meshgate/pii/v1\n");
    a.extend_from_slice(at.topic.as_bytes());
    a.push(b'\n');
    a.extend_from_slice(at.path.as_bytes());
    a.push(b'\n');
    a.extend_from_slice(kid.as_bytes());
    a
}

/// Whether `kid` is a key id an envelope may carry.
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID
        && kid
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'.')
}

/// An envelope's parts, borrowed from the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub kid: &'a str,
    pub sealed: &'a str,
}

/// Splits `mg1:<kid>:<sealed>`, checking the shape only (no key needed): what
/// `require_encrypted` accepts. The sealed part must decode to at least a nonce and a tag.
pub fn parse(text: &str) -> Option<Parsed<'_>> {
    let rest = text.strip_prefix(PREFIX)?;
    let (kid, sealed) = rest.split_once(':')?;
    if !valid_kid(kid) {
        return None;
    }
    let decoded_len = sealed.len() * 3 / 4;
    if decoded_len < NONCE_LEN + TAG_LEN
        || !sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || sealed.len() % 4 == 1
    {
        return None;
    }
    Some(Parsed { kid, sealed })
}

impl Cipher {
    /// A cipher for a 32-byte data key.
    pub fn new(data_key: &[u8; 32]) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, data_key).expect("32 bytes"));
        let mac = hmac::Key::new(hmac::HMAC_SHA256, data_key);
        let siv = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&mac, b"meshgate/siv").as_ref(),
        );
        Self { key, siv }
    }

    /// The envelope of `plaintext` (a JSON value's text) at `at`, under key `kid`, with a
    /// random nonce or (`deterministic`) one derived from the value.
    pub fn seal(
        &self,
        kid: &str,
        at: FieldAt<'_>,
        plaintext: &[u8],
        deterministic: bool,
    ) -> String {
        let nonce = if deterministic {
            NonceFrom::Value
        } else {
            let mut n = [0u8; NONCE_LEN];
            SystemRandom::new()
                .fill(&mut n)
                .expect("the system random source");
            NonceFrom::Given(n)
        };
        let mut out = Vec::new();
        self.seal_into(kid, at, plaintext, nonce, &mut out);
        String::from_utf8(out).expect("an envelope is ASCII")
    }

    /// Appends the envelope of `plaintext` at `at`, under key `kid`, to `out` (no allocation
    /// for fields up to about 200 bytes).
    pub fn seal_into(
        &self,
        kid: &str,
        at: FieldAt<'_>,
        plaintext: &[u8],
        nonce: NonceFrom,
        out: &mut Vec<u8>,
    ) {
        let aad = aad(at, kid);
        let nonce = match nonce {
            NonceFrom::Given(n) => n,
            NonceFrom::Value => {
                let mut ctx = hmac::Context::with_key(&self.siv);
                ctx.update(&aad);
                ctx.update(plaintext);
                let mut n = [0u8; NONCE_LEN];
                n.copy_from_slice(&ctx.sign().as_ref()[..NONCE_LEN]);
                n
            }
        };
        let mut buf: SmallVec<[u8; 256]> = SmallVec::new();
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut buf[NONCE_LEN..],
            )
            .expect("AES-GCM seals any length meshgate hands it");
        buf.extend_from_slice(tag.as_ref());
        out.extend_from_slice(PREFIX.as_bytes());
        out.extend_from_slice(kid.as_bytes());
        out.push(b':');
        let start = out.len();
        out.resize(start + buf.len().div_ceil(3) * 4, 0);
        let written = URL_SAFE_NO_PAD
            .encode_slice(&buf, &mut out[start..])
            .expect("sized for base64");
        out.truncate(start + written);
    }

    /// The plaintext of an envelope sealed at `at`.
    pub fn open(&self, parsed: Parsed<'_>, at: FieldAt<'_>) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::new();
        self.open_into(parsed, at, &mut out)?;
        Ok(out)
    }

    /// Appends the plaintext of an envelope sealed at `at` to `out` (nothing on error).
    pub fn open_into(
        &self,
        parsed: Parsed<'_>,
        at: FieldAt<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let mut buf: SmallVec<[u8; 256]> = SmallVec::new();
        buf.resize(parsed.sealed.len() * 3 / 4 + 3, 0);
        let n = URL_SAFE_NO_PAD
            .decode_slice(parsed.sealed, &mut buf[..])
            .map_err(|_| OpenError::NotEnvelope)?;
        buf.truncate(n);
        if buf.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::NotEnvelope);
        }
        let nonce: [u8; NONCE_LEN] = buf[..NONCE_LEN].try_into().expect("12 bytes");
        let aad = aad(at, parsed.kid);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut buf[NONCE_LEN..],
            )
            .map_err(|_| OpenError::Forged)?;
        out.extend_from_slice(plain);
        Ok(())
    }
}

/// Where a seal's nonce comes from.
#[derive(Debug, Clone, Copy)]
pub enum NonceFrom {
    /// This nonce, unique under the key (random mode: see `keys::DataKey`).
    Given([u8; NONCE_LEN]),
    /// Derived from the value (deterministic mode).
    Value,
}

/// A key-encryption step shared by the local KMS backend: AES-256-GCM of a data key under a
/// key-encryption key, with a random nonce, bound to `context`. Output: nonce ‖ ciphertext ‖ tag.
pub fn wrap_key(kek: &[u8; 32], data_key: &[u8; 32], context: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).expect("32 bytes"));
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system random source");
    let mut buf = nonce.to_vec();
    buf.extend_from_slice(data_key);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut buf[NONCE_LEN..],
        )
        .expect("32 bytes seal");
    buf.extend_from_slice(tag.as_ref());
    buf
}

/// The inverse of [`wrap_key`]; `None` when it does not authenticate.
pub fn unwrap_key(kek: &[u8; 32], wrapped: &[u8], context: &[u8]) -> Option<[u8; 32]> {
    if wrapped.len() != NONCE_LEN + 32 + TAG_LEN {
        return None;
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).expect("32 bytes"));
    let nonce: [u8; NONCE_LEN] = wrapped[..NONCE_LEN].try_into().ok()?;
    let mut buf = wrapped[NONCE_LEN..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut buf,
        )
        .ok()?;
    plain.try_into().ok()
}

/// 32 random bytes: a new data key.
pub fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    SystemRandom::new()
        .fill(&mut k)
        .expect("the system random source");
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: FieldAt<'static> = FieldAt {
        topic: "payments.v1",
        path: "customer.email",
    };

    #[test]
    fn a_sealed_field_opens_to_its_exact_text_and_only_where_it_was_sealed() {
        let c = Cipher::new(&[7; 32]);
        let env = c.seal("20261201.ab", AT, br#""a@b.example""#, false);
        assert!(env.starts_with("mg1:20261201.ab:"), "{env}");
        let p = parse(&env).unwrap();
        assert_eq!(p.kid, "20261201.ab");
        assert_eq!(c.open(p, AT).unwrap(), br#""a@b.example""#);
        // Another field, topic or key id: does not open.
        let other = FieldAt {
            path: "customer.phone",
            ..AT
        };
        assert_eq!(c.open(p, other), Err(OpenError::Forged));
        let moved = env.replace("20261201.ab", "20261201.ac");
        assert_eq!(c.open(parse(&moved).unwrap(), AT), Err(OpenError::Forged));
        assert_eq!(Cipher::new(&[8; 32]).open(p, AT), Err(OpenError::Forged));
        // Random nonces: two seals differ.
        assert_ne!(env, c.seal("20261201.ab", AT, br#""a@b.example""#, false));
    }

    #[test]
    fn deterministic_seals_are_equal_for_equal_values_and_differ_otherwise() {
        let c = Cipher::new(&[1; 32]);
        let a = c.seal("d.1", AT, b"\"x\"", true);
        assert_eq!(a, c.seal("d.1", AT, b"\"x\"", true));
        assert_ne!(a, c.seal("d.1", AT, b"\"y\"", true));
        let elsewhere = FieldAt {
            path: "other",
            ..AT
        };
        assert_ne!(a, c.seal("d.1", elsewhere, b"\"x\"", true));
        assert_eq!(c.open(parse(&a).unwrap(), AT).unwrap(), b"\"x\"");
    }

    #[test]
    fn the_shape_check_refuses_what_is_not_an_envelope() {
        let c = Cipher::new(&[2; 32]);
        let env = c.seal("k", AT, b"1", false);
        assert!(parse(&env).is_some());
        for bad in [
            "a@b.example",
            "mg1:",
            "mg1:k",
            "mg1:K:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "mg1:k:short",
            "mg1:k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
            "mg2:k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            c.open(
                parse("mg1:k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap(),
                AT
            ),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn a_wrapped_key_unwraps_under_its_kek_and_context_only() {
        let dek = random_key();
        let w = wrap_key(&[3; 32], &dek, b"t\nk");
        assert_eq!(unwrap_key(&[3; 32], &w, b"t\nk"), Some(dek));
        assert_eq!(unwrap_key(&[4; 32], &w, b"t\nk"), None);
        assert_eq!(unwrap_key(&[3; 32], &w, b"t\nj"), None);
        assert_eq!(unwrap_key(&[3; 32], &w[1..], b"t\nk"), None);
    }
}
