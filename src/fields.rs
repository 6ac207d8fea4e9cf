//! What a rule reads from a record: `Val`, a borrowed scalar, and `RecordFields`, the view every
//! decoded form of a record offers (a `serde_json::Value`, the JSON and Avro projections, a
//! whole Avro value). Its own module so that `schema` (which implements the view) and `rules`
//! (which reads it, and type-checks against `schema::shape`) do not import each other.

/// A borrowed scalar read from a record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// The field is absent (treated as null).
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// An array, map or record: not a scalar.
    Other,
}

/// A decoded record whose fields rules can read.
pub trait RecordFields {
    /// The value at a dotted path from the record root.
    fn get(&self, path: &[Box<str>]) -> Val<'_>;
    /// The whole record as a CEL value (used by CEL rules only).
    fn to_cel(&self) -> cel::Value;
}

impl RecordFields for serde_json::Value {
    fn get(&self, path: &[Box<str>]) -> Val<'_> {
        let mut v = self;
        for segment in path {
            match v.as_object().and_then(|o| o.get(&**segment)) {
                Some(next) => v = next,
                None => return Val::Missing,
            }
        }
        match v {
            serde_json::Value::Null => Val::Null,
            serde_json::Value::Bool(b) => Val::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => n.as_f64().map(Val::Float).unwrap_or(Val::Other),
            },
            serde_json::Value::String(s) => Val::Str(s),
            _ => Val::Other,
        }
    }

    fn to_cel(&self) -> cel::Value {
        cel::to_value(self).unwrap_or(cel::Value::Null)
    }
}
