//! A client for an external Confluent-compatible schema registry (`--schema-registry URL`).
//!
//! It fetches writer schemas by id (`GET {url}/schemas/ids/{id}`), with a timeout, into a bounded
//! cache (first in, first out):
//! - found schemas are cached for good (an id names one schema forever);
//! - ids the registry says do not exist (404) are cached for [`NEGATIVE_TTL`] only, so one
//!   replica that answered 404 before it caught up does not poison the id until restart;
//! - failures are not cached, so the next batch tries again. A registry that does not answer
//!   makes the batch fail with a *retriable* error (REQUEST_TIMED_OUT), never an acceptance.
//!
//! Concurrent fetches of one id are merged: one request goes to the registry, the others wait
//! for its answer. A response body over [`MAX_BODY_BYTES`] is refused unread.
//!
//! Plain `http://` only in this build (TLS to a registry comes with transport security).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::avro_data::AvroSchema;

/// What the registry said about an id.
#[derive(Debug, Clone)]
pub enum Fetched {
    Found(Arc<AvroSchema>),
    /// The registry answered that the id does not exist.
    Unknown,
    /// The registry did not answer usefully: retry later.
    Unavailable(RegistryError),
}

/// Why the external registry gave no usable answer about an id (the data path answers these
/// with a retriable error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("bad URL: {0}")]
    Url(String),
    #[error("{0}")]
    Transport(String),
    #[error("response body unreadable or over {MAX_BODY_BYTES} bytes: {0}")]
    Body(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("unreadable registry answer: {0}")]
    Answer(String),
    /// More new ids in one request than meshgate fetches for it.
    #[error("over {0} new schema ids in one request")]
    TooManyIds(usize),
    /// The configured registry URL is not one this build can call.
    #[error("schema registry `{0}`: only http:// is supported in this build")]
    UnsupportedUrl(String),
}

/// How long a 404 is believed.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Distinct unknown schema ids one request (a Produce, or a Fetch whose answer shows protected
/// Avro fields) may make meshgate fetch from an external registry. Records naming ids past the
/// cap fail their partition with a retriable error, so a request cannot turn the gateway into a
/// registry scanner; the client's retry finds them cached.
pub const MAX_FETCHES_PER_REQUEST: usize = 16;
/// The largest registry response body read.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub struct RegistryClient {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    negative_ttl: Duration,
    cache: Mutex<Cache>,
    /// One gate per id being fetched: the first caller fetches, the others wait on it.
    in_flight: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

struct Cache {
    entries: HashMap<u32, Entry>,
    order: VecDeque<u32>,
    capacity: usize,
}

#[derive(Clone)]
enum Entry {
    Found(Arc<AvroSchema>),
    Unknown { until: Instant },
}

impl RegistryClient {
    pub fn new(url: &str, timeout: Duration, capacity: usize) -> Result<Self, RegistryError> {
        if !url.starts_with("http://") {
            return Err(RegistryError::UnsupportedUrl(url.to_string()));
        }
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
            negative_ttl: NEGATIVE_TTL,
            in_flight: Mutex::new(HashMap::new()),
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                order: VecDeque::new(),
                capacity: capacity.max(1),
            }),
        })
    }

    /// How long a 404 is believed (tests shorten it).
    pub fn with_negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The cached answer for `id`, if any: `Some(None)` is a cached "unknown" still in force.
    pub fn cached(&self, id: u32) -> Option<Option<Arc<AvroSchema>>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.entries.get(&id)? {
            Entry::Found(s) => Some(Some(s.clone())),
            Entry::Unknown { until } if Instant::now() < *until => Some(None),
            Entry::Unknown { .. } => None,
        }
    }

    /// Fetches `id` (from the cache when possible; one registry request for concurrent callers).
    pub async fn fetch(&self, id: u32) -> Fetched {
        if let Some(hit) = self.cached(id) {
            return hit.map_or(Fetched::Unknown, Fetched::Found);
        }
        let gate = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        let answer = {
            let _turn = gate.lock().await;
            match self.cached(id) {
                // Another caller fetched it while this one waited.
                Some(hit) => hit.map_or(Fetched::Unknown, Fetched::Found),
                None => self.fetch_uncached(id).await,
            }
        };
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        // Clones are taken only under this lock: two strong counts are the map's and ours.
        if Arc::strong_count(&gate) == 2 {
            in_flight.remove(&id);
        }
        answer
    }

    /// Ids with a fetch under way (for tests of the merge).
    pub fn fetches_in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    async fn fetch_uncached(&self, id: u32) -> Fetched {
        let answer = match tokio::time::timeout(self.timeout, self.get(id)).await {
            Ok(a) => a,
            Err(_) => Fetched::Unavailable(RegistryError::Timeout(self.timeout)),
        };
        let entry = match &answer {
            Fetched::Found(s) => Some(Entry::Found(s.clone())),
            Fetched::Unknown => Some(Entry::Unknown {
                until: Instant::now() + self.negative_ttl,
            }),
            Fetched::Unavailable(_) => None,
        };
        if let Some(entry) = entry {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.entries.insert(id, entry).is_none() {
                c.order.push_back(id);
                while c.order.len() > c.capacity {
                    if let Some(old) = c.order.pop_front() {
                        c.entries.remove(&old);
                    }
                }
            }
        }
        answer
    }

    async fn get(&self, id: u32) -> Fetched {
        let uri: axum::http::Uri = match format!("{}/schemas/ids/{id}", self.base).parse() {
            Ok(u) => u,
            Err(e) => return Fetched::Unavailable(RegistryError::Url(e.to_string())),
        };
        let response = match self.http.get(uri).await {
            Ok(r) => r,
            Err(e) => return Fetched::Unavailable(RegistryError::Transport(e.to_string())),
        };
        let status = response.status();
        let body = match Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return Fetched::Unavailable(RegistryError::Body(e.to_string())),
        };
        if status.as_u16() == 404 {
            return Fetched::Unknown;
        }
        if !status.is_success() {
            return Fetched::Unavailable(RegistryError::Status(status.as_u16()));
        }
        #[derive(serde::Deserialize)]
        struct Body {
            schema: String,
            #[serde(rename = "schemaType")]
            schema_type: Option<String>,
        }
        match serde_json::from_slice::<Body>(&body) {
            Ok(b) if b.schema_type.as_deref().is_none_or(|t| t == "AVRO") => {
                match AvroSchema::parse(&b.schema) {
                    Ok(s) => Fetched::Found(Arc::new(s)),
                    // A schema we cannot parse cannot be read: as good as unknown for an Avro contract.
                    Err(_) => Fetched::Unknown,
                }
            }
            Ok(_) => Fetched::Unknown,
            Err(e) => Fetched::Unavailable(RegistryError::Answer(e.to_string())),
        }
    }
}
