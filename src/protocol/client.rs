//! A minimal request/response client, for the gateway's own calls to the upstream (metadata
//! refresh, readiness). Not used on the proxied data path.

use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::{write_frame, FrameError, FrameReader};
use super::header::{join_request, split_response, HeaderError};

/// Why a call to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("API key {0} is not one meshgate knows")]
    UnknownApi(i16),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection closed before the response")]
    Closed,
    #[error("correlation id {got} does not match {sent}")]
    Correlation { got: i32, sent: i32 },
    #[error("undecodable {api:?} v{version} response: {reason}")]
    Undecodable {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Sends one request and reads its response on a dedicated connection.
pub async fn call<S, Req>(
    stream: &mut S,
    correlation_id: i32,
    version: i16,
    request: &Req,
) -> Result<Req::Response, CallError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Req: Request,
{
    let api = ApiKey::try_from(Req::KEY).map_err(|_| CallError::UnknownApi(Req::KEY))?;
    let mut header = RequestHeader::default();
    header.request_api_key = Req::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("meshgate"));
    let buf = join_request(&header, api, version, request)?;
    write_frame(stream, &buf).await?;
    stream.flush().await?;
    let mut reader = FrameReader::new(&mut *stream, 64 * 1024 * 1024);
    let frame = reader.read_frame().await?.ok_or(CallError::Closed)?;
    let (h, mut body) = split_response(&frame, api, version)?;
    if h.correlation_id != correlation_id {
        return Err(CallError::Correlation {
            got: h.correlation_id,
            sent: correlation_id,
        });
    }
    Req::Response::decode(&mut body, version).map_err(|e| CallError::Undecodable {
        api,
        version,
        reason: e.to_string(),
    })
}
