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
//!   (dynamically) on one held for another pod or cooling down while
//!   anything else is free; when only those are left, the cooled address
//!   whose cooldown ends first goes, and a hold only when none cools;
//! - a dynamic request gets the lowest free address (whereabouts' order),
//!   or, back within its hold, its own; it is refused only when nothing is
//!   free and no hold or cooldown could give way;
//! - only a claim's deletion holds an address, for its pod name, for the
//!   hold period (at least the cooldown); a release that holds nothing
//!   cools the address for its cooldown;
//! - no cooldown outlives its end, and one removed by its marker cools
//!   nothing again;
//! - every allocation that changes is in a shard the decision writes;
//! - the shards written hold exactly the truth, the holds and the
//!   cooldowns (as markers), and reloading them gives all back (a new
//!   leader keeps holds and cooldowns).
//!
//! 256 cases of up to 60 steps each.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use hereabouts_core::ledger::{
    FOREIGN_RECHECK, Ledger, ReleaseBy, ReleaseReason, Request, cooling_marker, cooling_until,
    held_until,
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
        cooldown: u64,
        stale: bool,
    },
    Collect {
        offset: u128,
        cooldown: u64,
    },
    /// The collector removes the `n`th cooldown by its marker.
    CollectCooled(usize),
    Foreign(u128),
    Freed(u128),
    Reload,
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let offset = 0u128..300;
    prop_oneof![
        // The narrow window most: it runs out, and holds and cooldowns
        // give way.
        4 => (prop_oneof![Just(0usize), Just(1), Just(1), Just(2)], 0..PODS, proptest::option::weighted(0.3, offset.clone()))
            .prop_map(|(range, pod, fixed)| Step::Alloc { range, pod, fixed }),
        1 => (proptest::collection::vec((prop_oneof![Just(0usize), Just(1), Just(1), Just(2)], 0..PODS), 1..4), 0..PODS)
            .prop_map(|(allocs, release)| Step::Batch(allocs, release)),
        3 => (0..PODS, 0u8..5, 0u64..120, any::<bool>())
            .prop_map(|(pod, reason, cooldown, stale)| Step::Release { pod, reason, cooldown, stale }),
        1 => (offset.clone(), 0u64..120).prop_map(|(offset, cooldown)| Step::Collect { offset, cooldown }),
        1 => (0usize..4).prop_map(Step::CollectCooled),
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
/// runs out (.100-.103, in shard 0) and one across the shard boundary with
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
        parse(Some("100.64.0.100"), Some("100.64.0.103"), &[]),
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
    // The shards hold exactly the truth, the holds and the cooldowns, each
    // entry once.
    let mut written = BTreeMap::new();
    let mut holds = BTreeMap::new();
    let mut cooling = BTreeMap::new();
    for index in 0..=(cidr().last_offset() / SHARD_SPAN) {
        for (key, a) in l.shard_entries(index) {
            let offset: u128 = key.parse().expect("offset key");
            prop_assert!(
                !written.contains_key(&offset)
                    && !holds.contains_key(&offset)
                    && !cooling.contains_key(&offset),
                "{key} twice"
            );
            if let Some(until) = held_until(&a.container_id) {
                holds.insert(offset, (a.pod_ref.clone(), until));
            } else if let Some(until) = cooling_until(&a.container_id) {
                cooling.insert(offset, (a.pod_ref.clone(), until));
            } else {
                written.insert(offset, a.into_owned());
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
    // Markers carry whole seconds, rounded up.
    let expected: BTreeMap<u128, (String, SystemTime)> = l
        .cooldowns()
        .map(|(pod, _, offset, until)| (offset, (pod.to_owned(), until)))
        .collect();
    prop_assert_eq!(
        cooling
            .iter()
            .map(|(o, (p, _))| (*o, p.to_string()))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|(o, (p, _))| (*o, p.clone()))
            .collect::<Vec<_>>()
    );
    for (offset, (_, until)) in &expected {
        let marked = cooling[offset].1;
        prop_assert!(marked >= *until && marked < *until + Duration::from_secs(1));
    }
    Ok(())
}

/// The usable cooldowns of `range` (not taken by an overlapping range),
/// by their end.
fn usable_cooldowns(l: &Ledger, range: &IpRange, now: SystemTime) -> Vec<(SystemTime, u128)> {
    let mut c: Vec<_> = l
        .cooldowns()
        .filter(|(_, _, o, until)| *until > now && range.is_usable(*o) && !l.is_foreign(*o))
        .map(|(_, _, o, until)| (until, o))
        .collect();
    c.sort();
    c
}

/// Every allocation that changed is in a shard the decision writes.
fn check_touched(
    l: &Ledger,
    before: &BTreeMap<u128, Allocation>,
    d: &hereabouts_core::ledger::Decision,
) -> Result<(), TestCaseError> {
    for offset in before.keys().chain(l.allocations().keys()) {
        if before.get(offset) != l.allocations().get(offset) {
            prop_assert!(
                d.touched.contains(&l.shard_of(*offset)),
                "{offset} changed in shard {} the decision does not write",
                l.shard_of(*offset)
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_ledger_keeps_its_invariants(steps in proptest::collection::vec(step(), 1..60)) {
        let ranges = ranges();
        let mut l = Ledger::new(cidr());
        let mut now = SystemTime::now();
        for step in steps {
            let decides = matches!(
                step,
                Step::Alloc { .. } | Step::Batch(..) | Step::Release { .. } | Step::Collect { .. }
            );
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
                    let free: Vec<u128> = (0..=cidr().last_offset())
                        .filter(|o| {
                            ranges[range].is_usable(*o)
                                && !l.allocations().contains_key(o)
                                && !l.is_blocked(*o, now)
                        })
                        .collect();
                    let free_elsewhere = !free.is_empty();
                    let own_hold = holds
                        .iter()
                        .find(|(p, _)| **p == *request.owner.pod_ref)
                        .map(|(_, o)| *o)
                        .filter(|o| ranges[range].is_usable(*o) && !l.is_foreign(*o));
                    let givable = holds
                        .iter()
                        .any(|(_, o)| ranges[range].is_usable(*o) && !l.is_foreign(*o));
                    let before = l.allocations().clone();
                    let cooldowns = usable_cooldowns(&l, &ranges[range], now);
                    let d = l.decide(&[&request], &[], now);
                    check_touched(&l, &before, &d)?;
                    let answer = d.allocs[0].clone();
                    if held_before.is_none() && fixed.is_none() {
                        match (own_hold, &answer) {
                            // Back within its hold: its own address.
                            (Some(h), _) => prop_assert_eq!(answer.clone().ok(), Some(h)),
                            // Otherwise the lowest free address first...
                            (None, Ok(offset)) if free_elsewhere => {
                                prop_assert_eq!(*offset, free[0], "not the lowest free address");
                            }
                            (None, Ok(_)) => {}
                            // ...and a refusal only when nothing is left,
                            // holds included.
                            (None, Err(e)) => prop_assert!(
                                !free_elsewhere && !givable && cooldowns.is_empty(),
                                "refused ({e}) with {} free, holds that could give way: {givable}, cooldowns: {cooldowns:?}",
                                free.len()
                            ),
                        }
                    }
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
                            let strangers = holds.iter().any(|(p, o)| *o == offset && **p != *request.owner.pod_ref);
                            prop_assert!(
                                !(strangers && fixed.is_none() && free_elsewhere),
                                "{offset} held for another pod went to a dynamic request with addresses free"
                            );
                            let was_cooling = cooldowns.iter().any(|(_, o)| *o == offset);
                            if fixed.is_none() && own_hold.is_none() {
                                prop_assert!(
                                    !(was_cooling && free_elsewhere),
                                    "{offset} cooling went to a dynamic request with addresses free"
                                );
                                if was_cooling {
                                    prop_assert_eq!(
                                        cooldowns.first().map(|(_, o)| *o),
                                        Some(offset),
                                        "not the cooldown that ends first"
                                    );
                                }
                                prop_assert!(
                                    !strangers || cooldowns.is_empty(),
                                    "a hold gave way while {:?} cooled", cooldowns
                                );
                            }
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
                        &[(&by, ReleaseReason::ClaimDeleted { hold: HOLD, cooldown: Duration::from_secs(5) })],
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
                Step::Release { pod, reason, cooldown, stale } => {
                    let cooldown = Duration::from_secs(cooldown);
                    let reason = [
                        ReleaseReason::ClaimDeleted { hold: HOLD, cooldown },
                        ReleaseReason::Collected { cooldown },
                        ReleaseReason::Manual,
                        ReleaseReason::ClaimDeleted { hold: Duration::ZERO, cooldown },
                        ReleaseReason::IpamClaimDeleted { cooldown },
                    ][usize::from(reason)];
                    let held = l.owned_by(&format!("ns/p{pod}"), "net1");
                    let by = ReleaseBy::Owner {
                        pod_ref: format!("ns/p{pod}"),
                        ifname: "net1".to_owned(),
                        container_id: Some(if stale { "old".to_owned() } else { format!("c{pod}") }),
                    };
                    let before = l.allocations().clone();
                    let d = l.decide(&[], &[(&by, reason)], now);
                    check_touched(&l, &before, &d)?;
                    prop_assert_eq!(d.releases[0], held.is_some() && !stale);
                    if let Some(offset) = held.filter(|_| !stale) {
                        // Only a claim's deletion holds, for its pod name,
                        // for at least the cooldown; otherwise it cools.
                        let (hold, cooldown) = match reason {
                            ReleaseReason::ClaimDeleted { hold, cooldown } => (hold, cooldown),
                            ReleaseReason::Collected { cooldown } | ReleaseReason::IpamClaimDeleted { cooldown } => (Duration::ZERO, cooldown),
                            ReleaseReason::Manual => (Duration::ZERO, Duration::ZERO),
                        };
                        let held_for = l
                            .holds()
                            .find(|h| h.2 == offset)
                            .map(|(p, _, _, until)| (p.to_owned(), until));
                        let expected = (!hold.is_zero())
                            .then(|| (format!("ns/p{pod}"), now + hold.max(cooldown)));
                        prop_assert_eq!(held_for, expected);
                        let cools = l.cooldowns().any(|(_, _, o, _)| o == offset);
                        prop_assert_eq!(cools, hold.is_zero() && !cooldown.is_zero());
                    }
                    if stale {
                        prop_assert_eq!(l.owned_by(&format!("ns/p{pod}"), "net1"), held);
                    } else {
                        prop_assert_eq!(l.owned_by(&format!("ns/p{pod}"), "net1"), None);
                    }
                }
                Step::Collect { offset, cooldown } => {
                    let holder = l.allocations().get(&offset).cloned();
                    let by = ReleaseBy::Exact {
                        ip: ip_at(offset),
                        container_id: holder.as_ref().map_or_else(|| "none".to_owned(), |a| a.container_id.to_string()),
                    };
                    let cooldown = Duration::from_secs(cooldown);
                    let d = l.decide(&[], &[(&by, ReleaseReason::Collected { cooldown })], now);
                    prop_assert_eq!(d.releases[0], holder.is_some());
                    prop_assert!(!l.allocations().contains_key(&offset));
                }
                Step::CollectCooled(n) => {
                    let picked = l.cooldowns().nth(n).map(|(_, _, o, until)| (o, until));
                    if let Some((offset, until)) = picked {
                        let by = ReleaseBy::Exact {
                            ip: ip_at(offset),
                            container_id: cooling_marker(until),
                        };
                        let again = ReleaseReason::Collected { cooldown: Duration::from_secs(60) };
                        let d = l.decide(&[], &[(&by, again)], now);
                        // Gone: by the release, or ended already (the
                        // batch's expiry removed it, and its shard is
                        // written): either way no fresh read is needed.
                        prop_assert!(d.releases[0]);
                        prop_assert!(!d.unwitnessed);
                        prop_assert!(d.touched.contains(&l.shard_of(offset)));
                        prop_assert!(d.released.is_empty());
                        prop_assert!(!l.cooldowns().any(|(_, _, o, _)| o == offset), "cooled again");
                    }
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
                    let cooling_before: Vec<(String, u128)> = l.cooldowns().map(|(p, _, o, _)| (p.to_owned(), o)).collect();
                    let warnings = l.load(shards);
                    prop_assert!(warnings.is_empty(), "{warnings:?}");
                    prop_assert_eq!(l.allocations(), &before);
                    let cooling_after: Vec<(String, u128)> = l.cooldowns().map(|(p, _, o, _)| (p.to_owned(), o)).collect();
                    prop_assert_eq!(cooling_after, cooling_before, "cooldowns come back from the pool");
                    let mut holds_after: Vec<(String, u128)> = l.holds().map(|(p, _, o, _)| (p.to_owned(), o)).collect();
                    holds_after.sort();
                    prop_assert_eq!(holds_after, holds_before, "holds come back from the pool");
                }
                Step::Wait(secs) => now += Duration::from_secs(secs),
            }
            check_truth(&l)?;
            if decides {
                prop_assert!(
                    l.cooldowns().all(|(_, _, _, until)| until > now),
                    "a cooldown outlived its end"
                );
            }
        }
    }
}
