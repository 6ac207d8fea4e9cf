//! The projection against `apache-avro`'s full decoder, which is the reference: on the 117
//! compatible reader/writer pairs of the conformance fixtures, on a schema with every type, and on
//! mutated records, both must accept or reject the same bytes, and agree on every field a rule
//! can read.

use apache_avro::types::Value;
use serde_json::Value as Json;

use super::*;
use crate::schema::avro_data::AvroSchema;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Writes a random value of writer type `a`; false when the type has no finite value (a record
/// that contains itself with no way out) or no value at all (an empty union).
fn generate(s: &Schema, a: &Avro, rng: &mut Rng, out: &mut Vec<u8>, depth: u32) -> bool {
    if depth > 30 {
        return false;
    }
    match s.resolve(a) {
        Resolved::Plain(p) => match p {
            Avro::Null => true,
            Avro::Boolean => {
                out.push(rng.below(2) as u8);
                true
            }
            Avro::Int => {
                zigzag(out, rng.next() as i32 as i64 >> rng.below(31));
                true
            }
            Avro::Long => {
                zigzag(out, rng.next() as i64 >> rng.below(63));
                true
            }
            Avro::Float => {
                out.extend_from_slice(&(rng.below(10_000) as f32 / 7.0).to_le_bytes());
                true
            }
            Avro::Double => {
                out.extend_from_slice(&(rng.below(1 << 40) as f64 / 3.0).to_le_bytes());
                true
            }
            Avro::Bytes | Avro::String => {
                let n = rng.below(6);
                zigzag(out, n as i64);
                for _ in 0..n {
                    out.push(b'a' + rng.below(26) as u8);
                }
                true
            }
            Avro::Array(item) | Avro::Map(item) => {
                let n = if depth > 3 { 0 } else { rng.below(3) };
                if n > 0 {
                    zigzag(out, n as i64);
                    for _ in 0..n {
                        if matches!(p, Avro::Map(_)) {
                            zigzag(out, 1);
                            out.push(b'k' + rng.below(3) as u8);
                        }
                        if !generate(s, item, rng, out, depth + 1) {
                            return false;
                        }
                    }
                }
                zigzag(out, 0);
                true
            }
            Avro::Union(branches) if branches.is_empty() => false,
            Avro::Union(branches) => {
                // Deep in a recursive schema, take the first (in practice, null) branch.
                let i = if depth > 3 {
                    0
                } else {
                    rng.below(branches.len() as u64) as usize
                };
                zigzag(out, i as i64);
                generate(s, &branches[i], rng, out, depth + 1)
            }
            Avro::Ref(_) => unreachable!("resolved"),
        },
        Resolved::Named(n) => match &n.def {
            Named::Fixed { size } => {
                (0..*size).for_each(|_| out.push(rng.below(256) as u8));
                true
            }
            Named::Enum { symbols, .. } => {
                zigzag(out, rng.below(symbols.len() as u64) as i64);
                true
            }
            Named::Record { fields } => fields
                .iter()
                .all(|f| generate(s, &f.schema, rng, out, depth + 1)),
        },
    }
}

/// Every path through the reader's records (and record branches of unions) to a field, and
/// the root itself.
fn paths(s: &Schema, a: &Avro, prefix: &mut Vec<Box<str>>, out: &mut Vec<Path>, depth: u32) {
    out.push(prefix.clone().into_boxed_slice());
    if depth > 3 {
        return;
    }
    let branches: Vec<&Avro> = match a {
        Avro::Union(b) => b.iter().collect(),
        other => vec![other],
    };
    for b in branches {
        if let Resolved::Named(NamedType {
            def: Named::Record { fields },
            ..
        }) = s.resolve(b)
        {
            for f in fields {
                prefix.push(f.name.as_str().into());
                paths(s, &f.schema, prefix, out, depth + 1);
                prefix.pop();
            }
        }
    }
}

/// True when the two decoders see the same value at a path. The reference reads a record, and
/// the logical types `apache-avro` materialises (uuid, decimal, durations), as not scalars.
fn agree(projected: Val<'_>, reference: Val<'_>) -> bool {
    match (projected, reference) {
        (Val::Missing | Val::Null, Val::Missing | Val::Null) => true,
        (_, Val::Other) => true,
        (Val::Float(a), Val::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
        (a, b) => a == b,
    }
}

struct Pair {
    name: String,
    writer: AvroSchema,
    reader: AvroSchema,
    projection: Projection,
    paths: Vec<Path>,
}

impl Pair {
    fn new(name: &str, writer: &str, reader: &str) -> Option<Pair> {
        let (Ok(writer), Ok(reader)) = (AvroSchema::parse(writer), AvroSchema::parse(reader))
        else {
            return None; // a schema apache-avro itself refuses: no reference to compare with
        };
        let mut all = Vec::new();
        paths(
            &reader.model,
            &reader.model.root,
            &mut Vec::new(),
            &mut all,
            0,
        );
        let refs: Vec<&[Box<str>]> = all.iter().map(|p| &**p).collect();
        let projection = Projection::compile(&writer.model, &reader.model, &refs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Some(Pair {
            name: name.to_string(),
            writer,
            reader,
            projection,
            paths: all,
        })
    }

    fn reference(&self, body: &[u8]) -> Option<Value> {
        let mut cursor = body;
        let v = apache_avro::from_avro_datum(
            &self.writer.decoder,
            &mut cursor,
            Some(&self.reader.decoder),
        )
        .ok()?;
        cursor.is_empty().then_some(v)
    }

    /// Both decoders on `body`: the same verdict, and the same fields when both accept.
    /// `strict`: the bytes are a valid encoding, so both must accept.
    fn compare(&self, body: &[u8], strict: bool) -> Result<(), String> {
        let mine = self.projection.decode(body);
        let reference = self.reference(body);
        match (&mine, &reference) {
            (Ok(p), Some(v)) => {
                for path in &self.paths {
                    let (a, b) = (p.get(path), v.get(path));
                    if !agree(a, b) {
                        return Err(format!(
                            "{}: {:?}: projected {a:?}, reference {b:?} (bytes {body:?})",
                            self.name,
                            path.join(".")
                        ));
                    }
                }
                Ok(())
            }
            (Err(_), None) if !strict => Ok(()),
            (mine, reference) => Err(format!(
                "{}: projection {:?}, reference {} (bytes {body:?})",
                self.name,
                mine.as_ref().map(|_| "accepts"),
                if reference.is_some() {
                    "accepts"
                } else {
                    "rejects"
                },
            )),
        }
    }
}

/// Pairs Java resolves and `apache-avro` 0.21 refuses to: a logical type read as its underlying
/// type, and a field renamed through a reader alias. The projection follows Java (and the
/// compatibility checker, which accepts these pairs).
fn reference_cannot_resolve(name: &str) -> bool {
    name.starts_with("rs_int<-logical_")
        || name.starts_with("rs_long<-logical_")
        || name.contains("changing field name with alias")
}

fn fixture_pairs() -> Vec<Pair> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/avro/avro_compat_cases.json");
    let cases: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cases
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["reader_can_read_writer"] == Json::Bool(true))
        .filter_map(|c| {
            Pair::new(
                c["name"].as_str().unwrap(),
                &c["writer"].to_string(),
                &c["reader"].to_string(),
            )
        })
        .collect()
}

/// Random valid records for every compatible conformance pair: both decoders accept them and
/// read every field path alike.
#[test]
fn agrees_with_apache_avro_on_every_compatible_conformance_pair() {
    let pairs = fixture_pairs();
    assert!(pairs.len() >= 100, "only {} pairs parsed", pairs.len());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    for pair in &pairs {
        for _ in 0..50 {
            let mut body = Vec::new();
            if !generate(
                &pair.writer.model,
                &pair.writer.model.root,
                &mut rng,
                &mut body,
                0,
            ) {
                break; // the writer type has no finite values
            }
            if reference_cannot_resolve(&pair.name) {
                assert!(pair.projection.decode(&body).is_ok(), "{}", pair.name);
                continue;
            }
            if let Err(e) = pair.compare(&body, true) {
                failures.push(e);
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const EVERYTHING: &str = r#"{"type":"record","name":"E","namespace":"t","fields":[
  {"name":"n","type":"null"},
  {"name":"b","type":"boolean"},
  {"name":"i","type":"int"},
  {"name":"l","type":"long"},
  {"name":"f","type":"float"},
  {"name":"d","type":"double"},
  {"name":"by","type":"bytes"},
  {"name":"s","type":"string"},
  {"name":"fx","type":{"type":"fixed","name":"F4","size":4}},
  {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}},
  {"name":"a","type":{"type":"array","items":"long"}},
  {"name":"m","type":{"type":"map","values":"string"}},
  {"name":"u","type":["null","string","double"]},
  {"name":"r","type":["null",{"type":"record","name":"Inner","fields":[
     {"name":"x","type":"int"},{"name":"next","type":["null","Inner"]}]}]},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}
]}"#;

/// Every type, through byte flips, truncations and insertions: the projection and the reference
/// reject the same records, and read the survivors alike.
#[test]
fn mutated_records_get_the_same_verdict_from_both_decoders() {
    let pair = Pair::new("everything", EVERYTHING, EVERYTHING).unwrap();
    let mut rng = Rng(42);
    let mut failures = Vec::new();
    let mut rejected = 0;
    for _ in 0..20_000 {
        let mut body = Vec::new();
        assert!(generate(
            &pair.writer.model,
            &pair.writer.model.root,
            &mut rng,
            &mut body,
            0
        ));
        match rng.below(3) {
            0 => {
                let i = rng.below(body.len() as u64) as usize;
                body[i] ^= 1 << rng.below(8);
            }
            1 => body.truncate(rng.below(body.len() as u64) as usize),
            _ => {
                let i = rng.below(body.len() as u64 + 1) as usize;
                body.insert(i, rng.below(256) as u8);
            }
        }
        rejected += usize::from(pair.projection.decode(&body).is_err());
        if let Err(e) = pair.compare(&body, false) {
            failures.push(e);
        }
    }
    failures.truncate(10);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        rejected > 5_000,
        "the mutations should break many records: {rejected}"
    );
}

fn p(s: &str) -> Path {
    s.split('.').map(Into::into).collect()
}

fn schema(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

#[test]
fn resolution_promotes_defaults_renames_and_maps_enums() {
    let writer = schema(
        r#"{"type":"record","name":"R","fields":[
        {"name":"i","type":"int"},{"name":"l","type":"long"},{"name":"f","type":"float"},
        {"name":"old_name","type":"string"},{"name":"raw","type":"bytes"},
        {"name":"e","type":{"type":"enum","name":"E","symbols":["A","GONE"]}},
        {"name":"dropped","type":"string"}]}"#,
    );
    let reader = schema(
        r#"{"type":"record","name":"R","fields":[
        {"name":"i","type":"double"},{"name":"l","type":"float"},{"name":"f","type":"double"},
        {"name":"new_name","aliases":["old_name"],"type":"string"},{"name":"raw","type":"string"},
        {"name":"e","type":{"type":"enum","name":"E","symbols":["A","OTHER"],"default":"OTHER"}},
        {"name":"added","type":"long","default":7},
        {"name":"nested","type":{"type":"record","name":"N","fields":[{"name":"z","type":"double"}]},
         "default":{"z":2}}]}"#,
    );
    crate::schema::avro_compat::can_read(&reader, &writer).unwrap();
    let names = [
        "i", "l", "f", "new_name", "raw", "e", "added", "nested.z", "dropped",
    ];
    let paths: Vec<Path> = names.iter().map(|n| p(n)).collect();
    let refs: Vec<&[Box<str>]> = paths.iter().map(|p| &**p).collect();
    let projection = Projection::compile(&writer, &reader, &refs).unwrap();
    let mut body = Vec::new();
    zigzag(&mut body, -3); // i
    zigzag(&mut body, 1 << 40); // l
    body.extend_from_slice(&1.5f32.to_le_bytes());
    zigzag(&mut body, 2);
    body.extend_from_slice(b"hi");
    zigzag(&mut body, 3);
    body.extend_from_slice(b"raw");
    zigzag(&mut body, 1); // GONE
    zigzag(&mut body, 1);
    body.push(b'x');
    let decoded = projection.decode(&body).unwrap();
    let at = |path: &str| decoded.get(&p(path));
    assert_eq!(at("i"), Val::Float(-3.0));
    assert_eq!(at("l"), Val::Float((1i64 << 40) as f64));
    assert_eq!(at("f"), Val::Float(1.5));
    assert_eq!(at("new_name"), Val::Str("hi"));
    assert_eq!(at("raw"), Val::Str("raw"));
    assert_eq!(at("e"), Val::Str("OTHER"));
    assert_eq!(at("added"), Val::Int(7));
    assert_eq!(at("nested.z"), Val::Float(2.0));
    assert_eq!(
        at("dropped"),
        Val::Missing,
        "a writer field the reader lacks is invisible"
    );
    // bytes read as a string must be UTF-8
    let mut bad = body.clone();
    let at = bad.windows(3).position(|w| w == b"raw").unwrap();
    bad[at] = 0xff;
    assert_eq!(projection.decode(&bad).err(), Some("a string is not UTF-8"));
}

#[test]
fn hostile_records_are_refused_without_exhausting_anything() {
    let list = schema(
        r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]},
        {"name":"nulls","type":{"type":"array","items":"null"}}]}"#,
    );
    let projection = Projection::compile(&list, &list, &[]).unwrap();
    // 10,000 levels of `next`: refused by depth, not by the stack.
    let mut deep = vec![2u8; 10_000];
    deep.push(0);
    assert_eq!(
        projection.decode(&deep).err(),
        Some("the value nests too deeply")
    );
    // An array of nulls claiming 2^62 items: refused without looping.
    let mut nulls = vec![0u8];
    zigzag(&mut nulls, 1 << 62);
    zigzag(&mut nulls, 0);
    assert_eq!(
        projection.decode(&nulls).err(),
        Some("a block claims too many items")
    );
    // A long array whose count exceeds the bytes left.
    let longs = schema(r#"{"type":"array","items":"long"}"#);
    let projection = Projection::compile(&longs, &longs, &[]).unwrap();
    let mut claim = Vec::new();
    zigzag(&mut claim, 1 << 40);
    assert_eq!(
        projection.decode(&claim).err(),
        Some("a block count exceeds the bytes left")
    );
    // An 11-byte varint, a negative length, a boolean of 2.
    let long = schema(r#""long""#);
    let projection = Projection::compile(&long, &long, &[]).unwrap();
    assert!(projection.decode(&[0xff; 11]).is_err());
    let string = schema(r#""string""#);
    let projection = Projection::compile(&string, &string, &[]).unwrap();
    assert_eq!(projection.decode(&[1]).err(), Some("a length is negative"));
    let boolean = schema(r#""boolean""#);
    let projection = Projection::compile(&boolean, &boolean, &[]).unwrap();
    assert_eq!(
        projection.decode(&[2]).err(),
        Some("a boolean is neither 0 nor 1")
    );
    assert_eq!(
        projection.decode(&[1, 0]).err(),
        Some("bytes are left over after the record")
    );
}

#[test]
fn spans_find_string_and_bytes_values_through_unions_renames_and_padded_prefixes() {
    let writer = schema(
        r#"{"type":"record","name":"R","fields":[
        {"name":"id","type":"long"},
        {"name":"old_email","type":["null","string"]},
        {"name":"blob","type":"bytes"},
        {"name":"inner","type":{"type":"record","name":"I","fields":[{"name":"ssn","type":"string"}]}},
        {"name":"n","type":"int"}]}"#,
    );
    let reader = schema(
        r#"{"type":"record","name":"R","fields":[
        {"name":"id","type":"long"},
        {"name":"email","aliases":["old_email"],"type":["null","string"]},
        {"name":"blob","type":"bytes"},
        {"name":"inner","type":{"type":"record","name":"I","fields":[{"name":"ssn","type":"string"}]}},
        {"name":"n","type":"int"},
        {"name":"added","type":"string","default":"d"}]}"#,
    );
    let paths: Vec<Path> = ["email", "blob", "inner.ssn", "n", "added"]
        .iter()
        .map(|n| p(n))
        .collect();
    let refs: Vec<&[Box<str>]> = paths.iter().map(|p| &**p).collect();
    let projection = Projection::compile(&writer, &reader, &refs).unwrap();
    let record = |email: Option<&[u8]>, padded: bool| {
        let mut body = Vec::new();
        zigzag(&mut body, 42);
        match email {
            None => zigzag(&mut body, 0),
            Some(e) => {
                zigzag(&mut body, 1);
                if padded {
                    // A length written in two bytes where one would do: still valid Avro.
                    body.extend_from_slice(&[((e.len() as u8) << 1) | 0x80, 0]);
                } else {
                    zigzag(&mut body, e.len() as i64);
                }
                body.extend_from_slice(e);
            }
        }
        zigzag(&mut body, 3);
        body.extend_from_slice(&[0, 1, 2]);
        zigzag(&mut body, 11);
        body.extend_from_slice(b"123-45-6789");
        zigzag(&mut body, 5);
        body
    };
    let mut out = Vec::new();
    let body = record(Some(b"a@b.c"), false);
    projection.spans(&body, &mut out).unwrap();
    let text = |s: Option<Span>| s.map(|s| &body[s.bytes..s.end]);
    assert_eq!(
        text(out[projection.slot(&p("email")).unwrap()]),
        Some(&b"a@b.c"[..])
    );
    assert_eq!(text(out[1]), Some(&[0u8, 1, 2][..]));
    assert_eq!(text(out[2]), Some(&b"123-45-6789"[..]));
    assert_eq!(out[3], None, "an int has no span");
    assert_eq!(out[4], None, "a reader default is not in the record");
    let email = out[0].unwrap();
    assert_eq!(email.bytes - email.start, 1, "the prefix is one byte");
    assert_eq!(body[email.start], 10, "the prefix is the zigzag length");

    let padded = record(Some(b"a@b.c"), true);
    projection.spans(&padded, &mut out).unwrap();
    let email = out[0].unwrap();
    assert_eq!(
        (email.bytes - email.start, &padded[email.bytes..email.end]),
        (2, &b"a@b.c"[..])
    );

    let null = record(None, false);
    projection.spans(&null, &mut out).unwrap();
    assert_eq!(out[0], None, "a null has no span");
    assert!(out[2].is_some());

    // What decode refuses, spans refuses.
    let mut bad = body.clone();
    bad.push(0);
    assert!(projection.spans(&bad, &mut out).is_err());
    assert!(projection.spans(&body[..body.len() - 3], &mut out).is_err());
}
