//! Traffic per partner zone: what each partner read, who was active, and what was refused.
//!
//! - `meshgate_zone_fetched_bytes_total{zone}` and `meshgate_zone_fetched_records_total{zone}`:
//!   record bytes and records in the zone's Fetch answers (walked, not decoded);
//! - `meshgate_zone_requests_total{zone}`, `meshgate_zone_refusals_total{zone,reason}`;
//! - `meshgate_zone_active_principals{zone}`, `meshgate_zone_active_groups{zone}`: seen in the
//!   last [`ACTIVE`]; `meshgate_zone_last_activity_timestamp_seconds{zone}`.
//!
//! Who was active is one `std::sync::Mutex` over a small map per zone, taken once per request on
//! a zone's listener (never on the organisation's own); at most [`MAX_SEEN`] principals and
//! groups are remembered per zone, the stalest forgotten first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

/// How recently a principal or group must have been seen to count as active.
pub const ACTIVE: Duration = Duration::from_secs(300);
/// Principals and groups remembered per zone.
pub const MAX_SEEN: usize = 1000;

#[derive(Default)]
struct Activity {
    principals: HashMap<String, Instant>,
    groups: HashMap<String, Instant>,
    /// Seconds since the epoch of the last request.
    last: f64,
}

fn note(seen: &mut HashMap<String, Instant>, key: &str, now: Instant) {
    if let Some(t) = seen.get_mut(key) {
        *t = now;
        return;
    }
    if seen.len() >= MAX_SEEN {
        if let Some(stalest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
            seen.remove(&stalest);
        }
    }
    seen.insert(key.to_string(), now);
}

/// A zone's activity, as the catalog shows it.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct ZoneUsage {
    pub active_principals: usize,
    pub active_groups: usize,
    /// Seconds since the epoch; none before the first request.
    pub last_activity: Option<f64>,
    pub fetched_bytes: u64,
    pub fetched_records: u64,
}

pub struct ZoneStats {
    fetched_bytes: IntCounterVec,
    fetched_records: IntCounterVec,
    requests: IntCounterVec,
    refusals: IntCounterVec,
    active_principals: GaugeVec,
    active_groups: GaugeVec,
    last_activity: GaugeVec,
    activity: Mutex<HashMap<String, Activity>>,
}

impl ZoneStats {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["zone"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        ZoneStats {
            fetched_bytes: counter(
                "meshgate_zone_fetched_bytes_total",
                "Record bytes in a partner zone's Fetch answers",
                &["zone"],
            ),
            fetched_records: counter(
                "meshgate_zone_fetched_records_total",
                "Records in a partner zone's Fetch answers (from the batch headers)",
                &["zone"],
            ),
            requests: counter(
                "meshgate_zone_requests_total",
                "Requests on a partner zone's listener from its principals",
                &["zone"],
            ),
            refusals: counter(
                "meshgate_zone_refusals_total",
                "Requests a partner zone refused, by reason: principal (not the partner's), or the API",
                &["zone", "reason"],
            ),
            active_principals: gauge(
                "meshgate_zone_active_principals",
                "Principals that sent requests on the zone's listener in the last 5 minutes",
            ),
            active_groups: gauge(
                "meshgate_zone_active_groups",
                "Consumer groups the zone's principals used in the last 5 minutes",
            ),
            last_activity: gauge(
                "meshgate_zone_last_activity_timestamp_seconds",
                "When the zone's listener last served a request (seconds since the epoch)",
            ),
            activity: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, zone: &str, f: impl FnOnce(&mut Activity) -> T) -> T {
        let mut all = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains_key(zone) {
            all.insert(zone.to_string(), Activity::default());
        }
        f(all.get_mut(zone).expect("inserted above"))
    }

    /// A request from `principal` on the zone's listener.
    pub fn request(&self, zone: &str, principal: &str) {
        self.requests.with_label_values(&[zone]).inc();
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.with(zone, |a| {
            note(&mut a.principals, principal, now);
            a.last = wall;
        });
    }

    /// A consumer group the zone's partner used (its own name, without the zone's prefix).
    pub fn group(&self, zone: &str, group: &str) {
        let now = Instant::now();
        self.with(zone, |a| note(&mut a.groups, group, now));
    }

    pub fn refused(&self, zone: &str, reason: &str) {
        self.refusals.with_label_values(&[zone, reason]).inc();
    }

    pub fn fetched(&self, zone: &str, bytes: u64, records: u64) {
        self.fetched_bytes.with_label_values(&[zone]).inc_by(bytes);
        self.fetched_records
            .with_label_values(&[zone])
            .inc_by(records);
    }

    /// A zone's usage now.
    pub fn usage(&self, zone: &str) -> ZoneUsage {
        let now = Instant::now();
        let recent = |seen: &HashMap<String, Instant>| {
            seen.values()
                .filter(|t| now.duration_since(**t) <= ACTIVE)
                .count()
        };
        let (active_principals, active_groups, last) =
            self.with(zone, |a| (recent(&a.principals), recent(&a.groups), a.last));
        ZoneUsage {
            active_principals,
            active_groups,
            last_activity: (last > 0.0).then_some(last),
            fetched_bytes: self.fetched_bytes.with_label_values(&[zone]).get(),
            fetched_records: self.fetched_records.with_label_values(&[zone]).get(),
        }
    }

    /// Sets the gauges for the zones in force (at scrape time), dropping the others'.
    pub fn refresh<'a>(&self, zones: impl IntoIterator<Item = &'a str>) {
        for g in [
            &self.active_principals,
            &self.active_groups,
            &self.last_activity,
        ] {
            g.reset();
        }
        for zone in zones {
            let u = self.usage(zone);
            self.active_principals
                .with_label_values(&[zone])
                .set(u.active_principals as f64);
            self.active_groups
                .with_label_values(&[zone])
                .set(u.active_groups as f64);
            if let Some(t) = u.last_activity {
                self.last_activity.with_label_values(&[zone]).set(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_is_counted_per_zone_and_bounded() {
        let registry = Registry::new();
        let z = ZoneStats::new(&registry);
        z.request("acme", "User:a");
        z.request("acme", "User:a");
        z.request("acme", "User:b");
        z.group("acme", "readers");
        z.fetched("acme", 1000, 10);
        z.fetched("acme", 500, 5);
        let u = z.usage("acme");
        assert_eq!((u.active_principals, u.active_groups), (2, 1));
        assert_eq!((u.fetched_bytes, u.fetched_records), (1500, 15));
        assert!(u.last_activity.is_some());
        assert_eq!(z.usage("other").active_principals, 0);
        for i in 0..MAX_SEEN + 10 {
            z.group("acme", &format!("g{i}"));
        }
        assert_eq!(z.usage("acme").active_groups, MAX_SEEN);
        z.refresh(["acme"]);
        let text = String::from_utf8(
            prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap()
                .into_bytes(),
        )
        .unwrap();
        assert!(
            text.contains("meshgate_zone_active_principals{zone=\"acme\"} 2"),
            "{text}"
        );
        assert!(text.contains("meshgate_zone_fetched_records_total{zone=\"acme\"} 15"));
    }
}
