//! Median and quartiles of benchmark samples: the guest summarises its samples
//! with it and the host pools several runs' medians the same way.
use std::collections::BTreeMap;

/// Median, quartiles and extremes of a set of samples (ns per run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Quartiles by linear interpolation between order statistics (type 7, what
    /// numpy and R use by default). Panics on an empty slice.
    pub fn of(samples: &[f64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            let h = (s.len() - 1) as f64 * p;
            let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
            s[lo] + (s[hi] - s[lo]) * (h - lo as f64)
        };
        Self { median: q(0.5), q1: q(0.25), q3: q(0.75), min: s[0], max: s[s.len() - 1] }
    }

    /// The metrics a benchmark record carries: `value`/`lower`/`upper` are what BMF
    /// reports (median, Q1, Q3).
    pub fn metrics(&self, samples: &[f64]) -> BTreeMap<String, f64> {
        let mut m: BTreeMap<String, f64> = [
            ("value", self.median),
            ("lower", self.q1),
            ("upper", self.q3),
            ("min", self.min),
            ("max", self.max),
            ("samples", samples.len() as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (i, v) in samples.iter().enumerate() {
            m.insert(format!("sample_{i}"), *v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_quartiles() {
        let s = Summary::of(&[7.0, 1.0, 3.0, 5.0, 2.0, 6.0, 4.0]);
        assert_eq!((s.median, s.q1, s.q3, s.min, s.max), (4.0, 2.5, 5.5, 1.0, 7.0));
        let one = Summary::of(&[9.0]);
        assert_eq!((one.median, one.q1, one.q3), (9.0, 9.0, 9.0));
    }
}
