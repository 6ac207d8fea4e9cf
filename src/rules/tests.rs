//! The rule language, operator by operator, with null handling and load-time type errors.

use serde_json::json;

use super::{Rule, RuleError, RuleSource};
use crate::schema::shape::Shape;

const SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[
    {"name":"order_id","type":"string"},
    {"name":"customer_id","type":["null","string"],"default":null},
    {"name":"order_total","type":"double"},
    {"name":"qty","type":"int"},
    {"name":"paid","type":"boolean"},
    {"name":"status","type":{"type":"enum","name":"S","symbols":["NEW","PAID","SHIPPED"]}},
    {"name":"address","type":["null",{"type":"record","name":"A","fields":[
        {"name":"city","type":"string"},{"name":"zip","type":["null","string"]}]}],"default":null},
    {"name":"lines","type":{"type":"array","items":"string"}}]}"#;

fn shape() -> Shape {
    Shape::from_avro(SCHEMA).unwrap()
}

fn sql(text: &str) -> Rule {
    Rule::compile(RuleSource::Sql(text), Some(&shape())).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn cel(text: &str) -> Rule {
    Rule::compile(RuleSource::Cel(text), Some(&shape())).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn sql_err(text: &str) -> String {
    Rule::compile(RuleSource::Sql(text), Some(&shape()))
        .expect_err(text)
        .to_string()
}

fn order() -> serde_json::Value {
    json!({"order_id":"o-1","customer_id":"c-7","order_total":42.5,"qty":3,"paid":true,
           "status":"PAID","address":{"city":"Lyon","zip":null},"lines":["a"]})
}

fn with(field: &str, v: serde_json::Value) -> serde_json::Value {
    let mut o = order();
    o[field] = v;
    o
}

fn without(field: &str) -> serde_json::Value {
    let mut o = order();
    o.as_object_mut().unwrap().remove(field);
    o
}

#[test]
fn the_seed_rules_accept_and_reject() {
    let total = sql("order_total > 0");
    let customer = sql("customer_id is not null");
    assert!(total.passes(&order()));
    assert!(customer.passes(&order()));
    assert!(!total.passes(&with("order_total", json!(0))));
    assert!(!total.passes(&with("order_total", json!(-3.5))));
    assert!(!customer.passes(&with("customer_id", json!(null))));
    assert!(!customer.passes(&without("customer_id")));
}

#[test]
fn comparisons_cover_every_operator_and_type() {
    let o = order();
    for (rule, expect) in [
        ("qty = 3", true),
        ("qty != 3", false),
        ("qty <> 4", true),
        ("qty < 4", true),
        ("qty <= 3", true),
        ("qty > 3", false),
        ("qty >= 3", true),
        ("order_total = 42.5", true),
        ("qty > 2.5", true),
        ("order_total > -1", true),
        ("status = 'PAID'", true),
        ("status > 'NEW'", true),
        ("order_id = 'o-2'", false),
        ("paid = true", true),
        ("paid", true),
        ("NOT paid", false),
        ("address.city = 'Lyon'", true),
        ("0 < qty", true),
    ] {
        assert_eq!(sql(rule).passes(&o), expect, "{rule}");
    }
}

#[test]
fn boolean_logic_and_parentheses() {
    let o = order();
    assert!(sql("qty > 1 AND status = 'PAID'").passes(&o));
    assert!(!sql("qty > 5 AND status = 'PAID'").passes(&o));
    assert!(sql("qty > 5 OR status = 'PAID'").passes(&o));
    assert!(!sql("NOT (qty > 1 OR paid)").passes(&o));
    assert!(sql("(qty > 5 OR qty < 4) AND NOT status = 'NEW'").passes(&o));
}

#[test]
fn in_between_and_like() {
    let o = order();
    assert!(sql("status IN ('PAID', 'SHIPPED')").passes(&o));
    assert!(!sql("status NOT IN ('PAID', 'SHIPPED')").passes(&o));
    assert!(sql("qty IN (1, 2, 3)").passes(&o));
    assert!(sql("qty BETWEEN 1 AND 3").passes(&o));
    assert!(!sql("qty BETWEEN 4 AND 9").passes(&o));
    assert!(sql("qty NOT BETWEEN 4 AND 9").passes(&o));
    assert!(sql("order_id LIKE 'o-%'").passes(&o));
    assert!(sql("order_id LIKE 'o-_'").passes(&o));
    assert!(!sql("order_id LIKE 'x%'").passes(&o));
    assert!(sql("order_id NOT LIKE 'x%'").passes(&o));
    assert!(sql("address.city ILIKE 'LY%'").passes(&o));
    assert!(
        !sql("order_id LIKE 'o.1'").passes(&o),
        "regex metacharacters are literal"
    );
    // REGEXP / RLIKE: a regex match anywhere, anchored only when the pattern says so.
    assert!(sql("order_id REGEXP '^o-[0-9]+$'").passes(&o));
    assert!(sql("order_id RLIKE '-1'").passes(&o));
    assert!(!sql("order_id REGEXP '^x'").passes(&o));
    assert!(sql("order_id NOT REGEXP '^x'").passes(&o));
    assert!(sql_err("qty REGEXP '1'").contains("REGEXP"));
    assert!(sql_err("order_id REGEXP '('").contains("bad REGEXP pattern"));
}

#[test]
fn null_and_missing_fields_fail_every_rule_except_null_checks() {
    for rec in [with("customer_id", json!(null)), without("customer_id")] {
        for rule in [
            "customer_id = 'c-7'",
            "customer_id != 'c-7'",
            "NOT customer_id = 'c-7'",
            "customer_id IN ('c-7')",
            "customer_id NOT IN ('c-7')",
            "customer_id LIKE '%'",
            "customer_id BETWEEN 'a' AND 'z'",
            "customer_id IS NOT NULL",
        ] {
            assert!(!sql(rule).passes(&rec), "{rule} must fail on {rec}");
        }
        assert!(sql("customer_id IS NULL").passes(&rec));
        assert!(sql("customer_id IS NULL OR customer_id LIKE 'c-%'").passes(&rec));
        assert!(!sql("customer_id IS NULL AND qty > 10").passes(&rec));
    }
    // A null nested parent is null all the way down.
    let rec = with("address", json!(null));
    assert!(!sql("address.city = 'Lyon'").passes(&rec));
    assert!(sql("address.city IS NULL").passes(&rec));
    // IS TRUE / IS NOT TRUE never yield UNKNOWN.
    let rec = with("paid", json!(null));
    assert!(!sql("paid IS TRUE").passes(&rec));
    assert!(sql("paid IS NOT TRUE").passes(&rec));
    assert!(!sql("paid IS FALSE").passes(&rec));
    assert!(sql("paid IS NOT FALSE").passes(&rec));
}

#[test]
fn values_of_the_wrong_runtime_type_fail() {
    assert!(!sql("qty > 1").passes(&with("qty", json!("3"))));
    assert!(!sql("paid").passes(&with("paid", json!(1))));
}

#[test]
fn type_errors_are_caught_at_load() {
    for (rule, needle) in [
        ("nope > 0", "no field `nope`"),
        ("address.street = 'x'", "`address` has no field `street`"),
        ("order_total > 'x'", "compares"),
        ("status = 3", "compares"),
        ("paid > 1", "compares"),
        ("order_id LIKE 'x%' AND qty LIKE '1'", "LIKE needs a string"),
        ("qty", "needs a boolean"),
        ("lines = 'a'", "scalar"),
        ("address = 'x'", "scalar"),
        ("customer_id = NULL", "IS NULL"),
        ("status IN ('A', 2)", "compares"),
        ("status = \"NEW\"", "single quotes"),
        ("qty + 1 > 2", "not a field or a literal"),
        ("qty > ", "does not parse"),
        ("qty > 1 qty", "does not parse"),
        ("", "does not parse"),
        ("qty IN (SELECT 1)", "subquery"),
    ] {
        let e = sql_err(rule);
        assert!(e.contains(needle), "{rule}: expected `{needle}` in `{e}`");
    }
}

#[test]
fn without_a_schema_fields_are_dynamic() {
    let r = Rule::compile(RuleSource::Sql("anything > 1"), None).unwrap();
    assert!(r.passes(&json!({"anything": 2})));
    assert!(!r.passes(&json!({"anything": "2"})));
    assert!(!r.passes(&json!({})));
}

#[test]
fn cel_rules_bind_the_record_to_message() {
    let o = order();
    assert!(cel("message.order_total > 0.0").passes(&o));
    assert!(!cel("message.order_total > 100.0").passes(&o));
    assert!(cel("message.status in ['PAID', 'SHIPPED'] && message.qty >= 1").passes(&o));
    assert!(cel("message.lines.all(l, size(l) > 0)").passes(&o));
    assert!(cel("has(message.customer_id)").passes(&o));
    assert!(!cel("has(message.customer_id)").passes(&without("customer_id")));
    // Missing fields are evaluation errors, which fail the record.
    assert!(!cel("message.customer_id == 'c-7'").passes(&without("customer_id")));
    // A non-boolean result fails.
    assert!(!cel("message.qty").passes(&o));
}

#[test]
fn cel_paths_and_variables_are_checked_at_load() {
    let e = Rule::compile(RuleSource::Cel("message.nope > 1"), Some(&shape())).unwrap_err();
    assert!(matches!(e, RuleError::CelField { .. }), "{e:?}");
    assert!(e.to_string().contains("no field `nope`"), "{e}");
    let e = Rule::compile(RuleSource::Cel("record.qty > 1"), Some(&shape())).unwrap_err();
    assert!(e.to_string().contains("unknown variable `record`"), "{e}");
    let e = Rule::compile(RuleSource::Cel("message.qty >"), Some(&shape())).unwrap_err();
    assert!(matches!(e, RuleError::CelSyntax(_)), "{e:?}");
}
