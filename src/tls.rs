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
//! signed by that CA. Its principal is `User:<CN>`, the first common name of the certificate's
//! subject (Kafka's default `ssl.principal.mapping.rules` applied to the CN). A certificate without
//! a CN gives `User:<the whole subject, RFC 4514>`.
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
    pub fn load(&self) -> Result<Arc<ServerConfig>, String> {
        let certs = load_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: no usable private key: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let roots = Arc::new(root_store(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))?;
        Ok(Arc::new(config))
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
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
    pub fn new(files: ServerFiles) -> Result<Arc<Self>, String> {
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

/// Runs a server-side TLS handshake with `acceptor`, giving up after [`HANDSHAKE_TIMEOUT`]. The
/// error says which of the two happened, for the caller's log line.
pub async fn accept(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: tokio::net::TcpStream,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// The client configuration for upstream brokers: trusting `ca` when given, else the system's
/// trust store. Server names are verified (SNI and hostname or IP SAN) by rustls.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca {
        Some(ca) => root_store(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted CA certificates found in the system store ({} error(s)); give --upstream-ca",
                    found.errors.len()
                ));
            }
            roots
        }
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The principal of a client certificate: `User:<CN>`, or `User:<subject>` without a CN.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(str::to_string));
    Some(format!(
        "User:{}",
        cn.unwrap_or_else(|| subject.to_string())
    ))
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
        assert!(e.contains("nope.pem"), "{e}");
        let mismatched = ServerFiles {
            key: pki.issue("other").key,
            ..files
        };
        assert!(ServerTls::new(mismatched).is_err());
    }

    #[test]
    fn the_principal_is_the_common_name() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "orders-svc");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "shop");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(principal_of(cert.der()).as_deref(), Some("User:orders-svc"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "shop");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(principal_of(cert.der()).as_deref(), Some("User:O=shop"));
    }
}
