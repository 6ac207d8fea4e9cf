//! The fast path for JSON contracts: one pass of serde_json's borrowing deserializer over a
//! record value that checks it against the contract's Avro record shape as it reads, and keeps
//! only the scalars the rules and the completeness measure read. No `serde_json::Value` tree,
//! no allocation for a valid record (a string with escapes aside).
//!
//! It is compiled at policy load for a `format: json` contract whose schema is an Avro record
//! and whose rules all name their fields (SQL rules; CEL reads the whole record). Its verdict is
//! only ever "valid, and here are the fields" or "take the full path": a value it cannot accept
//! (not JSON, breaks the shape, a union it cannot resolve in one pass, a duplicate key) goes
//! through `serde_json::Value` and `JsonCheck`, which stay the reference and write the message.
//! So the two paths cannot disagree on a verdict: the projection accepts a subset of what
//! `JsonCheck` accepts (`tests::agrees_with_the_full_path`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

use super::shape::{Field, Shape};
use crate::fields::{RecordFields, Val};

use super::avro_project::Path as FieldPath;

/// A contract's compiled JSON projection.
#[derive(Debug)]
pub struct JsonProjection {
    shape: Shape,
    paths: Vec<FieldPath>,
    /// Which paths end at, or pass through, each field of the root record.
    plan: RecordPlan,
}

/// For one record on the paths: per field (in schema order), the paths that end at it and the
/// plan of the record inside it, when a path goes on. Compiled once, so reading a record never
/// compares a path.
#[derive(Debug, Default)]
struct RecordPlan {
    fields: Vec<FieldPlan>,
}

#[derive(Debug, Default)]
struct FieldPlan {
    ends: SmallVec<[u8; 2]>,
    inner: Option<Box<RecordPlan>>,
}

impl RecordPlan {
    /// `None` when a path names a field the shape does not have (rules are type-checked at
    /// load, so this does not happen; the full path serves such a contract anyway).
    fn compile(fields: &[Field], paths: &[(u8, &[Box<str>])]) -> Option<RecordPlan> {
        let mut plan = RecordPlan {
            fields: fields.iter().map(|_| FieldPlan::default()).collect(),
        };
        for (i, f) in fields.iter().enumerate() {
            let here: Vec<(u8, &[Box<str>])> = paths
                .iter()
                .filter(|(_, p)| &*p[0] == f.name.as_str())
                .map(|&(n, p)| (n, &p[1..]))
                .collect();
            for &(n, rest) in &here {
                if rest.is_empty() {
                    plan.fields[i].ends.push(n);
                }
            }
            let deeper: Vec<(u8, &[Box<str>])> =
                here.into_iter().filter(|(_, p)| !p.is_empty()).collect();
            if !deeper.is_empty() {
                let inner = f.shape.fields()?;
                plan.fields[i].inner = Some(Box::new(RecordPlan::compile(inner, &deeper)?));
            }
        }
        if paths
            .iter()
            .any(|(_, p)| !fields.iter().any(|f| f.name.as_str() == &*p[0]))
        {
            return None;
        }
        Some(plan)
    }
}

/// One value read for a path.
#[derive(Debug, Clone, PartialEq)]
enum Slot<'de> {
    Missing,
    Val(Val<'de>),
    /// A string with escapes, unescaped.
    Owned(String),
}

/// A projected record: the values of the projection's paths.
#[derive(Debug)]
pub struct Projected<'p, 'de> {
    paths: &'p [FieldPath],
    slots: SmallVec<[Slot<'de>; 8]>,
}

impl JsonProjection {
    /// `None` when the shape is not a record, or there are more paths than the projection
    /// tracks (the full path serves such contracts).
    pub fn new(shape: &Shape, paths: Vec<FieldPath>) -> Option<Self> {
        match shape {
            Shape::Record(fields) if fields.len() <= 64 && paths.len() <= 64 => {
                let numbered: Vec<(u8, &[Box<str>])> = paths
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.is_empty())
                    .map(|(i, p)| (i as u8, &**p))
                    .collect();
                let plan = RecordPlan::compile(fields, &numbered)?;
                Some(Self {
                    shape: shape.clone(),
                    paths,
                    plan,
                })
            }
            _ => None,
        }
    }

    /// The record, when `value` is JSON that conforms to the shape; `None` sends the value down
    /// the full path.
    pub fn project<'p, 'de>(&'p self, value: &'de [u8]) -> Option<Projected<'p, 'de>> {
        let mut slots: SmallVec<[Slot<'de>; 8]> = SmallVec::new();
        slots.resize(self.paths.len(), Slot::Missing);
        // One UTF-8 check of the whole value, instead of one per string.
        let text = std::str::from_utf8(value).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = Node {
            shape: &self.shape,
            plan: Some(&self.plan),
            slots: &mut slots,
        };
        seed.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(Projected {
            paths: &self.paths,
            slots,
        })
    }
}

impl RecordFields for Projected<'_, '_> {
    fn get(&self, path: &[Box<str>]) -> Val<'_> {
        match self.paths.iter().position(|p| **p == *path) {
            Some(i) => match &self.slots[i] {
                Slot::Missing => Val::Missing,
                Slot::Val(v) => *v,
                Slot::Owned(s) => Val::Str(s),
            },
            // A path the projection was not built for: the contract's paths are all of them.
            None => Val::Missing,
        }
    }

    /// Only SQL rules read a projected record (a contract with a CEL rule has no projection).
    fn to_cel(&self) -> cel::Value {
        cel::Value::Null
    }
}

/// Why the projection gave up: never shown, the full path writes the message.
#[derive(Debug)]
struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not projected")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

/// What one value was, for the record that holds it.
enum Got<'de> {
    Val(Val<'de>),
    Owned(String),
}

/// One value to read with its shape, and the plan of the record it is (or holds, through a
/// union), when paths go into it.
struct Node<'s, 'a, 'de> {
    shape: &'s Shape,
    plan: Option<&'s RecordPlan>,
    slots: &'a mut SmallVec<[Slot<'de>; 8]>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_, 'de> {
    type Value = Got<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Got<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

/// The branch of a union (or the shape itself) that takes a JSON value of one kind; `None`
/// when none does. Two branches of the kind (a record and a map) cannot be told apart in one
/// pass: give up.
fn branch<E: de::Error>(shape: &Shape, fits: impl Fn(&Shape) -> bool) -> Result<&Shape, E> {
    match shape {
        Shape::Union(branches) => {
            let mut found = branches.iter().filter(|b| fits(b));
            match (found.next(), found.next()) {
                (Some(b), None) => Ok(b),
                (Some(b), Some(_)) if matches!(b, Shape::Any) => Ok(b),
                _ => Err(E::custom(GiveUp)),
            }
        }
        s if fits(s) => Ok(s),
        _ => Err(E::custom(GiveUp)),
    }
}

fn scalar_ok<E: de::Error>(shape: &Shape, fits: impl Fn(&Shape) -> bool) -> Result<(), E> {
    let ok = match shape {
        Shape::Union(branches) => branches.iter().any(|b| fits(b) || matches!(b, Shape::Any)),
        Shape::Any => true,
        s => fits(s),
    };
    if ok {
        Ok(())
    } else {
        Err(E::custom(GiveUp))
    }
}

fn str_ok(shape: &Shape, s: &str) -> bool {
    match shape {
        Shape::String | Shape::Bytes => true,
        Shape::Enum(symbols) => symbols.iter().any(|x| x == s),
        _ => false,
    }
}

impl<'de> Visitor<'de> for Node<'_, '_, 'de> {
    type Value = Got<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the contract's shape")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Got<'de>, E> {
        scalar_ok(self.shape, |s| matches!(s, Shape::Null))?;
        Ok(Got::Val(Val::Null))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Got<'de>, E> {
        scalar_ok(self.shape, |s| matches!(s, Shape::Bool))?;
        Ok(Got::Val(Val::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Got<'de>, E> {
        scalar_ok(self.shape, |s| matches!(s, Shape::Int | Shape::Float))?;
        Ok(Got::Val(Val::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Got<'de>, E> {
        scalar_ok(self.shape, |s| matches!(s, Shape::Int | Shape::Float))?;
        // As serde_json::Value reads it: an integer when it fits an i64, else a float.
        Ok(Got::Val(match i64::try_from(v) {
            Ok(i) => Val::Int(i),
            Err(_) => Val::Float(v as f64),
        }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Got<'de>, E> {
        scalar_ok(self.shape, |s| matches!(s, Shape::Float))?;
        Ok(Got::Val(Val::Float(v)))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Got<'de>, E> {
        scalar_ok(self.shape, |s| str_ok(s, v))?;
        Ok(Got::Val(Val::Str(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Got<'de>, E> {
        scalar_ok(self.shape, |s| str_ok(s, v))?;
        Ok(Got::Owned(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Got<'de>, A::Error> {
        let shape = branch(self.shape, |s| matches!(s, Shape::Array(_) | Shape::Any))?;
        match shape {
            Shape::Array(items) => {
                while seq
                    .next_element_seed(Node {
                        shape: items,
                        plan: None,
                        slots: &mut *self.slots,
                    })?
                    .is_some()
                {}
            }
            _ => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(Got::Val(Val::Other))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Got<'de>, A::Error> {
        let shape = branch(self.shape, |s| {
            matches!(s, Shape::Record(_) | Shape::Map(_) | Shape::Any)
        })?;
        match shape {
            Shape::Record(fields) => {
                record(fields, self.plan, self.slots, map)?;
            }
            Shape::Map(values) => {
                while map.next_key::<IgnoredAny>()?.is_some() {
                    map.next_value_seed(Node {
                        shape: values,
                        plan: None,
                        slots: &mut *self.slots,
                    })?;
                }
            }
            _ => while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {},
        }
        Ok(Got::Val(Val::Other))
    }
}

/// A record's fields: each checked with its shape, the planned paths' values kept, every field
/// without a default present, no field twice.
fn record<'de, A: MapAccess<'de>>(
    fields: &[Field],
    plan: Option<&RecordPlan>,
    slots: &mut SmallVec<[Slot<'de>; 8]>,
    mut map: A,
) -> Result<(), A::Error> {
    let mut seen: u64 = 0;
    // Producers write a record's fields in schema order: try the next one first.
    let mut next = 0;
    while let Some(key) = map.next_key_seed(Key)? {
        let key = key.as_str();
        let i = if fields.get(next).is_some_and(|f| f.name == key) {
            next
        } else if let Some(i) = fields.iter().position(|f| f.name == key) {
            i
        } else {
            map.next_value::<IgnoredAny>()?;
            continue;
        };
        next = i + 1;
        if seen & (1 << i) != 0 {
            // serde_json::Value keeps the last copy; the full path judges that.
            return Err(de::Error::custom(GiveUp));
        }
        seen |= 1 << i;
        let field = plan.map(|p| &p.fields[i]);
        let got = map.next_value_seed(Node {
            shape: &fields[i].shape,
            plan: field.and_then(|f| f.inner.as_deref()),
            slots: &mut *slots,
        })?;
        for &p in field.map_or(&[][..], |f| &f.ends[..]) {
            slots[p as usize] = match &got {
                Got::Val(v) => Slot::Val(*v),
                Got::Owned(s) => Slot::Owned(s.clone()),
            };
        }
    }
    for (i, f) in fields.iter().enumerate() {
        if seen & (1 << i) == 0 && !(f.optional || f.shape.accepts_null()) {
            return Err(de::Error::custom(GiveUp));
        }
    }
    Ok(())
}

/// A record key, borrowed from the input unless it has escapes.
enum KeyStr<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl KeyStr<'_> {
    fn as_str(&self) -> &str {
        match self {
            KeyStr::Borrowed(s) => s,
            KeyStr::Owned(s) => s,
        }
    }
}

struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = KeyStr<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyStr<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = KeyStr<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyStr<'de>, E> {
        Ok(KeyStr::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyStr<'de>, E> {
        Ok(KeyStr::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::json::JsonCheck;

    const ORDER: &str = r#"{"type": "record", "name": "Order", "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "customer_id", "type": ["null", "string"]},
        {"name": "order_total", "type": "double"},
        {"name": "items", "type": "int"},
        {"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["PAID", "PLACED"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "attrs", "type": {"type": "map", "values": "long"}, "default": {}},
        {"name": "address", "type": ["null", {"type": "record", "name": "A", "fields": [
            {"name": "country", "type": "string"}, {"name": "zip", "type": ["null", "string"]}]}],
         "default": null}
    ]}"#;

    fn path(p: &str) -> FieldPath {
        p.split('.').map(Box::from).collect()
    }

    fn projection() -> (JsonProjection, JsonCheck) {
        let (check, shape) = JsonCheck::from_schema_text(ORDER).unwrap();
        let paths = [
            "order_id",
            "customer_id",
            "order_total",
            "status",
            "address.country",
        ]
        .map(path)
        .to_vec();
        (JsonProjection::new(&shape, paths).unwrap(), check)
    }

    #[test]
    fn reads_the_paths_borrowed_and_nested() {
        let (p, _) = projection();
        let v = br#"{"order_id": "o-1", "customer_id": null, "order_total": 12.5, "items": 3,
            "status": "PAID", "extra": {"deep": [1, 2, {"x": null}]},
            "address": {"country": "FR", "zip": "75001"}}"#;
        let r = p.project(v).unwrap();
        assert_eq!(r.get(&path("order_id")), Val::Str("o-1"));
        assert_eq!(r.get(&path("customer_id")), Val::Null);
        assert_eq!(r.get(&path("order_total")), Val::Float(12.5));
        assert_eq!(r.get(&path("status")), Val::Str("PAID"));
        assert_eq!(r.get(&path("address.country")), Val::Str("FR"));
        let r = p
            .project(
                br#"{"order_id": "o-\u00e9", "order_total": 1, "items": 1, "status": "PLACED"}"#,
            )
            .unwrap();
        assert_eq!(
            r.get(&path("order_id")),
            Val::Str("o-é"),
            "escapes are unescaped"
        );
        assert_eq!(r.get(&path("order_total")), Val::Int(1));
        assert_eq!(r.get(&path("customer_id")), Val::Missing);
        assert_eq!(r.get(&path("address.country")), Val::Missing);
    }

    /// Every input: the projection accepts only what the full path accepts, and reads the same
    /// values; it accepts the plain valid records (else it would be no fast path).
    #[test]
    fn agrees_with_the_full_path() {
        let (p, check) = projection();
        let cases: &[(&[u8], bool)] = &[
            (br#"{"order_id": "a", "order_total": 1.5, "items": 2, "status": "PAID"}"#, true),
            (br#"{"order_id": "a", "order_total": 1.5, "items": 2, "status": "PAID", "tags": ["x"], "attrs": {"k": 1}}"#, true),
            (br#"{"order_id": "a", "order_total": 1, "items": 18446744073709551615, "status": "PAID"}"#, true),
            (br#"{"order_id": "a", "order_total": 1.5, "items": 2.5, "status": "PAID"}"#, false),
            (br#"{"order_id": "a", "order_total": "1", "items": 2, "status": "PAID"}"#, false),
            (br#"{"order_id": "a", "order_total": 1, "items": 2, "status": "SHIPPED"}"#, false),
            (br#"{"order_total": 1, "items": 2, "status": "PAID"}"#, false),
            (br#"{"order_id": "a", "order_total": 1, "items": 2, "status": "PAID", "tags": [1]}"#, false),
            (br#"{"order_id": "a", "order_total": 1, "items": 2, "status": "PAID", "attrs": {"k": "v"}}"#, false),
            (br#"{"order_id": "a", "order_total": 1, "items": 2, "status": "PAID", "address": {"zip": null}}"#, false),
            (br#"{"order_id": "a", "order_total": 1, "items": 2, "status": "PAID", "address": {"country": "FR"}}"#, true),
            (br#"{"order_id": "a", "order_total": 1, "items": 2, "status": "PAID"} x"#, false),
            (br#"{"order_id": "a", "order_total": 1, "items": 2, "status": "PAID""#, false),
            (br#"[1, 2]"#, false),
            (br#"null"#, false),
            (b"\xff\xfe", false),
        ];
        for (value, valid) in cases {
            let full = serde_json::from_slice::<serde_json::Value>(value)
                .ok()
                .filter(|v| check.check(v).is_ok());
            assert_eq!(full.is_some(), *valid, "{}", String::from_utf8_lossy(value));
            match p.project(value) {
                Some(r) => {
                    let full = full.expect("the projection accepted what the full path refuses");
                    for q in &p.paths {
                        assert_eq!(r.get(q), RecordFields::get(&full, q), "{q:?}");
                    }
                }
                None => assert!(
                    !valid,
                    "a valid record left the fast path: {:?}",
                    String::from_utf8_lossy(value)
                ),
            }
        }
    }

    #[test]
    fn a_duplicate_key_takes_the_full_path() {
        let (p, _) = projection();
        let v =
            br#"{"order_id": 1, "order_id": "a", "order_total": 1, "items": 2, "status": "PAID"}"#;
        assert!(p.project(v).is_none());
    }

    #[test]
    fn only_records_are_projected() {
        assert!(JsonProjection::new(&Shape::String, vec![]).is_none());
    }
}
