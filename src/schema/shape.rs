//! The structural shape of a record, from an Avro schema or a JSON Schema.

use serde_json::Value as Json;

use super::avro_compat::{self, Avro, Named};
use super::error::{FieldError, SchemaError};

/// A record's structure, as far as rules and JSON validation need it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Null,
    Bool,
    /// Avro int/long, JSON Schema integer.
    Int,
    /// Avro float/double, JSON Schema number.
    Float,
    String,
    /// Avro bytes/fixed (a string in JSON).
    Bytes,
    Enum(Vec<String>),
    Record(Vec<Field>),
    Array(Box<Shape>),
    Map(Box<Shape>),
    Union(Vec<Shape>),
    /// Anything (an unconstrained JSON Schema, a recursive reference).
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub shape: Shape,
    /// May be absent: it has a default (Avro) or is not `required` (JSON Schema).
    pub optional: bool,
}

/// What a rule can do with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    String,
    Bool,
    Record,
    /// Arrays, maps, bytes, mixed unions: not comparable by rules.
    Other,
    /// Unknown (no schema, or `Any`): checked at run time only.
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldType {
    pub kind: Kind,
    pub nullable: bool,
}

impl Shape {
    /// Parses an Avro schema (JSON text), through the one Avro parser in `avro_compat`.
    pub fn from_avro(text: &str) -> Result<Shape, SchemaError> {
        let schema = avro_compat::Schema::parse_str(text)?;
        Ok(from_model(&schema, &schema.root, &mut Vec::new()))
    }

    /// Parses a JSON Schema document (JSON text).
    pub fn from_json_schema(json: &Json) -> Shape {
        json_schema_shape(json)
    }

    /// A short type name for people: `string`, `int`, `["null","string"]` → `string?`, ...
    pub fn type_name(&self) -> String {
        match self {
            Shape::Null => "null".into(),
            Shape::Bool => "boolean".into(),
            Shape::Int => "int".into(),
            Shape::Float => "number".into(),
            Shape::String => "string".into(),
            Shape::Bytes => "bytes".into(),
            Shape::Enum(symbols) => format!("enum({})", symbols.join("|")),
            Shape::Record(_) => "record".into(),
            Shape::Array(items) => format!("array<{}>", items.type_name()),
            Shape::Map(values) => format!("map<{}>", values.type_name()),
            Shape::Any => "any".into(),
            Shape::Union(branches) => {
                let non_null: Vec<String> = branches
                    .iter()
                    .filter(|b| **b != Shape::Null)
                    .map(Shape::type_name)
                    .collect();
                let nullable = non_null.len() < branches.len();
                let joined = non_null.join("|");
                if nullable {
                    format!("{joined}?")
                } else {
                    joined
                }
            }
        }
    }

    /// True when `value` null is acceptable.
    pub fn accepts_null(&self) -> bool {
        match self {
            Shape::Null | Shape::Any => true,
            Shape::Union(branches) => branches.iter().any(Shape::accepts_null),
            _ => false,
        }
    }

    /// The record fields, when this is a record (or a nullable record).
    pub fn fields(&self) -> Option<&[Field]> {
        match self {
            Shape::Record(f) => Some(f),
            Shape::Union(b) => {
                let mut non_null = b.iter().filter(|s| **s != Shape::Null);
                match (non_null.next(), non_null.next()) {
                    (Some(s), None) => s.fields(),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The type of the field at `path` (dotted, from the record root).
    pub fn lookup(&self, path: &[&str]) -> Result<FieldType, FieldError> {
        let mut shape = self;
        let mut nullable = false;
        for (i, segment) in path.iter().enumerate() {
            if *shape == Shape::Any {
                return Ok(FieldType {
                    kind: Kind::Dynamic,
                    nullable: true,
                });
            }
            let fields = shape.fields().ok_or_else(|| FieldError::NotRecord {
                parent: path[..i].join("."),
                field: segment.to_string(),
            })?;
            let field = fields
                .iter()
                .find(|f| f.name == *segment)
                .ok_or_else(|| match i {
                    0 => FieldError::NoTopField(segment.to_string()),
                    _ => FieldError::NoField {
                        parent: path[..i].join("."),
                        field: segment.to_string(),
                    },
                })?;
            nullable |= field.optional || shape.accepts_null() || field.shape.accepts_null();
            shape = &field.shape;
        }
        Ok(FieldType {
            kind: shape.kind(),
            nullable: nullable || shape.accepts_null(),
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Shape::Int | Shape::Float => Kind::Number,
            Shape::String | Shape::Enum(_) => Kind::String,
            Shape::Bool => Kind::Bool,
            Shape::Record(_) => Kind::Record,
            Shape::Any => Kind::Dynamic,
            Shape::Union(b) => {
                let kinds: Vec<Kind> = b
                    .iter()
                    .filter(|s| **s != Shape::Null)
                    .map(Shape::kind)
                    .collect();
                match kinds.as_slice() {
                    [k] => *k,
                    ks if !ks.is_empty() && ks.iter().all(|k| *k == Kind::Number) => Kind::Number,
                    _ => Kind::Other,
                }
            }
            _ => Kind::Other,
        }
    }
}

/// Converts the Avro model; a named type met again inside itself (recursion) becomes `Any`.
fn from_model(schema: &avro_compat::Schema, a: &Avro, visiting: &mut Vec<String>) -> Shape {
    match a {
        Avro::Null => Shape::Null,
        Avro::Boolean => Shape::Bool,
        Avro::Int | Avro::Long => Shape::Int,
        Avro::Float | Avro::Double => Shape::Float,
        Avro::Bytes => Shape::Bytes,
        Avro::String => Shape::String,
        Avro::Array(items) => Shape::Array(Box::new(from_model(schema, items, visiting))),
        Avro::Map(values) => Shape::Map(Box::new(from_model(schema, values, visiting))),
        Avro::Union(branches) => Shape::Union(
            branches
                .iter()
                .map(|b| from_model(schema, b, visiting))
                .collect(),
        ),
        Avro::Ref(name) => {
            if visiting.contains(name) {
                return Shape::Any;
            }
            let Some(named) = schema.named.get(name) else {
                return Shape::Any;
            };
            match &named.def {
                Named::Fixed { .. } => Shape::Bytes,
                Named::Enum { symbols, .. } => Shape::Enum(symbols.clone()),
                Named::Record { fields } => {
                    visiting.push(name.clone());
                    let fields = fields
                        .iter()
                        .map(|f| Field {
                            name: f.name.clone(),
                            shape: from_model(schema, &f.schema, visiting),
                            optional: f.has_default,
                        })
                        .collect();
                    visiting.pop();
                    Shape::Record(fields)
                }
            }
        }
    }
}

fn json_schema_shape(json: &Json) -> Shape {
    let Some(obj) = json.as_object() else {
        return Shape::Any;
    };
    if let Some(Json::Array(symbols)) = obj.get("enum") {
        if symbols.iter().all(Json::is_string) {
            return Shape::Enum(
                symbols
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
            );
        }
        return Shape::Any;
    }
    let single = |t: &str| -> Shape {
        match t {
            "null" => Shape::Null,
            "boolean" => Shape::Bool,
            "integer" => Shape::Int,
            "number" => Shape::Float,
            "string" => Shape::String,
            "array" => Shape::Array(Box::new(
                obj.get("items")
                    .map(json_schema_shape)
                    .unwrap_or(Shape::Any),
            )),
            "object" => match obj.get("properties").and_then(Json::as_object) {
                Some(props) => {
                    let required: Vec<&str> = obj
                        .get("required")
                        .and_then(Json::as_array)
                        .map(|r| r.iter().filter_map(Json::as_str).collect())
                        .unwrap_or_default();
                    Shape::Record(
                        props
                            .iter()
                            .map(|(name, s)| Field {
                                name: name.clone(),
                                shape: json_schema_shape(s),
                                optional: !required.contains(&name.as_str()),
                            })
                            .collect(),
                    )
                }
                None => Shape::Map(Box::new(Shape::Any)),
            },
            _ => Shape::Any,
        }
    };
    match obj.get("type") {
        Some(Json::String(t)) => single(t),
        Some(Json::Array(ts)) => {
            Shape::Union(ts.iter().filter_map(Json::as_str).map(single).collect())
        }
        _ if obj.contains_key("properties") => single("object"),
        _ => Shape::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"order_id","type":"string"},
        {"name":"customer_id","type":["null","string"],"default":null},
        {"name":"order_total","type":"double"},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
        {"name":"address","type":{"type":"record","name":"Address","fields":[
            {"name":"city","type":"string"},{"name":"zip","type":["null","string"]}]}},
        {"name":"billing","type":["null","Address"],"default":null},
        {"name":"items","type":{"type":"array","items":"string"}}]}"#;

    #[test]
    fn avro_fields_resolve_with_types_and_nullability() {
        let s = Shape::from_avro(ORDER).unwrap();
        let t = |p: &[&str]| s.lookup(p).unwrap();
        assert_eq!(
            t(&["order_total"]),
            FieldType {
                kind: Kind::Number,
                nullable: false
            }
        );
        assert_eq!(
            t(&["customer_id"]),
            FieldType {
                kind: Kind::String,
                nullable: true
            }
        );
        assert_eq!(t(&["status"]).kind, Kind::String);
        assert_eq!(
            t(&["address", "city"]),
            FieldType {
                kind: Kind::String,
                nullable: false
            }
        );
        assert_eq!(
            t(&["billing", "city"]),
            FieldType {
                kind: Kind::String,
                nullable: true
            }
        );
        assert_eq!(t(&["items"]).kind, Kind::Other);
        assert_eq!(
            s.lookup(&["nope"]).unwrap_err(),
            FieldError::NoTopField("nope".into())
        );
        assert!(s
            .lookup(&["order_total", "x"])
            .unwrap_err()
            .to_string()
            .contains("not a record"));
        assert_eq!(
            s.lookup(&["address", "street"]).unwrap_err().to_string(),
            "`address` has no field `street`"
        );
    }

    #[test]
    fn json_schema_properties_and_required() {
        let j: Json = serde_json::from_str(
            r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"},
                "note":{"type":["string","null"]},"tags":{"type":"array"}}}"#,
        )
        .unwrap();
        let s = Shape::from_json_schema(&j);
        assert_eq!(
            s.lookup(&["id"]).unwrap(),
            FieldType {
                kind: Kind::Number,
                nullable: false
            }
        );
        assert_eq!(
            s.lookup(&["note"]).unwrap(),
            FieldType {
                kind: Kind::String,
                nullable: true
            }
        );
        assert!(s.lookup(&["missing"]).is_err());
    }

    #[test]
    fn bad_avro_is_an_error() {
        assert!(Shape::from_avro("{").is_err());
        assert!(Shape::from_avro(
            r#"{"type":"record","name":"X","fields":[{"name":"a","type":"Nope"}]}"#
        )
        .is_err());
    }
}
