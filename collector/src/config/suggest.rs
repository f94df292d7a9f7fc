//! "Did you mean ...?" for misspelt names, by edit distance.

/// The Levenshtein distance between `a` and `b`, in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `input`, when it is close enough to be a likely typo: at most
/// a third of the input's length away (at least 1, at most 3 edits), ignoring case and `_`/`-`,
/// or one is a prefix of the other (at least 3 characters).
pub fn did_you_mean<'a, I>(input: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let input_n = norm(input);
    let limit = (input.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .map(|c| {
            let c_n = norm(c);
            let d = edit_distance(&input_n, &c_n).min(edit_distance(input, c));
            // `warning` for `warn`, `prom` for `prometheus`: a prefix is a likely mix-up too.
            let prefix = input_n.len().min(c_n.len()) >= 3
                && (input_n.starts_with(&c_n) || c_n.starts_with(&input_n));
            (if prefix { d.min(limit) } else { d }, d, c)
        })
        .filter(|(eff, _, _)| *eff <= limit)
        .min_by_key(|(eff, d, _)| (*eff, *d))
        .map(|(_, _, c)| c)
}

/// ` (did you mean "x"?)` or an empty string.
pub fn hint<'a, I>(input: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    did_you_mean(input, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions() {
        let types = ["prometheusremotewrite", "prometheus", "debug"];
        let cases = [
            ("prometeus", Some("prometheus")),
            ("prometheus_remote_write", Some("prometheusremotewrite")),
            ("Debug", Some("debug")),
            ("dbg", None),
            ("kafka", None),
            ("prom", Some("prometheus")),
        ];
        for (input, want) in cases {
            assert_eq!(did_you_mean(input, types), want, "{input}");
        }
        assert_eq!(
            did_you_mean("recievers", ["receivers", "exporters"]),
            Some("receivers")
        );
        assert_eq!(
            hint("endpont", ["endpoint", "timeout"]),
            " (did you mean \"endpoint\"?)"
        );
        assert_eq!(hint("x", ["endpoint"]), "");
    }
}
