//! The module graph has no cycles: no two top-level modules of `src/` import each other, directly
//! or through others, and neither do two files of one folder. ARCHITECTURE.md describes the
//! graph as layers; this keeps it one.
//!
//! An edge A → B is a `crate::B` path in a file of A (or `super::B` from a file inside a
//! folder, for siblings). Comments and `#[cfg(test)]` modules are left out: tests may reach
//! anywhere. Parent ↔ child links (a folder's `mod.rs` declares its files) are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without comments and without `#[cfg(test)]` items (brace-matched).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("//") {
            i += text[i..].find('\n').unwrap_or(text.len() - i);
        } else if text[i..].starts_with("/*") {
            i += text[i..].find("*/").map_or(text.len() - i, |e| e + 2);
        } else if text[i..].starts_with("#[cfg(test)]") {
            // Skip to the item's block and past its matching brace (or its `;`).
            let rest = &text[i..];
            let stop = rest.find(['{', ';']).unwrap_or(rest.len());
            if rest.as_bytes().get(stop) == Some(&b'{') {
                let mut depth = 0;
                let mut j = i + stop;
                while j < bytes.len() {
                    match bytes[j] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                i = j + 1;
            } else {
                i += stop + 1;
            }
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Identifiers that follow `prefix` in `code` (`crate::` → the top-level module named).
fn named_after<'a>(code: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    code.match_indices(prefix)
        .filter(|(at, _)| {
            *at == 0
                || !code.as_bytes()[at - 1].is_ascii_alphanumeric()
                    && code.as_bytes()[at - 1] != b'_'
        })
        .filter_map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

/// Every cycle of `edges`, each as the modules on it (one per strongly connected component of
/// more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[*n].contains(**m) && reachable[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if component.len() > 1 && !out.contains(&component) {
            out.push(component);
        }
    }
    out
}

#[test]
fn the_module_graph_has_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(&src).expect("under src/");
        let parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["main"] || parts == ["lib"] {
            continue;
        }
        let text = code(&std::fs::read_to_string(path).expect("readable"));
        let room = parts[0].clone();
        for used in named_after(&text, "crate::") {
            let is_module = src.join(format!("{used}.rs")).exists() || src.join(used).is_dir();
            if is_module && used != room {
                top.entry(room.clone())
                    .or_default()
                    .insert(used.to_string());
            }
        }
        // Siblings inside every folder a file sits in, named by their full path
        // (`crate::policy::sli` from `policy/odcs/mod.rs` is an edge policy/odcs → policy/sli):
        // at each depth the file stands for the sibling module that contains it.
        // A folder's `tests.rs` is test code (`#[cfg(test)] mod tests;`), as the blocks `code`
        // strips are.
        let module: Vec<&String> = parts.iter().filter(|p| *p != "mod").collect();
        let test_file = parts.last().map(String::as_str) == Some("tests");
        for depth in (1..module.len()).filter(|_| !test_file) {
            let folder: Vec<&str> = module[..depth].iter().map(|p| p.as_str()).collect();
            let me = format!("{}/{}", folder.join("/"), module[depth]);
            let dir = src.join(folder.join("/"));
            for used in named_after(&text, &format!("crate::{}::", folder.join("::"))) {
                let is_sibling = dir.join(format!("{used}.rs")).exists() || dir.join(used).is_dir();
                if is_sibling && used != module[depth].as_str() {
                    siblings
                        .entry(me.clone())
                        .or_default()
                        .insert(format!("{}/{used}", folder.join("/")));
                }
            }
        }
        // Siblings inside a folder: `super::x` from a file that is not the folder's mod.rs.
        if parts.len() >= 2 && parts.last().map(String::as_str) != Some("mod") {
            let folder = parts[..parts.len() - 1].join("/");
            let me = format!("{folder}/{}", parts[parts.len() - 1]);
            for used in named_after(&text, "super::") {
                let sibling = src.join(&folder).join(format!("{used}.rs"));
                if sibling.exists() || src.join(&folder).join(used).is_dir() {
                    siblings
                        .entry(me.clone())
                        .or_default()
                        .insert(format!("{folder}/{used}"));
                }
            }
        }
    }
    assert!(top.len() > 5, "the scan found the modules: {top:?}");
    let found: Vec<Vec<String>> = cycles(&top).into_iter().chain(cycles(&siblings)).collect();
    assert!(found.is_empty(), "import cycles between modules: {found:?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            m.entry(a.to_string()).or_default().insert(b.to_string());
        }
        m
    };
    assert_eq!(
        cycles(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
    assert!(cycles(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    assert_eq!(
        named_after(&code("use crate::x::y; // crate::z\n#[cfg(test)]\nmod t { use crate::w; }\nfn f() { notcrate::q(); }"), "crate::"),
        BTreeSet::from(["x"])
    );
}
