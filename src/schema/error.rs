//! The schema layer's two errors: a schema that does not compile, found when a policy set loads,
//! and a record value that does not fit its contract's schema, found per record.

/// Why a schema text (Avro or JSON Schema) does not compile, or why a writer schema cannot be
/// read as a contract's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The text is not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// An Avro schema object lacks a key it must have.
    #[error("{what} needs {key}")]
    Missing { what: String, key: &'static str },
    /// An Avro type name that is neither primitive nor defined earlier.
    #[error("unknown type `{0}`")]
    UnknownType(String),
    /// JSON that is not an Avro schema.
    #[error("`{0}` is not an Avro schema")]
    NotAvro(String),
    /// apache-avro's parser refuses the schema.
    #[error("{0}")]
    Avro(String),
    /// The JSON Schema does not compile.
    #[error("invalid JSON Schema: {0}")]
    JsonSchema(String),
    /// The writer's records cannot be resolved against the reader's schema.
    #[error("{0}")]
    Unreadable(String),
}

/// Why one record value does not fit its contract's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value is not in Confluent wire format (magic byte 0 and a 4-byte schema id)")]
    NotFramed,
    #[error("schema id {0} is unknown to the schema registry")]
    UnknownId(u32),
    #[error("writer schema {id} cannot be read with the contract schema: {reason}")]
    Unreadable { id: u32, reason: SchemaError },
    #[error("value does not decode with writer schema {id}: {reason}")]
    Undecodable { id: u32, reason: String },
    /// A JSON value against an Avro contract schema: which field, and what it should be.
    #[error("{0}")]
    Mismatch(String),
    /// A JSON value against a JSON Schema: where (a JSON pointer, empty for the root) and why.
    #[error("JSON Schema{}: {message}", if path.is_empty() { String::new() } else { format!(" at `{path}`") })]
    JsonSchema { path: String, message: String },
}

/// Why a dotted field path does not name a field of a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("`{parent}` is not a record, so it has no field `{field}`")]
    NotRecord { parent: String, field: String },
    #[error("the schema has no field `{0}`")]
    NoTopField(String),
    #[error("`{parent}` has no field `{field}`")]
    NoField { parent: String, field: String },
}

/// The projection compiler's messages: how a writer schema fails to resolve against a reader's.
impl From<String> for SchemaError {
    fn from(message: String) -> Self {
        SchemaError::Unreadable(message)
    }
}

impl From<&str> for SchemaError {
    fn from(message: &str) -> Self {
        SchemaError::Unreadable(message.to_string())
    }
}
