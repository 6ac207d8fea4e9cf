//! Request and response header peeks.
//!
//! Every request starts `api_key: i16, api_version: i16, correlation_id: i32`, whatever the API or
//! version, so routing needs only those eight bytes. The rest of the header (client id, tagged
//! fields) is parsed only for the APIs whose body meshgate reads.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("request of {0} bytes is shorter than a request header")]
    Short(usize),
    #[error("undecodable {api:?} v{version} request header: {reason}")]
    Undecodable {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("response of {0} bytes is shorter than a response header")]
    ShortResponse(usize),
    #[error("undecodable response header: {0}")]
    UndecodableResponse(String),
    #[error("unencodable {api:?} v{version} message: {reason}")]
    Unencodable {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A request or response body of `api` that did not decode or encode.
pub fn undecodable(api: ApiKey, version: i16, e: impl std::fmt::Display) -> HeaderError {
    HeaderError::Undecodable {
        api,
        version,
        reason: e.to_string(),
    }
}

/// The fixed prefix of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeaderView {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestHeaderView {
    pub fn peek(frame: &[u8]) -> Result<Self, HeaderError> {
        if frame.len() < 8 {
            return Err(HeaderError::Short(frame.len()));
        }
        Ok(Self {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }

    /// The API, when it is one this build of the protocol crate knows.
    pub fn api(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }
}

/// Splits a request frame of a known API into its decoded header and the body that follows it.
pub fn split_request(
    frame: &Bytes,
    api: ApiKey,
    version: i16,
) -> Result<(RequestHeader, Bytes), HeaderError> {
    let mut buf = frame.clone();
    let header_version = api.request_header_version(version);
    let header =
        RequestHeader::decode(&mut buf, header_version).map_err(|e| HeaderError::Undecodable {
            api,
            version,
            reason: e.to_string(),
        })?;
    Ok((header, buf))
}

/// The correlation id that opens every response.
pub fn response_correlation_id(frame: &[u8]) -> Result<i32, HeaderError> {
    if frame.len() < 4 {
        return Err(HeaderError::ShortResponse(frame.len()));
    }
    Ok(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]))
}

/// Splits a response frame into its header and body, given the request it answers.
pub fn split_response(
    frame: &Bytes,
    api: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, Bytes), HeaderError> {
    let mut buf = frame.clone();
    let header = ResponseHeader::decode(&mut buf, api.response_header_version(version))
        .map_err(|e| HeaderError::UndecodableResponse(e.to_string()))?;
    Ok((header, buf))
}

/// Joins a request header and body into a frame payload: the inverse of [`split_request`].
pub fn join_request<M: Encodable>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    body: &M,
) -> Result<Bytes, HeaderError> {
    join(
        header,
        api.request_header_version(version),
        body,
        api,
        version,
    )
}

/// Joins a response header and body into a frame payload: the inverse of [`split_response`].
pub fn join_response<M: Encodable>(
    header: &ResponseHeader,
    api: ApiKey,
    version: i16,
    body: &M,
) -> Result<Bytes, HeaderError> {
    join(
        header,
        api.response_header_version(version),
        body,
        api,
        version,
    )
}

fn join<H: Encodable, M: Encodable>(
    header: &H,
    header_version: i16,
    body: &M,
    api: ApiKey,
    version: i16,
) -> Result<Bytes, HeaderError> {
    let unencodable = |e: &dyn std::fmt::Display| HeaderError::Unencodable {
        api,
        version,
        reason: e.to_string(),
    };
    let size = header
        .compute_size(header_version)
        .map_err(|e| unencodable(&e))?
        + body.compute_size(version).map_err(|e| unencodable(&e))?;
    let mut out = BytesMut::with_capacity(size);
    header
        .encode(&mut out, header_version)
        .map_err(|e| unencodable(&e))?;
    body.encode(&mut out, version)
        .map_err(|e| unencodable(&e))?;
    Ok(out.freeze())
}

/// Reads the `acks` of a Produce request body without decoding the rest of it.
///
/// The body opens with `transactional_id` (a nullable string: `i16` length before v9, unsigned
/// varint length + 1 from v9) and then `acks: i16`.
pub fn peek_produce_acks(body: &[u8], version: i16) -> Option<i16> {
    let mut b = body;
    if version >= 9 {
        let len_plus_one = read_unsigned_varint(&mut b)?;
        let skip = len_plus_one.saturating_sub(1) as usize;
        if b.len() < skip {
            return None;
        }
        b.advance(skip);
    } else {
        if b.len() < 2 {
            return None;
        }
        let len = b.get_i16();
        if len > 0 {
            if b.len() < len as usize {
                return None;
            }
            b.advance(len as usize);
        }
    }
    if b.len() < 2 {
        return None;
    }
    Some(b.get_i16())
}

fn read_unsigned_varint(b: &mut &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for shift in (0..35).step_by(7) {
        if b.is_empty() {
            return None;
        }
        let byte = b.get_u8();
        value |= ((byte & 0x7f) as u32) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn peek_reads_the_fixed_prefix() {
        let frame = [0, 3, 0, 12, 0, 0, 1, 2, 0xff, 0xff];
        let h = RequestHeaderView::peek(&frame).unwrap();
        assert_eq!(h.api(), Some(ApiKey::Metadata));
        assert_eq!(h.api_version, 12);
        assert_eq!(h.correlation_id, 258);
        assert!(RequestHeaderView::peek(&frame[..7]).is_err());
    }

    #[test]
    fn produce_acks_peek_matches_the_encoder_across_versions() {
        for version in 3..=13 {
            for (txn, acks) in [(None, -1i16), (Some("tx-1"), 0), (Some(""), 1)] {
                let mut req = ProduceRequest::default();
                req.acks = acks;
                req.transactional_id = txn.map(|t| StrBytes::from_static_str(t).into());
                let mut buf = BytesMut::new();
                req.encode(&mut buf, version).unwrap();
                assert_eq!(peek_produce_acks(&buf, version), Some(acks), "v{version}");
            }
        }
        assert_eq!(peek_produce_acks(&[0, 5, b'a'], 3), None);
        assert_eq!(
            peek_produce_acks(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 9),
            None
        );
    }
}
