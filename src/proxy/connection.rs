//! One client connection: two tasks joined by an ordered in-flight queue.
//!
//! ```text
//!  client ──frames──▶ [requests task] ──original bytes──▶ upstream broker
//!                          │ Slot (in request order)
//!                          ▼
//!  client ◀──in order── [responses task] ◀──frames────── upstream broker
//! ```
//!
//! **Concurrency contract.**
//! - The requests task owns the client read half and the upstream write half; the responses task
//!   owns the upstream read half and the client write half. Neither ever waits on the other's
//!   socket, so a broker writing a large response while the gateway writes a large request cannot
//!   deadlock.
//! - The requests task registers a [`Slot`] *before* it writes the request upstream, so a response
//!   always finds its slot.
//! - Responses leave in request order. A slot holds either "awaiting upstream" or a ready response
//!   (one the gateway made itself). Only the ready prefix of the queue is written.
//! - Each slot holds a permit of a per-connection semaphore of `max_in_flight` permits. When they
//!   are all taken the requests task stops reading the client: memory per connection is bounded,
//!   and a slow client slows its own producer, not the gateway.
//! - Produce with acks=0 gets no slot: the broker sends no response.
//! - On shutdown the requests task stops reading; the responses task drains what is in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::dead_letter::Settling;
use super::enforce::{self, Decision, DecodedProduce, ProduceJob, ProduceWatch};
use super::identity::{Identity, SaslStep};
use super::rejection::RequestAudit;
use super::rewrite::ResponseMerge as _;
use super::rewrite::{rewrite_response, ResponseAction, RewriteError, TopicFilter};
use super::topic_admin;
use super::Gateway;
use crate::generation::Generation;
use crate::policy::judge::RequestInflater;
use crate::protocol::frame::Incoming;
use crate::protocol::frame::{write_frame, write_frame_head, write_frame_parts};
use crate::protocol::header::{
    peek_produce_acks, response_correlation_id, split_request, undecodable, HeaderError,
};
use crate::protocol::versions::{
    api_versions_too_new, gateway_accepts, unsupported_api_versions_response,
};
use crate::protocol::{FrameError, FrameReader, RequestHeaderView};

/// Why a connection ended, tagged by the side at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client sent a bad frame: {0}")]
    ClientFrame(#[from] FrameError),
    #[error("client sent a bad request: {0}")]
    ClientRequest(#[from] HeaderError),
    #[error("client sent API key {0}, which meshgate does not know")]
    UnknownApi(i16),
    #[error("client sent {api:?} v{version}, which meshgate does not accept")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("rejected an acks=0 produce; closing the connection as a broker does")]
    RejectedAcksZero,
    #[error("client write failed: {0}")]
    ClientIo(std::io::Error),
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamFault),
    #[error("upstream response: {0}")]
    Rewrite(#[from] RewriteError),
    #[error("judging the request failed: {0}")]
    Judge(tokio::task::JoinError),
    #[error("partner zone: {0}")]
    Zone(String),
}

/// What went wrong on an established upstream connection.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFault {
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Frame(FrameError),
    #[error("closed with {0} request(s) in flight")]
    ClosedInFlight(usize),
    #[error(transparent)]
    Response(HeaderError),
    #[error("response to unknown correlation id {0}")]
    UnknownCorrelation(i32),
}

impl ConnError {
    /// A short, bounded label for the malformed-frame metric, or `None` when the client is not at
    /// fault.
    pub fn client_fault_label(&self) -> Option<&'static str> {
        match self {
            ConnError::ClientFrame(FrameError::TooLarge { .. }) => Some("oversized"),
            ConnError::ClientFrame(FrameError::NegativeSize(_)) => Some("negative_size"),
            ConnError::ClientFrame(FrameError::Truncated { .. }) => Some("truncated"),
            ConnError::ClientRequest(_) => Some("undecodable"),
            ConnError::UnsupportedVersion { .. } => Some("unsupported_version"),
            ConnError::UnknownApi(_) => Some("unknown_api"),
            ConnError::RejectedAcksZero => Some("rejected_acks0"),
            ConnError::Zone(_) => Some("zone_refused"),
            _ => None,
        }
    }
}

/// A request whose response is owed to the client.
struct Slot {
    correlation_id: i32,
    api_key: i16,
    api_version: i16,
    action: ResponseAction,
    state: SlotState,
    started: Instant,
    /// Contract SLIs to record when the response arrives.
    watch: Option<ProduceWatch>,
    /// For SaslAuthenticate: what the broker's answer settles about the principal.
    sasl: Option<SaslStep>,
    /// For a Produce request with dead-lettered partitions: its answer waits for the letters.
    settle: Option<Settling>,
    /// For a partner zone's Produce: the zone whose names its answer is renamed back to.
    renamed_for: Option<Arc<crate::policy::zone::Zone>>,
    /// For a Fetch by a principal whose view of protected topics needs an edit: how its answer
    /// is shown (decided with the generation that routed the request).
    fetch_views: Option<crate::protect::fetch::FetchViews>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A watched request that leaves without its response counts against availability.
        if let Some(w) = self.watch.take() {
            w.fail();
        }
    }
}

enum SlotState {
    Awaiting,
    Ready(Bytes),
    /// An answer written as these parts, one after the other (a protected Fetch answer).
    ReadyParts(Vec<Bytes>),
    /// Being finished by a task: merged once its dead-letter writes are answered, or a zone's
    /// protected Fetch answer shown and renamed.
    Deferred(tokio::task::JoinHandle<Result<Bytes, ConnError>>),
    /// Being finished by a task that shows a Fetch answer's protected fields, as parts.
    DeferredParts(tokio::task::JoinHandle<Result<Vec<Bytes>, ConnError>>),
}

/// Proxies one client connection until either side closes, a protocol error, or shutdown.
pub async fn proxy<C, U>(
    gw: Arc<Gateway>,
    client: C,
    upstream: U,
    identity: Arc<Identity>,
) -> Result<(), ConnError>
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    U: AsyncRead + AsyncWrite + Send + 'static,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    let (tx, rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(gw.config.max_in_flight));

    let requests = requests_task(
        gw.clone(),
        client_r,
        upstream_w,
        tx,
        permits,
        identity.clone(),
    );
    let responses = responses_task(gw, upstream_r, client_w, rx, identity);
    tokio::pin!(requests);
    tokio::pin!(responses);
    // The responses side decides when the connection is over: it drains in-flight requests after
    // the client stops sending. A requests-side error ends everything at once.
    tokio::select! {
        r = &mut requests => match r {
            Ok(()) => responses.await,
            // A broker writes the responses it owes for earlier requests before it closes the
            // connection over a failed acks=0 produce; so does meshgate.
            Err(e @ ConnError::RejectedAcksZero) => {
                responses.await?;
                Err(e)
            }
            Err(e) => Err(e),
        },
        r = &mut responses => r,
    }
}

/// Bytes of a request read before deciding whether it must be held whole: enough for the header
/// and, for Produce, the transactional id and acks in all but pathological cases.
pub(crate) const REQUEST_HEAD: usize = 1024;

/// Requests up to this size are read whole before they are written upstream, even when nothing
/// judges them; larger ones are streamed through as they arrive.
///
/// Why: a streamed 800 KB produce request went upstream as a dozen 64 KiB writes, and each woke
/// the broker to read a piece of it (the profile of the 1 KiB passthrough bench). Written whole,
/// the broker sees one write per request, as it does from a direct client. 4 MiB covers the
/// producers' default request limits (librdkafka's `message.max.bytes`, Java's
/// `max.request.size`, both about 1 MB) with room to spare, and is allocated only as bytes arrive.
pub(crate) const HOLD_WHOLE: usize = 4 << 20;

async fn requests_task<R, W>(
    gw: Arc<Gateway>,
    client_r: R,
    upstream_w: W,
    tx: mpsc::UnboundedSender<Slot>,
    permits: Arc<Semaphore>,
    identity: Arc<Identity>,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(client_r, gw.config.max_frame_bytes);
    let mut upstream = BufWriter::with_capacity(64 * 1024, upstream_w);
    let upstream_err = upstream_write_error;
    loop {
        let next = tokio::select! {
            biased;
            _ = gw.shutdown.cancelled() => break,
            f = reader.read_request(REQUEST_HEAD, HOLD_WHOLE) => f?,
        };
        let Some(next) = next else { break };
        // `raw`: the whole frame with its size prefix, when it was small enough to hold.
        let (size, head, raw) = next.parts(REQUEST_HEAD);
        let started = Instant::now();
        let header = RequestHeaderView::peek(&head)?;
        gw.metrics.api(header.api_key).requests.inc();
        // APIs this build does not know are not advertised either (they might carry broker
        // addresses meshgate cannot rewrite); a broker closes the connection for them too.
        let api = header.api().ok_or(ConnError::UnknownApi(header.api_key))?;
        if !gateway_accepts(api, header.api_version) {
            return Err(ConnError::UnsupportedVersion {
                api,
                version: header.api_version,
            });
        }
        let (route, head_acks) = classify(&gw, api, header.api_version, &head);
        let counted_in_enforce =
            matches!(route, Route::Whole(Whole::Governed(Governed::Produce, _)))
                || (api == ApiKey::Produce && gw.zone.is_some());
        if !counted_in_enforce {
            // Governed produce requests are counted per topic, by record bytes, in enforce (a
            // zone's Produce too, when it goes on; refused, it was not proxied).
            gw.metrics.bytes_in_other.inc_by(size as u64 + 4);
        }
        let whole = match route {
            Route::AnswerApiVersions => {
                // Answered here, as a broker answers a version it does not support (see
                // `versions`).
                if raw.is_none() {
                    let rest = size - head.len();
                    reader.read_rest(head, rest).await?;
                }
                let response = unsupported_api_versions_response(header.correlation_id)
                    .map_err(|reason| undecodable(api, header.api_version, reason))?;
                let Some(permit) = acquire_permit(&gw, &permits, &mut upstream).await? else {
                    break;
                };
                let slot = new_slot(
                    permit,
                    &header,
                    ResponseAction::Passthrough,
                    SlotState::Ready(response),
                    started,
                );
                if tx.send(slot).is_err() {
                    break;
                }
                continue;
            }
            Route::CutThrough {
                owes_response,
                policies,
            } => {
                // Register the response slot, then stream the frame upstream as it arrives
                // instead of holding it whole.
                if owes_response {
                    let Some(permit) = acquire_permit(&gw, &permits, &mut upstream).await? else {
                        break;
                    };
                    let mut slot = new_slot(
                        permit,
                        &header,
                        response_action(api, header.api_version, &identity, policies.as_deref()),
                        SlotState::Awaiting,
                        started,
                    );
                    let payload = raw.as_ref().map(|r| r.slice(4..));
                    slot.fetch_views = fetch_views(
                        &gw,
                        api,
                        header.api_version,
                        &identity,
                        policies.as_ref(),
                        payload.as_ref(),
                    );
                    if tx.send(slot).is_err() {
                        break; // the responses side has ended; it reports why
                    }
                }
                if let Some(raw) = raw {
                    upstream.write_all(&raw).await.map_err(upstream_err)?;
                } else {
                    write_frame_head(&mut upstream, size, &head)
                        .await
                        .map_err(upstream_err)?;
                    reader
                        .forward_rest(size - head.len(), &mut upstream)
                        .await?
                        .map_err(upstream_err)?;
                }
                if !reader.has_buffered_frame() {
                    upstream.flush().await.map_err(upstream_err)?;
                }
                continue;
            }
            Route::Whole(whole) => whole,
        };
        let frame = match raw {
            Some(raw) => raw.slice(4..),
            None => {
                let rest = size - head.len();
                reader.read_rest(head, rest).await?
            }
        };
        // acks from the head when it held them; a head cut short by a long client id or
        // transactional id is read from the whole frame.
        let acks_zero = match (api, head_acks) {
            (_, Some(acks)) => acks == 0,
            (ApiKey::Produce, None) => {
                let (_, body) = split_request(&frame, ApiKey::Produce, header.api_version)?;
                peek_produce_acks(&body, header.api_version).ok_or_else(|| {
                    undecodable(ApiKey::Produce, header.api_version, "truncated before acks")
                })? == 0
            }
            _ => false,
        };
        let sasl_step = match whole {
            Whole::Sasl => enforce::sasl_request(&identity, &frame, api, header.api_version)?,
            _ => None,
        };
        // The audit trail's view of this request, when the trail is on.
        let audit = |policies: &Generation| {
            gw.audit
                .as_ref()
                .map(|log| RequestAudit::new(log, &identity, policies))
        };
        // Metadata's answer is filtered, and a Fetch answer's protected fields shown, under the
        // generation that routed and judged the request.
        let routed = match (&whole, api) {
            (Whole::Governed(_, p) | Whole::Audited(p), ApiKey::Metadata | ApiKey::Fetch) => {
                Some(p.clone())
            }
            _ => None,
        };
        // A partner zone's request: judged and renamed first. A Produce to shares the zone lets
        // the partner write then goes on, renamed, as any producer's Produce.
        let (mut frame, mut whole) = (frame, whole);
        let mut zone_decision = None;
        let mut renamed_for = None;
        if matches!(whole, Whole::Zone) {
            match zone_step(&gw, &identity, api, &frame, header.api_version)? {
                ZoneStep::Decided(d) => zone_decision = Some(d),
                ZoneStep::Produce {
                    frame: renamed,
                    zone,
                    policies,
                } => {
                    frame = renamed;
                    renamed_for = Some(zone);
                    whole = Whole::Governed(Governed::Produce, policies);
                }
            }
        }
        // The one dispatch point of the governed APIs.
        let (decision, watch) = match whole {
            Whole::Governed(Governed::Produce, policies) => {
                let decoded = DecodedProduce::decode(&frame, header.api_version)?;
                let heavy = decoded.is_heavy();
                let audit = audit(&policies);
                let mut job = ProduceJob {
                    cx: gw.judge.clone(),
                    inflater: RequestInflater::new(&gw.judge.limits, gw.registry.is_some()),
                    policies,
                    decoded,
                    principal: identity.principal(),
                    external: None,
                    avro_contracts: Vec::new(),
                    audit,
                    seal: Vec::new(),
                };
                if job.policies.protects() {
                    let keys = gw.keys.as_deref();
                    job.seal = match enforce::seal_keys_ready(&job.policies, &job.decoded, keys) {
                        Some(plan) => plan,
                        None => {
                            // A key to make or load: what is buffered goes upstream first.
                            flush_pending(&mut upstream).await?;
                            enforce::seal_keys(&job.policies, &job.decoded, keys).await
                        }
                    };
                }
                if let Some(client) = gw.registry.clone() {
                    // The writer schemas first: scan (inflating once, kept for the judge),
                    // then fetch what the cache lacks.
                    let (scanned, ids) = judge_work(&gw, &mut upstream, heavy, move || {
                        let ids = job.schema_ids();
                        (job, ids)
                    })
                    .await?;
                    job = scanned;
                    flush_pending(&mut upstream).await?;
                    job.external = Some(enforce::fetch_writers(&client, ids).await);
                }
                judge_work(&gw, &mut upstream, heavy, move || job.judge()).await??
            }
            Whole::Governed(Governed::CreateTopics, policies) => (
                enforce::create_topics(
                    &gw.metrics,
                    &policies,
                    &identity.principal(),
                    &frame,
                    header.api_version,
                    audit(&policies).as_ref(),
                )?,
                None,
            ),
            Whole::Governed(Governed::TopicAdmin, policies) => (
                topic_admin::judge(
                    &gw.metrics,
                    &policies,
                    &identity.principal(),
                    api,
                    &frame,
                    header.api_version,
                    audit(&policies).as_ref(),
                )?
                .unwrap_or(Decision::Forward),
                None,
            ),
            Whole::Governed(Governed::Consume, policies) => {
                let audit = audit(&policies);
                let reader = super::consume::Reader {
                    policies: &policies,
                    principal: &identity.principal(),
                    metrics: &gw.metrics,
                    audit: audit.as_ref(),
                    topic_ids: &gw.topic_ids,
                };
                (
                    reader
                        .judge(api, &frame, header.api_version)?
                        .unwrap_or(Decision::Forward),
                    None,
                )
            }
            Whole::Audited(policies) => {
                if let Some(a) = audit(&policies) {
                    topic_admin::audit_passthrough(api, &frame, header.api_version, &a);
                }
                (Decision::Forward, None)
            }
            Whole::Zone => (zone_decision.take().expect("judged above"), None),
            Whole::Sasl | Whole::ProduceAcksUnseen => (Decision::Forward, None),
        };
        let mut close_after = false;
        let mut settle = None;
        let (to_forward, action, state) = match decision {
            Decision::Forward => (
                Some(frame),
                response_action(api, header.api_version, &identity, routed.as_deref()),
                SlotState::Awaiting,
            ),
            Decision::ForwardEdited(frame) => (
                Some(frame),
                response_action(api, header.api_version, &identity, routed.as_deref()),
                SlotState::Awaiting,
            ),
            Decision::ForwardTrimmed { frame, merge } => (
                Some(frame),
                ResponseAction::Merge(merge),
                SlotState::Awaiting,
            ),
            Decision::Respond(response) => (
                None,
                ResponseAction::Passthrough,
                SlotState::Ready(response),
            ),
            Decision::ForwardThenClose(frame) => {
                close_after = true;
                (frame, ResponseAction::Passthrough, SlotState::Awaiting)
            }
            Decision::DeadLetter {
                frame,
                merge,
                letters,
                acks_zero: no_answer,
                correlation_id,
            } => {
                let settling = Settling::send(&gw.dead_letters, gw.metrics.clone(), merge, letters);
                if no_answer {
                    // Nothing is answered; the letters are written all the same.
                    tokio::spawn(settling.settle());
                    close_after = true;
                    (frame, ResponseAction::Passthrough, SlotState::Awaiting)
                } else if frame.is_some() {
                    settle = Some(settling);
                    (frame, ResponseAction::Passthrough, SlotState::Awaiting)
                } else if settling.answered() {
                    let merge = settling.settle_answered();
                    (
                        None,
                        ResponseAction::Passthrough,
                        SlotState::Ready(merge.refused_alone(correlation_id)?),
                    )
                } else {
                    let finish =
                        async move { Ok(settling.settle().await.refused_alone(correlation_id)?) };
                    (
                        None,
                        ResponseAction::Passthrough,
                        SlotState::Deferred(tokio::spawn(finish)),
                    )
                }
            }
        };
        // What a Fetch answer may carry is decided by the request as it goes upstream.
        let fetch_frame = to_forward
            .as_ref()
            .filter(|_| api == ApiKey::Fetch)
            .cloned();
        if !acks_zero && !close_after {
            let Some(permit) = acquire_permit(&gw, &permits, &mut upstream).await? else {
                break;
            };
            // A zone's producer reads its own topic names back.
            let version = header.api_version;
            let state = match (state, &renamed_for) {
                (SlotState::Ready(bytes), zone) => {
                    SlotState::Ready(zone_answer(zone.as_deref(), bytes, version)?)
                }
                (SlotState::Deferred(task), Some(zone)) => {
                    let zone = zone.clone();
                    SlotState::Deferred(tokio::spawn(async move {
                        let bytes = task.await.map_err(ConnError::Judge)??;
                        Ok(zone_answer(Some(&zone), bytes, version)?)
                    }))
                }
                (state, _) => state,
            };
            let mut slot = new_slot(permit, &header, action, state, started);
            slot.watch = watch;
            slot.sasl = sasl_step;
            slot.settle = settle;
            slot.renamed_for = renamed_for;
            slot.fetch_views = fetch_views(
                &gw,
                api,
                header.api_version,
                &identity,
                routed.as_ref(),
                fetch_frame.as_ref(),
            );
            if tx.send(slot).is_err() {
                break; // the responses side has ended; it reports why
            }
        }
        if let Some(frame) = to_forward {
            write_frame(&mut upstream, &frame)
                .await
                .map_err(upstream_err)?;
        }
        if close_after {
            // The responses already owed are written before the connection closes (see `proxy`).
            upstream.flush().await.map_err(upstream_err)?;
            return Err(ConnError::RejectedAcksZero);
        }
        if !reader.has_buffered_frame() {
            upstream.flush().await.map_err(upstream_err)?;
        }
    }
    upstream.flush().await.map_err(upstream_err)?;
    Ok(())
}

/// How a Fetch answer is shown to this connection's principal, when some protected topic's
/// fields need an edit for it (`crate::protect::fetch`); under `policies` when the request was
/// routed under a generation, else the one in force.
///
/// Only when the answer may carry a protected topic (`FetchViews::concern`, from the request
/// when it was read whole): any other answer passes as it comes, streamed when large.
fn fetch_views(
    gw: &Gateway,
    api: ApiKey,
    version: i16,
    identity: &Identity,
    policies: Option<&Arc<Generation>>,
    frame: Option<&Bytes>,
) -> Option<crate::protect::fetch::FetchViews> {
    if api != ApiKey::Fetch {
        return None;
    }
    let current;
    let set = match policies {
        Some(p) => p,
        None => {
            current = gw.policies.current();
            &*current
        }
    };
    let views = crate::protect::fetch::FetchViews::for_principal(
        set,
        &identity.principal(),
        gw.registry.as_ref(),
    )?;
    let ids = |id: [u8; 16]| gw.topic_name(id);
    match frame {
        Some(f) if !views.concern(f, version, &ids) => None,
        _ => Some(views),
    }
}

/// The answer to a Fetch with its protected fields shown as `views` says (keys loaded as
/// needed; see `crate::protect::fetch`), as parts to write one after the other.
async fn show_protected(
    gw: &Gateway,
    frame: Bytes,
    version: i16,
    views: &crate::protect::fetch::FetchViews,
) -> Vec<Bytes> {
    let ids = |id: [u8; 16]| gw.topic_name(id);
    crate::protect::fetch::rewrite_loading(
        frame,
        version,
        views,
        &ids,
        gw.keys.as_deref(),
        gw.judge.limits.max_inflated_bytes,
    )
    .await
}

/// What a partner zone made of a request.
enum ZoneStep {
    /// Forwarded, trimmed, or answered here, as any judged request.
    Decided(Decision),
    /// A Produce to shares the partner may write: renamed, and judged as a governed Produce
    /// under `policies`; its answer is renamed back for `zone`.
    Produce {
        frame: Bytes,
        zone: Arc<crate::policy::zone::Zone>,
        policies: Arc<Generation>,
    },
}

/// Judges a request on a partner zone's listener under the generation in force: the zone must
/// still be in it and the principal be its partner, else the connection closes.
fn zone_step(
    gw: &Gateway,
    identity: &Identity,
    api: ApiKey,
    frame: &Bytes,
    version: i16,
) -> Result<ZoneStep, ConnError> {
    let policies = gw.policies.current();
    let name = gw.zone.as_deref().unwrap_or_default();
    let Some(zone) = policies.zones.iter().find(|z| *z.name == *name).cloned() else {
        return Err(ConnError::Zone(format!(
            "zone `{name}` is no longer in the policy set"
        )));
    };
    let principal = identity.principal();
    if !zone.admits(&principal) {
        gw.metrics.zones.refused(name, "principal");
        return Err(ConnError::Zone(format!(
            "{principal} is not a principal of zone `{name}`"
        )));
    }
    gw.metrics.zones.request(name, &principal);
    let request = super::zone::ZoneRequest {
        zone: &zone,
        topic_ids: &gw.topic_ids,
        stats: &gw.metrics.zones,
    };
    match request.judge(api, frame, version)? {
        super::zone::Verdict::Decision(d) => {
            if matches!(d, Decision::Respond(_)) {
                gw.metrics.zones.refused(name, &format!("{api:?}"));
            }
            Ok(ZoneStep::Decided(d))
        }
        super::zone::Verdict::Produce(frame) => Ok(ZoneStep::Produce {
            frame,
            zone,
            policies: arc_swap::Guard::into_inner(policies),
        }),
        super::zone::Verdict::Close(why) => {
            gw.metrics.zones.refused(name, &format!("{api:?}"));
            Err(ConnError::Zone(why))
        }
    }
}

/// An answer to a partner zone's Produce names the partner's topics (`renamed_for`); any other
/// answer passes as it is.
fn zone_answer(
    renamed_for: Option<&crate::policy::zone::Zone>,
    bytes: Bytes,
    version: i16,
) -> Result<Bytes, RewriteError> {
    match renamed_for {
        Some(zone) => super::zone::rename_produce_answer(zone, bytes, version),
        None => Ok(bytes),
    }
}

/// How a request is handled, decided once per request from its header, its head and the policy
/// generation in force.
enum Route {
    /// ApiVersions newer than meshgate decodes: answered here, as a broker answers it.
    AnswerApiVersions,
    /// Streamed upstream as it arrives; no response is owed for acks=0.
    CutThrough {
        owes_response: bool,
        /// For Metadata: the generation loaded to route it, which also filters its answer
        /// (`access.hide_unauthorized_topics`).
        policies: Option<Arc<Generation>>,
    },
    /// Read whole first.
    Whole(Whole),
}

/// A request read whole, and why.
enum Whole {
    /// SaslHandshake / SaslAuthenticate: forwarded as they are; the principal is learned from
    /// them (see `identity`).
    Sasl,
    /// An ungoverned produce request whose acks were cut off its head: read whole to learn
    /// whether a response is owed.
    ProduceAcksUnseen,
    /// Judged under this one policy generation, carried through the registry prefetch and the
    /// judge.
    Governed(Governed, Arc<Generation>),
    /// An administrative request no policy judges, read whole for the audit trail (only when
    /// the trail is on).
    Audited(Arc<Generation>),
    /// A request on a partner zone's listener: rewritten to the cluster's names (`zone`).
    Zone,
}

/// The governed APIs: each has its judge.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Governed {
    Produce,
    CreateTopics,
    /// Metadata with auto-creation, CreatePartitions, AlterConfigs, IncrementalAlterConfigs.
    TopicAdmin,
    /// Fetch, ListOffsets, OffsetCommit, OffsetFetch, JoinGroup, ConsumerGroupHeartbeat, while a
    /// contract restricts who reads (`consume`).
    Consume,
}

impl Governed {
    fn of(api: ApiKey) -> Option<Self> {
        match api {
            ApiKey::Produce => Some(Governed::Produce),
            ApiKey::CreateTopics => Some(Governed::CreateTopics),
            a if topic_admin::governs(a) => Some(Governed::TopicAdmin),
            a if super::consume::governs(a) => Some(Governed::Consume),
            _ => None,
        }
    }
}

/// Routes one request (and returns the acks its head shows, for Produce). The policy set is
/// loaded once here: the generation that decides whether a request is governed is the one that
/// judges it.
fn classify(gw: &Gateway, api: ApiKey, version: i16, head: &Bytes) -> (Route, Option<i16>) {
    // On a partner zone's listener everything but the handshake is the zone's to rewrite.
    if gw.zone.is_some()
        && !matches!(
            api,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return (Route::Whole(Whole::Zone), None);
    }
    // Produce with acks=0 owes no response; acks sits right after the transactional id.
    let head_acks = match api {
        ApiKey::Produce => split_request(head, api, version)
            .ok()
            .and_then(|(_, body)| peek_produce_acks(&body, version)),
        _ => None,
    };
    // One load of the policy generation, for the APIs it decides anything about: it routes the
    // request, judges it, and (Metadata) filters its answer.
    let audited = gw.audit.is_some() && topic_admin::audited(api);
    let kind = Governed::of(api);
    let current =
        (kind.is_some() || audited || api == ApiKey::Metadata).then(|| gw.policies.current());
    if let (Some(kind), Some(loaded)) = (kind, current.as_ref()) {
        let governed = match kind {
            Governed::Produce => loaded.governs_produce(),
            Governed::CreateTopics | Governed::TopicAdmin => loaded.governs_create_topics(),
            Governed::Consume => {
                loaded.restricts_consumers
                    || loaded.names_client_ids()
                    || (loaded.names_groups() && super::consume::names_group(api))
                    // Commits of contract topics feed consumer lag (`usage`).
                    || (api == ApiKey::OffsetCommit && !loaded.contracts.is_empty())
            }
        };
        if governed {
            let policies = arc_swap::Guard::into_inner(current.expect("loaded above"));
            return (Route::Whole(Whole::Governed(kind, policies)), head_acks);
        }
    }
    let current = current.map(arc_swap::Guard::into_inner);
    if audited {
        let policies = current.expect("loaded for audited APIs");
        return (Route::Whole(Whole::Audited(policies)), head_acks);
    }
    let route = match api {
        ApiKey::ApiVersions if api_versions_too_new(version) => Route::AnswerApiVersions,
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => Route::Whole(Whole::Sasl),
        ApiKey::Produce if head_acks.is_none() => Route::Whole(Whole::ProduceAcksUnseen),
        _ => Route::CutThrough {
            owes_response: head_acks != Some(0),
            policies: current.filter(|p| p.hide_unauthorized_topics.is_some()),
        },
    };
    (route, head_acks)
}

/// How the response to a request of `api` is handled: as `ResponseAction::for_request`, and for
/// Metadata under `access.hide_unauthorized_topics`, without the topics the principal may
/// neither produce to nor read.
fn response_action(
    api: ApiKey,
    version: i16,
    identity: &Identity,
    policies: Option<&Generation>,
) -> ResponseAction {
    if let Some(p) =
        policies.filter(|p| api == ApiKey::Metadata && p.hide_unauthorized_topics.is_some())
    {
        // The filter judges names as the answer arrives: it keeps the principal and the named
        // contracts' readers and writers, not the generation.
        let principal = identity.principal();
        let hidden: std::collections::HashSet<String> = p
            .contracts
            .iter()
            .filter(|c| !p.shows_topic(&c.topic, &principal))
            .map(|c| c.topic.clone())
            .collect();
        return ResponseAction::MetadataShowing(
            version,
            TopicFilter(Arc::new(move |t: &str| !hidden.contains(t))),
        );
    }
    ResponseAction::for_request(Some(api), version)
}

/// Runs judging work: on the connection's own task when it is light, else on the blocking pool,
/// at most `judge_threads` requests at a time over the whole gateway, so that one connection's
/// decompression or validation cannot stall the async workers that serve every other connection,
/// `/metrics` and the metadata refresher.
async fn judge_work<T, W>(
    gw: &Gateway,
    upstream: &mut BufWriter<W>,
    heavy: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ConnError>
where
    T: Send + 'static,
    W: AsyncWrite + Unpin,
{
    if !heavy {
        return Ok(work());
    }
    flush_pending(upstream).await?;
    let _turn = gw
        .judging
        .clone()
        .acquire_owned()
        .await
        .expect("the judging semaphore is never closed");
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ConnError::Judge)
}

/// Sends what the requests task has buffered for the upstream.
///
/// Called before every await that is neither a read of the client nor a write upstream (a
/// permit, a registry fetch, the judging pool). A request left in the buffer while the task waits
/// on a permit would deadlock the connection: only the response to that very request can free
/// the permit, and the broker never saw it.
async fn flush_pending<W: AsyncWrite + Unpin>(
    upstream: &mut BufWriter<W>,
) -> Result<(), ConnError> {
    if !upstream.buffer().is_empty() {
        upstream.flush().await.map_err(upstream_write_error)?;
    }
    Ok(())
}

fn upstream_write_error(e: std::io::Error) -> ConnError {
    ConnError::Upstream(UpstreamFault::Write(e))
}

/// An in-flight permit: at once when one is free; otherwise after flushing what is buffered for
/// the upstream (see [`flush_pending`]). `None` on shutdown.
async fn acquire_permit<W: AsyncWrite + Unpin>(
    gw: &Gateway,
    permits: &Arc<Semaphore>,
    upstream: &mut BufWriter<W>,
) -> Result<Option<OwnedSemaphorePermit>, ConnError> {
    if let Ok(p) = permits.clone().try_acquire_owned() {
        return Ok(Some(p));
    }
    flush_pending(upstream).await?;
    Ok(tokio::select! {
        biased;
        _ = gw.shutdown.cancelled() => None,
        p = permits.clone().acquire_owned() => Some(p.expect("semaphore is never closed")),
    })
}

/// A slot for a request that owes a response, holding an in-flight permit.
fn new_slot(
    permit: OwnedSemaphorePermit,
    header: &RequestHeaderView,
    action: ResponseAction,
    state: SlotState,
    started: Instant,
) -> Slot {
    Slot {
        correlation_id: header.correlation_id,
        api_key: header.api_key,
        api_version: header.api_version,
        action,
        state,
        started,
        watch: None,
        sasl: None,
        settle: None,
        renamed_for: None,
        fetch_views: None,
        _permit: permit,
    }
}

async fn responses_task<R, W>(
    gw: Arc<Gateway>,
    upstream_r: R,
    client_w: W,
    mut rx: mpsc::UnboundedReceiver<Slot>,
    identity: Arc<Identity>,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(upstream_r, gw.config.max_frame_bytes);
    let mut client = BufWriter::with_capacity(64 * 1024, client_w);
    let mut queue: VecDeque<Slot> = VecDeque::new();
    let mut requests_open = true;
    // Whether protected Fetch answers are held whole rather than streamed (see
    // `stream_response`): once a streamed one could not keep a set's first batch.
    let mut hold_protected = false;
    loop {
        if !requests_open && queue.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            slot = rx.recv(), if requests_open => match slot {
                Some(slot) => queue.push_back(slot),
                None => requests_open = false,
            },
            incoming = reader.read_request(RESPONSE_HEAD, STREAM_ABOVE) => {
                let incoming = incoming.map_err(UpstreamFault::Frame)?;
                let Some(incoming) = incoming else {
                    if queue.is_empty() {
                        // The broker closed an idle connection; so do we.
                        break;
                    }
                    return Err(UpstreamFault::ClosedInFlight(queue.len()).into());
                };
                let frame = match incoming {
                    Incoming::Whole(raw) => raw.slice(4..),
                    Incoming::Head { size, head } => {
                        let front = streams_at_front(&mut queue, &mut rx, &head)?;
                        if front == Front::Pass || (front == Front::Show && !hold_protected) {
                            let slot = queue.pop_front().expect("checked: the front");
                            let cut_first =
                                stream_response(&gw, &mut reader, &mut client, size, head, slot, &identity)
                                    .await?;
                            if cut_first {
                                // A shown batch outgrew its set: that partition read nothing.
                                // From now on this connection's protected answers are held
                                // whole, where a set may grow, so the retry gets its records.
                                hold_protected = true;
                                tracing::debug!("a protected batch outgrew its streamed set; protected answers are now held whole");
                            }
                            // Answers ready behind it (meshgate's own) go now, not at the next
                            // event.
                            write_ready_prefix(&gw, &mut queue, &mut client).await?;
                            if !reader.has_buffered_frame() {
                                client.flush().await.map_err(ConnError::ClientIo)?;
                            }
                            continue;
                        }
                        let rest = size - head.len();
                        reader.read_rest(head, rest).await.map_err(UpstreamFault::Frame)?
                    }
                };
                let correlation_id =
                    response_correlation_id(&frame).map_err(UpstreamFault::Response)?;
                let index = match find_awaiting(&queue, correlation_id) {
                    Some(i) => i,
                    None => {
                        // Its slot may still be in the channel: it is always sent before the
                        // request is written.
                        while let Ok(slot) = rx.try_recv() {
                            queue.push_back(slot);
                        }
                        find_awaiting(&queue, correlation_id)
                            .ok_or(UpstreamFault::UnknownCorrelation(correlation_id))?
                    }
                };
                let slot = &mut queue[index];
                if let Some(w) = slot.watch.take() {
                    w.observe(&frame, slot.started.elapsed(), &gw.metrics.usage);
                }
                if let Some(step) = slot.sasl.take() {
                    let (code, answer) =
                        enforce::sasl_authenticate_result(&frame, slot.api_version)
                            .map_err(UpstreamFault::Response)?;
                    let completes = step.completes();
                    match identity.on_authenticated(step, code, &answer) {
                        Some(p) => tracing::info!(principal = %p, "SASL authentication accepted by the broker"),
                        None if code != 0 || completes => tracing::info!(error_code = code, "SASL authentication refused by the broker"),
                        None => {}
                    }
                }
                super::fetch_bytes::count_response(
                    &gw,
                    slot.api_key,
                    slot.api_version,
                    &frame,
                    &identity,
                );
                let version = slot.api_version;
                slot.state = match (slot.settle.take(), slot.fetch_views.take()) {
                    (None, None) => {
                        let bytes = rewrite_response(&slot.action, frame, gw.as_ref())?;
                        SlotState::Ready(zone_answer(slot.renamed_for.as_deref(), bytes, version)?)
                    }
                    (None, Some(views)) => {
                        // Opening or masking the protected fields runs beside this task, which
                        // goes on reading answers; the queue's order holds (Deferred). The
                        // answer leaves as parts: the old answer's spans around the new sets.
                        let bytes = rewrite_response(&slot.action, frame, gw.as_ref())?;
                        let (gw, renamed_for) = (gw.clone(), slot.renamed_for.clone());
                        match renamed_for {
                            None => SlotState::DeferredParts(tokio::spawn(async move {
                                Ok(show_protected(&gw, bytes, version, &views).await)
                            })),
                            Some(zone) => SlotState::Deferred(tokio::spawn(async move {
                                let parts = show_protected(&gw, bytes, version, &views).await;
                                let whole = Bytes::from(parts.concat());
                                Ok(zone_answer(Some(&zone), whole, version)?)
                            })),
                        }
                    }
                    (Some(settling), _) => {
                        let (gw, renamed_for) = (gw.clone(), slot.renamed_for.clone());
                        SlotState::Deferred(tokio::spawn(async move {
                            let merge = settling.settle().await;
                            let bytes = merge.merge(frame, gw.as_ref())?;
                            Ok(zone_answer(renamed_for.as_deref(), bytes, version)?)
                        }))
                    }
                };
            }
        }
        let wrote = write_ready_prefix(&gw, &mut queue, &mut client).await?;
        if wrote && !reader.has_buffered_frame() {
            client.flush().await.map_err(ConnError::ClientIo)?;
        }
    }
    client.flush().await.map_err(ConnError::ClientIo)?;
    let _ = client.shutdown().await;
    Ok(())
}

/// Responses held whole up to this size; a larger one whose slot is the queue's front and needs
/// no edit is streamed to the client as it arrives (`stream_response`), so a large Fetch answer
/// is not held whole before its first byte goes on.
pub(crate) const STREAM_ABOVE: usize = 256 << 10;
/// What is read of a streamed response before deciding: its correlation id.
const RESPONSE_HEAD: usize = 4;

/// How a large response may stream to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    /// It belongs to the queue's front slot and passes as its bytes (read, when accounting
    /// needs it, as they go).
    Pass,
    /// It belongs to the front slot and is a Fetch answer whose protected fields are shown as
    /// it goes (`crate::protocol::fetch_stream`, `crate::protect::fetch::StreamShower`).
    Show,
    /// It must be held whole: it is not the front's, or its slot edits it otherwise.
    Hold,
}

/// Whether the response whose head this is belongs to the queue's front slot and can stream:
/// no response edit, no watch, no SASL step, no dead letters, no zone renaming. Slots still in
/// the channel are taken first (a slot is always sent before its request is written).
fn streams_at_front(
    queue: &mut VecDeque<Slot>,
    rx: &mut mpsc::UnboundedReceiver<Slot>,
    head: &Bytes,
) -> Result<Front, ConnError> {
    let correlation_id = response_correlation_id(head).map_err(UpstreamFault::Response)?;
    if find_awaiting(queue, correlation_id).is_none() {
        while let Ok(slot) = rx.try_recv() {
            queue.push_back(slot);
        }
    }
    let streams = queue.front().is_some_and(|s| {
        s.correlation_id == correlation_id
            && matches!(s.state, SlotState::Awaiting)
            && matches!(s.action, ResponseAction::Passthrough)
            && s.watch.is_none()
            && s.sasl.is_none()
            && s.settle.is_none()
            && s.renamed_for.is_none()
    });
    Ok(match queue.front() {
        Some(s) if streams && s.fetch_views.is_some() => Front::Show,
        Some(_) if streams => Front::Pass,
        _ => Front::Hold,
    })
}

/// Streams a large response to the client as it arrives. A Fetch answer that accounting must
/// read (contracts in force, or a zone's listener) is walked as it goes
/// (`crate::protocol::fetch_stream`), never copied aside; one with protected fields to show
/// (`slot.fetch_views`) has them shown batch by batch, keeping its size. Returns whether a
/// shown set could not keep its first batch (the caller then holds protected answers whole).
async fn stream_response<R, W>(
    gw: &Gateway,
    reader: &mut FrameReader<R>,
    client: &mut W,
    size: usize,
    head: Bytes,
    slot: Slot,
    identity: &Identity,
) -> Result<bool, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use crate::protocol::fetch_stream::{stream_fetch, NoEdit, StreamError};
    write_frame_head(client, size, &head)
        .await
        .map_err(ConnError::ClientIo)?;
    let stream_error = |e: StreamError| match e {
        StreamError::Upstream(e) => ConnError::from(UpstreamFault::Frame(e)),
        StreamError::Client(e) => ConnError::ClientIo(e),
    };
    let left = size - head.len();
    let mut cut_first = false;
    if slot.fetch_views.is_some() || super::fetch_bytes::reads_answer(gw, slot.api_key) {
        let policies = gw.policies.current_arc();
        let mut account = super::fetch_bytes::FetchAccount::new(gw, &policies, identity);
        let count = account.counts_records();
        let each = |t: crate::protocol::fetch_walk::TopicRef<'_>, b, n, w: &[(i32, i64)]| {
            account.topic(t, b, n, w)
        };
        let streamed = match &slot.fetch_views {
            Some(views) => {
                let ids = |id: [u8; 16]| gw.topic_name(id);
                let mut shower = crate::protect::fetch::StreamShower::new(
                    views,
                    &ids,
                    gw.keys.as_deref(),
                    gw.judge.limits.max_inflated_bytes,
                );
                let version = slot.api_version;
                stream_fetch(reader, client, left, version, count, &mut shower, each).await
            }
            None => {
                stream_fetch(
                    reader,
                    client,
                    left,
                    slot.api_version,
                    count,
                    &mut NoEdit,
                    each,
                )
                .await
            }
        }
        .map_err(stream_error)?;
        cut_first = streamed.cut_first;
        account.finish(size as u64 + 4, streamed.walked);
    } else {
        reader
            .forward_rest(left, client)
            .await
            .map_err(UpstreamFault::Frame)?
            .map_err(ConnError::ClientIo)?;
        gw.metrics.bytes_out_other.inc_by(size as u64 + 4);
    }
    gw.metrics
        .api(slot.api_key)
        .duration
        .observe(slot.started.elapsed().as_secs_f64());
    gw.metrics.responses_streamed.inc();
    Ok(cut_first)
}

fn find_awaiting(queue: &VecDeque<Slot>, correlation_id: i32) -> Option<usize> {
    queue
        .iter()
        .position(|s| matches!(s.state, SlotState::Awaiting) && s.correlation_id == correlation_id)
}

/// Writes every ready response at the front of the queue. Returns whether anything was written.
async fn write_ready_prefix<W: AsyncWrite + Unpin>(
    gw: &Gateway,
    queue: &mut VecDeque<Slot>,
    client: &mut W,
) -> Result<bool, ConnError> {
    let mut wrote = false;
    loop {
        match queue.front_mut().map(|s| &mut s.state) {
            Some(SlotState::Ready(_) | SlotState::ReadyParts(_)) => {}
            Some(SlotState::Deferred(_) | SlotState::DeferredParts(_)) => {
                // The front waits for its dead-letter writes, or for its protected fields to be
                // shown; what is written so far goes out.
                if wrote {
                    client.flush().await.map_err(ConnError::ClientIo)?;
                }
                let front = queue.front_mut().expect("front exists");
                front.state = match std::mem::replace(&mut front.state, SlotState::Awaiting) {
                    SlotState::Deferred(task) => {
                        SlotState::Ready(task.await.map_err(ConnError::Judge)??)
                    }
                    SlotState::DeferredParts(task) => {
                        SlotState::ReadyParts(task.await.map_err(ConnError::Judge)??)
                    }
                    _ => unreachable!("checked above"),
                };
            }
            _ => break,
        }
        let mut slot = queue.pop_front().expect("front exists");
        match std::mem::replace(&mut slot.state, SlotState::Awaiting) {
            SlotState::Ready(bytes) => write_frame(client, &bytes).await,
            SlotState::ReadyParts(parts) => write_frame_parts(client, &parts).await,
            _ => unreachable!("checked above"),
        }
        .map_err(ConnError::ClientIo)?;
        gw.metrics
            .api(slot.api_key)
            .duration
            .observe(slot.started.elapsed().as_secs_f64());
        wrote = true;
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest, RequestHeader};
    use kafka_protocol::protocol::Encodable;

    fn head<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = 1;
        crate::protocol::header::join_request(&header, api, version, body).unwrap()
    }

    fn produce(acks: i16) -> Bytes {
        let mut p = ProduceRequest::default();
        p.acks = acks;
        p.timeout_ms = 1000;
        head(ApiKey::Produce, 9, &p)
    }

    fn route(gw: &Gateway, api: ApiKey, version: i16, head: &Bytes) -> String {
        match classify(gw, api, version, head).0 {
            Route::AnswerApiVersions => "answer".into(),
            Route::CutThrough { owes_response, .. } => format!("cut-through owes={owes_response}"),
            Route::Whole(Whole::Sasl) => "whole sasl".into(),
            Route::Whole(Whole::ProduceAcksUnseen) => "whole produce".into(),
            Route::Whole(Whole::Governed(kind, _)) => format!("governed {kind:?}"),
            Route::Whole(Whole::Audited(_)) => "audited".into(),
            Route::Whole(Whole::Zone) => "zone".into(),
        }
    }

    #[test]
    fn each_request_is_routed_once_by_its_api_and_the_policies() {
        let governed = crate::fuzzing::gateway_over(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            None,
        );
        let none = crate::fuzzing::gateway_over(std::path::Path::new("/no/such/policies"), None);
        let metadata = head(ApiKey::Metadata, 12, &MetadataRequest::default());
        let cases: [(&Gateway, ApiKey, i16, &Bytes, &str); 8] = [
            (
                &governed,
                ApiKey::Produce,
                9,
                &produce(-1),
                "governed Produce",
            ),
            (
                &governed,
                ApiKey::Produce,
                9,
                &produce(0),
                "governed Produce",
            ),
            (
                &governed,
                ApiKey::CreateTopics,
                7,
                &metadata,
                "governed CreateTopics",
            ),
            (
                &governed,
                ApiKey::Metadata,
                12,
                &metadata,
                "governed TopicAdmin",
            ),
            (
                &none,
                ApiKey::Produce,
                9,
                &produce(0),
                "cut-through owes=false",
            ),
            (
                &none,
                ApiKey::Produce,
                9,
                &produce(1),
                "cut-through owes=true",
            ),
            (
                &none,
                ApiKey::Metadata,
                12,
                &metadata,
                "cut-through owes=true",
            ),
            (&none, ApiKey::SaslHandshake, 1, &metadata, "whole sasl"),
        ];
        for (gw, api, version, head, want) in cases {
            assert_eq!(route(gw, api, version, head), want, "{api:?} v{version}");
        }
        assert_eq!(
            route(&none, ApiKey::ApiVersions, 5, &metadata),
            "answer",
            "newer than meshgate decodes"
        );
        // A produce head cut before acks (here: no body at all) is read whole to learn them.
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Produce as i16;
        header.request_api_version = 9;
        let mut cut = bytes::BytesMut::new();
        header.encode(&mut cut, 2).unwrap();
        assert_eq!(
            route(&none, ApiKey::Produce, 9, &cut.freeze()),
            "whole produce"
        );
    }
}
