//! Which API versions meshgate lets clients use.
//!
//! The upstream's ApiVersions response is rewritten so that a client can only pick versions that
//! meshgate handles correctly:
//!
//! - APIs whose *body* meshgate decodes (Produce, CreateTopics, Metadata, FindCoordinator,
//!   DescribeCluster, ApiVersions; the consuming APIs Fetch, ListOffsets, OffsetCommit,
//!   OffsetFetch, JoinGroup and ConsumerGroupHeartbeat, judged while a contract restricts
//!   reading) are capped at what the protocol crate can decode. The consuming APIs are capped
//!   whether or not reading is restricted now: versions are agreed once per connection, and a
//!   policy reload may restrict reading later.
//! - **Produce is capped at v12.** v13 names topics by id instead of name; policies are keyed by
//!   topic name, and mapping ids to names would put a metadata lookup on the produce path.
//! - **Fetch is capped at v15.** v16+ responses may carry broker `node_endpoints` (KIP-951); Fetch
//!   responses are the largest frames on the wire and are forwarded untouched, so rather than
//!   decode them all to rewrite a rarely-present field, clients use v15 and rediscover leaders via
//!   Metadata.
//! - **DescribeQuorum is capped at v1**, since v2 lists controller listeners.
//! - **Metadata starts at v4**, the first version whose auto-creation can be switched off per
//!   request (see `proxy::topic_admin`).
//! - **ApiVersions newer than meshgate decodes** (v5+ for the Java 4.x client, against a Kafka
//!   that answers v5) is answered by meshgate itself, as a broker answers a version it does not
//!   support (KIP-511): UNSUPPORTED_VERSION in v0 format with the ApiVersions versions it handles,
//!   so the client retries with the highest one both know. Forwarded, the broker's v5 answer
//!   could not be narrowed, and passing it unnarrowed would advertise versions meshgate refuses.
//! - **SaslHandshake starts at v1.** After a v0 handshake the client sends raw SASL tokens
//!   without Kafka framing (pre-1.0 clients), which no Kafka frame parser can follow; from v1 the
//!   tokens travel in SaslAuthenticate requests, which meshgate reads for the principal.
//! - APIs that return broker addresses meshgate does not rewrite are not advertised at all: the
//!   KRaft-internal ones (Vote, BeginQuorumEpoch, EndQuorumEpoch, FetchSnapshot, UpdateRaftVoter)
//!   and share-group fetch/acknowledge (KIP-932), whose responses carry `node_endpoints`.
//! - APIs the protocol crate does not know are not advertised either: meshgate cannot tell whether
//!   a future API leaks an upstream address.
//!
//! Everything else passes at the upstream's range, untouched and undecoded.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader};

/// Highest Produce version meshgate accepts (v13 uses topic ids).
pub const PRODUCE_MAX: i16 = 12;
/// Lowest Produce version meshgate accepts: v3 is the first with record batch v2, which is all
/// Kafka 4 accepts as well.
pub const PRODUCE_MIN: i16 = 3;
/// Lowest Metadata version meshgate accepts: v4 is the first with `allow_auto_topic_creation`.
pub const METADATA_MIN: i16 = 4;
/// Highest Fetch version meshgate accepts (v16 adds node endpoints).
pub const FETCH_MAX: i16 = 15;

/// The version range meshgate advertises for `api_key`, given the upstream's range, or `None` to
/// leave the API out of the response.
pub fn advertised_range(api_key: i16, upstream_min: i16, upstream_max: i16) -> Option<(i16, i16)> {
    let api = ApiKey::try_from(api_key).ok()?;
    let (mut lo, mut hi) = (upstream_min, upstream_max);
    match api {
        ApiKey::Vote
        | ApiKey::BeginQuorumEpoch
        | ApiKey::EndQuorumEpoch
        | ApiKey::FetchSnapshot
        | ApiKey::UpdateRaftVoter
        | ApiKey::ShareFetch
        | ApiKey::ShareAcknowledge => return None,
        ApiKey::Produce => {
            lo = lo.max(PRODUCE_MIN);
            hi = hi.min(PRODUCE_MAX);
        }
        ApiKey::Fetch => hi = hi.min(FETCH_MAX),
        ApiKey::DescribeQuorum => hi = hi.min(1),
        // v0-3 have no allow_auto_topic_creation flag: the broker may auto-create every topic
        // they name, past the topic rules (see `proxy::topic_admin`). Kafka 4 no longer
        // serves them either (KIP-896).
        ApiKey::Metadata => lo = lo.max(METADATA_MIN),
        ApiKey::SaslHandshake => lo = lo.max(1),
        _ => {}
    }
    if is_decoded(api) {
        let (min, max) = decodable(api);
        lo = lo.max(min);
        hi = hi.min(max);
    }
    (lo <= hi).then_some((lo, hi))
}

/// The versions the protocol crate decodes an API's request and response at: the two message
/// types' own ranges, which for some APIs are narrower than `ApiKey::valid_versions` claims
/// (OffsetCommit: v10 listed, v9 decodable).
fn decodable(api: ApiKey) -> (i16, i16) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;
    fn both<Req: Message, Resp: Message>() -> (i16, i16) {
        (
            Req::VERSIONS.min.max(Resp::VERSIONS.min),
            Req::VERSIONS.max.min(Resp::VERSIONS.max),
        )
    }
    match api {
        ApiKey::Fetch => both::<FetchRequest, FetchResponse>(),
        ApiKey::ListOffsets => both::<ListOffsetsRequest, ListOffsetsResponse>(),
        ApiKey::OffsetCommit => both::<OffsetCommitRequest, OffsetCommitResponse>(),
        ApiKey::OffsetFetch => both::<OffsetFetchRequest, OffsetFetchResponse>(),
        ApiKey::JoinGroup => both::<JoinGroupRequest, JoinGroupResponse>(),
        ApiKey::ConsumerGroupHeartbeat => {
            both::<ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse>()
        }
        _ => {
            let r = api.valid_versions();
            (r.min, r.max)
        }
    }
}

/// The APIs whose request or response body meshgate decodes.
pub fn is_decoded(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::Produce
            | ApiKey::CreateTopics
            | ApiKey::CreatePartitions
            | ApiKey::AlterConfigs
            | ApiKey::IncrementalAlterConfigs
            | ApiKey::Metadata
            | ApiKey::FindCoordinator
            | ApiKey::DescribeCluster
            | ApiKey::ApiVersions
            | ApiKey::SaslHandshake
            | ApiKey::SaslAuthenticate
            | ApiKey::Fetch
            | ApiKey::ListOffsets
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::JoinGroup
            | ApiKey::ConsumerGroupHeartbeat
    )
}

/// True when a request at this version may be handled: it is inside what meshgate advertises
/// (taking the upstream's range as unbounded; the upstream refuses what is past its own). The
/// caller closes the connection for anything else, as a broker does for a version it does not
/// support on most APIs: a client that ignores ApiVersions cannot reach a version whose
/// response meshgate would not rewrite (Fetch v16+, DescribeQuorum v2+, the share-group and
/// KRaft-internal APIs).
pub fn gateway_accepts(api: ApiKey, version: i16) -> bool {
    match api {
        // An ApiVersions request at any version is answered: a too-new one by meshgate itself
        // (`api_versions_too_new`), with the v0 error clients use to downgrade.
        ApiKey::ApiVersions => true,
        _ => advertised_range(api as i16, 0, i16::MAX)
            .is_some_and(|(lo, hi)| (lo..=hi).contains(&version)),
    }
}

/// Whether an ApiVersions request at `version` is newer than meshgate can narrow the answer of.
pub fn api_versions_too_new(version: i16) -> bool {
    version > ApiKey::ApiVersions.valid_versions().max
}

/// meshgate's own answer to an ApiVersions request newer than it decodes: UNSUPPORTED_VERSION
/// (35) in v0 format, naming the ApiVersions versions it handles, as a broker answers (KIP-511).
pub fn unsupported_api_versions_response(
    correlation_id: i32,
) -> Result<Bytes, crate::protocol::header::HeaderError> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let range = ApiKey::ApiVersions.valid_versions();
    let mut supported = ApiVersion::default();
    supported.api_key = ApiKey::ApiVersions as i16;
    supported.min_version = range.min;
    supported.max_version = range.max;
    let mut body = ApiVersionsResponse::default();
    body.error_code = UNSUPPORTED_VERSION;
    body.api_keys = vec![supported];
    crate::protocol::header::join_response(&header, ApiKey::ApiVersions, 0, &body)
}

/// UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_is_capped_below_topic_ids_and_above_legacy_formats() {
        assert_eq!(advertised_range(0, 0, 13), Some((3, 12)));
        assert_eq!(advertised_range(0, 0, 2), None);
    }

    #[test]
    fn fetch_is_capped_below_node_endpoints() {
        assert_eq!(advertised_range(1, 4, 18), Some((4, 15)));
    }

    #[test]
    fn address_leaking_and_unknown_apis_are_not_advertised() {
        for key in [52, 53, 54, 59, 78, 79, 82, 30_000] {
            assert_eq!(advertised_range(key, 0, 5), None, "api {key}");
        }
    }

    #[test]
    fn opaque_apis_keep_the_upstream_range() {
        // DescribeGroups (15) is forwarded undecoded.
        assert_eq!(advertised_range(15, 0, 99), Some((0, 99)));
        // OffsetCommit (8) is decoded while reading is restricted: the crate's range.
        assert_eq!(advertised_range(8, 0, 99), Some((2, 9)));
        // ListOffsets (2) likewise.
        assert_eq!(advertised_range(2, 1, 11), Some((1, 10)));
    }

    #[test]
    fn every_advertised_cap_is_enforced_on_requests() {
        assert!(gateway_accepts(ApiKey::Fetch, FETCH_MAX));
        assert!(!gateway_accepts(ApiKey::Fetch, FETCH_MAX + 1));
        assert!(gateway_accepts(ApiKey::DescribeQuorum, 1));
        assert!(!gateway_accepts(ApiKey::DescribeQuorum, 2));
        assert!(!gateway_accepts(ApiKey::SaslHandshake, 0));
        for api in [
            ApiKey::Vote,
            ApiKey::BeginQuorumEpoch,
            ApiKey::EndQuorumEpoch,
            ApiKey::FetchSnapshot,
            ApiKey::UpdateRaftVoter,
            ApiKey::ShareFetch,
            ApiKey::ShareAcknowledge,
        ] {
            for v in 0..20 {
                assert!(!gateway_accepts(api, v), "{api:?} v{v}");
            }
        }
        // Opaque APIs pass at any version; the upstream judges its own range.
        assert!(gateway_accepts(ApiKey::OffsetCommit, 9));
        assert!(gateway_accepts(ApiKey::ApiVersions, 99));
        // What is accepted is exactly what is advertised, for every known API.
        for key in 0..100i16 {
            let Ok(api) = ApiKey::try_from(key) else {
                continue;
            };
            if api == ApiKey::ApiVersions {
                continue;
            }
            for v in 0..30 {
                let advertised = advertised_range(key, 0, i16::MAX)
                    .is_some_and(|(lo, hi)| (lo..=hi).contains(&v));
                assert_eq!(gateway_accepts(api, v), advertised, "{api:?} v{v}");
            }
        }
    }

    #[test]
    fn a_too_new_api_versions_request_gets_the_downgrade_answer() {
        use kafka_protocol::protocol::Decodable;
        let max = ApiKey::ApiVersions.valid_versions().max;
        assert!(!api_versions_too_new(max));
        assert!(api_versions_too_new(max + 1));
        let frame = unsupported_api_versions_response(77).unwrap();
        let (h, mut body) =
            crate::protocol::header::split_response(&frame, ApiKey::ApiVersions, 0).unwrap();
        assert_eq!(h.correlation_id, 77);
        let r = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(r.error_code, 35);
        let k = &r.api_keys[0];
        assert_eq!((k.api_key, k.min_version, k.max_version), (18, 0, max));
    }

    #[test]
    fn decoded_apis_are_capped_at_the_protocol_crate() {
        let metadata = ApiKey::Metadata.valid_versions();
        assert_eq!(advertised_range(3, 0, 99), Some((4, metadata.max)));
        assert!(gateway_accepts(ApiKey::Produce, 12));
        assert!(!gateway_accepts(ApiKey::Produce, 13));
        assert!(!gateway_accepts(ApiKey::Produce, 2));
    }
}
