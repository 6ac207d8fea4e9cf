//! Finding protected fields in a JSON value without decoding it: the byte span of the value at
//! each dotted path, so that only those bytes are replaced and every other byte of the record
//! stays as the producer wrote it.
//!
//! The scan checks the structure it walks (balanced brackets, closed strings, keys followed by
//! `:`, values separated by `,`) and refuses anything else; it does not check number syntax,
//! string escapes or control characters of values it skips: the broker never sees what it refuses, and what it skips
//! is forwarded as it was. A key written twice is found twice (both copies are protected).

/// Why a value cannot be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("the value is not a JSON object")]
    NotObject,
    #[error("malformed JSON at byte {0}")]
    Malformed(usize),
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

const MAX_DEPTH: usize = 64;

/// One found field: which path (its index in the caller's list) and the span of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub path: usize,
    pub start: usize,
    pub end: usize,
}

/// The spans of the values at `paths` (keys from the root object) in `json`, in document order.
pub fn find<P: AsRef<[Box<str>]>>(
    json: &[u8],
    paths: &[P],
    out: &mut Vec<Found>,
) -> Result<(), ScanError> {
    out.clear();
    let mut s = Scan { b: json, i: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        return Err(ScanError::NotObject);
    }
    let all: Vec<usize> = (0..paths.len()).collect();
    s.object(paths, &all, 0, out)?;
    s.ws();
    if s.i != json.len() {
        return Err(ScanError::Malformed(s.i));
    }
    Ok(())
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ScanError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(ScanError::Malformed(self.i))
        }
    }

    /// A string starting at the cursor (`"`); returns its raw contents' span and whether it
    /// holds an escape.
    fn string(&mut self) -> Result<(usize, usize, bool), ScanError> {
        let open = self.i;
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            // memchr: the long text fields of a record are skipped at memory speed.
            let rest = self.b.get(self.i..).unwrap_or_default();
            let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(ScanError::Malformed(open));
            };
            self.i += at;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok((start, self.i - 1, escaped));
            }
            escaped = true;
            self.i += 2;
        }
    }

    /// Skips one value of any kind.
    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::TooDeep);
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => self.object::<Vec<Box<str>>>(&[], &[], depth, &mut Vec::new()),
            Some(b'[') => {
                self.i += 1;
                if self.eat(b']') {
                    return Ok(());
                }
                loop {
                    self.value(depth + 1)?;
                    if self.closes(b']')? {
                        return Ok(());
                    }
                }
            }
            Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
                ) {
                    self.i += 1;
                }
                let word = &self.b[start..self.i];
                let literal = matches!(word, b"true" | b"false" | b"null");
                if !literal && !word[0].is_ascii_digit() && word[0] != b'-' {
                    return Err(ScanError::Malformed(start));
                }
                Ok(())
            }
            _ => Err(ScanError::Malformed(self.i)),
        }
    }

    /// An object at the cursor, where `candidates` (indexes into `paths`) match the keys above
    /// it up to `depth`.
    fn object<P: AsRef<[Box<str>]>>(
        &mut self,
        paths: &[P],
        candidates: &[usize],
        depth: usize,
        out: &mut Vec<Found>,
    ) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::TooDeep);
        }
        self.i += 1; // `{`
        if self.eat(b'}') {
            return Ok(());
        }
        let mut deeper = Vec::new();
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(ScanError::Malformed(self.i));
            }
            let (ks, ke, escaped) = self.string()?;
            self.expect(b':')?;
            self.ws();
            let unescaped;
            let key: &[u8] = if escaped && !candidates.is_empty() {
                unescaped = serde_json::from_slice::<String>(&self.b[ks - 1..ke + 1])
                    .map_err(|_| ScanError::Malformed(ks))?;
                unescaped.as_bytes()
            } else {
                &self.b[ks..ke]
            };
            deeper.clear();
            let start = self.i;
            let mut here = None;
            for &c in candidates {
                let p = paths[c].as_ref();
                if p.get(depth).is_some_and(|k| k.as_bytes() == key) {
                    if p.len() == depth + 1 {
                        here = Some(c);
                    } else {
                        deeper.push(c);
                    }
                }
            }
            if !deeper.is_empty() && self.peek() == Some(b'{') {
                let inner = std::mem::take(&mut deeper);
                self.object(paths, &inner, depth + 1, out)?;
                deeper = inner;
            } else {
                self.value(depth + 1)?;
            }
            if let Some(path) = here {
                out.push(Found {
                    path,
                    start,
                    end: self.i,
                });
            }
            if self.closes(b'}')? {
                return Ok(());
            }
        }
    }

    /// Skips white space, then `c` if it is next; whether it was.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let next = self.peek() == Some(c);
        if next {
            self.i += 1;
        }
        next
    }

    /// After an element of an array or object: `,` (more follow: `false`) or `close` (`true`).
    fn closes(&mut self, close: u8) -> Result<bool, ScanError> {
        if self.eat(b',') {
            Ok(false)
        } else if self.eat(close) {
            Ok(true)
        } else {
            Err(ScanError::Malformed(self.i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ps: &[&str]) -> Vec<Vec<Box<str>>> {
        ps.iter()
            .map(|p| p.split('.').map(Box::from).collect())
            .collect()
    }

    fn texts(json: &str, ps: &[&str]) -> Result<Vec<(usize, String)>, ScanError> {
        let mut out = Vec::new();
        find(json.as_bytes(), &paths(ps), &mut out)?;
        Ok(out
            .iter()
            .map(|f| (f.path, json[f.start..f.end].to_string()))
            .collect())
    }

    #[test]
    fn values_at_top_level_and_nested_paths_are_found_as_written() {
        let json = r#" {"id": 7, "email" : "a\"b@x.example", "customer": {"phone": [1, {"x": 2}], "ssn": null, "n": {"ssn": 1}}, "tail": true} "#;
        assert_eq!(
            texts(
                json,
                &[
                    "email",
                    "customer.ssn",
                    "customer.phone",
                    "missing",
                    "customer.n.ssn"
                ]
            )
            .unwrap(),
            vec![
                (0, r#""a\"b@x.example""#.to_string()),
                (2, r#"[1, {"x": 2}]"#.to_string()),
                (1, "null".to_string()),
                (4, "1".to_string()),
            ]
        );
    }

    #[test]
    fn escaped_keys_and_repeated_keys_are_found() {
        let json = r#"{"em\u0061il": 1, "email": {"a": 2}}"#;
        assert_eq!(
            texts(json, &["email"]).unwrap(),
            vec![(0, "1".into()), (0, r#"{"a": 2}"#.into())]
        );
        // A path through a field that is not an object finds nothing below it.
        assert_eq!(texts(r#"{"a": "x"}"#, &["a.b"]).unwrap(), vec![]);
    }

    #[test]
    fn what_is_not_an_object_or_is_malformed_is_refused() {
        for bad in [
            "",
            "[1]",
            "\"x\"",
            "12",
            "{",
            r#"{"a" 1}"#,
            r#"{"a": 1,}"#,
            r#"{"a": "x}"#,
            r#"{"a": 1} x"#,
            r#"{"a": [1 2]}"#,
            r#"{a: 1}"#,
            r#"{"a": @}"#,
        ] {
            assert!(texts(bad, &["a"]).is_err(), "{bad}");
        }
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(texts(&deep, &["a"]), Err(ScanError::TooDeep));
        assert_eq!(texts("[]", &["a"]), Err(ScanError::NotObject));
    }
}
