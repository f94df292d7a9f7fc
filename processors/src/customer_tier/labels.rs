//! The attribute keys the processor adds become Prometheus labels once exported: the rules
//! that keep them valid, unreserved and distinct after the exporters' sanitising.

/// Label names Prometheus or its exposition set themselves; an added attribute may not become
/// one.
const RESERVED: [&str; 4] = ["job", "instance", "le", "quantile"];

/// The label name the exporters make of attribute key `key` (as `sanitize_label_name` in
/// `vla-exporters`): characters outside `[a-zA-Z0-9_]` become `_` and runs of `_` collapse.
pub(crate) fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out
}

/// Why an attribute key the processor adds would not make a usable Prometheus label. OTel
/// keys may hold dots (the exporters turn them into `_`), so `[a-zA-Z_][a-zA-Z0-9_.]*` is
/// accepted; names starting with `__` and those that become `job`, `instance`, `le` or
/// `quantile` are reserved.
pub(crate) fn problem(key: &str) -> Option<String> {
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Some(format!(
            "{key:?} is not a valid label name: use letters, digits, `_` and `.`, starting \
             with a letter or `_`"
        ));
    }
    if key.starts_with("__") {
        return Some(format!(
            "{key:?}: names starting with `__` are reserved by Prometheus"
        ));
    }
    let label = label_name(key);
    RESERVED
        .contains(&label.as_str())
        .then(|| format!("{key:?} is reserved: Prometheus sets the label {label:?} itself"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_table() {
        let cases = [
            ("tier", "tier"),
            ("customer.plan", "customer_plan"),
            ("a..b", "a_b"),
            ("a__b", "a_b"),
            ("_x", "_x"),
            ("k8s.pod-name", "k8s_pod_name"),
        ];
        for (key, want) in cases {
            assert_eq!(label_name(key), want, "{key}");
        }
        for ok in ["tier", "customer.plan", "_private", "Le", "quantile_x"] {
            assert_eq!(problem(ok), None, "{ok}");
        }
        for bad in [
            "", "9lives", ".x", "a-b", "a b", "__x", "job", "le", "quantile", "instance",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
    }
}
