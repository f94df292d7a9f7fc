//! Counter increases the way Prometheus' `increase()` reads them, for processors that roll
//! many cumulative series into a few running totals (`aggregate`, `usage_revenue`): a value
//! below the previous one, or a later start time, is a reset and the new value is the
//! increase; a series first seen after the processor started counts from zero; one that was
//! already running when it started is a baseline (its old total is not counted again).

/// An input series' previous point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Last {
    pub value: f64,
    pub start: u64,
    /// When it was last seen (Unix ns), for expiry.
    pub seen: u64,
}

/// The increase from `prev` to a point of `value` starting at `start`, for a processor that
/// started at `started` (all Unix ns).
pub(crate) fn increase(prev: Option<Last>, value: f64, start: u64, started: u64) -> f64 {
    match prev {
        None if start >= started => value,
        None => 0.0,
        Some(l) if value < l.value || start > l.start => value,
        Some(l) => value - l.value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increases_follow_prometheus() {
        let last = |value, start| {
            Some(Last {
                value,
                start,
                seen: 0,
            })
        };
        assert_eq!(increase(None, 5.0, 10, 10), 5.0, "born after the start");
        assert_eq!(
            increase(None, 5.0, 9, 10),
            0.0,
            "running before: a baseline"
        );
        assert_eq!(increase(last(5.0, 9), 8.0, 9, 10), 3.0);
        assert_eq!(increase(last(5.0, 9), 2.0, 9, 10), 2.0, "a reset");
        assert_eq!(
            increase(last(5.0, 9), 6.0, 20, 10),
            6.0,
            "restarted with a new start"
        );
    }
}
