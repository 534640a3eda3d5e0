//! How the fleet's concurrency is split: a pure function of the live members, tested on its own.
//!
//! The total goes to the members that want work (projects queued, in flight, or a part of a pass
//! still to read), evenly, the remainder to the longest-running ones; when none wants work, to
//! all. A member that finds itself without work gives its share up at its next heartbeat, so
//! the members finishing the last spans of a pass get the whole total.

/// One live member as the split sees it, in the order shares are given (started first, first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live<'a> {
    pub id: &'a str,
    pub wants_work: bool,
}

/// The share of `me` in `total` among `live` (which holds `me`, with what it wants now).
pub fn share_of(me: &str, live: &[Live<'_>], total: usize) -> usize {
    let anyone_wants = live.iter().any(|m| m.wants_work);
    let takers: Vec<&str> = live
        .iter()
        .filter(|m| m.wants_work || !anyone_wants)
        .map(|m| m.id)
        .collect();
    let Some(rank) = takers.iter().position(|id| *id == me) else {
        return 0;
    };
    let n = takers.len();
    total / n + usize::from(rank < total % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(members: &[(&'static str, bool)]) -> Vec<Live<'static>> {
        members
            .iter()
            .map(|&(id, wants_work)| Live { id, wants_work })
            .collect()
    }

    #[test]
    fn the_total_is_split_evenly_and_the_remainder_goes_to_the_first() {
        let m = live(&[("a", true), ("b", true), ("c", true)]);
        let shares: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|id| share_of(id, &m, 8))
            .collect();
        assert_eq!(shares, vec![3, 3, 2]);
        assert_eq!(shares.iter().sum::<usize>(), 8);
    }

    #[test]
    fn members_without_work_give_their_share_to_those_with() {
        let m = live(&[("a", false), ("b", true), ("c", false)]);
        assert_eq!(share_of("a", &m, 6), 0);
        assert_eq!(share_of("b", &m, 6), 6);
        assert_eq!(share_of("c", &m, 6), 0);
    }

    #[test]
    fn when_nobody_wants_work_everyone_keeps_a_share() {
        let m = live(&[("a", false), ("b", false)]);
        assert_eq!(share_of("a", &m, 5) + share_of("b", &m, 5), 5);
    }

    #[test]
    fn a_total_smaller_than_the_fleet_leaves_some_members_none() {
        let m = live(&[("a", true), ("b", true), ("c", true)]);
        let shares: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|id| share_of(id, &m, 2))
            .collect();
        assert_eq!(shares, vec![1, 1, 0]);
    }

    #[test]
    fn a_member_not_in_the_list_gets_nothing() {
        assert_eq!(share_of("z", &live(&[("a", true)]), 4), 0);
    }

    #[test]
    fn the_shares_never_add_up_to_more_than_the_total() {
        for n in 1..6 {
            for total in 0..20 {
                for wanting in 0..(1u32 << n) {
                    let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
                    let m: Vec<Live<'_>> = ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| Live {
                            id,
                            wants_work: wanting & (1 << i) != 0,
                        })
                        .collect();
                    let sum: usize = ids.iter().map(|id| share_of(id, &m, total)).sum();
                    assert_eq!(sum, total, "n={n} total={total} wanting={wanting:b}");
                }
            }
        }
    }
}
