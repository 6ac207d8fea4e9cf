//! Field-level protection of contract topics, on the wire: classified fields sealed on produce,
//! opened or masked on fetch per principal (`policy::protect` says which fields and who).
//!
//! - [`envelope`]: the documented ciphertext format (AES-256-GCM), and key wrapping.
//! - [`kms`]: key-encryption keys, local file or HashiCorp Vault transit.
//! - [`keys`]: data keys per topic and period, stored wrapped; crypto-shredding.
//! - [`json_fields`]: the byte spans of fields in a JSON value, found without decoding it.
//! - [`avro_fields`]: the byte spans of fields in a Confluent-framed Avro value, found by the
//!   contract's projection for its writer, and replaced in place.
//! - [`batch`]: record batches rewritten value by value, same offsets and producer stamp, new CRC.
//! - [`fetch`]: Fetch answers rewritten partition by partition.
//!
//! **Produce** ([`seal_records`]): after the judge accepted a partition (validity rules ran on
//! the plaintext), each record's protected fields are sealed and the batch is re-encoded with its
//! own codec. A value whose fields cannot be found (not a JSON object; for an Avro contract, not
//! framed, of a writer the contract cannot read, or not decoding) refuses the partition, so
//! nothing is written that might hold them in plaintext; a null field stays null.
//!
//! Nothing here logs, and no error carries a field's value: errors name records by index and
//! fields by path.

pub mod avro_fields;
pub mod batch;
pub mod envelope;
pub mod fetch;
pub mod json_fields;
pub mod keys;
pub mod kms;

use std::sync::Arc;

use bytes::Bytes;

use crate::policy::protect::{Action, Protect};
use crate::protocol::records::batches;
use envelope::FieldAt;
use json_fields::{Found, ScanError};
use keys::DataKey;

/// The keys a produce to one protected topic seals with.
#[derive(Debug, Clone, Default)]
pub struct SealKeys {
    pub random: Option<Arc<DataKey>>,
    pub deterministic: Option<Arc<DataKey>>,
}

/// Why a partition's records could not be sealed (or, for `require_encrypted`, were refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("record {index}: {reason}, so its protected fields cannot be found")]
    NotJson { index: usize, reason: ScanError },
    #[error("record {index}: {reason}, so its protected fields cannot be found")]
    NotAvro { index: usize, reason: String },
    #[error(
        "record {index}: field `{field}` is not a meshgate envelope (protect: require_encrypted)"
    )]
    NotSealed { index: usize, field: Box<str> },
    #[error("no data key for this topic")]
    NoKey,
    #[error("record batch: {0}")]
    Batch(String),
}

/// A Confluent-framed value (magic 0, a 4-byte schema id) keeps its frame; the JSON follows.
fn unframe(value: &[u8]) -> (&[u8], &[u8]) {
    match value {
        [0, _, _, _, _, rest @ ..] => (&value[..5], rest),
        _ => (&[], value),
    }
}

/// Whether a field's JSON text is a string holding a meshgate envelope.
fn is_envelope(text: &[u8]) -> bool {
    text.len() >= 2
        && text[0] == b'"'
        && text[text.len() - 1] == b'"'
        && std::str::from_utf8(&text[1..text.len() - 1])
            .ok()
            .and_then(envelope::parse)
            .is_some()
}

/// What sealing one value did.
#[derive(Default)]
struct Sealed {
    random: u64,
    deterministic: u64,
}

/// How `require_encrypted` fields are judged (the contract's mode, for the producing principal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// A field not sealed refuses the partition.
    Enforce,
    /// A field not sealed is noted here (the first one's path), and the records go on.
    Shadow(Option<Box<str>>),
}

/// Where a topic's values keep their protected fields.
#[derive(Clone, Copy)]
pub enum Layout<'a> {
    /// JSON text, raw or Confluent-framed (the 5-byte frame is kept).
    Json,
    /// Confluent-framed Avro, read through the contract's projection for each writer.
    Avro(&'a dyn avro_fields::WriterSource),
}

/// What a partition is sealed for: its topic, its contract's protection, its keys and its
/// values' layout.
struct Sealing<'a> {
    topic: &'a str,
    protect: &'a Protect,
    keys: &'a SealKeys,
    layout: Layout<'a>,
}

/// What one value's sealing keeps between values (no allocation per value once warm).
#[derive(Default)]
struct Scratch {
    found: Vec<Found>,
    avro: avro_fields::Finder,
    /// One field's envelope (Avro: written before its length prefix is known).
    envelope: Vec<u8>,
}

/// One present field: `Ok(true)` when its envelope was written to `envelope`, `Ok(false)` to
/// leave it (`require_encrypted`, noted or refused there).
fn seal_field(
    sealing: &Sealing<'_>,
    field: &crate::policy::protect::ProtectedField,
    plain: &[u8],
    already_sealed: impl FnOnce() -> bool,
    sealed: &mut Sealed,
    required: &mut Required,
    envelope: &mut Vec<u8>,
) -> Result<bool, SealError> {
    match field.action {
        Action::RequireEncrypted => {
            if !already_sealed() {
                match required {
                    Required::Enforce => {
                        return Err(SealError::NotSealed {
                            index: 0,
                            field: field.dotted.clone(),
                        })
                    }
                    Required::Shadow(first) => {
                        first.get_or_insert_with(|| field.dotted.clone());
                    }
                }
            }
            Ok(false)
        }
        Action::Encrypt => {
            let key = if field.deterministic {
                sealed.deterministic += 1;
                &sealing.keys.deterministic
            } else {
                sealed.random += 1;
                &sealing.keys.random
            };
            let key = key.as_ref().ok_or(SealError::NoKey)?;
            let at = FieldAt {
                topic: sealing.topic,
                path: &field.dotted,
            };
            key.seal_into(at, plain, field.deterministic, envelope);
            Ok(true)
        }
    }
}

fn seal_value(
    sealing: &Sealing<'_>,
    value: &[u8],
    scratch: &mut Scratch,
    sealed: &mut Sealed,
    required: &mut Required,
    out: &mut Vec<u8>,
) -> Result<bool, SealError> {
    match sealing.layout {
        Layout::Json => seal_json(sealing, value, scratch, sealed, required, out),
        Layout::Avro(writers) => seal_avro(sealing, writers, value, scratch, sealed, required, out),
    }
}

fn seal_json(
    sealing: &Sealing<'_>,
    value: &[u8],
    scratch: &mut Scratch,
    sealed: &mut Sealed,
    required: &mut Required,
    out: &mut Vec<u8>,
) -> Result<bool, SealError> {
    let protect = sealing.protect;
    let (frame, json) = unframe(value);
    let found = &mut scratch.found;
    json_fields::find(json, &protect.fields, found)
        .map_err(|reason| SealError::NotJson { index: 0, reason })?;
    // The new value, begun at the first sealed field; `copied`: how much of `json` is in it.
    let mut begun = false;
    let mut copied = 0;
    for f in found.iter() {
        let field = &protect.fields[f.path];
        let text = &json[f.start..f.end];
        // A field inside one already sealed is sealed with it (compile drops such paths; this
        // keeps the splice in order whatever the input).
        if text == b"null" || f.start < copied {
            continue;
        }
        scratch.envelope.clear();
        let envelope = &mut scratch.envelope;
        if !seal_field(
            sealing,
            field,
            text,
            || is_envelope(text),
            sealed,
            required,
            envelope,
        )? {
            continue;
        }
        if !begun {
            begun = true;
            out.reserve(value.len() + 96 * found.len());
            out.extend_from_slice(frame);
        }
        out.extend_from_slice(&json[copied..f.start]);
        out.push(b'"');
        out.extend_from_slice(envelope);
        out.push(b'"');
        copied = f.end;
    }
    if begun {
        out.extend_from_slice(&json[copied..]);
    }
    Ok(begun)
}

/// An Avro value: each present field's bytes sealed in place (see [`avro_fields`]).
fn seal_avro(
    sealing: &Sealing<'_>,
    writers: &dyn avro_fields::WriterSource,
    value: &[u8],
    scratch: &mut Scratch,
    sealed: &mut Sealed,
    required: &mut Required,
    out: &mut Vec<u8>,
) -> Result<bool, SealError> {
    let protect = sealing.protect;
    let spots = scratch
        .avro
        .find(value, 0, &protect.fields, writers)
        .map_err(|e| SealError::NotAvro {
            index: 0,
            reason: e.to_string(),
        })?;
    let mut begun = false;
    let mut copied = 0;
    for spot in spots {
        let field = &protect.fields[spot.field];
        let bytes = &value[spot.span.bytes..spot.span.end];
        let is_sealed = || {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(envelope::parse)
                .is_some()
        };
        scratch.envelope.clear();
        let envelope = &mut scratch.envelope;
        if !seal_field(sealing, field, bytes, is_sealed, sealed, required, envelope)? {
            continue;
        }
        if !begun {
            begun = true;
            out.reserve(value.len() + 96 * spots.len());
        }
        out.extend_from_slice(&value[copied..spot.span.start]);
        avro_fields::write_value(envelope, out);
        copied = spot.span.end;
    }
    if begun {
        out.extend_from_slice(&value[copied..]);
    }
    Ok(begun)
}

/// A partition's record set after sealing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSet {
    /// The new record set; `None` when nothing changed (no field present, or only
    /// `require_encrypted` fields).
    pub set: Option<Bytes>,
    /// Fields sealed.
    pub fields: u64,
}

/// Seals (and checks) the protected fields of every record of a partition's record set.
pub fn seal_records(
    records: &[u8],
    topic: &str,
    (protect, layout): (&Protect, Layout<'_>),
    keys: &SealKeys,
    max_inflate: usize,
    required: &mut Required,
) -> Result<SealedSet, SealError> {
    let sealing = Sealing {
        topic,
        protect,
        keys,
        layout,
    };
    let mut scratch = Scratch::default();
    let mut sealed = Sealed::default();
    let mut parts: Vec<Result<Vec<u8>, &[u8]>> = Vec::new();
    let mut changed = false;
    for batch in batches(records) {
        let batch = batch.map_err(|e| SealError::Batch(e.to_string()))?;
        let mut edit = |v: &[u8], out: &mut Vec<u8>| {
            seal_value(&sealing, v, &mut scratch, &mut sealed, required, out)
        };
        match batch::rewrite_batch(&batch, max_inflate, batch::Output::SameCodec, &mut edit) {
            Ok(Some(new)) => {
                changed = true;
                parts.push(Ok(new));
            }
            Ok(None) => parts.push(Err(batch.bytes)),
            Err(batch::BatchError::Edit { index, error }) => {
                return Err(match error {
                    SealError::NotJson { reason, .. } => SealError::NotJson { index, reason },
                    SealError::NotAvro { reason, .. } => SealError::NotAvro { index, reason },
                    SealError::NotSealed { field, .. } => SealError::NotSealed { index, field },
                    other => other,
                })
            }
            Err(e) => return Err(SealError::Batch(e.to_string())),
        }
    }
    let fields = sealed.random + sealed.deterministic;
    if !changed {
        return Ok(SealedSet { set: None, fields });
    }
    let mut out = Vec::with_capacity(
        parts
            .iter()
            .map(|p| p.as_ref().map_or_else(|b| b.len(), Vec::len))
            .sum(),
    );
    for p in &parts {
        match p {
            Ok(v) => out.extend_from_slice(v),
            Err(b) => out.extend_from_slice(b),
        }
    }
    Ok(SealedSet {
        set: Some(Bytes::from(out)),
        fields,
    })
}

#[cfg(test)]
mod tests;
