//! `${env:VAR}` and `${env:VAR:-default}` substitution on the raw config text.
//!
//! Substitution happens on the text, BEFORE YAML parsing, so a value lands in the document
//! exactly as written (quote it in the YAML if it may contain `:`, `#` or other YAML syntax).
//! Rules:
//! - `${env:NAME}`: the variable's value; NAME matches `[A-Za-z_][A-Za-z0-9_]*`. An unset
//!   variable is an ERROR naming the variable and the line. This is stricter than the
//!   OpenTelemetry Collector (which substitutes an empty string) on purpose: a config that
//!   cannot work fails at start-up, not at the first export.
//! - `${env:NAME:-default}`: the default when the variable is unset or empty (as in a shell).
//! - `$$` is a literal `$`; any other `$` is kept as is.
//! - Any other `${...}` form is an error (only the `env` provider exists).
//! - Whole-line comments (first non-blank character `#`) are left untouched, so commented-out
//!   blocks may mention variables that are not set.

/// Why one substitution failed, on which 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvProblem {
    /// The line of the `${...}` expression.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Substitutes every `${env:...}` in `text`, looking variables up with `lookup`.
/// Returns every problem at once when any expression cannot be substituted.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<EnvProblem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        substitute_line(line, i + 1, lookup, &mut out, &mut problems);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn substitute_line(
    line: &str,
    line_no: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    problems: &mut Vec<EnvProblem>,
) {
    let mut rest = line;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                let expr = body.trim_end_matches(['\n', '\r']);
                problems.push(EnvProblem {
                    line: line_no,
                    message: format!(
                        "unterminated substitution \"${{{expr}\": missing the closing \"}}\""
                    ),
                });
                return;
            };
            let expr = &body[..end];
            match expand(expr, lookup) {
                Ok(value) => out.push_str(&value),
                Err(message) => problems.push(EnvProblem {
                    line: line_no,
                    message,
                }),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
}

/// Expands the inside of one `${...}`.
fn expand(expr: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let Some(spec) = expr.strip_prefix("env:") else {
        let hint = if is_var_name(expr) {
            format!("write ${{env:{expr}}}")
        } else {
            "only ${env:NAME} and ${env:NAME:-default} are supported".to_owned()
        };
        return Err(format!(
            "unsupported substitution \"${{{expr}}}\": {hint} (or $$ for a literal $)"
        ));
    };
    let (name, default) = match spec.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (spec, None),
    };
    if !is_var_name(name) {
        return Err(format!(
            "invalid environment variable name {name:?} in \"${{{expr}}}\": expected letters, \
             digits and _, not starting with a digit"
        ));
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_owned()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_owned()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (used as \"${{env:{name}}}\"); set it, or \
             give a default: \"${{env:{name}:-value}}\""
        )),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "URL" => Some("http://h:9090/w".into()),
            "EMPTY" => Some(String::new()),
            "_X1" => Some("x".into()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<String, Vec<String>> {
        substitute(text, &env).map_err(|ps| {
            ps.into_iter()
                .map(|p| format!("{}: {}", p.line, p.message))
                .collect()
        })
    }

    #[test]
    fn substitutes_values_defaults_and_escapes() {
        let cases = [
            ("a: ${env:URL}\n", "a: http://h:9090/w\n"),
            ("a: ${env:_X1}-${env:_X1}", "a: x-x"),
            ("a: ${env:MISSING:-dflt}", "a: dflt"),
            ("a: ${env:MISSING:-}", "a: "),
            ("a: ${env:URL:-dflt}", "a: http://h:9090/w"),
            ("a: ${env:EMPTY:-dflt}", "a: dflt"),
            ("a: '${env:EMPTY}'", "a: ''"),
            ("a: ${env:MISSING:-http://x:1/y}", "a: http://x:1/y"),
            ("a: $$5 and $$${env:_X1}", "a: $5 and $x"),
            ("a: $5 costs $", "a: $5 costs $"),
            (
                "  # ${env:MISSING} in a comment\nb: 1\n",
                "  # ${env:MISSING} in a comment\nb: 1\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(sub(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = "a: ${env:MISSING}\nb: ok\nc: ${FOO}\nd: ${env:1BAD}\ne: ${env:ALSO_MISSING} ${weird thing}\nf: ${env:URL\n";
        assert_eq!(
            sub(text).unwrap_err(),
            vec![
                "1: environment variable MISSING is not set (used as \"${env:MISSING}\"); set it, or give a default: \"${env:MISSING:-value}\"",
                "3: unsupported substitution \"${FOO}\": write ${env:FOO} (or $$ for a literal $)",
                "4: invalid environment variable name \"1BAD\" in \"${env:1BAD}\": expected letters, digits and _, not starting with a digit",
                "5: environment variable ALSO_MISSING is not set (used as \"${env:ALSO_MISSING}\"); set it, or give a default: \"${env:ALSO_MISSING:-value}\"",
                "5: unsupported substitution \"${weird thing}\": only ${env:NAME} and ${env:NAME:-default} are supported (or $$ for a literal $)",
                "6: unterminated substitution \"${env:URL\": missing the closing \"}\"",
            ]
        );
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::substitute;

    /// One piece of a config line, with the text it must become.
    #[derive(Debug, Clone)]
    enum Piece {
        /// Text without `$`, `#` or a line break: kept as is.
        Literal(String),
        /// `$$`: one `$`.
        Dollar,
        /// `${env:NAME}` of a set variable: its value, whatever it holds (`$`, `}` and
        /// `${env:...}` included: a value is not substituted again).
        Set(String, String),
        /// `${env:NAME:-default}` of an unset variable: the default.
        Defaulted(String, String),
    }

    fn var_name() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_]{0,8}"
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            "[^$#\\n\\r]{1,12}".prop_map(Piece::Literal),
            Just(Piece::Dollar),
            (var_name(), "[^\\n\\r]{0,12}").prop_map(|(n, v)| Piece::Set(format!("S{n}"), v)),
            (var_name(), "[^}\\n\\r]{0,12}")
                .prop_map(|(n, d)| Piece::Defaulted(format!("U{n}"), d)),
        ]
    }

    fn render(lines: &[Vec<Piece>]) -> (String, String, BTreeMap<String, String>) {
        let (mut text, mut want, mut env) = (String::new(), String::new(), BTreeMap::new());
        for line in lines {
            for p in line {
                match p {
                    Piece::Literal(s) => {
                        text.push_str(s);
                        want.push_str(s);
                    }
                    Piece::Dollar => {
                        text.push_str("$$");
                        want.push('$');
                    }
                    Piece::Set(n, v) => {
                        text.push_str(&format!("${{env:{n}}}"));
                        // A name used twice holds its first value everywhere.
                        let v = env.entry(n.clone()).or_insert_with(|| v.clone());
                        want.push_str(v);
                    }
                    Piece::Defaulted(n, d) => {
                        text.push_str(&format!("${{env:{n}:-{d}}}"));
                        want.push_str(d);
                    }
                }
            }
            text.push('\n');
            want.push('\n');
        }
        (text, want, env)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Substituting gives exactly the pieces' expected text, line for line.
        #[test]
        fn substitution_is_exact(lines in prop::collection::vec(prop::collection::vec(piece(), 0..6), 0..5)) {
            let (text, want, env) = render(&lines);
            let lookup = |n: &str| env.get(n).cloned();
            prop_assert_eq!(substitute(&text, &lookup), Ok(want));
        }

        /// Text without `$` comes back unchanged, whatever else it holds.
        #[test]
        fn text_without_dollar_is_unchanged(text in "[^$]{0,200}") {
            prop_assert_eq!(substitute(&text, &|_: &str| None), Ok(text.clone()));
        }

        /// An unset variable without a default is reported on its own line, once, and the
        /// rest of the text does not hide it.
        #[test]
        fn an_unset_variable_is_reported_on_its_line(
            lines in prop::collection::vec(prop::collection::vec(piece(), 0..4), 1..6),
            at in any::<prop::sample::Index>(),
            name in var_name(),
        ) {
            let (text, _, env) = render(&lines);
            let mut lines_of: Vec<String> = text.lines().map(str::to_owned).collect();
            let i = at.index(lines_of.len());
            lines_of[i].push_str(&format!(" ${{env:M{name}}}"));
            let text = lines_of.join("\n");
            let lookup = |n: &str| env.get(n).cloned();
            let problems = substitute(&text, &lookup).expect_err("an unset variable");
            prop_assert_eq!(problems.len(), 1);
            prop_assert_eq!(problems[0].line, i + 1);
            let expected = format!("M{name} is not set");
            prop_assert!(problems[0].message.contains(&expected), "{}", problems[0].message);
        }
    }
}
