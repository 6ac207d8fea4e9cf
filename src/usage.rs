//! Who reads each data product, and how far behind: what meshgate already sees on the wire,
//! with no connection of its own to the cluster.
//!
//! - **End offsets** of contract topics' partitions: the high watermark of every Fetch response
//!   meshgate forwards, and the end of every batch a Produce response acknowledges (base offset +
//!   records), whichever is later.
//! - **Committed offsets** by group: every OffsetCommit meshgate forwards for a contract topic
//!   (the group's own commits, also through meshgate).
//! - **Lag** of a group on a data product: the sum over the partitions it committed of
//!   end offset − committed offset (never below 0); a partition whose end meshgate has not seen yet
//!   counts 0. It is current as of the last Fetch or Produce answer and the last commit meshgate
//!   forwarded: the lag the Admin API computes from the same two numbers, within one fetch.
//! - **Activity**: the principals that fetched a data product and the groups that committed its
//!   offsets, with when they were last seen; "active" means seen within [`ACTIVE_WINDOW`].
//!
//! **Bounds.** Group ids and principals come from clients, so each data product keeps at most
//! [`MAX_PER_PRODUCT`] groups and principals (the least recently seen is dropped past it), and the
//! metric labels are bounded the same way: per-group lag series only for the groups kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seen within this long counts as active.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(300);
/// Groups and principals kept per data product.
pub const MAX_PER_PRODUCT: usize = 200;

/// What meshgate has seen of one data product's readers.
#[derive(Debug, Default)]
struct Product {
    /// The end offset of each partition.
    ends: HashMap<i32, i64>,
    /// Each group's committed offset per partition, and when it last committed.
    groups: HashMap<Arc<str>, (HashMap<i32, i64>, Instant)>,
    /// Each principal that fetched, and when it last did.
    principals: HashMap<Arc<str>, Instant>,
    fetches: u64,
}

/// One group's standing on a data product.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupLag {
    pub group: String,
    pub lag: i64,
    pub partitions: usize,
    pub seconds_since_commit: u64,
}

/// One data product's readers, as the catalog and the metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProductUsage {
    pub active_groups: usize,
    pub active_principals: usize,
    pub principals: Vec<String>,
    pub groups: Vec<GroupLag>,
    pub fetch_requests: u64,
}

/// The readers of every data product, by contract topic. One lock, taken per Fetch or Produce
/// answer of a contract topic and per OffsetCommit of one; never per record.
#[derive(Debug, Default)]
pub struct Usage {
    products: Mutex<HashMap<Arc<str>, Product>>,
}

impl Usage {
    fn with<R>(&self, topic: &str, f: impl FnOnce(&mut Product) -> R) -> R {
        let mut products = self.products.lock().unwrap_or_else(|p| p.into_inner());
        let p = match products.get_mut(topic) {
            Some(p) => p,
            None => products.entry(Arc::from(topic)).or_default(),
        };
        f(p)
    }

    /// A partition's end offset is at least `end`.
    pub fn saw_end(&self, topic: &str, partition: i32, end: i64) {
        if end < 0 {
            return;
        }
        self.with(topic, |p| {
            let e = p.ends.entry(partition).or_insert(end);
            *e = (*e).max(end);
        });
    }

    /// `principal` fetched the topic (once per Fetch answer naming it).
    pub fn saw_fetch(&self, topic: &str, principal: &str, now: Instant) {
        self.with(topic, |p| {
            p.fetches += 1;
            match p.principals.get_mut(principal) {
                Some(t) => *t = now,
                None => {
                    evict_oldest(&mut p.principals, |t| *t);
                    p.principals.insert(Arc::from(principal), now);
                }
            }
        });
    }

    /// `group` committed `offset` for a partition of the topic.
    pub fn saw_commit(&self, topic: &str, group: &str, partition: i32, offset: i64, now: Instant) {
        if offset < 0 {
            return;
        }
        self.with(topic, |p| {
            if !p.groups.contains_key(group) {
                evict_oldest(&mut p.groups, |(_, t)| *t);
                p.groups.insert(Arc::from(group), (HashMap::new(), now));
            }
            let (offsets, last) = p.groups.get_mut(group).expect("inserted above");
            offsets.insert(partition, offset);
            *last = now;
        });
    }

    /// A data product's readers now.
    pub fn product(&self, topic: &str, now: Instant) -> ProductUsage {
        let products = self.products.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = products.get(topic) else {
            return ProductUsage::default();
        };
        let active = |t: &Instant| now.saturating_duration_since(*t) <= ACTIVE_WINDOW;
        let mut principals: Vec<String> = p
            .principals
            .iter()
            .filter(|(_, t)| active(t))
            .map(|(n, _)| n.to_string())
            .collect();
        principals.sort();
        let mut groups: Vec<GroupLag> = p
            .groups
            .iter()
            .map(|(g, (offsets, last))| GroupLag {
                group: g.to_string(),
                lag: offsets
                    .iter()
                    .map(|(part, committed)| {
                        p.ends.get(part).map_or(0, |end| (end - committed).max(0))
                    })
                    .sum(),
                partitions: offsets.len(),
                seconds_since_commit: now.saturating_duration_since(*last).as_secs(),
            })
            .collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        ProductUsage {
            active_groups: p.groups.values().filter(|(_, t)| active(t)).count(),
            active_principals: principals.len(),
            principals,
            groups,
            fetch_requests: p.fetches,
        }
    }
}

/// Makes room for one more entry: past [`MAX_PER_PRODUCT`], drops the least recently seen.
fn evict_oldest<V>(map: &mut HashMap<Arc<str>, V>, seen: impl Fn(&V) -> Instant) {
    if map.len() < MAX_PER_PRODUCT {
        return;
    }
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, v)| seen(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_end_offset_minus_the_commit_per_partition_summed() {
        let u = Usage::default();
        let t0 = Instant::now();
        u.saw_end("t", 0, 10);
        u.saw_end("t", 1, 7);
        u.saw_commit("t", "g", 0, 4, t0);
        u.saw_commit("t", "g", 1, 7, t0);
        u.saw_commit("t", "h", 0, 10, t0);
        let p = u.product("t", t0);
        assert_eq!(
            p.groups
                .iter()
                .map(|g| (g.group.as_str(), g.lag))
                .collect::<Vec<_>>(),
            vec![("g", 6), ("h", 0)]
        );
        // Ends only move forward (an older Fetch answer arriving late does not rewind them).
        u.saw_end("t", 0, 8);
        u.saw_end("t", 0, 12);
        assert_eq!(u.product("t", t0).groups[0].lag, 8);
        // A commit past the end seen so far counts 0, not negative.
        u.saw_commit("t", "g", 0, 20, t0);
        assert_eq!(u.product("t", t0).groups[0].lag, 0);
    }

    #[test]
    fn activity_is_windowed_and_bounded() {
        let u = Usage::default();
        let t0 = Instant::now();
        u.saw_fetch("t", "User:a", t0);
        u.saw_fetch("t", "User:b", t0 + Duration::from_secs(400));
        let p = u.product("t", t0 + Duration::from_secs(400));
        assert_eq!(p.principals, vec!["User:b"]);
        assert_eq!((p.active_principals, p.fetch_requests), (1, 2));
        for i in 0..(MAX_PER_PRODUCT + 50) {
            u.saw_commit(
                "t",
                &format!("g{i}"),
                0,
                1,
                t0 + Duration::from_millis(i as u64),
            );
        }
        let p = u.product("t", t0);
        assert_eq!(p.groups.len(), MAX_PER_PRODUCT);
        assert!(
            !p.groups.iter().any(|g| g.group == "g0"),
            "the oldest went first"
        );
        assert_eq!(u.product("unknown", t0), ProductUsage::default());
    }
}
