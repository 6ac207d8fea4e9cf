//! The integration-test binary. `support` holds the harness (an in-process fake broker, a raw
//! Kafka client, gateway start-up); each other module proves one capability.
//!
//! The fake broker exists for what a real single broker cannot show: several brokers, brokers that
//! join later, and responses delivered out of step. The end-to-end suite against a real broker
//! (tansu) with real clients lives in tests/e2e.

mod support;

mod addressing;
mod enforcement;
mod evolution;
mod judging;
mod malformed;
mod odcs;
mod ordering;
mod pipeline;
mod registry;
mod sasl;
mod shutdown;
