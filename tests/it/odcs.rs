//! ODCS through the real binary: `check --explain`, `export odcs`, and a document the standard's
//! JSON Schema refuses.

use std::path::Path;
use std::process::Command;

use crate::support::policy_dir;

fn meshgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo_policies() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .display()
        .to_string()
}

#[test]
fn check_explain_lists_what_the_example_odcs_contract_became_and_what_it_does_not_enforce() {
    let (code, out, err) = meshgate(&["check", "--explain", &repo_policies()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ODCS v3.1.0 `payments-payment-events-v1`"),
        "{out}"
    );
    assert!(
        out.contains("currency IS NULL OR currency IN ('EUR', 'USD', 'GBP')"),
        "{out}"
    );
    assert!(out.contains("SLI `method_mostly_known`"), "{out}");
    assert!(
        out.contains("declared, not enforced:") && out.contains("a `text` rule is read by people"),
        "{out}"
    );
    // Without --explain, none of it.
    let (_, out, _) = meshgate(&["check", &repo_policies()]);
    assert!(!out.contains("declared, not enforced"), "{out}");
}

#[test]
fn export_odcs_writes_documents_that_load_back() {
    let (code, out, err) = meshgate(&[
        "export",
        "odcs",
        &repo_policies(),
        "--bootstrap",
        "kafka:9092",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("kind: DataContract").count(), 2, "{out}");
    // The Avro contract's `on_reject`-free rules all have an ODCS form; what has none is named.
    let dir = policy_dir();
    for (i, doc) in out.split("\n---\n").enumerate() {
        std::fs::write(dir.join(format!("c{i}.odcs.yaml")), doc).unwrap();
    }
    let (code, check, cerr) = meshgate(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{check}{cerr}\n{out}");
    assert!(check.contains("2 contract(s)"), "{check}");
    // One contract by name; an unknown name exits 1.
    let (code, one, _) = meshgate(&[
        "export",
        "odcs",
        &repo_policies(),
        "--contract",
        "payment-events-v1",
    ]);
    assert_eq!(code, 0);
    assert_eq!(one.matches("kind: DataContract").count(), 1, "{one}");
    assert!(one.contains("payments.payment-events.v1"), "{one}");
    let (code, _, err) = meshgate(&["export", "odcs", &repo_policies(), "--contract", "nope"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn a_document_the_standard_refuses_is_a_file_line_error() {
    let dir = policy_dir();
    std::fs::write(
        dir.join("bad.odcs.yaml"),
        "apiVersion: v3.1.0\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: active\nservers:\n  - server: k\n    type: kafka\n",
    )
    .unwrap();
    let (code, out, _) = meshgate(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.odcs.yaml:7: ODCS: `/servers/0`"), "{out}");
}
