//! Property tests of the ledger: whatever sequence of allocations (dynamic
//! and static, on ranges of different configurations sharing one pool),
//! releases (by owner, exact, with the right or a stale container ID),
//! holds, foreign marks, freed addresses, reloads and the passing of time,
//! - no address is committed to two owners and no (pod, interface) holds
//!   two addresses of the pool;
//! - every answer is committed to its requester, inside its range's usable
//!   addresses (or the address the requester already holds), and a static
//!   answer is the address asked for;
//! - a repeated request of an owner gets the address it holds;
//! - no new allocation lands on an address an overlapping range holds, nor
//!   (dynamically) on one held for another pod while anything else is free;
//! - the shards written hold exactly the truth and the holds (as hold
//!   markers), and reloading them gives both back (a new leader keeps the
//!   holds).
//!
//! 256 cases of up to 60 steps each.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use hereabouts_core::ledger::{
    FOREIGN_RECHECK, Ledger, ReleaseBy, ReleaseReason, Request, held_until,
};
use hereabouts_core::{Allocation, Cidr, IpRange, RangeFields, SHARD_SPAN};
use proptest::prelude::*;

const HOLD: Duration = Duration::from_secs(300);
const PODS: usize = 8;

#[derive(Clone, Debug)]
enum Step {
    Alloc {
        range: usize,
        pod: usize,
        fixed: Option<u128>,
    },
    Batch(Vec<(usize, usize)>, usize),
    Release {
        pod: usize,
        reason: u8,
        stale: bool,
    },
    Collect {
        offset: u128,
    },
    Foreign(u128),
    Freed(u128),
    Reload,
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let offset = 0u128..300;
    prop_oneof![
        4 => (0usize..3, 0..PODS, proptest::option::weighted(0.3, offset.clone()))
            .prop_map(|(range, pod, fixed)| Step::Alloc { range, pod, fixed }),
        1 => (proptest::collection::vec((0usize..3, 0..PODS), 1..4), 0..PODS)
            .prop_map(|(allocs, release)| Step::Batch(allocs, release)),
        2 => (0..PODS, 0u8..3, any::<bool>())
            .prop_map(|(pod, reason, stale)| Step::Release { pod, reason, stale }),
        1 => offset.clone().prop_map(|offset| Step::Collect { offset }),
        1 => offset.clone().prop_map(Step::Foreign),
        1 => offset.prop_map(Step::Freed),
        1 => Just(Step::Reload),
        1 => (0u64..400).prop_map(Step::Wait),
    ]
}

fn cidr() -> Cidr {
    "100.64.0.0/23".parse().expect("test CIDR")
}

/// Three configurations of one pool: the whole /23, a narrow window that
/// runs out (.100-.140, in shard 0) and one across the shard boundary with
/// exclusions.
fn ranges() -> Vec<IpRange> {
    let parse = |start: Option<&str>, end: Option<&str>, exclude: &[&str]| {
        IpRange::parse(&RangeFields {
            path: "ipam",
            range: "100.64.0.0/23",
            range_start: start,
            range_end: end,
            exclude,
        })
        .expect("test range")
        .0
    };
    vec![
        parse(None, None, &[]),
        parse(Some("100.64.0.100"), Some("100.64.0.110"), &[]),
        parse(
            Some("100.64.0.120"),
            Some("100.64.0.140"),
            &["100.64.0.128/30", "100.64.0.131"],
        ),
    ]
}

fn owner(pod: usize) -> Allocation {
    Allocation::new(format!("c{pod}"), format!("ns/p{pod}"), "net1")
}

fn ip_at(offset: u128) -> IpAddr {
    cidr().ip_at(offset).expect("offset in range")
}

/// Checks the ledger's truth against itself and its shards.
fn check_truth(l: &Ledger) -> Result<(), TestCaseError> {
    let mut seen = HashMap::new();
    for (&offset, a) in l.allocations() {
        prop_assert!(
            seen.insert((a.pod_ref.clone(), a.ifname.clone()), offset)
                .is_none(),
            "{} holds two addresses",
            a.pod_ref
        );
        prop_assert_eq!(l.owned_by(&a.pod_ref, &a.ifname), Some(offset));
    }
    // The shards hold exactly the truth and the holds, each entry once.
    let mut written = BTreeMap::new();
    let mut holds = BTreeMap::new();
    for index in 0..=(cidr().last_offset() / SHARD_SPAN) {
        for (key, a) in l.shard_entries(index) {
            let offset: u128 = key.parse().expect("offset key");
            prop_assert!(
                !written.contains_key(&offset) && !holds.contains_key(&offset),
                "{key} twice"
            );
            match held_until(&a.container_id) {
                Some(until) => {
                    holds.insert(offset, (a.pod_ref.clone(), until));
                }
                None => {
                    written.insert(offset, a.into_owned());
                }
            }
        }
    }
    prop_assert_eq!(&written, l.allocations());
    let expected: BTreeMap<u128, (String, SystemTime)> = l
        .holds()
        .map(|(pod, _, offset, until)| (offset, (pod.to_owned(), until)))
        .collect();
    prop_assert_eq!(
        holds.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_ledger_keeps_its_invariants(steps in proptest::collection::vec(step(), 1..60)) {
        let ranges = ranges();
        let mut l = Ledger::new(cidr(), HOLD);
        let mut now = SystemTime::now();
        for step in steps {
            match step {
                Step::Alloc { range, pod, fixed } => {
                    let request = Request {
                        range: ranges[range].clone(),
                        owner: owner(pod),
                        static_ip: fixed.map(ip_at),
                        reserve: true,
                    };
                    let held_before = l.owned_by(&request.owner.pod_ref, "net1");
                    let holds: Vec<(String, u128)> = l
                        .holds()
                        .filter(|h| h.3 > now)
                        .map(|(p, _, o, _)| (p.to_owned(), o))
                        .collect();
                    let free_elsewhere = (0..=cidr().last_offset()).any(|o| {
                        ranges[range].is_usable(o)
                            && !l.allocations().contains_key(&o)
                            && !l.is_blocked(o, now)
                    });
                    let d = l.decide(&[&request], &[], now);
                    let answer = d.allocs[0].clone();
                    if let Ok(offset) = answer {
                        prop_assert_eq!(&l.allocations()[&offset], &request.owner);
                        // An owner keeps what it holds, even where its
                        // range's configuration changed (as whereabouts
                        // answers a repeated ADD); anything new is usable.
                        prop_assert!(
                            held_before == Some(offset) || ranges[range].is_usable(offset),
                            "{offset} unusable"
                        );
                        if let Some(f) = fixed {
                            prop_assert_eq!(offset, f);
                        }
                        if let Some(before) = held_before.filter(|b| ranges[range].is_usable(*b))
                            && fixed.is_none_or(|f| f == before)
                        {
                            prop_assert_eq!(offset, before, "a repeat gets the same address");
                        }
                        if held_before != Some(offset) {
                            prop_assert!(!l.is_foreign(offset), "{offset} is an overlapping range's");
                            prop_assert!(d.reserve.iter().any(|(o, _)| *o == offset));
                            let strangers = holds.iter().any(|(p, o)| *o == offset && *p != request.owner.pod_ref);
                            prop_assert!(
                                !(strangers && fixed.is_none() && free_elsewhere),
                                "{offset} held for another pod went to a dynamic request with addresses free"
                            );
                        }
                    }
                }
                Step::Batch(allocs, release) => {
                    let requests: Vec<Request> = allocs
                        .iter()
                        .map(|&(range, pod)| Request {
                            range: ranges[range].clone(),
                            owner: owner(pod),
                            static_ip: None,
                            reserve: false,
                        })
                        .collect();
                    let by = ReleaseBy::Owner {
                        pod_ref: format!("ns/p{release}"),
                        ifname: "net1".to_owned(),
                        container_id: None,
                    };
                    let d = l.decide(
                        &requests.iter().collect::<Vec<_>>(),
                        &[(&by, ReleaseReason::ClaimDeleted)],
                        now,
                    );
                    for (request, answer) in requests.iter().zip(&d.allocs) {
                        if let Ok(offset) = answer {
                            // Later requests of one owner in a batch may
                            // move it (another range): the last one holds.
                            let last = requests
                                .iter()
                                .zip(&d.allocs)
                                .rev()
                                .find(|(r, _)| r.owner == request.owner)
                                .map(|(_, a)| a.clone());
                            if last == Some(Ok(*offset)) {
                                prop_assert_eq!(&l.allocations()[offset], &request.owner);
                            }
                        }
                    }
                }
                Step::Release { pod, reason, stale } => {
                    let reason = [ReleaseReason::ClaimDeleted, ReleaseReason::Collected, ReleaseReason::Manual][usize::from(reason)];
                    let held = l.owned_by(&format!("ns/p{pod}"), "net1");
                    let by = ReleaseBy::Owner {
                        pod_ref: format!("ns/p{pod}"),
                        ifname: "net1".to_owned(),
                        container_id: Some(if stale { "old".to_owned() } else { format!("c{pod}") }),
                    };
                    let d = l.decide(&[], &[(&by, reason)], now);
                    prop_assert_eq!(d.releases[0], held.is_some() && !stale);
                    if stale {
                        prop_assert_eq!(l.owned_by(&format!("ns/p{pod}"), "net1"), held);
                    } else {
                        prop_assert_eq!(l.owned_by(&format!("ns/p{pod}"), "net1"), None);
                    }
                }
                Step::Collect { offset } => {
                    let holder = l.allocations().get(&offset).cloned();
                    let by = ReleaseBy::Exact {
                        ip: ip_at(offset),
                        container_id: holder.as_ref().map_or_else(|| "none".to_owned(), |a| a.container_id.clone()),
                    };
                    let d = l.decide(&[], &[(&by, ReleaseReason::Collected)], now);
                    prop_assert_eq!(d.releases[0], holder.is_some());
                    prop_assert!(!l.allocations().contains_key(&offset));
                }
                Step::Foreign(offset) => {
                    if !l.allocations().contains_key(&offset) {
                        l.mark_foreign([offset], now + FOREIGN_RECHECK);
                    }
                }
                Step::Freed(offset) => l.freed(offset),
                Step::Reload => {
                    let before = l.allocations().clone();
                    let holds_before: Vec<(String, u128)> = {
                        let mut h: Vec<_> = l.holds().map(|(p, _, o, _)| (p.to_owned(), o)).collect();
                        h.sort();
                        h
                    };
                    let shards: Vec<(u128, Vec<(String, Allocation)>)> = (0..=(cidr().last_offset() / SHARD_SPAN))
                        .map(|i| (i, l.shard_entries(i).into_iter().map(|(k, a)| (k, a.into_owned())).collect()))
                        .collect();
                    let warnings = l.load(shards);
                    prop_assert!(warnings.is_empty(), "{warnings:?}");
                    prop_assert_eq!(l.allocations(), &before);
                    let mut holds_after: Vec<(String, u128)> = l.holds().map(|(p, _, o, _)| (p.to_owned(), o)).collect();
                    holds_after.sort();
                    prop_assert_eq!(holds_after, holds_before, "holds come back from the pool");
                }
                Step::Wait(secs) => now += Duration::from_secs(secs),
            }
            check_truth(&l)?;
        }
    }
}
