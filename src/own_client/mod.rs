//! meshgate's own connections to the cluster, as a Kafka client in its own name: the dead-letter
//! producer and `meshgate replay`. A client's credentials are never reused for them; they
//! authenticate with what the gateway config (or the command line) gives: TLS with an optional
//! client certificate, and SASL/PLAIN or SCRAM-SHA-256/512.
//!
//! A [`Conn`] is one request at a time: it sends a request and reads its response. Versions are
//! negotiated once per connection with ApiVersions.

pub mod batch;
pub mod producer;
pub mod scram;
pub mod spool;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::net::TcpStream;

use crate::protocol::client::{call, CallError};
use crate::protocol::stream::Stream;

/// A SASL mechanism meshgate can authenticate its own connections with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// From its Kafka name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`), any case.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// SASL credentials. Debug never shows the password.
#[derive(Clone)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How meshgate's own connections reach the cluster.
#[derive(Clone)]
pub struct Settings {
    /// TLS to every broker (with meshgate's client certificate, when one is configured).
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub sasl: Option<Sasl>,
    pub connect_timeout: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tls: None,
            sasl: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}: connect timed out")]
    Timeout(String),
    #[error("{addr}: TLS: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}: not a host name for TLS")]
    ServerName(String),
    #[error("{addr}: SASL/{mechanism} authentication failed: error code {code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Auth {
        addr: String,
        mechanism: &'static str,
        code: i16,
        message: Option<String>,
    },
    #[error("{addr}: SASL/{mechanism}: {source}")]
    Scram {
        addr: String,
        mechanism: &'static str,
        source: scram::ScramError,
    },
    #[error("{addr}: ApiVersions error code {code}")]
    Versions { addr: String, code: i16 },
    #[error("{addr}: {source}")]
    Call { addr: String, source: CallError },
}

/// One connection to one broker.
pub struct Conn {
    stream: Stream,
    correlation: i32,
    /// The broker's highest version of each API, from ApiVersions.
    versions: HashMap<i16, (i16, i16)>,
    pub addr: String,
}

impl Conn {
    /// Connects, negotiates versions and authenticates.
    pub async fn connect(addr: &str, settings: &Settings) -> Result<Conn, ClientError> {
        let stream = tokio::time::timeout(settings.connect_timeout, open(addr, settings))
            .await
            .map_err(|_| ClientError::Timeout(addr.to_string()))??;
        let mut conn = Conn {
            stream,
            correlation: 0,
            versions: HashMap::new(),
            addr: addr.to_string(),
        };
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("meshgate");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let resp = conn.call_at(3, &req).await?;
        if resp.error_code != 0 {
            return Err(ClientError::Versions {
                addr: addr.to_string(),
                code: resp.error_code,
            });
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(sasl) = &settings.sasl {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }

    /// The version to speak for `Req`: the highest both sides know, at most `ours`; `None` when
    /// the broker does not offer the API in a range that meets meshgate's.
    pub fn version<Req: Request>(&self, ours: i16) -> Option<i16> {
        let (min, max) = *self.versions.get(&Req::KEY)?;
        let theirs = max.min(ours);
        (theirs >= min).then_some(theirs)
    }

    /// Sends `req` at the negotiated version (at most `ours`) and reads its response.
    pub async fn call<Req: Request>(
        &mut self,
        ours: i16,
        req: &Req,
    ) -> Result<(i16, Req::Response), ClientError> {
        let version = self.version::<Req>(ours).ok_or_else(|| ClientError::Call {
            addr: self.addr.clone(),
            source: CallError::UnknownApi(Req::KEY),
        })?;
        Ok((version, self.call_at(version, req).await?))
    }

    /// Sends `req` at `version` and reads its response.
    pub async fn call_at<Req: Request>(
        &mut self,
        version: i16,
        req: &Req,
    ) -> Result<Req::Response, ClientError> {
        self.correlation = self.correlation.wrapping_add(1);
        call(&mut self.stream, self.correlation, version, req)
            .await
            .map_err(|source| ClientError::Call {
                addr: self.addr.clone(),
                source,
            })
    }

    /// SaslHandshake v1, then the mechanism's SaslAuthenticate v2 exchange.
    async fn authenticate(&mut self, sasl: &Sasl) -> Result<(), ClientError> {
        let mechanism = sasl.mechanism.name();
        let refused = |addr: &str, code, message: Option<StrBytes>| ClientError::Auth {
            addr: addr.to_string(),
            mechanism,
            code,
            message: message.map(|m| m.to_string()),
        };
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = StrBytes::from_static_str(mechanism);
        let answer = self.call_at(1, &hs).await?;
        if answer.error_code != 0 {
            return Err(refused(&self.addr, answer.error_code, None));
        }
        let step = |bytes: Vec<u8>| {
            let mut auth = SaslAuthenticateRequest::default();
            auth.auth_bytes = Bytes::from(bytes);
            auth
        };
        match sasl.mechanism {
            Mechanism::Plain => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password).into_bytes();
                let answer = self.call_at(2, &step(token)).await?;
                if answer.error_code != 0 {
                    return Err(refused(&self.addr, answer.error_code, answer.error_message));
                }
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let scram_err = |addr: &str, source| ClientError::Scram {
                    addr: addr.to_string(),
                    mechanism,
                    source,
                };
                let mut exchange =
                    scram::Scram::new(sasl.mechanism, &sasl.username, &sasl.password);
                let first = self.call_at(2, &step(exchange.client_first())).await?;
                if first.error_code != 0 {
                    return Err(refused(&self.addr, first.error_code, first.error_message));
                }
                let last = exchange
                    .client_final(&first.auth_bytes)
                    .map_err(|e| scram_err(&self.addr, e))?;
                let answer = self.call_at(2, &step(last)).await?;
                if answer.error_code != 0 {
                    return Err(refused(&self.addr, answer.error_code, answer.error_message));
                }
                exchange
                    .verify_server_final(&answer.auth_bytes)
                    .map_err(|e| scram_err(&self.addr, e))?;
            }
        }
        Ok(())
    }
}

/// TCP, then TLS when configured (the broker's certificate must name the host dialled).
async fn open(addr: &str, settings: &Settings) -> Result<Stream, ClientError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &settings.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let host = crate::protocol::split_host_port(addr)
        .map(|(h, _)| h.to_string())
        .ok_or_else(|| ClientError::ServerName(addr.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|_| ClientError::ServerName(addr.to_string()))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|source| ClientError::Tls {
            addr: addr.to_string(),
            source,
        })?;
    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(
        stream,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_spoken_is_the_highest_both_sides_know() {
        use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest};
        // Only the negotiation is looked at: a connection that is never used.
        let conn = |versions: &[(i16, (i16, i16))]| Conn {
            stream: crate::protocol::stream::Stream::Plain(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                        TcpStream::connect(l.local_addr().unwrap()).await.unwrap()
                    }),
            ),
            correlation: 0,
            versions: versions.iter().copied().collect(),
            addr: "test".into(),
        };
        let c = conn(&[(0, (3, 11)), (22, (0, 2))]);
        assert_eq!(c.version::<ProduceRequest>(9), Some(9), "ours is lower");
        assert_eq!(c.version::<ProduceRequest>(12), Some(11), "theirs is lower");
        assert_eq!(c.version::<InitProducerIdRequest>(4), Some(2));
        let old = conn(&[(0, (10, 11))]);
        assert_eq!(
            old.version::<ProduceRequest>(9),
            None,
            "no version in common"
        );
        assert_eq!(old.version::<InitProducerIdRequest>(4), None, "not offered");
    }

    #[test]
    fn mechanisms_are_named_as_kafka_names_them_and_passwords_never_print() {
        assert_eq!(
            Mechanism::from_name("scram-sha-512"),
            Some(Mechanism::ScramSha512)
        );
        assert_eq!(Mechanism::from_name("PLAIN"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
        let s = Sasl {
            mechanism: Mechanism::Plain,
            username: "meshgate".into(),
            password: "s3cret-value".into(),
        };
        let shown = format!(
            "{s:?} {:?}",
            Settings {
                sasl: Some(s.clone()),
                ..Settings::default()
            }
        );
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("meshgate"));
    }
}
