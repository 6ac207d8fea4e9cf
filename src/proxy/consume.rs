//! Read access on the data path: the consuming APIs judged against the contracts' `consumers:`
//! (see `policy::access`), only while some contract in force restricts reading.
//!
//! - **Fetch, ListOffsets:** the topics the principal may not read are taken out of the request
//!   and answered TOPIC_AUTHORIZATION_FAILED, with no records; the rest is forwarded. A Fetch
//!   that keeps no topic is still forwarded (a fetch session's other partitions go on), so its
//!   answer comes after the broker's usual wait.
//! - **Fetch v13+ names topics by id.** The id → name map is learned from the Metadata
//!   responses meshgate forwards (every topic, while reading is restricted). An id not in it is
//!   judged fail-closed: UNKNOWN_TOPIC_ID, which makes the client refresh its metadata through
//!   meshgate (teaching it the id) and fetch again.
//! - **OffsetCommit, OffsetFetch:** a group the principal may not use for those topics is refused
//!   whole (GROUP_AUTHORIZATION_FAILED); topics it may not read are refused per partition; an
//!   OffsetFetch of all of a group's topics has the ones it may not read left out.
//! - **JoinGroup, ConsumerGroupHeartbeat:** a group reserved by a contract for its readers, or a
//!   subscription to a topic the principal may not read, is refused alone.
//! - **Consumer lag:** every OffsetCommit of a contract topic is read (while any contract is in
//!   force) and its offsets noted in `usage`, whether or not reading is restricted.
//! - **`naming.groups`:** a group id that breaks the pattern is refused INVALID_GROUP_ID by every
//!   API that names a group (judged even when no contract restricts reading).
//!
//! Every refusal is a `RejectionEvent` (counted, logged within the rate limit, audited); what a
//! shadowed `consumers:` would have refused is a `ShadowEvent`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, FetchRequest, JoinGroupRequest, ListOffsetsRequest,
    OffsetCommitRequest, OffsetFetchRequest, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::enforce::Decision;
use super::rejection::{RejectionEvent, RequestAudit, ShadowEvent, Site};
use super::rewrite::read_merge::{
    consumer_group_heartbeat_refused, join_group_refused, FetchMerge, ListOffsetsMerge,
    OffsetCommitMerge, OffsetFetchMerge, RefusedTopic,
};
use super::rewrite::TopicFilter;
use crate::generation::Generation;
use crate::metrics::Metrics;
use crate::policy::judge::Rejection;
use crate::policy::mode::Shadowed;
use crate::protocol::header::{join_request, split_request, undecodable, HeaderError};

/// UNKNOWN_TOPIC_ID.
pub const UNKNOWN_TOPIC_ID: i16 = 100;

/// The APIs that name a consumer group (judged under `naming.groups` alone too).
pub fn names_group(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::JoinGroup
            | ApiKey::ConsumerGroupHeartbeat
    )
}

/// The APIs judged while reading is restricted.
pub fn governs(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::Fetch
            | ApiKey::ListOffsets
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::JoinGroup
            | ApiKey::ConsumerGroupHeartbeat
    )
}

/// Who asks, under which policies, and where the verdicts are counted.
pub struct Reader<'a> {
    pub policies: &'a Arc<Generation>,
    pub principal: &'a Arc<str>,
    pub metrics: &'a Metrics,
    pub audit: Option<&'a RequestAudit>,
    /// Topic ids learned from Metadata (`Gateway::topic_ids`).
    pub topic_ids: &'a RwLock<HashMap<uuid::Uuid, String>>,
}

impl Reader<'_> {
    fn site<'s>(&'s self, api: &'static str, topic: &'s str, client_id: &'s str) -> Site<'s> {
        Site {
            api,
            topic,
            partition: None,
            client_id,
            principal: self.principal,
            contract_topic: self.policies.contract_for(topic).map(|c| c.topic.as_str()),
            audit: self.audit,
        }
    }

    /// Counts and logs a refusal, or what a shadowed rule would have refused.
    fn report(&self, site: Site<'_>, refusal: Option<&Rejection>, shadowed: &Shadowed) {
        for would in shadowed.iter() {
            ShadowEvent { site, would }.emit(self.metrics);
        }
        if let Some(rejection) = refusal {
            RejectionEvent { site, rejection }.emit(self.metrics);
        }
    }

    /// The error for reading `topic` (0: allowed).
    fn topic_code(&self, api: &'static str, topic: &str, client_id: &str) -> i16 {
        let mut shadowed = Shadowed::default();
        let refusal = self
            .policies
            .client_id_refusal(client_id, self.principal, &mut shadowed)
            .or_else(|| {
                self.policies
                    .consume_refusal(topic, self.principal, &mut shadowed)
            });
        self.report(
            self.site(api, topic, client_id),
            refusal.as_ref(),
            &shadowed,
        );
        refusal.map_or(0, |r| r.error_code)
    }

    /// The error for using `group` for `topics` (0: allowed), and its message.
    fn group_code(
        &self,
        api: &'static str,
        group: &str,
        topics: &[&str],
        client_id: &str,
    ) -> (i16, String) {
        let mut shadowed = Shadowed::default();
        let refusal = self
            .policies
            .client_id_refusal(client_id, self.principal, &mut shadowed)
            .or_else(|| {
                self.policies
                    .group_name_refusal(group, self.principal, &mut shadowed)
            })
            .or_else(|| {
                self.policies
                    .group_refusal(group, self.principal, topics, &mut shadowed)
            });
        let resource = format!("group:{group}");
        self.report(
            self.site(api, &resource, client_id),
            refusal.as_ref(),
            &shadowed,
        );
        refusal.map_or((0, String::new()), |r| (r.error_code, r.message))
    }

    /// Judges one read request; `None`: forward it as it is.
    pub fn judge(
        &self,
        api: ApiKey,
        frame: &Bytes,
        version: i16,
    ) -> Result<Option<Decision>, HeaderError> {
        let (header, mut body) = split_request(frame, api, version)?;
        let client = header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let bad = |e| undecodable(api, version, e);
        match api {
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut body, version).map_err(bad)?;
                self.fetch(&header, req, version, &client)
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut body, version).map_err(bad)?;
                self.list_offsets(&header, req, version, &client)
            }
            ApiKey::OffsetCommit => {
                let req = OffsetCommitRequest::decode(&mut body, version).map_err(bad)?;
                self.offset_commit(&header, req, version, &client)
            }
            ApiKey::OffsetFetch => {
                let req = OffsetFetchRequest::decode(&mut body, version).map_err(bad)?;
                self.offset_fetch(&header, req, version, &client)
            }
            ApiKey::JoinGroup => {
                let req = JoinGroupRequest::decode(&mut body, version).map_err(bad)?;
                let (code, _) = self.group_code("join_group", &req.group_id.0, &[], &client);
                if code == 0 {
                    return Ok(None);
                }
                let answer =
                    join_group_refused(header.correlation_id, version, req.member_id, code)?;
                Ok(Some(Decision::Respond(answer)))
            }
            ApiKey::ConsumerGroupHeartbeat => {
                let req = ConsumerGroupHeartbeatRequest::decode(&mut body, version).map_err(bad)?;
                let topics: Vec<&str> = req
                    .subscribed_topic_names
                    .iter()
                    .flatten()
                    .map(|t| t.0.as_str())
                    .collect();
                let mut refusal = self.group_code(
                    "consumer_group_heartbeat",
                    &req.group_id.0,
                    &topics,
                    &client,
                );
                if refusal.0 == 0 {
                    for t in &topics {
                        let code = self.topic_code("consumer_group_heartbeat", t, &client);
                        if code != 0 {
                            refusal = (code, format!("meshgate: may not read topic `{t}`"));
                            break;
                        }
                    }
                }
                if refusal.0 == 0 {
                    return Ok(None);
                }
                let answer = consumer_group_heartbeat_refused(
                    header.correlation_id,
                    version,
                    refusal.0,
                    &refusal.1,
                )?;
                Ok(Some(Decision::Respond(answer)))
            }
            _ => Ok(None),
        }
    }

    fn fetch(
        &self,
        header: &RequestHeader,
        mut req: FetchRequest,
        version: i16,
        client: &str,
    ) -> Result<Option<Decision>, HeaderError> {
        let mut refused = Vec::new();
        // Names first, under the id map's lock, which is not held while refusals are reported.
        let names: HashMap<uuid::Uuid, String> = if version >= 13 {
            let ids = self.topic_ids.read().unwrap_or_else(|p| p.into_inner());
            req.topics
                .iter()
                .filter_map(|t| Some((t.topic_id, ids.get(&t.topic_id)?.clone())))
                .collect()
        } else {
            HashMap::new()
        };
        let partitions = |t: &FetchTopic| t.partitions.iter().map(|p| p.partition).collect();
        sift(&mut req.topics, &mut refused, partitions, |t| {
            let name = match version >= 13 {
                true => names.get(&t.topic_id).cloned(),
                false => Some(t.topic.0.to_string()),
            };
            let code = match &name {
                None => UNKNOWN_TOPIC_ID,
                Some(n) => self.topic_code("fetch", n, client),
            };
            let name = name.map(StrBytes::from_string).unwrap_or_default();
            (code, name, t.topic_id)
        });
        if refused.is_empty() {
            return Ok(None);
        }
        let frame = join_request(header, ApiKey::Fetch, version, &req)?;
        Ok(Some(Decision::ForwardTrimmed {
            frame,
            merge: Box::new(FetchMerge { version, refused }),
        }))
    }

    fn list_offsets(
        &self,
        header: &RequestHeader,
        mut req: ListOffsetsRequest,
        version: i16,
        client: &str,
    ) -> Result<Option<Decision>, HeaderError> {
        let mut refused = Vec::new();
        let partitions =
            |t: &ListOffsetsTopic| t.partitions.iter().map(|p| p.partition_index).collect();
        sift(&mut req.topics, &mut refused, partitions, |t| {
            let code = self.topic_code("list_offsets", &t.name.0, client);
            (code, t.name.0.clone(), uuid::Uuid::nil())
        });
        if refused.is_empty() {
            return Ok(None);
        }
        let merge = ListOffsetsMerge { version, refused };
        trimmed_or_alone(
            header,
            ApiKey::ListOffsets,
            version,
            &req,
            req.topics.is_empty(),
            merge,
            |m, c| m.refused_alone(c),
        )
    }

    fn offset_commit(
        &self,
        header: &RequestHeader,
        mut req: OffsetCommitRequest,
        version: i16,
        client: &str,
    ) -> Result<Option<Decision>, HeaderError> {
        let topics: Vec<&str> = req.topics.iter().map(|t| t.name.0.as_str()).collect();
        let (group_code, _) = self.group_code("offset_commit", &req.group_id.0, &topics, client);
        let mut refused = Vec::new();
        let partitions =
            |t: &OffsetCommitRequestTopic| t.partitions.iter().map(|p| p.partition_index).collect();
        sift(&mut req.topics, &mut refused, partitions, |t| {
            let code = match group_code {
                0 => self.topic_code("offset_commit", &t.name.0, client),
                c => c,
            };
            (code, t.name.0.clone(), uuid::Uuid::nil())
        });
        // What is forwarded is what the group commits: noted for its lag on contract topics.
        let now = std::time::Instant::now();
        for t in &req.topics {
            if let Some(c) = self.policies.contract_for(&t.name.0) {
                for p in &t.partitions {
                    self.metrics.usage.saw_commit(
                        &c.topic,
                        &req.group_id.0,
                        p.partition_index,
                        p.committed_offset,
                        now,
                    );
                }
            }
        }
        if refused.is_empty() {
            return Ok(None);
        }
        let merge = OffsetCommitMerge { version, refused };
        trimmed_or_alone(
            header,
            ApiKey::OffsetCommit,
            version,
            &req,
            req.topics.is_empty(),
            merge,
            |m, c| m.refused_alone(c),
        )
    }

    fn offset_fetch(
        &self,
        header: &RequestHeader,
        mut req: OffsetFetchRequest,
        version: i16,
        client: &str,
    ) -> Result<Option<Decision>, HeaderError> {
        let policies = self.policies.clone();
        let principal = self.principal.clone();
        let readable = TopicFilter(Arc::new(move |t: &str| {
            policies
                .consume_refusal(t, &principal, &mut Shadowed::default())
                .is_none()
        }));
        // (group, topics named or None for all) → the group's verdict and refused topics.
        let judge_group = |group: &str, topics: Option<Vec<(StrBytes, Vec<i32>)>>| {
            let names: Vec<&str> = topics.iter().flatten().map(|(n, _)| n.as_str()).collect();
            let (code, _) = self.group_code("offset_fetch", group, &names, client);
            let mut refused = Vec::new();
            if code == 0 {
                for (name, partitions) in topics.iter().flatten() {
                    let c = self.topic_code("offset_fetch", name, client);
                    if c != 0 {
                        refused.push(RefusedTopic {
                            name: name.clone(),
                            id: uuid::Uuid::nil(),
                            partitions: partitions.clone(),
                            code: c,
                        });
                    }
                }
            }
            (code, refused)
        };
        let mut groups = Vec::new();
        let mut all_refused;
        if version < 8 {
            let topics = req.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.clone(), t.partition_indexes.clone()))
                    .collect()
            });
            let (code, refused) = judge_group(&req.group_id.0, topics);
            all_refused = code != 0;
            if let Some(ts) = req.topics.as_mut() {
                ts.retain(|t| !refused.iter().any(|r| r.name == t.name.0));
                all_refused |= !refused.is_empty() && ts.is_empty();
            }
            groups.push((req.group_id.0.clone(), code, refused));
        } else {
            let mut kept = Vec::new();
            for mut g in std::mem::take(&mut req.groups) {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.clone(), t.partition_indexes.clone()))
                        .collect()
                });
                let (code, refused) = judge_group(&g.group_id.0, topics);
                if let Some(ts) = g.topics.as_mut() {
                    ts.retain(|t| !refused.iter().any(|r| r.name == t.name.0));
                }
                let emptied =
                    g.topics.as_ref().is_some_and(|ts| ts.is_empty()) && !refused.is_empty();
                groups.push((g.group_id.0.clone(), code, refused));
                if code == 0 && !emptied {
                    kept.push(g);
                }
            }
            all_refused = kept.is_empty();
            req.groups = kept;
        }
        let hides = self.policies.restricts_consumers
            && (req.topics.is_none() && version < 8
                || req.groups.iter().any(|g| g.topics.is_none()));
        let refusing = groups.iter().any(|(_, c, r)| *c != 0 || !r.is_empty());
        if !refusing && !hides {
            return Ok(None);
        }
        let merge = OffsetFetchMerge {
            version,
            groups,
            readable,
        };
        trimmed_or_alone(
            header,
            ApiKey::OffsetFetch,
            version,
            &req,
            all_refused,
            merge,
            |m, c| m.refused_alone(c),
        )
    }
}

/// Keeps the topics `judge` allows (code 0) and moves the others into `refused`, with the
/// partitions they asked for. `judge` gives (error code, name, id, the partitions).
fn sift<T>(
    topics: &mut Vec<T>,
    refused: &mut Vec<RefusedTopic>,
    partitions: impl Fn(&T) -> Vec<i32>,
    mut judge: impl FnMut(&T) -> (i16, StrBytes, uuid::Uuid),
) {
    topics.retain(|t| {
        let (code, name, id) = judge(t);
        if code != 0 {
            refused.push(RefusedTopic {
                name,
                id,
                partitions: partitions(t),
                code,
            });
        }
        code == 0
    });
}

/// Forwards the trimmed request with `merge`, or answers alone when nothing is left to forward.
fn trimmed_or_alone<R: Encodable, M: super::rewrite::ResponseMerge + 'static>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    req: &R,
    nothing_left: bool,
    merge: M,
    alone: impl FnOnce(&M, i32) -> Result<Bytes, HeaderError>,
) -> Result<Option<Decision>, HeaderError> {
    if nothing_left {
        return Ok(Some(Decision::Respond(alone(
            &merge,
            header.correlation_id,
        )?)));
    }
    Ok(Some(Decision::ForwardTrimmed {
        frame: join_request(header, api, version, req)?,
        merge: Box::new(merge),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchResponse, TopicName};

    const POLICY: &str =
        "contract:\n  name: secret\n  owner: o\n  topic: secret.v1\n  consumers: [User:alice]\n";

    fn fetch_frame(version: i16, topics: &[(&str, uuid::Uuid)]) -> Bytes {
        let mut req = FetchRequest::default();
        for (name, id) in topics {
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_string(name.to_string()));
            t.topic_id = *id;
            let mut p = FetchPartition::default();
            p.partition = 0;
            t.partitions.push(p);
            req.topics.push(t);
        }
        let mut h = RequestHeader::default();
        h.request_api_key = ApiKey::Fetch as i16;
        h.request_api_version = version;
        h.correlation_id = 5;
        join_request(&h, ApiKey::Fetch, version, &req).unwrap()
    }

    fn judge(
        principal: &str,
        version: i16,
        topics: &[(&str, uuid::Uuid)],
        known: &[(uuid::Uuid, &str)],
    ) -> Option<Decision> {
        let set = crate::policy::load::compile_text("p.yaml", POLICY);
        let metrics = Metrics::new();
        let policies = Arc::new(Generation::new(set, &metrics));
        let ids = RwLock::new(known.iter().map(|(i, n)| (*i, n.to_string())).collect());
        let principal: Arc<str> = Arc::from(principal);
        let reader = Reader {
            policies: &policies,
            principal: &principal,
            metrics: &metrics,
            audit: None,
            topic_ids: &ids,
        };
        reader
            .judge(ApiKey::Fetch, &fetch_frame(version, topics), version)
            .unwrap()
    }

    /// The refused topics a trimmed Fetch answers itself, and the topics it forwards.
    fn split(d: Option<Decision>, version: i16) -> (Vec<(String, i16)>, Vec<String>) {
        let Some(Decision::ForwardTrimmed { frame, merge }) = d else {
            return (vec![], vec!["(everything)".into()]);
        };
        let (_, mut body) = split_request(&frame, ApiKey::Fetch, version).unwrap();
        let forwarded = FetchRequest::decode(&mut body, version).unwrap();
        let names = forwarded
            .topics
            .iter()
            .map(|t| t.topic.0.to_string())
            .collect();
        let mut h = kafka_protocol::messages::ResponseHeader::default();
        h.correlation_id = 5;
        let empty = crate::protocol::header::join_response(
            &h,
            ApiKey::Fetch,
            version,
            &FetchResponse::default(),
        )
        .unwrap();
        let out = merge
            .merge(empty, &super::super::rewrite::testing::NoAddresses)
            .unwrap();
        let (_, mut body) =
            crate::protocol::header::split_response(&out, ApiKey::Fetch, version).unwrap();
        let r = FetchResponse::decode(&mut body, version).unwrap();
        let refused = r
            .responses
            .iter()
            .map(|t| {
                // v13+ names topics by id only.
                let name = if version >= 13 {
                    t.topic_id.to_string()
                } else {
                    t.topic.0.to_string()
                };
                (name, t.partitions[0].error_code)
            })
            .collect();
        (refused, names)
    }

    #[test]
    fn a_fetch_loses_the_topics_its_principal_may_not_read_and_keeps_the_rest() {
        let nil = uuid::Uuid::nil();
        assert!(judge(
            "User:alice",
            12,
            &[("secret.v1", nil), ("open.v1", nil)],
            &[]
        )
        .is_none());
        let (refused, kept) = split(
            judge("User:bob", 12, &[("secret.v1", nil), ("open.v1", nil)], &[]),
            12,
        );
        assert_eq!(refused, vec![("secret.v1".to_string(), 29)]);
        assert_eq!(kept, vec!["open.v1"]);
    }

    #[test]
    fn a_fetch_by_topic_id_is_judged_by_name_and_an_unknown_id_fails_closed() {
        let (secret, open, unknown) = (
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            uuid::Uuid::from_u128(3),
        );
        let known = [(secret, "secret.v1"), (open, "open.v1")];
        assert!(judge("User:alice", 13, &[("", secret), ("", open)], &known).is_none());
        let (refused, _) = split(
            judge(
                "User:bob",
                13,
                &[("", secret), ("", open), ("", unknown)],
                &known,
            ),
            13,
        );
        assert_eq!(
            refused,
            vec![
                (secret.to_string(), 29),
                (unknown.to_string(), UNKNOWN_TOPIC_ID)
            ]
        );
    }
}
