//! Key-encryption keys: where data keys are wrapped and unwrapped. Two backends:
//!
//! - **Local file:** a 32-byte key, base64 in a file (`head -c 32 /dev/urandom | base64`).
//!   Data keys are wrapped with AES-256-GCM under it, bound to their topic and key id.
//! - **HashiCorp Vault transit:** `POST {address}/v1/{mount}/encrypt/{key}` with the data key in
//!   base64, and `.../decrypt/{key}` to unwrap, authenticated by `X-Vault-Token` (read from a
//!   file). The key-encryption key never leaves Vault. Tested against Vault's documented HTTP
//!   API with a recorded exchange (`tests`), not a server: none can be installed on the test
//!   machine within CI's budget (ARCHITECTURE.md, "Field protection", says what was tried).
//!
//! Every call has a timeout; a failure is a [`KmsError`], which the data path answers with a
//! retriable error (produce) or a mask (fetch). Neither message carries key material.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::envelope;

/// Why a key could not be wrapped or unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    #[error("key-encryption key file {0}: {1}")]
    File(String, String),
    #[error("the wrapped data key does not unwrap under this key-encryption key")]
    Unwrap,
    #[error("Vault: no answer within {0:?}")]
    Timeout(Duration),
    #[error("Vault: {0}")]
    Transport(String),
    #[error("Vault: HTTP {0}: {1}")]
    Status(u16, String),
    #[error("Vault: unreadable answer: {0}")]
    Answer(String),
}

/// The configured key-encryption backend.
pub enum Kms {
    Local { kek: [u8; 32], path: PathBuf },
    Vault(Vault),
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// A Vault transit key.
pub struct Vault {
    /// `http://host:port`, without a trailing slash.
    address: String,
    mount: String,
    key: String,
    token: String,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

const MAX_ANSWER: usize = 64 * 1024;

impl Kms {
    /// The local backend, reading the key file now.
    pub fn local(path: &Path) -> Result<Self, KmsError> {
        let err = |m: String| KmsError::File(path.display().to_string(), m);
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|_| err("not base64".into()))?;
        let kek: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| err(format!("{} bytes, not 32", v.len())))?;
        Ok(Kms::Local {
            kek,
            path: path.to_path_buf(),
        })
    }

    /// The Vault transit backend, reading the token file now. Only `http://` in this build.
    pub fn vault(
        address: &str,
        mount: &str,
        key: &str,
        token_file: &Path,
        timeout: Duration,
    ) -> Result<Self, KmsError> {
        let token = std::fs::read_to_string(token_file)
            .map_err(|e| KmsError::File(token_file.display().to_string(), e.to_string()))?
            .trim()
            .to_string();
        if !address.starts_with("http://") {
            return Err(KmsError::Transport(format!(
                "`{address}`: only http:// is supported in this build"
            )));
        }
        Ok(Kms::Vault(Vault {
            address: address.trim_end_matches('/').to_string(),
            mount: mount.trim_matches('/').to_string(),
            key: key.to_string(),
            token,
            timeout,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }))
    }

    /// What the key files record as their wrapper.
    pub fn label(&self) -> String {
        match self {
            Kms::Local { path, .. } => format!(
                "local:{}",
                path.file_name().map_or("?".into(), |n| n.to_string_lossy())
            ),
            Kms::Vault(v) => format!("vault:{}/{}", v.mount, v.key),
        }
    }

    /// `data_key` wrapped, bound to `context` where the backend can bind it.
    pub async fn wrap(&self, data_key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, KmsError> {
        match self {
            Kms::Local { kek, .. } => Ok(envelope::wrap_key(kek, data_key, context)),
            Kms::Vault(v) => {
                let body = serde_json::json!({ "plaintext": STANDARD.encode(data_key) });
                let answer = v.call("encrypt", body).await?;
                answer
                    .pointer("/data/ciphertext")
                    .and_then(|c| c.as_str())
                    .map(|c| c.as_bytes().to_vec())
                    .ok_or_else(|| KmsError::Answer("no data.ciphertext".into()))
            }
        }
    }

    /// The data key inside `wrapped`.
    pub async fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<[u8; 32], KmsError> {
        match self {
            Kms::Local { kek, .. } => {
                envelope::unwrap_key(kek, wrapped, context).ok_or(KmsError::Unwrap)
            }
            Kms::Vault(v) => {
                let ciphertext = std::str::from_utf8(wrapped).map_err(|_| KmsError::Unwrap)?;
                let body = serde_json::json!({ "ciphertext": ciphertext });
                let answer = v.call("decrypt", body).await?;
                let plain = answer
                    .pointer("/data/plaintext")
                    .and_then(|c| c.as_str())
                    .ok_or_else(|| KmsError::Answer("no data.plaintext".into()))?;
                STANDARD
                    .decode(plain)
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or(KmsError::Unwrap)
            }
        }
    }
}

impl Vault {
    async fn call(&self, op: &str, body: serde_json::Value) -> Result<serde_json::Value, KmsError> {
        let uri = format!("{}/v1/{}/{op}/{}", self.address, self.mount, self.key);
        let request = axum::http::Request::post(uri)
            .header("X-Vault-Token", &self.token)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| KmsError::Transport(e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| KmsError::Transport(e.to_string()))?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| KmsError::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, KmsError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| KmsError::Timeout(self.timeout))??;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| KmsError::Answer(e.to_string()))?;
        if status != 200 {
            // Vault's errors are `{"errors": ["..."]}`; they name the key, never its material.
            let errors = json
                .get("errors")
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(KmsError::Status(status, errors));
        }
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_local_backend_wraps_and_unwraps_and_refuses_a_bad_key_file() {
        let dir = std::env::temp_dir().join(format!("mg-kms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek");
        std::fs::write(&path, format!("{}\n", STANDARD.encode([9u8; 32]))).unwrap();
        let kms = Kms::local(&path).unwrap();
        assert_eq!(kms.label(), "local:kek");
        let dek = envelope::random_key();
        let w = kms.wrap(&dek, b"ctx").await.unwrap();
        assert_eq!(kms.unwrap(&w, b"ctx").await.unwrap(), dek);
        assert_eq!(kms.unwrap(&w, b"other").await, Err(KmsError::Unwrap));
        std::fs::write(&path, STANDARD.encode([9u8; 16])).unwrap();
        let e = Kms::local(&path).unwrap_err().to_string();
        assert!(e.ends_with("16 bytes, not 32"), "{e}");
        std::fs::write(&path, "not base64!").unwrap();
        assert!(Kms::local(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A one-connection-per-request HTTP server answering as Vault's transit engine does
    /// (`/v1/transit/encrypt/:key` and `/decrypt/:key`, bodies and answers as in Vault's API
    /// documentation), recording what it was sent.
    async fn recorded_vault(
        answers: Vec<(u16, String)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                seen.push(String::from_utf8_lossy(&buf).to_string());
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.unwrap();
                let _ = s.shutdown().await;
            }
            seen
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn the_vault_backend_speaks_the_transit_api() {
        let dek = [5u8; 32];
        let b64 = STANDARD.encode(dek);
        // Answers in the shape of Vault's documented responses.
        let (addr, server) = recorded_vault(vec![
            (
                200,
                r#"{"request_id":"r1","lease_id":"","renewable":false,"lease_duration":0,"data":{"ciphertext":"vault:v1:abcdefgh","key_version":1},"wrap_info":null,"warnings":null,"auth":null}"#.into(),
            ),
            (
                200,
                format!(r#"{{"request_id":"r2","data":{{"plaintext":"{b64}"}}}}"#),
            ),
            (403, r#"{"errors":["permission denied"]}"#.into()),
        ])
        .await;
        let dir = std::env::temp_dir().join(format!("mg-vault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "s.testtoken\n").unwrap();
        let kms = Kms::vault(
            &addr,
            "transit",
            "meshgate",
            &dir.join("token"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(kms.label(), "vault:transit/meshgate");
        let wrapped = kms.wrap(&dek, b"ctx").await.unwrap();
        assert_eq!(wrapped, b"vault:v1:abcdefgh");
        assert_eq!(kms.unwrap(&wrapped, b"ctx").await.unwrap(), dek);
        let refused = kms.unwrap(&wrapped, b"ctx").await.unwrap_err();
        assert_eq!(
            refused,
            KmsError::Status(403, r#"["permission denied"]"#.into())
        );
        let seen = server.await.unwrap();
        assert!(
            seen[0].starts_with("POST /v1/transit/encrypt/meshgate HTTP/1.1"),
            "{}",
            seen[0]
        );
        assert!(seen[0]
            .to_ascii_lowercase()
            .contains("x-vault-token: s.testtoken"));
        assert!(
            seen[0].ends_with(&format!(r#"{{"plaintext":"{b64}"}}"#)),
            "{}",
            seen[0]
        );
        assert!(seen[1].starts_with("POST /v1/transit/decrypt/meshgate HTTP/1.1"));
        assert!(
            seen[1].ends_with(r#"{"ciphertext":"vault:v1:abcdefgh"}"#),
            "{}",
            seen[1]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_vault_is_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("mg-vault-down-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "t").unwrap();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kms = Kms::vault(
            &format!("http://127.0.0.1:{port}"),
            "transit",
            "k",
            &dir.join("token"),
            Duration::from_secs(2),
        )
        .unwrap();
        assert!(matches!(
            kms.wrap(&[1; 32], b"").await,
            Err(KmsError::Transport(_) | KmsError::Timeout(_))
        ));
        assert!(Kms::vault(
            "https://x",
            "transit",
            "k",
            &dir.join("token"),
            Duration::from_secs(1)
        )
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
