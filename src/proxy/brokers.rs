//! The broker address map: which upstream broker each gateway port stands for.
//!
//! **Scheme.** Broker `node_id` is reachable at gateway port `broker_port_base + node_id`
//! (`broker_port_base` defaults to the listen port + 1). The port depends only on the node id and
//! the configuration, so it is the same across restarts and across gateway instances behind one
//! load balancer, and a client holding a cached broker address keeps working after a restart.
//!
//! A node id that maps outside 1..=65535, or onto a port meshgate already uses for something else
//! (the bootstrap listener, the admin endpoint), cannot be served. Neither can one whose port
//! fails to bind. meshgate never advertises such a port: the broker is left out of the responses
//! that list brokers (so clients see its partitions' leader as unavailable and retry), and a
//! coordinator on it is answered as not available. A later sighting tries the bind again.

use std::collections::HashMap;
use std::sync::RwLock;

/// One upstream broker as last seen in a Metadata, FindCoordinator or DescribeCluster response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEntry {
    /// `host:port` of the upstream broker.
    pub upstream: String,
    /// The gateway port that stands for it.
    pub port: u16,
    /// Whether a listener is bound for `port`.
    pub listening: bool,
}

/// What [`BrokerMap::observe`] learned.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed {
    /// Known broker; its gateway port.
    Known(u16),
    /// First sighting: the caller must bind `port`.
    New(u16),
    /// The node id has no port in the scheme.
    Unmappable,
}

#[derive(Debug)]
pub struct BrokerMap {
    advertised_host: String,
    port_base: u16,
    /// Ports meshgate serves something else on: no broker maps onto them.
    reserved: Vec<u16>,
    nodes: RwLock<HashMap<i32, BrokerEntry>>,
}

impl BrokerMap {
    pub fn new(advertised_host: String, port_base: u16, reserved: Vec<u16>) -> Self {
        Self {
            advertised_host,
            port_base,
            reserved,
            nodes: RwLock::new(HashMap::new()),
        }
    }

    /// The node ids whose port by the scheme is one of the reserved ports (to warn at start).
    pub fn shadowed_node_ids(&self) -> Vec<(i32, u16)> {
        self.reserved
            .iter()
            .filter(|p| **p >= self.port_base)
            .map(|p| ((p - self.port_base) as i32, *p))
            .collect()
    }

    pub fn advertised_host(&self) -> &str {
        &self.advertised_host
    }

    /// The gateway port for `node_id`, by the scheme.
    pub fn port_for(&self, node_id: i32) -> Option<u16> {
        if node_id < 0 {
            return None;
        }
        let port = self.port_base as i64 + node_id as i64;
        (1..=65535)
            .contains(&port)
            .then_some(port as u16)
            .filter(|p| !self.reserved.contains(p))
    }

    /// Records that `node_id` is at `host:port` upstream.
    pub fn observe(&self, node_id: i32, host: &str, port: i32) -> Observed {
        let Some(gw_port) = self.port_for(node_id) else {
            return Observed::Unmappable;
        };
        let upstream = format_host_port(host, port);
        {
            let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = nodes.get(&node_id) {
                if e.upstream == upstream && e.listening {
                    return Observed::Known(gw_port);
                }
            }
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let entry = nodes.entry(node_id).or_insert_with(|| BrokerEntry {
            upstream: upstream.clone(),
            port: gw_port,
            listening: false,
        });
        if entry.upstream != upstream {
            tracing::info!(node_id, from = %entry.upstream, to = %upstream, "upstream broker moved");
            entry.upstream = upstream;
        }
        if entry.listening {
            Observed::Known(gw_port)
        } else {
            Observed::New(gw_port)
        }
    }

    /// Marks the listener for `node_id` as bound (or not, after a failed bind, so a later sighting
    /// retries).
    pub fn set_listening(&self, node_id: i32, listening: bool) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = nodes.get_mut(&node_id) {
            e.listening = listening;
        }
    }

    /// The upstream address for `node_id`, if it has been seen.
    pub fn upstream_of(&self, node_id: i32) -> Option<String> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.get(&node_id).map(|e| e.upstream.clone())
    }

    /// A snapshot of the map, ordered by node id.
    pub fn snapshot(&self) -> Vec<(i32, BrokerEntry)> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = nodes.iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

fn format_host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_node_ids_deterministically() {
        let m = BrokerMap::new("gw".into(), 9093, vec![9092, 9644]);
        assert_eq!(m.observe(0, "b0", 19092), Observed::New(9093));
        m.set_listening(0, true);
        assert_eq!(m.observe(0, "b0", 19092), Observed::Known(9093));
        assert_eq!(m.observe(7, "b7", 19092), Observed::New(9100));
        assert_eq!(m.upstream_of(7).as_deref(), Some("b7:19092"));
    }

    #[test]
    fn a_moved_broker_keeps_its_port_and_updates_its_address() {
        let m = BrokerMap::new("gw".into(), 9093, vec![9092, 9644]);
        m.observe(1, "old", 1);
        m.set_listening(1, true);
        assert_eq!(m.observe(1, "new", 2), Observed::Known(9094));
        assert_eq!(m.upstream_of(1).as_deref(), Some("new:2"));
    }

    #[test]
    fn out_of_range_node_ids_are_unmappable() {
        let m = BrokerMap::new("gw".into(), 65000, vec![]);
        assert_eq!(m.observe(-1, "x", 1), Observed::Unmappable);
        assert_eq!(m.observe(600, "x", 1), Observed::Unmappable);
        assert_eq!(m.port_for(535), Some(65535));
    }

    #[test]
    fn ipv6_upstreams_are_bracketed() {
        let m = BrokerMap::new("gw".into(), 9093, vec![9092, 9644]);
        m.observe(0, "::1", 19092);
        assert_eq!(m.upstream_of(0).as_deref(), Some("[::1]:19092"));
    }

    #[test]
    fn a_node_id_that_maps_onto_the_admin_or_listen_port_is_not_served() {
        let m = BrokerMap::new("gw".into(), 9093, vec![9092, 9644]);
        assert_eq!(m.port_for(551), None, "551 + 9093 is the admin port");
        assert_eq!(m.observe(551, "b", 9092), Observed::Unmappable);
        assert_eq!(m.port_for(550), Some(9643));
        assert_eq!(m.shadowed_node_ids(), vec![(551, 9644)]);
    }
}
