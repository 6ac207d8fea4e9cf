//! Service-level indicators from quality rules that need a window: ODCS `rowCount`,
//! `duplicateValues`, and `nullValues` / `missingValues` / `invalidValues` / `sql` checks whose
//! threshold allows some bad records (`mustBeLessThan: 1, unit: percent`). They never refuse a
//! record. meshgate counts, per contract and SLI, the records it judged and those that were bad;
//! the window is Prometheus' (`meshgate alerts` writes one alert per SLI over `WINDOW`), and
//! `/catalog` shows the counts since the policy generation was loaded.
//!
//! Decisions:
//! - The counts belong to the compiled contract, so a reload starts them again; Prometheus'
//!   `increase()` treats that as a counter reset.
//! - Records are counted as they are judged: a record counted here may still be refused when a
//!   later record of its batch breaks an enforced rule (the batch is refused whole). Producers
//!   rarely send such batches twice; the bias is toward counting, never toward missing records.
//! - `duplicateValues` remembers the hashes of the last [`DUPLICATE_WINDOW`] values per SLI (a
//!   bounded FIFO), so it counts repeats within the recent past, not over all time. It takes a
//!   lock per record, for the contracts that declare it only.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::fields::{RecordFields, Val};
use crate::policy::Origin;
use crate::rules::Rule;

/// The window `meshgate alerts` evaluates SLIs over.
pub const WINDOW: &str = "1h";

/// How many recent values a `duplicateValues` SLI remembers.
pub const DUPLICATE_WINDOW: usize = 100_000;

/// A quality operator (`mustBe`, `mustBeLessThan`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::Eq => value == bound,
            Op::Ne => value != bound,
            Op::Gt => value > bound,
            Op::Ge => value >= bound,
            Op::Lt => value < bound,
            Op::Le => value <= bound,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// The ODCS key that writes it (for export).
    pub fn odcs_key(self) -> &'static str {
        match self {
            Op::Eq => "mustBe",
            Op::Ne => "mustNotBe",
            Op::Gt => "mustBeGreaterThan",
            Op::Ge => "mustBeGreaterOrEqualTo",
            Op::Lt => "mustBeLessThan",
            Op::Le => "mustBeLessOrEqualTo",
        }
    }
}

/// `unit:` of a quality rule: a count of records (the default) or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Rows,
    Percent,
}

#[derive(Debug)]
pub struct Sli {
    pub id: String,
    pub kind: SliKind,
    /// All must hold of the measured value (a count, or a percentage with `Unit::Percent`).
    pub target: Vec<(Op, f64)>,
    pub unit: Unit,
    pub origin: Origin,
    /// The ODCS element it came from (`schema[0].properties[1].quality[0]`).
    pub element: String,
    pub records: AtomicU64,
    pub bad: AtomicU64,
}

#[derive(Debug)]
pub enum SliKind {
    /// A record is bad when `bad` holds of it.
    Bad { metric: String, bad: Rule },
    /// Records accepted per window: measured from `meshgate_produce_records_total`.
    RowCount,
    /// A record is bad when its values of `fields` repeat a recent record's.
    Duplicates {
        fields: Vec<Box<[Box<str>]>>,
        seen: Mutex<Recent>,
    },
}

/// The hashes of the most recent values, bounded.
#[derive(Debug, Default)]
pub struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    /// Whether `hash` was seen within the window; remembers it.
    fn repeat(&mut self, hash: u64) -> bool {
        if self.set.contains(&hash) {
            return true;
        }
        if self.order.len() >= DUPLICATE_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(hash);
        self.set.insert(hash);
        false
    }
}

impl Sli {
    pub fn new(
        id: String,
        kind: SliKind,
        target: Vec<(Op, f64)>,
        unit: Unit,
        origin: Origin,
        element: String,
    ) -> Self {
        Sli {
            id,
            kind,
            target,
            unit,
            origin,
            element,
            records: AtomicU64::new(0),
            bad: AtomicU64::new(0),
        }
    }

    /// The metric name (`nullValues`, `rowCount`, `duplicateValues`, `sql`, ...).
    pub fn metric(&self) -> &str {
        match &self.kind {
            SliKind::Bad { metric, .. } => metric,
            SliKind::RowCount => "rowCount",
            SliKind::Duplicates { .. } => "duplicateValues",
        }
    }

    /// Counts one judged record.
    pub fn observe(&self, record: &dyn RecordFields) {
        let bad = match &self.kind {
            SliKind::RowCount => return,
            SliKind::Bad { bad, .. } => bad.passes(record),
            SliKind::Duplicates { fields, seen } => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for f in fields {
                    hash_val(&record.get(f), &mut h);
                }
                let hash = h.finish();
                seen.lock().unwrap_or_else(|e| e.into_inner()).repeat(hash)
            }
        };
        self.records.fetch_add(1, Ordering::Relaxed);
        if bad {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The value measured so far (bad records, as a count or a percentage), and whether the
    /// target holds of it; `None` before any record, and for `rowCount` (a rate over a window).
    pub fn measured(&self) -> Option<(f64, bool)> {
        if matches!(self.kind, SliKind::RowCount) {
            return None;
        }
        let records = self.records.load(Ordering::Relaxed);
        if records == 0 {
            return None;
        }
        let bad = self.bad.load(Ordering::Relaxed) as f64;
        let value = match self.unit {
            Unit::Rows => bad,
            Unit::Percent => 100.0 * bad / records as f64,
        };
        Some((value, self.holds(value)))
    }

    pub fn holds(&self, value: f64) -> bool {
        self.target
            .iter()
            .all(|(op, bound)| op.holds(value, *bound))
    }

    /// The target as text: `< 1 percent`, `> 100 and < 120 rows`.
    pub fn target_text(&self) -> String {
        let parts: Vec<String> = self
            .target
            .iter()
            .map(|(op, v)| format!("{} {v}", op.as_str()))
            .collect();
        let unit = match self.unit {
            Unit::Rows => "rows",
            Unit::Percent => "percent",
        };
        format!("{} {unit}", parts.join(" and "))
    }
}

fn hash_val(v: &Val<'_>, h: &mut impl Hasher) {
    match v {
        Val::Missing | Val::Null => 0u8.hash(h),
        Val::Bool(b) => (1u8, b).hash(h),
        Val::Int(i) => (2u8, i).hash(h),
        Val::Float(f) => (3u8, f.to_bits()).hash(h),
        Val::Str(s) => (4u8, s).hash(h),
        Val::Other => 5u8.hash(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSource;
    use serde_json::json;
    use std::sync::Arc;

    fn origin() -> Origin {
        Origin {
            file: Arc::from("c.yaml"),
            line: 1,
        }
    }

    #[test]
    fn a_bad_record_sli_counts_and_compares_as_a_percentage() {
        let rule = Rule::compile(RuleSource::Sql("status IS NULL"), None).unwrap();
        let sli = Sli::new(
            "status_nulls".into(),
            SliKind::Bad {
                metric: "nullValues".into(),
                bad: rule,
            },
            vec![(Op::Lt, 10.0)],
            Unit::Percent,
            origin(),
            "schema[0]".into(),
        );
        assert_eq!(sli.measured(), None);
        for i in 0..20 {
            let status = if i < 3 { json!(null) } else { json!("PAID") };
            sli.observe(&json!({ "status": status }));
        }
        let (value, holds) = sli.measured().unwrap();
        assert_eq!(value, 15.0);
        assert!(!holds, "15% is not < 10%");
        assert_eq!(sli.target_text(), "< 10 percent");
    }

    #[test]
    fn duplicates_are_counted_over_the_chosen_fields_within_the_window() {
        let sli = Sli::new(
            "dups".into(),
            SliKind::Duplicates {
                fields: vec![vec!["tenant".into()].into(), vec!["id".into()].into()],
                seen: Mutex::new(Recent::default()),
            },
            vec![(Op::Eq, 0.0)],
            Unit::Rows,
            origin(),
            "schema[0].quality[0]".into(),
        );
        sli.observe(&json!({"tenant": "a", "id": 1}));
        sli.observe(&json!({"tenant": "b", "id": 1}));
        sli.observe(&json!({"tenant": "a", "id": 1, "other": true}));
        assert_eq!(sli.measured(), Some((1.0, false)));
        let mut recent = Recent::default();
        for i in 0..DUPLICATE_WINDOW as u64 + 1 {
            assert!(!recent.repeat(i));
        }
        assert!(!recent.repeat(0), "the oldest value left the window");
        assert!(recent.repeat(DUPLICATE_WINDOW as u64));
        assert_eq!(recent.order.len(), DUPLICATE_WINDOW);
    }
}
