//! The proxy: listeners, per-connection tasks, broker addressing and response rewriting.
//!
//! The proxy never improvises a reply on the data path: a request is forwarded as its original
//! bytes (or an edited request that `enforce`, `topic_admin`, `consume` or `zone` decided on), and
//! every response edit goes through [`rewrite::rewrite_response`] (a dead-letter settlement
//! merges its own answer once the letters are written, `dead_letter::Settling`, and a partner
//! zone's Produce answer is renamed back after either, `zone::rename_produce_answer`).

pub mod brokers;
pub mod connection;
pub mod consume;
pub mod dead_letter;
pub mod enforce;
pub mod fetch_bytes;
pub mod health;
pub mod identity;
pub mod rejection;
pub mod rewrite;
/// Plain TCP or TLS: the socket type of both sides (it lives with the wire layer, which meshgate's
/// own client shares).
pub use crate::protocol::stream;
pub mod topic_admin;
pub mod zone;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::GatewayConfig;
use crate::generation::PolicyStore;
use crate::metrics::Metrics;
use crate::policy::judge::Limits;
use crate::tls::ServerTls;
use brokers::{BrokerMap, Observed};
use identity::Identity;
use rewrite::BrokerAddresses;
use stream::Stream;

/// TLS on each side of the proxy, loaded at start.
#[derive(Default)]
pub struct Security {
    /// The client-facing TLS identity (and client CA, for mutual TLS).
    pub client: Option<Arc<ServerTls>>,
    /// The TLS client for upstream brokers.
    pub upstream: Option<tokio_rustls::TlsConnector>,
    /// meshgate's own connections (the dead-letter producer): TLS with its client
    /// certificate, and its SASL credentials.
    pub own: crate::own_client::Settings,
}

impl Security {
    /// Loads the configured certificates; a file that does not load stops the start.
    pub fn load(config: &GatewayConfig) -> Result<Security, SecurityError> {
        let client = config
            .tls
            .clone()
            .map(ServerTls::new)
            .transpose()
            .map_err(SecurityError::Client)?;
        let upstream = config
            .upstream_tls
            .as_ref()
            .map(|u| crate::tls::client_config(u.ca.as_deref()))
            .transpose()
            .map_err(SecurityError::Upstream)?
            .map(tokio_rustls::TlsConnector::from);
        let own_tls = match (&config.upstream_tls, &config.own_client.tls_identity) {
            (Some(u), Some((cert, key))) => Some(tokio_rustls::TlsConnector::from(
                crate::tls::client_config_as(u.ca.as_deref(), Some((cert, key)))
                    .map_err(SecurityError::OwnClient)?,
            )),
            _ => upstream.clone(),
        };
        let sasl = match &config.own_client.sasl {
            None => None,
            Some((mechanism, username, file)) => {
                let text =
                    std::fs::read_to_string(file).map_err(|source| SecurityError::Password {
                        path: file.clone(),
                        source,
                    })?;
                Some(crate::own_client::Sasl {
                    mechanism: *mechanism,
                    username: username.clone(),
                    password: text.trim_end_matches(['\r', '\n']).to_string(),
                })
            }
        };
        let own = crate::own_client::Settings {
            tls: own_tls,
            sasl,
            connect_timeout: config.upstream_connect_timeout,
        };
        Ok(Security {
            client,
            upstream,
            own,
        })
    }
}

/// Which side's TLS files do not load.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("tls: {0}")]
    Client(crate::tls::TlsFileError),
    #[error("upstream_tls: {0}")]
    Upstream(crate::tls::TlsFileError),
    #[error("own_client: {0}")]
    OwnClient(crate::tls::TlsFileError),
    #[error("own_client.sasl.password_file: {}: {source}", path.display())]
    Password {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Topic ids kept at most (`Gateway::topic_ids`).
const MAX_TOPIC_IDS: usize = 1_000_000;

/// What a gateway port stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The bootstrap port: any upstream bootstrap broker.
    Bootstrap,
    /// The port of one upstream broker.
    Broker(i32),
}

/// State shared by every listener and connection of one gateway.
/// Why meshgate could not reach an upstream broker.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}: connect timed out")]
    Timeout(String),
    #[error("{0}: TLS {1}")]
    Tls(String, String),
    #[error("broker {0} is unknown")]
    UnknownBroker(i32),
    #[error("no upstream address")]
    NoAddress,
}

pub struct Gateway {
    pub config: GatewayConfig,
    pub brokers: BrokerMap,
    pub metrics: Arc<Metrics>,
    pub policies: Arc<PolicyStore>,
    /// What judging needs (metrics, limits, all-or-nothing clients), shared with judging jobs.
    pub judge: Arc<enforce::JudgeContext>,
    /// The external schema registry, when `--schema-registry` is set.
    pub registry: Option<Arc<crate::schema::registry_client::RegistryClient>>,
    /// Topic ids of contract topics, learned from Metadata responses (Fetch v13+ names topics by
    /// id): for attributing fetched bytes to data products.
    pub topic_ids: std::sync::RwLock<std::collections::HashMap<uuid::Uuid, String>>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Requests judged on the blocking pool at once (`judge_threads`).
    pub judging: Arc<Semaphore>,
    /// Whether the upstream can be reached (`/readyz`).
    pub health: Arc<health::Health>,
    /// The audit trail, when configured.
    pub audit: Option<crate::audit::AuditLog>,
    /// Where dead letters go: meshgate's own producer (idle, no connection, until a contract
    /// with `on_reject` refuses records), or the spool in front of it.
    pub dead_letters: dead_letter::Sink,
    /// Field protection's data keys (`protect:` of the configuration), shared by every
    /// listener's gateway.
    pub keys: Option<Arc<crate::protect::keys::KeyRing>>,
    /// The partner zone this gateway serves (its own listener, broker ports and TLS identity),
    /// or `None` for the organisation's own listener.
    pub zone: Option<Arc<str>>,
    security: Security,
    connections: Arc<Semaphore>,
    me: std::sync::Weak<Gateway>,
}

impl Gateway {
    /// The name of the topic with this id, as learned from Metadata answers (`topic_ids`).
    pub fn topic_name(&self, id: [u8; 16]) -> Option<String> {
        self.topic_ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uuid::Uuid::from_bytes(id))
            .cloned()
    }

    /// A gateway for the organisation's listener (`zone: None`) or for one partner zone; the
    /// zones' gateways share the metrics, policies, shutdown, audit trail and own producer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: GatewayConfig,
        metrics: Arc<Metrics>,
        policies: Arc<PolicyStore>,
        shutdown: CancellationToken,
        security: Security,
        audit: Option<crate::audit::AuditLog>,
        dead_letters: dead_letter::Sink,
        keys: Option<Arc<crate::protect::keys::KeyRing>>,
        zone: Option<Arc<str>>,
    ) -> Arc<Self> {
        if let Some(tls) = &security.client {
            tls.watch(shutdown.clone());
        }
        Arc::new_cyclic(|me| Gateway {
            zone,
            keys,
            dead_letters,
            security,
            registry: config.schema_registry.as_deref().and_then(|url| {
                match crate::schema::registry_client::RegistryClient::new(
                    url,
                    Duration::from_secs(5),
                    10_000,
                ) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(e) => {
                        tracing::error!(error = %e, "schema registry disabled");
                        None
                    }
                }
            }),
            policies,
            judge: Arc::new(enforce::JudgeContext {
                metrics: metrics.clone(),
                limits: Limits {
                    max_inflated_request_bytes: config.max_inflated_request_bytes,
                    max_request_records: config.max_request_records,
                    ..Limits::default()
                },
                all_or_nothing_clients: config.all_or_nothing_clients.clone(),
            }),
            judging: Arc::new(Semaphore::new(config.judge_threads)),
            health: Arc::new(health::Health::default()),
            audit,
            topic_ids: Default::default(),
            brokers: BrokerMap::new(
                config.advertised_host.clone(),
                config.broker_port_base,
                config.reserved_ports(),
            ),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
            metrics,
            shutdown,
            tasks: TaskTracker::new(),
            me: me.clone(),
        })
    }

    /// Starts accepting on `listener` for `target`, until shutdown.
    pub fn serve(self: &Arc<Self>, listener: TcpListener, target: Target) {
        let gw = self.clone();
        self.tasks
            .spawn(async move { gw.accept_loop(listener, target).await });
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, target: Target) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (socket, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, ?target, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                self.metrics.connections_refused.inc();
                tracing::warn!(%peer, limit = self.config.max_connections, "connection refused: max_connections reached");
                drop(socket);
                continue;
            };
            let gw = self.clone();
            self.tasks.spawn(async move {
                gw.metrics.connections_active.inc();
                gw.clone().handle(socket, peer, target).await;
                gw.metrics.connections_active.dec();
                drop(permit);
            });
        }
    }

    async fn handle(
        self: Arc<Self>,
        client: TcpStream,
        peer: std::net::SocketAddr,
        target: Target,
    ) {
        let _ = client.set_nodelay(true);
        let (client, identity) = match &self.security.client {
            None => (Stream::Plain(client), Identity::new(None)),
            Some(tls) => {
                let stream = match crate::tls::accept(tls.acceptor(), client).await {
                    Ok(s) => s,
                    Err(e) => {
                        self.metrics.tls_client_failures.inc();
                        tracing::warn!(%peer, ?target, error = %e, "client TLS handshake failed; closing");
                        return;
                    }
                };
                let principal = match stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| crate::tls::principal_of(cert, &self.config.principal_mapping))
                    .transpose()
                {
                    Ok(p) => p,
                    Err(e) => {
                        // Kafka fails authentication for a name no mapping rule matches.
                        self.metrics.tls_client_failures.inc();
                        tracing::warn!(%peer, ?target, error = %e, "client certificate has no principal; closing");
                        return;
                    }
                };
                if let Some(p) = &principal {
                    tracing::debug!(%peer, principal = %p, "client certificate accepted");
                }
                (
                    Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(stream))),
                    Identity::new(principal),
                )
            }
        };
        let upstream = match self.connect_upstream(target).await {
            Ok(u) => u,
            Err(e) => {
                self.metrics.upstream_errors.inc();
                if target == Target::Bootstrap {
                    self.health.data_path_failed(&e.to_string());
                }
                tracing::warn!(%peer, ?target, error = %e, "cannot reach upstream; closing client connection");
                return;
            }
        };
        let identity = Arc::new(identity.from_peer(peer));
        match connection::proxy(self.clone(), client, upstream, identity).await {
            Ok(()) => tracing::debug!(%peer, ?target, "connection closed"),
            Err(e) => {
                if let Some(label) = e.client_fault_label() {
                    self.metrics
                        .frames_rejected
                        .with_label_values(&[label])
                        .inc();
                    tracing::warn!(%peer, ?target, error = %e, "closing client connection");
                } else if matches!(e, connection::ConnError::ClientIo(_)) {
                    tracing::debug!(%peer, ?target, error = %e, "client went away");
                } else {
                    self.metrics.upstream_errors.inc();
                    tracing::warn!(%peer, ?target, error = %e, "closing client connection");
                }
            }
        }
    }

    /// Connects to the upstream broker that `target` stands for, over TLS when configured (the
    /// broker's certificate must name the host meshgate dials: its advertised host, for brokers
    /// learned from Metadata).
    pub async fn connect_upstream(&self, target: Target) -> Result<Stream, UpstreamError> {
        let candidates = match target {
            Target::Bootstrap => self.config.upstream.clone(),
            Target::Broker(id) => vec![self
                .brokers
                .upstream_of(id)
                .ok_or(UpstreamError::UnknownBroker(id))?],
        };
        let mut last = UpstreamError::NoAddress;
        for addr in &candidates {
            match tokio::time::timeout(self.config.upstream_connect_timeout, self.connect_one(addr))
                .await
            {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = e,
                Err(_) => last = UpstreamError::Timeout(addr.clone()),
            }
        }
        Err(last)
    }

    async fn connect_one(&self, addr: &str) -> Result<Stream, UpstreamError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| UpstreamError::Connect(addr.to_string(), e))?;
        let _ = tcp.set_nodelay(true);
        let Some(connector) = &self.security.upstream else {
            return Ok(Stream::Plain(tcp));
        };
        let tls = |reason: String| UpstreamError::Tls(addr.to_string(), reason);
        let host = crate::config::split_host_port(addr)
            .map(|(h, _)| h.to_string())
            .ok_or_else(|| tls("not HOST:PORT".into()))?;
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| tls(format!("not a TLS server name: {e}")))?;
        match connector.connect(name, tcp).await {
            Ok(stream) => Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(
                stream,
            )))),
            Err(e) => {
                tracing::error!(upstream = %addr, error = %e, "upstream TLS handshake failed; refusing this broker");
                Err(tls(format!("handshake: {e}")))
            }
        }
    }

    /// Binds the gateway port for a newly seen broker and starts serving it; false when it could
    /// not be bound (the broker is then not advertised, and the next sighting tries again).
    fn bind_broker_port(&self, node_id: i32, port: u16) -> bool {
        let Some(gw) = self.me.upgrade() else {
            return false;
        };
        let addr = std::net::SocketAddr::new(self.config.listen.ip(), port);
        let bound = std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        });
        match bound {
            Ok(listener) => {
                self.brokers.set_listening(node_id, true);
                tracing::info!(node_id, %addr, upstream = ?self.brokers.upstream_of(node_id), "serving broker");
                gw.serve(listener, Target::Broker(node_id));
                true
            }
            Err(e) => {
                self.metrics.broker_port_failures.inc();
                tracing::error!(node_id, %addr, error = %e, "cannot bind the gateway port for this broker; not advertising it");
                false
            }
        }
    }
}

impl BrokerAddresses for Gateway {
    fn saw_topic_id(&self, name: &str, id: uuid::Uuid) {
        // Contract topics (fetched bytes per data product); every topic while reading is
        // restricted (Fetch v13+ is judged by name, and an unknown id fails closed).
        let policies = self.policies.current();
        // A zone judges every Fetch v13+ by id: it keeps every topic's.
        let wanted = self.zone.is_some()
            || policies.contract_for(name).is_some()
            || policies.restricts_consumers;
        if id.is_nil() || !wanted {
            return;
        }
        let known = self
            .topic_ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|n| n == name);
        if !known {
            let mut ids = self.topic_ids.write().unwrap_or_else(|p| p.into_inner());
            // Bounded: past this many, the map starts over and is learned again from the next
            // Metadata answers (an id not in it is refused UNKNOWN_TOPIC_ID, which makes the
            // client ask for Metadata), rather than meshgate's memory grow.
            if ids.len() >= MAX_TOPIC_IDS {
                ids.clear();
            }
            ids.insert(id, name.to_string());
        }
    }

    fn advertised_host(&self) -> &str {
        self.brokers.advertised_host()
    }

    fn gateway_port(&self, node_id: i32, host: &str, port: i32) -> Option<i32> {
        match self.brokers.observe(node_id, host, port) {
            Observed::Known(p) => Some(p as i32),
            Observed::New(p) => self.bind_broker_port(node_id, p).then_some(p as i32),
            Observed::Unmappable => {
                self.metrics.broker_port_failures.inc();
                tracing::error!(
                    node_id,
                    base = self.config.broker_port_base,
                    "broker node id has no gateway port (outside 1..=65535, or the listen or admin port); not advertising it"
                );
                None
            }
        }
    }
}
