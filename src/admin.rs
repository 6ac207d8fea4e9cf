//! The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/catalog`, `/registry/`.
//!
//! It binds where `admin` says, serves HTTPS when given a certificate (reloaded like the data
//! path's), and with a token file requires `Authorization: Bearer <token>` on every path but
//! `/healthz`, which liveness probes call without credentials.
//!
//! It shares nothing with the data path but metric handles, health flags and the policy store,
//! and never blocks it: every handler reads atomics or the current policy set.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tls::ServerTls;

use crate::generation::PolicyStore;
use crate::metrics::{now_ms, Metrics};
use crate::policy::{Contract, Format};
use crate::proxy::health::Health;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub policies: Arc<PolicyStore>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/catalog", get(catalog))
        .route("/catalog/rejections", get(catalog_rejections))
        .route("/chargeback", get(chargeback))
        .route("/registry/schemas/ids/{id}", get(registry_schema_by_id))
        .route("/registry/subjects", get(registry_subjects))
        .route(
            "/registry/subjects/{subject}",
            axum::routing::post(registry_lookup),
        )
        .route(
            "/registry/subjects/{subject}/versions",
            get(registry_versions),
        )
        .route(
            "/registry/subjects/{subject}/versions/{version}",
            get(registry_version),
        )
        .route("/registry/config", get(registry_config))
        .route("/registry/config/{subject}", get(registry_subject_config))
        .with_state(state)
}

/// Why the admin endpoint's TLS identity or token does not load.
#[derive(Debug, thiserror::Error)]
pub enum AdminSetupError {
    #[error("admin TLS: {0}")]
    Tls(crate::tls::TlsFileError),
    #[error("admin token file {}: {source}", path.display())]
    Token {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("admin token file {} is empty", .0.display())]
    EmptyToken(std::path::PathBuf),
}

/// How the admin endpoint is protected.
#[derive(Default)]
pub struct AdminSecurity {
    /// Serve HTTPS with this identity.
    pub tls: Option<Arc<ServerTls>>,
    /// Require `Authorization: Bearer <token>` on every path but `/healthz`.
    pub token: Option<Arc<str>>,
}

impl AdminSecurity {
    /// Loads the admin certificate and token files; an error stops the start.
    pub fn load(config: &crate::config::GatewayConfig) -> Result<AdminSecurity, AdminSetupError> {
        let tls = config
            .admin_tls
            .clone()
            .map(ServerTls::new)
            .transpose()
            .map_err(AdminSetupError::Tls)?;
        let token = match &config.admin_token_file {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| AdminSetupError::Token {
                        path: path.clone(),
                        source,
                    })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(AdminSetupError::EmptyToken(path.clone()));
                }
                Some(token.into())
            }
        };
        Ok(AdminSecurity { tls, token })
    }
}

pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    security: AdminSecurity,
    shutdown: CancellationToken,
) {
    let mut app = router(state);
    if let Some(token) = security.token.clone() {
        app = app.layer(axum::middleware::from_fn(move |req, next| {
            require_token(token.clone(), req, next)
        }));
    }
    let stop = shutdown.clone();
    let result = match security.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Some(tls) => {
            tls.watch(shutdown.clone());
            let tls_listener = TlsListener::start(listener, tls, shutdown.clone());
            axum::serve(tls_listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "admin endpoint stopped");
    }
}

/// Bearer-token check for everything but `/healthz` (which liveness probes call bare).
async fn require_token(
    token: Arc<str>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response(),
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A TLS listener for axum: handshakes run in their own tasks (a client that stalls its
/// handshake holds up no one) and finished connections queue for `accept`.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, tls: Arc<ServerTls>, shutdown: CancellationToken) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (socket, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "admin accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match crate::tls::accept(acceptor, socket).await {
                        Ok(stream) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "admin connection refused"),
                    }
                });
            }
        });
        TlsListener { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): wait for axum's graceful shutdown to stop us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let current = s.policies.current();
    s.metrics.refresh_contracts(current.contract_facts());
    s.metrics
        .zones
        .refresh(current.zones.iter().map(|z| z.name.as_str()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// Ready when a policy set is loaded and the upstream answered the last metadata refresh.
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let generation = s.policies.generation();
    if s.health.is_up() {
        (
            StatusCode::OK,
            format!(
                "ready: policy generation {generation} (sha256 {}), upstream reachable\n",
                s.policies.current().content_hash
            ),
        )
    } else {
        let why = s
            .health
            .reason()
            .unwrap_or_else(|| "not contacted yet".into());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: upstream unreachable: {why}\n"),
        )
    }
}

/// One data product in the catalog.
#[derive(Serialize)]
pub struct Product {
    pub name: String,
    pub owner: String,
    pub topic: String,
    pub description: Option<String>,
    pub schema: Option<ProductSchema>,
    pub sla: ProductSla,
    pub quality: ProductQuality,
    pub live: ProductLive,
    /// Who may produce (`producers:`); empty: anyone.
    pub producers: Vec<String>,
    /// Who may read and with which groups (`consumers:`); none: anyone.
    pub consumers: Option<Vec<String>>,
    /// Where refused records go (`on_reject.dead_letter`), and how the producer is answered.
    pub dead_letter: Option<ProductDeadLetter>,
    /// Who reads it and how far behind each group is (`usage`).
    pub usage: crate::usage::ProductUsage,
    /// Where the contract is defined.
    pub source: String,
    /// For an ODCS contract: its identity in the standard and what it declares that meshgate
    /// does not enforce.
    pub odcs: Option<ProductOdcs>,
    /// Quality rules measured over a window (ODCS), with what was counted so far.
    pub slis: Vec<ProductSli>,
    /// Field protection (`protect:`): who reads protected fields in plaintext, and what the
    /// others see.
    pub protection: Option<ProductProtection>,
}

#[derive(Serialize)]
pub struct ProductProtection {
    /// `pii_readers:`.
    pub readers: Vec<String>,
    /// `mask_on_fetch:` (`hash`, or the mask text); none: other readers get the ciphertext.
    pub mask: Option<String>,
}

#[derive(Serialize)]
pub struct ProductOdcs {
    pub id: String,
    pub api_version: String,
    pub status: Option<String>,
    pub version: Option<String>,
    pub domain: Option<String>,
    pub data_product: Option<String>,
    pub members: Vec<String>,
    pub not_enforced: Vec<ProductNotEnforced>,
}

/// An element declared in an ODCS document and not enforced: where, and why.
#[derive(Serialize)]
pub struct ProductNotEnforced {
    pub element: String,
    pub at: String,
    pub reason: String,
}

#[derive(Serialize)]
pub struct ProductSli {
    pub id: String,
    pub metric: String,
    pub target: String,
    /// Records counted, and bad among them, since this policy generation was loaded.
    pub records: u64,
    pub bad: u64,
    /// The bad records as the target counts them (rows or percent); none before any record
    /// and for rowCount (a rate: see `meshgate alerts`).
    pub value: Option<f64>,
    pub met: Option<bool>,
    pub window: &'static str,
    pub source: String,
}

fn not_enforced(file: &str, notes: &[crate::policy::odcs::NotEnforced]) -> Vec<ProductNotEnforced> {
    notes
        .iter()
        .map(|n| ProductNotEnforced {
            element: n.element.clone(),
            at: format!("{file}:{}", n.line),
            reason: n.reason.clone(),
        })
        .collect()
}

fn product_odcs(info: &crate::policy::odcs::OdcsInfo, file: &str) -> ProductOdcs {
    ProductOdcs {
        id: info.id.clone(),
        api_version: info.api_version.clone(),
        status: info.status.clone(),
        version: info.version.clone(),
        domain: info.domain.clone(),
        data_product: info.data_product.clone(),
        members: info.members.clone(),
        not_enforced: not_enforced(file, &info.not_enforced),
    }
}

#[derive(Serialize)]
pub struct ProductDeadLetter {
    pub topic: String,
    pub respond: &'static str,
    pub max_records_per_second: u64,
    pub max_bytes_per_second: u64,
}

#[derive(Serialize)]
pub struct ProductSchema {
    pub format: &'static str,
    pub version: Option<String>,
    pub compatibility: &'static str,
    pub fields: Vec<ProductField>,
}

#[derive(Serialize)]
pub struct ProductField {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub optional: bool,
    /// Its classification (`pii`, ...), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// How meshgate protects it (`encrypt`, `encrypt (deterministic)`, `require_encrypted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<&'static str>,
}

#[derive(Serialize)]
pub struct ProductSla {
    pub availability: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    pub freshness_seconds: Option<f64>,
}

#[derive(Serialize)]
pub struct ProductQuality {
    pub completeness: Option<f64>,
    pub validity_rules: Vec<String>,
}

#[derive(Serialize)]
pub struct ProductLive {
    pub records_accepted: u64,
    pub records_rejected: u64,
    pub validity_ratio: Option<f64>,
    pub completeness_ratio: Option<f64>,
    pub availability_ratio: Option<f64>,
    /// Seconds since the last accepted record; `None` when none was seen since start.
    pub freshness_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct CatalogQuery {
    format: Option<String>,
    /// The window for `zero_would_rejects`: the last N hours (default: since the process
    /// started).
    hours: Option<f64>,
    /// Show only this principal's recent rejections (`User:orders-svc`).
    principal: Option<String>,
}

#[derive(Deserialize)]
struct RejectionsQuery {
    principal: Option<String>,
    limit: Option<usize>,
}

/// The most recent rejections (newest first, at most `limit`, default 100), of one principal
/// when `?principal=` is given: what a producer team reads to see why it was refused.
async fn catalog_rejections(
    State(s): State<AdminState>,
    Query(q): Query<RejectionsQuery>,
) -> Response {
    let limit = q
        .limit
        .unwrap_or(100)
        .min(crate::metrics::RECENT_REJECTIONS);
    let list = s
        .metrics
        .recent_rejections
        .list(q.principal.as_deref(), limit);
    Json(serde_json::json!({ "rejections": list })).into_response()
}

/// One rule in force, with its mode and, for rules that shadow, what they would have refused.
#[derive(Serialize)]
pub struct CatalogRule {
    pub policy: &'static str,
    pub rule: String,
    /// `enforce`, `shadow`, `off` or `canary`.
    pub mode: &'static str,
    /// For a canary: the principals it enforces for, and the share of the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CatalogCanary>,
    /// The data product, for contract rules.
    pub contract: Option<String>,
    pub source: String,
    /// Partitions or topic changes it would have refused while shadowing, since the start.
    pub would_reject_total: u64,
    /// Seconds since the last one; `None` when none since the start.
    pub last_would_reject_seconds_ago: Option<f64>,
    /// For a rule that shadows (`shadow`, `canary`): no would-reject in the window (`?hours=N`,
    /// or since the start). The sign a team waits for before it enforces the rule.
    pub zero_would_rejects: Option<bool>,
}

#[derive(Serialize)]
pub struct CatalogCanary {
    pub principals: Vec<String>,
    pub percent: f64,
}

/// The rules of `set`, with the would-reject counts of `metrics`, at `now` (Unix seconds).
pub fn catalog_rules(
    set: &crate::policy::PolicySet,
    metrics: &Metrics,
    hours: Option<f64>,
    now: i64,
) -> Vec<CatalogRule> {
    use crate::policy::mode::Mode;
    let counts = metrics.would_rejects();
    set.rules_in_force()
        .into_iter()
        .map(|r| {
            let (total, last) = counts
                .get(&(r.policy.to_string(), r.rule.clone()))
                .copied()
                .unwrap_or((0, 0));
            let ago = (last > 0).then(|| (now - last).max(0) as f64);
            let shadows = matches!(r.mode, Mode::Shadow | Mode::Canary(_));
            let quiet = match (hours, ago) {
                (_, None) => true,
                (Some(h), Some(ago)) => ago > h * 3600.0,
                (None, Some(_)) => false,
            };
            CatalogRule {
                policy: r.policy,
                mode: r.mode.name(),
                canary: match r.mode {
                    Mode::Canary(c) => Some(CatalogCanary {
                        principals: c.principals.iter().map(|p| p.to_string()).collect(),
                        percent: c.percent,
                    }),
                    _ => None,
                },
                contract: r.contract.map(|c| c.name.clone()),
                source: r.origin.to_string(),
                would_reject_total: total,
                last_would_reject_seconds_ago: ago,
                zero_would_rejects: shadows.then_some(quiet),
                rule: r.rule,
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct ChargebackQuery {
    /// The window: `24h` (the default), `7d`, `90m`, seconds.
    since: Option<String>,
    /// `csv` or `json` (the default).
    format: Option<String>,
}

/// Usage per team and principal over whole hours back from now, as CSV or JSON.
async fn chargeback(State(s): State<AdminState>, Query(q): Query<ChargebackQuery>) -> Response {
    let Some(window) = crate::chargeback::parse_window(q.since.as_deref().unwrap_or("24h")) else {
        return (
            StatusCode::BAD_REQUEST,
            "since: a duration such as 24h, 7d, 90m or a number of seconds\n",
        )
            .into_response();
    };
    let since = (now_ms() / 1000).saturating_sub(window);
    let rows = s.metrics.chargeback.since(since);
    match q.format.as_deref() {
        Some("csv") => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            crate::chargeback::csv(&rows),
        )
            .into_response(),
        None | Some("json") => {
            Json(serde_json::json!({ "since": since, "rows": rows })).into_response()
        }
        Some(_) => (StatusCode::BAD_REQUEST, "format: csv or json\n").into_response(),
    }
}

/// The data products, as JSON, or as an HTML page for a browser (by `Accept`, or `?format=`).
async fn catalog(
    State(s): State<AdminState>,
    Query(q): Query<CatalogQuery>,
    headers: HeaderMap,
) -> Response {
    let set = s.policies.current();
    let products: Vec<Product> = set
        .contracts
        .iter()
        .map(|c| product(c, &s.metrics))
        .collect();
    let now = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
    let hours = q.hours.filter(|h| h.is_finite() && *h > 0.0);
    let rules = catalog_rules(&set, &s.metrics, hours, now);
    let unenforced: Vec<ProductOdcs> = set
        .odcs_unenforced
        .iter()
        .map(|(origin, info)| product_odcs(info, &origin.file))
        .collect();
    let zones: Vec<CatalogZone> = set
        .zones
        .iter()
        .map(|z| CatalogZone {
            name: z.name.clone(),
            listen: z.listen.to_string(),
            principals: z.principals.iter().map(|p| p.to_string()).collect(),
            group_prefix: z.group_prefix.clone(),
            shares: z
                .shares
                .iter()
                .map(|sh| CatalogShare {
                    alias: sh.alias.clone(),
                    topic: sh.topic.clone(),
                    produce: sh.produce,
                })
                .collect(),
            usage: s.metrics.zones.usage(&z.name),
            source: z.origin.to_string(),
        })
        .collect();
    let wants_html = match q.format.as_deref() {
        Some("html") => true,
        Some(_) => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
    };
    if wants_html {
        let recent = s.metrics.recent_rejections.list(q.principal.as_deref(), 50);
        let mut page = render_html(&products, &rules, hours);
        let end = page.len() - "</body></html>".len();
        let mut tail = render_recent(&recent, q.principal.as_deref());
        render_zones(&mut tail, &zones);
        for o in &unenforced {
            let _ = write!(
                tail,
                "<section class=\"product odcs-unenforced\"><h2>ODCS <code>{}</code>: not enforced</h2>",
                esc(&o.id)
            );
            render_not_enforced(&mut tail, &o.not_enforced);
            tail.push_str("</section>");
        }
        page.insert_str(end, &tail);
        Html(page).into_response()
    } else {
        Json(serde_json::json!({
            "data_products": products,
            "rules": rules,
            "odcs_not_enforced": unenforced,
            "zones": zones,
        }))
        .into_response()
    }
}

fn product(c: &Contract, metrics: &Metrics) -> Product {
    let m = metrics.contract(&c.name, &c.topic);
    let accepted = metrics
        .produce_records
        .with_label_values(&[&c.topic, "accepted"])
        .get();
    let rejected = metrics
        .produce_records
        .with_label_values(&[&c.topic, "rejected"])
        .get();
    let ratio = |a: u64, b: u64| (a + b > 0).then(|| a as f64 / (a + b) as f64);
    let (valid, invalid) = (m.records_valid.get(), m.records_invalid.get());
    let last = m.last_accepted_ms.load(Ordering::Relaxed);
    Product {
        usage: metrics.usage.product(&c.topic, std::time::Instant::now()),
        producers: c.producers.iter().map(|p| p.to_string()).collect(),
        consumers: c.consumers.as_ref().map(|r| {
            r.principals
                .iter()
                .map(|p| p.to_string())
                .chain(r.groups.iter().map(|g| g.to_string()))
                .collect()
        }),
        dead_letter: c.on_reject.as_ref().map(|o| ProductDeadLetter {
            topic: o.dead_letter.to_string(),
            respond: match o.respond {
                crate::policy::Respond::Error => "error",
                crate::policy::Respond::Success => "success",
            },
            max_records_per_second: o.max_records_per_second,
            max_bytes_per_second: o.max_bytes_per_second,
        }),
        name: c.name.clone(),
        owner: c.owner.clone(),
        topic: c.topic.clone(),
        description: c.description.clone(),
        schema: c.schema.as_ref().map(|s| ProductSchema {
            format: match s.format {
                Format::Avro => "avro",
                Format::Json => "json",
            },
            version: s.version.clone(),
            compatibility: s.compatibility.name(),
            fields: s
                .shape
                .as_ref()
                .and_then(|sh| sh.fields())
                .map(|fs| {
                    fs.iter()
                        .map(|f| ProductField {
                            name: f.name.clone(),
                            ty: f.shape.type_name(),
                            optional: f.optional || f.shape.accepts_null(),
                            classification: s.classification_of(&f.name).map(str::to_string),
                            protection: c.protect.as_ref().and_then(|p| {
                                use crate::policy::protect::Action;
                                let pf = p.fields.iter().find(|pf| *pf.dotted == *f.name)?;
                                Some(match (pf.action, pf.deterministic) {
                                    (Action::Encrypt, false) => "encrypt",
                                    (Action::Encrypt, true) => "encrypt (deterministic)",
                                    (Action::RequireEncrypted, _) => "require_encrypted",
                                })
                            }),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        sla: ProductSla {
            availability: c.sla.availability,
            latency_p99_seconds: c.sla.latency_p99.map(|d| d.as_secs_f64()),
            freshness_seconds: c.sla.freshness.map(|d| d.as_secs_f64()),
        },
        quality: ProductQuality {
            completeness: c.completeness_target,
            validity_rules: c.rules.iter().map(|r| r.rule.text.clone()).collect(),
        },
        live: ProductLive {
            records_accepted: accepted,
            records_rejected: rejected,
            validity_ratio: ratio(valid, invalid),
            completeness_ratio: (valid + invalid > 0)
                .then(|| m.records_complete.get() as f64 / (valid + invalid) as f64),
            availability_ratio: ratio(m.requests_ok.get(), m.requests_failed.get()),
            freshness_seconds: (last > 0).then(|| now_ms().saturating_sub(last) as f64 / 1000.0),
        },
        source: c.origin.to_string(),
        protection: c.protect.as_ref().map(|p| ProductProtection {
            readers: p.readers.iter().map(|r| r.to_string()).collect(),
            mask: p.mask.as_ref().map(|m| match m {
                crate::policy::protect::Mask::Hash => "hash".to_string(),
                crate::policy::protect::Mask::Text(t) => t.to_string(),
            }),
        }),
        odcs: c.odcs.as_ref().map(|i| product_odcs(i, &c.origin.file)),
        slis: c
            .slis
            .iter()
            .map(|sli| {
                let measured = sli.measured();
                ProductSli {
                    id: sli.id.clone(),
                    metric: sli.metric().to_string(),
                    target: sli.target_text(),
                    records: sli.records.load(Ordering::Relaxed),
                    bad: sli.bad.load(Ordering::Relaxed),
                    value: measured.map(|(v, _)| v),
                    met: measured.map(|(_, m)| m),
                    window: crate::policy::sli::WINDOW,
                    source: sli.origin.to_string(),
                }
            })
            .collect(),
    }
}

use crate::markup::escape as esc;

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "—".into())
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        Some(s) => format!("{s:.0} s"),
    }
}

/// A plain page: no scripts, readable as it is served.
fn render_html(products: &[Product], rules: &[CatalogRule], hours: Option<f64>) -> String {
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>meshgate: data products</title>\
<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330;background:#f6f7f9}\
h1{font-size:1.5rem}.product{background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:1rem 1.25rem;margin:0 0 1.25rem}\
.product h2{margin:.1rem 0 .3rem;font-size:1.2rem}.meta{color:#5a6272;margin:0 0 .6rem}\
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #e1e4ea;padding:.25rem .6rem;text-align:left;font-size:.9rem}\
th{background:#f0f2f5}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem}td{overflow-wrap:anywhere}\
code{background:#f0f2f5;padding:0 .25rem;border-radius:3px}</style></head><body>",
    );
    let _ = write!(h, "<h1>Data products ({})</h1>", products.len());
    if products.is_empty() {
        h.push_str("<p>No data contracts are in force.</p>");
    }
    for p in products {
        let _ = write!(
            h,
            "<section class=\"product\" id=\"{id}\"><h2 class=\"name\">{name}</h2>\
<p class=\"meta\">owner <strong class=\"owner\">{owner}</strong> · topic <code>{topic}</code> · defined in <code>{src}</code></p>",
            id = esc(&p.name),
            name = esc(&p.name),
            owner = esc(&p.owner),
            topic = esc(&p.topic),
            src = esc(&p.source),
        );
        if let Some(o) = &p.odcs {
            let _ = write!(
                h,
                "<p class=\"meta odcs\">ODCS {} <code>{}</code> · version {} · status {} · domain {}{}</p>",
                esc(&o.api_version),
                esc(&o.id),
                esc(o.version.as_deref().unwrap_or("—")),
                esc(o.status.as_deref().unwrap_or("—")),
                esc(o.domain.as_deref().unwrap_or("—")),
                o.data_product
                    .as_deref()
                    .map(|d| format!(" · data product {}", esc(d)))
                    .unwrap_or_default(),
            );
        }
        if let Some(d) = &p.description {
            let _ = write!(h, "<p>{}</p>", esc(d));
        }
        if let Some(s) = &p.schema {
            let _ = write!(
                h,
                "<h3>Schema</h3><p>{} · version {} · {} compatibility</p><table><tr><th>field</th><th>type</th><th>optional</th><th>classification</th><th>protection</th></tr>",
                s.format,
                esc(s.version.as_deref().unwrap_or("—")),
                s.compatibility
            );
            for f in &s.fields {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&f.name),
                    esc(&f.ty),
                    if f.optional { "yes" } else { "no" },
                    esc(f.classification.as_deref().unwrap_or("—")),
                    f.protection.unwrap_or("—")
                );
            }
            h.push_str("</table>");
            if let Some(p) = &p.protection {
                let _ = write!(
                    h,
                    "<p>Protected fields read in plaintext by: {}; others see: {}</p>",
                    esc(&if p.readers.is_empty() {
                        "nobody".to_string()
                    } else {
                        p.readers.join(", ")
                    }),
                    esc(p.mask.as_deref().unwrap_or("the ciphertext"))
                );
            }
        }
        h.push_str("<div class=\"grid\"><div><h3>SLA and quality</h3><table>");
        let _ = write!(
            h,
            "<tr><th>availability</th><td>{}</td></tr><tr><th>latency p99</th><td>{}</td></tr>\
<tr><th>freshness</th><td>{}</td></tr><tr><th>completeness</th><td>{}</td></tr></table><ul>",
            pct(p.sla.availability),
            secs(p.sla.latency_p99_seconds),
            secs(p.sla.freshness_seconds),
            pct(p.quality.completeness),
        );
        for r in &p.quality.validity_rules {
            let _ = write!(h, "<li><code>{}</code></li>", esc(r));
        }
        let _ = write!(
            h,
            "</ul></div><div><h3>Live</h3><table><tr><th>records accepted</th><td>{}</td></tr>\
<tr><th>records rejected</th><td>{}</td></tr><tr><th>validity</th><td>{}</td></tr>\
<tr><th>completeness</th><td>{}</td></tr><tr><th>availability</th><td>{}</td></tr>\
<tr><th>last record</th><td>{}</td></tr></table></div>",
            p.live.records_accepted,
            p.live.records_rejected,
            pct(p.live.validity_ratio),
            pct(p.live.completeness_ratio),
            pct(p.live.availability_ratio),
            p.live
                .freshness_seconds
                .map(|s| format!("{s:.0} s ago"))
                .unwrap_or_else(|| "none since start".into()),
        );
        // Readers: who may, who did, and how far behind each group is.
        let u = &p.usage;
        let _ = write!(
            h,
            "<div><h3>Consumers</h3><p>may read: {}</p><p>{} active group(s), {} active principal(s) · {} fetch answer(s)</p><table class=\"lag\"><tr><th>group</th><th>lag (records)</th><th>last commit</th></tr>",
            esc(&p.consumers.as_ref().map_or_else(|| "anyone".to_string(), |c| c.join(", "))),
            u.active_groups,
            u.active_principals,
            u.fetch_requests,
        );
        for g in &u.groups {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} s ago</td></tr>",
                esc(&g.group),
                g.lag,
                g.seconds_since_commit
            );
        }
        h.push_str("</table></div></div>");
        if !p.slis.is_empty() {
            h.push_str("<h3>Service-level indicators</h3><table class=\"slis\"><tr><th>SLI</th><th>metric</th><th>target</th><th>records</th><th>bad</th><th>value</th><th>met</th></tr>");
            for s in &p.slis {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.id),
                    esc(&s.metric),
                    esc(&s.target),
                    s.records,
                    s.bad,
                    s.value.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into()),
                    match s.met {
                        Some(true) => "yes".to_string(),
                        Some(false) => "no".to_string(),
                        None => format!("per {} (alerts)", s.window),
                    },
                );
            }
            h.push_str("</table>");
        }
        if let Some(o) = p.odcs.as_ref().filter(|o| !o.not_enforced.is_empty()) {
            render_not_enforced(&mut h, &o.not_enforced);
        }
        h.push_str("</section>");
    }
    render_rules(&mut h, rules, hours);
    h.push_str("</body></html>");
    h
}

/// A partner zone as the catalog lists it.
#[derive(Serialize)]
pub struct CatalogZone {
    pub name: String,
    pub listen: String,
    pub principals: Vec<String>,
    pub group_prefix: String,
    pub shares: Vec<CatalogShare>,
    pub usage: crate::zone_stats::ZoneUsage,
    pub source: String,
}

#[derive(Serialize)]
pub struct CatalogShare {
    /// The partner's name for the topic.
    pub alias: String,
    pub topic: String,
    /// Whether the partner may produce to it.
    pub produce: bool,
}

fn render_zones(h: &mut String, zones: &[CatalogZone]) {
    for z in zones {
        let _ = write!(
            h,
            "<section class=\"product zone\" id=\"zone-{id}\"><h2>Partner zone {name}</h2>\
<p class=\"meta\">listener <code>{listen}</code> · partner {who} · groups prefixed <code>{prefix}</code> · defined in <code>{src}</code></p>\
<p>{ap} active principal(s), {ag} active group(s) · {bytes} record bytes and {records} records read · last activity {last}</p>\
<table><tr><th>partner sees</th><th>topic</th><th>access</th></tr>",
            id = esc(&z.name),
            name = esc(&z.name),
            listen = esc(&z.listen),
            who = esc(&z.principals.join(", ")),
            prefix = esc(&z.group_prefix),
            src = esc(&z.source),
            ap = z.usage.active_principals,
            ag = z.usage.active_groups,
            bytes = z.usage.fetched_bytes,
            records = z.usage.fetched_records,
            last = z
                .usage
                .last_activity
                .map(|t| format!("{:.0} s ago", (now_ms() as f64 / 1000.0 - t).max(0.0)))
                .unwrap_or_else(|| "never".into()),
        );
        for sh in &z.shares {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&sh.alias),
                esc(&sh.topic),
                if sh.produce { "read, produce" } else { "read" }
            );
        }
        h.push_str("</table></section>");
    }
}

fn render_not_enforced(h: &mut String, notes: &[ProductNotEnforced]) {
    h.push_str("<h3>Declared, not enforced</h3><table class=\"not-enforced\"><tr><th>element</th><th>at</th><th>why</th></tr>");
    for n in notes {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&n.element),
            esc(&n.at),
            esc(&n.reason)
        );
    }
    h.push_str("</table>");
}

/// The newest rejections, of one principal when the page was asked with `?principal=`.
fn render_recent(recent: &[crate::metrics::RecentRejection], principal: Option<&str>) -> String {
    let mut h = String::new();
    let whose = principal.map_or("all principals".to_string(), |p| {
        format!("<code>{}</code>", esc(p))
    });
    let _ = write!(
        h,
        "<section class=\"product\" id=\"recent\"><h2>Recent rejections ({})</h2>\
<p class=\"meta\">Newest first, for {whose} (<code>?principal=User:name</code> filters; JSON at <code>/catalog/rejections</code>).</p>",
        recent.len()
    );
    if recent.is_empty() {
        h.push_str("<p>None since the gateway started.</p></section>");
        return h;
    }
    h.push_str("<table><tr><th>seconds ago</th><th>principal</th><th>client id</th><th>api</th><th>topic</th><th>policy</th><th>rule</th><th>message</th></tr>");
    let now = now_ms();
    for r in recent {
        let _ = write!(
            h,
            "<tr class=\"rejection\"><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td><a href=\"#rules\"><code>{}</code></a></td><td>{}</td></tr>",
            now.saturating_sub(r.time_ms) as f64 / 1000.0,
            esc(&r.principal),
            esc(&r.client_id),
            r.api,
            esc(&r.topic),
            r.partition.map(|p| format!("-{p}")).unwrap_or_default(),
            r.policy,
            esc(&r.rule),
            esc(&r.message),
        );
    }
    h.push_str("</table></section>");
    h
}

/// The rules table: every rule's mode, and for shadowing ones whether they are quiet.
fn render_rules(h: &mut String, rules: &[CatalogRule], hours: Option<f64>) {
    let window = match hours {
        Some(n) => format!("the last {n} h"),
        None => "since the start".into(),
    };
    let _ = write!(
        h,
        "<section class=\"product\" id=\"rules\"><h2>Rules ({})</h2>\
<p class=\"meta\">Rules in <code>shadow</code> (or a canary's shadow side) forward what they would refuse and count it. \
<em>quiet</em>: no would-reject {window} (<code>?hours=N</code> sets the window).</p>\
<table><tr><th>policy</th><th>rule</th><th>mode</th><th>data product</th><th>would reject</th><th>last</th><th>quiet</th><th>defined in</th></tr>",
        rules.len()
    );
    for r in rules {
        let mode = match &r.canary {
            Some(c) => format!(
                "canary ({}{}% of others)",
                c.principals
                    .iter()
                    .map(|p| format!("{}, ", esc(p)))
                    .collect::<String>(),
                c.percent
            ),
            None => r.mode.to_string(),
        };
        let _ = write!(
            h,
            "<tr class=\"rule\"><td>{}</td><td><code>{}</code></td><td class=\"mode\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.policy,
            esc(&r.rule),
            mode,
            esc(r.contract.as_deref().unwrap_or("—")),
            r.would_reject_total,
            r.last_would_reject_seconds_ago
                .map(|s| format!("{s:.0} s ago"))
                .unwrap_or_else(|| "—".into()),
            match r.zero_would_rejects {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            },
            esc(&r.source),
        );
    }
    h.push_str("</table></section>");
}

// The built-in schema registry (Confluent's API, read-only), from the policy set in force.

const REGISTRY_JSON: &str = "application/vnd.schemaregistry.v1+json";

fn registry_reply(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, REGISTRY_JSON)],
        body.to_string(),
    )
        .into_response()
}

fn registry_error(status: StatusCode, code: u32, message: &str) -> Response {
    registry_reply(
        status,
        serde_json::json!({ "error_code": code, "message": message }),
    )
}

async fn registry_schema_by_id(State(s): State<AdminState>, Path(id): Path<u32>) -> Response {
    match s.policies.current().registry.schema_by_id(id) {
        Some(schema) => registry_reply(StatusCode::OK, serde_json::json!({ "schema": schema })),
        None => registry_error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn registry_subjects(State(s): State<AdminState>) -> Response {
    registry_reply(
        StatusCode::OK,
        serde_json::json!(s.policies.current().registry.subjects()),
    )
}

async fn registry_versions(State(s): State<AdminState>, Path(subject): Path<String>) -> Response {
    match s.policies.current().registry.versions(&subject) {
        Some(v) => registry_reply(
            StatusCode::OK,
            serde_json::json!(v.iter().map(|v| v.version).collect::<Vec<_>>()),
        ),
        None => registry_error(StatusCode::NOT_FOUND, 40401, "Subject not found"),
    }
}

async fn registry_version(
    State(s): State<AdminState>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let set = s.policies.current();
    let Some(versions) = set.registry.versions(&subject) else {
        return registry_error(StatusCode::NOT_FOUND, 40401, "Subject not found");
    };
    let found = match version.as_str() {
        "latest" | "-1" => versions.last(),
        n => n
            .parse::<u32>()
            .ok()
            .and_then(|n| versions.iter().find(|v| v.version == n)),
    };
    match found {
        Some(v) => registry_reply(
            StatusCode::OK,
            crate::schema::registry::version_body(&subject, v),
        ),
        None => registry_error(StatusCode::NOT_FOUND, 40402, "Version not found"),
    }
}

#[derive(Deserialize)]
struct LookupBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

async fn registry_lookup(
    State(s): State<AdminState>,
    Path(subject): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<LookupBody>(&body) else {
        return registry_error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    };
    if req.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
        return registry_error(StatusCode::NOT_FOUND, 40403, "Schema not found");
    }
    let set = s.policies.current();
    if set.registry.versions(&subject).is_none() {
        return registry_error(StatusCode::NOT_FOUND, 40401, "Subject not found");
    }
    match set.registry.lookup(&subject, &req.schema) {
        Some(v) => registry_reply(
            StatusCode::OK,
            crate::schema::registry::version_body(&subject, v),
        ),
        None => registry_error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn registry_config() -> Response {
    registry_reply(
        StatusCode::OK,
        serde_json::json!({ "compatibilityLevel": "BACKWARD" }),
    )
}

async fn registry_subject_config(
    State(s): State<AdminState>,
    Path(subject): Path<String>,
) -> Response {
    match s.policies.current().registry.compatibility(&subject) {
        Some(level) => registry_reply(
            StatusCode::OK,
            serde_json::json!({ "compatibilityLevel": level }),
        ),
        None => registry_error(StatusCode::NOT_FOUND, 40401, "Subject not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::mode::WouldReject;
    use crate::proxy::rejection::{ShadowEvent, Site};

    #[test]
    fn the_catalog_lists_each_rule_with_its_mode_and_would_rejects() {
        let set = crate::policy::load::compile_text(
            "c.yaml",
            "produce:\n  - key: required\n    mode: canary\n    canary: { principals: ['User:a'], percent: 10 }\n---\ncontract:\n  name: orders\n  owner: shop\n  topic: shop.orders.v1\n  mode: shadow\n  quality:\n    validity_rules:\n      - n > 0\n      - rule: m > 0\n        mode: enforce\n",
        );
        let metrics = Metrics::new();
        let would = WouldReject {
            policy: "contract",
            rule: "n > 0".into(),
            mode: "shadow",
            message: "m".into(),
        };
        for partition in [0, 1] {
            ShadowEvent {
                site: Site {
                    api: "produce",
                    topic: "shop.orders.v1",
                    partition: Some(partition),
                    client_id: "c",
                    principal: "User:b",
                    contract_topic: Some("shop.orders.v1"),
                    audit: None,
                },
                would: &would,
            }
            .emit(&metrics);
        }
        let now = i64::try_from(now_ms() / 1000).unwrap();
        let rules = catalog_rules(&set, &metrics, None, now);
        let row = |rule: &str| rules.iter().find(|r| r.rule == rule).unwrap();
        assert_eq!(row("key").mode, "canary");
        assert_eq!(row("key").canary.as_ref().unwrap().percent, 10.0);
        assert_eq!(row("key").zero_would_rejects, Some(true));
        let n = row("n > 0");
        assert_eq!((n.mode, n.would_reject_total), ("shadow", 2));
        assert_eq!(n.contract.as_deref(), Some("orders"));
        assert_eq!(n.zero_would_rejects, Some(false));
        assert!(n.source.starts_with("c.yaml:"), "{}", n.source);
        assert_eq!(row("m > 0").mode, "enforce");
        assert_eq!(
            row("m > 0").zero_would_rejects,
            None,
            "enforced: not shadowing"
        );
        // Two hours on, with a one-hour window: quiet.
        let later = catalog_rules(&set, &metrics, Some(1.0), now + 7200);
        let n = later.iter().find(|r| r.rule == "n > 0").unwrap();
        assert_eq!(n.zero_would_rejects, Some(true));
        assert_eq!(n.would_reject_total, 2, "the lifetime count stays");
        let html = render_html(&[], &rules, None);
        assert!(html.contains("<td class=\"mode\">shadow</td>"), "{html}");
        let text = metrics.render();
        assert!(
            text.contains("meshgate_policy_would_reject_total{mode=\"shadow\",policy=\"contract\",rule=\"n > 0\",topic=\"shop.orders.v1\"} 2"),
            "{text}"
        );
    }
}
