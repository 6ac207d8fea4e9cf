//! A projecting Avro decoder: reads a Confluent-framed body written with one writer schema,
//! resolved to the contract's (reader) schema, and materialises only the fields the contract's
//! rules read. Everything else is walked and validated, then dropped.
//!
//! A [`Projection`] is compiled once per (writer schema, contract) pair, after the compatibility
//! check passes, and reused for every record. At run time it allocates nothing: field values are
//! [`Val`]s that borrow strings from the record bytes (or, for enum symbols and defaults, from the
//! projection itself), in a small stack array indexed by the contract's field paths.
//!
//! **What is validated**, on every record, whether or not a rule reads the field: varints are at
//! most 10 bytes and fit their type; lengths and block counts are non-negative and within the
//! record; strings are UTF-8; booleans are 0 or 1; enum and union indexes are in range; nesting is
//! at most [`MAX_DEPTH`] deep; and no bytes are left over. This matches what `apache-avro` accepts,
//! so a record is rejected as "does not decode" by both decoders or by neither (the differential
//! test below checks this on mutated records).
//!
//! **Resolution** follows the Avro specification, as the compatibility checker does: writer
//! fields are matched to reader fields by name, then by the reader field's aliases; a reader field
//! the writer lacks takes its default; int/long/float widen to the reader's type; bytes read as a
//! string must be UTF-8; a writer enum symbol the reader lacks becomes the reader's default symbol;
//! a non-union writer value read by a reader union takes the first branch of the same type, else
//! the first it can be promoted to.

use std::collections::HashMap;

use serde_json::Value as Json;
use smallvec::SmallVec;

use super::avro_compat::{
    names_match, promotable, type_name, Avro, Named, NamedType, Resolved, Schema,
};
use super::error::SchemaError;
use crate::fields::{RecordFields, Val};

/// How deep arrays, maps, unions and records may nest in one value.
pub const MAX_DEPTH: u32 = 64;

/// The most items a block of zero-byte items (e.g. an array of nulls) may claim.
pub const MAX_ZERO_WIDTH_ITEMS: i64 = 1 << 20;

/// A field path in the reader's names, as rules write it (`address.city`).
pub type Path = Box<[Box<str>]>;

/// A value fixed at compile time: a reader default, read without touching the record bytes.
#[derive(Debug, Clone, PartialEq)]
enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
    Other,
}

impl Const {
    fn val(&self) -> Val<'_> {
        match self {
            Const::Null => Val::Null,
            Const::Bool(b) => Val::Bool(*b),
            Const::Int(i) => Val::Int(*i),
            Const::Float(f) => Val::Float(*f),
            Const::Str(s) => Val::Str(s),
            Const::Other => Val::Other,
        }
    }
}

/// How to walk (validate and drop) a writer value.
#[derive(Debug)]
enum Skip {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    /// A length-prefixed byte string, UTF-8 checked when `utf8`.
    Bytes {
        utf8: bool,
    },
    Fixed(usize),
    Enum(usize),
    /// `zero_width`: the items take no bytes (null, fixed(0), records of those), so a block's
    /// items need no walking, and its count is bounded by [`MAX_ZERO_WIDTH_ITEMS`] instead.
    Array {
        item: Box<Skip>,
        zero_width: bool,
    },
    Map(Box<Skip>),
    Union(Box<[Skip]>),
    /// A writer record's fields, by index into [`Projection::records`] (records may recurse).
    Record(usize),
}

/// The reader's numeric type for an int or long the writer wrote.
#[derive(Debug, Clone, Copy)]
enum Number {
    Integer,
    /// Widened to float: the value is rounded to single precision, as a reader would see it.
    Float,
    Double,
}

impl Number {
    fn val(self, i: i64) -> Val<'static> {
        match self {
            Number::Integer => Val::Int(i),
            Number::Float => Val::Float(i as f32 as f64),
            Number::Double => Val::Float(i as f64),
        }
    }
}

/// How a writer value becomes the scalar a rule sees.
#[derive(Debug)]
enum Read {
    Null,
    Bool,
    Int {
        to: Number,
    },
    Long {
        to: Number,
    },
    Float,
    Double,
    /// A string (or bytes read as a string): UTF-8 checked.
    Str,
    /// Bytes (or a string read as bytes): not a scalar rules compare.
    Bytes,
    /// Writer symbol index → reader symbol (`None`: the reader has neither it nor a default).
    Enum(Box<[Option<Box<str>>]>),
    /// An array, map, record or fixed: validated, seen by rules as not a scalar.
    Other(Skip),
}

#[derive(Debug)]
enum Node {
    Skip(Skip),
    Leaf {
        slot: usize,
        read: Read,
    },
    Record {
        /// One node per writer field, in writer order.
        fields: Box<[Node]>,
        /// Reader fields the writer lacks that a rule reads: filled from the reader's defaults.
        defaults: Box<[(usize, Const)]>,
        /// The slot of the record itself, when a rule names it (it reads as not a scalar).
        whole: Option<usize>,
    },
    Union(Box<[Node]>),
}

/// A compiled (writer, reader, field paths) decoder. Compile with [`Projection::compile`].
#[derive(Debug)]
pub struct Projection {
    root: Node,
    records: Vec<Box<[Skip]>>,
    paths: Vec<Path>,
}

/// The fields a rule set reads from one record, by the projection's path order.
#[derive(Debug)]
pub struct Projected<'a> {
    paths: &'a [Path],
    vals: SmallVec<[Val<'a>; 12]>,
}

impl RecordFields for Projected<'_> {
    fn get(&self, path: &[Box<str>]) -> Val<'_> {
        self.paths
            .iter()
            .position(|p| **p == *path)
            .map_or(Val::Missing, |i| self.vals[i])
    }

    /// Projections serve SQL rules only: a contract with a CEL rule decodes whole records.
    fn to_cel(&self) -> cel::Value {
        cel::Value::Null
    }
}

/// Why a record does not decode.
pub type DecodeError = &'static str;

/// Where a string or bytes value lies in a body: its length prefix, then its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The length prefix's first byte.
    pub start: usize,
    /// The value's first byte (after the prefix).
    pub bytes: usize,
    /// One past its last byte.
    pub end: usize,
}

/// What a walk fills per slot: the values rules read, or where string values lie.
trait Slots<'a> {
    /// Whether `put` wants `at` (the judge's walk does not pay for finding it).
    const SPANS: bool;
    /// `at`: the bytes left before the value's length prefix, before its bytes, and after them,
    /// when it was written as a string or bytes.
    fn put(&mut self, slot: usize, val: Val<'a>, at: Option<[usize; 3]>);
}

impl<'a> Slots<'a> for [Val<'a>] {
    const SPANS: bool = false;
    fn put(&mut self, slot: usize, val: Val<'a>, _: Option<[usize; 3]>) {
        self[slot] = val;
    }
}

struct Spans<'o> {
    /// The body's length: a cursor's bytes left turn into offsets from its start.
    len: usize,
    out: &'o mut Vec<Option<Span>>,
}

impl<'a> Slots<'a> for Spans<'_> {
    const SPANS: bool = true;
    fn put(&mut self, slot: usize, _: Val<'a>, at: Option<[usize; 3]>) {
        self.out[slot] = at.map(|[before, value, after]| Span {
            start: self.len - before,
            bytes: self.len - value,
            end: self.len - after,
        });
    }
}

impl Projection {
    /// Compiles the decoder for records written with `writer`, read as `reader`, keeping `paths`
    /// (duplicates are kept once). The pair must already have passed the compatibility check; an
    /// error here means the schemas disagree in a way the check let through.
    pub fn compile(
        writer: &Schema,
        reader: &Schema,
        paths: &[&[Box<str>]],
    ) -> Result<Self, SchemaError> {
        let mut unique: Vec<Path> = Vec::new();
        for p in paths {
            if !unique.iter().any(|u| **u == **p) {
                unique.push(p.to_vec().into_boxed_slice());
            }
        }
        let mut c = Compiler {
            w: writer,
            r: reader,
            records: Vec::new(),
            record_index: HashMap::new(),
        };
        let wants: Vec<Want<'_>> = unique
            .iter()
            .enumerate()
            .map(|(slot, p)| Want { slot, rest: p })
            .collect();
        let root = c.node(&writer.root, &reader.root, &wants, 0)?;
        Ok(Projection {
            root,
            records: c.records,
            paths: unique,
        })
    }

    /// Decodes one Avro body (without the Confluent framing) into the fields the rules read.
    pub fn decode<'a>(&'a self, body: &'a [u8]) -> Result<Projected<'a>, DecodeError> {
        let mut vals: SmallVec<[Val<'a>; 12]> = SmallVec::from_elem(Val::Missing, self.paths.len());
        let mut cur = Cursor { buf: body };
        self.exec(&self.root, &mut cur, &mut vals[..], 0)?;
        if !cur.buf.is_empty() {
            return Err("bytes are left over after the record");
        }
        Ok(Projected {
            paths: &self.paths,
            vals,
        })
    }

    /// The slot of `path` in this projection's paths (what [`Projection::spans`] fills).
    pub fn slot(&self, path: &[Box<str>]) -> Option<usize> {
        self.paths.iter().position(|p| **p == *path)
    }

    /// Validates one Avro body as [`Projection::decode`] does, and notes in `out` (one entry per
    /// slot, `None` elsewhere) where each slot's value lies in `body` when the writer wrote it as
    /// a string or bytes: the range covers its length prefix and its bytes, so a caller can
    /// splice a new value of either type in its place. A null (a union's null branch), a
    /// reader default, and any other type leave `None`.
    pub fn spans(&self, body: &[u8], out: &mut Vec<Option<Span>>) -> Result<(), DecodeError> {
        out.clear();
        out.resize(self.paths.len(), None);
        let mut slots = Spans {
            len: body.len(),
            out,
        };
        let mut cur = Cursor { buf: body };
        self.exec(&self.root, &mut cur, &mut slots, 0)?;
        if !cur.buf.is_empty() {
            return Err("bytes are left over after the record");
        }
        Ok(())
    }

    fn exec<'a, S: Slots<'a> + ?Sized>(
        &'a self,
        node: &'a Node,
        cur: &mut Cursor<'a>,
        out: &mut S,
        depth: u32,
    ) -> Result<(), DecodeError> {
        match node {
            Node::Skip(s) => self.skip(s, cur, depth),
            Node::Leaf { slot, read } => {
                let before = cur.buf.len();
                let value = match read {
                    Read::Str | Read::Bytes if S::SPANS => {
                        let mut prefix = Cursor { buf: cur.buf };
                        prefix.long()?;
                        Some(prefix.buf.len())
                    }
                    _ => None,
                };
                let val = self.read(read, cur, depth)?;
                out.put(*slot, val, value.map(|v| [before, v, cur.buf.len()]));
                Ok(())
            }
            Node::Record {
                fields,
                defaults,
                whole,
            } => {
                let depth = deeper(depth)?;
                for f in fields.iter() {
                    self.exec(f, cur, out, depth)?;
                }
                for (slot, c) in defaults.iter() {
                    out.put(*slot, c.val(), None);
                }
                if let Some(slot) = whole {
                    out.put(*slot, Val::Other, None);
                }
                Ok(())
            }
            Node::Union(branches) => {
                let depth = deeper(depth)?;
                let branch = branches
                    .get(cur.index()?)
                    .ok_or("a union branch index is out of range")?;
                self.exec(branch, cur, out, depth)
            }
        }
    }

    fn read<'a>(
        &'a self,
        read: &'a Read,
        cur: &mut Cursor<'a>,
        depth: u32,
    ) -> Result<Val<'a>, DecodeError> {
        Ok(match read {
            Read::Null => Val::Null,
            Read::Bool => Val::Bool(cur.boolean()?),
            Read::Int { to } => to.val(cur.int()?),
            Read::Long { to } => to.val(cur.long()?),
            Read::Float => Val::Float(f32::from_le_bytes(cur.array()?) as f64),
            Read::Double => Val::Float(f64::from_le_bytes(cur.array()?)),
            Read::Str => Val::Str(cur.string()?),
            Read::Bytes => {
                cur.bytes()?;
                Val::Other
            }
            Read::Enum(symbols) => {
                match symbols
                    .get(cur.index()?)
                    .ok_or("an enum index is out of range")?
                {
                    Some(s) => Val::Str(s),
                    None => return Err("an enum symbol is unknown to the contract schema"),
                }
            }
            Read::Other(s) => {
                self.skip(s, cur, depth)?;
                Val::Other
            }
        })
    }

    fn skip(&self, s: &Skip, cur: &mut Cursor<'_>, depth: u32) -> Result<(), DecodeError> {
        match s {
            Skip::Null => Ok(()),
            Skip::Bool => cur.boolean().map(drop),
            Skip::Int => cur.int().map(drop),
            Skip::Long => cur.long().map(drop),
            Skip::Float => cur.take(4).map(drop),
            Skip::Double => cur.take(8).map(drop),
            Skip::Bytes { utf8: true } => cur.string().map(drop),
            Skip::Bytes { utf8: false } => cur.bytes().map(drop),
            Skip::Fixed(n) => cur.take(*n).map(drop),
            Skip::Enum(n) => match cur.index()? < *n {
                true => Ok(()),
                false => Err("an enum index is out of range"),
            },
            Skip::Array { item, zero_width } => {
                self.blocks(cur, depth, *zero_width, |p, cur, d| p.skip(item, cur, d))
            }
            Skip::Map(value) => self.blocks(cur, depth, false, |p, cur, d| {
                cur.string()?;
                p.skip(value, cur, d)
            }),
            Skip::Union(branches) => {
                let depth = deeper(depth)?;
                let b = branches
                    .get(cur.index()?)
                    .ok_or("a union branch index is out of range")?;
                self.skip(b, cur, depth)
            }
            Skip::Record(i) => {
                let depth = deeper(depth)?;
                for f in self.records[*i].iter() {
                    self.skip(f, cur, depth)?;
                }
                Ok(())
            }
        }
    }

    /// Walks the blocks of an array or map: a count (negative: followed by the block's byte
    /// size), items, until a zero count.
    fn blocks(
        &self,
        cur: &mut Cursor<'_>,
        depth: u32,
        zero_width: bool,
        mut item: impl FnMut(&Self, &mut Cursor<'_>, u32) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let depth = deeper(depth)?;
        loop {
            let mut count = cur.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count.checked_neg().ok_or("a block count is out of range")?;
                if cur.long()? < 0 {
                    return Err("a block size is negative");
                }
            }
            if zero_width {
                if count > MAX_ZERO_WIDTH_ITEMS {
                    return Err("a block claims too many items");
                }
                continue;
            }
            // Every item takes at least one byte.
            if count as u64 > cur.buf.len() as u64 {
                return Err("a block count exceeds the bytes left");
            }
            for _ in 0..count {
                item(self, cur, depth)?;
            }
        }
    }
}

fn deeper(depth: u32) -> Result<u32, DecodeError> {
    if depth >= MAX_DEPTH {
        Err("the value nests too deeply")
    } else {
        Ok(depth + 1)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err("the record ends early");
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A zigzag varint of at most 10 bytes. Bits past the 64th are dropped, as both Java's and
    /// `apache-avro`'s decoders drop them.
    fn long(&mut self) -> Result<i64, DecodeError> {
        let mut v: u64 = 0;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        Err(if self.buf.len() < 10 {
            "the record ends early"
        } else {
            "a varint is longer than 10 bytes"
        })
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        let v = self.long()?;
        if i32::try_from(v).is_err() {
            return Err("an int is out of range");
        }
        Ok(v)
    }

    /// A union branch or enum symbol index.
    fn index(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.int()?).map_err(|_| "a negative index")
    }

    fn boolean(&mut self) -> Result<bool, DecodeError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("a boolean is neither 0 nor 1"),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| "a length is negative")?;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a string is not UTF-8")
    }
}

/// A path still to be found below the current value, and the slot it fills.
#[derive(Clone, Copy)]
struct Want<'p> {
    slot: usize,
    rest: &'p [Box<str>],
}

struct Compiler<'s> {
    w: &'s Schema,
    r: &'s Schema,
    records: Vec<Box<[Skip]>>,
    record_index: HashMap<&'s str, usize>,
}

impl<'s> Compiler<'s> {
    fn node(
        &mut self,
        w: &'s Avro,
        r: &'s Avro,
        wants: &[Want<'_>],
        depth: u32,
    ) -> Result<Node, SchemaError> {
        if wants.is_empty() {
            return Ok(Node::Skip(self.skip(w)?));
        }
        if depth > MAX_DEPTH {
            return Err("the schema nests too deeply".into());
        }
        let (wr, rr) = (self.w.resolve(w), self.r.resolve(r));
        if let Resolved::Plain(Avro::Union(branches)) = wr {
            return Ok(Node::Union(
                branches
                    .iter()
                    .map(|b| self.node(b, r, wants, depth + 1))
                    .collect::<Result<_, _>>()?,
            ));
        }
        if let Resolved::Plain(Avro::Union(branches)) = rr {
            let branch = self.reader_branch(&wr, branches)?;
            return self.node(w, branch, wants, depth + 1);
        }
        let (leaves, below): (Vec<Want<'_>>, Vec<Want<'_>>) =
            wants.iter().partition(|w| w.rest.is_empty());
        if below.is_empty() {
            return Ok(Node::Leaf {
                slot: leaves[0].slot,
                read: self.read(&wr, &rr, w)?,
            });
        }
        let (
            Resolved::Named(NamedType {
                def: Named::Record { fields: wf },
                ..
            }),
            Resolved::Named(NamedType {
                def: Named::Record { fields: rf },
                ..
            }),
        ) = (wr, rr)
        else {
            // Paths below a value that is not a record (a null branch, say) are absent.
            return Ok(match leaves.first() {
                Some(leaf) => Node::Leaf {
                    slot: leaf.slot,
                    read: self.read(&wr, &rr, w)?,
                },
                None => Node::Skip(self.skip(w)?),
            });
        };
        // Reader field → writer field, as resolution (and the compatibility check) match them.
        let matched: Vec<Option<usize>> = rf
            .iter()
            .map(|f| {
                wf.iter().position(|x| x.name == f.name).or_else(|| {
                    f.aliases
                        .iter()
                        .find_map(|a| wf.iter().position(|x| x.name == *a))
                })
            })
            .collect();
        let wants_of = |name: &str| -> Vec<Want<'_>> {
            below
                .iter()
                .filter(|w| *w.rest[0] == *name)
                .map(|w| Want {
                    slot: w.slot,
                    rest: &w.rest[1..],
                })
                .collect()
        };
        let mut fields = Vec::with_capacity(wf.len());
        for (wi, f) in wf.iter().enumerate() {
            let reader = matched.iter().position(|m| *m == Some(wi));
            fields.push(match reader {
                Some(ri) => self.node(
                    &f.schema,
                    &rf[ri].schema,
                    &wants_of(&rf[ri].name),
                    depth + 1,
                )?,
                None => Node::Skip(self.skip(&f.schema)?),
            });
        }
        let mut defaults = Vec::new();
        for (ri, f) in rf.iter().enumerate() {
            if matched[ri].is_some() {
                continue;
            }
            for want in wants_of(&f.name) {
                let default = f.default.as_ref().ok_or_else(|| {
                    format!(
                        "reader field `{}` is missing from the writer and has no default",
                        f.name
                    )
                })?;
                defaults.push((want.slot, self.default_at(&f.schema, default, want.rest)));
            }
        }
        // A path that ends at a reader field absent from both schemas stays Missing.
        Ok(Node::Record {
            fields: fields.into(),
            defaults: defaults.into(),
            whole: leaves.first().map(|w| w.slot),
        })
    }

    /// The reader union branch a non-union writer value is read as, chosen as Java's resolver
    /// chooses it: the same type with the same full name, then the same type with a matching
    /// name (unqualified, or through the reader's aliases), then the first promotion.
    fn reader_branch(
        &self,
        wr: &Resolved<'_>,
        branches: &'s [Avro],
    ) -> Result<&'s Avro, SchemaError> {
        let wk = type_name(wr);
        let same_kind = |b: &&'s Avro| type_name(&self.r.resolve(b)) == wk;
        let named = |exact: bool| {
            move |b: &&'s Avro| match (self.r.resolve(b), wr) {
                (Resolved::Named(rn), Resolved::Named(wn)) if exact => rn.full_name == wn.full_name,
                (Resolved::Named(rn), Resolved::Named(wn)) => names_match(rn, wn),
                _ => true,
            }
        };
        branches
            .iter()
            .filter(same_kind)
            .find(named(true))
            .or_else(|| branches.iter().filter(same_kind).find(named(false)))
            .or_else(|| {
                branches
                    .iter()
                    .find(|b| promotable(type_name(&self.r.resolve(b)), wk))
            })
            .ok_or_else(|| {
                SchemaError::Unreadable(format!(
                    "the reader union has no branch for the writer's {wk}"
                ))
            })
    }

    fn read(
        &mut self,
        wr: &Resolved<'s>,
        rr: &Resolved<'s>,
        w: &'s Avro,
    ) -> Result<Read, SchemaError> {
        let to = match type_name(rr) {
            "float" => Number::Float,
            "double" => Number::Double,
            _ => Number::Integer,
        };
        Ok(match wr {
            Resolved::Plain(Avro::Null) => Read::Null,
            Resolved::Plain(Avro::Boolean) => Read::Bool,
            Resolved::Plain(Avro::Int) => Read::Int { to },
            Resolved::Plain(Avro::Long) => Read::Long { to },
            Resolved::Plain(Avro::Float) => Read::Float,
            Resolved::Plain(Avro::Double) => Read::Double,
            Resolved::Plain(Avro::String) if type_name(rr) == "bytes" => Read::Bytes,
            Resolved::Plain(Avro::String) => Read::Str,
            Resolved::Plain(Avro::Bytes) if type_name(rr) == "string" => Read::Str,
            Resolved::Plain(Avro::Bytes) => Read::Bytes,
            Resolved::Named(NamedType {
                def: Named::Enum { symbols: ws, .. },
                ..
            }) => {
                let Resolved::Named(NamedType {
                    def:
                        Named::Enum {
                            symbols: rs,
                            default,
                        },
                    ..
                }) = rr
                else {
                    return Err("a writer enum is read as a reader non-enum".into());
                };
                Read::Enum(
                    ws.iter()
                        .map(|s| {
                            rs.iter()
                                .find(|r| *r == s)
                                .or(default.as_ref())
                                .map(|s| s.as_str().into())
                        })
                        .collect(),
                )
            }
            _ => Read::Other(self.skip(w)?),
        })
    }

    /// The value at `rest` inside a reader default, as rules see it.
    fn default_at(&self, schema: &'s Avro, default: &Json, rest: &[Box<str>]) -> Const {
        let mut schema = Some(schema);
        let mut value = default;
        for segment in rest {
            let fields = schema.and_then(|s| match self.r.resolve(self.first_branch(s)) {
                Resolved::Named(NamedType {
                    def: Named::Record { fields },
                    ..
                }) => Some(fields),
                _ => None,
            });
            schema = fields
                .and_then(|fs| fs.iter().find(|f| *f.name == **segment))
                .map(|f| &f.schema);
            match value.get(&**segment) {
                Some(v) => value = v,
                None => return Const::Null,
            }
        }
        let float = schema.is_some_and(|s| {
            matches!(
                self.r.resolve(self.first_branch(s)),
                Resolved::Plain(Avro::Float | Avro::Double)
            )
        });
        match value {
            Json::Null => Const::Null,
            Json::Bool(b) => Const::Bool(*b),
            Json::Number(n) if float => n.as_f64().map_or(Const::Other, Const::Float),
            Json::Number(n) => n
                .as_i64()
                .map(Const::Int)
                .or_else(|| n.as_f64().map(Const::Float))
                .unwrap_or(Const::Other),
            Json::String(s) => Const::Str(s.as_str().into()),
            _ => Const::Other,
        }
    }

    /// A union's default is of its first branch.
    fn first_branch(&self, s: &'s Avro) -> &'s Avro {
        match s {
            Avro::Union(b) if !b.is_empty() => &b[0],
            other => other,
        }
    }

    /// True when every value of writer type `w` is encoded in zero bytes.
    fn zero_width(&self, w: &'s Avro, visiting: &mut Vec<&'s str>) -> bool {
        match self.w.resolve(w) {
            Resolved::Plain(a) => matches!(a, Avro::Null),
            Resolved::Named(n) => match &n.def {
                Named::Fixed { size } => *size == 0,
                Named::Enum { .. } => false,
                Named::Record { fields } => {
                    if visiting.contains(&n.full_name.as_str()) {
                        return false; // a record that contains itself is never empty
                    }
                    visiting.push(&n.full_name);
                    let zero = fields.iter().all(|f| self.zero_width(&f.schema, visiting));
                    visiting.pop();
                    zero
                }
            },
        }
    }

    fn skip(&mut self, w: &'s Avro) -> Result<Skip, SchemaError> {
        Ok(match self.w.resolve(w) {
            Resolved::Plain(a) => match a {
                Avro::Null => Skip::Null,
                Avro::Boolean => Skip::Bool,
                Avro::Int => Skip::Int,
                Avro::Long => Skip::Long,
                Avro::Float => Skip::Float,
                Avro::Double => Skip::Double,
                Avro::Bytes => Skip::Bytes { utf8: false },
                Avro::String => Skip::Bytes { utf8: true },
                Avro::Array(i) => Skip::Array {
                    item: Box::new(self.skip(i)?),
                    zero_width: self.zero_width(i, &mut Vec::new()),
                },
                Avro::Map(v) => Skip::Map(Box::new(self.skip(v)?)),
                Avro::Union(b) => {
                    Skip::Union(b.iter().map(|b| self.skip(b)).collect::<Result<_, _>>()?)
                }
                Avro::Ref(name) => return Err(SchemaError::UnknownType(name.to_string())),
            },
            Resolved::Named(n) => match &n.def {
                Named::Fixed { size } => {
                    Skip::Fixed(usize::try_from(*size).map_err(|_| "a fixed size is too large")?)
                }
                Named::Enum { symbols, .. } => Skip::Enum(symbols.len()),
                Named::Record { fields } => {
                    if let Some(&i) = self.record_index.get(n.full_name.as_str()) {
                        return Ok(Skip::Record(i));
                    }
                    // Register before compiling the fields: a record may contain itself.
                    let i = self.records.len();
                    self.records.push(Box::new([]));
                    self.record_index.insert(&n.full_name, i);
                    let skips = fields
                        .iter()
                        .map(|f| self.skip(&f.schema))
                        .collect::<Result<Box<[Skip]>, _>>()?;
                    self.records[i] = skips;
                    Skip::Record(i)
                }
            },
        })
    }
}

#[cfg(test)]
mod tests;
