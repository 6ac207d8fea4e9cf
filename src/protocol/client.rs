//! A minimal request/response client, for the gateway's own calls to the upstream (metadata
//! refresh, readiness). Not used on the proxied data path.

use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::{write_frame, FrameReader};
use super::header::{join_request, split_response};

/// Sends one request and reads its response on a dedicated connection.
pub async fn call<S, Req>(
    stream: &mut S,
    correlation_id: i32,
    version: i16,
    request: &Req,
) -> Result<Req::Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Req: Request,
{
    let api = ApiKey::try_from(Req::KEY).map_err(|_| "unknown api key".to_string())?;
    let mut header = RequestHeader::default();
    header.request_api_key = Req::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("meshgate"));
    let buf = join_request(&header, api, version, request)?;
    write_frame(stream, &buf).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(&mut *stream, 64 * 1024 * 1024);
    let frame = reader
        .read_frame()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("connection closed before the response")?;
    let (h, mut body) = split_response(&frame, api, version).map_err(|e| e.to_string())?;
    if h.correlation_id != correlation_id {
        return Err(format!(
            "correlation id {} does not match {correlation_id}",
            h.correlation_id
        ));
    }
    Req::Response::decode(&mut body, version).map_err(|e| e.to_string())
}
