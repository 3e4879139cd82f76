//! Review 5 (issue 15: holds, release cooldown, IPAMClaim): defects found
//! in the ledger's handling of holds and cooldowns, each as a failing test
//! through the ledger's public API (no API server: the ledger is pure).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hereabouts_core::ledger::{Ledger, ReleaseBy, ReleaseReason, Request, hold_marker};
use hereabouts_core::{AllocError, Allocation, IpRange};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn range(s: &str) -> IpRange {
    IpRange::from_cidr(s.parse().expect("test CIDR")).expect("test range")
}

fn pod(name: &str) -> Allocation {
    Allocation::new(format!("c-{name}"), format!("ns/{name}"), "net1")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn request(r: &IpRange, name: &str, static_ip: Option<&str>) -> Request {
    Request {
        range: r.clone(),
        owner: pod(name),
        static_ip: static_ip.map(ip),
        reserve: false,
    }
}

fn one(l: &mut Ledger, req: &Request, now: SystemTime) -> Result<u128, AllocError> {
    l.decide(&[req], &[], now)
        .allocs
        .into_iter()
        .next()
        .expect("one answer")
}

fn deleted(name: &str) -> ReleaseBy {
    ReleaseBy::Owner {
        pod_ref: format!("ns/{name}"),
        ifname: "net1".to_owned(),
        container_id: None,
    }
}

fn release(l: &mut Ledger, name: &str, reason: ReleaseReason, now: SystemTime) {
    let d = l.decide(&[], &[(&deleted(name), reason)], now);
    assert_eq!(d.releases, vec![true], "{name} released");
}

/// A StatefulSet-style release: held 300 s, cooling 60 s.
const HELD: ReleaseReason = ReleaseReason::ClaimDeleted {
    hold: Duration::from_secs(300),
    cooldown: Duration::from_secs(60),
};
/// A ReplicaSet-style release: no hold, cooling 60 s.
const COOLING: ReleaseReason = ReleaseReason::ClaimDeleted {
    hold: Duration::ZERO,
    cooldown: Duration::from_secs(60),
};

/// Finding 1: a static request that is refused (the requester already
/// holds another address) still ends the cooldown of the address it asked
/// for (ledger.rs decide_one, the `cooling.remove(&wanted)` before
/// `allocate_static`): a refused request changes nothing, yet the next
/// stranger's dynamic request gets the address still cooling.
#[test]
fn a_refused_static_request_keeps_the_cooldown_of_the_address_it_asked_for() {
    let r = range("198.51.100.0/29"); // .1-.6
    let mut l = Ledger::new(*r.cidr());
    let t0 = SystemTime::now();
    assert_eq!(one(&mut l, &request(&r, "a", None), t0), Ok(1));
    assert_eq!(one(&mut l, &request(&r, "b", None), t0), Ok(2));
    release(&mut l, "b", COOLING, t0);
    assert!(l.is_blocked(2, t0), ".2 cools down");
    // `a` (which holds .1) asks for .2 by name: refused, as it should be.
    let refused = one(&mut l, &request(&r, "a", Some("198.51.100.2")), t0);
    assert!(
        matches!(refused, Err(AllocError::OwnerHoldsOther { .. })),
        "{refused:?}"
    );
    // Nothing changed: .2 still cools, a stranger gets .3.
    assert!(
        l.is_blocked(2, t0),
        "the refused static request ended .2's cooldown"
    );
    assert_eq!(one(&mut l, &request(&r, "c", None), t0), Ok(3));
}

/// Finding 1 (the hold form): the same refused static request also ends
/// the hold of another pod name (the `holders` loop before
/// `allocate_static`): web-0 comes back within its hold and does not get
/// its address back, a stranger does.
#[test]
fn a_refused_static_request_keeps_the_hold_of_the_address_it_asked_for() {
    let r = range("198.51.100.0/29");
    let mut l = Ledger::new(*r.cidr());
    let t0 = SystemTime::now();
    assert_eq!(one(&mut l, &request(&r, "web-0", None), t0), Ok(1));
    assert_eq!(one(&mut l, &request(&r, "a", None), t0), Ok(2));
    release(&mut l, "web-0", HELD, t0);
    let refused = one(&mut l, &request(&r, "a", Some("198.51.100.1")), t0);
    assert!(
        matches!(refused, Err(AllocError::OwnerHoldsOther { .. })),
        "{refused:?}"
    );
    assert_eq!(
        l.holds()
            .map(|(p, _, o, _)| (p.to_owned(), o))
            .collect::<Vec<_>>(),
        vec![("ns/web-0".to_owned(), 1)],
        "the refused static request ended web-0's hold"
    );
    assert_eq!(one(&mut l, &request(&r, "x", None), t0), Ok(3));
    assert_eq!(one(&mut l, &request(&r, "web-0", None), t0), Ok(1));
}

/// Finding 2: a pod back under its name within its hold that asks for
/// another address (a static request) drops its hold on the old one with
/// no cooldown at all (decide_one: `held.remove(&key)` then `unblock`):
/// the address it left a second ago goes to the next stranger, though
/// "a hold lasts at least the cooldown, so a held address never skips it".
#[test]
fn a_pod_back_asking_another_address_leaves_its_old_one_cooling() {
    let r = range("198.51.100.0/29");
    let mut l = Ledger::new(*r.cidr());
    let t0 = SystemTime::now();
    assert_eq!(one(&mut l, &request(&r, "web-0", None), t0), Ok(1));
    release(&mut l, "web-0", HELD, t0);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        one(&mut l, &request(&r, "web-0", Some("198.51.100.4")), t1),
        Ok(4)
    );
    // .1 was released 1 s ago with a 60 s cooldown: a stranger gets .2.
    assert!(l.is_blocked(1, t1), ".1 skipped its cooldown");
    assert_eq!(one(&mut l, &request(&r, "x", None), t1), Ok(2));
}

/// Finding 2 (the range form): web-0 back within its hold through a NAD
/// whose range configuration (sharing the pool) excludes its old address:
/// the hold is dropped with no cooldown either.
#[test]
fn a_pod_back_on_a_range_without_its_address_leaves_it_cooling() {
    let wide = range("198.51.100.0/29");
    let narrow =
        IpRange::new(*wide.cidr(), Some(ip("198.51.100.3")), None, &[]).expect("narrow range");
    let mut l = Ledger::new(*wide.cidr());
    let t0 = SystemTime::now();
    assert_eq!(one(&mut l, &request(&wide, "web-0", None), t0), Ok(1));
    release(&mut l, "web-0", HELD, t0);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(one(&mut l, &request(&narrow, "web-0", None), t1), Ok(3));
    assert!(l.is_blocked(1, t1), ".1 skipped its cooldown");
    assert_eq!(one(&mut l, &request(&wide, "x", None), t1), Ok(2));
}

/// Finding 3: a hold read from the pool is believed whatever its expiry:
/// `held-until=253402300799` (year 9999, a hand edit or a leader whose
/// clock was wrong) keeps the address from every stranger for ever
/// (ledger.rs load: `held_until` is taken as is; MAX_HOLD only bounds
/// holds the ledger makes), and neither the collector (gc.rs:256) nor
/// `check` (audit.rs:146) will ever see it end. Expected: an expiry beyond
/// the longest hold the ledger could have made (a year) is not believed.
#[test]
fn a_hold_read_with_an_absurd_expiry_does_not_pin_its_address_for_ever() {
    let r = range("198.51.100.0/29");
    let mut l = Ledger::new(*r.cidr());
    let year_9999 = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let marked = Allocation::new(hold_marker(year_9999), "ns/gone-0", "net1");
    assert!(l.load([(0u128, vec![("1".to_owned(), marked)])]).is_empty());
    let now = SystemTime::now();
    // The fix chose to disbelieve such a marker rather than clamp it: no
    // ledger writes a hold beyond 366 days, so one further away is not a
    // hold (ledger::rests), and the address is free at once.
    assert!(!l.is_blocked(1, now), "held until year 9999");
    assert_eq!(one(&mut l, &request(&r, "a", None), now), Ok(1));
    // And a year-long hold the ledger could have made still holds.
    let mut l = Ledger::new(*r.cidr());
    let in_a_year = now + 365 * DAY;
    let marked = Allocation::new(hold_marker(in_a_year), "ns/gone-0", "net1");
    assert!(l.load([(0u128, vec![("1".to_owned(), marked)])]).is_empty());
    assert_eq!(one(&mut l, &request(&r, "b", None), now), Ok(2));
}

/// Finding 4: a marker whose expiry does not fit a SystemTime
/// (`held-until=18446744073709551615`), or is negative, is read as a live
/// allocation of the pod, its container ID the marker: the pod coming back
/// is answered with it (its claim then records a container ID that is no
/// container's). Expected: an entry with a marker prefix is never a live
/// allocation (an unreadable expiry is an ended rest, or refused on load).
#[test]
fn a_marker_with_an_unreadable_expiry_is_not_a_live_allocation() {
    let r = range("198.51.100.0/29");
    for id in [
        "hereabouts.dev/held-until=18446744073709551615",
        "hereabouts.dev/held-until=-1",
        "hereabouts.dev/cooling-until=99999999999999999999999",
    ] {
        let mut l = Ledger::new(*r.cidr());
        let marked = Allocation::new(id, "ns/web-0", "net1");
        l.load([(0u128, vec![("1".to_owned(), marked)])]);
        assert!(
            l.allocations().is_empty(),
            "{id}: read as a live allocation of {:?}",
            l.allocations().values().next().map(|a| &a.pod_ref)
        );
    }
}
