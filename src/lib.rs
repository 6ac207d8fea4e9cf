//! meshgate: a Kafka governance gateway.
//!
//! The data path, module by module:
//!
//! ```text
//! client socket → protocol::frame → protocol::header (peek) → proxy::connection
//!     → forward original bytes upstream → proxy::rewrite (addresses, ApiVersions) → client, in order
//! ```
//!
//! Side paths: [`app`] wires listeners and shutdown; [`admin`] serves HTTP; [`metrics`] defines
//! every metric once. See ARCHITECTURE.md for the invariants.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod chargeback;
pub mod config;
pub mod fields;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod generation;
pub mod log_budget;
pub mod markup;
pub mod metrics;
pub mod own_client;
pub mod policy;
pub mod protect;
pub mod protocol;
pub mod proxy;
pub mod replay;
pub mod rules;
pub mod schema;
pub mod tls;
pub mod usage;
pub mod zone_stats;
