//! A raw Kafka client over one TCP connection, for tests that need exact control of frames.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use meshgate::protocol::frame::{write_frame, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub struct RawClient {
    reader: FrameReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl RawClient {
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (r, w) = s.into_split();
        Self {
            reader: FrameReader::new(r, 64 * 1024 * 1024),
            writer: w,
        }
    }

    pub fn encode<Req: Request>(correlation_id: i32, version: i16, req: &Req) -> Bytes {
        let api = ApiKey::try_from(Req::KEY).unwrap();
        let mut h = RequestHeader::default();
        h.request_api_key = Req::KEY;
        h.request_api_version = version;
        h.correlation_id = correlation_id;
        h.client_id = Some(StrBytes::from_static_str("it"));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, api.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    pub async fn send<Req: Request>(&mut self, correlation_id: i32, version: i16, req: &Req) {
        let frame = Self::encode(correlation_id, version, req);
        self.send_raw(&frame).await;
    }

    /// Sends bytes as one frame.
    pub async fn send_raw(&mut self, payload: &[u8]) {
        write_frame(&mut self.writer, payload).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// Writes bytes exactly as given, with no size prefix.
    pub async fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// The next response frame, or `None` when the connection was closed.
    pub async fn recv_frame(&mut self) -> Option<Bytes> {
        self.reader.read_frame().await.ok().flatten()
    }

    pub async fn recv<Req: Request>(&mut self, version: i16) -> (i32, Req::Response) {
        let api = ApiKey::try_from(Req::KEY).unwrap();
        let mut frame = self.recv_frame().await.expect("a response");
        let h = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        let body = Req::Response::decode(&mut frame, version).unwrap();
        (h.correlation_id, body)
    }

    pub async fn call<Req: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
        req: &Req,
    ) -> Req::Response {
        self.send(correlation_id, version, req).await;
        let (c, r) = self.recv::<Req>(version).await;
        assert_eq!(c, correlation_id);
        r
    }

    /// True when the peer closes the connection within two seconds.
    pub async fn is_closed_by_peer(&mut self) -> bool {
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), self.reader.read_frame()).await,
            Ok(Ok(None)) | Ok(Err(_))
        )
    }
}
