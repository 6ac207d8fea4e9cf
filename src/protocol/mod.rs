//! The Kafka wire layer: length-prefixed frames, request/response header peeks, and the few
//! message bodies meshgate must look inside.
//!
//! This layer owns bytes only. It never decides policy and never performs I/O beyond reading and
//! writing frames on the stream it is handed.

pub mod client;
pub mod frame;
pub mod header;
pub mod records;
pub mod versions;

pub use frame::{FrameError, FrameReader, Incoming};
pub use header::{HeaderError, RequestHeaderView};
