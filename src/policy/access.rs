//! Who may read a data product: a contract's `consumers:` judged for the consuming APIs.
//!
//! - **Topics.** A contract listing principals (`User:...`) lets only them read its topic:
//!   Fetch, ListOffsets and OffsetFetch of anyone else are refused per partition with
//!   TOPIC_AUTHORIZATION_FAILED (29). Listing only groups leaves reading open to anyone.
//! - **Groups.** A contract listing groups (`Group:name`, `Group:prefix*`) lets only those groups
//!   hold offsets of its topic (OffsetCommit, OffsetFetch) and subscribe to it
//!   (ConsumerGroupHeartbeat's topics): others get GROUP_AUTHORIZATION_FAILED (30). The groups a
//!   contract names are reserved for its readers: a principal that may read none of the contracts
//!   whose patterns match a group may not join it (JoinGroup, ConsumerGroupHeartbeat). A group no
//!   pattern matches is open, as without `consumers:`.
//! - **Modes.** The contract's mode applies: `shadow` (and a canary's shadow side) lets the read
//!   through and reports the would-reject; `off` does not judge.
//! - meshgate judges before the upstream's own ACLs: a read meshgate allows can still be refused
//!   by the cluster (its error is passed through), and one meshgate refuses never reaches it.

use super::judge::{under_mode, Rejection, POLICY_VIOLATION, TOPIC_AUTHORIZATION_FAILED};
use super::mode::Shadowed;
use super::PolicySet;

/// GROUP_AUTHORIZATION_FAILED.
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
/// INVALID_GROUP_ID.
pub const INVALID_GROUP_ID: i16 = 24;

impl PolicySet {
    /// Why `principal` may not read `topic`, if it may not (`None`: it may, or a shadowed rule
    /// would have refused it, noted in `shadowed`).
    pub fn consume_refusal(
        &self,
        topic: &str,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Option<Rejection> {
        let c = self.contract_for(topic)?;
        let consumers = c.consumers.as_ref().filter(|_| !c.mode.is_off())?;
        if consumers.admits(principal) {
            return None;
        }
        let r = Rejection {
            error_code: TOPIC_AUTHORIZATION_FAILED,
            message: format!(
                "meshgate: `{principal}` may not read data product `{}` (topic `{topic}`); its consumers are {} ({})",
                c.name,
                consumers.principals.join(", "),
                c.origin
            ),
            record_errors: vec![],
            policy: "consumers",
            rule: "consumers".into(),
        };
        under_mode(&c.mode, principal, shadowed, r).err()
    }

    /// `principal` as the chargeback labels it: itself when a contract names it, else `_other`.
    pub fn chargeback_principal<'p>(&self, principal: &'p str) -> &'p str {
        if self.named_principals.contains(principal) {
            principal
        } else {
            crate::chargeback::OTHER
        }
    }

    /// Whether `naming.groups` constrains consumer group ids.
    pub fn names_groups(&self) -> bool {
        self.naming
            .as_ref()
            .is_some_and(|n| n.groups.is_some() && !n.mode.is_off())
    }

    /// Whether `naming.client_ids` is set (and not off).
    pub fn names_client_ids(&self) -> bool {
        self.naming
            .as_ref()
            .is_some_and(|n| n.client_ids.is_some() && !n.mode.is_off())
    }

    /// A client id that breaks `naming.client_ids`: POLICY_VIOLATION (44) on whatever the
    /// request asks (every partition of a Produce, every topic and group of the consuming APIs),
    /// with a message that names the id and the rule; under `naming`'s mode.
    pub fn client_id_refusal(
        &self,
        client_id: &str,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Option<Rejection> {
        self.naming_refusal(
            |n| n.client_ids.as_ref(),
            client_id,
            "client id",
            POLICY_VIOLATION,
            principal,
            shadowed,
        )
    }

    /// Why a consumer group id breaks `naming.groups`, if it does (INVALID_GROUP_ID).
    pub fn group_name_refusal(
        &self,
        group: &str,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Option<Rejection> {
        self.naming_refusal(
            |n| n.groups.as_ref(),
            group,
            "consumer group",
            INVALID_GROUP_ID,
            principal,
            shadowed,
        )
    }

    /// A name that breaks the `naming` pattern `rule` picks (unless exempt): refused with
    /// `error_code`, under `naming`'s mode.
    fn naming_refusal(
        &self,
        rule: fn(&super::Naming) -> Option<&super::NamePattern>,
        name: &str,
        what: &str,
        error_code: i16,
        principal: &str,
        shadowed: &mut Shadowed,
    ) -> Option<Rejection> {
        let n = self.naming.as_ref().filter(|n| !n.mode.is_off())?;
        let (pattern, exempt) = rule(n)?;
        if pattern.is_match(name) || exempt.iter().any(|e| e.is_match(name)) {
            return None;
        }
        let r = Rejection {
            error_code,
            message: format!(
                "meshgate: {what} `{name}` breaks the naming rule `{}` ({})",
                pattern.as_str(),
                n.origin
            ),
            record_errors: vec![],
            policy: "naming",
            rule: pattern.as_str().to_string(),
        };
        under_mode(&n.mode, principal, shadowed, r).err()
    }

    /// Whether a Metadata answer shows `topic` to `principal`: always, unless
    /// `access.hide_unauthorized_topics` is set and the topic's contract lets it neither produce
    /// (`producers:`) nor read (`consumers:`).
    pub fn shows_topic(&self, topic: &str, principal: &str) -> bool {
        if self.hide_unauthorized_topics.is_none() {
            return true;
        }
        let Some(c) = self.contract_for(topic) else {
            return true;
        };
        if c.mode.is_off() {
            return true;
        }
        let produces = c.producers.is_empty() || c.producers.iter().any(|p| **p == *principal);
        let reads = c.consumers.as_ref().is_none_or(|r| r.admits(principal));
        produces || reads
    }

    /// Why `principal` may not use consumer group `group` for `topics` (with no topics: join
    /// it at all), if it may not.
    pub fn group_refusal(
        &self,
        group: &str,
        principal: &str,
        topics: &[&str],
        shadowed: &mut Shadowed,
    ) -> Option<Rejection> {
        let refuse = |mode, message: String, shadowed: &mut Shadowed| {
            let r = Rejection {
                error_code: GROUP_AUTHORIZATION_FAILED,
                message,
                record_errors: vec![],
                policy: "consumers",
                rule: "consumer_groups".into(),
            };
            under_mode(mode, principal, shadowed, r).err()
        };
        for topic in topics {
            let Some(c) = self.contract_for(topic) else {
                continue;
            };
            let Some(consumers) = c.consumers.as_ref().filter(|_| !c.mode.is_off()) else {
                continue;
            };
            if !consumers.admits_group(group) {
                let groups: Vec<String> = consumers.groups.iter().map(|g| g.to_string()).collect();
                let message = format!(
                    "meshgate: group `{group}` may not consume data product `{}` (topic `{topic}`); its groups are {} ({})",
                    c.name,
                    groups.join(", "),
                    c.origin
                );
                if let Some(r) = refuse(&c.mode, message, shadowed) {
                    return Some(r);
                }
            }
        }
        // The groups contracts name are reserved for their readers.
        let mut reserved_by = None;
        for c in &self.contracts {
            let Some(consumers) = c.consumers.as_ref().filter(|_| !c.mode.is_off()) else {
                continue;
            };
            if !consumers.groups.iter().any(|g| g.matches(group)) {
                continue;
            }
            if consumers.admits(principal) {
                return None;
            }
            reserved_by.get_or_insert(c);
        }
        let c = reserved_by?;
        let message = format!(
            "meshgate: group `{group}` is reserved for the readers of data product `{}`, and `{principal}` is not one of them ({})",
            c.name, c.origin
        );
        refuse(&c.mode, message, shadowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::compile_text;

    const POLICY: &str = r#"
contract:
  name: orders
  owner: team
  topic: shop.orders.v1
  consumers: [User:analytics, User:billing, Group:orders-*, Group:audit]
---
contract:
  name: open-groups
  owner: team
  topic: shop.open.v1
  consumers: [User:analytics]
---
contract:
  name: only-groups
  owner: team
  topic: shop.groups.v1
  consumers: [Group:grp-a]
---
contract:
  name: shadowed
  owner: team
  topic: shop.shadow.v1
  mode: shadow
  consumers: [User:analytics]
---
contract:
  name: free
  owner: team
  topic: shop.free.v1
"#;

    fn refused(set: &PolicySet, topic: &str, principal: &str) -> Option<i16> {
        set.consume_refusal(topic, principal, &mut Shadowed::default())
            .map(|r| r.error_code)
    }

    fn group(set: &PolicySet, group: &str, principal: &str, topics: &[&str]) -> Option<i16> {
        set.group_refusal(group, principal, topics, &mut Shadowed::default())
            .map(|r| r.error_code)
    }

    #[test]
    fn only_the_listed_principals_read_a_topic_that_lists_them() {
        let set = compile_text("c.yaml", POLICY);
        assert!(set.restricts_consumers);
        assert_eq!(refused(&set, "shop.orders.v1", "User:analytics"), None);
        assert_eq!(refused(&set, "shop.orders.v1", "User:mallory"), Some(29));
        assert_eq!(refused(&set, "shop.orders.v1", "User:ANONYMOUS"), Some(29));
        assert_eq!(
            refused(&set, "shop.groups.v1", "User:mallory"),
            None,
            "groups only"
        );
        assert_eq!(refused(&set, "shop.free.v1", "User:mallory"), None);
        assert_eq!(refused(&set, "not.a.contract", "User:mallory"), None);
        let r = set
            .consume_refusal("shop.orders.v1", "User:mallory", &mut Shadowed::default())
            .unwrap();
        assert!(
            r.message.contains("may not read data product `orders`"),
            "{}",
            r.message
        );
        assert!(r.message.contains("c.yaml:"), "{}", r.message);
    }

    #[test]
    fn shadow_lets_the_read_through_and_notes_it() {
        let set = compile_text("c.yaml", POLICY);
        let mut shadowed = Shadowed::default();
        assert!(set
            .consume_refusal("shop.shadow.v1", "User:mallory", &mut shadowed)
            .is_none());
        assert_eq!(shadowed.iter().count(), 1);
    }

    #[test]
    fn groups_hold_offsets_only_of_the_topics_that_admit_them_and_reserved_groups_take_readers_only(
    ) {
        let set = compile_text("c.yaml", POLICY);
        // Offsets of a topic: the group must match.
        assert_eq!(
            group(&set, "orders-etl", "User:analytics", &["shop.orders.v1"]),
            None
        );
        assert_eq!(
            group(&set, "audit", "User:billing", &["shop.orders.v1"]),
            None
        );
        assert_eq!(
            group(&set, "random", "User:analytics", &["shop.orders.v1"]),
            Some(30)
        );
        assert_eq!(
            group(&set, "random", "User:analytics", &["shop.open.v1"]),
            None
        );
        // Joining: a reserved group needs a reader of a contract that names it.
        assert_eq!(group(&set, "orders-etl", "User:mallory", &[]), Some(30));
        assert_eq!(group(&set, "orders-etl", "User:billing", &[]), None);
        assert_eq!(
            group(&set, "grp-a", "User:mallory", &[]),
            None,
            "only-groups admits anyone"
        );
        assert_eq!(group(&set, "unreserved", "User:mallory", &[]), None);
    }

    #[test]
    fn hidden_topics_are_those_a_principal_may_neither_write_nor_read() {
        let text = format!(
            "{POLICY}---\naccess: {{ hide_unauthorized_topics: true }}\n---\ncontract:\n  name: w\n  owner: o\n  topic: shop.w.v1\n  producers: [User:writer]\n  consumers: [User:reader]\n"
        );
        let set = compile_text("c.yaml", &text);
        assert!(set.shows_topic("shop.w.v1", "User:writer"));
        assert!(set.shows_topic("shop.w.v1", "User:reader"));
        assert!(!set.shows_topic("shop.w.v1", "User:mallory"));
        // Anyone may produce to orders: shown to all.
        assert!(set.shows_topic("shop.orders.v1", "User:mallory"));
        assert!(set.shows_topic("not.a.contract", "User:mallory"));
        // Off unless asked for.
        let without = text.replace(
            "access: { hide_unauthorized_topics: true }",
            "naming: { topics: { pattern: '.*' } }",
        );
        assert!(compile_text("c.yaml", &without).shows_topic("shop.w.v1", "User:mallory"));
    }

    #[test]
    fn group_ids_follow_the_naming_rule_unless_exempt() {
        let set = compile_text(
            "n.yaml",
            "naming:\n  topics: { pattern: '.*' }\n  groups: { pattern: '^[a-z]+-(svc|etl)$', exempt: ['^console-'] }\n",
        );
        assert!(set.names_groups());
        let code = |g: &str| {
            set.group_name_refusal(g, "User:a", &mut Shadowed::default())
                .map(|r| r.error_code)
        };
        assert_eq!(code("orders-svc"), None);
        assert_eq!(code("console-1234"), None);
        assert_eq!(code("Random_Group"), Some(INVALID_GROUP_ID));
        assert!(!compile_text("n.yaml", POLICY).names_groups());
    }

    #[test]
    fn client_ids_follow_the_naming_rule_unless_exempt_and_under_its_mode() {
        let text = "naming:\n  topics: { pattern: '.*' }\n  client_ids: { pattern: '^[a-z]+-(svc|app)(-[0-9]+)?$', exempt: ['^rdkafka$'] }\n";
        let set = compile_text("n.yaml", text);
        assert!(set.names_client_ids() && set.governs_produce());
        let refusal = |c: &str| set.client_id_refusal(c, "User:a", &mut Shadowed::default());
        assert!(refusal("orders-svc-2").is_none());
        assert!(refusal("rdkafka").is_none(), "exempt");
        let r = refusal("My Laptop").unwrap();
        assert_eq!(r.error_code, 44);
        assert_eq!(
            r.message,
            "meshgate: client id `My Laptop` breaks the naming rule `^[a-z]+-(svc|app)(-[0-9]+)?$` (n.yaml:2)"
        );
        // Shadowed: noted, not refused.
        let shadow = compile_text("n.yaml", &format!("{text}  mode: shadow\n"));
        let mut shadowed = Shadowed::default();
        assert!(shadow
            .client_id_refusal("My Laptop", "User:a", &mut shadowed)
            .is_none());
        assert!(!shadowed.is_empty());
        assert!(!compile_text("n.yaml", POLICY).names_client_ids());
    }

    #[test]
    fn consumers_are_principals_or_groups_and_never_empty() {
        let set = compile_text("c.yaml", POLICY);
        let c = set.contract_for("shop.orders.v1").unwrap();
        let consumers = c.consumers.as_ref().unwrap();
        assert_eq!(consumers.principals.len(), 2);
        assert_eq!(consumers.groups.len(), 2);
        let mut errors = Vec::new();
        crate::policy::load::compile_sources(
            &[(
                "bad.yaml".into(),
                "contract:\n  name: x\n  owner: o\n  topic: t.v1\n  consumers: [analytics]\n"
                    .into(),
            )],
            &mut errors,
        );
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.contains("bad.yaml:5")
                && e.contains("consumer `analytics` is not a principal")),
            "{text:?}"
        );
        assert!(
            !compile_text(
                "f.yaml",
                "contract:\n  name: x\n  owner: o\n  topic: t.v1\n"
            )
            .restricts_consumers
        );
    }
}
