//! A client for an external Confluent-compatible schema registry (`--schema-registry URL`).
//!
//! It fetches writer schemas by id (`GET {url}/schemas/ids/{id}`), with a timeout, into a bounded
//! cache (first in, first out): found schemas and ids the registry says do not exist (404) are
//! cached; failures are not, so the next batch tries again. A registry that does not answer makes
//! the batch fail with a *retriable* error (REQUEST_TIMED_OUT), never an acceptance.
//!
//! Plain `http://` only in this build (TLS to a registry comes with transport security).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
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
    Unavailable(String),
}

pub struct RegistryClient {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    cache: Mutex<Cache>,
}

struct Cache {
    entries: HashMap<u32, Option<Arc<AvroSchema>>>,
    order: VecDeque<u32>,
    capacity: usize,
}

impl RegistryClient {
    pub fn new(url: &str, timeout: Duration, capacity: usize) -> Result<Self, String> {
        if !url.starts_with("http://") {
            return Err(format!(
                "schema registry `{url}`: only http:// is supported in this build"
            ));
        }
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                order: VecDeque::new(),
                capacity: capacity.max(1),
            }),
        })
    }

    /// The cached answer for `id`, if any: `Some(None)` is a cached "unknown".
    pub fn cached(&self, id: u32) -> Option<Option<Arc<AvroSchema>>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .get(&id)
            .cloned()
    }

    /// Fetches `id` (from the cache when possible).
    pub async fn fetch(&self, id: u32) -> Fetched {
        if let Some(hit) = self.cached(id) {
            return hit.map_or(Fetched::Unknown, Fetched::Found);
        }
        let answer = match tokio::time::timeout(self.timeout, self.get(id)).await {
            Ok(a) => a,
            Err(_) => Fetched::Unavailable(format!("no answer within {:?}", self.timeout)),
        };
        let entry = match &answer {
            Fetched::Found(s) => Some(Some(s.clone())),
            Fetched::Unknown => Some(None),
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
        let uri = match format!("{}/schemas/ids/{id}", self.base).parse() {
            Ok(u) => u,
            Err(e) => return Fetched::Unavailable(format!("bad URL: {e}")),
        };
        let response = match self.http.get(uri).await {
            Ok(r) => r,
            Err(e) => return Fetched::Unavailable(e.to_string()),
        };
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Fetched::Unavailable(e.to_string()),
        };
        if status.as_u16() == 404 {
            return Fetched::Unknown;
        }
        if !status.is_success() {
            return Fetched::Unavailable(format!("HTTP {status}"));
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
            Err(e) => Fetched::Unavailable(format!("unreadable registry answer: {e}")),
        }
    }
}
