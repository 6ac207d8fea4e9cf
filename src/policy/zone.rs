//! Partner zones, compiled: who the partner is, which topics it sees under which names, and the
//! prefix that keeps its consumer groups apart from the organisation's.
//!
//! A share is read-only unless it says `produce: true`.
//!
//! A zone's listener is bound when the gateway starts (`app`); a reload changes its principals,
//! shares and group prefix for every later request (each request looks its zone up by name in the
//! generation in force), while a changed `listen`, `tls` or a new zone waits for a restart (the
//! reload warns: `generation::zone_changes`). A zone that a reload removes refuses every later
//! request on its listener.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Origin;

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub listen: SocketAddr,
    pub broker_port_base: Option<u16>,
    pub advertised_host: Option<String>,
    /// (cert, key, client CA), resolved against the policy file's directory.
    pub tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    pub principals: Vec<Box<str>>,
    pub group_prefix: String,
    pub shares: Vec<Share>,
    pub origin: Origin,
}

/// A shared topic and the name the partner sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub topic: String,
    pub alias: String,
    /// `produce: true`: the partner may write to it.
    pub produce: bool,
}

impl Zone {
    /// The topic a partner's name stands for; `None` for a name the zone does not share.
    pub fn topic_of(&self, alias: &str) -> Option<&str> {
        self.shares
            .iter()
            .find(|s| s.alias == alias)
            .map(|s| s.topic.as_str())
    }

    /// The topic a partner's name stands for, when the zone lets the partner produce to it.
    pub fn writable_topic_of(&self, alias: &str) -> Option<&str> {
        self.shares
            .iter()
            .find(|s| s.alias == alias && s.produce)
            .map(|s| s.topic.as_str())
    }

    /// Whether the partner may produce to this (real) topic.
    pub fn writes(&self, topic: &str) -> bool {
        self.shares.iter().any(|s| s.topic == topic && s.produce)
    }

    /// The partner's name for a topic; `None` when the zone does not share it.
    pub fn alias_of(&self, topic: &str) -> Option<&str> {
        self.shares
            .iter()
            .find(|s| s.topic == topic)
            .map(|s| s.alias.as_str())
    }

    pub fn admits(&self, principal: &str) -> bool {
        self.principals.iter().any(|p| &**p == principal)
    }

    /// The cluster's name for a partner's group.
    pub fn group(&self, partner_group: &str) -> String {
        format!("{}{partner_group}", self.group_prefix)
    }

    /// The partner's name for a cluster group; `None` for a group outside the zone.
    pub fn partner_group<'a>(&self, group: &'a str) -> Option<&'a str> {
        group.strip_prefix(self.group_prefix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::load::compile_text;

    const ZONE: &str = r#"
zone:
  name: acme
  listen: 127.0.0.1:9400
  principals: [User:acme]
  shares:
    - {topic: orders.order-events.v1, as: partner-acme.orders}
    - {topic: shop.prices.v1}
"#;

    #[test]
    fn a_zone_maps_names_both_ways_and_prefixes_groups() {
        let set = compile_text("zone.yaml", ZONE);
        let z = &set.zones[0];
        assert_eq!(
            z.topic_of("partner-acme.orders"),
            Some("orders.order-events.v1")
        );
        assert_eq!(
            z.alias_of("orders.order-events.v1"),
            Some("partner-acme.orders")
        );
        assert_eq!(
            z.topic_of("orders.order-events.v1"),
            None,
            "the real name is not shared"
        );
        assert_eq!(z.topic_of("shop.prices.v1"), Some("shop.prices.v1"));
        assert_eq!(z.group("readers"), "zone.acme.readers");
        assert_eq!(z.partner_group("zone.acme.readers"), Some("readers"));
        assert_eq!(z.partner_group("internal-billing"), None);
        assert!(z.admits("User:acme") && !z.admits("User:other"));
        assert_eq!(z.listen.port(), 9400);
    }

    #[test]
    fn zone_mistakes_are_file_line_errors() {
        let mut errors = Vec::new();
        let bad = r#"
zone:
  name: acme
  listen: nowhere
  principals: [acme]
  shares:
    - {topic: a.b.v1, as: "bad name!"}
    - {topic: c.d.v1, as: x.y.v1}
    - {topic: e.f.v1, as: x.y.v1}
---
zone:
  name: acme
  listen: 127.0.0.1:9500
  principals: [User:b]
  shares: [{topic: g.h.v1}]
---
zone:
  name: empty
  listen: 127.0.0.1:9600
  principals: [User:b]
  shares: []
"#;
        crate::policy::load::compile_sources(
            &[(std::path::PathBuf::from("z.yaml"), bad.to_string())],
            &mut errors,
        );
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for expected in [
            "z.yaml:4: zone `acme`: listen `nowhere` is not HOST:PORT",
            "z.yaml:5: zone `acme`: principal `acme` is not a principal like User:acme",
            "z.yaml:7: zone `acme`: alias `bad name!` is not a valid Kafka topic name",
            "z.yaml:9: zone `acme`: alias `x.y.v1` is given twice",
            "z.yaml:12: zone `acme` is already defined at z.yaml:3",
            "z.yaml:21: zone `empty`: `shares` is empty",
        ] {
            assert!(text.iter().any(|t| t == expected), "{expected}\n{text:#?}");
        }
    }
}
