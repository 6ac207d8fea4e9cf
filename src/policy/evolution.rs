//! `meshgate check NEW --against OLD`: contract evolution.
//!
//! Contracts are paired by name. It refuses:
//! - a schema change that breaks the contract's declared compatibility level while the major
//!   version stays the same. The level is checked against the old schema; `*_transitive` levels
//!   also against every file in the old contract's `schema.history` (earlier versions kept in Git,
//!   oldest first). This applies to Avro schemas (`format: avro`, and `format: json` with an Avro
//!   record schema file); JSON Schema files are compared for equality only;
//! - a new major version published on the same topic as the old one: a breaking change gets a new
//!   major version *and* a new topic (e.g. `orders.order-events.v2`), so existing consumers keep
//!   reading the old one.
//!
//! A version's major is its first dot-separated number; a missing version counts as no bump.

use super::{Compatibility, Contract, PolicySet};
use crate::schema::avro_compat::{check_level, Schema};

/// One refused change: the contract, where it is defined, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

fn major(version: Option<&str>) -> Option<u64> {
    version?
        .trim_start_matches(['v', 'V'])
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Every refused change from `old` to `new`.
pub fn check(new: &PolicySet, old: &PolicySet) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in &new.contracts {
        let Some(prev) = old.contracts.iter().find(|o| o.name == c.name) else {
            continue;
        };
        compare(c, prev, &mut out);
    }
    out
}

fn compare(c: &Contract, prev: &Contract, out: &mut Vec<Violation>) {
    let at = c.origin.to_string();
    let (new_v, old_v) = (
        c.schema.as_ref().and_then(|s| s.version.as_deref()),
        prev.schema.as_ref().and_then(|s| s.version.as_deref()),
    );
    let bumped = matches!((major(new_v), major(old_v)), (Some(n), Some(o)) if n > o);
    if bumped && c.topic == prev.topic {
        out.push(Violation {
            location: c.topic_origin.to_string(),
            message: format!(
                "contract `{}` moves to major version {} but stays on topic `{}`: publish a new major version on a new topic",
                c.name,
                new_v.unwrap_or("?"),
                c.topic
            ),
        });
    }
    let (Some(ns), Some(os)) = (&c.schema, &prev.schema) else {
        return;
    };
    if ns.text.trim() == os.text.trim() || bumped {
        return;
    }
    let (Ok(new_schema), Ok(old_schema)) =
        (Schema::parse_str(&ns.text), Schema::parse_str(&os.text))
    else {
        // Not Avro (a JSON Schema): only an unchanged schema is known to be compatible.
        if ns.compatibility != Compatibility::None {
            out.push(Violation {
                location: at,
                message: format!(
                    "contract `{}`: its JSON Schema changed without a major version bump; meshgate checks compatibility of Avro schemas only",
                    c.name
                ),
            });
        }
        return;
    };
    let mut previous: Vec<Schema> = os
        .history
        .iter()
        .filter_map(|h| Schema::parse_str(h).ok())
        .collect();
    previous.push(old_schema);
    if let Err(e) = check_level(ns.compatibility, &new_schema, &previous) {
        out.push(Violation {
            location: at,
            message: format!(
                "contract `{}`: the schema change breaks {:?} compatibility without a major version bump ({} → {}): {e}",
                c.name,
                ns.compatibility,
                old_v.unwrap_or("unversioned"),
                new_v.unwrap_or("unversioned"),
            ),
        });
    }
}
