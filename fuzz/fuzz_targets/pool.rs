//! Any bytes as an IPPool's `spec` (pools are edited by hand, and written
//! by whereabouts): loading its allocations must never panic, keep every
//! entry whose key whereabouts reads as an offset in the range, and never
//! hand a held address out again.
//!
//! Inputs starting with an odd byte are read as choices that build a spec
//! from interesting ranges and keys; the rest are used as raw JSON.

#![no_main]

use std::collections::BTreeSet;

use hereabouts_api::IPPoolSpec;
use hereabouts_core::{Allocation, Cidr, IpRange, Pool, parse_allocation_key};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const RANGES: &[&str] = &[
    "100.64.0.0/24",
    "100.64.0.0/30",
    "100.64.0.0/29",
    "2001:db8::/64",
    "2001:db8::/126",
    "0.0.0.0/0",
    "::/0",
    "100.64.0.5/24",
    "x",
    "100.64.0.0/31",
];

const KEYS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "+1",
    "+2",
    "01",
    "002",
    "-1",
    "-0",
    "1e9",
    "",
    " 1",
    "1 ",
    "255",
    "256",
    "7",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211455",
    "340282366920938463463374607431768211456",
    "+",
    "0x1",
    "٣",
];

fn built(data: &[u8]) -> Value {
    let mut bytes = data.iter().copied();
    let mut next = move || usize::from(bytes.next().unwrap_or(0));
    let range = RANGES[next() % RANGES.len()];
    let allocations: Map<String, Value> = (0..next() % 12)
        .map(|_| {
            let key = KEYS[next() % KEYS.len()].to_owned();
            let who = next() % 4;
            (
                key,
                json!({"id": format!("c{who}"), "podref": format!("ns/p{who}"), "ifname": "net1"}),
            )
        })
        .collect();
    json!({"range": range, "allocations": allocations})
}

fuzz_target!(|data: &[u8]| {
    let parsed = match data.split_first() {
        Some((&first, rest)) if first & 1 == 1 => serde_json::from_value::<IPPoolSpec>(built(rest)),
        _ => serde_json::from_slice::<IPPoolSpec>(data),
    };
    let Ok(spec) = parsed else {
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
    let entries = spec.allocations.iter().map(|(k, a)| {
        (
            k.as_str(),
            Allocation::new(a.id.as_str(), a.podref.as_str(), a.ifname.as_str()),
        )
    });
    let (mut pool, _issues) = Pool::from_keyed(range, entries);
    for (offset, _, _) in pool.iter() {
        assert!(held.contains(&offset));
    }
    for i in 0..8 {
        let Ok(got) = pool.allocate(Allocation::new(
            format!("fz{i}"),
            format!("fuzz/p{i}"),
            "net1",
        )) else {
            break;
        };
        assert!(!held.contains(&got.offset), "{} was held", got.ip);
    }
    let keys: Vec<String> = pool.keyed().map(|(k, _)| k).collect();
    for key in keys {
        assert_eq!(parse_allocation_key(&key).map(|o| o.to_string()), Some(key));
    }
});
