//! Data keys: one per protected topic per period (random mode) and one long-lived key per topic
//! (deterministic mode), each stored wrapped by the key-encryption key in `key_dir`:
//!
//! ```text
//! <key_dir>/<topic>/<kid>.key    {"version":1,"topic":..,"kid":..,"kms":..,"wrapped":<base64>,"created":<unix s>}
//! ```
//!
//! - **Key ids:** `<period>.<8 hex>` (`20261201.3fa9c2d1` by day, `2026120113.…` by hour) or
//!   `d.<8 hex>` (deterministic). The random part lets gateways sharing `key_dir` (and a restarted
//!   gateway) each make their own key for a period without a lock between them.
//! - **Rotation:** a new random-mode key at each period, and after 2^31 fields under one key.
//!   Random-mode nonces are a per-key random prefix and a count, so they never repeat under a
//!   key; the bound keeps each key's data volume modest all the same.
//! - **Crypto-shredding:** deleting a key file makes every field sealed under it unreadable, for
//!   every reader. A gateway notices within `key_cache_secs` (each cached key's file is checked
//!   again once that old); until then it may still open fields it has the key for.
//! - **Wrapping context** (local backend): `meshgate/dek/v1\n<topic>\n<kid>`.
//!
//! No map lock is held across a file read or a KMS call: lookups take a read lock on a map;
//! loading and creating are async, outside it. Making a key is serialised by an async mutex
//! (`creating`), which a request meets only when its topic's key must be made or checked again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::envelope::{self, Cipher, NonceFrom};
use super::kms::{Kms, KmsError};

/// How often the random-mode key changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    Hour,
    Day,
}

impl Rotate {
    fn seconds(self) -> u64 {
        match self {
            Rotate::Hour => 3600,
            Rotate::Day => 86_400,
        }
    }

    /// The period's number and its name in key ids.
    fn period(self, unix: u64) -> (u64, String) {
        let n = unix / self.seconds();
        let (y, m, d) = civil(unix / 86_400);
        let name = match self {
            Rotate::Day => format!("{y:04}{m:02}{d:02}"),
            Rotate::Hour => format!("{y:04}{m:02}{d:02}{:02}", (unix % 86_400) / 3600),
        };
        (n, name)
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Fields sealed under one random-mode key before a new one is made.
pub const MAX_USES: u64 = 1 << 31;
/// Keys held in memory at most; past it the cache starts again (keys reload from their files).
const MAX_CACHED: usize = 10_000;

/// A data key in memory.
#[derive(Debug)]
pub struct DataKey {
    pub kid: Box<str>,
    pub cipher: Cipher,
    period: u64,
    /// Fields sealed in random mode: the low 8 bytes of the next nonce.
    uses: AtomicU64,
    /// The high 4 bytes of every random-mode nonce, chosen when the key was made.
    nonce_prefix: [u8; 4],
}

impl DataKey {
    /// Appends the envelope of `plaintext` at `at` to `out`. Random mode takes the next nonce
    /// of this key (never repeated: only the process that made a key seals with it);
    /// deterministic mode derives it from the value.
    pub fn seal_into(
        &self,
        at: super::envelope::FieldAt<'_>,
        plaintext: &[u8],
        deterministic: bool,
        out: &mut Vec<u8>,
    ) {
        let nonce = if deterministic {
            NonceFrom::Value
        } else {
            let n = self.uses.fetch_add(1, Ordering::Relaxed);
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&self.nonce_prefix);
            nonce[4..].copy_from_slice(&n.to_be_bytes());
            NonceFrom::Given(nonce)
        };
        self.cipher.seal_into(&self.kid, at, plaintext, nonce, out);
    }

    fn made(kid: &str, key: &[u8; 32], period: u64) -> Self {
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&envelope::random_key()[..4]);
        Self {
            kid: kid.into(),
            cipher: Cipher::new(key),
            period,
            uses: AtomicU64::new(0),
            nonce_prefix: prefix,
        }
    }
}

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key's file is gone: its fields are shredded.
    #[error("data key {0} is gone (shredded)")]
    Shredded(String),
    #[error("key store: {0}")]
    Store(String),
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The gateway has no `protect:` configuration.
    #[error("no key store is configured (`protect:` of the gateway configuration)")]
    NoStore,
}

enum Cached {
    Key(Arc<DataKey>, Instant),
    Gone(Instant),
}

/// topic → kid → the key, or that its file is gone; each with when it was last checked (looked
/// up by `&str`, with no allocation).
type Loaded = HashMap<Box<str>, HashMap<Box<str>, Cached>>;
/// topic → the keys new fields are sealed with: [random mode, deterministic mode].
type Current = HashMap<Box<str>, [Option<Arc<DataKey>>; 2]>;

/// The data keys of every protected topic.
pub struct KeyRing {
    dir: PathBuf,
    kms: Kms,
    rotate: Rotate,
    recheck: Duration,
    loaded: RwLock<Loaded>,
    /// (topic, deterministic) → the key new fields are sealed with.
    current: RwLock<Current>,
    /// One creation at a time (so one gateway makes one key per period).
    creating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("kms", &self.kms)
            .finish()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn context(topic: &str, kid: &str) -> Vec<u8> {
    format!("meshgate/dek/v1\n{topic}\n{kid}").into_bytes()
}

fn random_suffix() -> String {
    let k = envelope::random_key();
    k[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    version: u32,
    topic: String,
    kid: String,
    kms: String,
    wrapped: String,
    created: u64,
}

impl KeyRing {
    pub fn new(dir: PathBuf, kms: Kms, rotate: Rotate, recheck: Duration) -> Self {
        Self {
            dir,
            kms,
            rotate,
            recheck,
            loaded: RwLock::new(HashMap::new()),
            current: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    fn file(&self, topic: &str, kid: &str) -> PathBuf {
        self.dir.join(topic).join(format!("{kid}.key"))
    }

    /// The key new fields of `topic` are sealed with, without waiting: `None` when it must be
    /// made or renewed first ([`KeyRing::prepare`]).
    pub fn current_now(&self, topic: &str, deterministic: bool) -> Option<Arc<DataKey>> {
        let key = self.current_of(topic, deterministic)?;
        // A key whose file was shredded is not used for new fields once noticed.
        let alive = matches!(self.cached(topic, &key.kid), Some(Ok(_)));
        (self.fresh(&key, deterministic) && alive).then_some(key)
    }

    fn current_of(&self, topic: &str, deterministic: bool) -> Option<Arc<DataKey>> {
        let map = self.current.read().unwrap_or_else(|p| p.into_inner());
        map.get(topic)?[usize::from(deterministic)].clone()
    }

    /// Whether a current key may still seal: a deterministic key always, a random-mode one
    /// within its period and its count.
    fn fresh(&self, key: &DataKey, deterministic: bool) -> bool {
        deterministic
            || (key.period == now_unix() / self.rotate.seconds()
                && key.uses.load(Ordering::Relaxed) < MAX_USES)
    }

    /// Makes sure [`KeyRing::current_now`] has a key for `topic`: loads the deterministic key
    /// from its file, or creates (and stores) a new one.
    pub async fn prepare(
        &self,
        topic: &str,
        deterministic: bool,
    ) -> Result<Arc<DataKey>, KeyError> {
        if let Some(k) = self.current_now(topic, deterministic) {
            return Ok(k);
        }
        let _one = self.creating.lock().await;
        if let Some(k) = self.current_now(topic, deterministic) {
            return Ok(k);
        }
        // The current key may only need its file checked again.
        if let Some(k) = self.current_of(topic, deterministic) {
            if self.fresh(&k, deterministic) {
                if let Ok(again) = self.load(topic, &k.kid).await {
                    self.set_current(topic, deterministic, again.clone());
                    return Ok(again);
                }
            }
        }
        let key = if deterministic {
            match self.existing_deterministic(topic).await? {
                Some(kid) => self.load(topic, &kid).await?,
                None => {
                    self.create(topic, format!("d.{}", random_suffix()), 0)
                        .await?
                }
            }
        } else {
            let (period, name) = self.rotate.period(now_unix());
            self.create(topic, format!("{name}.{}", random_suffix()), period)
                .await?
        };
        self.set_current(topic, deterministic, key.clone());
        Ok(key)
    }

    fn set_current(&self, topic: &str, deterministic: bool, key: Arc<DataKey>) {
        let mut map = self.current.write().unwrap_or_else(|p| p.into_inner());
        map.entry(topic.into()).or_default()[usize::from(deterministic)] = Some(key);
    }

    /// The oldest deterministic key's id of `topic`, if one is stored.
    async fn existing_deterministic(&self, topic: &str) -> Result<Option<String>, KeyError> {
        let dir = self.dir.join(topic);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(KeyError::Store(format!("{}: {e}", dir.display()))),
        };
        let mut kids = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| KeyError::Store(e.to_string()))?
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(kid) = name.strip_suffix(".key").filter(|k| k.starts_with("d.")) {
                let created = entry
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .unwrap_or(UNIX_EPOCH);
                kids.push((created, kid.to_string()));
            }
        }
        kids.sort();
        Ok(kids.into_iter().next().map(|(_, k)| k))
    }

    async fn create(
        &self,
        topic: &str,
        kid: String,
        period: u64,
    ) -> Result<Arc<DataKey>, KeyError> {
        let dek = envelope::random_key();
        let wrapped = self.kms.wrap(&dek, &context(topic, &kid)).await?;
        let file = KeyFile {
            version: 1,
            topic: topic.to_string(),
            kid: kid.clone(),
            kms: self.kms.label(),
            wrapped: STANDARD.encode(wrapped),
            created: now_unix(),
        };
        let path = self.file(topic, &kid);
        write_new(
            &path,
            &serde_json::to_vec_pretty(&file).expect("serializable"),
        )
        .await
        .map_err(|e| KeyError::Store(format!("{}: {e}", path.display())))?;
        tracing::info!(topic, kid = %kid, kms = %self.kms.label(), "new data key");
        let key = Arc::new(DataKey::made(&kid, &dek, period));
        self.remember(topic, &kid, Cached::Key(key.clone(), Instant::now()));
        Ok(key)
    }

    fn remember(&self, topic: &str, kid: &str, entry: Cached) {
        let mut map = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        if map.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED {
            map.clear();
        }
        map.entry(topic.into())
            .or_default()
            .insert(kid.into(), entry);
    }

    /// The key `kid` of `topic` if it is in memory and was checked recently: `Some(Ok)`, or
    /// `Some(Err)` when its file is known to be gone; `None` when [`KeyRing::load`] must run.
    pub fn cached(&self, topic: &str, kid: &str) -> Option<Result<Arc<DataKey>, ()>> {
        let map = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        match map.get(topic)?.get(kid)? {
            Cached::Key(k, at) if at.elapsed() < self.recheck => Some(Ok(k.clone())),
            Cached::Gone(at) if at.elapsed() < self.recheck => Some(Err(())),
            _ => None,
        }
    }

    /// Reads and unwraps the key `kid` of `topic` (or checks that its file is still there).
    pub async fn load(&self, topic: &str, kid: &str) -> Result<Arc<DataKey>, KeyError> {
        if !envelope::valid_kid(kid) {
            return Err(KeyError::Shredded(kid.to_string()));
        }
        let path = self.file(topic, kid);
        let text = match tokio::fs::read(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.remember(topic, kid, Cached::Gone(Instant::now()));
                return Err(KeyError::Shredded(kid.to_string()));
            }
            Err(e) => return Err(KeyError::Store(format!("{}: {e}", path.display()))),
        };
        // Still in memory: the file is there, so it stays good for another while.
        let known = match self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .and_then(|kids| kids.get(kid))
        {
            Some(Cached::Key(k, _)) => Some(k.clone()),
            _ => None,
        };
        let key = match known {
            Some(k) => k,
            None => {
                let file: KeyFile = serde_json::from_slice(&text)
                    .map_err(|e| KeyError::Store(format!("{}: {e}", path.display())))?;
                let wrapped = STANDARD.decode(&file.wrapped).map_err(|_| {
                    KeyError::Store(format!("{}: wrapped is not base64", path.display()))
                })?;
                let dek = self.kms.unwrap(&wrapped, &context(topic, kid)).await?;
                // A loaded key is never a current random-mode key: new fields get a key of this
                // gateway's own making (so its nonce count is this process's alone).
                Arc::new(DataKey::made(kid, &dek, u64::MAX))
            }
        };
        self.remember(topic, kid, Cached::Key(key.clone(), Instant::now()));
        Ok(key)
    }
}

impl DataKey {
    /// A key from its bytes, never current (for tests and the fuzz harnesses).
    pub fn fixed(kid: &str, key: [u8; 32]) -> Self {
        Self::made(kid, &key, u64::MAX)
    }
}

impl KeyRing {
    /// A ring holding these keys in memory, over a directory that does not exist (for tests and
    /// the fuzz harnesses).
    pub fn in_memory(keys: Vec<(&str, Arc<DataKey>)>) -> Self {
        let kms = Kms::Local {
            kek: [0; 32],
            path: PathBuf::from("/nonexistent/kek"),
        };
        let ring = Self::new(
            PathBuf::from("/nonexistent/keys"),
            kms,
            Rotate::Day,
            Duration::from_secs(3600),
        );
        for (topic, key) in keys {
            let kid = key.kid.clone();
            ring.remember(topic, &kid, Cached::Key(key, Instant::now()));
        }
        ring
    }
}

/// Writes a new file (never over an existing one), creating its directory.
async fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await?;
    f.write_all(bytes).await?;
    f.sync_all().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protect::envelope::{parse, FieldAt};

    fn ring(dir: &Path, recheck: Duration) -> KeyRing {
        std::fs::create_dir_all(dir).unwrap();
        let kek = dir.join("kek");
        if !kek.exists() {
            std::fs::write(&kek, STANDARD.encode([1u8; 32])).unwrap();
        }
        KeyRing::new(
            dir.join("keys"),
            Kms::local(&kek).unwrap(),
            Rotate::Day,
            recheck,
        )
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mg-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn periods_are_named_by_their_utc_date() {
        // 2026-12-01T05:27:03Z
        let t = 1_796_102_823;
        assert_eq!(Rotate::Day.period(t).1, "20261201");
        assert_eq!(Rotate::Hour.period(t).1, "2026120105");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[tokio::test]
    async fn a_key_is_made_once_stored_wrapped_and_opened_by_another_ring() {
        let dir = tmp("made");
        let a = ring(&dir, Duration::from_secs(60));
        assert!(a.current_now("t", false).is_none());
        let k = a.prepare("t", false).await.unwrap();
        assert!(a.current_now("t", false).is_some());
        assert_eq!(a.prepare("t", false).await.unwrap().kid, k.kid);
        let at = FieldAt {
            topic: "t",
            path: "email",
        };
        let env = k.cipher.seal(&k.kid, at, b"\"x\"", false);
        // The file holds no plaintext key, and another gateway (same dir and KEK) opens it.
        let text =
            std::fs::read_to_string(dir.join("keys/t").join(format!("{}.key", k.kid))).unwrap();
        assert!(text.contains("\"kms\": \"local:kek\""), "{text}");
        let b = ring(&dir, Duration::from_secs(60));
        assert!(b.cached("t", &k.kid).is_none());
        let loaded = b.load("t", &k.kid).await.unwrap();
        assert_eq!(
            loaded.cipher.open(parse(&env).unwrap(), at).unwrap(),
            b"\"x\""
        );
        assert!(b.cached("t", &k.kid).unwrap().is_ok());
        // Deterministic keys are long-lived: a second ring finds the first one's.
        let d = a.prepare("t", true).await.unwrap();
        assert!(d.kid.starts_with("d."));
        assert_eq!(b.prepare("t", true).await.unwrap().kid, d.kid);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_deleted_key_file_shreds_its_fields_once_rechecked() {
        let dir = tmp("shred");
        let a = ring(&dir, Duration::from_millis(50));
        let k = a.prepare("t", false).await.unwrap();
        std::fs::remove_file(dir.join("keys/t").join(format!("{}.key", k.kid))).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(a.cached("t", &k.kid).is_none(), "due for a check");
        assert_eq!(
            a.load("t", &k.kid).await.unwrap_err(),
            KeyError::Shredded(k.kid.to_string())
        );
        assert!(a.cached("t", &k.kid).unwrap().is_err());
        // New fields get a new key.
        assert!(a.current_now("t", false).is_none());
        let fresh = a.prepare("t", false).await.unwrap();
        assert_ne!(fresh.kid, k.kid);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_used_up_key_is_replaced_and_a_wrong_kek_is_an_error() {
        let dir = tmp("uses");
        let a = ring(&dir, Duration::from_secs(60));
        let k = a.prepare("t", false).await.unwrap();
        k.uses.store(MAX_USES, Ordering::Relaxed);
        assert!(a.current_now("t", false).is_none());
        assert_ne!(a.prepare("t", false).await.unwrap().kid, k.kid);
        std::fs::write(dir.join("kek2"), STANDARD.encode([2u8; 32])).unwrap();
        let wrong = KeyRing::new(
            dir.join("keys"),
            Kms::local(&dir.join("kek2")).unwrap(),
            Rotate::Day,
            Duration::from_secs(60),
        );
        assert_eq!(
            wrong.load("t", &k.kid).await.unwrap_err(),
            KeyError::Kms(KmsError::Unwrap)
        );
        assert!(matches!(
            wrong.load("t", "../x").await,
            Err(KeyError::Shredded(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
