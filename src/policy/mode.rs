//! How a rule's verdict takes effect: `enforce` (refuse), `shadow` (forward, and count what
//! would have been refused), `off` (not judged), or `canary` (enforce for some principals,
//! shadow for the rest).
//!
//! A mode is written on a rule or on a whole policy (a contract, `naming:`, `topics:`, a
//! `produce:` entry); a rule without its own takes its policy's. Modes are resolved only when a
//! rule fails: a passing rule costs nothing more than before, and a request's principal is
//! hashed only for a canary rule that failed.

use std::sync::Arc;

/// A rule's mode, compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
    Off,
    Canary(Arc<Canary>),
}

/// Who a canary rule is enforced for: the principals listed, and a share of the others chosen
/// by a stable hash of the principal (the same principal is always on the same side, on every
/// gateway and across restarts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Canary {
    pub principals: Vec<Box<str>>,
    /// 0 to 100.
    pub percent: f64,
}

/// What a failed rule does for one principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Refuse.
    Enforce,
    /// Forward, and count a would-reject under this `mode` label (`shadow` or `canary`).
    Shadow(&'static str),
}

impl Mode {
    /// Whether the rule is judged at all.
    pub fn is_off(&self) -> bool {
        matches!(self, Mode::Off)
    }

    /// The label of the mode, as written in a policy file.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Off => "off",
            Mode::Canary(_) => "canary",
        }
    }

    /// What a failure of the rule does when `principal` sent the request. `Off` rules are never
    /// judged, so they never fail; asked anyway, they enforce nothing: they shadow.
    pub fn effect(&self, principal: &str) -> Effect {
        match self {
            Mode::Enforce => Effect::Enforce,
            Mode::Shadow | Mode::Off => Effect::Shadow("shadow"),
            Mode::Canary(c) if c.enforces_for(principal) => Effect::Enforce,
            Mode::Canary(_) => Effect::Shadow("canary"),
        }
    }
}

impl Canary {
    pub fn enforces_for(&self, principal: &str) -> bool {
        self.principals.iter().any(|p| **p == *principal)
            || f64::from(bucket(principal)) < self.percent * 100.0
    }
}

/// The principal's bucket in 0..10000: FNV-1a (64-bit) of its bytes. Fixed, unlike the standard
/// library's hasher, so every gateway puts a principal in the same bucket.
pub fn bucket(principal: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in principal.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 10_000) as u32
}

/// A rule in shadow (or on the shadow side of a canary) that would have refused a partition or a
/// topic: counted in `meshgate_policy_would_reject_total` and logged, never answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WouldReject {
    pub policy: &'static str,
    pub rule: String,
    /// `shadow` or `canary`.
    pub mode: &'static str,
    /// What the refusal would have said (the first offending record's, for record rules).
    pub message: String,
}

/// The would-rejects of one partition: each (policy, rule) once, however many of its records
/// broke it, so a shadowed rule counts exactly the partitions it alone would refuse.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shadowed(Vec<WouldReject>);

impl Shadowed {
    /// Notes a failure of a shadowed rule; the message is built only for its first failure.
    pub fn note(
        &mut self,
        policy: &'static str,
        rule: &str,
        mode: &'static str,
        message: impl FnOnce() -> String,
    ) {
        if !self.0.iter().any(|w| w.policy == policy && w.rule == rule) {
            self.0.push(WouldReject {
                policy,
                rule: rule.to_string(),
                mode,
                message: message(),
            });
        }
    }

    pub fn extend(&mut self, other: &Shadowed) {
        for w in &other.0 {
            let w = w.clone();
            self.note(w.policy, &w.rule, w.mode, || w.message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &WouldReject> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforce_shadow_and_off_do_not_depend_on_the_principal() {
        assert_eq!(Mode::Enforce.effect("User:a"), Effect::Enforce);
        assert_eq!(Mode::Shadow.effect("User:a"), Effect::Shadow("shadow"));
        assert!(Mode::Off.is_off());
        assert!(!Mode::Shadow.is_off());
        assert_eq!(Mode::default(), Mode::Enforce);
    }

    #[test]
    fn a_canary_enforces_for_its_principals_and_shadows_for_the_others() {
        let c = Mode::Canary(Arc::new(Canary {
            principals: vec!["User:orders-svc".into()],
            percent: 0.0,
        }));
        assert_eq!(c.effect("User:orders-svc"), Effect::Enforce);
        assert_eq!(c.effect("User:billing"), Effect::Shadow("canary"));
        assert_eq!(c.name(), "canary");
    }

    #[test]
    fn a_canary_share_is_stable_and_close_to_its_percentage() {
        let c = Canary {
            principals: vec![],
            percent: 25.0,
        };
        let enforced = (0..10_000)
            .filter(|i| c.enforces_for(&format!("User:svc-{i}")))
            .count();
        assert!((2_200..2_800).contains(&enforced), "{enforced}");
        // Fixed values: a gateway built elsewhere puts these principals in the same buckets.
        assert_eq!(
            bucket(""),
            0xcbf2_9ce4_8422_2325_u64.rem_euclid(10_000) as u32
        );
        assert_eq!(bucket("User:a"), bucket("User:a"));
        let all = Canary {
            principals: vec![],
            percent: 100.0,
        };
        assert!(all.enforces_for("User:anyone"));
        let none = Canary::default();
        assert!(!none.enforces_for("User:anyone"));
    }

    #[test]
    fn each_rule_is_noted_once_per_partition_with_its_first_message() {
        let mut s = Shadowed::default();
        s.note("contract", "n > 0", "shadow", || "record 0".into());
        s.note("contract", "n > 0", "shadow", || unreachable!("built once"));
        s.note("produce", "key", "canary", || "record 1".into());
        let seen: Vec<_> = s
            .iter()
            .map(|w| (w.policy, w.rule.as_str(), w.mode))
            .collect();
        assert_eq!(
            seen,
            [
                ("contract", "n > 0", "shadow"),
                ("produce", "key", "canary")
            ]
        );
        assert_eq!(s.iter().next().unwrap().message, "record 0");
    }
}
