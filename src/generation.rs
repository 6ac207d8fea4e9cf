//! The policy generation in force, and hot reload.
//!
//! A `Generation` is an immutable `PolicySet` with the metric handles of its contracts beside it
//! (by contract index; the handles themselves live in `metrics` and outlive reloads). Requests
//! read the current generation with one lock-free `ArcSwap` load and are judged under that one
//! generation from start to end. A reload builds a complete new set off the data path and swaps
//! it in atomically; a set that fails to load is logged with every error and the last good set
//! stays in force.
//!
//! Reload triggers, any of which is enough:
//! - filesystem events under the directory (debounced), which covers editors that write in place
//!   or through a rename;
//! - a poll of the directory's content fingerprint every `POLL`, which also covers Kubernetes
//!   ConfigMap volumes (an atomic symlink swap some watchers miss) and directories that appear
//!   after start;
//! - SIGHUP, which forces a reload.
//!
//! A trigger reloads only when the fingerprint (every non-hidden file's path and content) changed,
//! except SIGHUP.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use crate::metrics::{ContractFacts, ContractMetrics, Metrics};
use crate::policy::load::load_dir;
use crate::policy::{Contract, PolicyError, PolicySet};
use crate::schema::avro_data::Decoders;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(2);
const DEBOUNCE: Duration = Duration::from_millis(250);

/// One loaded policy set and its contracts' metric handles.
#[derive(Debug, Default)]
pub struct Generation {
    pub set: PolicySet,
    /// `stats[i]` belongs to `set.contracts[i]`.
    stats: Vec<Arc<ContractMetrics>>,
    /// The set's Avro decoders: compiled here, at load, for every schema id the set knows.
    pub decoders: Decoders,
    /// Its number (`meshgate_policy_generation`), 0 until the store numbers it.
    pub number: u64,
    /// The content hash of its files, shared by the audit events judged under it.
    pub hash: Arc<str>,
    /// `dead_letter[i]`: the dead-letter bound of `set.contracts[i]`, when it has `on_reject`.
    /// Generation state, not policy: a reload starts the buckets full.
    dead_letter: Vec<Option<DeadLetterBudget>>,
}

impl std::ops::Deref for Generation {
    type Target = PolicySet;

    fn deref(&self) -> &PolicySet {
        &self.set
    }
}

impl Generation {
    /// Gives each contract its metric handles (the same ones across reloads, keyed by name).
    pub fn new(set: PolicySet, metrics: &Metrics) -> Self {
        let stats = set
            .contracts
            .iter()
            .map(|c| metrics.contract(&c.name, &c.topic))
            .collect();
        let decoders = set.compile_decoders();
        let hash = Arc::from(set.content_hash.as_str());
        let dead_letter = set
            .contracts
            .iter()
            .map(|c| c.on_reject.as_ref().map(DeadLetterBudget::new))
            .collect();
        Generation {
            dead_letter,
            set,
            stats,
            decoders,
            number: 0,
            hash,
        }
    }

    /// The generation as the store numbers it.
    fn numbered(mut self, number: u64) -> Self {
        self.number = number;
        self
    }

    /// A contract's metric handles. `None` only for a contract of another generation.
    pub fn stats(&self, c: &Contract) -> Option<&Arc<ContractMetrics>> {
        self.stats.get(c.index).filter(|_| {
            self.set
                .contracts
                .get(c.index)
                .is_some_and(|x| std::ptr::eq(&**x, c))
        })
    }

    /// A contract's dead-letter bound, when it has `on_reject`.
    pub fn dead_letter_budget(&self, c: &Contract) -> Option<&DeadLetterBudget> {
        self.stats(c)?;
        self.dead_letter.get(c.index)?.as_ref()
    }

    /// The scrape-time facts of every contract in force.
    pub fn contract_facts(&self) -> impl Iterator<Item = ContractFacts<'_>> {
        self.set.contracts.iter().map(|c| ContractFacts {
            name: &c.name,
            owner: &c.owner,
            topic: &c.topic,
            version: c
                .schema
                .as_ref()
                .and_then(|s| s.version.as_deref())
                .unwrap_or(""),
            sla_availability: c.sla.availability,
            sla_latency_p99: c.sla.latency_p99,
            sla_freshness: c.sla.freshness,
            completeness_target: c.completeness_target,
            slis: c
                .slis
                .iter()
                .map(|s| crate::metrics::SliFacts {
                    instance: std::ptr::from_ref(s) as usize,
                    id: &s.id,
                    metric: s.metric(),
                    records: s.records.load(std::sync::atomic::Ordering::Relaxed),
                    bad: s.bad.load(std::sync::atomic::Ordering::Relaxed),
                    bounds: s.target.iter().map(|(op, v)| (op.as_str(), *v)).collect(),
                    unit: match s.unit {
                        crate::policy::sli::Unit::Rows => "rows",
                        crate::policy::sli::Unit::Percent => "percent",
                    },
                    measured: s.measured(),
                })
                .collect(),
        })
    }
}

pub struct PolicyStore {
    dir: PathBuf,
    current: ArcSwap<Generation>,
    generation: AtomicU64,
    fingerprint: Mutex<Option<u64>>,
    metrics: Arc<Metrics>,
}

impl PolicyStore {
    /// Loads the directory. A directory that does not exist yet gives an empty set (and is picked
    /// up when it appears); one that exists but does not load is an error.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Self, Vec<PolicyError>> {
        let (set, fingerprint) = if dir.exists() {
            let fp = fingerprint(dir);
            (load_dir(dir)?, fp)
        } else {
            tracing::warn!(dir = %dir.display(), "policy directory does not exist: no policies in force until it appears");
            (PolicySet::default(), None)
        };
        log_loaded(&set, 1);
        metrics.policy_reloads.with_label_values(&["ok"]).inc();
        metrics.policy_generation.set(1);
        set_info(&metrics, &set);
        Ok(Self {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(Generation::new(set, &metrics).numbered(1)),
            generation: AtomicU64::new(1),
            fingerprint: Mutex::new(fingerprint),
            metrics,
        })
    }

    /// The generation in force. Hold the guard for the whole request.
    pub fn current(&self) -> Guard<Arc<Generation>> {
        self.current.load()
    }

    /// The generation in force, as an owned pointer (for holding across an await).
    pub fn current_arc(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Reloads now. On success the new set is in force and its generation is returned.
    pub fn reload(&self) -> Result<u64, Vec<PolicyError>> {
        let fp = fingerprint(&self.dir);
        *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fp;
        let loaded = if self.dir.exists() {
            load_dir(&self.dir)
        } else {
            Ok(PolicySet::default())
        };
        match loaded {
            Ok(set) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                log_loaded(&set, generation);
                for change in zone_changes(&self.current.load().set, &set) {
                    tracing::warn!(generation, "{change}");
                }
                set_info(&self.metrics, &set);
                self.current.store(Arc::new(
                    Generation::new(set, &self.metrics).numbered(generation),
                ));
                self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
                self.metrics.policy_generation.set(generation as i64);
                Ok(generation)
            }
            Err(errors) => {
                self.metrics
                    .policy_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(
                    dir = %self.dir.display(),
                    errors = errors.len(),
                    generation = self.generation(),
                    "policy reload failed; the last good policy set stays in force"
                );
                for e in &errors {
                    tracing::error!("{e}");
                }
                Err(errors)
            }
        }
    }

    /// Reloads when the directory's content changed since the last load or attempt.
    pub fn reload_if_changed(&self) {
        let fp = fingerprint(&self.dir);
        let changed = *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) != fp;
        if changed {
            let _ = self.reload();
        }
    }

    /// Watches for changes until shutdown.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = {
            let tx = tx.clone();
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                let _ = tx.try_send(());
            })
            .and_then(|mut w| {
                use notify::Watcher;
                w.watch(&self.dir, notify::RecursiveMode::Recursive)
                    .map(|_| w)
            })
        };
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::info!(dir = %self.dir.display(), error = %e, "no filesystem watch; polling for policy changes");
                None
            }
        };
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = rx.recv() => {
                    // Let a burst of events (an editor's write + rename) settle.
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    self.reload_off_thread(false).await;
                }
                _ = poll.tick() => self.reload_off_thread(false).await,
                _ = sighup => {
                    tracing::info!("SIGHUP: reloading policies");
                    self.reload_off_thread(true).await;
                }
            }
        }
    }

    async fn reload_off_thread(self: &Arc<Self>, force: bool) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if force {
                let _ = me.reload();
            } else {
                me.reload_if_changed();
            }
        })
        .await;
    }
}

/// What a reload changes in the partner zones that it cannot apply by itself: a zone's listener is
/// bound at start, so a new zone, or a changed `listen`, `broker_port_base`, `advertised_host` or
/// `tls`, waits for a restart; a removed zone's listener refuses every later request.
fn zone_changes(old: &PolicySet, new: &PolicySet) -> Vec<String> {
    let mut out = Vec::new();
    for z in &new.zones {
        match old.zones.iter().find(|o| o.name == z.name) {
            None => out.push(format!(
                "zone `{}` is new ({}): its listener on {} is bound at the next restart",
                z.name, z.origin, z.listen
            )),
            Some(o)
                if o.listen != z.listen
                    || o.broker_port_base != z.broker_port_base
                    || o.advertised_host != z.advertised_host
                    || o.tls != z.tls =>
            {
                out.push(format!(
                    "zone `{}` ({}): a new listen, broker_port_base, advertised_host or tls takes effect at the next restart; its shares, principals and group prefix apply now",
                    z.name, z.origin
                ))
            }
            Some(_) => {}
        }
    }
    for o in &old.zones {
        if !new.zones.iter().any(|z| z.name == o.name) {
            out.push(format!(
                "zone `{}` was removed: its listener on {} refuses every request until the next restart",
                o.name, o.listen
            ));
        }
    }
    out
}

fn log_loaded(set: &PolicySet, generation: u64) {
    tracing::info!(
        generation,
        files = set.files.len(),
        contracts = set.contracts.len(),
        produce_rules = set.produce.len(),
        naming = set.naming.is_some(),
        topic_rules = set.topics.is_some(),
        "policies loaded"
    );
}

/// A hash of every non-hidden file's path and content under `dir`; `None` when it is unreadable.
/// One series only: the set in force.
fn set_info(metrics: &Metrics, set: &PolicySet) {
    metrics.policy_info.reset();
    metrics
        .policy_info
        .with_label_values(&[&set.content_hash])
        .set(1);
}

fn fingerprint(dir: &Path) -> Option<u64> {
    let mut files = Vec::new();
    collect(dir, 0, &mut files);
    if files.is_empty() && !dir.exists() {
        return None;
    }
    files.sort();
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(&f).ok().hash(&mut h);
    }
    Some(h.finish())
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // `meshgate test` fixtures are not policies: editing one reloads nothing.
        if depth == 0 && e.file_name() == crate::policy::load::CASES_DIR {
            continue;
        }
        let path = e.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => collect(&path, depth + 1, out),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

/// A contract's dead-letter bound: a token bucket of records and one of bytes, refilled per
/// second, one second of burst. Lives in the policy generation (a reload starts it full).
#[derive(Debug)]
pub struct DeadLetterBudget {
    records_per_sec: f64,
    bytes_per_sec: f64,
    state: std::sync::Mutex<(f64, f64, std::time::Instant)>,
}

impl DeadLetterBudget {
    pub fn new(on_reject: &crate::policy::OnReject) -> Self {
        let (r, b) = (
            on_reject.max_records_per_second as f64,
            on_reject.max_bytes_per_second as f64,
        );
        DeadLetterBudget {
            records_per_sec: r,
            bytes_per_sec: b,
            state: std::sync::Mutex::new((r, b, std::time::Instant::now())),
        }
    }

    /// Takes `records` and `bytes` if both buckets hold them; else takes nothing.
    pub fn take(&self, records: usize, bytes: usize, now: std::time::Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.2).as_secs_f64();
        s.0 = (s.0 + elapsed * self.records_per_sec).min(self.records_per_sec);
        s.1 = (s.1 + elapsed * self.bytes_per_sec).min(self.bytes_per_sec);
        s.2 = now;
        if s.0 >= records as f64 && s.1 >= bytes as f64 {
            s.0 -= records as f64;
            s.1 -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_reload_names_the_zone_changes_that_wait_for_a_restart() {
        let zone = |name: &str, port: u16, alias: &str| {
            format!("zone:\n  name: {name}\n  listen: 127.0.0.1:{port}\n  principals: [User:a]\n  shares: [{{topic: t.v1, as: {alias}}}]\n")
        };
        let set =
            |docs: &[String]| crate::policy::load::compile_text("z.yaml", &docs.join("---\n"));
        let old = set(&[zone("acme", 9400, "a.v1"), zone("gone", 9500, "g.v1")]);
        // A new alias applies at once: nothing to say.
        assert!(zone_changes(
            &old,
            &set(&[zone("acme", 9400, "b.v1"), zone("gone", 9500, "g.v1")])
        )
        .is_empty());
        let changes = zone_changes(
            &old,
            &set(&[zone("acme", 9401, "a.v1"), zone("new", 9600, "n.v1")]),
        );
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(
            changes[0].starts_with("zone `acme` (z.yaml:") && changes[0].contains("a new listen"),
            "{changes:?}"
        );
        assert!(changes[1].starts_with("zone `new` is new"));
        assert!(changes[2].starts_with("zone `gone` was removed"));
    }

    fn contract(min: u32) -> String {
        format!("contract:\n  name: c\n  owner: o\n  topic: shop.c.v1\n  quality:\n    validity_rules: [total > {min}]\n")
    }

    fn rule_text(store: &PolicyStore) -> String {
        store.current().contracts[0].rules[0].rule.text.clone()
    }

    fn write_set(dir: &Path, schema: &str) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("schemas")).unwrap();
        std::fs::write(dir.join("schemas/c.json"), schema).unwrap();
        std::fs::write(
            dir.join("c.yaml"),
            "contract:\n  name: c\n  owner: o\n  topic: shop.c.v1\n  schema: { format: json, file: schemas/c.json }\n",
        )
        .unwrap();
    }

    #[test]
    fn the_content_hash_is_the_same_for_the_same_files_anywhere_and_follows_the_schema() {
        let base = std::env::temp_dir().join(format!("meshgate-hash-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("elsewhere/b"));
        write_set(&a, r#"{"type": "object"}"#);
        write_set(&b, r#"{"type": "object"}"#);
        let metrics = Arc::new(Metrics::new());
        let sa = PolicyStore::open(&a, metrics.clone()).unwrap();
        let sb = PolicyStore::open(&b, Arc::new(Metrics::new())).unwrap();
        let hash = sa.current().content_hash.clone();
        assert_eq!(hash.len(), 64, "{hash}");
        assert_eq!(
            hash,
            sb.current().content_hash,
            "same files, another directory"
        );
        assert!(metrics
            .render()
            .contains(&format!("meshgate_policy_info{{hash=\"{hash}\"}} 1")));

        // A schema file is part of the content, though it is not a policy file.
        std::fs::write(
            a.join("schemas/c.json"),
            r#"{"type": "object", "required": ["x"]}"#,
        )
        .unwrap();
        sa.reload().unwrap();
        let changed = sa.current().content_hash.clone();
        assert_ne!(changed, hash);
        let text = metrics.render();
        assert!(
            text.contains(&changed) && !text.contains(&hash),
            "one series: the set in force"
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    /// Kubernetes mounts a ConfigMap as `file -> ..data/file` and `..data -> ..<timestamp>/`, and
    /// updates it by writing a new timestamped directory and swapping the `..data` symlink.
    #[test]
    fn editing_a_test_fixture_is_not_a_policy_change() {
        let dir = std::env::temp_dir().join(format!("meshgate-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        std::fs::write(dir.join("n.yaml"), "naming:\n  topics: { pattern: '^a' }\n").unwrap();
        std::fs::write(dir.join("tests/c.yaml"), "cases: []\n").unwrap();
        let before = fingerprint(&dir);
        std::fs::write(dir.join("tests/c.yaml"), "cases: [] # edited\n").unwrap();
        assert_eq!(fingerprint(&dir), before);
        std::fs::write(dir.join("n.yaml"), "naming:\n  topics: { pattern: '^b' }\n").unwrap();
        assert_ne!(fingerprint(&dir), before);
    }

    #[test]
    fn a_configmap_symlink_swap_is_picked_up_and_hidden_copies_are_not_loaded_twice() {
        let dir = std::env::temp_dir().join(format!("meshgate-cm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..2026_01_01_a")).unwrap();
        std::fs::write(dir.join("..2026_01_01_a/c.yaml"), contract(1)).unwrap();
        symlink("..2026_01_01_a", dir.join("..data")).unwrap();
        symlink("..data/c.yaml", dir.join("c.yaml")).unwrap();

        let store = PolicyStore::open(&dir, Arc::new(Metrics::new())).unwrap();
        assert_eq!(
            store.current().contracts.len(),
            1,
            "loaded once, not once per hidden copy"
        );
        assert_eq!(rule_text(&store), "total > 1");

        std::fs::create_dir_all(dir.join("..2026_01_02_b")).unwrap();
        std::fs::write(dir.join("..2026_01_02_b/c.yaml"), contract(2)).unwrap();
        symlink("..2026_01_02_b", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(dir.join("..2026_01_01_a")).unwrap();

        store.reload_if_changed();
        assert_eq!(rule_text(&store), "total > 2");
        assert_eq!(store.generation(), 2);
        store.reload_if_changed();
        assert_eq!(store.generation(), 2, "no change, no reload");
    }

    #[test]
    fn an_editor_rename_is_picked_up_and_a_broken_save_keeps_the_last_good_set() {
        let dir = std::env::temp_dir().join(format!("meshgate-ed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.yaml"), contract(1)).unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = PolicyStore::open(&dir, metrics.clone()).unwrap();

        // Write a temporary file, then rename it over the original.
        std::fs::write(dir.join(".c.yaml.swp"), contract(5)).unwrap();
        std::fs::rename(dir.join(".c.yaml.swp"), dir.join("c.yaml")).unwrap();
        store.reload_if_changed();
        assert_eq!(rule_text(&store), "total > 5");

        std::fs::write(dir.join("c.yaml"), "contract: [\n").unwrap();
        store.reload_if_changed();
        assert_eq!(
            rule_text(&store),
            "total > 5",
            "the last good set stays in force"
        );
        assert_eq!(
            metrics.policy_reloads.with_label_values(&["error"]).get(),
            1
        );
        assert_eq!(store.generation(), 2);
    }
}
