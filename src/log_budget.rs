//! The one rate limit of governance log lines (refusals, would-rejects, dead-letter and audit
//! topic failures): 20 lines a second over the whole gateway; the lines over it are counted, and
//! the count goes out with the next line. Atomics only: no lock, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines per second at most, over the whole gateway; the rest are counted and the count is
/// reported with the next line.
pub const LOG_PER_SEC: u64 = 20;

/// The log's rate limit: lines in the current second, and lines suppressed since the last one.
pub struct LogBudget {
    window: AtomicU64,
    count: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBudget {
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written at `now_secs`.
    pub fn take(&self, now_secs: u64) -> Option<u64> {
        if self.window.swap(now_secs, Ordering::Relaxed) != now_secs {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) >= LOG_PER_SEC {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

pub static LOG_BUDGET: LogBudget = LogBudget::new();

/// `Some(lines suppressed since the last one)` when a governance line may be logged now: the
/// one rate limit (20 lines a second) shared by refusals, would-rejects and dead-letter failures.
pub fn allowed() -> Option<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LOG_BUDGET.take(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_allows_a_burst_per_second_and_reports_what_it_held_back() {
        let b = LogBudget::new();
        let allowed = (0..LOG_PER_SEC + 5)
            .filter(|_| b.take(100).is_some())
            .count();
        assert_eq!(allowed as u64, LOG_PER_SEC);
        assert_eq!(
            b.take(101),
            Some(5),
            "the next second's first line reports the 5 held back"
        );
        assert_eq!(b.take(101), Some(0));
    }
}
