//! CEL rules (`cel: <expression>`), as Confluent data-contract rules write them: the record is
//! bound to `message`.
//!
//! At load the expression is parsed, and every `message.a.b` path it selects is checked against the
//! contract's schema, as are the free variables (only `message` and macro-bound names). At run time
//! the record is converted to a CEL value (one conversion per record, for CEL rules only) and the
//! program runs in a child scope of a per-thread root context, so the standard function table is
//! built once per thread, not per record.

use std::collections::HashSet;

use cel::common::ast::Expr;
use cel::{Context, IdedExpr, Program, Value};

use super::{RecordFields, RuleError};
use crate::schema::shape::Shape;

thread_local! {
    static ROOT: Context<'static, 'static> = Context::default();
}

pub struct CelRule {
    program: Program,
}

impl std::fmt::Debug for CelRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelRule")
    }
}

impl CelRule {
    pub fn compile(text: &str, shape: Option<&Shape>) -> Result<CelRule, RuleError> {
        let program = Program::compile(text).map_err(|e| RuleError::CelSyntax(e.to_string()))?;
        let mut check = Check {
            shape,
            bound: HashSet::new(),
            errors: Vec::new(),
        };
        check.walk(program.expression());
        if let Some(e) = check.errors.into_iter().next() {
            return Err(e);
        }
        Ok(CelRule { program })
    }

    pub fn passes(&self, record: &dyn RecordFields) -> bool {
        let message = record.to_cel();
        ROOT.with(|root| {
            let mut scope = root.new_inner_scope();
            scope.add_variable_from_value("message", message);
            matches!(self.program.execute(&scope), Ok(Value::Bool(true)))
        })
    }
}

struct Check<'s> {
    shape: Option<&'s Shape>,
    bound: HashSet<String>,
    errors: Vec<RuleError>,
}

impl Check<'_> {
    fn walk(&mut self, e: &IdedExpr) {
        match &e.expr {
            Expr::Select(_) => {
                if let Some(path) = message_path(e) {
                    if let (Some(shape), false) = (self.shape, path.is_empty()) {
                        if let Err(err) = shape.lookup(&path) {
                            self.errors.push(RuleError::CelField {
                                path: path.join("."),
                                source: err,
                            });
                        }
                    }
                } else if let Expr::Select(s) = &e.expr {
                    self.walk(&s.operand);
                }
            }
            Expr::Ident(name) if name != "message" && !self.bound.contains(name) => {
                self.errors.push(RuleError::Invalid(format!(
                    "unknown variable `{name}`: the record is `message`"
                )));
            }
            Expr::Call(c) => {
                if let Some(t) = &c.target {
                    self.walk(t);
                }
                c.args.iter().for_each(|a| self.walk(a));
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range);
                self.bound.insert(c.iter_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.bound.insert(v.clone());
                }
                self.bound.insert(c.accu_var.clone());
                self.walk(&c.accu_init);
                self.walk(&c.loop_cond);
                self.walk(&c.loop_step);
                self.walk(&c.result);
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.walk(x)),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                        self.walk(&me.key);
                        self.walk(&me.value);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `message.a.b` → `["a", "b"]`; `None` when the select chain is not rooted at `message`.
fn message_path(e: &IdedExpr) -> Option<Vec<&str>> {
    match &e.expr {
        Expr::Ident(name) if name == "message" => Some(Vec::new()),
        Expr::Select(s) => {
            let mut p = message_path(&s.operand)?;
            p.push(&s.field);
            Some(p)
        }
        _ => None,
    }
}
