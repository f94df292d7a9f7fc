//! The few distributions the simulator needs, on a seeded generator so runs repeat exactly.

use rand::Rng;
use rand::rngs::StdRng;

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal draw with the given median and shape: latencies have a long right tail.
pub(crate) fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// A Poisson draw: exact for small means, the normal approximation above 30.
pub(crate) fn poisson(rng: &mut StdRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        let v = mean + mean.sqrt() * normal(rng);
        return v.round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut k = 0u64;
    let mut p: f64 = rng.random_range(0.0..1.0);
    while p > limit {
        k += 1;
        p *= rng.random_range(0.0..1.0);
    }
    k
}

/// Picks an index with probability proportional to its weight (weights must not all be 0).
pub(crate) fn weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn draws_have_the_asked_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 20_000;
        let mean = (0..n).map(|_| poisson(&mut rng, 4.0) as f64).sum::<f64>() / n as f64;
        assert!((mean - 4.0).abs() < 0.1, "{mean}");
        let mean = (0..n).map(|_| poisson(&mut rng, 200.0) as f64).sum::<f64>() / n as f64;
        assert!((mean - 200.0).abs() < 1.0, "{mean}");
        let mut v: Vec<f64> = (0..n).map(|_| log_normal(&mut rng, 0.2, 0.4)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[n / 2];
        assert!((median - 0.2).abs() < 0.01, "{median}");
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[weighted(&mut rng, &[1.0, 0.0, 3.0])] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = counts[2] as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }
}
