//! The customer table: the snapshot the processor reads, and the parsers that build it from
//! inline config, YAML and CSV files. Parse errors name the file and the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::TierError;
use super::config::InlineCustomer;

/// One customer as a source delivered it, before the table keeps only what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRow {
    pub(crate) id: String,
    pub(crate) tier: String,
    /// Other fields (plan, region, name, ...), in source order.
    pub(crate) fields: Vec<(String, String)>,
}

/// What the processor adds for one customer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) tier: Box<str>,
    /// The configured extra fields, in `Settings::extra` order; `None` where the row has none.
    pub(crate) extra: Box<[Option<Box<str>>]>,
}

/// The customer table: id → entry, swapped whole by the refresher.
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: hashbrown::HashMap<Box<str>, Arc<Entry>, foldhash::fast::RandomState>,
}

impl Table {
    /// A table of `rows` (ids already unique), keeping the `extra` fields only.
    pub(crate) fn build(rows: Vec<RawRow>, extra: &[String]) -> Self {
        let mut entries = hashbrown::HashMap::with_capacity_and_hasher(
            rows.len(),
            foldhash::fast::RandomState::default(),
        );
        for row in rows {
            let values = extra
                .iter()
                .map(|field| {
                    row.fields
                        .iter()
                        .find(|(k, v)| k == field && !v.is_empty())
                        .map(|(_, v)| Box::from(v.as_str()))
                })
                .collect();
            let entry = Entry {
                tier: row.tier.into_boxed_str(),
                extra: values,
            };
            entries.insert(row.id.into_boxed_str(), Arc::new(entry));
        }
        Self { entries }
    }

    /// The entry of customer `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id).map(|e| &**e)
    }

    /// Number of customers.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The rows of an inline table (the config was validated; this checks again, without panics).
pub(crate) fn rows_from_inline(
    inline: &BTreeMap<String, InlineCustomer>,
) -> Result<Vec<RawRow>, TierError> {
    let mut rows = Vec::with_capacity(inline.len());
    for (id, customer) in inline {
        let invalid = |message: &str| TierError::Inline {
            customer: id.clone(),
            message: message.to_owned(),
        };
        if id.trim().is_empty() {
            return Err(invalid("empty customer id"));
        }
        let tier = customer.tier().ok_or_else(|| invalid("missing tier"))?;
        let fields = match customer {
            InlineCustomer::Tier(_) => Vec::new(),
            InlineCustomer::Fields(f) => f
                .iter()
                .filter(|(k, _)| k.as_str() != "tier")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        rows.push(RawRow {
            id: id.clone(),
            tier: tier.to_owned(),
            fields,
        });
    }
    Ok(rows)
}

/// The format of a customer file, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Yaml,
    Csv,
}

impl FileFormat {
    /// `.yaml` / `.yml` → YAML, `.csv` → CSV (case-insensitive); anything else → `None`.
    pub(crate) fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Self::Yaml),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// Parses a customer file's content; `path` is only used in errors.
pub(crate) fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<RawRow>, TierError> {
    let rows = match FileFormat::of(path) {
        Some(FileFormat::Yaml) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| parse_error(path, None, format!("not UTF-8: {e}")))?;
            parse_yaml(path, text)?
        }
        Some(FileFormat::Csv) => parse_csv(path, bytes)?,
        None => {
            return Err(parse_error(
                path,
                None,
                "expected a name ending in .yaml, .yml or .csv".into(),
            ));
        }
    };
    if rows.is_empty() {
        // A file caught half-written (truncated, then filled) must not empty the table.
        return Err(parse_error(path, None, "no customers".into()));
    }
    Ok(rows)
}

fn parse_error(path: &Path, line: Option<u64>, message: String) -> TierError {
    TierError::Parse {
        path: PathBuf::from(path),
        line,
        message,
    }
}

/// Collects rows and refuses duplicate ids, remembering where each id was first seen.
struct Rows<'a> {
    path: &'a Path,
    rows: Vec<RawRow>,
    first_line: hashbrown::HashMap<String, u64, foldhash::fast::RandomState>,
}

impl<'a> Rows<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            rows: Vec::new(),
            first_line: hashbrown::HashMap::default(),
        }
    }

    fn error(&self, line: u64, message: String) -> TierError {
        parse_error(self.path, Some(line), message)
    }

    /// Adds one row read at `line`: `id` and `tier` must be non-empty and `id` new.
    fn push(
        &mut self,
        line: u64,
        id: Option<String>,
        tier: Option<String>,
        fields: Vec<(String, String)>,
    ) -> Result<(), TierError> {
        let id = id.map(|s| s.trim().to_owned()).unwrap_or_default();
        if id.is_empty() {
            return Err(self.error(line, "missing customer_id".into()));
        }
        let tier = tier.map(|s| s.trim().to_owned()).unwrap_or_default();
        if tier.is_empty() {
            return Err(self.error(line, format!("customer {id:?}: missing tier")));
        }
        if let Some(first) = self.first_line.get(&id) {
            return Err(self.error(
                line,
                format!("customer {id:?}: duplicate (first on line {first})"),
            ));
        }
        self.first_line.insert(id.clone(), line);
        self.rows.push(RawRow { id, tier, fields });
        Ok(())
    }
}

/// A YAML node with its location, enough to read the two customer-file shapes.
#[derive(Debug)]
enum Node {
    Null,
    Scalar(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<Node>, Spanned<Node>>()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    fn describe(&self) -> &'static str {
        match self {
            Node::Null => "nothing",
            Node::Scalar(_) => "a scalar",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a map",
        }
    }
}

/// Parses the YAML format: `customers: [ {customer_id, tier, ...}, ... ]` (or that list at the
/// top level), or a map `id: tier` / `id: {tier: ..., ...}`.
pub(crate) fn parse_yaml(path: &Path, text: &str) -> Result<Vec<RawRow>, TierError> {
    let doc: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
    let mut rows = Rows::new(path);
    let line = doc.referenced.line();
    match doc.value {
        Node::Null => {}
        Node::Seq(items) => read_list(&mut rows, items)?,
        Node::Map(entries) => {
            if let [(key, value)] = entries.as_slice()
                && matches!(&key.value, Node::Scalar(k) if k == "customers")
                && matches!(value.value, Node::Seq(_) | Node::Null)
            {
                if let Some((_, value)) = entries.into_iter().next()
                    && let Node::Seq(items) = value.value
                {
                    read_list(&mut rows, items)?;
                }
            } else {
                read_map(&mut rows, entries)?;
            }
        }
        Node::Scalar(_) => {
            return Err(rows.error(
                line,
                "expected `customers:` with a list of customers, or a map of customer id to tier"
                    .into(),
            ));
        }
    }
    Ok(rows.rows)
}

/// The list shape: each item a map with `customer_id`, `tier` and other fields.
fn read_list(rows: &mut Rows<'_>, items: Vec<Spanned<Node>>) -> Result<(), TierError> {
    for item in items {
        let line = item.referenced.line();
        let Node::Map(entries) = item.value else {
            return Err(rows.error(
                line,
                format!(
                    "expected a customer (a map with customer_id and tier), found {}",
                    item.value.describe()
                ),
            ));
        };
        let fields = scalar_fields(rows, line, entries)?;
        let mut id = None;
        let mut tier = None;
        let mut extra = Vec::new();
        for (k, v) in fields {
            match k.as_str() {
                "customer_id" => id = Some(v),
                "tier" => tier = Some(v),
                _ => extra.push((k, v)),
            }
        }
        rows.push(line, id, tier, extra)?;
    }
    Ok(())
}

/// The map shape: `id: tier` or `id: {tier: ..., other fields}`.
fn read_map(
    rows: &mut Rows<'_>,
    entries: Vec<(Spanned<Node>, Spanned<Node>)>,
) -> Result<(), TierError> {
    for (key, value) in entries {
        let line = key.referenced.line();
        let Node::Scalar(id) = key.value else {
            return Err(rows.error(
                line,
                format!(
                    "expected a customer id as the key, found {}",
                    key.value.describe()
                ),
            ));
        };
        match value.value {
            Node::Scalar(tier) => rows.push(line, Some(id), Some(tier), Vec::new())?,
            Node::Null => rows.push(line, Some(id), None, Vec::new())?,
            Node::Map(entries) => {
                let fields = scalar_fields(rows, line, entries)?;
                let mut tier = None;
                let mut extra = Vec::new();
                for (k, v) in fields {
                    match k.as_str() {
                        "tier" => tier = Some(v),
                        "customer_id" => {
                            return Err(rows.error(
                                line,
                                format!(
                                    "customer {id:?}: customer_id is not allowed here (the key is the id)"
                                ),
                            ));
                        }
                        _ => extra.push((k, v)),
                    }
                }
                rows.push(line, Some(id), tier, extra)?;
            }
            Node::Seq(_) => {
                return Err(rows.error(
                    line,
                    format!("customer {id:?}: expected a tier or a map of fields, found a list"),
                ));
            }
        }
    }
    Ok(())
}

/// A customer's fields as text; nested values are refused, null values skipped.
fn scalar_fields(
    rows: &Rows<'_>,
    line: u64,
    entries: Vec<(Spanned<Node>, Spanned<Node>)>,
) -> Result<Vec<(String, String)>, TierError> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Node::Scalar(k) = key.value else {
            return Err(rows.error(
                key.referenced.line(),
                format!("expected a field name, found {}", key.value.describe()),
            ));
        };
        match value.value {
            Node::Scalar(v) => out.push((k, v)),
            Node::Null => {}
            other => {
                return Err(rows.error(
                    value.referenced.line().max(line),
                    format!(
                        "field {k:?}: expected a single value, found {}",
                        other.describe()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> TierError {
    let line = e.location().map(|l| l.line()).filter(|&l| l > 0);
    let mut options = serde_saphyr::RenderOptions::default();
    options.snippets = serde_saphyr::SnippetMode::Off;
    let message = e.render_with_options(options).replace('\n', " ");
    parse_error(path, line, tidy_yaml_message(&message))
}

/// The parser's message without its location suffix (the error already starts with the
/// line) or its hint for Rust developers.
fn tidy_yaml_message(message: &str) -> String {
    let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    if let Some(i) = message.rfind(" at line ")
        && let Some((_, column)) = message[i..].split_once(", column ")
        && column.chars().all(|c| c.is_ascii_digit())
    {
        return format!("{} (column {column})", &message[..i]);
    }
    message
}

/// Parses the CSV format: a header row naming `customer_id` and `tier` (any order), other
/// columns are extra fields; `#` starts a comment line; cells are trimmed.
pub(crate) fn parse_csv(path: &Path, bytes: &[u8]) -> Result<Vec<RawRow>, TierError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(bytes);
    let csv_error = |e: csv::Error| {
        let line = e.position().map(|p| p.line());
        let message = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("expected {expected_len} fields like the header, found {len}"),
            csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8: {err}"),
            _ => e.to_string(),
        };
        parse_error(path, line, message)
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_owned)
        .collect();
    let header_line = reader.position().line().saturating_sub(1).max(1);
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(id_col), Some(tier_col)) = (col("customer_id"), col("tier")) else {
        return Err(parse_error(
            path,
            Some(header_line),
            format!(
                "the header must name the columns customer_id and tier, found: {}",
                header.join(",")
            ),
        ));
    };
    let mut rows = Rows::new(path);
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let fields = record
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != id_col && *i != tier_col)
            .filter_map(|(i, v)| Some((header.get(i)?.clone(), v.to_owned())))
            .collect();
        rows.push(
            line,
            record.get(id_col).map(str::to_owned),
            record.get(tier_col).map(str::to_owned),
            fields,
        )?;
    }
    Ok(rows.rows)
}

#[cfg(test)]
mod tests;
