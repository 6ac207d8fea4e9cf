//! `meshgate check NEW --against OLD` on pairs of contract directories, through the real binary.

use std::path::Path;
use std::process::Command;

use crate::support::policy_dir;

fn contract(
    dir: &Path,
    version: &str,
    topic: &str,
    level: &str,
    fields: &str,
    history: &[(&str, &str)],
) {
    let mut hist = String::new();
    for (file, fields) in history {
        std::fs::write(dir.join(file), record(fields)).unwrap();
        hist.push_str(&format!("      - {file}\n"));
    }
    let history_key = if hist.is_empty() {
        String::new()
    } else {
        format!("    history:\n{hist}")
    };
    std::fs::write(dir.join("current.avsc"), record(fields)).unwrap();
    std::fs::write(
        dir.join("c.yaml"),
        format!(
            "contract:\n  name: orders\n  owner: team\n  topic: {topic}\n  schema:\n    format: avro\n    version: {version}\n    compatibility: {level}\n    file: current.avsc\n{history_key}"
        ),
    )
    .unwrap();
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"shop","fields":[{fields}]}}"#)
}

const ID: &str = r#"{"name":"id","type":"string"}"#;
const TOTAL: &str = r#"{"name":"total","type":"double"}"#;

fn check(new: &Path, old: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("check")
        .arg(new)
        .arg("--against")
        .arg(old)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn adding_an_optional_field_passes_under_backward() {
    let (old, new) = (policy_dir(), policy_dir());
    contract(
        &old,
        "1.0.0",
        "shop.orders.v1",
        "backward",
        &format!("{ID},{TOTAL}"),
        &[],
    );
    let added = r#"{"name":"note","type":["null","string"],"default":null}"#;
    contract(
        &new,
        "1.1.0",
        "shop.orders.v1",
        "backward",
        &format!("{ID},{TOTAL},{added}"),
        &[],
    );
    let (code, out) = check(&new, &old);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn removing_a_field_without_a_default_fails_under_forward_and_names_the_field() {
    let (old, new) = (policy_dir(), policy_dir());
    contract(
        &old,
        "1.0.0",
        "shop.orders.v1",
        "forward",
        &format!("{ID},{TOTAL}"),
        &[],
    );
    contract(&new, "1.1.0", "shop.orders.v1", "forward", ID, &[]);
    let (code, out) = check(&new, &old);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("breaks Forward compatibility"), "{out}");
    assert!(
        out.contains("reader field `total` has no default value"),
        "{out}"
    );
    assert!(out.contains("c.yaml:2"), "{out}");
    // The same change under backward is fine: the new reader ignores the removed field.
    contract(
        &old,
        "1.0.0",
        "shop.orders.v1",
        "backward",
        &format!("{ID},{TOTAL}"),
        &[],
    );
    contract(&new, "1.1.0", "shop.orders.v1", "backward", ID, &[]);
    assert_eq!(check(&new, &old).0, 0);
}

#[test]
fn a_breaking_change_passes_with_a_major_bump_on_a_new_topic_only() {
    let (old, new) = (policy_dir(), policy_dir());
    contract(
        &old,
        "1.4.0",
        "shop.orders.v1",
        "full",
        &format!("{ID},{TOTAL}"),
        &[],
    );
    let retyped = r#"{"name":"total","type":"string"}"#;
    contract(
        &new,
        "1.5.0",
        "shop.orders.v1",
        "full",
        &format!("{ID},{retyped}"),
        &[],
    );
    let (code, out) = check(&new, &old);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("without a major version bump"), "{out}");

    contract(
        &new,
        "2.0.0",
        "shop.orders.v2",
        "full",
        &format!("{ID},{retyped}"),
        &[],
    );
    let (code, out) = check(&new, &old);
    assert_eq!(code, 0, "{out}");

    contract(
        &new,
        "2.0.0",
        "shop.orders.v1",
        "full",
        &format!("{ID},{retyped}"),
        &[],
    );
    let (code, out) = check(&new, &old);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stays on topic `shop.orders.v1`"), "{out}");
}

#[test]
fn transitive_levels_check_the_recorded_history() {
    let (old, new) = (policy_dir(), policy_dir());
    // v1.0 had `total` without a default; v1.1 gave it a default; v1.2 drops it.
    let total_with_default = r#"{"name":"total","type":"double","default":0}"#;
    let history = [("v1.0.avsc", &*format!("{ID},{TOTAL}"))];
    contract(
        &old,
        "1.1.0",
        "shop.orders.v1",
        "forward_transitive",
        &format!("{ID},{total_with_default}"),
        &history,
    );
    contract(
        &new,
        "1.2.0",
        "shop.orders.v1",
        "forward_transitive",
        ID,
        &[],
    );
    let (code, out) = check(&new, &old);
    assert_eq!(code, 1, "v1.0 readers cannot read v1.2 data: {out}");

    contract(
        &old,
        "1.1.0",
        "shop.orders.v1",
        "forward",
        &format!("{ID},{total_with_default}"),
        &history,
    );
    contract(&new, "1.2.0", "shop.orders.v1", "forward", ID, &[]);
    let (code, out) = check(&new, &old);
    assert_eq!(code, 0, "non-transitive forward only looks at v1.1: {out}");
}

#[test]
fn unusable_directories_exit_2() {
    let new = policy_dir();
    assert_eq!(check(&new, &new.join("missing")).0, 2);
    let broken = policy_dir();
    std::fs::write(broken.join("x.yaml"), "contract: [").unwrap();
    assert_eq!(check(&new, &broken).0, 2);
}
