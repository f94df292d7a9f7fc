//! Finds the line of a YAML path in the config text, for `<file>:<line>:` in messages.
//!
//! A small indentation-aware walk over block-style YAML, not a parser: the document has
//! already been parsed, so this only needs to point at the right line. Each `- ` item is
//! treated as a nested level (`- key: v` becomes a `-` line and a `key: v` line two columns
//! deeper), so sequences of mappings work. Inside flow collections (`{ a: 1 }`, `[x, y]`)
//! the walk stops at the line that holds them, which is where such a value is written. When
//! even the first key is not found (e.g. it came from an environment substitution) there is
//! no line.

use super::diag::{Seg, YamlPath};

#[derive(Debug)]
struct Entry<'a> {
    line: usize,
    indent: usize,
    text: &'a str,
}

/// The YAML source, pre-split into meaningful entries.
#[derive(Debug)]
pub struct Locator<'a> {
    entries: Vec<Entry<'a>>,
}

impl<'a> Locator<'a> {
    /// Prepares `text` for lookups.
    pub fn new(text: &'a str) -> Self {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let body = strip_comment(raw).trim_end();
            let trimmed = body.trim_start();
            if trimmed.is_empty() || trimmed == "---" || trimmed == "..." {
                continue;
            }
            let mut indent = body.len() - trimmed.len();
            let mut text = trimmed;
            // `- - key: v` → `-`, `-`, `key: v`, each two columns deeper.
            while let Some(rest) = text.strip_prefix('-') {
                if !(rest.is_empty() || rest.starts_with(' ')) {
                    break;
                }
                entries.push(Entry {
                    line: i + 1,
                    indent,
                    text: "-",
                });
                let rest_trimmed = rest.trim_start();
                indent += 1 + (rest.len() - rest_trimmed.len());
                text = rest_trimmed;
                if text.is_empty() {
                    break;
                }
            }
            if !text.is_empty() {
                entries.push(Entry {
                    line: i + 1,
                    indent,
                    text,
                });
            }
        }
        Self { entries }
    }

    /// The 1-based line of `path`: the line of its deepest segment that could be found, or
    /// `None` when not even the first one was.
    pub fn line_of(&self, path: &YamlPath) -> Option<usize> {
        let mut range = 0..self.entries.len();
        let mut found: Option<usize> = None;
        for seg in path.segments() {
            let hit = match seg {
                Seg::Key(k) => self.find_key(range.clone(), k),
                Seg::Index(i) => self.find_item(range.clone(), *i),
            };
            match hit {
                Some((idx, sub)) => {
                    found = Some(self.entries[idx].line);
                    range = sub;
                }
                None => break,
            }
        }
        found
    }

    /// The entry of `key` among the mapping entries at the first indent of `range`, and the
    /// range of its value's entries.
    fn find_key(
        &self,
        range: std::ops::Range<usize>,
        key: &str,
    ) -> Option<(usize, std::ops::Range<usize>)> {
        if range.is_empty() {
            return None;
        }
        let level = self.entries.get(range.start)?.indent;
        let idx = range.clone().find(|&j| {
            let e = &self.entries[j];
            e.indent == level && key_of(e.text) == Some(key)
        })?;
        // The value runs until the next entry at a lower indent, or at the same indent
        // unless it is a `-` item (a block sequence may sit at its key's indent).
        let end = (idx + 1..range.end)
            .find(|&j| {
                let e = &self.entries[j];
                e.indent < level || (e.indent == level && e.text != "-")
            })
            .unwrap_or(range.end);
        Some((idx, idx + 1..end))
    }

    /// The `index`-th `-` item at the first indent of `range`, and its content's range.
    fn find_item(
        &self,
        range: std::ops::Range<usize>,
        index: usize,
    ) -> Option<(usize, std::ops::Range<usize>)> {
        if range.is_empty() {
            return None;
        }
        let level = self.entries.get(range.start)?.indent;
        let idx = range
            .clone()
            .filter(|&j| self.entries[j].indent == level && self.entries[j].text == "-")
            .nth(index)?;
        let end = (idx + 1..range.end)
            .find(|&j| self.entries[j].indent <= level)
            .unwrap_or(range.end);
        Some((idx, idx + 1..end))
    }
}

/// The mapping key an entry starts with (`key:` or `"key":` / `'key':`), if any.
fn key_of(text: &str) -> Option<&str> {
    let (key, rest) = if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let inner = &text[1..];
        let end = inner.find(q)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        let colon = find_key_colon(text)?;
        (text[..colon].trim_end(), &text[colon..])
    };
    let after = rest.trim_start().strip_prefix(':')?;
    (after.is_empty() || after.starts_with(' ')).then_some(key)
}

/// The position of the `: ` (or final `:`) that ends a plain key.
fn find_key_colon(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' '))
}

/// `text` without a trailing `# comment` (a `#` at the start or after a blank, outside quotes).
fn strip_comment(text: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_blank = true;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_blank => return &text[..i],
            None => {}
        }
        prev_blank = c == ' ' || c == '\t';
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# top comment
receivers:
  otlp:            # the default
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http: { endpoint: \"127.0.0.1:4318\" }
processors:
  attributes/x:
    actions:
      - key: a
        action: insert
      - { key: b, action: delete }
  batch:
service:
  pipelines:
    metrics:
      receivers: [otlp]
      processors:
      - attributes/x
      - batch
    \"metrics/b\":
      exporters: [debug]
";

    fn line(path: &str) -> Option<usize> {
        Locator::new(DOC).line_of(&YamlPath::root().join_dotted(path))
    }

    #[test]
    fn finds_block_keys_items_and_flow_values() {
        let cases = [
            ("receivers", Some(2)),
            ("receivers.otlp", Some(3)),
            ("receivers.otlp.protocols.grpc.endpoint", Some(6)),
            ("receivers.otlp.protocols.http.endpoint", Some(7)),
            ("processors.attributes/x.actions[0].action", Some(12)),
            ("processors.attributes/x.actions[1]", Some(13)),
            ("processors.attributes/x.actions[1].key", Some(13)),
            ("processors.batch", Some(14)),
            ("processors.batch.timeout", Some(14)),
            ("service.pipelines.metrics.receivers[0]", Some(18)),
            ("service.pipelines.metrics.processors[1]", Some(21)),
            ("service.pipelines.metrics/b.exporters", Some(23)),
            ("exporters.debug", None),
        ];
        for (path, want) in cases {
            assert_eq!(line(path), want, "{path}");
        }
    }

    #[test]
    fn keys_and_comments() {
        assert_eq!(key_of("a: b"), Some("a"));
        assert_eq!(key_of("a:"), Some("a"));
        assert_eq!(key_of("http://x"), None);
        assert_eq!(key_of("endpoint: 127.0.0.1:4317"), Some("endpoint"));
        assert_eq!(key_of("'a b': 1"), Some("a b"));
        assert_eq!(strip_comment("a: \"x # y\" # z"), "a: \"x # y\" ");
        assert_eq!(strip_comment("a: b#c"), "a: b#c");
    }
}
