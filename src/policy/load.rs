//! Loading a policy directory: walk, parse, compile. Every problem is collected and reported as
//! `file:line: message`; a set with any error is not used.
//!
//! The walk takes every `*.yaml` / `*.yml` file below the directory, recursively, in path order,
//! following symlinks, and skipping entries whose names start with `.`. The last rule matters for
//! Kubernetes ConfigMap volumes: their files are symlinks into a hidden `..data` directory, which
//! would otherwise be loaded a second time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_saphyr::Spanned;

use super::mode::{Canary, Mode};
use super::model::{self, AcksDoc, CanaryDoc, Document, Format, ModeDoc, Requirement, RuleDoc};
use super::*;
use crate::protocol::records::Codec;
use crate::rules::{Rule, RuleSource};
use crate::schema::avro_data::{AvroReader, AvroSchema};
use crate::schema::avro_project::Path as FieldPath;
use crate::schema::json::JsonCheck;
use crate::schema::json_project::JsonProjection;
use crate::schema::shape::Shape;

const MAX_DEPTH: usize = 16;

/// The fixture directory of `meshgate test` inside a policy directory: not read as policies.
pub const CASES_DIR: &str = "tests";

/// Loads and compiles every policy file under `dir`.
pub fn load_dir(dir: &Path) -> Result<PolicySet, Vec<PolicyError>> {
    let files = policy_files(dir).map_err(|e| {
        vec![PolicyError {
            file: dir.display().to_string(),
            line: 0,
            message: e.to_string(),
        }]
    })?;
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => errors.push(PolicyError {
                file: path.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let mut set = compile_sources(&sources, &mut errors);
    if errors.is_empty() {
        set.content_hash = content_hash(dir, &sources, &set);
        Ok(set)
    } else {
        Err(errors)
    }
}

/// The policy set's version: see `PolicySet::content_hash`. Every part is length-prefixed, so no
/// two different inputs hash the same bytes.
pub fn content_hash(dir: &Path, sources: &[(PathBuf, String)], set: &PolicySet) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for (path, text) in sources {
        let relative = path.strip_prefix(dir).unwrap_or(path);
        part(relative.to_string_lossy().as_bytes());
        part(text.as_bytes());
    }
    for c in &set.contracts {
        part(c.name.as_bytes());
        if let Some(schema) = &c.schema {
            part(schema.text.as_bytes());
            for old in &schema.history {
                part(old.as_bytes());
            }
        }
    }
    h.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why the policy directory cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read the policy directory: {0}")]
    Unreadable(std::io::Error),
    #[error("not a directory")]
    NotADirectory,
    #[error("{}: nested deeper than {MAX_DEPTH} levels (a symlink loop?)", .0.display())]
    TooDeep(PathBuf),
    #[error("{}: {source}", path.display())]
    Listing {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The policy files under `dir`, in a stable order.
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, DirError> {
    let meta = std::fs::metadata(dir).map_err(DirError::Unreadable)?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory);
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DirError> {
    if depth > MAX_DEPTH {
        return Err(DirError::TooDeep(dir.to_path_buf()));
    }
    let listing = |source| DirError::Listing {
        path: dir.to_path_buf(),
        source,
    };
    let entries = std::fs::read_dir(dir).map_err(listing)?;
    for entry in entries {
        let entry = entry.map_err(listing)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // `meshgate test` fixtures live in the policy directory's own `tests/`.
        if depth == 0 && name == CASES_DIR {
            continue;
        }
        let path = entry.path();
        // fs::metadata follows symlinks: a ConfigMap's file symlinks load as files.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Test and fuzzing support: one policy file's text, compiled; panics on any error.
#[cfg(any(test, fuzzing))]
pub(crate) fn compile_text(file: &str, text: &str) -> PolicySet {
    let mut errors = Vec::new();
    let set = compile_sources(&[(PathBuf::from(file), text.to_string())], &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

/// The schema files contracts name (`file:`, `history:`), read by the loader before compiling:
/// path → text, or why it could not be read.
pub type SchemaFiles = HashMap<PathBuf, Result<String, SchemaFileError>>;

/// Why a schema file a contract names has no text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaFileError {
    #[error("{0}")]
    Read(Arc<std::io::Error>),
    #[error("not read by the loader")]
    NotRead,
}

/// One policy file, parsed.
struct Parsed<'a> {
    path: &'a Path,
    file: Arc<str>,
    docs: Vec<Option<Document>>,
    /// An ODCS file's documents (then `docs` is empty).
    odcs: Vec<Spanned<odcs::Node>>,
}

/// A file's documents: meshgate's own, or ODCS ones (a file holds one kind, so one of the two
/// lists is empty).
type FileDocs = (Vec<Option<Document>>, Vec<Spanned<odcs::Node>>);

fn parse_file(file: &str, text: &str) -> Result<FileDocs, PolicyError> {
    let own = match serde_saphyr::from_multiple::<Option<Document>>(text) {
        Ok(docs) => return Ok((docs, Vec::new())),
        Err(e) => e,
    };
    // Not meshgate's keys: ODCS, when a document says so.
    // YAML 1.2 core booleans for ODCS (`unit: y` is the text "y", years), as the JSON world reads
    // these files.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let parsed =
        serde_saphyr::from_multiple_with_options::<Option<Spanned<odcs::Node>>>(text, options);
    let Ok(trees) = parsed else {
        return Err(yaml_error(file, &own));
    };
    if !trees.iter().flatten().any(|t| odcs::is_odcs(&t.value)) {
        return Err(yaml_error(file, &own));
    }
    if let Some(other) = trees.iter().flatten().find(|t| !odcs::is_odcs(&t.value)) {
        return Err(PolicyError {
            file: file.to_string(),
            line: other.referenced.line(),
            message: "a file with ODCS documents (`kind: DataContract`) holds only ODCS \
                      documents: move this one to its own file"
                .into(),
        });
    }
    Ok((Vec::new(), trees.into_iter().flatten().collect()))
}

/// Parses, reads the schema files the contracts name, then compiles: the compiling itself
/// (`compile_parsed`) does no I/O.
pub fn compile_sources(sources: &[(PathBuf, String)], errors: &mut Vec<PolicyError>) -> PolicySet {
    let mut files_loaded = Vec::with_capacity(sources.len());
    let mut parsed = Vec::with_capacity(sources.len());
    for (path, text) in sources {
        let file: Arc<str> = Arc::from(path.display().to_string());
        files_loaded.push(file.to_string());
        match parse_file(&file, text) {
            Ok((docs, odcs)) => parsed.push(Parsed {
                path,
                file,
                docs,
                odcs,
            }),
            Err(e) => errors.push(e),
        }
    }
    let schemas = read_schema_files(&parsed);
    let mut set = compile_parsed(parsed, &schemas, errors);
    set.files = files_loaded;
    set
}

/// The loader's reads: every schema file a contract names, relative to its policy file.
fn read_schema_files(parsed: &[Parsed<'_>]) -> SchemaFiles {
    let mut files = SchemaFiles::new();
    for p in parsed {
        let dir = p.path.parent().unwrap_or(Path::new("."));
        let schemas = p.docs.iter().flatten().filter_map(|d| d.contract.as_ref());
        for schema in schemas.filter_map(|c| c.value.schema.as_ref()) {
            let named = schema.value.file.iter().chain(&schema.value.history);
            for f in named {
                let path = dir.join(&f.value);
                if let std::collections::hash_map::Entry::Vacant(e) = files.entry(path) {
                    let text = std::fs::read_to_string(e.key())
                        .map_err(|e| SchemaFileError::Read(Arc::new(e)));
                    e.insert(text);
                }
            }
        }
    }
    files
}

fn compile_parsed(
    parsed: Vec<Parsed<'_>>,
    schemas: &SchemaFiles,
    errors: &mut Vec<PolicyError>,
) -> PolicySet {
    let mut set = PolicySet::default();
    let mut naming_at: Option<Origin> = None;
    let mut topics_at: Option<Origin> = None;
    let mut access_at: Option<Origin> = None;
    let mut contract_names: HashMap<String, Origin> = HashMap::new();
    let mut zone_names: HashMap<String, Origin> = HashMap::new();
    let mut odcs_files = Vec::new();
    for Parsed {
        path,
        file,
        docs,
        odcs,
    } in parsed
    {
        if !odcs.is_empty() {
            odcs_files.push((path, file.clone(), odcs));
        }
        let mut cx = Cx {
            file: file.clone(),
            dir: path.parent().unwrap_or(Path::new(".")),
            schemas,
            errors,
        };
        for doc in docs.into_iter().flatten() {
            if let Some(n) = doc.naming {
                let origin = cx.origin(&n);
                if let Some(first) = &naming_at {
                    cx.err(
                        origin.line,
                        format!("`naming` is already defined at {first}"),
                    );
                } else if let Some(naming) = cx.naming(n.value, &origin) {
                    naming_at = Some(origin);
                    set.naming = Some(naming);
                }
            }
            if let Some(t) = doc.topics {
                let origin = cx.origin(&t);
                if let Some(first) = &topics_at {
                    cx.err(
                        origin.line,
                        format!("`topics` is already defined at {first}"),
                    );
                } else {
                    set.topics = Some(cx.topics(t.value, origin.clone()));
                    topics_at = Some(origin);
                }
            }
            if let Some(c) = doc.classification {
                let origin = cx.origin(&c);
                if let Some(first) = set.classification.as_ref().map(|c| c.origin.clone()) {
                    cx.err(
                        origin.line,
                        format!("`classification` is already defined at {first}"),
                    );
                } else {
                    set.classification = Some(cx.classification(c.value, origin));
                }
            }
            if let Some(a) = doc.access {
                let origin = cx.origin(&a);
                if let Some(first) = &access_at {
                    cx.err(
                        origin.line,
                        format!("`access` is already defined at {first}"),
                    );
                } else {
                    if a.value.hide_unauthorized_topics {
                        set.hide_unauthorized_topics = Some(origin.clone());
                    }
                    access_at = Some(origin);
                }
            }
            for p in doc.produce.into_iter().flatten() {
                let origin = cx.origin(&p);
                if let Some(rule) = cx.produce(p.value, origin) {
                    set.produce.push(rule);
                }
            }
            if let Some(z) = doc.zone {
                let origin = cx.origin(&z);
                let name = z.value.name.value.trim().to_string();
                if let Some(first) = zone_names.get(&name) {
                    cx.err(
                        origin.line,
                        format!("zone `{name}` is already defined at {first}"),
                    );
                } else {
                    zone_names.insert(name, origin.clone());
                    if let Some(zone) = cx.zone(z.value, origin) {
                        match set.zones.iter().find(|o| o.listen == zone.listen) {
                            Some(other) => cx.err(
                                zone.origin.line,
                                format!(
                                    "zone `{}`: listen {} is zone `{}`'s ({})",
                                    zone.name, zone.listen, other.name, other.origin
                                ),
                            ),
                            None => set.zones.push(Arc::new(zone)),
                        }
                    }
                }
            }
            if let Some(c) = doc.contract {
                let origin = cx.origin(&c);
                if let Some(contract) = cx.contract(c.value, origin.clone(), Vec::new(), None) {
                    cx.add_contract(&mut set, &mut contract_names, contract, origin);
                }
            }
        }
    }
    // ODCS documents last: their classifications are judged against the levels of the whole
    // set, which any file may define.
    let levels: Vec<String> = set.classification.as_ref().map_or_else(
        || DEFAULT_LEVELS.iter().map(|l| l.to_string()).collect(),
        |c| c.levels.clone(),
    );
    for (path, file, trees) in odcs_files {
        let mut cx = Cx {
            file,
            dir: path.parent().unwrap_or(Path::new(".")),
            schemas,
            errors,
        };
        for root in trees {
            cx.odcs(&root, &levels, &mut set, &mut contract_names);
        }
    }
    cross_check(&mut set, errors);
    check_classification(&set, errors);
    set
}

/// Every classification is a level the policy defines (`pii` when none does), and every field a
/// requirement names is classified. Spans files: the levels and the contracts may be apart.
fn check_classification(set: &PolicySet, errors: &mut Vec<PolicyError>) {
    let default: Vec<String> = DEFAULT_LEVELS.iter().map(|l| l.to_string()).collect();
    let levels = set.classification.as_ref().map_or(&default, |c| &c.levels);
    let at = |o: &Origin, message: String| PolicyError {
        file: o.file.to_string(),
        line: o.line,
        message,
    };
    for c in &set.contracts {
        let Some(schema) = &c.schema else { continue };
        for (path, level, origin) in &schema.classified {
            if !levels.contains(level) {
                errors.push(at(
                    origin,
                    format!(
                        "contract `{}`: field `{path}` is classified `{level}`, which is not a level: {levels:?}",
                        c.name
                    ),
                ));
            }
        }
        let Some(policy) = &set.classification else {
            continue;
        };
        let Some(shape) = &schema.shape else { continue };
        for path in crate::schema::classification::field_paths(shape) {
            let name = path.rsplit('.').next().unwrap_or(&path);
            for (pattern, level, where_) in &policy.require {
                if !pattern.is_match(name) {
                    continue;
                }
                let problem = match (schema.classification_of(&path), level) {
                    (None, _) => "is not classified".to_string(),
                    (Some(got), Some(want)) if got != want => {
                        format!("is classified `{got}`, not `{want}`")
                    }
                    _ => continue,
                };
                errors.push(at(
                    &schema.origin,
                    format!(
                        "contract `{}`: field `{path}` {problem}, but the classification requirement `{}` ({where_}) covers it",
                        c.name,
                        pattern.as_str().trim_start_matches("^(?:").trim_end_matches(")$")
                    ),
                ));
            }
        }
    }
}

/// Checks that span files: contract topics follow the naming policy and are claimed once.
fn cross_check(set: &mut PolicySet, errors: &mut Vec<PolicyError>) {
    let mut by_topic = HashMap::new();
    for (i, c) in set.contracts.iter().enumerate() {
        // A naming policy in shadow or off refuses no topic, so no contract topic either.
        let naming = set
            .naming
            .as_ref()
            .filter(|n| !matches!(n.mode, Mode::Shadow | Mode::Off));
        if let Some(n) = naming {
            if !n.pattern.is_match(&c.topic) && !n.is_exempt(&c.topic) {
                errors.push(PolicyError {
                    file: c.topic_origin.file.to_string(),
                    line: c.topic_origin.line,
                    message: format!(
                        "contract `{}`: topic `{}` does not match the naming pattern `{}` ({})",
                        c.name,
                        c.topic,
                        n.pattern.as_str(),
                        n.origin
                    ),
                });
            }
        }
        if let Some(&j) = by_topic.get(&c.topic) {
            let first: &Arc<Contract> = &set.contracts[j];
            errors.push(PolicyError {
                file: c.topic_origin.file.to_string(),
                line: c.topic_origin.line,
                message: format!(
                    "contract `{}` claims topic `{}`, already claimed by contract `{}` ({})",
                    c.name, c.topic, first.name, first.origin
                ),
            });
        } else {
            by_topic.insert(c.topic.clone(), i);
        }
    }
    set.by_topic = by_topic;
    set.restricts_consumers = set
        .contracts
        .iter()
        .any(|c| c.consumers.is_some() && !c.mode.is_off());
    set.protecting = set
        .contracts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.protect.is_some() && !c.mode.is_off())
        .map(|(i, _)| i)
        .collect();
    set.named_principals = set
        .contracts
        .iter()
        .flat_map(|c| {
            c.producers
                .iter()
                .chain(c.consumers.iter().flat_map(|r| r.principals.iter()))
                .chain(c.protect.iter().flat_map(|p| p.readers.iter()))
                .cloned()
        })
        .collect();
    build_registry(set, errors);
}

/// The built-in registry from the `format: avro` contracts (subject `<topic>-value`).
fn build_registry(set: &mut PolicySet, errors: &mut Vec<PolicyError>) {
    use crate::schema::registry::{Registry, Source};
    let mut sources = Vec::new();
    let mut origins = HashMap::new();
    for c in &set.contracts {
        let Some(s) = c.schema.as_ref().filter(|s| s.format == Format::Avro) else {
            continue;
        };
        let subject = format!("{}-value", c.topic);
        origins.insert(subject.clone(), s.origin.clone());
        let mut schemas: Vec<&str> = s.history.iter().map(String::as_str).collect();
        schemas.push(&s.text);
        sources.push(Source {
            subject,
            compatibility: s.compatibility.confluent_name(),
            schemas,
            pinned_id: s.pinned_id,
        });
    }
    match Registry::build(sources) {
        Ok(r) => {
            // Parse every registered version once; the current ones are the contracts' own.
            for c in &set.contracts {
                let Some(s) = c.schema.as_ref().filter(|s| s.format == Format::Avro) else {
                    continue;
                };
                let Some(versions) = r.versions(&format!("{}-value", c.topic)) else {
                    continue;
                };
                let last = versions.len().saturating_sub(1);
                for (i, v) in versions.iter().enumerate() {
                    let parsed = match (&s.avro, i == last) {
                        (Some(a), true) => Some(a.clone()),
                        _ => AvroSchema::parse(&v.schema).ok().map(Arc::new),
                    };
                    if let Some(p) = parsed {
                        set.avro_writers.insert(v.id, p);
                    }
                }
            }
            // Records written under a legacy id still find their writer schema.
            for (old, new) in r.legacy_ids() {
                if let Some(p) = set.avro_writers.get(&new).cloned() {
                    set.avro_writers.insert(old, p);
                }
            }
            set.registry = r;
        }
        Err(errs) => {
            for (subject, message) in errs {
                let o = &origins[&subject];
                errors.push(PolicyError {
                    file: o.file.to_string(),
                    line: o.line,
                    message: format!("registry subject `{subject}`: {message}"),
                });
            }
        }
    }
}

/// `file:line: message` from a YAML error (its first line, without the location prefix).
pub(crate) fn yaml_error(file: &str, e: &serde_saphyr::Error) -> PolicyError {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    };
    PolicyError {
        file: file.to_string(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        message,
    }
}

struct Cx<'a> {
    file: Arc<str>,
    dir: &'a Path,
    /// The schema files, as the loader read them.
    schemas: &'a SchemaFiles,
    errors: &'a mut Vec<PolicyError>,
}

impl Cx<'_> {
    /// A schema file's text, as the loader read it.
    fn schema_file(&self, path: &Path) -> Result<String, SchemaFileError> {
        match self.schemas.get(path) {
            Some(read) => read.clone(),
            None => Err(SchemaFileError::NotRead),
        }
    }

    /// Adds a compiled contract to the set, unless its name is taken.
    fn add_contract(
        &mut self,
        set: &mut PolicySet,
        names: &mut HashMap<String, Origin>,
        mut contract: Contract,
        origin: Origin,
    ) {
        if let Some(first) = names.get(&contract.name) {
            self.err(
                origin.line,
                format!("contract `{}` is already defined at {first}", contract.name),
            );
        } else {
            names.insert(contract.name.clone(), origin);
            contract.index = set.contracts.len();
            set.contracts.push(Arc::new(contract));
        }
    }

    /// One ODCS document: validated against the standard's JSON Schema, mapped, compiled as a
    /// contract (or kept as a document that names no topic).
    fn odcs(
        &mut self,
        root: &Spanned<odcs::Node>,
        levels: &[String],
        set: &mut PolicySet,
        names: &mut HashMap<String, Origin>,
    ) {
        let origin = self.origin(root);
        let invalid = odcs::validate(root);
        if !invalid.is_empty() {
            for (line, message) in invalid {
                self.err(line, truncate(&message, 300));
            }
            return;
        }
        match odcs::map(root, levels) {
            Err(errors) => {
                for (line, message) in errors {
                    self.err(line, message);
                }
            }
            Ok(odcs::Mapped::NoTopic(info)) => set.odcs_unenforced.push((origin, *info)),
            Ok(odcs::Mapped::Contract(m)) => {
                let odcs::MappedContract {
                    doc,
                    mut info,
                    slis,
                } = *m;
                let compiled =
                    self.contract(doc, origin.clone(), slis, Some(&mut info.not_enforced));
                if let Some(mut contract) = compiled {
                    contract.odcs = Some(Box::new(info));
                    self.add_contract(set, names, contract, origin);
                }
            }
        }
    }

    /// `zone:`: a listen address, principals, shares under valid and distinct aliases.
    fn zone(&mut self, z: model::ZoneDoc, origin: Origin) -> Option<zone::Zone> {
        let before = self.errors.len();
        let name = z.name.value.trim().to_string();
        let what = format!("zone `{name}`");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.err(
                z.name.referenced.line(),
                format!("{what}: a zone name is letters, digits, `-`, `_` and `.`"),
            );
        }
        let listen = z.listen.value.parse::<std::net::SocketAddr>().ok();
        if listen.is_none() {
            self.err(
                z.listen.referenced.line(),
                format!("{what}: listen `{}` is not HOST:PORT", z.listen.value),
            );
        }
        let mut principals: Vec<Box<str>> = Vec::new();
        if z.principals.value.is_empty() {
            self.err(
                z.principals.referenced.line(),
                format!("{what}: `principals` is empty: a zone serves its partner only"),
            );
        }
        for p in &z.principals.value {
            let text = p.value.trim();
            let valid = text
                .split_once(':')
                .is_some_and(|(kind, n)| !kind.is_empty() && !n.is_empty() && !n.contains(' '));
            if valid {
                principals.push(text.into());
            } else {
                self.err(
                    p.referenced.line(),
                    format!("{what}: principal `{text}` is not a principal like User:acme"),
                );
            }
        }
        let mut shares: Vec<zone::Share> = Vec::new();
        if z.shares.value.is_empty() {
            self.err(
                z.shares.referenced.line(),
                format!("{what}: `shares` is empty"),
            );
        }
        for s in &z.shares.value {
            let line = s.referenced.line();
            let topic = s.value.topic.trim().to_string();
            let alias = s
                .value
                .alias
                .as_deref()
                .map_or(topic.clone(), |a| a.trim().to_string());
            if !is_valid_topic_name(&topic) {
                self.err(
                    line,
                    format!("{what}: topic `{topic}` is not a valid Kafka topic name"),
                );
            } else if !is_valid_topic_name(&alias) {
                self.err(
                    line,
                    format!("{what}: alias `{alias}` is not a valid Kafka topic name"),
                );
            } else if shares.iter().any(|o| o.alias == alias) {
                self.err(line, format!("{what}: alias `{alias}` is given twice"));
            } else if shares.iter().any(|o| o.topic == topic) {
                self.err(line, format!("{what}: topic `{topic}` is shared twice"));
            } else {
                shares.push(zone::Share {
                    topic,
                    alias,
                    produce: s.value.produce,
                });
            }
        }
        let group_prefix = match z.group_prefix {
            Some(p) if p.value.is_empty() => {
                self.err(
                    p.referenced.line(),
                    format!("{what}: `group_prefix` must not be empty: it keeps the partner's groups apart"),
                );
                String::new()
            }
            Some(p) => p.value,
            None => format!("zone.{name}."),
        };
        let tls = z.tls.map(|t| {
            let t = t.value;
            (
                self.dir.join(&t.cert),
                self.dir.join(&t.key),
                t.client_ca.map(|c| self.dir.join(c)),
            )
        });
        if self.errors.len() > before {
            return None;
        }
        Some(zone::Zone {
            name,
            listen: listen?,
            broker_port_base: z.broker_port_base,
            advertised_host: z.advertised_host,
            tls,
            principals,
            group_prefix,
            shares,
            origin,
        })
    }

    fn origin<T>(&self, s: &Spanned<T>) -> Origin {
        Origin {
            file: self.file.clone(),
            line: s.referenced.line(),
        }
    }

    fn err(&mut self, line: u64, message: String) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line,
            message,
        });
    }

    fn regex(&mut self, s: &Spanned<String>, what: &str) -> Option<Regex> {
        match Regex::new(&s.value) {
            Ok(r) => Some(r),
            Err(e) => {
                let msg = e.to_string().lines().last().unwrap_or_default().to_string();
                self.err(
                    s.referenced.line(),
                    format!("{what} `{}` is not a valid regex: {msg}", s.value),
                );
                None
            }
        }
    }

    /// A policy's `mode:` and `canary:`, written as policy keys (spans known).
    fn spanned_mode(
        &mut self,
        mode: Option<Spanned<ModeDoc>>,
        canary: Option<Spanned<CanaryDoc>>,
        line: u64,
        inherited: &Mode,
        what: &str,
    ) -> Mode {
        let mode = mode.map(|m| (m.value, m.referenced.line()));
        let canary = canary.map(|c| (c.value, c.referenced.line().max(line)));
        self.mode(mode, canary, inherited, what)
    }

    /// `mode:` and `canary:` of a rule or a policy; `inherited` when neither is written.
    fn mode(
        &mut self,
        mode: Option<(ModeDoc, u64)>,
        canary: Option<(CanaryDoc, u64)>,
        inherited: &Mode,
        what: &str,
    ) -> Mode {
        match (mode, canary) {
            (None, None) => inherited.clone(),
            (Some((ModeDoc::Enforce, _)), None) => Mode::Enforce,
            (Some((ModeDoc::Shadow, _)), None) => Mode::Shadow,
            (Some((ModeDoc::Off, _)), None) => Mode::Off,
            (Some((ModeDoc::Canary, line)), None) => {
                self.err(
                    line,
                    format!(
                        "{what}: `mode: canary` needs `canary:` with `principals` and/or `percent`"
                    ),
                );
                inherited.clone()
            }
            (Some((ModeDoc::Canary, _)), Some((c, line))) => {
                let percent = c.percent.unwrap_or(0.0);
                if !(0.0..=100.0).contains(&percent) {
                    self.err(
                        line,
                        format!(
                            "{what}: canary `percent` is {percent}; it must be between 0 and 100"
                        ),
                    );
                }
                if c.principals.is_empty() && percent == 0.0 {
                    self.err(
                        line,
                        format!("{what}: `canary:` enforces for no one; give `principals` or a `percent` above 0"),
                    );
                }
                for p in &c.principals {
                    if !p
                        .split_once(':')
                        .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty())
                    {
                        self.err(
                            line,
                            format!("{what}: canary principal `{p}` is not `Type:name` (e.g. `User:orders-svc`)"),
                        );
                    }
                }
                Mode::Canary(Arc::new(Canary {
                    principals: c
                        .principals
                        .into_iter()
                        .map(String::into_boxed_str)
                        .collect(),
                    percent,
                }))
            }
            (mode, Some((_, line))) => {
                let written = mode.map_or("absent", |(m, _)| match m {
                    ModeDoc::Enforce => "enforce",
                    ModeDoc::Shadow => "shadow",
                    ModeDoc::Off => "off",
                    ModeDoc::Canary => "canary",
                });
                self.err(
                    line,
                    format!(
                        "{what}: `canary:` applies only with `mode: canary` (mode is {written})"
                    ),
                );
                inherited.clone()
            }
        }
    }

    fn classification(&mut self, c: model::ClassificationDoc, origin: Origin) -> Classification {
        let levels = c
            .levels
            .unwrap_or_else(|| DEFAULT_LEVELS.iter().map(|l| l.to_string()).collect());
        if levels.is_empty() {
            self.err(origin.line, "classification `levels` is empty".into());
        }
        let mut require = Vec::new();
        for r in c.require {
            let line = r.referenced.line();
            let doc = r.value;
            if let Some(l) = doc.level.as_ref().filter(|l| !levels.contains(l)) {
                self.err(
                    line,
                    format!("classification requirement: `{l}` is not a level: {levels:?}"),
                );
            }
            match Regex::new(&format!("^(?:{})$", doc.fields)) {
                Ok(re) => require.push((
                    re,
                    doc.level,
                    Origin {
                        file: self.file.clone(),
                        line,
                    },
                )),
                Err(e) => self.err(
                    line,
                    format!(
                        "classification requirement `{}` is not a valid regex: {e}",
                        doc.fields
                    ),
                ),
            }
        }
        Classification {
            levels,
            require,
            origin,
        }
    }

    fn naming(&mut self, n: model::NamingDoc, origin: &Origin) -> Option<Naming> {
        let mode = self.spanned_mode(n.mode, n.canary, origin.line, &Mode::Enforce, "naming");
        let pattern = self.regex(&n.topics.pattern, "naming pattern");
        let exempt: Vec<Regex> = n
            .topics
            .exempt
            .iter()
            .filter_map(|e| self.regex(e, "exempt pattern"))
            .collect();
        let before = self.errors.len();
        let mut pair = |doc: Option<model::NamingTopicsDoc>, what: &str| {
            doc.and_then(|g| {
                let pattern = self.regex(&g.pattern, &format!("{what} naming pattern"))?;
                let exempt: Vec<Regex> = g
                    .exempt
                    .iter()
                    .filter_map(|e| self.regex(e, &format!("{what} exempt pattern")))
                    .collect();
                Some((pattern, exempt))
            })
        };
        let groups = pair(n.groups, "group");
        let client_ids = pair(n.client_ids, "client id");
        (exempt.len() == n.topics.exempt.len() && self.errors.len() == before)
            .then_some(())
            .and(pattern)
            .map(|pattern| Naming {
                pattern,
                exempt,
                groups,
                client_ids,
                origin: origin.clone(),
                mode,
            })
    }

    fn range(&mut self, r: Option<Spanned<model::RangeDoc>>, what: &str) -> Range {
        let Some(r) = r else { return Range::default() };
        if let (Some(a), Some(b)) = (r.value.min, r.value.max) {
            if a > b {
                self.err(
                    r.referenced.line(),
                    format!("{what}: min {a} is above max {b}"),
                );
            }
        }
        Range {
            min: r.value.min,
            max: r.value.max,
        }
    }

    fn topics(&mut self, t: model::TopicsDoc, origin: Origin) -> TopicRules {
        let mode = self.spanned_mode(t.mode, t.canary, origin.line, &Mode::Enforce, "topics");
        let partitions = self.range(t.partitions, "partitions");
        let replication_factor = self.range(t.replication_factor, "replication_factor");
        let mut configs = Vec::new();
        for (key, rule) in t.configs {
            let line = rule.referenced.line();
            let doc = rule.value;
            if doc.min.is_none() && doc.max.is_none() && doc.allowed.is_none() {
                self.err(line, format!("config `{key}` needs min, max or allowed"));
            }
            configs.push(ConfigRule {
                key,
                min: doc.min,
                max: doc.max,
                allowed: doc.allowed,
                origin: Origin {
                    file: self.file.clone(),
                    line,
                },
            });
        }
        TopicRules {
            partitions,
            replication_factor,
            configs,
            require_contract: t.require_contract.unwrap_or(false),
            origin,
            mode,
        }
    }

    fn produce(&mut self, p: model::ProduceRuleDoc, origin: Origin) -> Option<ProduceRule> {
        let before = self.errors.len();
        let mode = self.spanned_mode(
            p.mode,
            p.canary,
            origin.line,
            &Mode::Enforce,
            "produce rule",
        );
        let topics = p
            .topics
            .as_ref()
            .and_then(|t| self.regex(t, "produce topics"));
        let acks = p.acks.as_ref().and_then(|a| {
            let v = match &a.value {
                AcksDoc::Word(w) if w == "all" => Some(-1),
                AcksDoc::Word(w) => w.parse::<i16>().ok(),
                AcksDoc::Number(n) => i16::try_from(*n).ok(),
            };
            match v {
                Some(-1) => Some(-1),
                Some(v @ (0 | 1)) => Some(v),
                _ => {
                    self.err(a.referenced.line(), "acks must be all, -1, 1 or 0".into());
                    None
                }
            }
        });
        let compression = p.compression.as_ref().map(|codecs| {
            codecs
                .iter()
                .filter_map(|c| {
                    let codec = Codec::from_name(&c.value);
                    if codec.is_none() {
                        self.err(
                            c.referenced.line(),
                            format!(
                                "unknown codec `{}` (none, gzip, snappy, lz4, zstd)",
                                c.value
                            ),
                        );
                    }
                    codec
                })
                .collect()
        });
        let max_record_bytes = p
            .max_record_bytes
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        if self.errors.len() > before {
            return None;
        }
        Some(ProduceRule {
            topics,
            acks,
            compression,
            idempotence_required: p.idempotence == Some(Requirement::Required),
            headers: p.headers,
            key_required: p.key == Some(Requirement::Required),
            max_record_bytes,
            origin,
            mode,
        })
    }

    /// Compiles a contract. `slis` come from ODCS quality rules that need a window; with
    /// `lenient` (ODCS), a rule meshgate's language cannot express is listed there as not
    /// enforced instead of being an error.
    fn contract(
        &mut self,
        c: model::ContractDoc,
        origin: Origin,
        slis: Vec<odcs::SliDoc>,
        mut lenient: Option<&mut Vec<odcs::NotEnforced>>,
    ) -> Option<Contract> {
        let before = self.errors.len();
        let name = c.name.value.trim().to_string();
        if name.is_empty() {
            self.err(c.name.referenced.line(), "contract name is empty".into());
        }
        if c.topic.value.is_empty() {
            self.err(c.topic.referenced.line(), "contract topic is empty".into());
        }
        let topic_origin = Origin {
            file: self.file.clone(),
            line: c.topic.referenced.line(),
        };
        let producers = c
            .producers
            .map(|p| self.principals(&name, "producers", p))
            .unwrap_or_default();
        let consumers = c.consumers.map(|p| {
            let mut out = Consumers::default();
            for entry in self.principals(&name, "consumers", p) {
                match entry.strip_prefix("Group:") {
                    Some(g) => out.groups.push(GroupPattern::parse(g)),
                    None => out.principals.push(entry),
                }
            }
            out
        });
        let what = format!("contract `{name}`");
        let mode = self.spanned_mode(c.mode, c.canary, origin.line, &Mode::Enforce, &what);
        let on_reject = c
            .on_reject
            .and_then(|o| self.on_reject(&what, &c.topic.value, o));
        let schema = c.schema.and_then(|s| self.schema(s));
        let protect = self.protect(
            &name,
            &c.topic.value,
            c.protect,
            c.pii_readers,
            c.mask_on_fetch,
            schema.as_ref(),
            on_reject.as_ref(),
        );
        let shape = schema.as_ref().and_then(|s| s.shape.as_ref());
        let mut sla = Sla::default();
        if let Some(s) = c.sla {
            let s = s.value;
            sla.availability = s
                .availability
                .and_then(|a| self.percent(&a, "availability"));
            sla.latency_p99 = s.latency_p99.and_then(|d| self.duration(&d, "latency_p99"));
            sla.freshness = s.freshness.and_then(|d| self.duration(&d, "freshness"));
        }
        let mut completeness_target = None;
        let mut rules = Vec::new();
        if let Some(q) = c.quality {
            completeness_target = q
                .completeness
                .and_then(|p| self.percent(&p, "completeness"));
            for r in q.validity_rules {
                let line = r.referenced.line();
                let (source, text, rule_mode) = match &r.value {
                    RuleDoc::Sql(t) => match t.trim().strip_prefix("cel:") {
                        Some(cel) => (RuleSource::Cel(cel), t.clone(), mode.clone()),
                        None => (RuleSource::Sql(t), t.clone(), mode.clone()),
                    },
                    RuleDoc::Full(f) => {
                        let rule_mode = self.mode(
                            f.mode.map(|m| (m, line)),
                            f.canary.clone().map(|c| (c, line)),
                            &mode,
                            &what,
                        );
                        match (&f.rule, &f.cel) {
                            (Some(t), None) => (RuleSource::Sql(t), t.clone(), rule_mode),
                            (None, Some(cel)) => {
                                (RuleSource::Cel(cel), format!("cel: {cel}"), rule_mode)
                            }
                            _ => {
                                self.err(
                                    line,
                                    format!("{what}: a validity rule needs exactly one of `rule:` (SQL) and `cel:`"),
                                );
                                continue;
                            }
                        }
                    }
                };
                match Rule::compile(source, shape) {
                    Ok(rule) => rules.push(ContractRule {
                        rule,
                        origin: Origin {
                            file: self.file.clone(),
                            line,
                        },
                        mode: rule_mode,
                    }),
                    Err(e) => match lenient.as_deref_mut() {
                        Some(notes) => notes.push(odcs::NotEnforced {
                            element: format!("quality `{text}`"),
                            line,
                            reason: format!("not expressible in meshgate's rule language: {e}"),
                        }),
                        None => self.err(line, format!("{what}: rule `{text}`: {e}")),
                    },
                }
            }
        }
        let mut compiled_slis = Vec::new();
        for s in slis {
            let kind = match s.kind {
                odcs::SliKindDoc::Bad { metric, predicate } => {
                    match Rule::compile(RuleSource::Sql(&predicate), shape) {
                        Ok(bad) => sli::SliKind::Bad { metric, bad },
                        Err(e) => {
                            if let Some(notes) = lenient.as_deref_mut() {
                                notes.push(odcs::NotEnforced {
                                    element: s.element,
                                    line: s.line,
                                    reason: format!(
                                        "`{predicate}` is not expressible in meshgate's rule \
                                         language: {e}"
                                    ),
                                });
                            }
                            continue;
                        }
                    }
                }
                odcs::SliKindDoc::RowCount => sli::SliKind::RowCount,
                odcs::SliKindDoc::Duplicates(fields) => sli::SliKind::Duplicates {
                    fields: fields
                        .iter()
                        .map(|f| f.split('.').map(Box::from).collect())
                        .collect(),
                    seen: Default::default(),
                },
            };
            let origin = Origin {
                file: self.file.clone(),
                line: s.line,
            };
            compiled_slis.push(sli::Sli::new(
                s.id, kind, s.target, s.unit, origin, s.element,
            ));
        }
        if self.errors.len() > before {
            return None;
        }
        let required_fields: Vec<Box<str>> = shape
            .and_then(Shape::fields)
            .map(|fields| {
                fields
                    .iter()
                    .filter(|f| !f.optional && !f.shape.accepts_null())
                    .map(|f| f.name.clone().into_boxed_str())
                    .collect()
            })
            .unwrap_or_default();
        let avro_reader = schema.as_ref().and_then(|s| s.avro.clone()).map(|avro| {
            AvroReader::new(
                avro,
                projected_paths(&rules, &compiled_slis, &required_fields),
            )
            .protecting(
                protect
                    .iter()
                    .flat_map(|p| &p.fields)
                    .map(|f| f.path.clone().into_boxed_slice())
                    .collect(),
            )
        });
        let json_projection = match schema.as_ref().and_then(|s| s.json.as_ref()) {
            Some(JsonCheck::Avro(shape)) => {
                projected_paths(&rules, &compiled_slis, &required_fields)
                    .and_then(|paths| JsonProjection::new(shape, paths))
            }
            _ => None,
        };
        Some(Contract {
            json_projection,
            producers,
            avro_reader,
            name,
            team: Arc::from(c.owner.as_str()),
            owner: c.owner,
            topic: c.topic.value,
            description: c.description,
            schema,
            sla,
            completeness_target,
            required_fields,
            rules,
            origin,
            topic_origin,
            index: 0,
            mode,
            on_reject,
            consumers,
            odcs: None,
            slis: compiled_slis,
            protect,
        })
    }

    /// `protect:`, `pii_readers:` and `mask_on_fetch:`, against the schema's classified fields.
    #[allow(clippy::too_many_arguments)]
    fn protect(
        &mut self,
        contract: &str,
        topic: &str,
        doc: Option<Spanned<crate::policy::protect::ProtectDoc>>,
        readers: Option<Spanned<Vec<Spanned<String>>>>,
        mask: Option<Spanned<String>>,
        schema: Option<&ContractSchema>,
        on_reject: Option<&OnReject>,
    ) -> Option<Arc<crate::policy::protect::Protect>> {
        let Some(doc) = doc else {
            for (line, key) in [
                (readers.as_ref().map(|r| r.referenced.line()), "pii_readers"),
                (mask.as_ref().map(|m| m.referenced.line()), "mask_on_fetch"),
            ] {
                if let Some(line) = line {
                    self.err(
                        line,
                        format!("contract `{contract}`: `{key}` needs `protect:`"),
                    );
                }
            }
            return None;
        };
        let line = doc.referenced.line();
        let readers = readers
            .map(|r| self.principals(contract, "pii_readers", r))
            .unwrap_or_default();
        let classified: Vec<(String, String)> = schema
            .map(|s| {
                s.classified
                    .iter()
                    .map(|(p, l, _)| (p.clone(), l.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let compiled = crate::policy::protect::compile(
            &doc.value,
            &classified,
            readers,
            mask.as_ref().map(|m| m.value.as_str()),
        );
        match compiled {
            Ok(p) => {
                // An Avro field is sealed in place: its type must hold the envelope's text.
                if let Some(avro) = schema.and_then(|s| s.avro.as_ref()) {
                    let mut unfit = false;
                    for f in &p.fields {
                        let path: Vec<&str> = f.path.iter().map(|s| &**s).collect();
                        if let Err(why) = crate::schema::avro_data::protectable(&avro.model, &path)
                        {
                            self.err(line, format!("contract `{contract}`: `protect`: {why}"));
                            unfit = true;
                        }
                    }
                    if unfit {
                        return None;
                    }
                }
                if p.encrypts() && on_reject.is_some() {
                    self.err(
                        line,
                        format!(
                            "contract `{contract}`: `on_reject.dead_letter` with `protect: encrypt` \
                             is not supported: refused records would reach the dead-letter topic \
                             with their `{topic}` fields in plaintext"
                        ),
                    );
                }
                Some(Arc::new(p))
            }
            Err(messages) => {
                for m in messages {
                    self.err(line, format!("contract `{contract}`: {m}"));
                }
                None
            }
        }
    }

    /// `on_reject:`: a dead-letter topic other than the contract's own, a known `respond`, and
    /// bounds above zero.
    fn on_reject(
        &mut self,
        what: &str,
        topic: &str,
        o: Spanned<model::OnRejectDoc>,
    ) -> Option<OnReject> {
        let line = o.referenced.line();
        let o = o.value;
        let before = self.errors.len();
        let dead_letter = o.dead_letter.trim();
        if dead_letter.is_empty() || dead_letter == topic {
            self.err(
                line,
                format!("{what}: `on_reject.dead_letter` must name a topic other than the contract's own"),
            );
        } else if !crate::policy::is_valid_topic_name(dead_letter) {
            self.err(
                line,
                format!("{what}: `on_reject.dead_letter`: `{dead_letter}` is not a valid Kafka topic name"),
            );
        }
        let respond = match o.respond.as_deref() {
            None | Some("error") => Respond::Error,
            Some("success") => Respond::Success,
            Some(other) => {
                self.err(
                    line,
                    format!("{what}: `on_reject.respond` is `error` or `success`, not `{other}`"),
                );
                Respond::Error
            }
        };
        let records = o
            .max_records_per_second
            .unwrap_or(OnReject::DEFAULT_RECORDS_PER_SECOND);
        let bytes = o
            .max_bytes_per_second
            .unwrap_or(OnReject::DEFAULT_BYTES_PER_SECOND);
        if records == 0 || bytes == 0 {
            self.err(line, format!("{what}: `on_reject` bounds must be above 0"));
        }
        (self.errors.len() == before).then(|| OnReject {
            dead_letter: Arc::from(dead_letter),
            respond,
            max_records_per_second: records,
            max_bytes_per_second: bytes,
        })
    }

    /// `producers:` or `consumers:`: principals as Kafka writes them, `Type:name`
    /// (`User:orders-svc`; `Group:analytics-*` among consumers).
    fn principals(
        &mut self,
        contract: &str,
        key: &str,
        p: Spanned<Vec<Spanned<String>>>,
    ) -> Vec<Box<str>> {
        let who = key.trim_end_matches('s');
        if p.value.is_empty() {
            let verb = if key == "producers" {
                "produce"
            } else {
                "read"
            };
            self.err(
                p.referenced.line(),
                format!("contract `{contract}`: `{key}` is empty; omit it to let anyone {verb}"),
            );
        }
        let mut out: Vec<Box<str>> = Vec::new();
        for entry in p.value {
            let text = entry.value.trim();
            let valid = text.split_once(':').is_some_and(|(kind, name)| {
                !kind.is_empty()
                    && kind.chars().all(|c| c.is_ascii_alphabetic())
                    && !name.is_empty()
                    && !name.contains(char::is_whitespace)
            });
            if !valid {
                self.err(
                    entry.referenced.line(),
                    format!(
                        "contract `{contract}`: {who} `{text}` is not a principal like User:orders-svc"
                    ),
                );
            } else if out.iter().any(|q| **q == *text) {
                self.err(
                    entry.referenced.line(),
                    format!("contract `{contract}`: {who} `{text}` is listed twice"),
                );
            } else {
                out.push(text.into());
            }
        }
        out
    }

    fn schema(&mut self, s: Spanned<model::SchemaDoc>) -> Option<ContractSchema> {
        let line = s.referenced.line();
        let doc = s.value;
        let text = match (&doc.file, &doc.definition) {
            (Some(_), Some(d)) => {
                self.err(
                    d.referenced.line(),
                    "schema has both `file` and `definition`; keep one".into(),
                );
                return None;
            }
            (None, None) => {
                self.err(line, "schema needs `file` or `definition`".into());
                return None;
            }
            (Some(f), None) => {
                let path = self.dir.join(&f.value);
                match self.schema_file(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        self.err(
                            f.referenced.line(),
                            format!("schema file `{}`: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
            (None, Some(d)) => match &d.value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        };
        let at = doc
            .file
            .as_ref()
            .map(|f| f.referenced.line())
            .unwrap_or(line);
        let mut avro = None;
        let (shape, json) = match doc.format {
            Format::Avro => match (Shape::from_avro(&text), AvroSchema::parse(&text)) {
                (Ok(shape), Ok(parsed)) => {
                    avro = Some(Arc::new(parsed));
                    (Some(shape), None)
                }
                (Err(e), _) | (_, Err(e)) => {
                    self.err(at, format!("Avro schema: {e}"));
                    return None;
                }
            },
            Format::Json => match JsonCheck::from_schema_text(&text) {
                Ok((check, shape)) => (Some(shape), Some(check)),
                Err(e) => {
                    self.err(at, e.to_string());
                    return None;
                }
            },
        };
        let mut history = Vec::new();
        for h in &doc.history {
            let path = self.dir.join(&h.value);
            match self.schema_file(&path) {
                Ok(t) => history.push(t),
                Err(e) => self.err(
                    h.referenced.line(),
                    format!("schema history file `{}`: {e}", path.display()),
                ),
            }
        }
        // Classifications: the schema's own annotations, then the section's map.
        let mut classified: Vec<(String, String, Origin)> =
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(json) => crate::schema::classification::annotations(&json)
                    .into_iter()
                    .map(|(p, l)| {
                        let origin = Origin {
                            file: self.file.clone(),
                            line: at,
                        };
                        (p, l, origin)
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
        for (path, level) in doc.classification {
            let line = level.referenced.line();
            let segments: Vec<&str> = path.split('.').collect();
            if let Some(Err(e)) = shape.as_ref().map(|s| s.lookup(&segments)) {
                self.err(line, format!("classification of `{path}`: {e}"));
                continue;
            }
            classified.retain(|(p, _, _)| *p != path);
            let origin = Origin {
                file: self.file.clone(),
                line,
            };
            classified.push((path, level.value, origin));
        }
        Some(ContractSchema {
            classified,
            history,
            pinned_id: doc.id,
            avro,
            format: doc.format,
            version: doc.version.map(|v| v.value),
            compatibility: doc.compatibility.unwrap_or(Compatibility::Backward),
            text,
            shape,
            json,
            origin: Origin {
                file: self.file.clone(),
                line,
            },
        })
    }

    fn percent(&mut self, s: &Spanned<String>, what: &str) -> Option<f64> {
        let v = s
            .value
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p));
        if v.is_none() {
            self.err(
                s.referenced.line(),
                format!("{what} `{}` is not a percentage like 99.9%", s.value),
            );
        }
        // Rounded so that 99.9% is 0.999, not 0.9990000000000001.
        v.map(|p| (p * 1e7).round() / 1e9)
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        let d = parse_duration(&s.value);
        if d.is_none() {
            self.err(
                s.referenced.line(),
                format!(
                    "{what} `{}` is not a duration like 500ms, 60s, 5m or 1h",
                    s.value
                ),
            );
        }
        d
    }
}

/// The field paths a contract reads from each record (its rules' and the completeness fields),
/// or `None` when a CEL rule reads the whole record.
fn projected_paths(
    rules: &[ContractRule],
    slis: &[sli::Sli],
    required: &[Box<str>],
) -> Option<Vec<FieldPath>> {
    let mut paths: Vec<FieldPath> = required
        .iter()
        .map(|f| vec![f.clone()].into_boxed_slice())
        .collect();
    let mut add = |p: &[Box<str>]| {
        if !paths.iter().any(|q| **q == *p) {
            paths.push(p.into());
        }
    };
    for r in rules {
        r.rule.field_paths()?.into_iter().for_each(&mut add);
    }
    for s in slis {
        match &s.kind {
            sli::SliKind::Bad { bad, .. } => bad.field_paths()?.into_iter().for_each(&mut add),
            sli::SliKind::Duplicates { fields, .. } => fields.iter().for_each(|f| add(f)),
            sli::SliKind::RowCount => {}
        }
    }
    Some(paths)
}

/// At most `max` bytes of `s` (on a character boundary), with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `500ms`, `60s`, `1.5s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(files: &[(&str, &str)]) -> (PolicySet, Vec<String>) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("meshgate-load-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("schemas")).unwrap();
        std::fs::write(
            dir.join("schemas/o.avsc"),
            r#"{"type":"record","name":"O","fields":[{"name":"total","type":"double"}]}"#,
        )
        .unwrap();
        let sources: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(n, t)| (dir.join(n), t.to_string()))
            .collect();
        let mut errors = Vec::new();
        let set = compile_sources(&sources, &mut errors);
        let errs = errors
            .iter()
            .map(|e| {
                format!(
                    "{}:{}: {}",
                    Path::new(&e.file).file_name().unwrap().to_string_lossy(),
                    e.line,
                    e.message
                )
            })
            .collect();
        (set, errs)
    }

    const CONTRACT: &str = "contract:\n  name: a\n  owner: t\n  topic: shop.a.v1\n  schema:\n    format: json\n    file: schemas/o.avsc\n  sla:\n    availability: 99.5%\n    latency_p99: 250ms\n    freshness: 2m\n  quality:\n    completeness: 98%\n    validity_rules:\n      - total > 0\n      - cel: message.total < 1000.0\n";

    #[test]
    fn a_full_contract_compiles_with_its_sla_and_rules() {
        let (set, errs) = compile(&[("a.yaml", CONTRACT)]);
        assert!(errs.is_empty(), "{errs:?}");
        let c = set.contract_for("shop.a.v1").unwrap();
        assert_eq!(c.sla.availability, Some(0.995));
        assert_eq!(c.sla.latency_p99, Some(Duration::from_millis(250)));
        assert_eq!(c.sla.freshness, Some(Duration::from_secs(120)));
        assert_eq!(c.completeness_target, Some(0.98));
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[1].rule.text, "cel: message.total < 1000.0");
        assert_eq!(c.rules[0].origin.line, 15);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let bad_contract = "contract:\n  name: b\n  owner: t\n  topic: shop.b.v1\n  schema:\n    format: json\n    file: schemas/missing.avsc\n  sla:\n    availability: lots\n    freshness: soon\n";
        let bad_rules = "contract:\n  name: c\n  owner: t\n  topic: shop.c.v1\n  schema: { format: json, file: schemas/o.avsc }\n  quality:\n    validity_rules:\n      - nope > 1\n      - total > 'x'\n";
        let produce = "produce:\n  - topics: '(['\n    acks: 2\n    compression: [brotli]\n";
        let (_, errs) = compile(&[
            ("b.yaml", bad_contract),
            ("c.yaml", bad_rules),
            ("p.yaml", produce),
        ]);
        let expect = [
            "b.yaml:7: schema file",
            "b.yaml:9: availability `lots`",
            "b.yaml:10: freshness `soon`",
            "c.yaml:8: contract `c`: rule `nope > 1`: the schema has no field `nope`",
            "c.yaml:9: contract `c`: rule `total > 'x'`",
            "p.yaml:2: produce topics `([`",
            "p.yaml:3: acks must be",
            "p.yaml:4: unknown codec `brotli`",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing `{e}` in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }

    #[test]
    fn producers_are_principals_and_checked_at_their_line() {
        let good = "contract:\n  name: p\n  owner: t\n  topic: shop.p.v1\n  producers: [User:orders-svc, Group:ops]\n";
        let (set, errs) = compile(&[("p.yaml", good)]);
        assert!(errs.is_empty(), "{errs:?}");
        let c = set.contract_for("shop.p.v1").unwrap();
        assert_eq!(
            &*c.producers,
            &["User:orders-svc".into(), "Group:ops".into()][..]
        );
        let plan = |who: &str| {
            set.plan_topic_as("shop.p.v1", who)
                .err()
                .map(|r| r.error_code)
        };
        assert_eq!(plan("User:orders-svc"), None);
        assert_eq!(plan("User:ANONYMOUS"), Some(29));
        assert_eq!(plan("User:orders-svc2"), Some(29));

        let bad = "contract:\n  name: q\n  owner: t\n  topic: shop.q.v1\n  producers:\n    - orders-svc\n    - User:a\n    - User:a\n    - 'User:'\n";
        let empty = "contract:\n  name: r\n  owner: t\n  topic: shop.r.v1\n  producers: []\n";
        let (_, errs) = compile(&[("q.yaml", bad), ("r.yaml", empty)]);
        let expect = [
            "q.yaml:6: contract `q`: producer `orders-svc` is not a principal",
            "q.yaml:8: contract `q`: producer `User:a` is listed twice",
            "q.yaml:9: contract `q`: producer `User:` is not a principal",
            "r.yaml:5: contract `r`: `producers` is empty",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.contains(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn classifications_come_from_annotations_and_the_schema_section_and_requirements_hold() {
        let levels = "classification:\n  levels: [pii, internal]\n  require:\n    - fields: 'email|phone|ssn'\n      level: pii\n";
        let contract = |extra: &str| {
            format!(
                "contract:\n  name: c\n  owner: o\n  topic: t\n  schema:\n    format: avro\n    definition: {{\"type\": \"record\", \"name\": \"R\", \"fields\": [{{\"name\": \"email\", \"type\": \"string\", \"classification\": \"pii\"}}, {{\"name\": \"customer\", \"type\": {{\"type\": \"record\", \"name\": \"C\", \"fields\": [{{\"name\": \"phone\", \"type\": \"string\"}}, {{\"name\": \"note\", \"type\": \"string\"}}]}}}}]}}\n{extra}"
            )
        };
        // customer.phone is required to be pii and is not classified.
        let (_, errs) = compile(&[("l.yaml", levels), ("c.yaml", &contract(""))]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("c.yaml:6: contract `c`: field `customer.phone` is not classified, but the classification requirement `email|phone|ssn` (")
                && errs[0].ends_with("l.yaml:4) covers it"),
            "{errs:?}"
        );
        // The schema section classifies it; a level that does not exist is an error at its line.
        let section =
            "    classification:\n      customer.phone: pii\n      customer.note: secret\n";
        let (_, errs) = compile(&[("l.yaml", levels), ("c.yaml", &contract(section))]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("c.yaml:10: contract `c`: field `customer.note` is classified `secret`, which is not a level"), "{errs:?}");
        let section = "    classification:\n      customer.phone: pii\n      customer.nope: pii\n";
        let (_, errs) = compile(&[("l.yaml", levels), ("c.yaml", &contract(section))]);
        assert!(
            errs[0].starts_with("c.yaml:10: classification of `customer.nope`:"),
            "{errs:?}"
        );
        let section = "    classification:\n      customer.phone: internal\n";
        let (_, errs) = compile(&[("l.yaml", levels), ("c.yaml", &contract(section))]);
        assert!(
            errs[0].contains("field `customer.phone` is classified `internal`, not `pii`"),
            "{errs:?}"
        );
        let section = "    classification:\n      customer.phone: pii\n";
        let (set, errs) = compile(&[("l.yaml", levels), ("c.yaml", &contract(section))]);
        assert!(errs.is_empty(), "{errs:?}");
        let schema = set.contracts[0].schema.as_ref().unwrap();
        assert_eq!(schema.classification_of("email"), Some("pii"));
        assert_eq!(schema.classification_of("customer.phone"), Some("pii"));
        assert_eq!(schema.classification_of("customer.note"), None);
        // Without a classification policy, `pii` is the one level and nothing is required.
        let (_, errs) = compile(&[("c.yaml", &contract(""))]);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn protection_is_compiled_against_the_classified_fields_and_mistakes_have_lines() {
        let contract = |format: &str, extra: &str| {
            format!(
                "contract:\n  name: c\n  owner: o\n  topic: t\n  schema:\n    format: {format}\n    definition: {{\"type\": \"record\", \"name\": \"R\", \"fields\": [{{\"name\": \"email\", \"type\": \"string\", \"classification\": \"pii\"}}, {{\"name\": \"id\", \"type\": \"long\"}}]}}\n{extra}"
            )
        };
        let good = "  protect: {pii: encrypt, deterministic: [email]}\n  pii_readers: [User:fraud]\n  mask_on_fetch: '***'\n";
        let (set, errs) = compile(&[("c.yaml", &contract("json", good))]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(set.protecting, vec![0]);
        let p = set.contracts[0].protect.as_ref().unwrap();
        assert_eq!(&*p.fields[0].dotted, "email");
        assert!(p.fields[0].deterministic);
        assert_eq!(p.readers, vec![Box::from("User:fraud")]);
        assert!(set.named_principals.contains("User:fraud"));

        let cases = [
            ("json", "  protect: {pii: hide}\n", "c.yaml:8: contract `c`: `protect.pii` is `encrypt` or `require_encrypted`"),
            ("json", "  pii_readers: [User:x]\n", "c.yaml:8: contract `c`: `pii_readers` needs `protect:`"),
            ("json", "  protect: {pii: encrypt}\n  pii_readers: [x]\n", "c.yaml:9: contract `c`: pii_reader `x` is not a principal"),
            ("json", "  protect: {pii: encrypt}\n  on_reject: {dead_letter: t.dlq}\n", "c.yaml:8: contract `c`: `on_reject.dead_letter` with `protect: encrypt` is not supported"),
        ];
        for (format, extra, want) in cases {
            let (_, errs) = compile(&[("c.yaml", &contract(format, extra))]);
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want}: {errs:#?}"
            );
        }

        // Avro: a string field is sealed in place, and the reader projects it for its span.
        let (set, errs) = compile(&[("c.yaml", &contract("avro", good))]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(set.protecting, vec![0]);
        // A long cannot hold an envelope.
        let long = contract("avro", "  protect: {pii: encrypt}\n").replace(
            "\"type\": \"string\", \"classification\"",
            "\"type\": \"long\", \"classification\"",
        );
        let (set, errs) = compile(&[("c.yaml", &long)]);
        assert_eq!(
            errs,
            vec![
                "c.yaml:8: contract `c`: `protect`: field `email` is long; an Avro field holds \
                  a ciphertext only as a string or bytes (or either with null)"
                    .to_string()
            ]
        );
        assert!(set.contracts.is_empty());
    }

    #[test]
    fn duplicates_and_naming_are_checked_across_files() {
        let naming = "naming:\n  topics:\n    pattern: '^shop\\.'\n";
        let twin = CONTRACT.replace("name: a", "name: a2");
        let off_name = CONTRACT
            .replace("name: a", "name: z")
            .replace("shop.a.v1", "Shop_Z");
        let (_, errs) = compile(&[
            ("a.yaml", CONTRACT),
            ("b.yaml", &twin),
            ("n.yaml", naming),
            ("n2.yaml", naming),
            ("z.yaml", &off_name),
        ]);
        assert!(
            errs.iter().any(|e| e.starts_with(
                "b.yaml:4: contract `a2` claims topic `shop.a.v1`, already claimed by contract `a`"
            )),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("n2.yaml:2: `naming` is already defined at")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "z.yaml:4: contract `z`: topic `Shop_Z` does not match the naming pattern"
            )),
            "{errs:#?}"
        );
    }

    #[test]
    fn yaml_errors_point_at_their_line_and_multi_document_files_work() {
        let (_, errs) = compile(&[("y.yaml", "naming:\n  topics:\n    pattern: '^a'\n---\ntopics:\n  partitions: { min: 3, mx: 4 }\n")]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("y.yaml:6: unknown field `mx`"),
            "{errs:?}"
        );
        let (set, errs) = compile(&[("ok.yaml", "naming:\n  topics:\n    pattern: '^a'\n---\ntopics:\n  require_contract: true\n---\n# empty\n")]);
        assert!(errs.is_empty(), "{errs:?}");
        assert!(set.naming.is_some() && set.topics.as_ref().unwrap().require_contract);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1000ms"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    const WITH_SCHEMA_FILE: &str = "contract:\n  name: c\n  owner: o\n  topic: shop.c.v1\n  schema: { format: json, file: nowhere/c.json, history: [nowhere/c0.json] }\n";

    #[test]
    fn compiling_reads_schemas_only_from_what_the_loader_read() {
        let sources = [(
            PathBuf::from("/no/such/dir/c.yaml"),
            WITH_SCHEMA_FILE.to_string(),
        )];
        let mut errors = Vec::new();
        let parsed: Vec<Parsed<'_>> = sources
            .iter()
            .map(|(path, text)| Parsed {
                path,
                file: Arc::from("c.yaml"),
                docs: serde_saphyr::from_multiple(text).unwrap(),
                odcs: Vec::new(),
            })
            .collect();
        // Files that exist nowhere on disk: only the map can provide them.
        let schemas = SchemaFiles::from([
            (
                PathBuf::from("/no/such/dir/nowhere/c.json"),
                Ok(r#"{"type": "object", "required": ["id"]}"#.to_string()),
            ),
            (
                PathBuf::from("/no/such/dir/nowhere/c0.json"),
                Ok(r#"{"type": "object"}"#.to_string()),
            ),
        ]);
        let set = compile_parsed(parsed, &schemas, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let schema = set.contracts[0].schema.as_ref().unwrap();
        assert!(schema.text.contains("required"));
        assert_eq!(schema.history.len(), 1);
    }

    #[test]
    fn a_schema_file_that_cannot_be_read_is_a_file_line_error() {
        let mut errors = Vec::new();
        compile_sources(
            &[(
                PathBuf::from("/no/such/dir/c.yaml"),
                WITH_SCHEMA_FILE.to_string(),
            )],
            &mut errors,
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|e| e
                .starts_with("/no/such/dir/c.yaml:5: schema file `/no/such/dir/nowhere/c.json`")),
            "{text:?}"
        );
    }
}
