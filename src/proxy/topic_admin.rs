//! Topic rules on every request that creates or changes a topic after CreateTopics:
//!
//! - **Metadata auto-creation.** A Metadata request with `allow_auto_topic_creation=true` makes a
//!   broker with `auto.create.topics.enable=true` (its default) create every named topic that
//!   does not exist, with the broker's default partition count, replication factor and configs.
//!   When any named topic would be refused as such a CreateTopics (see
//!   [`PolicySet::judge_auto_create`]), meshgate clears the flag for the whole request and
//!   forwards it; the broker then answers UNKNOWN_TOPIC_OR_PARTITION for the missing topics, as a
//!   broker with auto-creation off does, and clients keep retrying until the topic is created
//!   properly. Clearing the flag, rather than answering for the topic, keeps the response the
//!   broker's own, and existing topics are described as usual. (The flag is one per request, so
//!   an allowed topic named beside a refused one is not auto-created by that request either.)
//!   This is not counted as a policy rejection: the request is forwarded, and the topics it names
//!   usually exist already; a client that then produces to a missing topic or creates it is
//!   refused, and counted, there.
//! - **CreatePartitions** against the partition bounds: the new total count must be within them.
//! - **AlterConfigs** and **IncrementalAlterConfigs** against the config rules: every value a
//!   topic is set to (SET; for APPEND, each item added to a list) must pass, as at creation.
//!   DELETE and SUBTRACT return toward the broker default and pass.
//!
//! Refusals are per resource, with POLICY_VIOLATION and the rule's file:line, as for
//! CreateTopics; the other resources of the request are forwarded, and the upstream's answer is
//! merged with meshgate's in request order. Internal (naming-exempt) topics, and resources that
//! are not topics, are not governed.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, CreatePartitionsRequest, IncrementalAlterConfigsRequest,
    MetadataRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::enforce::{encode_request, forwarded, Decision};
use super::rejection::{RejectionEvent, RequestAudit, ShadowEvent, Site};
use super::rewrite::merge::AdminMerge;
use crate::metrics::Metrics;
use crate::policy::judge::Rejection;
use crate::policy::mode::Shadowed;
use crate::policy::PolicySet;
use crate::protocol::header::{split_request, undecodable, HeaderError};

/// The config resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_APPEND: i8 = 2;

/// Judges a request of `api` that changes topics, under `policies`. `None` when the API is not
/// one this module governs.
pub fn judge(
    metrics: &Metrics,
    policies: &PolicySet,
    principal: &str,
    api: ApiKey,
    frame: &Bytes,
    version: i16,
    audit: Option<&RequestAudit>,
) -> Result<Option<Decision>, HeaderError> {
    let (header, mut body) = split_request(frame, api, version)?;
    let client = header
        .client_id
        .as_ref()
        .map_or(String::new(), |c| c.to_string());
    // Where each decision is made: this request, and the topic (with its contract's topic).
    let request = Site {
        api: api_name(api),
        topic: "",
        partition: None,
        client_id: &client,
        principal,
        contract_topic: None,
        audit,
    };
    let refuse = |topic: &str, r: Rejection| {
        RejectionEvent {
            site: Site {
                topic,
                contract_topic: policies.contract_for(topic).map(|c| c.topic.as_str()),
                ..request
            },
            rejection: &r,
        }
        .emit(metrics);
        (r.error_code, r.message)
    };
    // Rules in shadow: the change is forwarded, and what they would have refused is counted.
    let shadowed = |topic: &str, shadowed: Shadowed| {
        for would in shadowed.iter() {
            ShadowEvent {
                site: Site {
                    topic,
                    contract_topic: policies.contract_for(topic).map(|c| c.topic.as_str()),
                    ..request
                },
                would,
            }
            .emit(metrics);
        }
    };
    let config = |topic: &str, key: &str, value: &str| {
        let mut shadows = Shadowed::default();
        let verdict = policies.judge_topic_config_as(topic, key, value, principal, &mut shadows);
        shadowed(topic, shadows);
        verdict.err()
    };
    let mut rejected = HashMap::new();
    let order: Vec<(i8, StrBytes)>;
    let trimmed = match api {
        ApiKey::Metadata => {
            let mut request = MetadataRequest::decode(&mut body, version)
                .map_err(|e| undecodable(api, version, e))?;
            if !request.allow_auto_topic_creation {
                return Ok(Some(Decision::Forward));
            }
            let names = request
                .topics
                .iter()
                .flatten()
                .filter_map(|t| t.name.as_ref());
            // Not a rejection: the request is forwarded, and most named topics exist already
            // (nothing would have been created), so this is neither counted nor logged as one.
            let mut refused = false;
            for name in names {
                // Shadowed refusals are not counted here either: nothing is refused.
                let mut shadows = Shadowed::default();
                if let Err(r) =
                    policies.judge_auto_create_as(name.as_str(), principal, &mut shadows)
                {
                    tracing::debug!(topic = name.as_str(), client_id = %client, rule = %r.rule, "Metadata: auto-creation switched off");
                    refused = true;
                }
            }
            if !refused {
                return Ok(Some(Decision::Forward));
            }
            request.allow_auto_topic_creation = false;
            let frame = encode_request(&header, api, version, &request)?;
            return Ok(Some(Decision::ForwardEdited(frame)));
        }
        ApiKey::CreatePartitions => {
            let request = CreatePartitionsRequest::decode(&mut body, version)
                .map_err(|e| undecodable(api, version, e))?;
            order = request
                .topics
                .iter()
                .map(|t| (TOPIC_RESOURCE, t.name.0.clone()))
                .collect();
            for t in &request.topics {
                let mut shadows = Shadowed::default();
                let verdict = policies.judge_partition_count_as(
                    t.name.as_str(),
                    t.count,
                    principal,
                    &mut shadows,
                );
                shadowed(t.name.as_str(), shadows);
                if let Err(r) = verdict {
                    let verdict = refuse(t.name.as_str(), r);
                    rejected.insert((TOPIC_RESOURCE, t.name.0.clone()), verdict);
                }
            }
            let mut trimmed = request.clone();
            trimmed
                .topics
                .retain(|t| !rejected.contains_key(&(TOPIC_RESOURCE, t.name.0.clone())));
            (!trimmed.topics.is_empty()).then(|| encode_request(&header, api, version, &trimmed))
        }
        ApiKey::AlterConfigs => {
            let request = AlterConfigsRequest::decode(&mut body, version)
                .map_err(|e| undecodable(api, version, e))?;
            let resources = request.resources.iter();
            order = judge_topic_resources(
                resources.map(|r| (r.resource_type, &r.resource_name, &r.configs)),
                |topic, configs| {
                    configs.iter().find_map(|c| {
                        let value = c.value.as_ref()?;
                        config(topic, c.name.as_str(), value.as_str())
                    })
                },
                &refuse,
                &mut rejected,
            );
            let mut trimmed = request.clone();
            trimmed
                .resources
                .retain(|r| !rejected.contains_key(&(r.resource_type, r.resource_name.clone())));
            (!trimmed.resources.is_empty()).then(|| encode_request(&header, api, version, &trimmed))
        }
        ApiKey::IncrementalAlterConfigs => {
            let request = IncrementalAlterConfigsRequest::decode(&mut body, version)
                .map_err(|e| undecodable(api, version, e))?;
            let resources = request.resources.iter();
            order = judge_topic_resources(
                resources.map(|r| (r.resource_type, &r.resource_name, &r.configs)),
                |topic, configs| {
                    configs.iter().find_map(|c| {
                        let value = c.value.as_ref()?;
                        let key = c.name.as_str();
                        match c.config_operation {
                            OP_SET => config(topic, key, value.as_str()),
                            OP_APPEND => value
                                .split(',')
                                .map(str::trim)
                                .find_map(|item| config(topic, key, item)),
                            // DELETE and SUBTRACT move toward the broker default.
                            _ => None,
                        }
                    })
                },
                &refuse,
                &mut rejected,
            );
            let mut trimmed = request.clone();
            trimmed
                .resources
                .retain(|r| !rejected.contains_key(&(r.resource_type, r.resource_name.clone())));
            (!trimmed.resources.is_empty()).then(|| encode_request(&header, api, version, &trimmed))
        }
        _ => return Ok(None),
    };
    if let Some(a) = audit {
        for (resource_type, name) in order.iter().filter(|r| !rejected.contains_key(*r)) {
            let resource = resource_name(*resource_type, name.as_str());
            a.record(forwarded(api_name(api), resource, &client));
        }
    }
    if rejected.is_empty() {
        return Ok(Some(Decision::Forward));
    }
    finish(&header, api, version, order, rejected, trimmed)
}

/// Judges the topic resources of a config change: `first_refusal(topic, configs)` is the first
/// refused config of one resource. Returns every resource in request order; the refused ones go
/// into `rejected`. Resources that are not topics are not governed.
fn judge_topic_resources<'r, C: 'r>(
    resources: impl Iterator<Item = (i8, &'r StrBytes, &'r C)>,
    first_refusal: impl Fn(&str, &C) -> Option<Rejection>,
    refuse: &impl Fn(&str, Rejection) -> (i16, String),
    rejected: &mut HashMap<(i8, StrBytes), (i16, String)>,
) -> Vec<(i8, StrBytes)> {
    let mut order = Vec::new();
    for (resource_type, name, configs) in resources {
        order.push((resource_type, name.clone()));
        if resource_type != TOPIC_RESOURCE {
            continue;
        }
        if let Some(r) = first_refusal(name.as_str(), configs) {
            rejected.insert((resource_type, name.clone()), refuse(name.as_str(), r));
        }
    }
    order
}

/// The APIs [`judge`] governs.
pub fn governs(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::Metadata
            | ApiKey::CreatePartitions
            | ApiKey::AlterConfigs
            | ApiKey::IncrementalAlterConfigs
    )
}

fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Metadata => "metadata",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::CreatePartitions => "create_partitions",
        ApiKey::AlterConfigs => "alter_configs",
        ApiKey::IncrementalAlterConfigs => "incremental_alter_configs",
        ApiKey::CreateAcls => "create_acls",
        ApiKey::DeleteAcls => "delete_acls",
        ApiKey::DeleteRecords => "delete_records",
        _ => "admin",
    }
}

/// A config resource as the audit trail names it: the topic, or `resource_type=N:name` for the
/// others (Kafka's resource type numbers: 4 broker, 8 broker logger, ...).
fn resource_name(resource_type: i8, name: &str) -> String {
    if resource_type == TOPIC_RESOURCE {
        name.to_string()
    } else {
        format!("resource_type={resource_type}:{name}")
    }
}

/// The administrative APIs the audit trail records when they pass through ungoverned.
pub fn audited(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::CreatePartitions
            | ApiKey::AlterConfigs
            | ApiKey::IncrementalAlterConfigs
            | ApiKey::CreateAcls
            | ApiKey::DeleteAcls
            | ApiKey::DeleteRecords
    )
}

/// Records an administrative request no policy judges, resource by resource, as forwarded. A
/// body that does not decode is recorded as one event naming the API only: the broker answers it.
pub fn audit_passthrough(api: ApiKey, frame: &Bytes, version: i16, audit: &RequestAudit) {
    use kafka_protocol::messages::{
        CreateAclsRequest, CreateTopicsRequest, DeleteAclsRequest, DeleteRecordsRequest,
        DeleteTopicsRequest,
    };
    let Ok((header, mut body)) = split_request(frame, api, version) else {
        return;
    };
    let client = header.client_id.as_ref().map_or("", |c| c.as_str());
    let mut resources: Vec<String> = Vec::new();
    let decoded = match api {
        ApiKey::CreateTopics => CreateTopicsRequest::decode(&mut body, version)
            .map(|r| resources.extend(r.topics.iter().map(|t| t.name.to_string()))),
        ApiKey::DeleteTopics => DeleteTopicsRequest::decode(&mut body, version).map(|r| {
            resources.extend(r.topic_names.iter().map(|t| t.to_string()));
            resources.extend(r.topics.iter().map(|t| match &t.name {
                Some(n) => n.to_string(),
                None => format!("topic_id={}", t.topic_id),
            }));
        }),
        ApiKey::CreatePartitions => CreatePartitionsRequest::decode(&mut body, version)
            .map(|r| resources.extend(r.topics.iter().map(|t| t.name.to_string()))),
        ApiKey::AlterConfigs => AlterConfigsRequest::decode(&mut body, version).map(|r| {
            resources.extend(
                r.resources
                    .iter()
                    .map(|c| resource_name(c.resource_type, c.resource_name.as_str())),
            )
        }),
        ApiKey::IncrementalAlterConfigs => {
            IncrementalAlterConfigsRequest::decode(&mut body, version).map(|r| {
                resources.extend(
                    r.resources
                        .iter()
                        .map(|c| resource_name(c.resource_type, c.resource_name.as_str())),
                )
            })
        }
        ApiKey::CreateAcls => CreateAclsRequest::decode(&mut body, version).map(|r| {
            resources.extend(r.creations.iter().map(|c| {
                format!(
                    "acl:resource_type={}:{}:{}:operation={}",
                    c.resource_type, c.resource_name, c.principal, c.operation
                )
            }))
        }),
        ApiKey::DeleteAcls => DeleteAclsRequest::decode(&mut body, version).map(|r| {
            resources.extend(r.filters.iter().map(|f| {
                format!(
                    "acl_filter:resource_type={}:{}:{}",
                    f.resource_type_filter,
                    f.resource_name_filter.as_deref().unwrap_or("*"),
                    f.principal_filter.as_deref().unwrap_or("*")
                )
            }))
        }),
        ApiKey::DeleteRecords => DeleteRecordsRequest::decode(&mut body, version).map(|r| {
            for t in &r.topics {
                for p in &t.partitions {
                    resources.push(format!(
                        "{}-{} before offset {}",
                        t.name.as_str(),
                        p.partition_index,
                        p.offset
                    ));
                }
            }
        }),
        _ => return,
    };
    if decoded.is_err() || resources.is_empty() {
        resources = vec![String::new()];
    }
    for resource in resources {
        audit.record(forwarded(api_name(api), resource, client));
    }
}

/// Forwards what is left and merges, or answers alone when nothing is left.
fn finish(
    header: &kafka_protocol::messages::RequestHeader,
    api: ApiKey,
    version: i16,
    order: Vec<(i8, StrBytes)>,
    rejected: HashMap<(i8, StrBytes), (i16, String)>,
    trimmed: Option<Result<Bytes, HeaderError>>,
) -> Result<Option<Decision>, HeaderError> {
    let merge = AdminMerge::new(api, version, order, rejected);
    Ok(Some(match trimmed {
        Some(frame) => Decision::ForwardTrimmed {
            frame: frame?,
            merge: Box::new(merge),
        },
        None => Decision::Respond(merge.refused_alone(header.correlation_id)?),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::split_response;
    use crate::proxy::rewrite::BrokerAddresses;
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{AlterConfigsResponse, CreatePartitionsResponse};
    use kafka_protocol::messages::{RequestHeader, ResponseHeader, TopicName};
    use kafka_protocol::protocol::Encodable;

    use crate::protocol::header::{join_request, join_response};

    /// Admin responses carry no broker addresses.
    struct NoAddresses;

    impl BrokerAddresses for NoAddresses {
        fn advertised_host(&self) -> &str {
            unreachable!("admin merges edit no address")
        }

        fn gateway_port(&self, _: i32, _: &str, _: i32) -> Option<i32> {
            unreachable!("admin merges edit no address")
        }
    }

    const RULES: &str = r#"
naming:
  topics:
    pattern: '^[a-z]+\.[a-z]+\.v[0-9]+$'
    exempt: ['^__']
topics:
  partitions: { min: 3, max: 12 }
  configs:
    retention.ms: { max: 604800000 }
    cleanup.policy: { allowed: [delete, compact] }
"#;

    fn set() -> PolicySet {
        crate::policy::load::compile_text("rules.yaml", RULES)
    }

    fn frame<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = api as i16;
        h.request_api_version = version;
        h.correlation_id = 5;
        join_request(&h, api, version, body).unwrap()
    }

    fn decide<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Decision {
        let metrics = Metrics::new();
        judge(
            &metrics,
            &set(),
            "User:t",
            api,
            &frame(api, version, body),
            version,
            None,
        )
        .unwrap()
        .expect("governed")
    }

    fn topic(name: &str, count: i32) -> CreatePartitionsTopic {
        let mut t = CreatePartitionsTopic::default();
        t.name = TopicName(StrBytes::from_string(name.into()));
        t.count = count;
        t
    }

    #[test]
    fn create_partitions_past_the_bounds_is_refused_and_the_rest_forwarded_and_merged() {
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![
            topic("shop.a.v1", 6),
            topic("shop.b.v1", 48),
            topic("__internal", 99),
        ];
        let Decision::ForwardTrimmed { frame, merge } = decide(ApiKey::CreatePartitions, 3, &req)
        else {
            panic!("expected a trimmed request")
        };
        let (_, mut body) = split_request(&frame, ApiKey::CreatePartitions, 3).unwrap();
        let forwarded = CreatePartitionsRequest::decode(&mut body, 3).unwrap();
        let names: Vec<&str> = forwarded.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["shop.a.v1", "__internal"],
            "internal topics are not governed"
        );

        // The broker answers for what it got; the merge restores request order.
        let mut upstream = CreatePartitionsResponse::default();
        for name in ["__internal", "shop.a.v1"] {
            let mut r = CreatePartitionsTopicResult::default();
            r.name = TopicName(StrBytes::from_string(name.into()));
            upstream.results.push(r);
        }
        let mut h = ResponseHeader::default();
        h.correlation_id = 5;
        let response = join_response(&h, ApiKey::CreatePartitions, 3, &upstream).unwrap();
        let merged = merge.merge(response, &NoAddresses).unwrap();
        let (_, mut body) = split_response(&merged, ApiKey::CreatePartitions, 3).unwrap();
        let out = CreatePartitionsResponse::decode(&mut body, 3).unwrap();
        let got: Vec<(&str, i16)> = out
            .results
            .iter()
            .map(|r| (r.name.as_str(), r.error_code))
            .collect();
        assert_eq!(
            got,
            vec![("shop.a.v1", 0), ("shop.b.v1", 44), ("__internal", 0)]
        );
        let message = out.results[1].error_message.as_deref().unwrap_or_default();
        assert!(
            message.contains("48 partitions") && message.contains("rules.yaml:"),
            "{message}"
        );
    }

    #[test]
    fn create_partitions_within_the_bounds_is_forwarded_untouched() {
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![topic("shop.a.v1", 12)];
        assert!(matches!(
            decide(ApiKey::CreatePartitions, 3, &req),
            Decision::Forward
        ));
    }

    fn alter(name: &str, configs: &[(&str, i8, Option<&str>)]) -> AlterConfigsResource {
        let mut r = AlterConfigsResource::default();
        r.resource_type = TOPIC_RESOURCE;
        r.resource_name = StrBytes::from_string(name.into());
        r.configs = configs
            .iter()
            .map(|(k, op, v)| {
                let mut c = AlterableConfig::default();
                c.name = StrBytes::from_string(k.to_string());
                c.config_operation = *op;
                c.value = v.map(|v| StrBytes::from_string(v.into()));
                c
            })
            .collect();
        r
    }

    #[test]
    fn incremental_alter_configs_judges_sets_and_appends_and_lets_deletes_through() {
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![
            alter("shop.a.v1", &[("retention.ms", OP_SET, Some("-1"))]),
            alter(
                "shop.b.v1",
                &[
                    ("retention.ms", 1, None),
                    ("cleanup.policy", 3, Some("compact")),
                ],
            ),
            alter(
                "shop.c.v1",
                &[("cleanup.policy", OP_APPEND, Some("compact,bogus"))],
            ),
            alter("shop.d.v1", &[("retention.ms", OP_SET, Some("86400000"))]),
        ];
        // A broker resource is not a topic: it passes whatever it sets.
        let mut broker = alter("1", &[("retention.ms", OP_SET, Some("-1"))]);
        broker.resource_type = 4;
        req.resources.push(broker);
        let version = 1;
        let Decision::ForwardTrimmed { frame, .. } =
            decide(ApiKey::IncrementalAlterConfigs, version, &req)
        else {
            panic!("expected a trimmed request")
        };
        let (_, mut body) =
            split_request(&frame, ApiKey::IncrementalAlterConfigs, version).unwrap();
        let forwarded = IncrementalAlterConfigsRequest::decode(&mut body, version).unwrap();
        let names: Vec<&str> = forwarded
            .resources
            .iter()
            .map(|r| r.resource_name.as_str())
            .collect();
        // -1 (infinite retention) is over the maximum; `bogus` is not an allowed policy.
        assert_eq!(names, vec!["shop.b.v1", "shop.d.v1", "1"]);
    }

    #[test]
    fn alter_configs_refused_whole_is_answered_without_the_broker() {
        let mut req = AlterConfigsRequest::default();
        let mut r =
            kafka_protocol::messages::alter_configs_request::AlterConfigsResource::default();
        r.resource_type = TOPIC_RESOURCE;
        r.resource_name = StrBytes::from_static_str("shop.a.v1");
        let mut c = kafka_protocol::messages::alter_configs_request::AlterableConfig::default();
        c.name = StrBytes::from_static_str("cleanup.policy");
        c.value = Some(StrBytes::from_static_str("none"));
        r.configs.push(c);
        req.resources.push(r);
        let Decision::Respond(frame) = decide(ApiKey::AlterConfigs, 1, &req) else {
            panic!("expected meshgate's own answer")
        };
        let (h, mut body) = split_response(&frame, ApiKey::AlterConfigs, 1).unwrap();
        assert_eq!(h.correlation_id, 5);
        let out = AlterConfigsResponse::decode(&mut body, 1).unwrap();
        assert_eq!(out.responses.len(), 1);
        assert_eq!(out.responses[0].error_code, 44);
        assert_eq!(out.responses[0].resource_type, TOPIC_RESOURCE);
    }

    fn metadata(names: &[&str], auto_create: bool) -> MetadataRequest {
        let mut r = MetadataRequest::default();
        r.allow_auto_topic_creation = auto_create;
        r.topics = Some(
            names
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_string(n.to_string())));
                    t
                })
                .collect(),
        );
        r
    }

    #[test]
    fn metadata_auto_creation_is_switched_off_when_the_rules_would_refuse_the_topic() {
        // Broker defaults are unknown, and the partition rule needs an explicit count: no
        // auto-creation passes these rules, whatever the name.
        for names in [&["Bad_Name"][..], &["shop.ok.v1"][..]] {
            let Decision::ForwardEdited(frame) =
                decide(ApiKey::Metadata, 12, &metadata(names, true))
            else {
                panic!("expected the flag cleared for {names:?}")
            };
            let (_, mut body) = split_request(&frame, ApiKey::Metadata, 12).unwrap();
            let edited = MetadataRequest::decode(&mut body, 12).unwrap();
            assert!(!edited.allow_auto_topic_creation);
            assert_eq!(
                edited.topics.unwrap().len(),
                1,
                "the topics are still described"
            );
        }
        assert!(matches!(
            decide(ApiKey::Metadata, 12, &metadata(&["Bad_Name"], false)),
            Decision::Forward
        ));
    }

    #[test]
    fn metadata_auto_creation_passes_when_only_naming_governs_and_the_name_fits() {
        let set = crate::policy::load::compile_text(
            "n.yaml",
            "naming:\n  topics:\n    pattern: '^[a-z]+\\.[a-z]+\\.v[0-9]+$'\n",
        );
        let metrics = Metrics::new();
        let run = |names: &[&str]| {
            judge(
                &metrics,
                &set,
                "User:t",
                ApiKey::Metadata,
                &frame(ApiKey::Metadata, 9, &metadata(names, true)),
                9,
                None,
            )
            .unwrap()
            .unwrap()
        };
        assert!(matches!(run(&["shop.ok.v1"]), Decision::Forward));
        assert!(matches!(
            run(&["shop.ok.v1", "NOPE"]),
            Decision::ForwardEdited(_)
        ));
    }
}
