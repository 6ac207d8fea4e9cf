//! SQL-style predicates: parsed with `sqlparser`, lowered into [`Pred`], type-checked against the
//! contract's schema, and evaluated with SQL's three-valued logic (`None` is UNKNOWN).
//!
//! Supported: `= != <> < <= > >=`, `AND OR NOT`, parentheses, `IS [NOT] NULL`, `IS [NOT]
//! TRUE/FALSE`, `[NOT] IN (...)`, `[NOT] BETWEEN ... AND ...`, `[NOT] LIKE` / `ILIKE` with `%` and
//! `_`, dotted paths (`address.city`), and string ('single-quoted'), number and boolean literals.
//! A bare boolean field is a predicate (`is_paid`). Anything else is a load error.

use std::cmp::Ordering;

use regex::Regex;
use sqlparser::ast::{self, BinaryOperator, InTarget, UnaryOperator, Value as SqlValue};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::{RecordFields, RuleError, Val};
use crate::schema::shape::{FieldType, Kind, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(Box<[Box<str>]>),
    Lit(Lit),
}

/// A compiled predicate.
#[derive(Debug, Clone)]
pub enum Pred {
    Const(bool),
    Cmp(CmpOp, Operand, Operand),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
    IsNull {
        operand: Operand,
        negated: bool,
    },
    In {
        operand: Operand,
        list: Vec<Lit>,
        negated: bool,
    },
    Between {
        operand: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    Like {
        operand: Operand,
        pattern: Regex,
        negated: bool,
    },
    BoolField(Operand),
    /// `p IS [NOT] TRUE|FALSE`: never UNKNOWN.
    Truth {
        inner: Box<Pred>,
        is: bool,
        negated: bool,
    },
}

/// Parses and type-checks `text`. `shape` is the contract schema, when it has one.
pub fn compile(text: &str, shape: Option<&Shape>) -> Result<Pred, RuleError> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| RuleError::Syntax(e.to_string()))?;
    let expr = parser
        .parse_expr()
        .map_err(|e| RuleError::Syntax(e.to_string()))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(RuleError::Syntax(format!(
            "unexpected `{}` after the expression",
            next.token
        )));
    }
    Lowering { shape }.pred(&expr)
}

struct Lowering<'s> {
    shape: Option<&'s Shape>,
}

impl Lowering<'_> {
    fn pred(&self, e: &ast::Expr) -> Result<Pred, RuleError> {
        use ast::Expr as E;
        Ok(match e {
            E::Nested(inner) => self.pred(inner)?,
            E::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => Pred::And(Box::new(self.pred(left)?), Box::new(self.pred(right)?)),
            E::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => Pred::Or(Box::new(self.pred(left)?), Box::new(self.pred(right)?)),
            E::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::Ne,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::Le,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::GtEq => CmpOp::Ge,
                    other => return Err(format!("operator `{other}` is not supported").into()),
                };
                let (l, r) = (self.operand(left)?, self.operand(right)?);
                self.comparable(&l, &r, op.symbol())?;
                Pred::Cmp(op, l, r)
            }
            E::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Pred::Not(Box::new(self.pred(expr)?)),
            E::IsNull(x) | E::IsNotNull(x) => {
                let operand = self.operand(x)?;
                self.type_of(&operand)?;
                Pred::IsNull {
                    operand,
                    negated: matches!(e, E::IsNotNull(_)),
                }
            }
            E::IsTrue(x) => Pred::Truth {
                inner: Box::new(self.pred(x)?),
                is: true,
                negated: false,
            },
            E::IsNotTrue(x) => Pred::Truth {
                inner: Box::new(self.pred(x)?),
                is: true,
                negated: true,
            },
            E::IsFalse(x) => Pred::Truth {
                inner: Box::new(self.pred(x)?),
                is: false,
                negated: false,
            },
            E::IsNotFalse(x) => Pred::Truth {
                inner: Box::new(self.pred(x)?),
                is: false,
                negated: true,
            },
            E::In {
                expr,
                target: InTarget::List(list),
                negated,
                ..
            } => {
                let operand = self.operand(expr)?;
                let mut lits = Vec::new();
                for item in list {
                    match self.operand(item)? {
                        Operand::Lit(Lit::Null) => {
                            return Err("NULL in an IN list never matches; use IS NULL".into())
                        }
                        Operand::Lit(l) => {
                            self.comparable(&operand, &Operand::Lit(l.clone()), "IN")?;
                            lits.push(l);
                        }
                        Operand::Field(_) => return Err("IN lists hold literals only".into()),
                    }
                }
                Pred::In {
                    operand,
                    list: lits,
                    negated: *negated,
                }
            }
            E::In { .. } => return Err("IN takes a list of literals, not a subquery".into()),
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let operand = self.operand(expr)?;
                let (low, high) = (self.operand(low)?, self.operand(high)?);
                self.comparable(&operand, &low, "BETWEEN")?;
                self.comparable(&operand, &high, "BETWEEN")?;
                Pred::Between {
                    operand,
                    low,
                    high,
                    negated: *negated,
                }
            }
            E::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => self.like(expr, pattern, *negated, false)?,
            E::ILike {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => self.like(expr, pattern, *negated, true)?,
            E::RLike {
                negated,
                expr,
                pattern,
                ..
            } => self.regexp(expr, pattern, *negated)?,
            E::Value(v) if matches!(v.value, SqlValue::Boolean(_)) => {
                Pred::Const(matches!(v.value, SqlValue::Boolean(true)))
            }
            E::Identifier(_) | E::CompoundIdentifier(_) => {
                let operand = self.operand(e)?;
                self.expect_kind(&operand, Kind::Bool, "a bare field used as a condition")?;
                Pred::BoolField(operand)
            }
            other => return Err(format!("`{other}` is not a supported condition").into()),
        })
    }

    fn like(
        &self,
        expr: &ast::Expr,
        pattern: &ast::Expr,
        negated: bool,
        ci: bool,
    ) -> Result<Pred, RuleError> {
        let operand = self.operand(expr)?;
        self.expect_kind(&operand, Kind::String, "LIKE")?;
        let Operand::Lit(Lit::Str(p)) = self.operand(pattern)? else {
            return Err("LIKE needs a 'string' pattern".into());
        };
        let mut re = String::from(if ci { "(?is)^" } else { "(?s)^" });
        for c in p.chars() {
            match c {
                '%' => re.push_str(".*"),
                '_' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        let pattern = Regex::new(&re).map_err(|e| format!("bad LIKE pattern: {e}"))?;
        Ok(Pred::Like {
            operand,
            pattern,
            negated,
        })
    }

    /// `x REGEXP 'p'` / `x RLIKE 'p'`: MySQL's semantics, a match anywhere in the string (anchor
    /// with `^` and `$` for the whole value), in Rust's regex syntax. ODCS `pattern` arguments
    /// compile to it.
    fn regexp(
        &self,
        expr: &ast::Expr,
        pattern: &ast::Expr,
        negated: bool,
    ) -> Result<Pred, RuleError> {
        let operand = self.operand(expr)?;
        self.expect_kind(&operand, Kind::String, "REGEXP")?;
        let Operand::Lit(Lit::Str(p)) = self.operand(pattern)? else {
            return Err("REGEXP needs a 'string' pattern".into());
        };
        let pattern = regex::RegexBuilder::new(&p)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("bad REGEXP pattern: {e}"))?;
        Ok(Pred::Like {
            operand,
            pattern,
            negated,
        })
    }

    fn operand(&self, e: &ast::Expr) -> Result<Operand, RuleError> {
        use ast::Expr as E;
        Ok(match e {
            E::Nested(inner) => self.operand(inner)?,
            E::Identifier(id) => self.field(&[id])?,
            E::CompoundIdentifier(ids) => self.field(&ids.iter().collect::<Vec<_>>())?,
            E::Value(v) => Operand::Lit(literal(&v.value, false)?),
            E::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match &**expr {
                E::Value(v) => Operand::Lit(literal(&v.value, true)?),
                _ => return Err("unary minus applies to number literals only".into()),
            },
            E::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } => self.operand(expr)?,
            other => return Err(format!("`{other}` is not a field or a literal").into()),
        })
    }

    fn field(&self, idents: &[&ast::Ident]) -> Result<Operand, RuleError> {
        let path: Box<[Box<str>]> = idents
            .iter()
            .map(|i| i.value.clone().into_boxed_str())
            .collect();
        if let Some(shape) = self.shape {
            let segments: Vec<&str> = path.iter().map(|s| &**s).collect();
            shape.lookup(&segments).map_err(|e| {
                if idents.iter().any(|i| i.quote_style == Some('"')) {
                    RuleError::QuotedField(e)
                } else {
                    RuleError::Field(e)
                }
            })?;
        }
        Ok(Operand::Field(path))
    }

    fn type_of(&self, o: &Operand) -> Result<FieldType, RuleError> {
        Ok(match o {
            Operand::Lit(Lit::Null) => FieldType {
                kind: Kind::Dynamic,
                nullable: true,
            },
            Operand::Lit(Lit::Bool(_)) => FieldType {
                kind: Kind::Bool,
                nullable: false,
            },
            Operand::Lit(Lit::Int(_) | Lit::Float(_)) => FieldType {
                kind: Kind::Number,
                nullable: false,
            },
            Operand::Lit(Lit::Str(_)) => FieldType {
                kind: Kind::String,
                nullable: false,
            },
            Operand::Field(path) => match self.shape {
                None => FieldType {
                    kind: Kind::Dynamic,
                    nullable: true,
                },
                Some(shape) => shape.lookup(&path.iter().map(|s| &**s).collect::<Vec<_>>())?,
            },
        })
    }

    fn expect_kind(&self, o: &Operand, want: Kind, what: &str) -> Result<(), RuleError> {
        let t = self.type_of(o)?;
        if t.kind == want || t.kind == Kind::Dynamic {
            Ok(())
        } else {
            Err(format!(
                "{what} needs a {}, but {} is a {}",
                kind_name(want),
                describe(o),
                kind_name(t.kind)
            )
            .into())
        }
    }

    fn comparable(&self, a: &Operand, b: &Operand, what: &str) -> Result<(), RuleError> {
        if matches!(a, Operand::Lit(Lit::Null)) || matches!(b, Operand::Lit(Lit::Null)) {
            return Err("a comparison with NULL is never true; use IS NULL or IS NOT NULL".into());
        }
        let (ta, tb) = (self.type_of(a)?, self.type_of(b)?);
        for (t, o) in [(ta, a), (tb, b)] {
            if matches!(t.kind, Kind::Record | Kind::Other) {
                return Err(format!(
                    "{} is a {}; rules compare scalar fields",
                    describe(o),
                    kind_name(t.kind)
                )
                .into());
            }
        }
        if ta.kind == tb.kind || ta.kind == Kind::Dynamic || tb.kind == Kind::Dynamic {
            Ok(())
        } else {
            Err(format!(
                "`{what}` compares {} ({}) with {} ({})",
                describe(a),
                kind_name(ta.kind),
                describe(b),
                kind_name(tb.kind)
            )
            .into())
        }
    }
}

fn literal(v: &SqlValue, negate: bool) -> Result<Lit, RuleError> {
    Ok(match v {
        SqlValue::Number(n, _) => {
            let text = if negate {
                format!("-{n}")
            } else {
                n.to_string()
            };
            match text.parse::<i64>() {
                Ok(i) => Lit::Int(i),
                Err(_) => Lit::Float(
                    text.parse::<f64>()
                        .map_err(|_| format!("`{text}` is not a number"))?,
                ),
            }
        }
        _ if negate => return Err("unary minus applies to number literals only".into()),
        SqlValue::SingleQuotedString(s) => Lit::Str(s.clone().into_boxed_str()),
        SqlValue::Boolean(b) => Lit::Bool(*b),
        SqlValue::Null => Lit::Null,
        other => return Err(format!("literal `{other}` is not supported").into()),
    })
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Number => "number",
        Kind::String => "string",
        Kind::Bool => "boolean",
        Kind::Record => "record",
        Kind::Other => "non-scalar value",
        Kind::Dynamic => "value",
    }
}

fn describe(o: &Operand) -> String {
    match o {
        Operand::Field(p) => format!("`{}`", p.join(".")),
        Operand::Lit(Lit::Null) => "NULL".into(),
        Operand::Lit(Lit::Bool(b)) => {
            if *b {
                "TRUE".into()
            } else {
                "FALSE".into()
            }
        }
        Operand::Lit(Lit::Int(i)) => i.to_string(),
        Operand::Lit(Lit::Float(f)) => f.to_string(),
        Operand::Lit(Lit::Str(s)) => format!("'{s}'"),
    }
}

impl Pred {
    /// Every field path the predicate reads, in order of appearance (with repeats).
    pub fn field_paths<'p>(&'p self, out: &mut Vec<&'p [Box<str>]>) {
        let mut operand = |o: &'p Operand| {
            if let Operand::Field(path) = o {
                out.push(path);
            }
        };
        match self {
            Pred::Const(_) => {}
            Pred::Cmp(_, a, b) => {
                operand(a);
                operand(b);
            }
            Pred::And(a, b) | Pred::Or(a, b) => {
                a.field_paths(out);
                b.field_paths(out);
            }
            Pred::Not(p) | Pred::Truth { inner: p, .. } => p.field_paths(out),
            Pred::IsNull { operand: o, .. }
            | Pred::In { operand: o, .. }
            | Pred::Like { operand: o, .. }
            | Pred::BoolField(o) => operand(o),
            Pred::Between {
                operand: o,
                low,
                high,
                ..
            } => {
                operand(o);
                operand(low);
                operand(high);
            }
        }
    }

    /// Three-valued evaluation: `Some(true)`, `Some(false)`, or `None` for UNKNOWN.
    pub fn eval(&self, r: &dyn RecordFields) -> Option<bool> {
        match self {
            Pred::Const(b) => Some(*b),
            Pred::Cmp(op, a, b) => {
                let ord = compare(value(r, a), value(r, b))?;
                Some(match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::Ne => ord != Ordering::Equal,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Le => ord != Ordering::Greater,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Ge => ord != Ordering::Less,
                })
            }
            Pred::And(a, b) => match (a.eval(r), b.eval(r)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Pred::Or(a, b) => match (a.eval(r), b.eval(r)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Pred::Not(p) => p.eval(r).map(|b| !b),
            Pred::IsNull { operand, negated } => {
                let is_null = matches!(value(r, operand), Val::Missing | Val::Null);
                Some(is_null != *negated)
            }
            Pred::In {
                operand,
                list,
                negated,
            } => {
                let v = value(r, operand);
                if matches!(v, Val::Missing | Val::Null) {
                    return None;
                }
                let mut found = false;
                for l in list {
                    match compare(v, lit_val(l)) {
                        Some(Ordering::Equal) => {
                            found = true;
                            break;
                        }
                        Some(_) => {}
                        None => return None,
                    }
                }
                Some(found != *negated)
            }
            Pred::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let v = value(r, operand);
                let lo = compare(v, value(r, low))?;
                let hi = compare(v, value(r, high))?;
                Some((lo != Ordering::Less && hi != Ordering::Greater) != *negated)
            }
            Pred::Like {
                operand,
                pattern,
                negated,
            } => match value(r, operand) {
                Val::Str(s) => Some(pattern.is_match(s) != *negated),
                _ => None,
            },
            Pred::Truth { inner, is, negated } => Some((inner.eval(r) == Some(*is)) != *negated),
            Pred::BoolField(o) => match value(r, o) {
                Val::Bool(b) => Some(b),
                _ => None,
            },
        }
    }
}

fn value<'a>(r: &'a dyn RecordFields, o: &'a Operand) -> Val<'a> {
    match o {
        Operand::Field(path) => r.get(path),
        Operand::Lit(l) => lit_val(l),
    }
}

fn lit_val(l: &Lit) -> Val<'_> {
    match l {
        Lit::Null => Val::Null,
        Lit::Bool(b) => Val::Bool(*b),
        Lit::Int(i) => Val::Int(*i),
        Lit::Float(f) => Val::Float(*f),
        Lit::Str(s) => Val::Str(s),
    }
}

/// Orders two scalars of the same kind; `None` (UNKNOWN) for null, missing, or mismatched kinds.
fn compare(a: Val<'_>, b: Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(&y)),
        (Val::Int(x), Val::Float(y)) => (x as f64).partial_cmp(&y),
        (Val::Float(x), Val::Int(y)) => x.partial_cmp(&(y as f64)),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(&y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(&y)),
        _ => None,
    }
}
