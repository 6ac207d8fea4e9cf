//! A fake Confluent-compatible schema registry: `GET /schemas/ids/{id}` answers from a map,
//! after a configurable delay, and counts what it was asked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

#[derive(Default)]
pub struct Registry {
    pub schemas: Mutex<HashMap<u32, String>>,
    pub delay: Mutex<Duration>,
    /// Requests seen, by id.
    pub asked: Mutex<HashMap<u32, usize>>,
}

impl Registry {
    pub async fn start() -> (Arc<Registry>, SocketAddr) {
        let registry = Arc::new(Registry::default());
        let app = Router::new()
            .route("/schemas/ids/{id}", get(schema_by_id))
            .with_state(registry.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (registry, addr)
    }

    pub fn asked_total(&self) -> usize {
        self.asked.lock().unwrap().values().sum()
    }
}

async fn schema_by_id(
    State(r): State<Arc<Registry>>,
    Path(id): Path<u32>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    *r.asked.lock().unwrap().entry(id).or_default() += 1;
    let delay = *r.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let schema = r.schemas.lock().unwrap().get(&id).cloned();
    schema
        .map(|s| Json(serde_json::json!({ "schema": s })))
        .ok_or(StatusCode::NOT_FOUND)
}
