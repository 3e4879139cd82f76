//! Property tests of the pure IPAM core: whatever the range and whatever
//! sequence of allocations and releases,
//! - no address is handed out outside the range or inside an exclusion;
//! - no address is held twice, and no (pod, interface) holds two;
//! - every dynamic allocation takes the lowest free address (so a release
//!   followed by an allocation reuses the lowest freed address);
//! - the free-space index stays proportional to the allocations, also on
//!   IPv6 ranges of 2^64 and more addresses at offsets beyond 2^63.
//!
//! Case counts are fixed so runs are comparable: 256 cases for each of the
//! three model tests and 512 for the parser test, 1,280 cases per run.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hereabouts_core::{
    AllocError, Allocation, Cidr, Exclusion, IpRange, Outcome, Pool, RangeFields,
};
use proptest::prelude::*;

/// A small range (4 to 256 addresses) with optional start/end and up to
/// three exclusions, in either family.
fn small_range() -> impl Strategy<Value = IpRange> {
    (
        any::<bool>(),
        any::<u128>(),
        2u8..=8,
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u16>()),
        proptest::collection::vec((any::<u16>(), 0u8..=4), 0..=3),
    )
        .prop_filter_map(
            "range must hold an address",
            |(v6, bits, host, start, end, ex)| {
                let (addr, width) = if v6 {
                    (IpAddr::V6(Ipv6Addr::from(bits)), 128)
                } else {
                    (IpAddr::V4(Ipv4Addr::from((bits & 0xffff_ffff) as u32)), 32)
                };
                let cidr = Cidr::new(addr, width - host).ok()?;
                let size = 1u128 << host;
                let at = |o: u16| cidr.ip_at(u128::from(o) % size);
                let exclusions: Vec<Exclusion> = ex
                    .into_iter()
                    .filter_map(|(o, bits)| {
                        let ip = at(o)?;
                        if bits == 0 {
                            Some(Exclusion::Address(ip))
                        } else {
                            Cidr::new(ip, width - bits.min(host))
                                .ok()
                                .map(Exclusion::Cidr)
                        }
                    })
                    .collect();
                IpRange::new(cidr, start.and_then(at), end.and_then(at), &exclusions).ok()
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    Allocate { pod: u8, ifname: u8 },
    AllocateStatic { offset: u16, pod: u8, ifname: u8 },
    Release { pod: u8, ifname: u8 },
    ReleaseOffset { offset: u16 },
    MarkForeign { offset: u16 },
    UnmarkForeign { offset: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, 0u8..2).prop_map(|(pod, ifname)| Op::Allocate { pod, ifname }),
        2 => (any::<u16>(), 0u8..24, 0u8..2)
            .prop_map(|(offset, pod, ifname)| Op::AllocateStatic { offset, pod, ifname }),
        3 => (0u8..24, 0u8..2).prop_map(|(pod, ifname)| Op::Release { pod, ifname }),
        1 => any::<u16>().prop_map(|offset| Op::ReleaseOffset { offset }),
        1 => any::<u16>().prop_map(|offset| Op::MarkForeign { offset }),
        1 => any::<u16>().prop_map(|offset| Op::UnmarkForeign { offset }),
    ]
}

fn owner(pod: u8, ifname: u8) -> Allocation {
    // The container ID is the pod's: release by (container, ifname) then
    // matches (pod, ifname).
    Allocation::new(
        format!("c{pod}"),
        format!("ns/pod-{pod}"),
        format!("net{ifname}"),
    )
}

/// The lowest usable offset neither allocated nor foreign, by brute force.
fn lowest_free(
    range: &IpRange,
    held: &BTreeMap<u128, Allocation>,
    foreign: &BTreeSet<u128>,
) -> Option<u128> {
    (range.first_offset()..=range.last_offset())
        .find(|o| range.is_usable(*o) && !held.contains_key(o) && !foreign.contains(o))
}

fn check_invariants(pool: &Pool, foreign: &BTreeSet<u128>) -> Result<(), TestCaseError> {
    let range = pool.range();
    let mut owners = HashSet::new();
    let mut ips = HashSet::new();
    for (offset, ip, a) in pool.iter() {
        prop_assert!(
            range.is_usable(offset),
            "{ip} (offset {offset}) is not usable in {range}"
        );
        prop_assert!(range.contains(ip));
        prop_assert_eq!(range.offset_of(ip), Some(offset));
        prop_assert!(ips.insert(ip), "{} held twice", ip);
        prop_assert!(
            owners.insert((a.pod_ref.clone(), a.ifname.clone())),
            "{:?} holds two",
            a
        );
    }
    prop_assert!(pool.index_runs() <= pool.len() + foreign.len() + range.excluded().len() + 2);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A model-checked sequence of operations on a small range.
    #[test]
    fn allocator_matches_model(range in small_range(), ops in proptest::collection::vec(op(), 1..120)) {
        let mut pool = Pool::new(range.clone());
        let mut held: BTreeMap<u128, Allocation> = BTreeMap::new();
        let mut foreign: BTreeSet<u128> = BTreeSet::new();
        let size = range.cidr().last_offset() + 1;
        for op in ops {
            match op {
                Op::Allocate { pod, ifname } => {
                    let who = owner(pod, ifname);
                    let existing = held.iter().find(|(_, a)| **a == who).map(|(o, _)| *o);
                    let expected = existing.or_else(|| lowest_free(&range, &held, &foreign));
                    match pool.allocate(who.clone()) {
                        Ok(a) => {
                            prop_assert_eq!(Some(a.offset), expected);
                            prop_assert_eq!(a.outcome == Outcome::Existing, existing.is_some());
                            held.insert(a.offset, who);
                        }
                        Err(AllocError::Exhausted { .. }) => prop_assert_eq!(expected, None),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::AllocateStatic { offset, pod, ifname } => {
                    let who = owner(pod, ifname);
                    let offset = u128::from(offset) % size;
                    let ip = range.ip_at(offset).expect("inside");
                    let existing = held.iter().find(|(_, a)| **a == who).map(|(o, _)| *o);
                    let ok = match existing {
                        Some(o) => o == offset,
                        None => range.is_usable(offset) && !held.contains_key(&offset) && !foreign.contains(&offset),
                    };
                    let got = pool.allocate_static(ip, who.clone());
                    prop_assert_eq!(got.is_ok(), ok, "{:?}", got);
                    if ok {
                        held.insert(offset, who);
                    }
                }
                Op::Release { pod, ifname } => {
                    let who = owner(pod, ifname);
                    let expected = held.iter().find(|(_, a)| **a == who).map(|(o, _)| *o);
                    let got = pool.release(&who.container_id, &who.ifname).map(|r| r.offset);
                    prop_assert_eq!(got, expected);
                    if let Some(o) = expected {
                        held.remove(&o);
                        // Release then allocate reuses the lowest freed address.
                        if lowest_free(&range, &held, &foreign) == Some(o) {
                            prop_assert_eq!(pool.peek_lowest_free(), Some(o));
                        }
                    }
                }
                Op::ReleaseOffset { offset } => {
                    let offset = u128::from(offset) % size;
                    let got = pool.release_offset(offset).map(|r| r.allocation);
                    prop_assert_eq!(got, held.remove(&offset));
                }
                Op::MarkForeign { offset } => {
                    let offset = u128::from(offset) % size;
                    let ip = range.ip_at(offset).expect("inside");
                    prop_assert_eq!(pool.mark_foreign(ip), foreign.insert(offset));
                }
                Op::UnmarkForeign { offset } => {
                    let offset = u128::from(offset) % size;
                    let ip = range.ip_at(offset).expect("inside");
                    prop_assert_eq!(pool.unmark_foreign(ip), foreign.remove(&offset));
                }
            }
            check_invariants(&pool, &foreign)?;
            let taken = (range.first_offset()..=range.last_offset())
                .filter(|o| range.is_usable(*o) && (held.contains_key(o) || foreign.contains(o)))
                .count();
            prop_assert_eq!(pool.free_count(), range.usable_count() - taken as u128);
            prop_assert_eq!(pool.len(), held.len());
        }
    }

    /// Fill, release a random subset, allocate again: the freed addresses
    /// come back lowest first, and nothing else is handed out before them.
    #[test]
    fn release_then_allocate_reuses_lowest_freed(range in small_range(), picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..20)) {
        let mut pool = Pool::new(range.clone());
        let mut n = 0u32;
        let fresh = |n: &mut u32| {
            *n += 1;
            Allocation::new(format!("c{n}"), format!("ns/p{n}"), "net1")
        };
        while pool.allocate(fresh(&mut n)).is_ok() {}
        prop_assert_eq!(pool.free_count(), 0);
        let all: Vec<u128> = pool.iter().map(|(o, _, _)| o).collect();
        let freed: BTreeSet<u128> = picks.iter().map(|i| *i.get(&all)).collect();
        for o in &freed {
            prop_assert!(pool.release_offset(*o).is_some());
        }
        for expected in &freed {
            prop_assert_eq!(pool.allocate(fresh(&mut n)).map(|a| a.offset), Ok(*expected));
        }
        prop_assert!(pool.allocate(fresh(&mut n)).is_err());
    }

    /// Wide IPv6 ranges: static allocations anywhere (also beyond 2^63),
    /// dynamic ones lowest first, memory proportional to allocations.
    #[test]
    fn wide_ipv6_ranges(prefix in 0u8..=64, net in any::<u128>(), offsets in proptest::collection::vec(any::<u128>(), 1..40), dynamic in 0usize..40) {
        let cidr = Cidr::new(IpAddr::V6(Ipv6Addr::from(net)), prefix).expect("valid prefix");
        let range = IpRange::from_cidr(cidr).expect("a /64 or wider has room");
        let mut pool = Pool::new(range.clone());
        let mut statics = BTreeSet::new();
        for (i, raw) in offsets.iter().enumerate() {
            // Uniform over the range: for a /64 or wider, about half land at
            // offsets of 2^63 and beyond.
            let offset = (raw % (range.last_offset() - range.first_offset() + 1)) + range.first_offset();
            let ip = range.ip_at(offset).expect("inside");
            let who = Allocation::new(format!("s{i}"), format!("ns/s{i}"), "net1");
            let got = pool.allocate_static(ip, who);
            prop_assert_eq!(got.is_ok(), statics.insert(offset));
        }
        let mut expected = range.first_offset();
        for i in 0..dynamic {
            while statics.contains(&expected) {
                expected += 1;
            }
            let who = Allocation::new(format!("d{i}"), format!("ns/d{i}"), "net1");
            prop_assert_eq!(pool.allocate(who).map(|a| a.offset), Ok(expected));
            expected += 1;
        }
        prop_assert!(pool.index_runs() <= pool.len() + 2);
        for (offset, _, _) in pool.iter() {
            prop_assert!(range.is_usable(offset));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Range parsing never panics, and whatever it accepts is consistent.
    #[test]
    fn range_parsing_never_panics(range in "[0-9a-f:./-]{0,40}", start in proptest::option::of("[0-9a-f:.]{0,20}"), end in proptest::option::of("[0-9a-f:.]{0,20}"), exclude in proptest::collection::vec("[0-9a-f:./]{0,24}", 0..3)) {
        let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
        let fields = RangeFields { path: "ipam", range: &range, range_start: start.as_deref(), range_end: end.as_deref(), exclude: &exclude };
        match IpRange::parse(&fields) {
            Ok((r, _)) => {
                prop_assert!(r.usable_count() >= 1);
                prop_assert!(r.first_offset() >= 1 && r.first_offset() <= r.last_offset());
                prop_assert!(r.last_offset() < r.cidr().last_offset());
                prop_assert!(r.is_usable(Pool::new(r.clone()).peek_lowest_free().expect("room")));
            }
            Err(e) => prop_assert!(e.to_string().starts_with(e.field())),
        }
    }
}
