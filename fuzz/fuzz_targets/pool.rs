//! Any bytes as an IPPool's `spec` (pools are edited by hand, and written
//! by whereabouts): loading its allocations must never panic, keep every
//! entry whose key whereabouts reads as an offset in the range, and never
//! hand a held address out again.

#![no_main]

use std::collections::BTreeSet;

use hereabouts::crd::IPPoolSpec;
use hereabouts::ipam::{Allocation, Cidr, IpRange, Pool, parse_allocation_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<IPPoolSpec>(data) else {
        return;
    };
    let Ok((_, cidr)) = Cidr::parse_with_host(&spec.range) else {
        return;
    };
    let Ok(range) = IpRange::from_cidr(cidr) else {
        return;
    };
    let held: BTreeSet<u128> = spec
        .allocations
        .keys()
        .filter_map(|k| parse_allocation_key(k))
        .filter(|&o| o <= cidr.last_offset())
        .collect();
    let entries = spec
        .allocations
        .iter()
        .map(|(k, a)| (k.as_str(), Allocation::new(&a.id, &a.podref, &a.ifname)));
    let (mut pool, _issues) = Pool::from_keyed(range, entries);
    for (offset, _, _) in pool.iter() {
        assert!(held.contains(&offset));
    }
    for i in 0..8 {
        let Ok(got) = pool.allocate(Allocation::new(format!("fz{i}"), format!("fuzz/p{i}"), "net1"))
        else {
            break;
        };
        assert!(!held.contains(&got.offset), "{} was held", got.ip);
    }
    let keys: Vec<String> = pool.keyed().map(|(k, _)| k).collect();
    for key in keys {
        assert_eq!(parse_allocation_key(&key).map(|o| o.to_string()), Some(key));
    }
});
