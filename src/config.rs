//! Gateway configuration: the `gateway.yaml` model, command-line overrides, and validation.
//!
//! Loading follows "parse, then `validate()`, then use": the serde model refuses unknown keys so a
//! typo is an error, and [`GatewayConfig::validate`] reports *every* problem at once rather than the
//! first. Nothing here touches the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the gateway listens when neither the config file nor a flag says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9092";
/// The upstream bootstrap broker of the local default (a tansu on 19092).
pub const DEFAULT_UPSTREAM: &str = "127.0.0.1:19092";
/// The admin HTTP endpoint (metrics, health).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9644";
/// The policy directory.
pub const DEFAULT_POLICIES: &str = "./policies";
/// The `all_or_nothing_client_ids` entry recommended for kafkajs (its own default client id).
/// Not the default: PRODUCT.md gives every partition its own verdict unless configured.
pub const KAFKAJS_CLIENT_ID: &str = "^kafkajs";

/// The gateway configuration file, exactly as written. Every key is optional; defaults apply.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Client-facing bootstrap address, `HOST:PORT`.
    pub listen: Option<String>,
    /// Host name written into every broker address returned to clients.
    pub advertised_host: Option<String>,
    /// Upstream bootstrap brokers, `HOST:PORT` each.
    pub upstream: Option<Vec<String>>,
    /// Policy directory.
    pub policies: Option<PathBuf>,
    /// Admin HTTP address, `HOST:PORT`.
    pub admin: Option<String>,
    /// First gateway port for brokers: broker `node_id` is reachable at `broker_port_base + node_id`.
    /// Defaults to the listen port + 1.
    pub broker_port_base: Option<u16>,
    /// Largest request or response frame accepted, in bytes (default 100 MiB, as Kafka's
    /// `socket.request.max.bytes`).
    pub max_frame_bytes: Option<usize>,
    /// Requests in flight per client connection before the gateway stops reading from it.
    pub max_in_flight: Option<usize>,
    /// Client connections accepted at once, over all listeners.
    pub max_connections: Option<usize>,
    /// Bytes the judged record batches of one request may inflate to, all together (default
    /// 128 MiB). Past it, the partitions left get INVALID_RECORD.
    pub max_inflated_request_bytes: Option<usize>,
    /// Records one request may hold over its judged batches (default 2,000,000).
    pub max_request_records: Option<u64>,
    /// Requests judged at once on the blocking pool, over the whole gateway (default: the number
    /// of CPUs). Small uncompressed requests are judged on their connection's task instead.
    pub judge_threads: Option<usize>,
    /// Client ids (regexes) whose Produce requests are judged all or nothing: when one partition
    /// is refused, every partition of the request is refused and nothing is written (default:
    /// none; `['^kafkajs']` is recommended for kafkajs). See
    /// `GatewayConfig::all_or_nothing_clients`.
    pub all_or_nothing_client_ids: Option<Vec<String>>,
    /// Seconds allowed for in-flight requests to finish on shutdown.
    pub drain_timeout_secs: Option<u64>,
    /// Seconds allowed to connect to an upstream broker.
    pub upstream_connect_timeout_secs: Option<u64>,
    /// Seconds between the gateway's own Metadata refreshes of the upstream cluster.
    pub metadata_refresh_secs: Option<u64>,
    /// Confluent-compatible schema registry URL.
    pub schema_registry: Option<String>,
    /// TLS for clients: `{cert, key, client_ca}` (PEM files; `client_ca` asks for client
    /// certificates, whose CN becomes the principal).
    pub tls: Option<TlsFile>,
    /// TLS to the upstream brokers: `{enabled, ca}` (`ca` defaults to the system trust store).
    pub upstream_tls: Option<UpstreamTlsFile>,
    /// The admin endpoint: `{tls: {cert, key}, token_file}`.
    pub admin_security: Option<AdminSecurityFile>,
    /// The audit trail: `{file, max_bytes, keep}` (JSON lines, hash-chained, rotated).
    pub audit: Option<AuditFile>,
    /// meshgate's own connections to the cluster (its dead-letter producer), in its own name:
    /// `{sasl: {mechanism, username, password_file}, tls_cert, tls_key, write_timeout_secs,
    /// spool: {dir, max_bytes, fsync}}`.
    /// TLS itself and its CA are `upstream_tls`'s.
    pub own_client: Option<OwnClientFile>,
    /// Field protection's keys: `{key_dir, kms: {local_file} | {vault: {...}}, rotate,
    /// key_cache_secs}` (see `crate::protect`). Needed when a contract has `protect: encrypt`
    /// or readers of protected fields.
    pub protect: Option<ProtectFile>,
}

/// `protect:` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectFile {
    /// Where the wrapped data keys are kept (shared by the gateways of one cluster).
    pub key_dir: PathBuf,
    pub kms: KmsFile,
    /// `day` (default) or `hour`: how often a topic's data key changes.
    pub rotate: Option<String>,
    /// Seconds a data key stays in memory before its file is checked again (default 300): how
    /// soon a deleted (shredded) key stops opening fields.
    pub key_cache_secs: Option<u64>,
}

/// `protect.kms:` of the config file: one backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsFile {
    /// A file holding a 32-byte key-encryption key in base64.
    pub local_file: Option<PathBuf>,
    pub vault: Option<VaultFile>,
}

/// `protect.kms.vault:`: a HashiCorp Vault transit key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultFile {
    /// `http://host:8200`.
    pub address: String,
    /// The transit engine's mount (default `transit`).
    pub mount: Option<String>,
    pub key: String,
    pub token_file: PathBuf,
    /// Seconds a Vault call may take (default 5).
    pub timeout_secs: Option<u64>,
}

/// Field protection's key settings, validated (the key files are read at start).
#[derive(Debug, Clone)]
pub struct ProtectConfig {
    pub key_dir: PathBuf,
    pub kms: ProtectKms,
    pub rotate: crate::protect::keys::Rotate,
    pub key_cache: Duration,
}

#[derive(Debug, Clone)]
pub enum ProtectKms {
    LocalFile(PathBuf),
    Vault {
        address: String,
        mount: String,
        key: String,
        token_file: PathBuf,
        timeout: Duration,
    },
}

/// `own_client:` of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnClientFile {
    pub sasl: Option<SaslFile>,
    /// A client certificate (PEM chain) for mutual TLS with the brokers, with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Seconds a dead-letter write may take, retries included, before the client is answered
    /// with a retriable error (default 20; below the clients' 30 s request timeout).
    pub write_timeout_secs: Option<u64>,
    /// The dead-letter spool: refused records kept on local disk and answered at once, written
    /// to their topics in the background (`crate::own_client::spool`).
    pub spool: Option<SpoolFile>,
}

/// `own_client.spool:` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolFile {
    pub dir: PathBuf,
    /// Bytes that may wait for delivery (default 256 MiB).
    pub max_bytes: Option<u64>,
    /// `fdatasync` after each append round (default false).
    pub fsync: Option<bool>,
}

/// `own_client.sasl:` of the config file. The password is read from a file, never written in
/// the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslFile {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password_file: PathBuf,
}

/// meshgate's own connections, validated.
#[derive(Debug, Clone)]
pub struct OwnClient {
    /// (mechanism, username, password file).
    pub sasl: Option<(crate::own_client::Mechanism, String, PathBuf)>,
    /// (certificate, key) for mutual TLS.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    pub write_timeout: Duration,
    /// The dead-letter spool, when configured.
    pub spool: Option<crate::own_client::spool::SpoolConfig>,
}

impl Default for OwnClient {
    fn default() -> Self {
        OwnClient {
            sasl: None,
            tls_identity: None,
            write_timeout: Duration::from_secs(20),
            spool: None,
        }
    }
}

/// `audit:` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// The JSON-lines file.
    pub file: Option<PathBuf>,
    /// A Kafka topic the lines are written to as well (or instead), through the own producer.
    pub topic: Option<String>,
    /// Rotate at this size (default 100 MiB).
    pub max_bytes: Option<u64>,
    /// Rotated files kept (default 10).
    pub keep: Option<usize>,
}

/// `tls:` of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    /// Kafka's `ssl.principal.mapping.rules` for client certificates (default `DEFAULT`: the
    /// whole RFC 2253 name).
    pub principal_mapping_rules: Option<String>,
}

/// `upstream_tls:` of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    #[serde(default)]
    pub enabled: bool,
    pub ca: Option<PathBuf>,
}

/// `admin_security:` of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSecurityFile {
    pub tls: Option<TlsFile>,
    /// A file holding the bearer token every admin path but `/healthz` requires.
    pub token_file: Option<PathBuf>,
}

/// Values given on the command line; each overrides the same key of the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub advertised_host: Option<String>,
    pub upstream: Option<Vec<String>>,
    pub policies: Option<PathBuf>,
    pub admin: Option<String>,
    pub schema_registry: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_principal_mapping_rules: Option<String>,
    pub upstream_tls: bool,
    pub upstream_ca: Option<PathBuf>,
    pub admin_tls_cert: Option<PathBuf>,
    pub admin_tls_key: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
}

/// TLS to the upstream brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The CA bundle to trust; the system trust store when `None`.
    pub ca: Option<PathBuf>,
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub upstream: Vec<String>,
    pub policies: PathBuf,
    pub admin: SocketAddr,
    pub broker_port_base: u16,
    pub max_frame_bytes: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub max_inflated_request_bytes: usize,
    pub max_request_records: u64,
    pub judge_threads: usize,
    /// Producers whose Produce requests are judged all or nothing.
    ///
    /// kafkajs (2.2.4, the last release) rewinds the idempotent sequence numbers of *every*
    /// partition of a request that fails, including partitions the broker wrote. Its next
    /// records on those partitions then reuse written sequence numbers, and the broker drops
    /// them as duplicates while answering success: silent loss. It does the same direct to
    /// Kafka on the broker's own partial INVALID_RECORD (tests/e2e/test_client_matrix.py).
    /// kafkajs also reports the whole send() as failed, so refusing the whole request shows its
    /// user nothing new, writes nothing that it will not resend, and keeps its sequences true.
    /// Matched on the request header's client id: kafkajs sends no KIP-511 software name. Empty
    /// by default (PRODUCT.md: every partition its own verdict); [`KAFKAJS_CLIENT_ID`] is the entry
    /// README recommends.
    pub all_or_nothing_clients: regex::RegexSet,
    pub drain_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub metadata_refresh: Duration,
    pub schema_registry: Option<String>,
    /// TLS on the client-facing listeners.
    pub tls: Option<crate::tls::ServerFiles>,
    /// How a client certificate's name becomes its principal.
    pub principal_mapping: crate::tls::PrincipalMapping,
    pub upstream_tls: Option<UpstreamTls>,
    /// TLS on the admin endpoint (no client certificates).
    pub admin_tls: Option<crate::tls::ServerFiles>,
    /// The admin bearer token's file.
    pub admin_token_file: Option<PathBuf>,
    /// The audit trail, when configured.
    pub audit: Option<crate::audit::AuditConfig>,
    /// meshgate's own connections to the cluster.
    pub own_client: OwnClient,
    /// Field protection's keys, when configured.
    pub protect: Option<ProtectConfig>,
}

/// A configuration problem. `validate` returns all of them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl ConfigFile {
    /// Reads and parses a config file. Unknown keys are errors, reported with their line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            line: e.location().map(|l| l.line() as usize).unwrap_or(0),
            reason: e.to_string(),
        })
    }

    /// Applies command-line overrides, then validates the result, reporting every error at once.
    pub fn build(self, flags: Overrides) -> Result<GatewayConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let listen_text = flags
            .listen
            .or(self.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let admin_text = flags
            .admin
            .or(self.admin)
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let listen = parse_socket_addr("listen", &listen_text, &mut errors);
        let admin = parse_socket_addr("admin", &admin_text, &mut errors);

        let upstream = flags
            .upstream
            .or(self.upstream)
            .unwrap_or_else(|| vec![DEFAULT_UPSTREAM.to_string()]);
        if upstream.is_empty() {
            errors.push(invalid("upstream", "at least one HOST:PORT is required"));
        }
        for u in &upstream {
            if split_host_port(u).is_none() {
                errors.push(invalid("upstream", format!("`{u}` is not HOST:PORT")));
            }
        }

        let listen_port = listen.map(|a| a.port()).unwrap_or(0);
        if listen.is_some() && listen_port == 0 {
            errors.push(invalid(
                "listen",
                "port 0 is not allowed: broker ports are derived from the listen port",
            ));
        }
        let broker_port_base = match self.broker_port_base {
            Some(0) => {
                errors.push(invalid("broker_port_base", "must be a port above 0"));
                0
            }
            Some(b) => b,
            None => listen_port.saturating_add(1),
        };

        let advertised_host = flags
            .advertised_host
            .or(self.advertised_host)
            .unwrap_or_else(|| match listen {
                Some(a) if !a.ip().is_unspecified() => a.ip().to_string(),
                _ => "127.0.0.1".to_string(),
            });
        if advertised_host.is_empty() || advertised_host.contains(char::is_whitespace) {
            errors.push(invalid(
                "advertised_host",
                format!("`{advertised_host}` is not a host name"),
            ));
        }

        let max_frame_bytes = self.max_frame_bytes.unwrap_or(100 * 1024 * 1024);
        if !(1024..=i32::MAX as usize).contains(&max_frame_bytes) {
            errors.push(invalid(
                "max_frame_bytes",
                "must be between 1024 and 2147483647",
            ));
        }
        let max_in_flight = self.max_in_flight.unwrap_or(256);
        if !(1..=65536).contains(&max_in_flight) {
            errors.push(invalid("max_in_flight", "must be between 1 and 65536"));
        }
        let max_connections = self.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            errors.push(invalid("max_connections", "must be at least 1"));
        }
        let max_inflated_request_bytes = self
            .max_inflated_request_bytes
            .unwrap_or(crate::policy::judge::DEFAULT_MAX_INFLATED_REQUEST_BYTES);
        if max_inflated_request_bytes < 1024 * 1024 {
            errors.push(invalid(
                "max_inflated_request_bytes",
                "must be at least 1048576",
            ));
        }
        let max_request_records = self
            .max_request_records
            .unwrap_or(crate::policy::judge::DEFAULT_MAX_REQUEST_RECORDS);
        if max_request_records == 0 {
            errors.push(invalid("max_request_records", "must be at least 1"));
        }
        let judge_threads = self
            .judge_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        if !(1..=256).contains(&judge_threads) {
            errors.push(invalid("judge_threads", "must be between 1 and 256"));
        }
        let all_or_nothing_clients = match regex::RegexSet::new(
            self.all_or_nothing_client_ids
                .as_deref()
                .unwrap_or_default(),
        ) {
            Ok(set) => set,
            Err(e) => {
                errors.push(invalid("all_or_nothing_client_ids", e.to_string()));
                regex::RegexSet::empty()
            }
        };
        let metadata_refresh_secs = self.metadata_refresh_secs.unwrap_or(30);
        if metadata_refresh_secs == 0 {
            errors.push(invalid("metadata_refresh_secs", "must be at least 1"));
        }
        let connect_secs = self.upstream_connect_timeout_secs.unwrap_or(10);
        if connect_secs == 0 {
            errors.push(invalid(
                "upstream_connect_timeout_secs",
                "must be at least 1",
            ));
        }
        let schema_registry = flags.schema_registry.or(self.schema_registry);
        if let Some(url) = &schema_registry {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(invalid(
                    "schema_registry",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }

        let file_tls = self.tls.unwrap_or_default();
        let principal_mapping = match flags
            .tls_principal_mapping_rules
            .or(file_tls.principal_mapping_rules.clone())
        {
            None => crate::tls::PrincipalMapping::default(),
            Some(rules) => crate::tls::PrincipalMapping::parse(&rules).unwrap_or_else(|e| {
                errors.push(invalid("tls.principal_mapping_rules", e.to_string()));
                crate::tls::PrincipalMapping::default()
            }),
        };
        let tls = server_files(
            "tls",
            flags.tls_cert.or(file_tls.cert),
            flags.tls_key.or(file_tls.key),
            flags.tls_client_ca.or(file_tls.client_ca),
            &mut errors,
        );
        let file_upstream = self.upstream_tls.unwrap_or_default();
        let upstream_ca = flags.upstream_ca.or(file_upstream.ca);
        let upstream_tls = (flags.upstream_tls || file_upstream.enabled).then_some(UpstreamTls {
            ca: upstream_ca.clone(),
        });
        if upstream_tls.is_none() && upstream_ca.is_some() {
            errors.push(invalid(
                "upstream_tls",
                "an upstream CA is given but upstream TLS is not enabled (--upstream-tls)",
            ));
        }
        let admin_security = self.admin_security.unwrap_or_default();
        let admin_file_tls = admin_security.tls.unwrap_or_default();
        let admin_tls = server_files(
            "admin_security.tls",
            flags.admin_tls_cert.or(admin_file_tls.cert),
            flags.admin_tls_key.or(admin_file_tls.key),
            admin_file_tls.client_ca,
            &mut errors,
        );
        if admin_tls.as_ref().is_some_and(|t| t.client_ca.is_some()) {
            errors.push(invalid(
                "admin_security.tls",
                "client_ca is not supported on the admin endpoint (use token_file)",
            ));
        }

        if let Some(a) = &self.audit {
            if a.file.is_none() && a.topic.is_none() {
                errors.push(invalid("audit", "needs `file`, `topic`, or both"));
            }
            if let Some(t) = &a.topic {
                if !crate::policy::is_valid_topic_name(t) {
                    errors.push(invalid(
                        "audit.topic",
                        format!("`{t}` is not a valid Kafka topic name"),
                    ));
                }
            }
        }
        let audit = self.audit.map(|a| crate::audit::AuditConfig {
            file: a.file,
            topic: a.topic.map(|t| std::sync::Arc::from(t.as_str())),
            max_bytes: a
                .max_bytes
                .unwrap_or(crate::audit::AuditConfig::DEFAULT_MAX_BYTES),
            keep: a.keep.unwrap_or(crate::audit::AuditConfig::DEFAULT_KEEP),
        });
        if let Some(a) = &audit {
            if a.max_bytes < 4096 {
                errors.push(invalid("audit.max_bytes", "must be at least 4096"));
            }
            if a.keep == 0 {
                errors.push(invalid("audit.keep", "must be at least 1"));
            }
        }

        let own = self.own_client.unwrap_or_default();
        let mut own_client = OwnClient::default();
        if let Some(secs) = own.write_timeout_secs {
            if !(1..=300).contains(&secs) {
                errors.push(invalid(
                    "own_client.write_timeout_secs",
                    "must be between 1 and 300",
                ));
            }
            own_client.write_timeout = Duration::from_secs(secs);
        }
        if let Some(sasl) = own.sasl {
            match crate::own_client::Mechanism::from_name(&sasl.mechanism) {
                Some(m) => own_client.sasl = Some((m, sasl.username, sasl.password_file)),
                None => errors.push(invalid(
                    "own_client.sasl.mechanism",
                    format!(
                        "`{}` is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
                        sasl.mechanism
                    ),
                )),
            }
        }
        match (own.tls_cert, own.tls_key) {
            (Some(c), Some(k)) => {
                if upstream_tls.is_none() {
                    errors.push(invalid(
                        "own_client.tls_cert",
                        "a client certificate needs upstream TLS (upstream_tls.enabled)",
                    ));
                }
                own_client.tls_identity = Some((c, k));
            }
            (None, None) => {}
            _ => errors.push(invalid("own_client", "tls_cert and tls_key go together")),
        }
        if let Some(spool) = own.spool {
            let max_bytes = spool.max_bytes.unwrap_or(256 << 20);
            if max_bytes < 1 << 20 {
                errors.push(invalid(
                    "own_client.spool.max_bytes",
                    "must be at least 1048576 (1 MiB)",
                ));
            }
            own_client.spool = Some(crate::own_client::spool::SpoolConfig {
                dir: spool.dir,
                max_bytes,
                fsync: spool.fsync.unwrap_or(false),
            });
        }

        let protect = self.protect.and_then(|p| {
            let rotate = match p.rotate.as_deref() {
                None | Some("day") => crate::protect::keys::Rotate::Day,
                Some("hour") => crate::protect::keys::Rotate::Hour,
                Some(other) => {
                    errors.push(invalid(
                        "protect.rotate",
                        format!("`{other}` is not `day` or `hour`"),
                    ));
                    return None;
                }
            };
            let key_cache = Duration::from_secs(p.key_cache_secs.unwrap_or(300));
            if key_cache.is_zero() {
                errors.push(invalid("protect.key_cache_secs", "must be at least 1"));
            }
            let kms = match (p.kms.local_file, p.kms.vault) {
                (Some(f), None) => ProtectKms::LocalFile(f),
                (None, Some(v)) => ProtectKms::Vault {
                    address: v.address,
                    mount: v.mount.unwrap_or_else(|| "transit".into()),
                    key: v.key,
                    token_file: v.token_file,
                    timeout: Duration::from_secs(v.timeout_secs.unwrap_or(5).max(1)),
                },
                _ => {
                    errors.push(invalid(
                        "protect.kms",
                        "names exactly one of `local_file` and `vault`",
                    ));
                    return None;
                }
            };
            Some(ProtectConfig {
                key_dir: p.key_dir,
                kms,
                rotate,
                key_cache,
            })
        });

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(GatewayConfig {
            protect,
            own_client,
            audit,
            tls,
            principal_mapping,
            upstream_tls,
            admin_tls,
            admin_token_file: flags.admin_token_file.or(admin_security.token_file),
            listen: listen.expect("checked above"),
            advertised_host,
            upstream,
            policies: flags
                .policies
                .or(self.policies)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICIES)),
            admin: admin.expect("checked above"),
            broker_port_base,
            max_frame_bytes,
            max_in_flight,
            max_connections,
            max_inflated_request_bytes,
            max_request_records,
            judge_threads,
            all_or_nothing_clients,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs.unwrap_or(10)),
            upstream_connect_timeout: Duration::from_secs(connect_secs),
            metadata_refresh: Duration::from_secs(metadata_refresh_secs),
            schema_registry,
        })
    }
}

impl GatewayConfig {
    /// Ports meshgate serves something other than a broker on, at the listen address: the
    /// bootstrap port, and the admin port when it shares the listen address (or either is a
    /// wildcard). No broker's gateway port may be one of them.
    pub fn reserved_ports(&self) -> Vec<u16> {
        let mut ports = vec![self.listen.port()];
        let shares_address = self.admin.ip() == self.listen.ip()
            || self.admin.ip().is_unspecified()
            || self.listen.ip().is_unspecified();
        if shares_address && self.admin.port() != 0 {
            ports.push(self.admin.port());
        }
        ports
    }
}

/// A certificate and key given together (a CA alone, or one without the other, is an error).
fn server_files(
    config_key: &'static str,
    cert: Option<PathBuf>,
    private_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::tls::ServerFiles> {
    match (cert, private_key) {
        (Some(cert), Some(key)) => Some(crate::tls::ServerFiles {
            cert,
            key,
            client_ca,
        }),
        (None, None) if client_ca.is_none() => None,
        (None, None) => {
            errors.push(invalid(
                config_key,
                "a client CA needs a certificate and a key too",
            ));
            None
        }
        _ => {
            errors.push(invalid(config_key, "a certificate and a key go together"));
            None
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

fn parse_socket_addr(
    key: &'static str,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(invalid(
                key,
                format!("`{text}` is not IP:PORT (e.g. 127.0.0.1:9092)"),
            ));
            None
        }
    }
}

pub use crate::protocol::split_host_port;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_local_setup() {
        let c = ConfigFile::default().build(Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.upstream, vec![DEFAULT_UPSTREAM.to_string()]);
        assert_eq!(c.admin.to_string(), DEFAULT_ADMIN);
        assert_eq!(c.policies, PathBuf::from(DEFAULT_POLICIES));
        assert_eq!(c.broker_port_base, 9093);
        assert_eq!(c.advertised_host, "127.0.0.1");
    }

    #[test]
    fn all_or_nothing_clients_default_to_none_and_take_regexes() {
        let c = ConfigFile::default().build(Overrides::default()).unwrap();
        assert!(
            !c.all_or_nothing_clients.is_match("kafkajs"),
            "per-partition verdicts for every client unless configured (PRODUCT.md)"
        );
        let file = ConfigFile::parse(
            &format!("all_or_nothing_client_ids: ['{KAFKAJS_CLIENT_ID}']\n"),
            "g.yaml",
        )
        .unwrap();
        let c = file.build(Overrides::default()).unwrap();
        assert!(c.all_or_nothing_clients.is_match("kafkajs"));
        assert!(!c.all_or_nothing_clients.is_match("orders-service"));
        let file = ConfigFile::parse(
            "all_or_nothing_client_ids: ['^orders-', 'billing']\n",
            "g.yaml",
        )
        .unwrap();
        let c = file.build(Overrides::default()).unwrap();
        assert!(c.all_or_nothing_clients.is_match("orders-api"));
        assert!(
            !c.all_or_nothing_clients.is_match("kafkajs"),
            "only the listed ids"
        );
        let file = ConfigFile::parse("all_or_nothing_client_ids: []\n", "g.yaml").unwrap();
        assert!(!file
            .build(Overrides::default())
            .unwrap()
            .all_or_nothing_clients
            .is_match("kafkajs"));
        let bad = ConfigFile::parse("all_or_nothing_client_ids: ['(']\n", "g.yaml").unwrap();
        let errors = bad.build(Overrides::default()).unwrap_err();
        assert!(
            format!("{errors:?}").contains("all_or_nothing_client_ids"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_dead_letter_spool_is_off_unless_configured_and_its_bound_is_checked() {
        let c = ConfigFile::default().build(Overrides::default()).unwrap();
        assert_eq!(c.own_client.spool, None);
        let file =
            ConfigFile::parse("own_client:\n  spool: { dir: /var/spool/mg }\n", "g.yaml").unwrap();
        let spool = file.build(Overrides::default()).unwrap().own_client.spool;
        assert_eq!(
            spool,
            Some(crate::own_client::spool::SpoolConfig {
                dir: PathBuf::from("/var/spool/mg"),
                max_bytes: 256 << 20,
                fsync: false,
            })
        );
        let small = ConfigFile::parse(
            "own_client:\n  spool: { dir: d, max_bytes: 1000, fsync: true }\n",
            "g.yaml",
        )
        .unwrap();
        let errors = small.build(Overrides::default()).unwrap_err();
        assert!(
            format!("{errors:?}").contains("own_client.spool.max_bytes"),
            "{errors:?}"
        );
        // Keys are checked: a misspelt one is an error with its line.
        match ConfigFile::parse(
            "own_client:\n  spool:\n    dir: d\n    fsnyc: true\n",
            "g.yaml",
        ) {
            Err(ConfigError::Parse { line, reason, .. }) => {
                assert_eq!(line, 4, "{reason}");
                assert!(reason.contains("fsnyc"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = ConfigFile::parse("listen: 127.0.0.1:1\nlisten_port: 3\n", "g.yaml").unwrap_err();
        match err {
            ConfigError::Parse { line, reason, .. } => {
                assert_eq!(line, 2);
                assert!(reason.contains("listen_port"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = ConfigFile::parse(
            "listen: 127.0.0.1:7000\nupstream: ['a:1']\nadvertised_host: gw.example\n",
            "g.yaml",
        )
        .unwrap();
        let c = file
            .build(Overrides {
                listen: Some("127.0.0.1:8000".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.listen.port(), 8000);
        assert_eq!(c.broker_port_base, 8001);
        assert_eq!(c.upstream, vec!["a:1".to_string()]);
        assert_eq!(c.advertised_host, "gw.example");
    }

    #[test]
    fn validation_reports_every_error_not_the_first() {
        let file = ConfigFile::parse(
            "listen: nowhere\nadmin: also-nowhere\nupstream: ['no-port']\nmax_in_flight: 0\n",
            "g.yaml",
        )
        .unwrap();
        let errors = file.build(Overrides::default()).unwrap_err();
        let keys: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 4, "{keys:?}");
        for k in ["listen", "admin", "upstream", "max_in_flight"] {
            assert!(
                keys.iter().any(|e| e.starts_with(k)),
                "{k} missing in {keys:?}"
            );
        }
    }

    #[test]
    fn split_host_port_handles_ipv6_and_rejects_garbage() {
        assert_eq!(split_host_port("[::1]:9092"), Some(("::1", 9092)));
        assert_eq!(split_host_port("kafka-0:19092"), Some(("kafka-0", 19092)));
        assert_eq!(split_host_port("kafka-0"), None);
        assert_eq!(split_host_port(":9092"), None);
        assert_eq!(split_host_port("h:0"), None);
    }
}
