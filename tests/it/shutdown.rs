//! Shutdown: stop accepting, let what is in flight finish, then stop.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::support::client::RawClient;
use crate::support::fake_broker::Cluster;
use crate::support::gateway;

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_connections() {
    let (_cluster, brokers) = Cluster::start(1).await;
    let gw = gateway(brokers[0].addr, "drain_timeout_secs: 5\n").await;
    let bootstrap = gw.bootstrap;
    let mut c = RawClient::connect(bootstrap).await;
    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(StrBytes::from_static_str("delay-400"));
    c.send(77, 4, &hb).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    let stopping = tokio::spawn(gw.shutdown());
    let (corr, resp) = c.recv::<HeartbeatRequest>(4).await;
    assert_eq!(
        (corr, resp.error_code),
        (77, 0),
        "the in-flight request is answered"
    );
    assert!(c.is_closed_by_peer().await, "then the connection is closed");
    assert!(stopping.await.unwrap(), "drained within the timeout");
    assert!(tokio::net::TcpStream::connect(bootstrap).await.is_err());
}
