//! Walking a Fetch response body (v4 to v15) without decoding it: where each partition's
//! records are, as a range of the body, so that readers can count them (`proxy::fetch_bytes`)
//! and editors can replace them (`protect::fetch`) without copying anything else.
//!
//! The walk skips every tagged field, whatever its tag: tansu 0.6.0 sends `node_endpoints`
//! (tag 0) in Fetch v15 responses, which the protocol defines only from v16 and which strict
//! decoders refuse.

use std::ops::Range;

/// How a Fetch response names a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRef<'a> {
    Name(&'a str),
    Id([u8; 16]),
}

/// One partition of a Fetch response.
#[derive(Debug, Clone)]
pub struct PartitionRecords<'a> {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    /// The record set (empty when null).
    pub records: &'a [u8],
    /// The records field in the body, its length prefix included.
    pub field: Range<usize>,
}

/// What the walk meets, in order.
pub enum FetchEvent<'a, 'p> {
    Partition(TopicRef<'a>, &'p PartitionRecords<'a>),
    /// After a topic's last partition.
    TopicEnd(TopicRef<'a>),
}

/// Walks `body`, calling `each` for every partition and at the end of every topic. `None` when
/// the body does not follow the layout.
pub fn walk_fetch<'a>(
    body: &'a [u8],
    version: i16,
    mut each: impl FnMut(FetchEvent<'a, '_>),
) -> Option<()> {
    let flexible = version >= 12;
    let mut r = Walker { b: body, flexible };
    let at = |r: &Walker<'a>| body.len() - r.b.len();
    r.skip(4)?; // throttle_time_ms
    if version >= 7 {
        r.skip(2 + 4)?; // error_code, session_id
    }
    for _ in 0..r.array_len()? {
        let topic = if version >= 13 {
            TopicRef::Id(r.take(16)?.try_into().ok()?)
        } else {
            TopicRef::Name(std::str::from_utf8(r.string()?).ok()?)
        };
        for _ in 0..r.array_len()? {
            let head = r.take(4 + 2 + 8)?; // partition_index, error_code, high_watermark
            let partition = i32::from_be_bytes(head[0..4].try_into().ok()?);
            let error_code = i16::from_be_bytes(head[4..6].try_into().ok()?);
            let high_watermark = i64::from_be_bytes(head[6..14].try_into().ok()?);
            r.skip(8)?; // last_stable_offset
            if version >= 5 {
                r.skip(8)?; // log_start_offset
            }
            for _ in 0..r.array_len()? {
                r.skip(8 + 8)?; // aborted: producer_id, first_offset
                r.tags()?;
            }
            if version >= 11 {
                r.skip(4)?; // preferred_read_replica
            }
            let start = at(&r);
            let records = r.bytes()?;
            let p = PartitionRecords {
                partition,
                error_code,
                high_watermark,
                records,
                field: start..at(&r),
            };
            each(FetchEvent::Partition(topic, &p));
            r.tags()?;
        }
        r.tags()?;
        each(FetchEvent::TopicEnd(topic));
    }
    r.tags()?;
    Some(())
}

/// The records field for a record set of `len` bytes at this version (the length prefix).
pub fn records_prefix(version: i16, len: usize, out: &mut Vec<u8>) {
    if version >= 12 {
        let mut v = len as u64 + 1;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    } else {
        out.extend_from_slice(&(len as i32).to_be_bytes());
    }
}

struct Walker<'a> {
    b: &'a [u8],
    flexible: bool,
}

impl<'a> Walker<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first()?;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// Array length; a null array counts as empty.
    fn array_len(&mut self) -> Option<usize> {
        let n = if self.flexible {
            self.uvarint()?.checked_sub(1).map_or(0, |n| n as usize)
        } else {
            self.i32()?.max(0) as usize
        };
        // Every element takes at least one byte: a length beyond the data is malformed.
        (n <= self.b.len()).then_some(n)
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = if self.flexible {
            self.uvarint()?.checked_sub(1)? as usize
        } else {
            usize::try_from(i16::from_be_bytes(self.take(2)?.try_into().ok()?)).ok()?
        };
        self.take(n)
    }

    /// A nullable byte field (empty when null).
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = if self.flexible {
            match self.uvarint()? {
                0 => return Some(&[]),
                n => (n - 1) as usize,
            }
        } else {
            match self.i32()? {
                n if n < 0 => return Some(&[]),
                n => n as usize,
            }
        };
        self.take(n)
    }

    fn tags(&mut self) -> Option<()> {
        if !self.flexible {
            return Some(());
        }
        for _ in 0..self.uvarint()? {
            self.uvarint()?; // tag
            let len = self.uvarint()? as usize;
            self.skip(len)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_records_prefix_is_the_one_the_walk_reads() {
        for version in [4i16, 11, 12, 15] {
            for len in [0usize, 1, 126, 127, 128, 300_000] {
                let mut field = Vec::new();
                records_prefix(version, len, &mut field);
                field.extend(std::iter::repeat_n(7u8, len));
                let mut w = Walker {
                    b: &field,
                    flexible: version >= 12,
                };
                assert_eq!(w.bytes().map(<[u8]>::len), Some(len), "v{version} {len}");
                assert!(w.b.is_empty());
            }
        }
    }
}
