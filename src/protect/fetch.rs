//! Fetch answers of protected topics, rewritten for one principal: each envelope opened (for
//! `pii_readers`) or replaced by the mask, batch by batch, with the same offsets and a new CRC.
//!
//! - Only the records fields of protected partitions are replaced; every other byte of the
//!   answer (throttle, session id, watermarks, aborted transactions, tags) is copied as it came,
//!   so fetch sessions and `read_committed` answers keep their meaning.
//! - A rewritten batch goes out uncompressed (each batch names its own codec); an unchanged one
//!   is copied as it came. A trailing partial batch (a broker cuts the last one at the size
//!   limit) and a batch that does not parse are copied as they came: they hold envelopes, never
//!   plaintext.
//! - **Keys and writers:** an envelope whose key is not in memory, or an Avro value whose writer
//!   schema is not (an external registry's id not yet fetched), makes the pass report what it
//!   needs ([`Outcome::Need`]); the caller loads it and runs the pass again. A key that is gone
//!   (shredded) or does not open the envelope gives the mask, for readers too (`***` when the
//!   contract has no mask).
//! - An Avro contract's fields are found through its projection for the value's writer schema
//!   ([`super::avro_fields`]) and replaced in place, so the record still decodes with the schema
//!   it names.
//! - A protected field that is not an envelope (a record from before the contract protected it)
//!   is shown to readers as it is and masked for the others.
//!
//! An answer that streams (over 256 KiB, at the head of the connection's queue) is shown by
//! [`StreamShower`] one batch at a time as it passes, at its size
//! ([`crate::protocol::fetch_stream`]); the rest of this module's notes are about an answer held
//! whole.
//!
//! **Memory:** the answer is held once; each protected batch is inflated and rewritten on its
//! own, and the new answer is the old one's unchanged spans (slices, not copies) around the new
//! record sets of the protected partitions: the answer plus its rewritten sets, never a second
//! copy of the whole.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use super::avro_fields::{self, FindError, Finder, Lookup, Spot, WriterSource};
use super::batch::Output;
use super::envelope::{self, FieldAt};
use super::json_fields::{self, Found};
use super::keys::KeyRing;
use crate::generation::Generation;
use crate::metrics::ContractMetrics;
use crate::policy::protect::{Mask, Protect, View};
use crate::protocol::fetch_stream::SetEditor;
use crate::protocol::fetch_walk::{records_prefix, walk_fetch, FetchEvent, TopicRef};
use crate::protocol::header::split_response;
use crate::protocol::records::{batches, Codec, DeflatedBatch};
use crate::schema::registry_client::RegistryClient;

/// How one protected topic is shown to the fetching principal.
#[derive(Debug, Clone)]
pub struct TopicView {
    pub topic: Box<str>,
    pub protect: Arc<Protect>,
    pub view: View,
    /// Where its fields are counted (`meshgate_contract_protected_fields_total`).
    pub stats: Option<Arc<ContractMetrics>>,
    /// For a contract whose values are Avro: its index in the generation of
    /// [`FetchViews::schemas`] (its projections are by contract and writer).
    pub avro: Option<usize>,
}

/// Where the views of Avro contracts find the projection of a value's writer schema.
#[derive(Clone)]
pub struct Schemas {
    /// The generation the views were made from: its decoders and contracts.
    pub generation: Arc<Generation>,
    /// The external registry, for writer ids the generation was not loaded with.
    pub registry: Option<Arc<RegistryClient>>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("generation", &self.generation.number)
            .field("registry", &self.registry.is_some())
            .finish()
    }
}

/// One Avro contract's writers, as a Fetch looks them up: the decoders compiled at load, then
/// those of writers the registry client has cached (compiled once per generation); an id the
/// client has not cached is [`Lookup::Later`] (fetched, then the pass runs again).
struct ViewWriters<'a> {
    schemas: &'a Schemas,
    contract: usize,
}

impl WriterSource for ViewWriters<'_> {
    fn projection(&self, id: u32) -> Lookup {
        let generation = &self.schemas.generation;
        let found = |c: &crate::schema::avro_data::Compiled| match c {
            Ok(p) => Lookup::Found(p.clone()),
            Err(_) => Lookup::Unknown,
        };
        if let Some(c) = generation.decoders.compiled_at_load(self.contract, id) {
            return found(c);
        }
        let (Some(registry), Some(reader)) = (
            self.schemas.registry.as_deref(),
            generation
                .contracts
                .get(self.contract)
                .and_then(|c| c.avro_reader.as_ref()),
        ) else {
            return Lookup::Unknown;
        };
        match registry.cached(id) {
            Some(Some(writer)) => found(&generation.decoders.resolve(
                self.contract,
                reader,
                id,
                &writer,
            )),
            Some(None) => Lookup::Unknown,
            None => Lookup::Later,
        }
    }
}

/// The protected topics whose answers a principal's Fetch needs rewritten.
#[derive(Debug, Clone)]
pub struct FetchViews {
    pub topics: Vec<TopicView>,
    /// Set when a view is of an Avro contract.
    pub schemas: Option<Schemas>,
}

impl FetchViews {
    /// `None` when no topic of `set` needs an edit for `principal` (the answer passes as is).
    pub fn for_principal(
        set: &Arc<Generation>,
        principal: &str,
        registry: Option<&Arc<RegistryClient>>,
    ) -> Option<Self> {
        let topics: Vec<TopicView> = set
            .protecting
            .iter()
            .filter_map(|&i| {
                let c = &set.contracts[i];
                let p = c.protect.as_ref()?;
                Some(TopicView {
                    topic: c.topic.as_str().into(),
                    protect: p.clone(),
                    view: p.view_for(principal)?,
                    stats: set.stats(c).cloned(),
                    avro: c.avro_reader.as_ref().map(|_| i),
                })
            })
            .collect();
        let schemas = topics.iter().any(|t| t.avro.is_some()).then(|| Schemas {
            generation: set.clone(),
            registry: registry.cloned(),
        });
        (!topics.is_empty()).then_some(Self { topics, schemas })
    }

    /// Whether the answer to this Fetch request (`frame`, without its size prefix) may carry a
    /// protected topic: it names one (by name, or by an id `ids` maps to one or does not know),
    /// or it is an incremental fetch of a session (whose answer may carry any partition of the
    /// session), or it does not decode. Otherwise the answer passes as it comes.
    pub fn concern(
        &self,
        frame: &Bytes,
        version: i16,
        ids: &dyn Fn([u8; 16]) -> Option<String>,
    ) -> bool {
        use kafka_protocol::messages::FetchRequest;
        use kafka_protocol::protocol::Decodable;
        let Ok((_, mut body)) =
            crate::protocol::header::split_request(frame, ApiKey::Fetch, version)
        else {
            return true;
        };
        let Ok(request) = FetchRequest::decode(&mut body, version) else {
            return true;
        };
        if version >= 7 && request.session_epoch > 0 {
            return true;
        }
        request.topics.iter().any(|t| {
            let name = if version >= 13 {
                match ids(*t.topic_id.as_bytes()) {
                    Some(n) => n,
                    None => return true,
                }
            } else {
                t.topic.0.to_string()
            };
            self.get(&name).is_some()
        })
    }

    fn get(&self, topic: &str) -> Option<&TopicView> {
        self.topics.iter().find(|t| &*t.topic == topic)
    }
}

/// What one pass made of an answer.
#[derive(Debug)]
pub enum Outcome {
    /// No protected field was in it.
    Unchanged,
    /// The new answer, as parts to write one after the other: the unchanged spans are slices
    /// of the old answer (no copy), the rewritten records fields new buffers.
    Rewritten(Vec<Bytes>),
    /// These must be loaded first.
    Need(Needs),
}

/// What a pass needs loaded before it can show every field.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// (topic, kid) of data keys not in memory.
    pub keys: Vec<(Box<str>, Box<str>)>,
    /// Writer schema ids the registry client has not cached.
    pub schemas: Vec<u32>,
}

impl Needs {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.schemas.is_empty()
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.schemas.clear();
    }

    fn dedup(&mut self) {
        self.keys.sort();
        self.keys.dedup();
        self.schemas.sort_unstable();
        self.schemas.dedup();
    }

    /// Loads what is needed: keys from `keys`, writer schemas from `schemas`' registry. What
    /// cannot be had is left out; the next pass counts its fields as gone (keys) or leaves them
    /// as stored (schemas).
    async fn load(&mut self, keys: Option<&KeyRing>, schemas: Option<&Schemas>) {
        self.dedup();
        if let Some(keys) = keys {
            for (topic, kid) in self.keys.drain(..) {
                if let Err(e) = keys.load(&topic, &kid).await {
                    tracing::debug!(topic = %topic, kid = %kid, error = %e, "data key not loaded; its fields are masked");
                }
            }
        }
        if let Some(registry) = schemas.and_then(|s| s.registry.as_deref()) {
            let ids = std::mem::take(&mut self.schemas);
            let fetched = futures_util::future::join_all(
                ids.iter()
                    .take(crate::schema::registry_client::MAX_FETCHES_PER_REQUEST)
                    .map(|&id| registry.fetch(id)),
            )
            .await;
            for (id, f) in ids.iter().zip(fetched) {
                if let crate::schema::registry_client::Fetched::Unavailable(e) = f {
                    tracing::debug!(id, error = %e, "writer schema not fetched; its protected fields are left as stored");
                }
            }
        }
        self.clear();
    }
}

/// One pass over a Fetch answer (`frame`, without its size prefix). `ids` names topics of
/// v13+ answers; an id it does not know is left as it came (envelopes, never plaintext).
/// With `settled`, a key not in memory counts as gone instead of being asked for.
pub fn rewrite(
    frame: &Bytes,
    version: i16,
    views: &FetchViews,
    ids: &dyn Fn([u8; 16]) -> Option<String>,
    keys: Option<&KeyRing>,
    max_inflate: usize,
    settled: bool,
) -> Outcome {
    let Ok((_, body)) = split_response(frame, ApiKey::Fetch, version) else {
        return Outcome::Unchanged;
    };
    let offset = frame.len() - body.len();
    // (the records field's range in the frame, its new length prefix, its new record set)
    let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut cx = Opener::new(keys, views.schemas.as_ref(), settled);
    let walked = walk_fetch(&body, version, |event| {
        let FetchEvent::Partition(topic, p) = event else {
            return;
        };
        if p.records.is_empty() {
            return;
        }
        let view = match topic {
            TopicRef::Name(n) => views.get(n),
            TopicRef::Id(id) => ids(id).and_then(|n| views.get(&n)),
        };
        let Some(view) = view else {
            return;
        };
        cx.counts = Counts::default();
        let shown = cx.rewrite_set(p.records, view, max_inflate);
        // Counted once the pass is final (nothing left to load).
        if settled || cx.need.is_empty() {
            if let Some(m) = &view.stats {
                m.fields_opened.inc_by(cx.counts.opened);
                m.fields_masked.inc_by(cx.counts.masked);
                m.fields_unreadable.inc_by(cx.counts.unreadable);
            }
        }
        if let Some(set) = shown {
            let mut prefix = Vec::with_capacity(5);
            records_prefix(version, set.len(), &mut prefix);
            edits.push((p.field.start + offset..p.field.end + offset, prefix, set));
        }
    });
    if walked.is_none() {
        return Outcome::Unchanged;
    }
    let mut need = cx.need;
    if !need.is_empty() {
        need.dedup();
        return Outcome::Need(need);
    }
    if edits.is_empty() {
        return Outcome::Unchanged;
    }
    let mut parts = Vec::with_capacity(edits.len() * 3 + 1);
    let mut at = 0;
    for (range, prefix, set) in edits {
        parts.push(frame.slice(at..range.start));
        parts.push(Bytes::from(prefix));
        parts.push(Bytes::from(set));
        at = range.end;
    }
    parts.push(frame.slice(at..));
    Outcome::Rewritten(parts)
}

/// Rewrites an answer, loading the keys it needs (at most twice) from `keys`; an answer that
/// cannot be walked is returned as it came. The answer as parts (see [`Outcome::Rewritten`]).
pub async fn rewrite_loading(
    frame: Bytes,
    version: i16,
    views: &FetchViews,
    ids: &(dyn Fn([u8; 16]) -> Option<String> + Sync),
    keys: Option<&KeyRing>,
    max_inflate: usize,
) -> Vec<Bytes> {
    for round in 0..3 {
        let settled = round == 2;
        match rewrite(&frame, version, views, ids, keys, max_inflate, settled) {
            Outcome::Unchanged => return vec![frame],
            Outcome::Rewritten(parts) => return parts,
            Outcome::Need(mut need) => need.load(keys, views.schemas.as_ref()).await,
        }
    }
    vec![frame]
}

/// A partition's record set as `view` shows it; `None` when unchanged. With `need`, the keys
/// not in memory are noted there (their fields left as they are); without, such a key counts
/// as gone (the fuzz harness, the bench: nothing to load).
pub fn show_records(
    set: &[u8],
    view: &TopicView,
    keys: Option<&KeyRing>,
    max_inflate: usize,
    need: Option<&mut Vec<(Box<str>, Box<str>)>>,
) -> Option<Vec<u8>> {
    let mut cx = Opener::new(keys, None, need.is_none());
    let shown = cx.rewrite_set(set, view, max_inflate);
    if let Some(need) = need {
        need.append(&mut cx.need.keys);
    }
    shown
}

/// A partition's record set with the protected fields of a JSON contract opened, for judging
/// what is stored (`meshgate replay --dry-run`): the keys it names are loaded from `keys` first;
/// a field whose key cannot be had reads as the mask `***`. `None` when nothing changes (no
/// envelope, or values that are not JSON). Avro contracts are left as stored: their writer
/// schemas come from a gateway's registry, which a command-line run does not have.
pub async fn opened_for_judging(
    set: &[u8],
    topic: &str,
    protect: &Arc<Protect>,
    keys: &KeyRing,
    max_inflate: usize,
) -> Option<Vec<u8>> {
    let view = TopicView {
        topic: topic.into(),
        protect: protect.clone(),
        view: View::Plain,
        stats: None,
        avro: None,
    };
    let mut need = Needs::default();
    let shown = show_records(set, &view, Some(keys), max_inflate, Some(&mut need.keys));
    if need.is_empty() {
        return shown;
    }
    need.load(Some(keys), None).await;
    show_records(set, &view, Some(keys), max_inflate, None)
}

/// Shows the protected record sets of a Fetch answer that streams to the client
/// ([`crate::protocol::fetch_stream`]), one batch at a time. A batch that names a key not in
/// memory waits while the key is loaded, then is shown; a key that still cannot be had counts
/// as gone (the mask). A compressed batch is compressed again with its codec: shown
/// uncompressed, it would seldom fit the room a streamed answer keeps for its set.
pub struct StreamShower<'a> {
    views: &'a FetchViews,
    ids: &'a (dyn Fn([u8; 16]) -> Option<String> + Sync),
    max_inflate: usize,
    opener: Opener<'a>,
    current: Option<&'a TopicView>,
}

impl<'a> StreamShower<'a> {
    pub fn new(
        views: &'a FetchViews,
        ids: &'a (dyn Fn([u8; 16]) -> Option<String> + Sync),
        keys: Option<&'a KeyRing>,
        max_inflate: usize,
    ) -> Self {
        StreamShower {
            views,
            ids,
            max_inflate,
            opener: Opener::new(keys, views.schemas.as_ref(), keys.is_none()),
            current: None,
        }
    }
}

impl SetEditor for StreamShower<'_> {
    fn wants(&mut self, topic: TopicRef<'_>) -> bool {
        self.current = match topic {
            TopicRef::Name(n) => self.views.get(n),
            TopicRef::Id(id) => (self.ids)(id).and_then(|n| self.views.get(&n)),
        };
        self.current.is_some()
    }

    async fn batch(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(view) = self.current else {
            return false;
        };
        let Some(Ok(batch)) = batches(bytes).next() else {
            return false;
        };
        let output = match batch.codec() {
            Ok(Codec::None) => Output::Uncompressed,
            Ok(_) => Output::SameCodec,
            Err(_) => return false,
        };
        let cx = &mut self.opener;
        for settled in [cx.keys.is_none() && self.views.schemas.is_none(), true] {
            cx.settled = settled;
            cx.need.clear();
            cx.counts = Counts::default();
            out.clear();
            let shown = cx.rewrite_batch(&batch, view, self.max_inflate, output, out);
            if settled || cx.need.is_empty() {
                if let Some(m) = &view.stats {
                    m.fields_opened.inc_by(cx.counts.opened);
                    m.fields_masked.inc_by(cx.counts.masked);
                    m.fields_unreadable.inc_by(cx.counts.unreadable);
                }
                return shown;
            }
            let mut need = std::mem::take(&mut cx.need);
            need.load(cx.keys, cx.schemas).await;
            cx.need = need;
        }
        false
    }
}

/// Fields shown in one partition, by how.
#[derive(Default)]
struct Counts {
    opened: u64,
    masked: u64,
    unreadable: u64,
}

struct Opener<'k> {
    keys: Option<&'k KeyRing>,
    schemas: Option<&'k Schemas>,
    settled: bool,
    /// What a field needed that is not in memory (when not `settled`).
    need: Needs,
    found: Vec<Found>,
    avro: Finder,
    spots: Vec<Spot>,
    /// A field's plaintext, before its Avro length prefix.
    plain: Vec<u8>,
    counts: Counts,
    /// The field being shown (reused from field to field).
    shown: Vec<u8>,
    /// The last key that opened a field, with its topic (one answer's fields mostly share one).
    last: Option<(Box<str>, Arc<super::keys::DataKey>)>,
}

impl<'k> Opener<'k> {
    fn new(keys: Option<&'k KeyRing>, schemas: Option<&'k Schemas>, settled: bool) -> Self {
        Opener {
            keys,
            schemas,
            settled,
            need: Needs::default(),
            found: Vec::new(),
            avro: Finder::default(),
            spots: Vec::new(),
            plain: Vec::new(),
            counts: Counts::default(),
            shown: Vec::new(),
            last: None,
        }
    }

    /// The record set with its protected fields shown as `view` says; `None` when unchanged.
    fn rewrite_set(&mut self, set: &[u8], view: &TopicView, max_inflate: usize) -> Option<Vec<u8>> {
        let mut out: Vec<u8> = Vec::with_capacity(set.len() + set.len() / 8);
        let mut changed = false;
        let mut rest = set;
        for batch in batches(set) {
            let Ok(batch) = batch else {
                // The trailing partial batch, or one that does not parse: as it came.
                break;
            };
            let consumed = batch.bytes.len();
            if self.rewrite_batch(&batch, view, max_inflate, Output::Uncompressed, &mut out) {
                changed = true;
            } else {
                out.extend_from_slice(batch.bytes);
            }
            rest = &rest[consumed..];
        }
        out.extend_from_slice(rest);
        changed.then_some(out)
    }

    /// One batch with its protected fields shown as `view` says, appended to `out`; `false`
    /// (and `out` as it was) when unchanged or when it does not parse.
    fn rewrite_batch(
        &mut self,
        batch: &DeflatedBatch<'_>,
        view: &TopicView,
        max_inflate: usize,
        output: Output,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut edit =
            |v: &[u8], out: &mut Vec<u8>| -> Result<bool, ()> { Ok(self.show(v, view, out)) };
        matches!(
            super::batch::rewrite_batch_into(batch, max_inflate, output, &mut edit, out),
            Ok(true)
        )
    }

    /// One value as the principal sees it, written to `out`; `false` when unchanged.
    fn show(&mut self, value: &[u8], view: &TopicView, out: &mut Vec<u8>) -> bool {
        match view.avro {
            Some(contract) => self.show_avro(value, view, contract, out),
            None => self.show_json(value, view, out),
        }
    }

    /// An Avro value: each present field replaced in place (see [`avro_fields`]). A value whose
    /// fields cannot be found (its writer unknown, or it does not decode) is left as stored.
    fn show_avro(
        &mut self,
        value: &[u8],
        view: &TopicView,
        contract: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(schemas) = self.schemas else {
            return false;
        };
        let writers = ViewWriters { schemas, contract };
        let found = match self
            .avro
            .find(value, contract, &view.protect.fields, &writers)
        {
            Ok(found) => found,
            Err(FindError::Later(id)) => {
                if !self.settled {
                    self.need.schemas.push(id);
                }
                return false;
            }
            Err(_) => return false,
        };
        let mut spots = std::mem::take(&mut self.spots);
        spots.clear();
        spots.extend_from_slice(found);
        let mut begun = false;
        let mut copied = 0;
        for spot in &spots {
            let field = &view.protect.fields[spot.field];
            let at = FieldAt {
                topic: &view.topic,
                path: &field.dotted,
            };
            self.shown.clear();
            if self.field(&value[spot.span.bytes..spot.span.end], Fmt::Avro, at, view) {
                if !begun {
                    begun = true;
                    out.reserve(value.len() + 16);
                }
                out.extend_from_slice(&value[copied..spot.span.start]);
                out.extend_from_slice(&self.shown);
                copied = spot.span.end;
            }
        }
        self.spots = spots;
        if begun {
            out.extend_from_slice(&value[copied..]);
        }
        begun
    }

    fn show_json(&mut self, value: &[u8], view: &TopicView, out: &mut Vec<u8>) -> bool {
        let (frame, json) = super::unframe(value);
        if json_fields::find(json, &view.protect.fields, &mut self.found).is_err() {
            return false;
        }
        let found = std::mem::take(&mut self.found);
        // The new value, begun at the first edited field; `copied`: how much of `json` is in it.
        let mut begun = false;
        let mut copied = 0;
        for f in &found {
            let field = &view.protect.fields[f.path];
            let text = &json[f.start..f.end];
            if text == b"null" || f.start < copied {
                continue;
            }
            let at = FieldAt {
                topic: &view.topic,
                path: &field.dotted,
            };
            self.shown.clear();
            if self.field(text, Fmt::Json, at, view) {
                if !begun {
                    begun = true;
                    out.reserve(value.len() + 16);
                    out.extend_from_slice(frame);
                }
                out.extend_from_slice(&json[copied..f.start]);
                out.extend_from_slice(&self.shown);
                copied = f.end;
            }
        }
        self.found = found;
        if begun {
            out.extend_from_slice(&json[copied..]);
        }
        begun
    }

    /// One field as shown, written to `self.shown` in `fmt`; `false` to leave it as it is.
    /// `text`: the field as stored (JSON: its text; Avro: its bytes, without the prefix).
    fn field(&mut self, text: &[u8], fmt: Fmt, at: FieldAt<'_>, view: &TopicView) -> bool {
        let inner = match fmt {
            Fmt::Json => (text.len() >= 2 && text[0] == b'"' && text[text.len() - 1] == b'"')
                .then(|| &text[1..text.len() - 1]),
            Fmt::Avro => Some(text),
        };
        let parsed = inner
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(envelope::parse);
        let Some(parsed) = parsed else {
            // Not sealed: readers see it; the others get the mask.
            return match &view.view {
                View::Plain => false,
                View::Masked(m) => {
                    self.counts.masked += 1;
                    mask_text(m, Some(text), fmt, &mut self.shown);
                    true
                }
            };
        };
        if let View::Masked(Mask::Text(t)) = &view.view {
            // No key needed to hide it.
            self.counts.masked += 1;
            string_value(t, fmt, &mut self.shown);
            return true;
        }
        // The key of the previous field, most often the same: no lock to take again.
        let last = self
            .last
            .as_ref()
            .filter(|(t, k)| **t == *at.topic && *k.kid == *parsed.kid)
            .map(|(_, k)| Ok(k.clone()));
        let key = match last.or_else(|| self.keys.and_then(|k| k.cached(at.topic, parsed.kid))) {
            Some(Ok(k)) => {
                if self.last.as_ref().is_none_or(|(_, l)| !Arc::ptr_eq(l, &k)) {
                    self.last = Some((at.topic.into(), k.clone()));
                }
                k
            }
            Some(Err(())) => return self.unreadable(view, fmt),
            None if self.settled || self.keys.is_none() => return self.unreadable(view, fmt),
            None => {
                self.need.keys.push((at.topic.into(), parsed.kid.into()));
                return false;
            }
        };
        match &view.view {
            View::Plain => {
                // JSON: the plaintext is the field's JSON text, spliced as it is; Avro: its
                // bytes, after a new length prefix.
                let opened = match fmt {
                    Fmt::Json => key.cipher.open_into(parsed, at, &mut self.shown),
                    Fmt::Avro => {
                        self.plain.clear();
                        let opened = key.cipher.open_into(parsed, at, &mut self.plain);
                        if opened.is_ok() {
                            avro_fields::write_value(&self.plain, &mut self.shown);
                        }
                        opened
                    }
                };
                match opened {
                    Ok(()) => {
                        self.counts.opened += 1;
                        true
                    }
                    Err(_) => self.unreadable(view, fmt),
                }
            }
            View::Masked(m) => match key.cipher.open(parsed, at) {
                Ok(plain) => {
                    self.counts.masked += 1;
                    mask_text(m, Some(&plain), fmt, &mut self.shown);
                    true
                }
                Err(_) => self.unreadable(view, fmt),
            },
        }
    }

    /// The mask of a field whose key is gone or does not open it (`***` without a mask).
    fn unreadable(&mut self, view: &TopicView, fmt: Fmt) -> bool {
        self.counts.unreadable += 1;
        self.shown.clear();
        match &view.protect.mask {
            Some(m) => mask_text(m, None, fmt, &mut self.shown),
            None => string_value("***", fmt, &mut self.shown),
        }
        true
    }
}

/// How a shown field is written: as JSON text, or as an Avro string or bytes value.
#[derive(Debug, Clone, Copy)]
enum Fmt {
    Json,
    Avro,
}

/// Writes `text` as a string value in `fmt`.
fn string_value(text: &str, fmt: Fmt, out: &mut Vec<u8>) {
    match fmt {
        Fmt::Json => json_string(text, out),
        Fmt::Avro => avro_fields::write_value(text.as_bytes(), out),
    }
}

fn json_string(text: &str, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.extend_from_slice(b"\"***\"");
    }
}

/// Writes the mask for a field whose plaintext is `plain` (`None`: unknown, as for a shredded
/// key; a hash mask then gives `***`). The hash is of the plaintext as stored: a JSON field's
/// text, an Avro field's bytes.
fn mask_text(mask: &Mask, plain: Option<&[u8]>, fmt: Fmt, out: &mut Vec<u8>) {
    match (mask, plain) {
        (Mask::Text(t), _) => string_value(t, fmt, out),
        (Mask::Hash, Some(p)) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, p);
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            string_value(&format!("sha256:{hex}"), fmt, out)
        }
        (Mask::Hash, None) => string_value("***", fmt, out),
    }
}
