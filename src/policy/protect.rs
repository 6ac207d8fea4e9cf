//! A contract's field protection: `protect:` (what happens to the fields of each
//! classification level), `pii_readers:` and `mask_on_fetch:`, compiled against the fields the
//! contract's schema classifies.
//!
//! ```yaml
//! protect: {pii: encrypt, deterministic: [customer_id_hash]}
//! pii_readers: [User:fraud-svc]
//! mask_on_fetch: "***"      # or `hash`; absent: other readers get the ciphertext
//! ```
//!
//! - `encrypt`: meshgate seals each field of that level in accepted records (JSON values), after
//!   the validity rules have judged the plaintext (see `crate::protect`).
//! - `require_encrypted`: a record whose field of that level holds a value that is not a
//!   meshgate envelope (nor null) is refused (rule `require_encrypted`), under the contract's
//!   mode.
//! - `deterministic:` fields (encrypted ones) are sealed with a nonce derived from the value.
//! - On fetch, principals in `pii_readers` get plaintext; the others get the mask, or the
//!   ciphertext when there is no `mask_on_fetch`.

use std::collections::BTreeMap;

/// What happens to a protected field on produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Encrypt,
    RequireEncrypted,
}

/// What a principal outside `pii_readers` sees in place of a protected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// This JSON string (`"***"`).
    Text(Box<str>),
    /// `"sha256:<hex>"` of the plaintext's JSON text: equal values stay equal (joinable), and a
    /// value from a small set can be guessed by hashing candidates; `Text` when that matters.
    Hash,
}

/// One protected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedField {
    /// Its path from the record root, as keys.
    pub path: Vec<Box<str>>,
    /// The same, dotted (the envelope's associated data).
    pub dotted: Box<str>,
    pub action: Action,
    pub deterministic: bool,
}

impl AsRef<[Box<str>]> for ProtectedField {
    fn as_ref(&self) -> &[Box<str>] {
        &self.path
    }
}

/// A contract's compiled protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protect {
    pub fields: Vec<ProtectedField>,
    pub readers: Vec<Box<str>>,
    pub mask: Option<Mask>,
}

impl Protect {
    /// Whether meshgate seals fields of this contract on produce.
    pub fn encrypts(&self) -> bool {
        self.fields.iter().any(|f| f.action == Action::Encrypt)
    }

    /// Whether some field is sealed deterministically.
    pub fn deterministic(&self) -> bool {
        self.fields.iter().any(|f| f.deterministic)
    }

    /// Whether some field must arrive sealed.
    pub fn requires_encrypted(&self) -> bool {
        self.fields
            .iter()
            .any(|f| f.action == Action::RequireEncrypted)
    }

    /// How `principal` reads the contract's topic: `None` when its answer needs no edit (it
    /// gets the ciphertext as stored).
    pub fn view_for(&self, principal: &str) -> Option<View> {
        if self.readers.iter().any(|r| **r == *principal) {
            Some(View::Plain)
        } else {
            self.mask.clone().map(View::Masked)
        }
    }
}

/// What a fetching principal gets in place of each envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// The plaintext (the mask `***` where the key is gone).
    Plain,
    Masked(Mask),
}

/// `protect:` as written: level → action, and `deterministic:` → field paths.
pub type ProtectDoc = BTreeMap<String, serde_json::Value>;

/// Compiles `protect:` against the classified fields `(path, level)`, with the readers and
/// mask already read. Errors are messages (the caller adds `file:line` and the contract).
pub fn compile(
    doc: &ProtectDoc,
    classified: &[(String, String)],
    readers: Vec<Box<str>>,
    mask: Option<&str>,
) -> Result<Protect, Vec<String>> {
    let mut errors = Vec::new();
    let mut actions: Vec<(&str, Action)> = Vec::new();
    let mut deterministic: Vec<String> = Vec::new();
    for (key, value) in doc {
        if key == "deterministic" {
            match value.as_array() {
                Some(items) if items.iter().all(|i| i.is_string()) => deterministic
                    .extend(items.iter().filter_map(|i| i.as_str()).map(str::to_string)),
                _ => errors.push("`protect.deterministic` is a list of field paths".to_string()),
            }
            continue;
        }
        match value.as_str() {
            Some("encrypt") => actions.push((key, Action::Encrypt)),
            Some("require_encrypted") => actions.push((key, Action::RequireEncrypted)),
            _ => errors.push(format!(
                "`protect.{key}` is `encrypt` or `require_encrypted`, not {value}"
            )),
        }
    }
    if actions.is_empty() && errors.is_empty() {
        errors.push("`protect` names no classification level".to_string());
    }
    let mut fields = Vec::new();
    for (level, action) in &actions {
        let at_level: Vec<&String> = classified
            .iter()
            .filter(|(_, l)| l == level)
            .map(|(p, _)| p)
            .collect();
        if at_level.is_empty() {
            errors.push(format!(
                "`protect.{level}`: no field of the contract's schema is classified `{level}`"
            ));
        }
        for path in at_level {
            fields.push(ProtectedField {
                path: path.split('.').map(Box::from).collect(),
                dotted: path.as_str().into(),
                action: *action,
                deterministic: deterministic.contains(path),
            });
        }
    }
    // A field inside another protected field is protected with it: only the outer one is kept
    // (its span covers the inner one's).
    let outer: Vec<Box<str>> = fields.iter().map(|f| f.dotted.clone()).collect();
    fields.retain(|f| {
        !outer.iter().any(|o| {
            f.dotted.len() > o.len() + 1
                && f.dotted.starts_with(&**o)
                && f.dotted.as_bytes()[o.len()] == b'.'
        })
    });
    for d in &deterministic {
        if !fields
            .iter()
            .any(|f| *f.dotted == **d && f.action == Action::Encrypt)
        {
            errors.push(format!(
                "`protect.deterministic`: `{d}` is not a field this contract encrypts"
            ));
        }
    }
    let mask = match mask {
        None => None,
        Some("hash") => Some(Mask::Hash),
        Some("") => {
            errors.push(
                "`mask_on_fetch` is empty; omit it to give other readers the ciphertext".into(),
            );
            None
        }
        Some(t) => Some(Mask::Text(t.into())),
    };
    if errors.is_empty() {
        Ok(Protect {
            fields,
            readers,
            mask,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> ProtectDoc {
        serde_json::from_str(yaml).unwrap()
    }

    fn classified() -> Vec<(String, String)> {
        vec![
            ("email".into(), "pii".into()),
            ("customer.phone".into(), "pii".into()),
            ("note".into(), "internal".into()),
        ]
    }

    #[test]
    fn the_fields_of_each_protected_level_are_compiled_with_their_action() {
        let p = compile(
            &doc(r#"{"pii": "encrypt", "internal": "require_encrypted", "deterministic": ["email"]}"#),
            &classified(),
            vec!["User:fraud".into()],
            Some("***"),
        )
        .unwrap();
        let got: Vec<(&str, Action, bool)> = p
            .fields
            .iter()
            .map(|f| (&*f.dotted, f.action, f.deterministic))
            .collect();
        assert_eq!(
            got,
            vec![
                ("note", Action::RequireEncrypted, false),
                ("email", Action::Encrypt, true),
                ("customer.phone", Action::Encrypt, false),
            ]
        );
        assert_eq!(
            p.fields[2].path,
            vec![Box::from("customer"), Box::from("phone")]
        );
        assert!(p.encrypts() && p.deterministic() && p.requires_encrypted());
        assert_eq!(p.view_for("User:fraud"), Some(View::Plain));
        assert_eq!(
            p.view_for("User:bi"),
            Some(View::Masked(Mask::Text("***".into())))
        );
        let no_mask = compile(&doc(r#"{"pii": "encrypt"}"#), &classified(), vec![], None).unwrap();
        assert_eq!(no_mask.view_for("User:bi"), None, "ciphertext as stored");
        let hashed = compile(
            &doc(r#"{"pii": "encrypt"}"#),
            &classified(),
            vec![],
            Some("hash"),
        )
        .unwrap();
        assert_eq!(hashed.mask, Some(Mask::Hash));
    }

    #[test]
    fn a_field_inside_a_protected_field_is_protected_with_it() {
        let classified = vec![
            ("customer".to_string(), "pii".to_string()),
            ("customer.phone".to_string(), "pii".to_string()),
            ("customerx".to_string(), "pii".to_string()),
        ];
        let p = compile(&doc(r#"{"pii": "encrypt"}"#), &classified, vec![], None).unwrap();
        let kept: Vec<&str> = p.fields.iter().map(|f| &*f.dotted).collect();
        assert_eq!(kept, vec!["customer", "customerx"]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |d: &str, mask: Option<&str>| {
            compile(&doc(d), &classified(), vec![], mask)
                .unwrap_err()
                .join(" | ")
        };
        assert_eq!(
            err(r#"{"pii": "hide"}"#, None),
            "`protect.pii` is `encrypt` or `require_encrypted`, not \"hide\""
        );
        assert_eq!(
            err(r#"{"secret": "encrypt"}"#, None),
            "`protect.secret`: no field of the contract's schema is classified `secret`"
        );
        assert_eq!(
            err(r#"{"pii": "encrypt", "deterministic": ["note"]}"#, None),
            "`protect.deterministic`: `note` is not a field this contract encrypts"
        );
        assert_eq!(
            err(r#"{"deterministic": "email"}"#, None),
            "`protect.deterministic` is a list of field paths"
        );
        assert_eq!(err("{}", None), "`protect` names no classification level");
        assert!(err(r#"{"pii": "encrypt"}"#, Some("")).contains("`mask_on_fetch` is empty"));
    }
}
