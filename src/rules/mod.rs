//! The rule language of `validity_rules`: SQL-style predicates and CEL, compiled once at policy
//! load into a [`Rule`], then evaluated per record on a borrowed view of the decoded value.
//!
//! **Null semantics.** SQL predicates use SQL's three-valued logic: a comparison, `IN`, `BETWEEN`
//! or `LIKE` over a missing or null field is UNKNOWN, `NOT UNKNOWN` is UNKNOWN, and `AND`/`OR`
//! follow Kleene logic. A record passes a rule only when the rule is TRUE. So a rule over a missing
//! or null field fails unless it is written to handle null (`x IS NULL`, `x IS NULL OR x > 0`).
//! A missing field and a null field are the same to every rule. In CEL rules, selecting a missing
//! field is an evaluation error, and an error or a non-boolean result fails the record.
//!
//! **Type checking.** When the contract has a schema, every field path a rule names must exist,
//! and comparisons must be between compatible types (numbers with numbers, strings with strings,
//! booleans with booleans). Violations are load errors, reported by `meshgate check`.

pub mod cel_rule;
pub mod sql;

use crate::schema::error::FieldError;
use crate::schema::shape::Shape;

pub use crate::fields::{RecordFields, Val};

/// How a rule was written in the policy file.
#[derive(Debug, Clone, Copy)]
pub enum RuleSource<'a> {
    Sql(&'a str),
    Cel(&'a str),
}

/// A compiled validity rule.
/// Why a validity rule does not compile: found when a policy set loads, reported at file:line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The SQL text does not parse.
    #[error("does not parse: {0}")]
    Syntax(String),
    /// The CEL text does not parse.
    #[error("CEL does not parse: {0}")]
    CelSyntax(String),
    /// A field the schema does not have.
    #[error("{0}")]
    Field(#[from] FieldError),
    /// A field written in "double quotes", which the schema does not have: most often a string
    /// meant as a literal.
    #[error("{0} (\"double quotes\" name a field; write strings in 'single quotes')")]
    QuotedField(FieldError),
    /// A CEL rule reads `message.<path>` that the schema does not have.
    #[error("message.{path}: {source}")]
    CelField { path: String, source: FieldError },
    /// A construct meshgate's rule language does not support, or types that do not fit.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for RuleError {
    fn from(message: String) -> Self {
        RuleError::Invalid(message)
    }
}

impl From<&str> for RuleError {
    fn from(message: &str) -> Self {
        RuleError::Invalid(message.to_string())
    }
}

#[derive(Debug)]
pub struct Rule {
    /// The rule as written (`cel: ` prefix included for CEL rules), for messages and metric labels.
    pub text: String,
    kind: RuleKind,
}

#[derive(Debug)]
enum RuleKind {
    Sql(sql::Pred),
    Cel(cel_rule::CelRule),
}

impl Rule {
    /// Parses and type-checks a rule against the contract's schema shape, if it has one.
    pub fn compile(source: RuleSource<'_>, shape: Option<&Shape>) -> Result<Rule, RuleError> {
        match source {
            RuleSource::Sql(text) => Ok(Rule {
                text: text.trim().to_string(),
                kind: RuleKind::Sql(sql::compile(text, shape)?),
            }),
            RuleSource::Cel(text) => Ok(Rule {
                text: format!("cel: {}", text.trim()),
                kind: RuleKind::Cel(cel_rule::CelRule::compile(text, shape)?),
            }),
        }
    }

    /// The field paths the rule reads, or `None` when it needs the whole record (CEL).
    pub fn field_paths(&self) -> Option<Vec<&[Box<str>]>> {
        match &self.kind {
            RuleKind::Sql(p) => {
                let mut out = Vec::new();
                p.field_paths(&mut out);
                Some(out)
            }
            RuleKind::Cel(_) => None,
        }
    }

    /// True when the record satisfies the rule.
    pub fn passes(&self, record: &dyn RecordFields) -> bool {
        match &self.kind {
            RuleKind::Sql(p) => p.eval(record) == Some(true),
            RuleKind::Cel(c) => c.passes(record),
        }
    }
}

#[cfg(test)]
mod tests;
