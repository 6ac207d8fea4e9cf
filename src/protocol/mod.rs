//! The Kafka wire layer: length-prefixed frames, request/response header peeks, and the few
//! message bodies meshgate must look inside.
//!
//! This layer owns bytes only. It never decides policy and never performs I/O beyond reading and
//! writing frames on the stream it is handed.

pub mod client;
pub mod fetch_stream;
pub mod fetch_walk;
pub mod frame;
pub mod header;
pub mod records;
pub mod stream;
pub mod versions;

pub use frame::{FrameError, FrameReader, Incoming};
pub use header::{HeaderError, RequestHeaderView};

/// Splits `host:port` (IPv6 hosts in brackets). Returns `None` when it is not of that form.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}
