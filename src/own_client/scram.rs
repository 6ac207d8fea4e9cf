//! The client side of SCRAM (RFC 5802, with SHA-256 and SHA-512 as Kafka offers them, RFC 7677),
//! for meshgate's own connections. No channel binding (`n,,`), as Kafka does not offer it.

use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};

use super::Mechanism;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a SCRAM exchange failed on the client side.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("the server's first message is malformed: {0}")]
    ServerFirst(&'static str),
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error("the server asks for {0} iterations (at least 4096 are expected)")]
    Iterations(u32),
    #[error("the server's final message is malformed or reports an error: {0}")]
    ServerFinal(String),
    #[error("the server's signature does not match: it does not know the password")]
    Signature,
}

/// One exchange, from the client's first message to the check of the server's signature.
pub struct Scram {
    mechanism: Mechanism,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// Starts an exchange with a fresh random nonce.
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> Self {
        let mut raw = [0u8; 24];
        // SystemRandom fails only on a platform without a random source: then the nonce is
        // predictable but the exchange still authenticates (the password is never sent).
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        Self::with_nonce(mechanism, user, password, &B64.encode(raw))
    }

    fn with_nonce(mechanism: Mechanism, user: &str, password: &str, nonce: &str) -> Self {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        Scram {
            mechanism,
            password: password.to_string(),
            client_nonce: nonce.to_string(),
            client_first_bare: format!("n={name},r={nonce}"),
            server_signature: None,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message, answering the server-first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::ServerFirst("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(ScramError::ServerFirst("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::ServerFirst("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = B64
            .decode(salt.ok_or(ScramError::ServerFirst("no salt"))?)
            .map_err(|_| ScramError::ServerFirst("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::ServerFirst("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::ServerFirst("iteration count is not a number"))?;
        if !(4096..=1_000_000).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let (pbkdf, hmac_alg, hash, len) = match self.mechanism {
            Mechanism::ScramSha256 => (
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
                32,
            ),
            Mechanism::ScramSha512 => (
                pbkdf2::PBKDF2_HMAC_SHA512,
                hmac::HMAC_SHA512,
                &digest::SHA512,
                64,
            ),
            Mechanism::Plain => unreachable!("SCRAM is never run for PLAIN"),
        };
        let mut salted = vec![0u8; len];
        let rounds = std::num::NonZeroU32::new(iterations).expect("at least 4096");
        pbkdf2::derive(pbkdf, rounds, &salt, self.password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(hmac_alg, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(
            &hmac::Key::new(hmac_alg, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac_alg, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it knows the password too.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = String::from_utf8_lossy(server_final);
        let Some(v) = text.strip_prefix("v=") else {
            return Err(ScramError::ServerFinal(text.chars().take(80).collect()));
        };
        let got = B64
            .decode(v.split(',').next().unwrap_or(""))
            .map_err(|_| ScramError::ServerFinal("signature is not base64".into()))?;
        match &self.server_signature {
            Some(expected) if *expected == got => Ok(()),
            _ => Err(ScramError::Signature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn the_rfc_7677_exchange_is_reproduced_and_verified() {
        let mut s = Scram::with_nonce(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        );
        assert_eq!(s.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = s.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            s.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::Signature)
        );
        assert!(matches!(
            s.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::ServerFinal(_))
        ));
    }

    #[test]
    fn a_server_that_does_not_extend_the_nonce_or_skimps_on_iterations_is_refused() {
        let mut s = Scram::with_nonce(Mechanism::ScramSha512, "a=b,c", "pw", "abc");
        assert_eq!(s.client_first(), b"n,,n=a=3Db=2Cc,r=abc");
        assert_eq!(
            s.client_final(b"r=xyz123,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        );
        assert_eq!(
            s.client_final(b"r=abc,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        );
        assert_eq!(
            s.client_final(b"r=abcdef,s=AAAA,i=1"),
            Err(ScramError::Iterations(1))
        );
        assert_eq!(
            s.client_final(b"r=abcdef,i=4096"),
            Err(ScramError::ServerFirst("no salt"))
        );
        assert!(s.client_final(b"r=abcdef,s=AAAA,i=4096").is_ok());
    }
}
