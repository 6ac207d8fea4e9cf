//! Avro records in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then
//! Avro binary written with that schema.
//!
//! A record on an Avro-contract topic is accepted for rule evaluation only if:
//! 1. it carries the framing (else: "not in Confluent wire format");
//! 2. its schema id is known to the registry (else: "schema id N is unknown");
//! 3. the contract's schema can read the writer schema, as Apache Avro's Java checker decides
//!    (else: "writer schema N cannot be read with the contract schema: <why>"), decided once per
//!    schema id per policy generation (see [`Decoders`]);
//! 4. the bytes decode with the writer schema and resolve to the contract's schema (else: "does
//!    not decode").
//!
//! Then the contract's rules run on the resolved value. Records are decoded by a
//! [`Projection`](super::avro_project::Projection) that materialises only the fields the rules
//! read; a contract with a CEL rule, which sees the whole record, also decodes it in full with
//! `apache-avro`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use apache_avro::types::Value;

use super::avro_compat::{self, Avro, Named, NamedType};
use super::avro_project::{Path, Projected, Projection};
use super::error::{SchemaError, ValueError};
use crate::fields::{RecordFields, Val};

/// A schema as both the decoder and the compatibility checker need it.
#[derive(Debug)]
pub struct AvroSchema {
    pub decoder: apache_avro::Schema,
    pub model: avro_compat::Schema,
}

/// The most items (or bytes) `apache-avro` may allocate for one array, map, string or bytes
/// when it decodes a whole record (CEL contracts). Its default, 512 Mi items, lets one hostile
/// record claim tens of gigabytes of `Value`s and abort the process; with the projection
/// validating first, a claim is also bounded by the record's own length.
pub const FULL_DECODE_MAX_ITEMS: usize = 1 << 20;

impl AvroSchema {
    pub fn parse(text: &str) -> Result<AvroSchema, SchemaError> {
        // Process-wide and first-call-wins: set before anything is decoded.
        apache_avro::util::max_allocation_bytes(FULL_DECODE_MAX_ITEMS);
        Ok(AvroSchema {
            decoder: apache_avro::Schema::parse_str(text)
                .map_err(|e| SchemaError::Avro(e.to_string()))?,
            model: avro_compat::Schema::parse_str(text)?,
        })
    }
}

/// Splits a Confluent-framed value into its schema id and Avro body.
pub fn unframe(value: &[u8]) -> Option<(u32, &[u8])> {
    match value {
        [0, a, b, c, d, body @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => None,
    }
}

/// The decoder compiled for one writer schema id, or why that writer cannot be read.
pub type Compiled = Result<Arc<Projection>, ValueError>;

/// How many (contract, writer id) decoders compiled after load are remembered (the cache is
/// cleared when full).
const MAX_LATE: usize = 4096;

/// A contract's Avro side: its schema, and the fields its rules read. Immutable: the decoders
/// compiled for it live in [`Decoders`], beside the policy set.
#[derive(Debug)]
pub struct AvroReader {
    pub schema: Arc<AvroSchema>,
    /// The field paths the rules (and completeness) read; `None` when a rule reads the whole
    /// record (CEL), which then is decoded in full after the projection has validated it.
    paths: Option<Vec<Path>>,
    /// The fields `protect:` seals and shows: projected too, for their spans
    /// ([`Projection::spans`]), whether or not a rule reads them.
    protected: Vec<Path>,
}

impl AvroReader {
    pub fn new(schema: Arc<AvroSchema>, paths: Option<Vec<Path>>) -> Self {
        AvroReader {
            schema,
            paths,
            protected: Vec::new(),
        }
    }

    /// The same reader, also projecting the fields `protect:` names.
    pub fn protecting(mut self, protected: Vec<Path>) -> Self {
        self.protected = protected;
        self
    }

    /// Compiles the decoder for records written with schema `id`: the compatibility check, then
    /// the projection. Pure, and the costly step; [`Decoders`] keeps its results.
    pub fn compile(&self, id: u32, writer: &AvroSchema) -> Compiled {
        avro_compat::can_read(&self.schema.model, &writer.model)
            .map_err(|e| ValueError::Unreadable {
                id,
                reason: SchemaError::Unreadable(e.to_string()),
            })
            .and_then(|()| {
                let paths: Vec<&[Box<str>]> = (self.paths.iter().flatten())
                    .chain(&self.protected)
                    .map(|p| &**p)
                    .collect();
                Projection::compile(&writer.model, &self.schema.model, &paths)
                    .map(Arc::new)
                    .map_err(|reason| ValueError::Unreadable { id, reason })
            })
    }

    /// The full name of the record the contract reads, when its schema is a named type.
    fn root_name(&self) -> Option<&str> {
        root_name(&self.schema.model)
    }
}

/// Whether the field at `path` of `model` can hold a ciphertext envelope in place: a string or
/// bytes, or a union of those with null (a null stays null). `Err` says what it is instead.
pub fn protectable(model: &avro_compat::Schema, path: &[&str]) -> Result<(), String> {
    use avro_compat::Resolved;
    let mut at = &model.root;
    for (i, segment) in path.iter().enumerate() {
        let record = match model.resolve(at) {
            Resolved::Named(NamedType {
                def: Named::Record { fields },
                ..
            }) => Some(fields),
            // A nullable record: its one non-null branch.
            Resolved::Plain(Avro::Union(branches)) => {
                let mut non_null = branches.iter().filter(|b| **b != Avro::Null);
                match (non_null.next().map(|b| model.resolve(b)), non_null.next()) {
                    (
                        Some(Resolved::Named(NamedType {
                            def: Named::Record { fields },
                            ..
                        })),
                        None,
                    ) => Some(fields),
                    _ => None,
                }
            }
            _ => None,
        };
        let field = record
            .and_then(|fields| fields.iter().find(|f| f.name == *segment))
            .ok_or_else(|| format!("`{}` is not a field of the schema", path[..=i].join(".")))?;
        at = &field.schema;
    }
    let fits = |a: &Avro| {
        matches!(
            model.resolve(a),
            Resolved::Plain(Avro::String | Avro::Bytes)
        )
    };
    let ok = match at {
        Avro::Union(branches) => {
            branches.iter().any(|b| *b != Avro::Null)
                && branches.iter().all(|b| *b == Avro::Null || fits(b))
        }
        other => fits(other),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field `{}` is {}; an Avro field holds a ciphertext only as a string or bytes \
             (or either with null)",
            path.join("."),
            avro_compat::type_name(&model.resolve(at))
        ))
    }
}

fn root_name(model: &avro_compat::Schema) -> Option<&str> {
    match &model.root {
        avro_compat::Avro::Ref(name) => Some(name),
        _ => None,
    }
}

/// The Avro decoders of one policy generation, by (contract index, writer schema id). Not part
/// of the immutable policy set: it is built beside it, in two parts.
///
/// - **At load**, for every contract and every schema id the set's built-in registry knows whose
///   writer names the same record: read without a lock by the judge.
/// - **Late**, for ids an external registry names: compiled by the registry prefetch, before the
///   request is judged, and handed to the judge with the fetched writer schemas. That part sits
///   behind a lock, which the judge never takes.
///
/// An id in neither (a writer of another record name, which resolution refuses anyway) is
/// compiled by the judge for the batch at hand. Ids are immutable in a registry (a Confluent
/// registry never rebinds an id, and built-in ids are derived from the schema text), so an id
/// names one writer schema for the life of a generation.
#[derive(Debug, Default)]
pub struct Decoders {
    at_load: HashMap<(usize, u32), Compiled>,
    late: RwLock<HashMap<(usize, u32), Compiled>>,
}

impl Decoders {
    /// Compiles, for each `(contract index, reader)`, the decoder of every writer in `writers`
    /// that names the reader's record.
    pub fn at_load<'r>(
        readers: impl IntoIterator<Item = (usize, &'r AvroReader)>,
        writers: &HashMap<u32, Arc<AvroSchema>>,
    ) -> Self {
        let mut at_load = HashMap::new();
        for (contract, reader) in readers {
            for (&id, writer) in writers {
                if root_name(&writer.model) == reader.root_name() {
                    at_load.insert((contract, id), reader.compile(id, writer));
                }
            }
        }
        Decoders {
            at_load,
            late: RwLock::default(),
        }
    }

    /// The decoder compiled at load, if any. Takes no lock.
    pub fn compiled_at_load(&self, contract: usize, id: u32) -> Option<&Compiled> {
        self.at_load.get(&(contract, id))
    }

    /// How many decoders were compiled at load.
    pub fn at_load_count(&self) -> usize {
        self.at_load.len()
    }

    /// The decoder for a writer fetched after load: compiled once per generation, then shared.
    /// For the registry prefetch, never the judge: it takes a lock.
    pub fn resolve(
        &self,
        contract: usize,
        reader: &AvroReader,
        id: u32,
        writer: &AvroSchema,
    ) -> Compiled {
        if let Some(c) = self.at_load.get(&(contract, id)) {
            return c.clone();
        }
        if let Some(c) = self
            .late
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(contract, id))
        {
            return c.clone();
        }
        let compiled = reader.compile(id, writer);
        let mut late = self.late.write().unwrap_or_else(PoisonError::into_inner);
        if late.len() >= MAX_LATE {
            late.clear();
        }
        late.insert((contract, id), compiled.clone());
        compiled
    }
}

/// A decoded record: the projected fields, or the whole value when a CEL rule needs it.
/// It lives on the stack for one record; boxing the larger variant would allocate per record.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded<'a> {
    Fields(Projected<'a>),
    Whole(Value),
}

impl RecordFields for Decoded<'_> {
    fn get(&self, path: &[Box<str>]) -> Val<'_> {
        match self {
            Decoded::Fields(p) => p.get(path),
            Decoded::Whole(v) => v.get(path),
        }
    }

    fn to_cel(&self) -> cel::Value {
        match self {
            Decoded::Fields(p) => p.to_cel(),
            Decoded::Whole(v) => v.to_cel(),
        }
    }
}

/// Decodes one framed value for a contract, or says why it cannot be read. `batch` remembers
/// the decoders already looked up for this batch; `prepared` gives those compiled before judging
/// (see [`Decoders`]), and an id in neither is compiled here. No lock is taken.
pub fn decode<'a>(
    value: &'a [u8],
    writers: &HashMap<u32, Arc<AvroSchema>>,
    reader: &AvroReader,
    batch: &'a mut HashMap<u32, Compiled>,
    prepared: &dyn Fn(u32) -> Option<Compiled>,
) -> Result<Decoded<'a>, ValueError> {
    let (id, body) = unframe(value).ok_or(ValueError::NotFramed)?;
    let writer = writers.get(&id).ok_or(ValueError::UnknownId(id))?;
    let projection = match batch.entry(id) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(prepared(id).unwrap_or_else(|| reader.compile(id, writer))),
    }
    .as_ref()
    .map_err(Clone::clone)?;
    let undecodable = |reason: String| ValueError::Undecodable { id, reason };
    let fields = projection
        .decode(body)
        .map_err(|e| undecodable(e.to_string()))?;
    if reader.paths.is_some() {
        return Ok(Decoded::Fields(fields));
    }
    let mut body = body;
    apache_avro::from_avro_datum(&writer.decoder, &mut body, Some(&reader.schema.decoder))
        .map(Decoded::Whole)
        .map_err(|e| undecodable(e.to_string()))
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        Value::Union(_, inner) => field(inner, name),
        _ => None,
    }
}

impl RecordFields for Value {
    fn get(&self, path: &[Box<str>]) -> Val<'_> {
        let mut v = self;
        for segment in path {
            match field(v, segment) {
                Some(next) => v = next,
                None => return Val::Missing,
            }
        }
        while let Value::Union(_, inner) = v {
            v = inner;
        }
        match v {
            Value::Null => Val::Null,
            Value::Boolean(b) => Val::Bool(*b),
            Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Val::Int(*i as i64),
            Value::Long(i)
            | Value::TimeMicros(i)
            | Value::TimestampMillis(i)
            | Value::TimestampMicros(i)
            | Value::TimestampNanos(i)
            | Value::LocalTimestampMillis(i)
            | Value::LocalTimestampMicros(i)
            | Value::LocalTimestampNanos(i) => Val::Int(*i),
            Value::Float(f) => Val::Float(*f as f64),
            Value::Double(f) => Val::Float(*f),
            Value::String(s) | Value::Enum(_, s) => Val::Str(s),
            _ => Val::Other,
        }
    }

    fn to_cel(&self) -> cel::Value {
        serde_json::Value::try_from(self.clone())
            .ok()
            .and_then(|j| cel::to_value(j).ok())
            .unwrap_or(cel::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::to_avro_datum;

    const WRITER: &str = r#"{"type":"record","name":"O","fields":[{"name":"id","type":"string"},{"name":"total","type":"double"},{"name":"customer","type":["null","string"],"default":null},{"name":"address","type":{"type":"record","name":"A","fields":[{"name":"city","type":"string"}]}}]}"#;
    const READER: &str = r#"{"type":"record","name":"O","fields":[{"name":"id","type":"string"},{"name":"total","type":"double"},{"name":"customer","type":["null","string"],"default":null},{"name":"address","type":{"type":"record","name":"A","fields":[{"name":"city","type":"string"}]}},{"name":"channel","type":"string","default":"web"}]}"#;

    fn frame(id: u32, record: Value, schema: &apache_avro::Schema) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend(to_avro_datum(schema, record).unwrap());
        out
    }

    fn order(total: f64, customer: Option<&str>) -> Value {
        Value::Record(vec![
            ("id".into(), Value::String("o-1".into())),
            ("total".into(), Value::Double(total)),
            (
                "customer".into(),
                match customer {
                    Some(c) => Value::Union(1, Box::new(Value::String(c.into()))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            (
                "address".into(),
                Value::Record(vec![("city".into(), Value::String("Lyon".into()))]),
            ),
        ])
    }

    fn path(s: &str) -> Path {
        s.split('.').map(Into::into).collect()
    }

    /// The reader in both modes: projecting the rules' fields, and decoding whole records.
    fn readers() -> [AvroReader; 2] {
        let schema = Arc::new(AvroSchema::parse(READER).unwrap());
        let paths = ["total", "customer", "address.city", "channel", "nope"];
        [
            AvroReader::new(schema.clone(), Some(paths.map(path).to_vec())),
            AvroReader::new(schema, None),
        ]
    }

    #[test]
    fn decodes_resolves_and_exposes_fields_to_rules() {
        for reader in readers() {
            decodes_resolves_and_exposes_fields(&reader);
        }
    }

    fn decodes_resolves_and_exposes_fields(reader: &AvroReader) {
        let writer = Arc::new(AvroSchema::parse(WRITER).unwrap());
        let writers = HashMap::from([(7u32, writer.clone())]);
        let mut cache = HashMap::new();
        let bytes = frame(7, order(12.5, Some("c-1")), &writer.decoder);
        let v = decode(&bytes, &writers, reader, &mut cache, &|_| None).unwrap();
        let p = |s: &str| path(s);
        assert_eq!(v.get(&p("total")), Val::Float(12.5));
        assert_eq!(v.get(&p("customer")), Val::Str("c-1"));
        assert_eq!(v.get(&p("address.city")), Val::Str("Lyon"));
        assert_eq!(
            v.get(&p("channel")),
            Val::Str("web"),
            "reader default filled in"
        );
        drop(v);
        let bytes = frame(7, order(1.0, None), &writer.decoder);
        let none = decode(&bytes, &writers, reader, &mut cache, &|_| None).unwrap();
        assert_eq!(none.get(&p("customer")), Val::Null);
        assert_eq!(none.get(&p("nope")), Val::Missing);
    }

    #[test]
    fn every_failure_has_its_own_message() {
        for reader in readers() {
            failures_have_their_own_messages(&reader);
        }
    }

    fn failures_have_their_own_messages(reader: &AvroReader) {
        let writer = Arc::new(AvroSchema::parse(WRITER).unwrap());
        let writers = HashMap::from([(7u32, writer.clone())]);
        let mut cache = HashMap::new();
        let raw = br#"{"id":"o-1"}"#;
        assert_eq!(
            decode(raw, &writers, reader, &mut cache, &|_| None).unwrap_err(),
            ValueError::NotFramed
        );
        let unknown = frame(8, order(1.0, None), &writer.decoder);
        assert_eq!(
            decode(&unknown, &writers, reader, &mut cache, &|_| None).unwrap_err(),
            ValueError::UnknownId(8)
        );
        let mut cut = frame(7, order(1.0, None), &writer.decoder);
        cut.truncate(cut.len() - 3);
        assert!(matches!(
            decode(&cut, &writers, reader, &mut cache, &|_| None).unwrap_err(),
            ValueError::Undecodable { id: 7, .. }
        ));
        // A writer the contract cannot read: `total` became a string.
        let bad = Arc::new(
            AvroSchema::parse(
                &WRITER.replace(r#""total","type":"double""#, r#""total","type":"string""#),
            )
            .unwrap(),
        );
        let writers = HashMap::from([(9u32, bad.clone())]);
        let rec = Value::Record(vec![
            ("id".into(), Value::String("o".into())),
            ("total".into(), Value::String("x".into())),
            ("customer".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "address".into(),
                Value::Record(vec![("city".into(), Value::String("L".into()))]),
            ),
        ]);
        let e = decode(
            &frame(9, rec, &bad.decoder),
            &writers,
            reader,
            &mut cache,
            &|_| None,
        )
        .unwrap_err();
        assert!(matches!(e, ValueError::Unreadable { id: 9, .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("writer schema 9 cannot be read with the contract schema"),
            "{e}"
        );
    }

    #[test]
    fn decoders_are_compiled_at_load_for_the_same_record_and_late_once() {
        let [reader, _] = readers();
        let writer = Arc::new(AvroSchema::parse(WRITER).unwrap());
        let other =
            Arc::new(AvroSchema::parse(r#"{"type":"record","name":"Other","fields":[]}"#).unwrap());
        let writers = HashMap::from([(7u32, writer.clone()), (8u32, other.clone())]);
        let decoders = Decoders::at_load([(0, &reader)], &writers);
        assert_eq!(
            decoders.at_load_count(),
            1,
            "only the writer of the same record"
        );
        assert!(decoders.compiled_at_load(0, 7).unwrap().is_ok());
        assert!(decoders.compiled_at_load(0, 8).is_none());
        assert!(decoders.compiled_at_load(1, 7).is_none());

        // Late: compiled once, then the same decoder for every caller.
        let a = decoders.resolve(1, &reader, 7, &writer).unwrap();
        let b = decoders.resolve(1, &reader, 7, &writer).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(decoders.resolve(1, &reader, 8, &other).is_err());
    }

    #[test]
    fn decode_uses_the_prepared_decoder_and_compiles_only_without_one() {
        let [reader, _] = readers();
        let writer = Arc::new(AvroSchema::parse(WRITER).unwrap());
        let writers = HashMap::from([(7u32, writer.clone())]);
        let bytes = frame(7, order(12.5, Some("c-1")), &writer.decoder);
        // A prepared verdict wins over compiling: here a refusal the writer does not deserve.
        let refused = ValueError::UnknownId(99);
        let prepared = |id: u32| (id == 7).then(|| Err(refused.clone()));
        let mut cache = HashMap::new();
        assert_eq!(
            decode(&bytes, &writers, &reader, &mut cache, &prepared).unwrap_err(),
            refused
        );
        let mut cache = HashMap::new();
        assert!(decode(&bytes, &writers, &reader, &mut cache, &|_| None).is_ok());
        assert!(cache[&7].is_ok(), "compiled for the batch");
    }
}
