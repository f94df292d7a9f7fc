//! YAML paths and diagnostics: what is wrong, where (file, line, YAML path), in the
//! `<file>:<line>: <yaml.path>: <message>` shape editors and terminals understand.

use std::fmt;

use vla_pipeline::config::ConfigProblem;

/// One step of a YAML path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key, e.g. `exporters` or `prometheus/scrape`.
    Key(String),
    /// A sequence index, 0-based.
    Index(usize),
}

/// A path into the YAML document, printed as `service.pipelines.metrics.exporters[0]`.
///
/// Kept as segments (not a dotted string) because component ids may contain dots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct YamlPath(Vec<Seg>);

impl YamlPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.into()));
        Self(segs)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// This path extended by a dotted relative path such as `protocols.grpc.endpoint` or
    /// `actions[0].value` (what components and serde report).
    pub fn join_dotted(&self, rest: &str) -> Self {
        let mut out = self.clone();
        for part in rest.split('.').filter(|p| !p.is_empty()) {
            let (key, mut indexes) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                out.0.push(Seg::Key(key.to_owned()));
            }
            while let Some(rest) = indexes.strip_prefix('[') {
                let Some(end) = rest.find(']') else { break };
                match rest[..end].parse() {
                    Ok(i) => out.0.push(Seg::Index(i)),
                    Err(_) => out.0.push(Seg::Key(rest[..end].to_owned())),
                }
                indexes = &rest[end + 1..];
            }
        }
        out
    }

    /// The segments.
    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// Whether this is the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One problem (or warning) in a config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The YAML path of the offending value (the root when it has none, e.g. a syntax error).
    pub path: YamlPath,
    /// The 1-based line in the config file, when it could be found.
    pub line: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// A problem at `path`; its line is filled in later by the locator.
    pub fn at(path: YamlPath, message: impl Into<String>) -> Self {
        Self {
            path,
            line: None,
            message: message.into(),
        }
    }

    /// A problem on a line, with no YAML path (syntax and substitution errors).
    pub fn on_line(line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            path: YamlPath::root(),
            line,
            message: message.into(),
        }
    }

    /// A component's [`ConfigProblem`], whose dotted path starts with `base`'s rendering.
    pub(crate) fn from_problem(base: &YamlPath, problem: &ConfigProblem) -> Self {
        let prefix = base.to_string();
        let path = match problem.path.strip_prefix(&prefix) {
            Some(rest) => base.join_dotted(rest),
            None => YamlPath::root().join_dotted(&problem.path),
        };
        Self::at(path, problem.message.clone())
    }

    /// The diagnostic as one line: `<source>:<line>: <path>: <message>`.
    pub fn render(&self, source: &str) -> String {
        let mut out = String::from(source);
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(": ");
        if !self.path.is_root() {
            out.push_str(&format!("{}: ", self.path));
        }
        out.push_str(&self.message);
        out
    }
}

/// Every problem found in one config source, errors and warnings apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics {
    /// The config's name in messages: its file path, or `<embedded configs/collector.yaml>`.
    pub source: String,
    /// Problems that make the config unusable.
    pub errors: Vec<Diagnostic>,
    /// Problems worth knowing that do not stop the collector (e.g. unused components).
    pub warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    /// The errors, one rendered line each.
    pub fn error_lines(&self) -> Vec<String> {
        self.errors.iter().map(|d| d.render(&self.source)).collect()
    }

    /// The warnings, one rendered line each.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|d| d.render(&self.source))
            .collect()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{} has {n} problem{}:",
            self.source,
            if n == 1 { "" } else { "s" }
        )?;
        for line in self.error_lines() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_and_parse_back() {
        let p = YamlPath::root()
            .key("processors")
            .key("attributes/x.y")
            .join_dotted("actions[0].value");
        assert_eq!(p.to_string(), "processors.attributes/x.y.actions[0].value");
        assert_eq!(
            p.segments()[2..],
            [
                Seg::Key("actions".into()),
                Seg::Index(0),
                Seg::Key("value".into())
            ]
        );
        let d = Diagnostic::from_problem(
            &YamlPath::root().key("receivers").key("otlp/a.b"),
            &ConfigProblem::new("receivers.otlp/a.b.protocols.grpc.endpoint", "bad"),
        );
        assert_eq!(d.path.segments().len(), 5);
        assert_eq!(d.path.segments()[1], Seg::Key("otlp/a.b".into()));
        assert_eq!(
            d.render("c.yaml"),
            "c.yaml: receivers.otlp/a.b.protocols.grpc.endpoint: bad"
        );
        let l = Diagnostic::on_line(Some(3), "oops");
        assert_eq!(l.render("c.yaml"), "c.yaml:3: oops");
    }
}
