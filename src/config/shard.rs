//! `worker.shard`: which share of the projects this instance analyses. A type of its own so that
//! an instance can never hold a share that is not one (`2/2`, `0/0`): the walk, the sweep, the
//! watermark and the count all take it as it is.

use std::fmt;
use std::str::FromStr;

/// One instance's share of the projects: those whose id modulo `count` is `index`, with
/// `0 <= index < count`. `i/N` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Every project: the one shard of a single instance.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `index/count`, or `None` unless `index < count`.
    pub fn new(index: u32, count: u32) -> Option<Shard> {
        (index < count).then_some(Shard { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A `worker.shard` that is not `i/N` with `0 <= i < N`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not `i/N` with 0 <= i < N (for example `0/1`, or `1/4`)")]
pub struct InvalidShard(String);

impl FromStr for Shard {
    type Err = InvalidShard;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidShard(s.to_string());
        let (index, count) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = index.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i_of_n_and_refuses_anything_else() {
        assert_eq!("0/1".parse::<Shard>().ok(), Some(Shard::ALL));
        assert_eq!(" 1 / 4 ".trim().parse::<Shard>().ok(), Shard::new(1, 4));
        assert_eq!(Shard::new(3, 4).map(|s| s.to_string()), Some("3/4".into()));
        for bad in ["", "1", "2/2", "0/0", "-1/3", "1/-3", "a/b", "1/2/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
