//! "Did you mean ...?" for misspelt names, by edit distance.

/// The edit distance between `a` and `b` in characters, counting a swap of two adjacent
/// characters as one edit (optimal string alignment), since `otpl` for `otlp` is the most
/// common typo of all.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rolling rows: i-2, i-1, i.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 0..a.len() {
        cur[0] = i + 1;
        for j in 0..b.len() {
            let cost = usize::from(a[i] != b[j]);
            let mut d = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                d = d.min(before[j - 1] + 1);
            }
            cur[j + 1] = d;
        }
        std::mem::swap(&mut before, &mut prev);
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
        assert_eq!(edit_distance("otpl", "otlp"), 1);
        assert_eq!(edit_distance("ab", "ba"), 1);
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
        assert_eq!(did_you_mean("otpl", ["otlp"]), Some("otlp"));
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
