pub mod client;
pub mod fake_broker;
pub mod fake_registry;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};

use meshgate::app::{start, Running};
use meshgate::config::{ConfigFile, Overrides};

/// Hands out blocks of free local ports: each gateway needs a listen port and the ports after it
/// for brokers. Blocks start at a per-process offset so parallel test binaries rarely collide, and
/// stay below Linux's ephemeral range.
pub fn port_block(size: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = 20_000 + (std::process::id() % 200) as u16 * 50;
    loop {
        let offset = NEXT.fetch_add(size, Ordering::Relaxed);
        let base = 20_000 + (seed - 20_000 + offset) % 12_000;
        if (base..base + size).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

/// A fresh, empty policy directory.
pub fn policy_dir() -> std::path::PathBuf {
    static N: AtomicU16 = AtomicU16::new(0);
    let dir = std::env::temp_dir().join(format!(
        "meshgate-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts an in-process gateway in front of `upstream`, with extra config YAML and no policies.
pub async fn gateway(upstream: SocketAddr, extra_yaml: &str) -> Running {
    gateway_with_policies(upstream, extra_yaml, &policy_dir()).await
}

/// Starts an in-process gateway listening on `listen`, with no policies.
pub async fn gateway_listening(upstream: SocketAddr, listen: u16, extra_yaml: &str) -> Running {
    start_gateway(upstream, listen, extra_yaml, &policy_dir()).await
}

/// Starts an in-process gateway in front of `upstream` with the policies in `dir`.
pub async fn gateway_with_policies(
    upstream: SocketAddr,
    extra_yaml: &str,
    dir: &std::path::Path,
) -> Running {
    start_gateway(upstream, port_block(40), extra_yaml, dir).await
}

async fn start_gateway(
    upstream: SocketAddr,
    base: u16,
    extra_yaml: &str,
    dir: &std::path::Path,
) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("meshgate=debug")),
        )
        .try_init();
    let yaml = format!(
        "listen: 127.0.0.1:{base}\nadmin: 127.0.0.1:0\nupstream: ['{upstream}']\npolicies: '{}'\n{extra_yaml}",
        dir.display()
    );
    let config = ConfigFile::parse(&yaml, "test")
        .unwrap()
        .build(Overrides::default())
        .unwrap();
    start(config).await.expect("gateway starts")
}
