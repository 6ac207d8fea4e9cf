//! `meshgate export odcs`: a compiled contract written as an ODCS v3.1.0 document, so that a team
//! can move from meshgate's `contract:` format to the standard (and back, since the loader reads
//! what this writes: a round-trip test checks it).
//!
//! What has no ODCS form is returned beside the document, never dropped silently: CEL rules,
//! canary modes, `on_reject`, completeness targets and JSON Schema keywords other than types.

use serde_json::{json, Value};

use crate::policy::{Contract, Mode};

/// The ODCS document of `contract`, and what of it could not be written.
pub fn contract(contract: &Contract, host: &str) -> (Value, Vec<String>) {
    let mut left_out = Vec::new();
    let mut doc = json!({
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": contract.name,
        "name": contract.name,
        "version": contract
            .schema
            .as_ref()
            .and_then(|s| s.version.clone())
            .unwrap_or_else(|| "0.0.0".into()),
        "status": "active",
        "team": {"name": contract.owner},
        "servers": [{
            "server": "kafka",
            "type": "kafka",
            "host": host,
            "format": match contract.schema.as_ref().map(|s| s.format) {
                Some(crate::policy::model::Format::Avro) => "avro",
                _ => "json",
            },
            "customProperties": [{"property": "topic", "value": contract.topic}],
        }],
    });
    if let Some(d) = &contract.description {
        doc["description"] = json!({"purpose": d});
    }
    // A contract loaded from ODCS keeps its identity there.
    if let Some(info) = &contract.odcs {
        doc["id"] = json!(info.id);
        for (key, value) in [
            ("status", &info.status),
            ("domain", &info.domain),
            ("dataProduct", &info.data_product),
        ] {
            if let Some(v) = value {
                doc[key] = json!(v);
            }
        }
        if !info.members.is_empty() {
            doc["team"]["members"] = info
                .members
                .iter()
                .map(|m| json!({"username": m}))
                .collect();
        }
    }
    let mut object = json!({
        "name": contract.topic,
        "physicalName": contract.topic,
        "physicalType": "topic",
        "logicalType": "object",
    });
    if let Some(schema) = &contract.schema {
        let classified: Vec<(&str, &str)> = schema
            .classified
            .iter()
            .map(|(f, l, _)| (f.as_str(), l.as_str()))
            .collect();
        match serde_json::from_str::<Value>(&schema.text) {
            Ok(v) if v.get("fields").is_some() => {
                object["properties"] = Value::Array(avro_properties(&v, "", &classified));
            }
            Ok(v) if v.get("properties").is_some() => {
                object["properties"] = Value::Array(json_schema_properties(&v, &classified));
                left_out.push(
                    "the JSON Schema's keywords other than `type` and `required`".to_string(),
                );
            }
            _ => left_out.push("the schema (not an Avro record or a JSON Schema object)".into()),
        }
    }
    let mut quality = Vec::new();
    for r in &contract.rules {
        if r.rule.text.starts_with("cel:") {
            left_out.push(format!("rule `{}` (CEL has no ODCS form)", r.rule.text));
            continue;
        }
        let mut q = json!({
            "type": "sql",
            "query": format!("SELECT COUNT(*) FROM {{object}} WHERE ({}) IS NOT TRUE", r.rule.text),
            "mustBe": 0,
        });
        match &r.mode {
            Mode::Enforce => {}
            Mode::Shadow => q["severity"] = json!("warning"),
            Mode::Off => {
                left_out.push(format!("rule `{}` (mode off)", r.rule.text));
                continue;
            }
            Mode::Canary(_) => left_out.push(format!(
                "the canary of rule `{}` (written as enforced)",
                r.rule.text
            )),
        }
        quality.push(q);
    }
    if !quality.is_empty() {
        object["quality"] = Value::Array(quality);
    }
    doc["schema"] = json!([object]);
    let mut sla = Vec::new();
    if let Some(a) = contract.sla.availability {
        sla.push(json!({"property": "availability", "value": format!("{}%", a * 100.0)}));
    }
    if let Some(l) = contract.sla.latency_p99 {
        sla.push(json!({"property": "latency", "value": l.as_secs_f64(), "unit": "s"}));
    }
    if let Some(f) = contract.sla.freshness {
        sla.push(json!({"property": "frequency", "value": f.as_secs_f64(), "unit": "s"}));
    }
    if !sla.is_empty() {
        doc["slaProperties"] = Value::Array(sla);
    }
    let mut roles: Vec<(String, &str)> = contract
        .producers
        .iter()
        .map(|p| (p.to_string(), "write"))
        .collect();
    if let Some(c) = &contract.consumers {
        for p in &c.principals {
            match roles.iter_mut().find(|(q, _)| **q == **p) {
                Some(r) => r.1 = "readwrite",
                None => roles.push((p.to_string(), "read")),
            }
        }
        for g in &c.groups {
            roles.push((g.to_string(), "read"));
        }
    }
    if !roles.is_empty() {
        doc["roles"] = roles
            .into_iter()
            .map(|(role, access)| json!({"role": role, "access": access}))
            .collect();
    }
    if contract.on_reject.is_some() {
        left_out.push("on_reject (dead-letter routing has no ODCS form)".into());
    }
    if contract.completeness_target.is_some() {
        left_out.push("quality.completeness (write nullValues rules per field)".into());
    }
    if !matches!(contract.mode, Mode::Enforce) {
        left_out.push(format!("the contract's mode `{}`", contract.mode.name()));
    }
    (doc, left_out)
}

fn classification(path: &str, classified: &[(&str, &str)]) -> Option<String> {
    classified
        .iter()
        .find(|(f, _)| *f == path)
        .map(|(_, l)| l.to_string())
}

/// ODCS properties of an Avro record's fields.
fn avro_properties(record: &Value, prefix: &str, classified: &[(&str, &str)]) -> Vec<Value> {
    let fields = record["fields"].as_array().map_or(&[][..], |f| f);
    fields
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap_or_default();
            let path = format!("{prefix}{name}");
            let (ty, nullable) = match &f["type"] {
                Value::Array(branches) => {
                    let non_null: Vec<&Value> = branches.iter().filter(|b| *b != "null").collect();
                    let nullable = non_null.len() < branches.len();
                    match non_null.as_slice() {
                        [one] => ((*one).clone(), nullable),
                        _ => (Value::Null, nullable),
                    }
                }
                other => (other.clone(), false),
            };
            let mut p = json!({"name": name, "required": !nullable});
            let (logical, nested) = avro_logical(&ty);
            if let Some(l) = logical {
                p["logicalType"] = json!(l);
            }
            if let Some(rec) = nested {
                p["properties"] =
                    Value::Array(avro_properties(rec, &format!("{path}."), classified));
            }
            if let Some(doc) = f.get("doc") {
                p["description"] = doc.clone();
            }
            if let Some(c) = classification(&path, classified) {
                p["classification"] = json!(c);
            }
            p
        })
        .collect()
}

fn avro_logical(ty: &Value) -> (Option<&'static str>, Option<&Value>) {
    let name = match ty {
        Value::String(s) => s.as_str(),
        Value::Object(o) => {
            match o.get("logicalType").and_then(Value::as_str) {
                Some("date") => return (Some("date"), None),
                Some("timestamp-millis" | "timestamp-micros") => return (Some("timestamp"), None),
                Some("time-millis" | "time-micros") => return (Some("time"), None),
                _ => {}
            }
            match o.get("type").and_then(Value::as_str) {
                Some("record") => return (Some("object"), Some(ty)),
                Some("array") => return (Some("array"), None),
                Some(t) => t,
                None => "",
            }
        }
        _ => "",
    };
    let l = match name {
        "string" | "enum" => "string",
        "int" | "long" => "integer",
        "float" | "double" => "number",
        "boolean" => "boolean",
        "array" => "array",
        _ => return (None, None),
    };
    (Some(l), None)
}

/// ODCS properties of a JSON Schema object's properties.
fn json_schema_properties(schema: &Value, classified: &[(&str, &str)]) -> Vec<Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = schema["properties"].as_object();
    props
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let ty = match &s["type"] {
                Value::String(t) => t.as_str(),
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|t| *t != "null")
                    .unwrap_or(""),
                _ => "",
            };
            let mut p = json!({"name": name, "required": required.contains(&name.as_str())});
            if !ty.is_empty() {
                p["logicalType"] = json!(ty);
            }
            if let Some(c) = classification(name, classified) {
                p["classification"] = json!(c);
            }
            p
        })
        .collect()
}
