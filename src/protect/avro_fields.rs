//! The protected fields of Confluent-framed Avro values.
//!
//! A field is found by the contract's projection for the value's writer schema
//! ([`Projection::spans`]): the projection resolves the writer to the contract's schema (names,
//! aliases), validates every byte of the record as the judge does, and says where each protected
//! field's value lies. Such a field is a string or bytes (the policy loader refuses any other
//! type, `avro_data::protectable`), which Avro writes as a length prefix and the bytes, so its new
//! value (an envelope, its plaintext, a mask) takes its place with a new prefix, and the record
//! stays valid under the same writer schema: a consumer reading the topic directly decodes it
//! with the schema it names, and sees the envelope as the field's text.
//!
//! The envelope's plaintext is the field's bytes (a string's UTF-8, or the bytes), not a JSON
//! text: a reader gets those exact bytes back.

use std::sync::Arc;

use crate::policy::judge::Writers;
use crate::policy::protect::ProtectedField;
use crate::schema::avro_project::{Projection, Span};

/// What a writer schema id gives.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The contract's projection for that writer.
    Found(Arc<Projection>),
    /// No projection: the id names no schema, or one the contract cannot read.
    Unknown,
    /// Not in memory: the registry must be asked first (a Fetch does, then runs again).
    Later,
}

/// Where the projections of one contract's writers come from.
pub trait WriterSource {
    fn projection(&self, id: u32) -> Lookup;
}

/// The writers of one contract as the judge had them for a produce request: those it compiled
/// before judging (fetched from the registry for this request) or at load.
pub struct ContractWriters<'a> {
    pub writers: Writers<'a>,
    pub contract: usize,
}

impl WriterSource for ContractWriters<'_> {
    fn projection(&self, id: u32) -> Lookup {
        match self.writers.prepared(self.contract, id) {
            Some(Ok(p)) => Lookup::Found(p),
            _ => Lookup::Unknown,
        }
    }
}

/// Why a value's protected fields cannot be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindError {
    /// Not Confluent-framed (magic byte 0, a 4-byte schema id).
    NotFramed,
    /// The writer schema is not known, or not readable by the contract.
    UnknownWriter(u32),
    /// The writer schema must be fetched first.
    Later(u32),
    /// The record does not decode with its writer schema.
    Undecodable(&'static str),
}

impl std::fmt::Display for FindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FindError::NotFramed => f.write_str("the value is not Confluent-framed Avro"),
            FindError::UnknownWriter(id) | FindError::Later(id) => {
                write!(f, "the contract cannot read writer schema id {id}")
            }
            FindError::Undecodable(why) => write!(f, "the Avro value does not decode: {why}"),
        }
    }
}

/// A protected field present in a value: where it lies in the value (the frame included), and
/// its index in `Protect::fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    pub span: Span,
    pub field: usize,
}

/// Finds the protected fields of values one after the other, remembering the last writer's
/// projection and its slots (a batch's values mostly share one writer): no allocation per value
/// once warm.
#[derive(Default)]
pub struct Finder {
    last: Option<Writer>,
    spans: Vec<Option<Span>>,
    spots: Vec<Spot>,
}

/// A writer's projection as one contract uses it.
struct Writer {
    /// (contract, writer schema id)
    key: (usize, u32),
    projection: Arc<Projection>,
    /// The slot of each protected field in the projection.
    slots: Vec<Option<usize>>,
}

/// The frame's length: magic byte and schema id.
const FRAME: usize = 5;

impl Finder {
    /// The protected fields present in `value` (not null), in the order they lie in it; spans
    /// count from the value's first byte (the frame included). `contract` names whose
    /// `fields` and `writers` these are (a writer id means one projection per contract).
    pub fn find(
        &mut self,
        value: &[u8],
        contract: usize,
        fields: &[ProtectedField],
        writers: &dyn WriterSource,
    ) -> Result<&[Spot], FindError> {
        let (id, body) = crate::schema::avro_data::unframe(value).ok_or(FindError::NotFramed)?;
        if self.last.as_ref().is_none_or(|w| w.key != (contract, id)) {
            let projection = match writers.projection(id) {
                Lookup::Found(p) => p,
                Lookup::Unknown => return Err(FindError::UnknownWriter(id)),
                Lookup::Later => return Err(FindError::Later(id)),
            };
            let slots = fields.iter().map(|f| projection.slot(&f.path)).collect();
            self.last = Some(Writer {
                key: (contract, id),
                projection,
                slots,
            });
        }
        let Some(Writer {
            projection, slots, ..
        }) = &self.last
        else {
            return Err(FindError::UnknownWriter(id));
        };
        projection
            .spans(body, &mut self.spans)
            .map_err(FindError::Undecodable)?;
        self.spots.clear();
        for (field, slot) in slots.iter().enumerate() {
            if let Some(span) = slot.and_then(|s| self.spans[s]) {
                self.spots.push(Spot {
                    span: Span {
                        start: span.start + FRAME,
                        bytes: span.bytes + FRAME,
                        end: span.end + FRAME,
                    },
                    field,
                });
            }
        }
        self.spots.sort_unstable_by_key(|s| s.span.start);
        Ok(&self.spots)
    }
}

/// Appends an Avro length prefix (a zigzag varint) for `n` bytes.
pub fn write_len(n: usize, out: &mut Vec<u8>) {
    let mut v = (n as u64) << 1;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `bytes` as an Avro string or bytes value: its length prefix, then the bytes.
pub fn write_value(bytes: &[u8], out: &mut Vec<u8>) {
    write_len(bytes.len(), out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::avro_compat::Schema;

    struct One(Option<Arc<Projection>>, std::cell::Cell<u32>);

    impl WriterSource for One {
        fn projection(&self, id: u32) -> Lookup {
            self.1.set(self.1.get() + 1);
            match (&self.0, id) {
                (Some(p), 7) => Lookup::Found(p.clone()),
                (_, 8) => Lookup::Later,
                _ => Lookup::Unknown,
            }
        }
    }

    fn field(path: &str) -> ProtectedField {
        ProtectedField {
            path: path.split('.').map(Box::from).collect(),
            dotted: path.into(),
            action: crate::policy::protect::Action::Encrypt,
            deterministic: false,
        }
    }

    #[test]
    fn fields_are_found_in_value_order_through_the_frame_and_the_writer_is_remembered() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},
            {"name":"n","type":"int"},{"name":"b","type":["null","bytes"]}]}"#,
        )
        .unwrap();
        let fields = [field("b"), field("a")];
        let paths: Vec<&[Box<str>]> = fields.iter().map(|f| &*f.path).collect();
        let projection = Arc::new(Projection::compile(&schema, &schema, &paths).unwrap());
        let writers = One(Some(projection), Default::default());
        let value = |b: Option<&[u8]>| {
            let mut v = vec![0, 0, 0, 0, 7];
            write_value(b"hello", &mut v);
            v.push(4); // n = 2
            match b {
                None => v.push(0),
                Some(b) => {
                    v.push(2);
                    write_value(b, &mut v);
                }
            }
            v
        };
        let mut finder = Finder::default();
        let v = value(Some(&[1, 2, 3]));
        let spots = finder.find(&v, 0, &fields, &writers).unwrap().to_vec();
        assert_eq!(spots.iter().map(|s| s.field).collect::<Vec<_>>(), [1, 0]);
        assert_eq!(&v[spots[0].span.bytes..spots[0].span.end], b"hello");
        assert_eq!(spots[0].span.start, 5);
        assert_eq!(&v[spots[1].span.bytes..spots[1].span.end], &[1, 2, 3]);
        let v = value(None);
        let spots = finder.find(&v, 0, &fields, &writers).unwrap().to_vec();
        assert_eq!(spots.len(), 1, "a null is not a field to seal");
        assert_eq!(
            writers.1.get(),
            1,
            "one lookup for the writer of both values"
        );

        assert_eq!(
            finder.find(b"{}", 0, &fields, &writers),
            Err(FindError::NotFramed)
        );
        assert_eq!(
            finder.find(&[0, 0, 0, 0, 9, 2], 0, &fields, &writers),
            Err(FindError::UnknownWriter(9))
        );
        assert_eq!(
            finder.find(&[0, 0, 0, 0, 8, 2], 0, &fields, &writers),
            Err(FindError::Later(8))
        );
        let mut cut = value(Some(b"x"));
        cut.pop();
        assert!(matches!(
            finder.find(&cut, 0, &fields, &writers),
            Err(FindError::Undecodable(_))
        ));
    }

    #[test]
    fn lengths_are_zigzag_varints() {
        for (n, want) in [
            (0usize, vec![0u8]),
            (1, vec![2]),
            (63, vec![126]),
            (64, vec![0x80, 1]),
            (300, vec![0xd8, 4]),
        ] {
            let mut out = Vec::new();
            write_len(n, &mut out);
            assert_eq!(out, want, "{n}");
        }
    }
}
