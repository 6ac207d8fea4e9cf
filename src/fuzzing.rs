//! Fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/` and by the regression tests that
//! replay every saved input (`tests/fixtures/fuzz/<target>/`) on each `cargo test`.
//!
//! Each harness feeds arbitrary bytes to the code that meets them in production:
//! - [`request_path`]: a client's byte stream, framed and judged as the connection's requests
//!   task does (frame head, then the rest; header peek; version gate; acks peek; the Produce,
//!   CreateTopics and SASL decoders and the policy judge; the consuming APIs under read-access
//!   rules), and each frame again as an upstream response through the response rewriter (and
//!   through the merge of a partly refused read request, and the Metadata topic filter);
//! - [`record_batch`]: a partition's records, judged against the example contract (batch
//!   header, every codec, record views, JSON and Avro values, rules);
//! - [`policy_file`]: a policy file through the loader;
//! - [`rule`]: a validity rule through the SQL and CEL compilers, then evaluated;
//! - [`avro_value`]: a Confluent-framed value through the Avro projection and whole decoding;
//! - [`protect_batch`]: a partition's records sealed as a protecting JSON contract's and as a
//!   protecting Avro contract's, then shown to a reader through a Fetch answer: the reader must
//!   get every value back byte for byte;
//! - [`pipeline`]: a burst of pipelined requests of mixed sizes through the real connection task
//!   at a small in-flight limit, against an upstream that answers each: every response must
//!   arrive, in order (a connection that waits on a permit with unflushed requests hangs here).
//!
//! None may panic, hang or allocate without bound, whatever the input.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kafka_protocol::messages::ApiKey;

use crate::config::{ConfigFile, Overrides};
use crate::generation::PolicyStore;
use crate::metrics::Metrics;
use crate::policy::judge::{Limits, RequestInflater};
use crate::policy::PolicySet;
use crate::protocol::header::{peek_produce_acks, split_request};
use crate::protocol::versions::gateway_accepts;
use crate::protocol::{FrameReader, RequestHeaderView};
use crate::proxy::connection::{HOLD_WHOLE, REQUEST_HEAD};
use crate::proxy::identity::Identity;
use crate::proxy::rewrite::{rewrite_response, BrokerAddresses, ResponseAction};
use crate::proxy::{enforce, Gateway, Security};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A gateway over the example policies with the given `max_in_flight` (the default when `None`).
fn build_gateway(max_in_flight: Option<usize>) -> Arc<Gateway> {
    gateway_over(&root().join("policies"), max_in_flight)
}

/// A gateway (not listening) over the policies in `dir`, for unit tests and fuzzing.
pub(crate) fn gateway_over(dir: &std::path::Path, max_in_flight: Option<usize>) -> Arc<Gateway> {
    let config = ConfigFile {
        max_in_flight,
        ..ConfigFile::default()
    }
    .build(Overrides {
        policies: Some(dir.to_path_buf()),
        ..Overrides::default()
    })
    .expect("a valid configuration");
    let metrics = Arc::new(Metrics::new());
    let policies = Arc::new(
        PolicyStore::open(&config.policies, metrics.clone()).expect("example policies load"),
    );
    let producer = crate::own_client::producer::Producer::start(
        config.upstream.clone(),
        Default::default(),
        config.own_client.write_timeout,
    );
    Gateway::new(
        config,
        metrics,
        policies,
        tokio_util::sync::CancellationToken::new(),
        Security::default(),
        None,
        producer.into(),
        None,
        None,
    )
}

/// A gateway over the example policies, made once per process.
fn gateway() -> &'static Arc<Gateway> {
    static GW: OnceLock<Arc<Gateway>> = OnceLock::new();
    GW.get_or_init(|| build_gateway(None))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

/// Addresses for the response rewriter that bind nothing.
struct NoPorts;

impl BrokerAddresses for NoPorts {
    fn advertised_host(&self) -> &str {
        "gateway.test"
    }

    fn gateway_port(&self, node_id: i32, _host: &str, _port: i32) -> Option<i32> {
        Some(9000i32.saturating_add(node_id))
    }
}

/// A burst of pipelined requests through [`crate::proxy::connection::proxy`]. The first byte
/// picks `max_in_flight` (1 to 4); each further byte (64 at most) is one Heartbeat request whose
/// group id is `byte * 997` bytes long, so that small frames (buffered) and large ones (written
/// whole) mix. The upstream answers every request in turn; the client writes the whole burst at
/// once and must read every response, in request order, within ten seconds.
pub fn pipeline(data: &[u8]) {
    use kafka_protocol::messages::{HeartbeatRequest, RequestHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use tokio::io::AsyncWriteExt;

    let Some((&selector, sizes)) = data.split_first() else {
        return;
    };
    let limit = 1 + (selector % 4) as usize;
    let sizes = &sizes[..sizes.len().min(64)];
    static GWS: [OnceLock<Arc<Gateway>>; 4] = [const { OnceLock::new() }; 4];
    let gw = GWS[limit - 1].get_or_init(|| build_gateway(Some(limit)));
    runtime().block_on(async {
        let (client, gw_client) = tokio::io::duplex(64 * 1024);
        let (gw_upstream, upstream) = tokio::io::duplex(64 * 1024);
        let connection = tokio::spawn(crate::proxy::connection::proxy(
            gw.clone(),
            gw_client,
            gw_upstream,
            Arc::new(Identity::new(None)),
        ));
        // The upstream: a Heartbeat v4 response (flexible header, no error) to every request.
        let broker = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(upstream);
            let mut requests = FrameReader::new(r, 1 << 20);
            while let Ok(Some(frame)) = requests.read_frame().await {
                let mut response = frame[4..8].to_vec();
                response.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
                if crate::protocol::frame::write_frame(&mut w, &response)
                    .await
                    .is_err()
                    || w.flush().await.is_err()
                {
                    return;
                }
            }
        });
        let mut burst = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let mut header = RequestHeader::default();
            header.request_api_key = ApiKey::Heartbeat as i16;
            header.request_api_version = 4;
            header.correlation_id = i as i32;
            let mut body = HeartbeatRequest::default();
            body.group_id = StrBytes::from_string("g".repeat(*size as usize * 997)).into();
            let mut frame = bytes::BytesMut::new();
            if header.encode(&mut frame, 2).is_err() || body.encode(&mut frame, 4).is_err() {
                return;
            }
            burst.extend_from_slice(&(frame.len() as i32).to_be_bytes());
            burst.extend_from_slice(&frame);
        }
        let (client_r, mut client_w) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            let _ = client_w.write_all(&burst).await;
            let _ = client_w.flush().await;
            client_w
        });
        let mut responses = FrameReader::new(client_r, 1 << 20);
        let read_all = async {
            let mut order = Vec::with_capacity(sizes.len());
            while order.len() < sizes.len() {
                match responses.read_frame().await {
                    Ok(Some(f)) => order.push(i32::from_be_bytes([f[0], f[1], f[2], f[3]])),
                    _ => break,
                }
            }
            order
        };
        let order = tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "max_in_flight {limit}: the connection hung with a burst of {}",
                    sizes.len()
                )
            });
        let expected: Vec<i32> = (0..sizes.len() as i32).collect();
        assert_eq!(
            order, expected,
            "max_in_flight {limit}: responses in request order"
        );
        drop(writer.await);
        connection.abort();
        broker.abort();
    });
}

/// A partner zone sharing one topic under an alias, made once per process.
fn zone() -> &'static (Arc<crate::policy::zone::Zone>, crate::zone_stats::ZoneStats) {
    static ZONE: OnceLock<(Arc<crate::policy::zone::Zone>, crate::zone_stats::ZoneStats)> =
        OnceLock::new();
    ZONE.get_or_init(|| {
        let mut errors = Vec::new();
        let set = crate::policy::load::compile_sources(
            &[(
                PathBuf::from("zone.yaml"),
                "zone:\n  name: fuzz\n  listen: 127.0.0.1:9400\n  principals: [User:fuzz]\n  shares:\n    - {topic: orders.order-events.v1, as: partner.orders}\n".into(),
            )],
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        (
            set.zones[0].clone(),
            crate::zone_stats::ZoneStats::new(&prometheus::Registry::new()),
        )
    })
}

/// A client byte stream through the requests task's decisions.
pub fn request_path(data: &[u8]) {
    let gw = gateway();
    runtime().block_on(async {
        let mut reader = FrameReader::new(data, 1024 * 1024);
        let identity = Identity::new(None);
        while let Ok(Some(next)) = reader.read_request(REQUEST_HEAD, HOLD_WHOLE).await {
            let (size, head, raw) = next.parts(REQUEST_HEAD);
            let Ok(header) = RequestHeaderView::peek(&head) else {
                return;
            };
            let Some(api) = header.api() else { return };
            let version = header.api_version;
            if !gateway_accepts(api, version) {
                return;
            }
            if api == ApiKey::Produce {
                if let Ok((_, body)) = split_request(&head, api, version) {
                    let _ = peek_produce_acks(&body, version);
                }
            }
            let frame = match raw {
                Some(raw) => raw.slice(4..),
                None => {
                    let rest = size - head.len();
                    let Ok(frame) = reader.read_rest(head, rest).await else {
                        return;
                    };
                    frame
                }
            };
            let policies = gw.policies.current_arc();
            match api {
                ApiKey::Produce => {
                    if let Ok(decoded) = enforce::DecodedProduce::decode(&frame, version) {
                        let mut job = enforce::ProduceJob {
                            cx: gw.judge.clone(),
                            policies: policies.clone(),
                            inflater: RequestInflater::new(&gw.judge.limits, true),
                            decoded,
                            principal: Arc::from("User:fuzz"),
                            external: None,
                            avro_contracts: Vec::new(),
                            audit: None,
                            seal: Vec::new(),
                        };
                        // The external-registry scan, then the judge over the same inflater.
                        let _ = job.schema_ids();
                        let _ = job.judge();
                    }
                }
                ApiKey::CreateTopics => {
                    let _ = enforce::create_topics(
                        &gw.metrics,
                        &policies,
                        "User:fuzz",
                        &frame,
                        version,
                        None,
                    );
                }
                ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {
                    if let Ok(Some(step)) = enforce::sasl_request(&identity, &frame, api, version) {
                        if let Ok((code, answer)) =
                            enforce::sasl_authenticate_result(&frame, version)
                        {
                            identity.on_authenticated(step, code, &answer);
                        }
                    }
                }
                a if crate::proxy::consume::governs(a) => {
                    let principal: Arc<str> = Arc::from("User:fuzz");
                    let reader = crate::proxy::consume::Reader {
                        policies: read_rules(),
                        principal: &principal,
                        metrics: &gw.metrics,
                        audit: None,
                        topic_ids: &gw.topic_ids,
                    };
                    if let Ok(Some(enforce::Decision::ForwardTrimmed { merge, .. })) =
                        reader.judge(api, &frame, version)
                    {
                        let _ = merge.merge(frame.clone(), &NoPorts);
                    }
                }
                _ => {}
            }
            // The same request on a partner zone's listener, and its merge over the same bytes.
            let (zone, stats) = zone();
            let request = crate::proxy::zone::ZoneRequest {
                zone,
                topic_ids: &gw.topic_ids,
                stats,
            };
            if let Ok(crate::proxy::zone::Verdict::Decision(enforce::Decision::ForwardTrimmed {
                merge,
                ..
            })) = request.judge(api, &frame, version)
            {
                let _ = merge.merge(frame.clone(), &NoPorts);
            }
            // The same bytes as the broker's answer to this request.
            let action = match api {
                ApiKey::Metadata => ResponseAction::MetadataShowing(
                    version,
                    crate::proxy::rewrite::TopicFilter(Arc::new(|t: &str| !t.starts_with('o'))),
                ),
                _ => ResponseAction::for_request(Some(api), version),
            };
            let _ = rewrite_response(&action, frame, &NoPorts);
        }
    });
}

/// Read-access rules over the example contract's topic, for the consuming APIs.
fn read_rules() -> &'static Arc<crate::generation::Generation> {
    static SET: OnceLock<Arc<crate::generation::Generation>> = OnceLock::new();
    SET.get_or_init(|| {
        let set = crate::policy::load::compile_text(
            "reads.yaml",
            "contract:\n  name: r\n  owner: o\n  topic: orders.order-events.v1\n  consumers: [User:alice, Group:readers-*]\n---\naccess: { hide_unauthorized_topics: true }\n---\nnaming:\n  topics: { pattern: '.*' }\n  groups: { pattern: '^readers-' }\n",
        );
        Arc::new(crate::generation::Generation::new(set, &Metrics::new()))
    })
}

fn example_set() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        crate::policy::load::load_dir(&root().join("tests/fixtures/fuzz/policies"))
            .expect("the fuzz policies load")
    })
}

/// One partition's record bytes, judged on a JSON-contract topic and an Avro-contract topic.
pub fn record_batch(data: &[u8]) {
    let set = example_set();
    // A small request budget, so that inputs reach the budget's refusals as well as the
    // per-batch cap: compressed batches that together inflate past what one request may.
    let limits = Limits {
        max_inflated_bytes: 8 * 1024 * 1024,
        max_inflated_request_bytes: 2 * 1024 * 1024,
        max_request_records: 10_000,
        max_record_errors: 100,
    };
    for topic in ["fuzz.json.v1", "fuzz.avro.v1", "fuzz.cel.v1"] {
        if let Ok(plan) = set.plan_topic(topic) {
            let _ = set.judge_partition(&plan, -1, Some(data), &limits, &Default::default());
        }
    }
    let _ = crate::policy::judge::count_records(Some(data));
}

/// A partition's records sealed (`protect: encrypt`, one field deterministic), then shown to a
/// reader and to a masked principal through a Fetch answer at v4 and v12 carrying them. Whatever
/// the input: no panic, and when sealing succeeds the reader gets back exactly the values that
/// were produced.
pub fn protect_batch(data: &[u8]) {
    use crate::policy::protect::{compile, Mask, View};
    use crate::protect::fetch::{show_records, FetchViews, TopicView};
    use crate::protect::keys::{DataKey, KeyRing};
    use crate::protect::{SealKeys, SealedSet};

    const TOPIC: &str = "fuzz.json.v1";
    let doc = serde_json::from_str(r#"{"pii": "encrypt", "deterministic": ["currency"]}"#)
        .expect("literal");
    let classified = [
        ("customer_id".to_string(), "pii".to_string()),
        ("currency".to_string(), "pii".to_string()),
        ("meta.ip".to_string(), "pii".to_string()),
    ];
    let protect = Arc::new(compile(&doc, &classified, vec![], None).expect("literal"));
    let (random, det) = (
        Arc::new(DataKey::fixed("20261201.aa", [1; 32])),
        Arc::new(DataKey::fixed("d.bb", [2; 32])),
    );
    let ring = KeyRing::in_memory(vec![(TOPIC, random.clone()), (TOPIC, det.clone())]);
    let keys = SealKeys {
        random: Some(random),
        deterministic: Some(det),
    };
    let view = |view| TopicView {
        topic: TOPIC.into(),
        protect: protect.clone(),
        view,
        stats: None,
        avro: None,
    };
    let (sealed, set) = seal(data, TOPIC, (&protect, crate::protect::Layout::Json), &keys);
    if let Ok(SealedSet { set: Some(s), .. }) = &sealed {
        let shown = show_records(s, &view(View::Plain), Some(&ring), MAX, None);
        let back = set_values(shown.as_deref().unwrap_or(s));
        assert_eq!(
            back,
            set_values(data),
            "a reader gets back what was produced"
        );
    }
    // The same records in Fetch answers, for a reader and a masked principal.
    let views = [View::Plain, View::Masked(Mask::Hash)].map(|v| FetchViews {
        topics: vec![view(v)],
        schemas: None,
    });
    for version in [4i16, 12] {
        let Some(frame) = fetch_answer(TOPIC, &set, version) else {
            continue;
        };
        for v in &views {
            let _ = crate::protect::fetch::rewrite(
                &frame,
                version,
                v,
                &|_| None,
                Some(&ring),
                MAX,
                true,
            );
        }
    }
    // And the raw input as a Fetch answer.
    let raw = bytes::Bytes::copy_from_slice(data);
    for version in [4i16, 12, 15] {
        let _ = crate::protect::fetch::rewrite(
            &raw,
            version,
            &views[0],
            &|_| Some(TOPIC.into()),
            Some(&ring),
            MAX,
            false,
        );
    }
    protect_avro(data);
}

/// The largest batch the protection harnesses inflate.
const MAX: usize = 8 << 20;

/// `data` sealed as `topic`'s (enforced, at the harnesses' bound), and the record set a Fetch
/// then carries: the sealed one, or the input as it came when nothing was sealed.
fn seal(
    data: &[u8],
    topic: &str,
    sealing: (&crate::policy::protect::Protect, crate::protect::Layout<'_>),
    keys: &crate::protect::SealKeys,
) -> (
    Result<crate::protect::SealedSet, crate::protect::SealError>,
    bytes::Bytes,
) {
    use crate::protect::{seal_records, Required, SealedSet};
    let sealed = seal_records(data, topic, sealing, keys, MAX, &mut Required::Enforce);
    let set = match &sealed {
        Ok(SealedSet { set: Some(s), .. }) => s.clone(),
        _ => bytes::Bytes::copy_from_slice(data),
    };
    (sealed, set)
}

/// The values of a record set, or `None` when any of it does not parse.
fn set_values(set: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::new();
    for b in crate::protocol::records::batches(set) {
        let b = b.ok()?;
        for r in b.inflate(MAX).ok()?.iter() {
            out.push(r.ok()?.value.map(<[u8]>::to_vec));
        }
    }
    Some(out)
}

/// A Fetch answer (header included) carrying `set` as partition 0 of `topic`.
fn fetch_answer(topic: &str, set: &bytes::Bytes, version: i16) -> Option<bytes::Bytes> {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut p = PartitionData::default();
    p.records = Some(set.clone());
    let mut t = FetchableTopicResponse::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions.push(p);
    let mut r = FetchResponse::default();
    r.responses.push(t);
    let mut frame = bytes::BytesMut::new();
    ResponseHeader::default()
        .encode(&mut frame, ApiKey::Fetch.response_header_version(version))
        .and_then(|_| r.encode(&mut frame, version))
        .ok()?;
    Some(frame.freeze())
}

/// The values of a Fetch answer's first partition, from the parts a rewrite gave.
fn answer_values(parts: &[bytes::Bytes], version: i16) -> Option<Vec<Option<Vec<u8>>>> {
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    let mut buf = bytes::Bytes::from(parts.concat());
    ResponseHeader::decode(&mut buf, ApiKey::Fetch.response_header_version(version)).ok()?;
    let r = FetchResponse::decode(&mut buf, version).ok()?;
    set_values(r.responses.first()?.partitions.first()?.records.as_ref()?)
}

/// The topic of [`protect_generation`]'s Avro contract.
pub const PROTECT_AVRO_TOPIC: &str = "fuzz.avro-pii.v1";

/// An Avro contract over the fuzz order schema with two fields classified pii (`order_id`, a
/// string, and `customer_id`, a string or null), encrypted on produce, opened for `User:reader`
/// and masked for everyone else.
pub fn protect_generation() -> &'static Arc<crate::generation::Generation> {
    static SET: OnceLock<Arc<crate::generation::Generation>> = OnceLock::new();
    SET.get_or_init(|| {
        let avsc = std::fs::read_to_string(root().join("tests/fixtures/fuzz/policies/order.avsc"))
            .expect("the fuzz order schema");
        let mut schema: serde_json::Value = serde_json::from_str(&avsc).expect("JSON");
        for f in schema["fields"].as_array_mut().expect("fields") {
            if f["name"] == "order_id" || f["name"] == "customer_id" {
                f["classification"] = "pii".into();
            }
        }
        let text = format!(
            "contract:\n  name: fuzz-avro-pii\n  owner: fuzz-team\n  topic: {PROTECT_AVRO_TOPIC}\n  \
             schema: {{format: avro, definition: {schema}}}\n  protect: {{pii: encrypt}}\n  \
             pii_readers: [User:reader]\n  mask_on_fetch: '***'\n"
        );
        let set = crate::policy::load::compile_text("protect.yaml", &text);
        assert!(set.contracts[0].protect.is_some(), "the fuzz contract protects");
        Arc::new(crate::generation::Generation::new(set, &Metrics::new()))
    })
}

/// What [`protect_avro`] seals with: [`protect_generation`]'s contract, its writers as the judge
/// has them at load, and one data key.
struct AvroSealing {
    protect: Arc<crate::policy::protect::Protect>,
    writers: crate::protect::avro_fields::ContractWriters<'static>,
    keys: crate::protect::SealKeys,
    ring: crate::protect::keys::KeyRing,
}

fn avro_sealing() -> AvroSealing {
    use crate::protect::keys::{DataKey, KeyRing};
    let generation = protect_generation();
    let key = Arc::new(DataKey::fixed("20261201.cc", [3; 32]));
    AvroSealing {
        protect: generation.contracts[0].protect.clone().expect("protects"),
        writers: crate::protect::avro_fields::ContractWriters {
            writers: crate::policy::judge::Writers {
                decoders: &generation.decoders,
                external: None,
            },
            contract: 0,
        },
        ring: KeyRing::in_memory(vec![(PROTECT_AVRO_TOPIC, key.clone())]),
        keys: crate::protect::SealKeys {
            random: Some(key),
            deterministic: None,
        },
    }
}

/// The Avro half of [`protect_batch`]: the records sealed as [`protect_generation`]'s contract's
/// (their fields found through its projection for each value's writer), then shown through Fetch
/// answers to its reader, who must get back every value byte for byte, and to another principal.
fn protect_avro(data: &[u8]) {
    use crate::protect::fetch::{rewrite, FetchViews, Outcome};
    use crate::protect::{Layout, SealedSet};

    let AvroSealing {
        protect,
        writers,
        keys,
        ring,
    } = avro_sealing();
    let (sealed, set) = seal(
        data,
        PROTECT_AVRO_TOPIC,
        (&protect, Layout::Avro(&writers)),
        &keys,
    );
    let was_sealed = matches!(sealed, Ok(SealedSet { set: Some(_), .. }));
    let no_ids = |_: [u8; 16]| None;
    for principal in ["User:reader", "User:other"] {
        let views = FetchViews::for_principal(protect_generation(), principal, None)
            .expect("the topic is protected");
        for version in [4i16, 12] {
            let Some(frame) = fetch_answer(PROTECT_AVRO_TOPIC, &set, version) else {
                continue;
            };
            let shown = rewrite(&frame, version, &views, &no_ids, Some(&ring), MAX, true);
            if principal == "User:reader" && was_sealed {
                let Outcome::Rewritten(parts) = shown else {
                    panic!("sealed records are opened for their reader")
                };
                assert_eq!(
                    answer_values(&parts, version),
                    set_values(data),
                    "a reader gets back what was produced"
                );
            }
        }
        // And the raw input as a Fetch answer.
        let raw = bytes::Bytes::copy_from_slice(data);
        for version in [4i16, 12, 15] {
            let _ = rewrite(
                &raw,
                version,
                &views,
                &|_| Some(PROTECT_AVRO_TOPIC.into()),
                Some(&ring),
                MAX,
                false,
            );
        }
    }
}

/// A policy file's text through the loader (paths resolve next to the example policies).
pub fn policy_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let path = root().join("tests/fixtures/fuzz/policies/fuzzed.yaml");
    let mut errors = Vec::new();
    let _ = crate::policy::load::compile_sources(&[(path, text)], &mut errors);
}

/// A rule's text through both compilers, then evaluated on a sample record.
pub fn rule(data: &[u8]) {
    use crate::rules::{Rule, RuleSource};
    static SHAPE: OnceLock<crate::schema::shape::Shape> = OnceLock::new();
    let shape = SHAPE.get_or_init(|| {
        let text = std::fs::read_to_string(root().join("tests/fixtures/fuzz/policies/order.avsc"))
            .expect("schema");
        crate::schema::shape::Shape::from_avro(&text).expect("schema parses")
    });
    let text = String::from_utf8_lossy(data);
    let record = serde_json::json!({
        "order_id": "o-1", "customer_id": null, "order_total": 12.5, "currency": "EUR",
        "status": "PAID", "item_count": 3, "channel": "web", "placed_at": 1764000000000i64,
        "coupon": null, "shipping_country": "FR"
    });
    for source in [RuleSource::Sql(&text), RuleSource::Cel(&text)] {
        for s in [Some(shape), None] {
            if let Ok(r) = Rule::compile(source, s) {
                let _ = r.passes(&record);
            }
        }
    }
}

/// A record value on the Avro-contract topics: projected (SQL rules) and decoded whole (CEL).
pub fn avro_value(data: &[u8]) {
    let set = example_set();
    for topic in ["fuzz.avro.v1", "fuzz.cel.v1"] {
        if let Some(c) = set.contract_for(topic) {
            if let Some(reader) = &c.avro_reader {
                let mut batch = std::collections::HashMap::new();
                let decoded = crate::schema::avro_data::decode(
                    data,
                    &set.avro_writers,
                    reader,
                    &mut batch,
                    &|_| None,
                );
                if let Ok(d) = &decoded {
                    let _ = crate::fields::RecordFields::get(d, &["order_total".into()]);
                }
                drop(decoded);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every saved input (seeds and former crashes) for every target, replayed.
    #[test]
    fn consuming_requests_of_every_kind_run_through_the_request_path() {
        use bytes::{BufMut, BytesMut};
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::{Encodable, Request, StrBytes};
        fn frame<R: Request + Encodable>(version: i16, req: &R, out: &mut BytesMut) {
            let api = ApiKey::try_from(R::KEY).unwrap();
            let mut h = RequestHeader::default();
            h.request_api_key = R::KEY;
            h.request_api_version = version;
            h.client_id = Some(StrBytes::from_static_str("fuzz"));
            let body = crate::protocol::header::join_request(&h, api, version, req).unwrap();
            out.put_i32(body.len() as i32);
            out.put_slice(&body);
        }
        let topic = || TopicName(StrBytes::from_static_str("orders.order-events.v1"));
        let mut stream = BytesMut::new();
        let mut fetch = FetchRequest::default();
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = topic();
        ft.partitions.push(fetch_request::FetchPartition::default());
        fetch.topics.push(ft);
        frame(12, &fetch, &mut stream);
        frame(13, &fetch, &mut stream);
        let mut lo = ListOffsetsRequest::default();
        let mut lt = list_offsets_request::ListOffsetsTopic::default();
        lt.name = topic();
        lt.partitions
            .push(list_offsets_request::ListOffsetsPartition::default());
        lo.topics.push(lt);
        frame(7, &lo, &mut stream);
        let mut oc = OffsetCommitRequest::default();
        oc.group_id = GroupId(StrBytes::from_static_str("readers-1"));
        let mut ot = offset_commit_request::OffsetCommitRequestTopic::default();
        ot.name = topic();
        ot.partitions
            .push(offset_commit_request::OffsetCommitRequestPartition::default());
        oc.topics.push(ot);
        frame(8, &oc, &mut stream);
        let mut of = OffsetFetchRequest::default();
        of.group_id = GroupId(StrBytes::from_static_str("Bad"));
        frame(7, &of, &mut stream);
        let mut ofg = OffsetFetchRequest::default();
        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
        g.group_id = GroupId(StrBytes::from_static_str("readers-2"));
        ofg.groups.push(g);
        frame(8, &ofg, &mut stream);
        let mut jg = JoinGroupRequest::default();
        jg.group_id = GroupId(StrBytes::from_static_str("readers-3"));
        frame(5, &jg, &mut stream);
        let mut hb = ConsumerGroupHeartbeatRequest::default();
        hb.group_id = GroupId(StrBytes::from_static_str("readers-4"));
        hb.subscribed_topic_names = Some(vec![topic()]);
        frame(0, &hb, &mut stream);
        frame(12, &MetadataRequest::default(), &mut stream);
        let before = request_path_refusals();
        request_path(&stream);
        assert!(
            request_path_refusals() > before,
            "the read rules refused something"
        );
    }

    /// Refusals counted by the consuming APIs' judge so far (the fuzz gateway's metrics).
    fn request_path_refusals() -> f64 {
        gateway()
            .metrics
            .render()
            .lines()
            .filter(|l| {
                l.starts_with("meshgate_policy_rejections_total") && l.contains("consumers")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[test]
    fn every_saved_fuzz_input_is_handled() {
        type Harness = fn(&[u8]);
        let targets: [(&str, Harness); 7] = [
            ("protect_batch", protect_batch),
            ("pipeline", pipeline),
            ("request_path", request_path),
            ("record_batch", record_batch),
            ("policy_file", policy_file),
            ("rule", rule),
            ("avro_value", avro_value),
        ];
        let mut replayed = 0;
        for (name, harness) in targets {
            for dir in ["seeds", "crashes"] {
                let d = root().join("tests/fixtures/fuzz").join(name).join(dir);
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    harness(&std::fs::read(e.path()).unwrap());
                    replayed += 1;
                }
            }
        }
        assert!(replayed > 0, "no saved fuzz inputs found");
    }

    /// The batch seeds are valid: the harness starts from records the judge accepts, so that
    /// mutations explore the record and rule paths rather than stopping at the header.
    #[test]
    fn batch_seeds_are_accepted_by_the_judge() {
        use crate::policy::judge::PartitionVerdict;
        let set = example_set();
        let dir = root().join("tests/fixtures/fuzz/record_batch/seeds");
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            for (kind, topic) in [
                ("json", "fuzz.json.v1"),
                ("avro", "fuzz.avro.v1"),
                ("avro", "fuzz.cel.v1"),
            ] {
                let bytes = std::fs::read(dir.join(format!("{kind}-{codec}"))).unwrap();
                let plan = set.plan_topic(topic).unwrap();
                let decoders = set.compile_decoders();
                match set.judge_partition(&plan, -1, Some(&bytes), &Limits::default(), &decoders) {
                    PartitionVerdict::Accept { records, .. } => assert_eq!(records, 4),
                    PartitionVerdict::Reject { rejection, .. } => {
                        panic!("{kind}-{codec} on {topic}: {}", rejection.message)
                    }
                }
            }
        }
    }

    /// The Avro protection seeds are sealed by the harness's contract (their writer id is its
    /// schema's), so that mutations explore sealing and opening rather than the refusal of an
    /// unknown writer.
    #[test]
    fn avro_protection_seeds_are_sealed() {
        use crate::protect::Layout;
        let s = avro_sealing();
        let dir = root().join("tests/fixtures/fuzz/protect_batch/seeds");
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let bytes = std::fs::read(dir.join(format!("avro-{codec}"))).unwrap();
            let sealing = (&*s.protect, Layout::Avro(&s.writers));
            let done = seal(&bytes, PROTECT_AVRO_TOPIC, sealing, &s.keys)
                .0
                .unwrap_or_else(|e| panic!("avro-{codec}: {e:?}"));
            assert_eq!(
                done.fields, 8,
                "avro-{codec}: two fields in each of four records"
            );
        }
    }

    /// Writes the seed corpora (`cargo test --lib write_fuzz_seeds -- --ignored`): real requests,
    /// batches with every codec, framed Avro values, policy files and rules.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::*;

        let base = root().join("tests/fixtures/fuzz");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let d = base.join(target).join("seeds");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), bytes).unwrap();
        };
        let json = |i: usize| {
            format!(
                r#"{{"order_id":"o-{i}","customer_id":"c-{i}","order_total":{}.5,"currency":"EUR","status":"PAID","item_count":2,"channel":"web","placed_at":1764000000000,"coupon":null,"shipping_country":"FR"}}"#,
                10 + i
            )
        };
        let set = example_set();
        let avro_id = set.registry.versions("fuzz.avro.v1-value").unwrap()[0].id;
        let schema = apache_avro::Schema::parse_str(
            &std::fs::read_to_string(base.join("policies/order.avsc")).unwrap(),
        )
        .unwrap();
        let pii_id = protect_generation()
            .registry
            .versions(&format!("{PROTECT_AVRO_TOPIC}-value"))
            .unwrap()[0]
            .id;
        let avro_as = |id: u32, i: usize| {
            use apache_avro::types::Value;
            let some = |s: String| Value::Union(1, Box::new(Value::String(s)));
            let v = Value::Record(vec![
                ("order_id".into(), Value::String(format!("o-{i}"))),
                ("customer_id".into(), some(format!("c-{i}"))),
                ("order_total".into(), Value::Double(10.0 + i as f64)),
                ("currency".into(), Value::String("EUR".into())),
                ("status".into(), Value::Enum(1, "PAID".into())),
                ("item_count".into(), Value::Int(2)),
                ("channel".into(), some("web".into())),
                ("placed_at".into(), Value::Long(1_764_000_000_000)),
                ("coupon".into(), Value::Union(0, Box::new(Value::Null))),
                ("shipping_country".into(), some("FR".into())),
            ]);
            let mut out = vec![0u8];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend(apache_avro::to_avro_datum(&schema, v).unwrap());
            out
        };
        let avro = |i: usize| avro_as(avro_id, i);
        let batch = |values: Vec<Vec<u8>>, compression: Compression| {
            let keys: Vec<String> = (0..values.len()).map(|i| format!("k-{i}")).collect();
            let trace: &[(&str, &[u8])] = &[("trace-id", b"t")];
            let specs: Vec<crate::protocol::records::test_batch::Spec<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| (Some(k.as_bytes()), Some(&v[..]), trace))
                .collect();
            bytes::Bytes::from(crate::protocol::records::test_batch::encode(
                &specs,
                compression,
            ))
        };
        let codecs = [
            ("none", Compression::None),
            ("gzip", Compression::Gzip),
            ("snappy", Compression::Snappy),
            ("lz4", Compression::Lz4),
            ("zstd", Compression::Zstd),
        ];
        /// One request's frame payload: header (correlation id 1, client "seed") and body.
        fn request<M: kafka_protocol::protocol::Encodable>(
            api: ApiKey,
            version: i16,
            body: &M,
        ) -> bytes::Bytes {
            let header = RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .with_correlation_id(1)
                .with_client_id(Some(StrBytes::from_static_str("seed")));
            crate::protocol::header::join_request(&header, api, version, body).unwrap()
        }
        /// A payload with its size prefix.
        fn framed(payload: &[u8]) -> Vec<u8> {
            let mut out = (payload.len() as i32).to_be_bytes().to_vec();
            out.extend_from_slice(payload);
            out
        }
        // Every request once more, back to back, as one client session.
        let mut stream = Vec::new();
        for (name, c) in codecs {
            let json_batch = batch((0..4).map(|i| json(i).into_bytes()).collect(), c);
            let avro_batch = batch((0..4).map(avro).collect(), c);
            write("record_batch", &format!("json-{name}"), &json_batch);
            write("record_batch", &format!("avro-{name}"), &avro_batch);
            write("protect_batch", &format!("json-{name}"), &json_batch);
            let pii_batch = batch((0..4).map(|i| avro_as(pii_id, i)).collect(), c);
            write("protect_batch", &format!("avro-{name}"), &pii_batch);
            for version in [3i16, 9, 12] {
                let produce = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(1000)
                    .with_topic_data(
                        [("fuzz.json.v1", &json_batch), ("fuzz.avro.v1", &avro_batch)]
                            .into_iter()
                            .map(|(t, b)| {
                                TopicProduceData::default()
                                    .with_name(TopicName(StrBytes::from_static_str(t)))
                                    .with_partition_data(vec![PartitionProduceData::default()
                                        .with_index(0)
                                        .with_records(Some(b.clone()))])
                            })
                            .collect(),
                    );
                let one = framed(&request(ApiKey::Produce, version, &produce));
                write("request_path", &format!("produce-v{version}-{name}"), &one);
                stream.extend_from_slice(&one);
            }
        }
        for v in 0..3 {
            write("avro_value", &format!("order-{v}"), &avro(v));
        }
        let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("fuzz.new.v1")))
            .with_num_partitions(3)
            .with_replication_factor(1)]);
        for version in [2i16, 5] {
            stream.extend(framed(&request(ApiKey::CreateTopics, version, &create)));
        }
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
        stream.extend(framed(&request(ApiKey::SaslHandshake, 1, &handshake)));
        let auth = SaslAuthenticateRequest::default()
            .with_auth_bytes(bytes::Bytes::from_static(b"\0fuzz\0secret"));
        stream.extend(framed(&request(ApiKey::SaslAuthenticate, 2, &auth)));
        stream.extend(framed(&request(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default(),
        )));
        write("request_path", "session", &stream);
        write(
            "policy_file",
            "fuzz.yaml",
            &std::fs::read(base.join("policies/fuzz.yaml")).unwrap(),
        );
        for (i, r) in [
            "order_total > 0",
            "customer_id is not null",
            "status IN ('PAID', 'PLACED') AND NOT (item_count BETWEEN 5 AND 9)",
            "channel LIKE 'w_b%' OR coupon IS NULL IS TRUE",
            "message.order_total > 0.0 && message.items.all(i, i.qty > 0)",
        ]
        .iter()
        .enumerate()
        {
            write("rule", &format!("rule-{i}"), r.as_bytes());
        }
    }
}
