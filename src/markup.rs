//! Escaping text for HTML and XML, shared by the catalog page and the JUnit report.

/// `s` safe inside an element or a quoted attribute of HTML or XML 1.0. Control characters other
/// than tab and newlines, which XML 1.0 forbids even escaped, become `?`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(
            super::escape("a<\"b\"&'c'>\u{1}\t"),
            "a&lt;&quot;b&quot;&amp;&#39;c&#39;&gt;?\t"
        );
    }
}
