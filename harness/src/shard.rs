//! Spreading the kernels of a matrix over CI jobs: `--shard i/n` (1-based) or
//! `KM_SHARD=i/n`. Kernels are dealt round-robin in kernels.yaml order, so every
//! shard gets a similar mix and every kernel lands in exactly one shard.
use std::{fmt, str::FromStr};

use anyhow::{bail, Context as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (i, n) = s.split_once('/').with_context(|| format!("shard {s:?} must look like i/n, e.g. 1/3"))?;
        let index: usize = i.trim().parse().with_context(|| format!("shard {s:?}: {i:?} is not a number"))?;
        let count: usize = n.trim().parse().with_context(|| format!("shard {s:?}: {n:?} is not a number"))?;
        if count == 0 || index == 0 || index > count {
            bail!("shard {s:?}: need 1 <= i <= n (shards are numbered from 1)");
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// `KM_SHARD`, if set (declared in [`crate::report::results::RunOutputs`]).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Ok(crate::settings::Env::from_env()?.out.shard)
    }

    /// Whether the kernel at `position` (0-based, kernels.yaml order) is ours.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }

    /// This shard's part of `names` (in kernels.yaml order).
    pub fn select<T: Clone>(&self, names: &[T]) -> Vec<T> {
        names.iter().enumerate().filter(|(i, _)| self.owns(*i)).map(|(_, n)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_reject() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { index: 2, count: 3 });
        for bad in ["0/3", "4/3", "1/0", "x/2", "3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_kernel_in_exactly_one_shard() {
        let names: Vec<String> =
            ["5.10", "6.1", "6.12", "7.2", "7.3-rc", "host"].iter().map(|s| s.to_string()).collect();
        for n in 1..=7 {
            let mut all: Vec<String> = (1..=n).flat_map(|i| Shard { index: i, count: n }.select(&names)).collect();
            all.sort();
            let mut want = names.clone();
            want.sort();
            assert_eq!(all, want, "n={n}");
        }
        assert_eq!(Shard { index: 2, count: 3 }.select(&names), vec!["6.1", "7.3-rc"]);
    }
}
