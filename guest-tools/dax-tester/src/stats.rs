//! Percentile summaries of samples in nanoseconds.

use serde::Serialize;

/// Nearest-rank percentiles and the mean of a set of samples.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub min_ns: f64,
    pub avg_ns: f64,
    pub p50_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    pub max_ns: f64,
}

impl Summary {
    /// Summarises `samples` (sorted in place). None when empty.
    pub fn of(samples: &mut [f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let round = |x: f64| (x * 10.0).round() / 10.0;
        Some(Summary {
            samples: n,
            min_ns: round(samples[0]),
            avg_ns: round(samples.iter().sum::<f64>() / n as f64),
            p50_ns: round(rank(0.50)),
            p90_ns: round(rank(0.90)),
            p99_ns: round(rank(0.99)),
            max_ns: round(samples[n - 1]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Summary::of(&mut v).unwrap();
        assert_eq!(
            (s.min_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.max_ns),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.avg_ns, 50.5);
        assert!(Summary::of(&mut []).is_none());
    }
}
