//! Who is at the other end of a client connection, as policies see it.
//!
//! The principal starts as the TLS client certificate's (`User:<CN>`, mutual TLS) or
//! `User:ANONYMOUS`. SASL replaces it, as Kafka's does on a SASL_SSL listener, but only once the
//! broker has accepted the authentication: meshgate never decides whether a password is right, it
//! reads the name the mechanism reveals and waits for the broker's verdict.
//!
//! - **PLAIN**: the authentication bytes are `authzid NUL authcid NUL password`; the principal is
//!   `User:<authcid>` (Kafka refuses an authzid that differs from it).
//! - **SCRAM-SHA-256/512**: the client-first message carries `n=<name>`; the principal is
//!   `User:<name>` once the broker answers the client-final message without error.
//! - **Other mechanisms** (OAUTHBEARER, GSSAPI) are forwarded, but reveal no name meshgate reads:
//!   the principal stays what it was, so owner-only topics refuse them.
//!
//! Nothing from the authentication bytes but the name is kept, and nothing at all is logged.

use std::sync::{Arc, Mutex, PoisonError};

/// The principal of a connection that has not authenticated.
pub use crate::policy::ANONYMOUS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Plain,
    Scram,
    Other,
}

#[derive(Debug, Default)]
struct Sasl {
    mechanism: Option<Mechanism>,
    /// The SCRAM name from the client-first message, until the exchange completes.
    pending: Option<Arc<str>>,
}

/// What the broker's answer to one SaslAuthenticate request settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslStep {
    /// The name to adopt if the broker accepts, when this answer completes the exchange.
    completes_as: Option<Arc<str>>,
    /// SCRAM's server-final message must also say `v=` (a verifier), not `e=` (an error), which
    /// some brokers send with error code 0.
    scram_final: bool,
}

impl SaslStep {
    /// Whether the broker's answer to this step ends the exchange with a named principal.
    pub fn completes(&self) -> bool {
        self.completes_as.is_some()
    }
}

/// One client connection's identity.
#[derive(Debug)]
pub struct Identity {
    principal: Mutex<Arc<str>>,
    sasl: Mutex<Sasl>,
    /// The client's address, for audit events.
    peer: Option<std::net::SocketAddr>,
}

impl Identity {
    /// `tls_principal`: from the client certificate, under mutual TLS.
    pub fn new(tls_principal: Option<String>) -> Self {
        Identity {
            principal: Mutex::new(tls_principal.map_or_else(|| ANONYMOUS.into(), Into::into)),
            sasl: Mutex::new(Sasl::default()),
            peer: None,
        }
    }

    /// The identity of a connection from `peer`.
    pub fn from_peer(mut self, peer: std::net::SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    /// The principal policies judge this connection's requests as.
    pub fn principal(&self) -> Arc<str> {
        self.principal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A SaslHandshake request named `mechanism`: a new exchange begins.
    pub fn on_handshake(&self, mechanism: &str) {
        let m = match mechanism {
            "PLAIN" => Mechanism::Plain,
            m if m.starts_with("SCRAM-SHA-") => Mechanism::Scram,
            _ => Mechanism::Other,
        };
        *self.sasl.lock().unwrap_or_else(PoisonError::into_inner) = Sasl {
            mechanism: Some(m),
            pending: None,
        };
    }

    /// A SaslAuthenticate request carrying `auth_bytes`: what its answer will settle.
    pub fn on_authenticate(&self, auth_bytes: &[u8]) -> SaslStep {
        let mut sasl = self.sasl.lock().unwrap_or_else(PoisonError::into_inner);
        let scram_final = sasl.mechanism == Some(Mechanism::Scram) && sasl.pending.is_some();
        let completes_as = match sasl.mechanism {
            Some(Mechanism::Plain) => plain_user(auth_bytes).map(Into::into),
            Some(Mechanism::Scram) => match sasl.pending.take() {
                // The client-final message: its answer completes the exchange.
                Some(name) => Some(name),
                None => {
                    sasl.pending = scram_user(auth_bytes).map(Into::into);
                    None
                }
            },
            Some(Mechanism::Other) | None => None,
        };
        SaslStep {
            completes_as,
            scram_final,
        }
    }

    /// The broker answered a SaslAuthenticate request with `error_code` and `auth_bytes`.
    /// Returns the new principal when this answer completed a successful exchange.
    pub fn on_authenticated(
        &self,
        step: SaslStep,
        error_code: i16,
        auth_bytes: &[u8],
    ) -> Option<Arc<str>> {
        if error_code != 0 || (step.scram_final && !auth_bytes.starts_with(b"v=")) {
            *self.sasl.lock().unwrap_or_else(PoisonError::into_inner) = Sasl::default();
            return None;
        }
        let principal: Arc<str> = format!("User:{}", step.completes_as?).into();
        *self
            .principal
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = principal.clone();
        Some(principal)
    }
}

/// PLAIN: `authzid NUL authcid NUL password` → authcid.
fn plain_user(bytes: &[u8]) -> Option<String> {
    let mut parts = bytes.splitn(3, |b| *b == 0);
    let _authzid = parts.next()?;
    let authcid = parts.next()?;
    parts.next()?; // the password must be there; it is not looked at
    let name = std::str::from_utf8(authcid).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// SCRAM client-first: `gs2-header client-first-bare`, e.g. `n,,n=alice,r=nonce` → alice, with
/// RFC 5802's `=2C` and `=3D` escapes undone.
fn scram_user(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    // The gs2 header is two comma-terminated fields (channel binding flag, authzid).
    let mut fields = text.splitn(3, ',');
    let _cbind = fields.next()?;
    let _authzid = fields.next()?;
    let bare = fields.next()?;
    let name = bare.split(',').find_map(|attr| attr.strip_prefix("n="))?;
    let name = name.replace("=2C", ",").replace("=3D", "=");
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_the_authentication_id_once_the_broker_agrees() {
        let id = Identity::new(None);
        id.on_handshake("PLAIN");
        let step = id.on_authenticate(b"\0alice\0alice-secret");
        assert_eq!(
            id.principal().as_ref(),
            ANONYMOUS,
            "not before the broker answers"
        );
        id.on_authenticated(step, 0, b"");
        assert_eq!(id.principal().as_ref(), "User:alice");
    }

    #[test]
    fn a_refused_authentication_changes_nothing() {
        let id = Identity::new(Some("User:from-cert".into()));
        id.on_handshake("PLAIN");
        let step = id.on_authenticate(b"\0mallory\0guess");
        id.on_authenticated(step, 58, b""); // SASL_AUTHENTICATION_FAILED
        assert_eq!(id.principal().as_ref(), "User:from-cert");
    }

    #[test]
    fn scram_completes_on_the_second_exchange() {
        let id = Identity::new(None);
        id.on_handshake("SCRAM-SHA-512");
        let first = id.on_authenticate(b"n,,n=ali=2Cce,r=fyko+d2lbbFgONRv9qkxdawL");
        id.on_authenticated(
            first,
            0,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        );
        assert_eq!(
            id.principal().as_ref(),
            ANONYMOUS,
            "server-first is not success"
        );
        let last = id.on_authenticate(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        );
        id.on_authenticated(last, 0, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
        assert_eq!(id.principal().as_ref(), "User:ali,ce");
    }

    #[test]
    fn a_scram_error_sent_with_code_zero_is_still_a_failure() {
        let id = Identity::new(None);
        id.on_handshake("SCRAM-SHA-256");
        let first = id.on_authenticate(b"n,,n=alice,r=abc");
        id.on_authenticated(first, 0, b"r=abcdef,s=c2FsdA==,i=4096");
        let last = id.on_authenticate(b"c=biws,r=abcdef,p=bm9wZQ==");
        assert_eq!(id.on_authenticated(last, 0, b"e=invalid-proof"), None);
        assert_eq!(id.principal().as_ref(), ANONYMOUS);
    }

    #[test]
    fn malformed_or_unknown_mechanisms_reveal_no_one() {
        assert_eq!(plain_user(b"no-nuls"), None);
        assert_eq!(plain_user(b"\0\0pw"), None);
        assert_eq!(scram_user(b"n,,r=nonce"), None);
        assert_eq!(scram_user(&[0xff, 0xfe]), None);
        let id = Identity::new(None);
        id.on_handshake("OAUTHBEARER");
        let step = id.on_authenticate(b"n,,\x01auth=Bearer xyz\x01\x01");
        id.on_authenticated(step, 0, b"");
        assert_eq!(id.principal().as_ref(), ANONYMOUS);
    }
}
