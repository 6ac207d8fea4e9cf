//! Wiring: binds the listeners, starts the admin server and the metadata refresher, and runs
//! until shutdown, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::GatewayConfig;
use crate::generation::PolicyStore;
use crate::metrics::Metrics;
use crate::protocol::client::call;
use crate::proxy::rewrite::BrokerAddresses;
use crate::proxy::{Gateway, Target};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the policy set does not load:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Policies(Vec<crate::policy::PolicyError>),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::proxy::SecurityError),
    #[error(transparent)]
    Admin(#[from] admin::AdminSetupError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Spool(#[from] crate::own_client::spool::SpoolError),
    #[error("protect.kms: {0}")]
    Kms(#[from] crate::protect::kms::KmsError),
    #[error("contract `{0}` encrypts fields (`protect: encrypt`), which needs `protect:` (key_dir and kms) in the gateway configuration")]
    NoKeyStore(String),
}

/// The data keys of field protection, from `protect:` of the configuration; an error when a
/// contract in force encrypts and there is none.
fn key_ring(
    config: &GatewayConfig,
    policies: &PolicyStore,
) -> Result<Option<Arc<crate::protect::keys::KeyRing>>, AppError> {
    let Some(p) = &config.protect else {
        let current = policies.current();
        let encrypting = current
            .contracts
            .iter()
            .find(|c| c.protect.as_ref().is_some_and(|p| p.encrypts()));
        return match encrypting {
            Some(c) => Err(AppError::NoKeyStore(c.name.clone())),
            None => Ok(None),
        };
    };
    key_ring_of(p).map(Some)
}

/// The data keys of a configured `protect:` (the gateway's, or `meshgate replay --dry-run
/// --config`'s).
pub fn key_ring_of(
    p: &crate::config::ProtectConfig,
) -> Result<Arc<crate::protect::keys::KeyRing>, AppError> {
    use crate::config::ProtectKms;
    use crate::protect::kms::Kms;
    let kms = match &p.kms {
        ProtectKms::LocalFile(path) => Kms::local(path)?,
        ProtectKms::Vault {
            address,
            mount,
            key,
            token_file,
            timeout,
        } => Kms::vault(address, mount, key, token_file, *timeout)?,
    };
    tracing::info!(key_dir = %p.key_dir.display(), kms = %kms.label(), "field protection keys");
    Ok(Arc::new(crate::protect::keys::KeyRing::new(
        p.key_dir.clone(),
        kms,
        p.rotate,
        p.key_cache,
    )))
}

/// Why the metadata refresher could not learn the upstream's brokers.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Connect(#[from] crate::proxy::UpstreamError),
    #[error(transparent)]
    Call(#[from] crate::protocol::client::CallError),
    #[error("ApiVersions error {0}")]
    ApiVersions(i16),
    #[error("upstream does not support Metadata")]
    NoMetadata,
    #[error("timed out")]
    Timeout,
}

/// A started gateway.
pub use crate::proxy::health::Health;

pub struct Running {
    pub gateway: Arc<Gateway>,
    pub bootstrap: SocketAddr,
    pub admin: SocketAddr,
    pub health: Arc<Health>,
    /// One gateway per partner zone: its own listener, broker ports and TLS identity, sharing
    /// the policies, metrics, shutdown and own producer of `gateway`.
    pub zones: Vec<Arc<Gateway>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within the drain timeout, and returns
    /// whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        self.gateway.shutdown.cancel();
        self.gateway.tasks.close();
        for z in &self.zones {
            z.tasks.close();
        }
        let (main, zones) = (self.gateway.clone(), self.zones.clone());
        let all = async move {
            main.tasks.wait().await;
            for z in &zones {
                z.tasks.wait().await;
            }
        };
        let drained = tokio::time::timeout(self.gateway.config.drain_timeout, all).await;
        if let Some(audit) = self.gateway.audit.clone() {
            // What was decided before the drain ended reaches the file.
            let _ =
                tokio::task::spawn_blocking(move || audit.flush(std::time::Duration::from_secs(5)))
                    .await;
        }
        drained.is_ok()
    }
}

/// Binds one listener; the error names the address.
async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// Binds every listener and starts serving.
pub async fn start(config: GatewayConfig) -> Result<Running, AppError> {
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let bootstrap = bind(config.listen).await?;
    let admin_listener = bind(config.admin).await?;
    let bootstrap_addr = bootstrap.local_addr().map_err(|source| AppError::Bind {
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| AppError::Bind {
            addr: config.admin,
            source,
        })?;
    let policies =
        Arc::new(PolicyStore::open(&config.policies, metrics.clone()).map_err(AppError::Policies)?);
    if let Some(url) = &config.schema_registry {
        tracing::info!(%url, "Avro schema ids resolve against this external registry");
    }
    let keys = key_ring(&config, &policies)?;
    let security = crate::proxy::Security::load(&config)?;
    let admin_security = admin::AdminSecurity::load(&config)?;
    // meshgate's own producer: dead letters, and the audit topic.
    let producer = crate::own_client::producer::Producer::start(
        config.upstream.clone(),
        security.own.clone(),
        config.own_client.write_timeout,
    );
    let audit = match config.audit.clone() {
        Some(a) => {
            let (file, topic) = (a.file.clone(), a.topic.clone());
            let log =
                crate::audit::AuditLog::start(a, metrics.audit_counters(), Some(producer.clone()))?;
            tracing::info!(file = ?file, topic = ?topic, "audit trail on");
            Some(log)
        }
        None => None,
    };
    let dead_letters = match config.own_client.spool.clone() {
        Some(spool) => {
            let dir = spool.dir.clone();
            let spool = crate::own_client::spool::Spool::open(
                spool,
                producer.clone(),
                crate::own_client::spool::SpoolCounters {
                    waiting_bytes: metrics.dead_letter_spool_bytes.clone(),
                    records: metrics.dead_letter_records.clone(),
                },
            )?;
            tracing::info!(dir = %dir.display(), "dead letters go through the spool");
            crate::proxy::dead_letter::Sink::Spooled(spool)
        }
        None => crate::proxy::dead_letter::Sink::Direct(producer.clone()),
    };
    let zone_base = config.clone();
    let gateway = Gateway::new(
        config,
        metrics.clone(),
        policies.clone(),
        shutdown.clone(),
        security,
        audit.clone(),
        dead_letters.clone(),
        keys.clone(),
        None,
    );
    let mut zones = Vec::new();
    for zone in policies.current().zones.iter() {
        let zone_config = zone_config(&zone_base, zone);
        let listener = bind(zone.listen).await?;
        let security = crate::proxy::Security::load(&zone_config)?;
        let zgw = Gateway::new(
            zone_config,
            metrics.clone(),
            policies.clone(),
            shutdown.clone(),
            security,
            audit.clone(),
            dead_letters.clone(),
            keys.clone(),
            Some(Arc::from(zone.name.as_str())),
        );
        zgw.serve(listener, Target::Bootstrap);
        zgw.tasks
            .spawn(refresh_metadata(zgw.clone(), zgw.health.clone()));
        tracing::info!(zone = %zone.name, listen = %zone.listen,
            broker_port_base = zgw.config.broker_port_base,
            shares = zone.shares.len(), "partner zone serving");
        zones.push(zgw);
    }
    gateway
        .tasks
        .spawn(policies.clone().watch(shutdown.clone()));
    for (node_id, port) in gateway.brokers.shadowed_node_ids() {
        tracing::warn!(
            node_id,
            port,
            "broker node id {node_id} would map onto port {port}, which meshgate uses for its listener or admin endpoint: such a broker is not served; set broker_port_base to move the plan"
        );
    }
    gateway.serve(bootstrap, Target::Bootstrap);
    let health = gateway.health.clone();
    gateway.tasks.spawn(admin::serve(
        admin_listener,
        admin::AdminState {
            metrics,
            health: health.clone(),
            policies: policies.clone(),
        },
        admin_security,
        shutdown.clone(),
    ));
    gateway
        .tasks
        .spawn(refresh_metadata(gateway.clone(), health.clone()));
    gateway
        .tasks
        .spawn(probe_upstream(gateway.clone(), health.clone()));
    tracing::info!(listen = %bootstrap_addr, admin = %admin_addr, upstream = ?gateway.config.upstream,
        broker_port_base = gateway.config.broker_port_base, "meshgate started");
    Ok(Running {
        gateway,
        bootstrap: bootstrap_addr,
        admin: admin_addr,
        health,
        zones,
    })
}

/// The configuration of a partner zone's gateway: the organisation's, with the zone's listener,
/// broker ports, advertised host and TLS identity. A zone without `tls:` serves plain TCP even
/// when the organisation's listener uses TLS: the zone's identity is its own.
fn zone_config(base: &GatewayConfig, zone: &crate::policy::zone::Zone) -> GatewayConfig {
    let mut c = base.clone();
    c.listen = zone.listen;
    c.broker_port_base = zone
        .broker_port_base
        .unwrap_or_else(|| zone.listen.port().saturating_add(1));
    if let Some(host) = &zone.advertised_host {
        c.advertised_host = host.clone();
    }
    c.tls = zone
        .tls
        .clone()
        .map(|(cert, key, client_ca)| crate::tls::ServerFiles {
            cert,
            key,
            client_ca,
        });
    c
}

/// Runs a gateway until `signal` completes, then drains.
pub async fn run(config: GatewayConfig, signal: impl Future<Output = ()>) -> Result<(), AppError> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    if running.shutdown().await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    Ok(())
}

/// Keeps the broker map current from the gateway's own Metadata calls, so that every broker's port
/// is served even before a client asks (e.g. right after a restart, when clients reconnect to the
/// broker ports they cached), and so that readiness knows whether the upstream answers.
async fn refresh_metadata(gw: Arc<Gateway>, health: Arc<Health>) {
    let mut correlation_id = 0;
    loop {
        correlation_id += 2;
        let outcome = tokio::time::timeout(
            gw.config.upstream_connect_timeout * 2,
            fetch_brokers(&gw, correlation_id),
        )
        .await
        .unwrap_or(Err(RefreshError::Timeout));
        match outcome {
            Ok(n) => {
                if health.mark_up() {
                    tracing::info!(brokers = n, "upstream reachable");
                }
            }
            Err(e) => {
                if health.mark_down(e.to_string()) {
                    tracing::warn!(error = %e, "upstream unreachable");
                }
            }
        }
        // The next refresh: after `metadata_refresh`, or within a second of the upstream being
        // found down (by this loop, the probe or the data path).
        let next = tokio::time::Instant::now() + gw.config.metadata_refresh;
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            if !health.is_up() || tokio::time::Instant::now() >= next {
                break;
            }
        }
    }
}

/// Connects to the bootstrap addresses every `PROBE_EVERY`, so that readiness follows the
/// upstream within seconds whatever the metadata refresh interval. It only turns readiness off:
/// the refresh, which also re-reads the brokers, turns it back on.
async fn probe_upstream(gw: Arc<Gateway>, health: Arc<Health>) {
    use crate::proxy::health::{PROBE_EVERY, PROBE_TIMEOUT};
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
        if !health.is_up() {
            continue; // the refresh retries every second while the upstream is down
        }
        let timeout = gw.config.upstream_connect_timeout.min(PROBE_TIMEOUT);
        let mut last = String::new();
        let mut reached = false;
        for addr in &gw.config.upstream {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await
            {
                Ok(Ok(_)) => {
                    reached = true;
                    break;
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: connect timed out"),
            }
        }
        if !reached && health.mark_down(format!("probe: {last}")) {
            tracing::warn!(error = %last, "upstream unreachable (probe)");
        }
    }
}

async fn fetch_brokers(gw: &Gateway, correlation_id: i32) -> Result<usize, RefreshError> {
    let mut stream = gw.connect_upstream(Target::Bootstrap).await?;
    let versions = call(
        &mut stream,
        correlation_id,
        0,
        &ApiVersionsRequest::default(),
    )
    .await?;
    if versions.error_code != 0 {
        return Err(RefreshError::ApiVersions(versions.error_code));
    }
    let sasl_offered = versions
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::SaslHandshake as i16);
    let upstream_max = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Metadata as i16)
        .map(|k| k.max_version)
        .ok_or(RefreshError::NoMetadata)?;
    let version = upstream_max
        .min(ApiKey::Metadata.valid_versions().max)
        .min(12);
    let mut req = MetadataRequest::default();
    // An empty topic list asks for brokers only (v1+); v0 has no way to say "none".
    req.topics = if version >= 1 { Some(vec![]) } else { None };
    let metadata = match call(&mut stream, correlation_id + 1, version, &req).await {
        Ok(m) => m,
        // A broker that requires SASL refuses Metadata from meshgate, which holds no
        // credentials of its own. It answered ApiVersions, so it is up: broker ports then follow
        // the Metadata responses that authenticated clients receive.
        Err(e) if sasl_offered => {
            tracing::debug!(error = %e, "upstream refuses Metadata before authentication; broker ports follow client Metadata");
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    for b in &metadata.brokers {
        gw.gateway_port(b.node_id.0, &b.host, b.port);
    }
    Ok(metadata.brokers.len())
}
