//! Field classification (`pii`, or another level the policy defines): read from a schema's own
//! annotations, and the field paths a classification requirement is checked against.
//!
//! An Avro field carries it as an extra attribute (`{"name": "email", "type": "string",
//! "classification": "pii"}`), which Avro allows and ignores; a JSON Schema property as an
//! extra keyword (`"email": {"type": "string", "classification": "pii"}`). A contract can also
//! classify fields in its `schema:` section (`classification: {email: pii}`).

use serde_json::Value as Json;

use super::shape::Shape;

/// (dotted path, level) of every annotated field of an Avro or JSON Schema document, in
/// document order. Nested records (through unions, arrays and maps) and nested JSON Schema
/// objects (through `properties` and `items`) are followed.
pub fn annotations(schema: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out, 0);
    out
}

const MAX_DEPTH: usize = 32;

fn walk(node: &Json, path: &mut Vec<String>, out: &mut Vec<(String, String)>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match node {
        Json::Array(branches) => {
            for b in branches {
                walk(b, path, out, depth + 1);
            }
        }
        Json::Object(o) => {
            // Avro: a record's fields.
            if let Some(fields) = o.get("fields").and_then(Json::as_array) {
                for f in fields {
                    let Some(name) = f.get("name").and_then(Json::as_str) else {
                        continue;
                    };
                    path.push(name.to_string());
                    if let Some(level) = f.get("classification").and_then(Json::as_str) {
                        out.push((path.join("."), level.to_string()));
                    }
                    if let Some(t) = f.get("type") {
                        walk(t, path, out, depth + 1);
                    }
                    path.pop();
                }
            }
            // Avro: array items and map values; a `{"type": {...}}` wrapper.
            for key in ["items", "values", "type"] {
                if let Some(inner) = o.get(key).filter(|v| v.is_object() || v.is_array()) {
                    if key == "items" && o.contains_key("properties") {
                        continue;
                    }
                    walk(inner, path, out, depth + 1);
                }
            }
            // JSON Schema: an object's properties.
            if let Some(props) = o.get("properties").and_then(Json::as_object) {
                for (name, p) in props {
                    path.push(name.clone());
                    if let Some(level) = p.get("classification").and_then(Json::as_str) {
                        out.push((path.join("."), level.to_string()));
                    }
                    walk(p, path, out, depth + 1);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// Every field path of a record shape, dotted, nested records included.
pub fn field_paths(shape: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    collect(shape, &mut Vec::new(), &mut out, 0);
    out
}

fn collect(shape: &Shape, path: &mut Vec<String>, out: &mut Vec<String>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(fields) = shape.fields() else {
        return;
    };
    for f in fields {
        path.push(f.name.clone());
        out.push(path.join("."));
        collect(&f.shape, path, out, depth + 1);
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn avro_and_json_schema_annotations_are_found_at_any_depth() {
        let avro = json!({"type": "record", "name": "O", "fields": [
            {"name": "email", "type": "string", "classification": "pii"},
            {"name": "total", "type": "double"},
            {"name": "address", "type": ["null", {"type": "record", "name": "A", "fields": [
                {"name": "street", "type": "string", "classification": "pii"}]}]},
            {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "L",
                "fields": [{"name": "sku", "type": "string", "classification": "internal"}]}}}
        ]});
        assert_eq!(
            annotations(&avro),
            [
                ("email".to_string(), "pii".to_string()),
                ("address.street".into(), "pii".into()),
                ("lines.sku".into(), "internal".into())
            ]
        );
        let js = json!({"type": "object", "properties": {
            "phone": {"type": "string", "classification": "pii"},
            "customer": {"type": "object", "properties": {"ssn": {"type": "string", "classification": "pii"}}}
        }});
        let mut got = annotations(&js);
        got.sort();
        assert_eq!(
            got,
            [
                ("customer.ssn".to_string(), "pii".to_string()),
                ("phone".into(), "pii".into())
            ]
        );
    }

    #[test]
    fn field_paths_include_nested_records() {
        let shape = Shape::from_avro(
            r#"{"type": "record", "name": "O", "fields": [{"name": "a", "type": "string"},
                {"name": "b", "type": {"type": "record", "name": "B", "fields": [{"name": "c", "type": "long"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(field_paths(&shape), ["a", "b", "b.c"]);
    }
}
