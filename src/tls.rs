//! TLS with rustls: the client-facing listeners (optionally mutual), the upstream brokers, and
//! the admin endpoint.
//!
//! **Reload.** A [`ServerTls`] holds the server configuration built from its files and checks the
//! files' modification times and sizes every [`RELOAD_EVERY`]. When they change it builds a new
//! configuration and swaps it in: new connections use it, live connections keep the session they
//! have. A set of files that does not load (a half-written key, a certificate that does not match
//! its key) is logged and the previous configuration stays in force.
//!
//! **Principals from certificates.** With `client_ca` set, a client must present a certificate
//! signed by that CA. Its principal is built as Kafka's default principal builder builds it:
//! `User:` and the certificate subject's distinguished name in RFC 2253 form (`CN=alice,OU=a,O=org`,
//! most specific first), passed through `principal_mapping_rules`, which take Kafka's
//! `ssl.principal.mapping.rules` syntax (see [`PrincipalMapping`]). The default, `DEFAULT`, keeps
//! the whole name, so `CN=alice,OU=a` and `CN=alice,OU=b` are different principals unless a rule
//! says otherwise. A name no rule matches fails the connection, as it fails authentication in
//! Kafka.
//!
//! Nothing here logs key material: errors name files and rustls' error kinds only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

/// How often certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files of a TLS server identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// What changes when a file is replaced: modification time and size of each.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Builds the rustls server configuration, or says which file is wrong.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsFileError> {
        let certs = load_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|source| TlsFileError::Key {
            path: self.key.clone(),
            source,
        })?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsFileError::Provider)?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let roots = Arc::new(root_store(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|source| TlsFileError::ClientCa {
                        path: ca.clone(),
                        source,
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|source| TlsFileError::Pair {
                cert: self.cert.clone(),
                key: self.key.clone(),
                source,
            })?;
        Ok(Arc::new(config))
    }
}

/// Why a certificate, key or CA file does not make a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no PEM certificate in the file", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: no usable private key: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{} and {}: {source}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{0}")]
    Provider(rustls::Error),
    #[error("no trusted CA certificates found in the system store ({errors} error(s)); give --upstream-ca")]
    NoSystemRoots { errors: usize },
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = |source| TlsFileError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|source| TlsFileError::Certificate {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(roots)
}

/// A TLS server identity that follows its files.
pub struct ServerTls {
    files: ServerFiles,
    config: ArcSwap<ServerConfig>,
    stamp: std::sync::Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ServerTls {
    /// Loads the files; an error here stops the gateway from starting.
    pub fn new(files: ServerFiles) -> Result<Arc<Self>, TlsFileError> {
        let stamp = files.stamp();
        let config = files.load()?;
        Ok(Arc::new(ServerTls {
            files,
            config: ArcSwap::new(config),
            stamp: std::sync::Mutex::new(stamp),
        }))
    }

    /// The acceptor for a new connection, with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Whether clients must present certificates.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reloads the files if they changed. Returns whether a new configuration is in force.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = self.files.stamp();
        let mut last = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == stamp {
            return false;
        }
        *last = stamp;
        match self.files.load() {
            Ok(config) => {
                self.config.store(config);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS files changed but do not load; the previous certificate stays in force");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_EVERY`] until shutdown.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                me.reload_if_changed();
            }
        });
    }
}

/// Why a client's TLS connection or certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("unreadable client certificate: {0}")]
    Certificate(String),
    #[error("no principal mapping rule matches `{0}`")]
    Unmapped(String),
}

/// Runs a server-side TLS handshake with `acceptor`, giving up after [`HANDSHAKE_TIMEOUT`]. The
/// error says which of the two happened, for the caller's log line.
pub async fn accept(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: tokio::net::TcpStream,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, ClientTlsError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ClientTlsError::Handshake(e)),
        Err(_) => Err(ClientTlsError::Timeout),
    }
}

/// The client configuration for upstream brokers: trusting `ca` when given, else the system's
/// trust store. Server names are verified (SNI and hostname or IP SAN) by rustls.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsFileError> {
    client_config_as(ca, None)
}

/// As [`client_config`], presenting the certificate chain and key in `identity` (cert, key)
/// when the upstream asks for one (mutual TLS for meshgate's own connections).
pub fn client_config_as(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsFileError> {
    let roots = match ca {
        Some(ca) => root_store(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsFileError::NoSystemRoots {
                    errors: found.errors.len(),
                });
            }
            roots
        }
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsFileError::Provider)?
        .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = load_certs(cert)?;
            let private =
                PrivateKeyDer::from_pem_file(key).map_err(|source| TlsFileError::Key {
                    path: key.to_path_buf(),
                    source,
                })?;
            config
                .with_client_auth_cert(certs, private)
                .map_err(|source| TlsFileError::Pair {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                    source,
                })?
        }
    };
    Ok(Arc::new(config))
}

/// The principal of a client certificate, `User:<mapped name>`, or why there is none.
pub fn principal_of(
    cert: &CertificateDer<'_>,
    mapping: &PrincipalMapping,
) -> Result<String, ClientTlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| ClientTlsError::Certificate(e.to_string()))?;
    let dn = rfc2253(parsed.subject());
    match mapping.map(&dn) {
        Some(name) => Ok(format!("User:{name}")),
        None => Err(ClientTlsError::Unmapped(dn)),
    }
}

/// A distinguished name as Java's `X500Principal.getName()` writes it (RFC 2253): RDNs from the
/// last to the first, `,` between them, `+` within one, the usual keywords, and other
/// attributes as `OID=#hex` of their DER value.
pub fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::der_parser::oid;
    let keyword = |o: &x509_parser::der_parser::Oid<'_>| -> Option<&'static str> {
        Some(match o {
            o if *o == oid!(2.5.4 .3) => "CN",
            o if *o == oid!(2.5.4 .6) => "C",
            o if *o == oid!(2.5.4 .7) => "L",
            o if *o == oid!(2.5.4 .8) => "ST",
            o if *o == oid!(2.5.4 .9) => "STREET",
            o if *o == oid!(2.5.4 .10) => "O",
            o if *o == oid!(2.5.4 .11) => "OU",
            o if *o == oid!(0.9.2342 .19200300 .100 .1 .25) => "DC",
            o if *o == oid!(0.9.2342 .19200300 .100 .1 .1) => "UID",
            _ => return None,
        })
    };
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let value = attr.as_str().ok();
                    match (keyword(attr.attr_type()), value) {
                        (Some(k), Some(v)) => format!("{k}={}", escape_rfc2253(v)),
                        _ => {
                            use x509_parser::asn1_rs::ToDer;
                            let hex: String = attr
                                .attr_value()
                                .to_der_vec()
                                .map(|der| der.iter().map(|b| format!("{b:02x}")).collect())
                                .unwrap_or_default();
                            format!("{}=#{hex}", attr.attr_type().to_id_string())
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Kafka's `ssl.principal.mapping.rules`: a list of `RULE:pattern/replacement/[LU]` and
/// `DEFAULT`, separated by commas or new lines, tried in order. A `RULE` applies when its
/// pattern (a regular expression) matches the whole name; the name becomes the replacement
/// (`$1` and so on name the pattern's groups), lower- or upper-cased with `L` or `U`. `DEFAULT`
/// keeps the name as it is. A name no rule applies to has no principal.
#[derive(Debug, Clone)]
pub struct PrincipalMapping {
    rules: Vec<MappingRule>,
}

#[derive(Debug, Clone)]
enum MappingRule {
    Default,
    Rule {
        whole: regex::Regex,
        pattern: regex::Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// Why `ssl.principal.mapping.rules` text does not parse.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("`{0}`: a RULE needs pattern/replacement/")]
    Incomplete(String),
    #[error("rule pattern `{pattern}`: {source}")]
    Pattern {
        pattern: String,
        source: regex::Error,
    },
    #[error("`{0}`: expected DEFAULT or RULE:")]
    Expected(String),
    #[error("no rules")]
    Empty,
}

impl Default for PrincipalMapping {
    fn default() -> Self {
        Self {
            rules: vec![MappingRule::Default],
        }
    }
}

impl PrincipalMapping {
    pub fn parse(text: &str) -> Result<Self, MappingError> {
        let mut rules = Vec::new();
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(MappingRule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let incomplete = || MappingError::Incomplete(rest.to_string());
                let (pattern, after) = until_slash(after).ok_or_else(incomplete)?;
                let (replacement, after) = until_slash(after).ok_or_else(incomplete)?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let bad = |source| MappingError::Pattern {
                    pattern: pattern.clone(),
                    source,
                };
                let whole = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(bad)?;
                let pattern = regex::Regex::new(&pattern).map_err(bad)?;
                rules.push(MappingRule::Rule {
                    whole,
                    pattern,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(MappingError::Expected(rest.to_string()));
            }
            // Whatever follows a rule up to the separator is ignored, as Kafka ignores it.
            rest = match rest.find([',', '\n']) {
                Some(i) => rest[i + 1..].trim_start(),
                None => "",
            };
        }
        if rules.is_empty() {
            return Err(MappingError::Empty);
        }
        Ok(Self { rules })
    }

    /// The principal name for a distinguished name, or `None` when no rule applies.
    pub fn map(&self, dn: &str) -> Option<String> {
        self.rules.iter().find_map(|rule| match rule {
            MappingRule::Default => Some(dn.to_string()),
            MappingRule::Rule {
                whole,
                pattern,
                replacement,
                case,
            } => {
                if !whole.is_match(dn) {
                    return None;
                }
                let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                Some(match case {
                    Some('L') => name.to_lowercase(),
                    Some('U') => name.to_uppercase(),
                    _ => name,
                })
            }
        })
    }
}

/// The text up to the next `/` that is not escaped with `\\`, and what follows that `/`.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, next) = chars.next()?;
                // An escaped slash is a slash; other escapes stay for the regex.
                if next != '/' {
                    out.push('\\');
                }
                out.push(next);
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's replacement syntax (`$1`, `\\$`) in the regex crate's (`${1}`, `$$`).
fn java_replacement(java: &str) -> String {
    let mut out = String::new();
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{digits}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        fn new(name: &str) -> Pki {
            let dir =
                std::env::temp_dir().join(format!("meshgate-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Pki { dir }
        }

        /// A CA, and a leaf certificate it signs for `cn`, written as PEM files.
        fn issue(&self, cn: &str) -> ServerFiles {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "test CA");
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let issuer = Issuer::new(ca, ca_key);
            let key = KeyPair::generate().unwrap();
            let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            leaf.distinguished_name.push(DnType::CommonName, cn);
            let cert = leaf.signed_by(&key, &issuer).unwrap();
            let files = ServerFiles {
                cert: self.dir.join(format!("{cn}.pem")),
                key: self.dir.join(format!("{cn}.key")),
                client_ca: Some(self.dir.join(format!("{cn}-ca.pem"))),
            };
            std::fs::write(&files.cert, cert.pem()).unwrap();
            std::fs::write(&files.key, key.serialize_pem()).unwrap();
            std::fs::write(files.client_ca.as_ref().unwrap(), ca_cert.pem()).unwrap();
            files
        }
    }

    #[test]
    fn loads_a_pair_and_reloads_only_a_good_change() {
        let pki = Pki::new("reload");
        let files = pki.issue("gw-one");
        let tls = ServerTls::new(files.clone()).unwrap();
        assert!(tls.mutual());
        assert!(!tls.reload_if_changed(), "nothing changed yet");
        let before = tls.config.load_full();
        // A new pair written over the old files: swapped in.
        let other = pki.issue("gw-two");
        std::fs::copy(&other.cert, &files.cert).unwrap();
        std::fs::copy(&other.key, &files.key).unwrap();
        assert!(tls.reload_if_changed());
        assert!(!Arc::ptr_eq(&before, &tls.config.load_full()));
        // A truncated key: refused, and the last good configuration stays.
        let good = tls.config.load_full();
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap();
        assert!(!tls.reload_if_changed());
        assert!(Arc::ptr_eq(&good, &tls.config.load_full()));
    }

    #[test]
    fn bad_files_say_which_file() {
        let pki = Pki::new("bad");
        let files = pki.issue("gw");
        let missing = ServerFiles {
            cert: pki.dir.join("nope.pem"),
            ..files.clone()
        };
        let e = ServerTls::new(missing).err().unwrap();
        assert!(matches!(e, TlsFileError::Pem { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let mismatched = ServerFiles {
            key: pki.issue("other").key,
            ..files
        };
        assert!(ServerTls::new(mismatched).is_err());
    }

    #[test]
    fn the_principal_is_the_subject_with_or_without_a_common_name() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "orders-svc");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "shop");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_of(cert.der(), &PrincipalMapping::default())
                .ok()
                .as_deref(),
            Some("User:O=shop,CN=orders-svc"),
            "the last RDN first, as Java writes it"
        );
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "shop");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_of(cert.der(), &PrincipalMapping::default())
                .ok()
                .as_deref(),
            Some("User:O=shop")
        );
    }

    fn cert_with(dn: &[(DnType, &str)]) -> rcgen::Certificate {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.self_signed(&key).unwrap()
    }

    #[test]
    fn the_default_principal_is_the_whole_distinguished_name_most_specific_first() {
        let a = cert_with(&[
            (DnType::OrganizationName, "org"),
            (DnType::OrganizationalUnitName, "a"),
            (DnType::CommonName, "alice"),
        ]);
        let b = cert_with(&[
            (DnType::OrganizationName, "org"),
            (DnType::OrganizationalUnitName, "b"),
            (DnType::CommonName, "alice"),
        ]);
        let default = PrincipalMapping::default();
        assert_eq!(
            principal_of(a.der(), &default).unwrap(),
            "User:CN=alice,OU=a,O=org"
        );
        assert_ne!(
            principal_of(a.der(), &default).ok(),
            principal_of(b.der(), &default).ok()
        );
        let tricky = cert_with(&[(DnType::CommonName, "a,b+c \\d ")]);
        assert_eq!(
            principal_of(tricky.der(), &default).unwrap(),
            "User:CN=a\\,b\\+c \\\\d\\ "
        );
    }

    #[test]
    fn mapping_rules_follow_kafkas_syntax() {
        let rules = PrincipalMapping::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, RULE:^CN=([^,]+),OU=(.*)$/$2.$1/ ,\nDEFAULT",
        )
        .unwrap();
        assert_eq!(
            rules.map("CN=Orders,OU=ServiceUsers,O=org").as_deref(),
            Some("orders")
        );
        assert_eq!(rules.map("CN=bob,OU=team").as_deref(), Some("team.bob"));
        assert_eq!(
            rules.map("O=nobody").as_deref(),
            Some("O=nobody"),
            "DEFAULT"
        );
        // Without DEFAULT, a name no rule matches has no principal.
        let strict = PrincipalMapping::parse("RULE:^CN=([^,]*)$/$1/U").unwrap();
        assert_eq!(strict.map("CN=x").as_deref(), Some("X"));
        assert_eq!(strict.map("CN=x,O=y"), None);
        // An escaped slash belongs to the pattern.
        let slash = PrincipalMapping::parse("RULE:^CN=(.*)\\/x$/$1-x/").unwrap();
        assert_eq!(slash.map("CN=a/x").as_deref(), Some("a-x"));
        for bad in ["", "RULE:^x$", "RULE:(/x/", "NOPE"] {
            assert!(PrincipalMapping::parse(bad).is_err(), "{bad:?}");
        }
    }
}
