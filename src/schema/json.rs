//! JSON contracts: a record value must be a JSON document that satisfies the contract's schema.
//!
//! - A JSON Schema file is compiled once with the `jsonschema` crate.
//! - An Avro record schema is applied structurally: every field without a default must be present,
//!   and every present field must have a JSON type that Avro's type allows. Fields the schema does
//!   not name are allowed (a reader with this schema ignores them).

use serde_json::Value as Json;

use super::error::{SchemaError, ValueError};
use super::shape::Shape;

/// How a JSON value is checked against a contract's schema.
pub enum JsonCheck {
    /// `file:` was a JSON Schema.
    JsonSchema(Box<jsonschema::Validator>),
    /// `file:` was an Avro record schema.
    Avro(Shape),
}

impl std::fmt::Debug for JsonCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonCheck::JsonSchema(_) => f.write_str("JsonSchema"),
            JsonCheck::Avro(s) => write!(f, "Avro({s:?})"),
        }
    }
}

impl JsonCheck {
    /// Builds the check from a schema document, deciding by its content: an object whose `type` is
    /// `record` is Avro, anything else is JSON Schema. Returns the shape too, for rule checking.
    pub fn from_schema_text(text: &str) -> Result<(JsonCheck, Shape), SchemaError> {
        let json: Json =
            serde_json::from_str(text).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        if json.get("type").and_then(Json::as_str) == Some("record") {
            let shape = Shape::from_avro(text)?;
            return Ok((JsonCheck::Avro(shape.clone()), shape));
        }
        let validator =
            jsonschema::validator_for(&json).map_err(|e| SchemaError::JsonSchema(e.to_string()))?;
        Ok((
            JsonCheck::JsonSchema(Box::new(validator)),
            Shape::from_json_schema(&json),
        ))
    }

    /// Checks one record value. The error says which field is wrong and which constraint it
    /// breaks, never what the field holds: refusal messages reach logs, the audit trail and the
    /// producer, and a field may hold personal data (jsonschema's own messages quote the value).
    pub fn check(&self, value: &Json) -> Result<(), ValueError> {
        match self {
            JsonCheck::JsonSchema(v) => v.validate(value).map_err(|e| ValueError::JsonSchema {
                path: e.instance_path().to_string(),
                message: format!(
                    "breaks `{}` (schema {})",
                    e.kind().keyword(),
                    e.schema_path()
                ),
            }),
            // The allocation-free test first; the message only for a value that fails.
            JsonCheck::Avro(shape) if conforms(shape, value) => Ok(()),
            JsonCheck::Avro(shape) => check_avro(shape, value, &mut Vec::new()),
        }
    }
}

/// Whether `value` has the shape, without allocating (the path every valid record takes).
fn conforms(shape: &Shape, value: &Json) -> bool {
    match shape {
        Shape::Any => true,
        Shape::Null => value.is_null(),
        Shape::Bool => value.is_boolean(),
        Shape::Int => value.is_i64() || value.is_u64(),
        Shape::Float => value.is_number(),
        Shape::String | Shape::Bytes => value.is_string(),
        Shape::Enum(symbols) => value
            .as_str()
            .is_some_and(|s| symbols.iter().any(|x| x == s)),
        Shape::Array(items) => value
            .as_array()
            .is_some_and(|a| a.iter().all(|v| conforms(items, v))),
        Shape::Map(values) => value
            .as_object()
            .is_some_and(|o| o.values().all(|v| conforms(values, v))),
        Shape::Union(branches) => branches.iter().any(|b| conforms(b, value)),
        Shape::Record(fields) => value.as_object().is_some_and(|o| {
            fields.iter().all(|f| match o.get(&f.name) {
                Some(v) => conforms(&f.shape, v),
                None => f.optional || f.shape.accepts_null(),
            })
        }),
    }
}

fn check_avro<'a>(
    shape: &'a Shape,
    value: &Json,
    path: &mut Vec<&'a str>,
) -> Result<(), ValueError> {
    let here = |path: &Vec<&str>| {
        if path.is_empty() {
            "the value".to_string()
        } else {
            format!("field `{}`", path.join("."))
        }
    };
    let mismatch = |path: &Vec<&str>, want: &str| {
        Err(ValueError::Mismatch(format!(
            "{} must be {want}, not {}",
            here(path),
            json_kind(value)
        )))
    };
    match shape {
        Shape::Any => Ok(()),
        Shape::Null => {
            if value.is_null() {
                Ok(())
            } else {
                mismatch(path, "null")
            }
        }
        Shape::Bool => {
            if value.is_boolean() {
                Ok(())
            } else {
                mismatch(path, "a boolean")
            }
        }
        Shape::Int => {
            if value.is_i64() || value.is_u64() {
                Ok(())
            } else {
                mismatch(path, "an integer")
            }
        }
        Shape::Float => {
            if value.is_number() {
                Ok(())
            } else {
                mismatch(path, "a number")
            }
        }
        Shape::String | Shape::Bytes => {
            if value.is_string() {
                Ok(())
            } else {
                mismatch(path, "a string")
            }
        }
        Shape::Enum(symbols) => match value.as_str() {
            Some(s) if symbols.iter().any(|x| x == s) => Ok(()),
            Some(_) => Err(ValueError::Mismatch(format!(
                "{} is not one of {symbols:?}",
                here(path)
            ))),
            None => mismatch(path, "an enum symbol string"),
        },
        Shape::Array(items) => {
            let arr = match value.as_array() {
                Some(a) => a,
                None => return mismatch(path, "an array"),
            };
            arr.iter().try_for_each(|v| check_avro(items, v, path))
        }
        Shape::Map(values) => {
            let obj = match value.as_object() {
                Some(o) => o,
                None => return mismatch(path, "an object"),
            };
            obj.values().try_for_each(|v| check_avro(values, v, path))
        }
        Shape::Union(branches) => {
            if branches
                .iter()
                .any(|b| check_avro(b, value, &mut path.clone()).is_ok())
            {
                Ok(())
            } else {
                Err(ValueError::Mismatch(format!(
                    "{} ({}) matches no branch of its union",
                    here(path),
                    json_kind(value)
                )))
            }
        }
        Shape::Record(fields) => {
            let obj = match value.as_object() {
                Some(o) => o,
                None => return mismatch(path, "an object"),
            };
            for f in fields {
                path.push(&f.name);
                match obj.get(&f.name) {
                    Some(v) => check_avro(&f.shape, v, path)?,
                    None if f.optional || f.shape.accepts_null() => {}
                    None => return Err(ValueError::Mismatch(format!("{} is missing", here(path)))),
                }
                path.pop();
            }
            Ok(())
        }
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a fractional number",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AVRO: &str = r#"{"type":"record","name":"Order","fields":[
        {"name":"order_id","type":"string"},
        {"name":"customer_id","type":["null","string"],"default":null},
        {"name":"order_total","type":"double"},
        {"name":"qty","type":"int","default":1},
        {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"sku","type":"string"}]}}, "default": []}]}"#;

    #[test]
    fn avro_record_schema_checks_presence_and_types() {
        let (c, _) = JsonCheck::from_schema_text(AVRO).unwrap();
        assert!(c.check(&json!({"order_id":"o1","order_total":3.5})).is_ok());
        assert!(c
            .check(&json!({"order_id":"o1","order_total":3, "customer_id": null, "extra": 1}))
            .is_ok());
        let e = c.check(&json!({"order_total":3.5})).unwrap_err();
        assert_eq!(e.to_string(), "field `order_id` is missing");
        let e = c
            .check(&json!({"order_id":"o1","order_total":"3.5"}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `order_total` must be a number, not a string"
        );
        let e = c
            .check(&json!({"order_id":"o1","order_total":1,"qty":1.5}))
            .unwrap_err();
        assert!(e.to_string().contains("`qty` must be an integer"), "{e}");
        let e = c
            .check(&json!({"order_id":"o1","order_total":1,"lines":[{"sku":5}]}))
            .unwrap_err();
        assert!(
            e.to_string().contains("`lines.sku` must be a string"),
            "{e}"
        );
        assert!(c
            .check(&json!([1]))
            .unwrap_err()
            .to_string()
            .contains("must be an object"));
    }

    #[test]
    fn json_schema_files_are_enforced() {
        let (c, shape) = JsonCheck::from_schema_text(
            r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer","minimum":1}}}"#,
        )
        .unwrap();
        assert!(c.check(&json!({"id": 3})).is_ok());
        let e = c.check(&json!({"id": 0})).unwrap_err();
        assert!(
            matches!(&e, ValueError::JsonSchema { path, .. } if path == "/id"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "JSON Schema at `/id`: breaks `minimum` (schema /properties/id/minimum)"
        );
        // The value itself is never in the message.
        let (pii, _) = JsonCheck::from_schema_text(
            r#"{"type":"object","properties":{"email":{"type":"string","pattern":"^x"}}}"#,
        )
        .unwrap();
        let e = pii.check(&json!({"email": "ann@example.org"})).unwrap_err();
        assert!(!e.to_string().contains("ann@example.org"), "{e}");
        assert!(c.check(&json!({})).is_err());
        assert!(shape.lookup(&["id"]).is_ok());
    }
}
