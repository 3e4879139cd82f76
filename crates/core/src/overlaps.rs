//! Which ranges of a network need OverlappingRangeIPReservations.
//!
//! whereabouts writes a reservation for every address a range with
//! `enable_overlapping_ranges` hands out: creating it is how two ranges of
//! one `network_name` that share addresses never hand the same one out. A
//! range that shares no address with any other range of its network has
//! nothing to be kept apart from, and its pool alone keeps its addresses
//! unique. The controller may then skip the reservations (and a write per
//! allocation), as long as it learns of every range before it serves one.
//!
//! [`Overlaps`] is that knowledge for one term of leadership: the ranges
//! known per network, from the pools read when the term began and from
//! every range the term has served since. A range joins before it hands
//! anything out; if it overlaps a range already known, it reserves, and
//! so must the ranges it overlaps, whose earlier allocations (made without
//! reservations) get theirs written before the joining range serves.

use std::collections::HashMap;

use crate::Cidr;

/// One range of a network, by the pool that stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub pool: String,
    pub cidr: Cidr,
}

/// What a range learns when it joins its network.
#[derive(Debug, PartialEq, Eq)]
pub struct Joined {
    /// Whether its allocations need reservations.
    pub reserve: bool,
    /// The other ranges it overlaps: each must reserve from now on and
    /// write the reservations of what it holds before the joining range
    /// hands anything out.
    pub overlapped: Vec<Known>,
}

/// The ranges known to one term of leadership, by `network_name` (`None`:
/// whereabouts' default scope).
#[derive(Debug, Default)]
pub struct Overlaps {
    networks: HashMap<Option<String>, Vec<Known>>,
}

impl Overlaps {
    /// Records ranges that exist already (the pools read when the term
    /// began), without deciding anything.
    pub fn seed(&mut self, network_name: Option<&str>, known: impl IntoIterator<Item = Known>) {
        let ranges = self
            .networks
            .entry(network_name.map(str::to_owned))
            .or_default();
        for k in known {
            if !ranges.iter().any(|r| r.pool == k.pool) {
                ranges.push(k);
            }
        }
    }

    /// Records `range` of `network_name` and tells what it overlaps. The
    /// answer is symmetric: a range that joined earlier and is overlapped
    /// now is named in `overlapped`, and the caller makes it reserve.
    pub fn join(&mut self, network_name: Option<&str>, range: Known) -> Joined {
        self.seed(network_name, [range.clone()]);
        let overlapped: Vec<Known> = self
            .networks
            .get(&network_name.map(str::to_owned))
            .into_iter()
            .flatten()
            .filter(|k| k.pool != range.pool && k.cidr.overlaps(&range.cidr))
            .cloned()
            .collect();
        Joined {
            reserve: !overlapped.is_empty(),
            overlapped,
        }
    }

    /// How many ranges are known, over all networks (for logs).
    pub fn ranges_known(&self) -> usize {
        self.networks.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(cidr: &str) -> Known {
        let (_, cidr) = Cidr::parse_with_host(cidr).expect("cidr");
        Known {
            pool: crate::pool_name(None, &cidr).expect("name").into_string(),
            cidr,
        }
    }

    #[test]
    fn a_lone_range_needs_no_reservations() {
        let mut o = Overlaps::default();
        let joined = o.join(None, known("100.64.0.0/24"));
        assert_eq!(
            joined,
            Joined {
                reserve: false,
                overlapped: vec![]
            }
        );
        // Joining again changes nothing, and disjoint ranges stay apart.
        assert!(!o.join(None, known("100.64.0.0/24")).reserve);
        assert!(!o.join(None, known("100.64.1.0/24")).reserve);
        assert!(!o.join(None, known("2001:db8::/64")).reserve);
        assert_eq!(o.ranges_known(), 3);
    }

    #[test]
    fn an_overlapping_range_makes_both_reserve() {
        let mut o = Overlaps::default();
        assert!(!o.join(None, known("100.64.0.0/24")).reserve);
        assert!(!o.join(None, known("100.64.1.0/24")).reserve);
        let joined = o.join(None, known("100.64.0.128/25"));
        assert!(joined.reserve);
        assert_eq!(joined.overlapped, vec![known("100.64.0.0/24")]);
        // The wider range, joining (again) later, learns of the narrower.
        let again = o.join(None, known("100.64.0.0/24"));
        assert!(again.reserve);
        assert_eq!(again.overlapped, vec![known("100.64.0.128/25")]);
        // A supernet overlaps both.
        let wide = o.join(None, known("100.64.0.0/16"));
        assert_eq!(wide.overlapped.len(), 3);
    }

    #[test]
    fn networks_are_apart() {
        let mut o = Overlaps::default();
        assert!(!o.join(Some("blue"), known("100.64.0.0/24")).reserve);
        assert!(!o.join(Some("green"), known("100.64.0.0/25")).reserve);
        assert!(!o.join(None, known("100.64.0.0/26")).reserve);
        assert!(o.join(Some("blue"), known("100.64.0.0/27")).reserve);
    }

    #[test]
    fn seeded_ranges_count_from_the_start() {
        let mut o = Overlaps::default();
        o.seed(Some("blue"), [known("198.51.100.0/24")]);
        o.seed(Some("blue"), [known("198.51.100.0/24")]);
        assert_eq!(o.ranges_known(), 1);
        let joined = o.join(Some("blue"), known("198.51.100.0/28"));
        assert!(joined.reserve);
        assert_eq!(joined.overlapped, vec![known("198.51.100.0/24")]);
        assert!(
            !Overlaps::default()
                .join(Some("blue"), known("198.51.100.0/28"))
                .reserve
        );
    }
}
