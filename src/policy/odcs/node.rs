//! A YAML document as a tree that keeps the line of every node: what an ODCS document is read
//! into. ODCS is a large, open standard (most of it descriptive), so it is not deserialized into
//! structs that would refuse unknown keys; it is validated against the standard's JSON Schema and
//! then mapped element by element, and every element can still be pointed at by line.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML value, its children spanned.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    out.push(item);
                }
                Ok(Node::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Node>>()?;
                    out.push((key, value));
                }
                Ok(Node::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Spanned<Node>> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a string (or of a number or boolean written where text is expected).
    pub fn text(&self) -> Option<String> {
        match self {
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// `get(key)`'s text.
    pub fn text_at(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|n| n.value.text())
    }

    pub fn number(&self) -> Option<f64> {
        match self {
            Node::Int(i) => Some(*i as f64),
            Node::Float(f) => Some(*f),
            Node::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Spanned<Node>] {
        match self {
            Node::Seq(items) => items,
            _ => &[],
        }
    }

    /// `get(key)`'s items; none when absent or not a sequence.
    pub fn items_at(&self, key: &str) -> &[Spanned<Node>] {
        self.get(key).map_or(&[], |n| n.value.items())
    }

    /// The keys of a mapping.
    pub fn keys(&self) -> impl Iterator<Item = &Spanned<String>> {
        let entries: &[(Spanned<String>, Spanned<Node>)] = match self {
            Node::Map(e) => e,
            _ => &[],
        };
        entries.iter().map(|(k, _)| k)
    }

    /// The JSON value of this tree (for JSON Schema validation).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Node::Null => J::Null,
            Node::Bool(b) => J::Bool(*b),
            Node::Int(i) => J::from(*i),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Node::Str(s) => J::String(s.clone()),
            Node::Seq(items) => J::Array(items.iter().map(|n| n.value.to_json()).collect()),
            Node::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The line of the node a JSON pointer (`/schema/0/properties/2`) names, or of the deepest node
/// on its way that exists.
pub fn line_at(root: &Spanned<Node>, pointer: &str) -> u64 {
    let mut node = root;
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        let next = match &node.value {
            Node::Map(_) => node.value.get(&segment),
            Node::Seq(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node.referenced.line()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_keeps_lines_and_converts_to_json() {
        let text = "a: 1\nb:\n  - x\n  - {c: true, d: 2.5}\ne: ~\n";
        let root: Spanned<Node> = serde_saphyr::from_str(text).unwrap();
        assert_eq!(
            root.value.to_json(),
            serde_json::json!({"a": 1, "b": ["x", {"c": true, "d": 2.5}], "e": null})
        );
        assert_eq!(line_at(&root, "/b/1/d"), 4);
        assert_eq!(line_at(&root, "/b/0"), 3);
        assert_eq!(line_at(&root, "/e"), 5);
        // A pointer past what exists stops at the deepest node found.
        assert_eq!(line_at(&root, "/b/1/zz"), 4);
        assert_eq!(root.value.text_at("a").as_deref(), Some("1"));
        assert_eq!(root.value.items_at("b").len(), 2);
    }
}
