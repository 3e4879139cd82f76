//! Any bytes as an IPClaim's `spec` (the controller reads claims that any
//! holder of a node credential may write): deserializing as the CRD type,
//! then parsing every range, static address and pool name the way the
//! controller does, must refuse or accept, never panic; whatever it
//! accepts must be allocatable, and a refusal must name a `spec.` field.
//!
//! Inputs starting with an odd byte are read as choices that build a spec
//! from interesting values, so that a short run without a seed corpus
//! still gets past deserialization; the rest are used as raw JSON.

#![no_main]

use hereabouts_api::IPClaimSpec;
use hereabouts_core::{self as ipam, Allocation, IpRange, Pool, RangeRequest, claim_requests};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const VALUES: &[&str] = &[
    "100.64.0.0/24",
    "100.64.0.0/30",
    "100.64.0.1/32",
    "100.64.0.5",
    "100.64.0.255",
    "::/0",
    "0.0.0.0/0",
    "2001:db8::/64",
    "2001:db8::/127",
    "2001:db8::5",
    "100.64.0.9-100.64.0.2/24",
    "100.64.0.2-100.64.0.9/24",
    "x",
    "",
    "-",
    "/",
    "100.64.0.0/33",
    "::ffff:100.64.0.0/120",
    "100.64.0.0/25",
    "2001:db8::/129",
    "fd00::8000:0:0:0",
    "Blue",
    "blue",
    "n-n",
];

fn built(data: &[u8]) -> Value {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next().unwrap_or(0);
    let pick = |next: &mut dyn FnMut() -> u8| VALUES[usize::from(next()) % VALUES.len()];
    let ranges: Vec<Value> = (0..next() % 4)
        .map(|_| {
            let mut r = json!({"range": pick(&mut next)});
            if next() & 1 == 1 {
                r["rangeStart"] = json!(pick(&mut next));
            }
            if next() & 1 == 1 {
                r["rangeEnd"] = json!(pick(&mut next));
            }
            let excludes: Vec<&str> = (0..next() % 4).map(|_| pick(&mut next)).collect();
            r["exclude"] = json!(excludes);
            if next() & 1 == 1 {
                r["staticIP"] = json!(pick(&mut next));
            }
            r
        })
        .collect();
    let statics: Vec<&str> = (0..next() % 4).map(|_| pick(&mut next)).collect();
    json!({
        "network": {"namespace": "ns", "name": "net"},
        "ranges": ranges,
        "networkName": pick(&mut next),
        "interface": "net1",
        "pod": {"namespace": "ns", "name": "p", "uid": "u"},
        "containerID": "c",
        "node": "n",
        "staticIPs": statics,
    })
}

fuzz_target!(|data: &[u8]| {
    let parsed = match data.split_first() {
        Some((&first, rest)) if first & 1 == 1 => {
            serde_json::from_value::<IPClaimSpec>(built(rest))
        }
        _ => serde_json::from_slice::<IPClaimSpec>(data),
    };
    let Ok(spec) = parsed else {
        return;
    };
    let network_name = spec.network_name.as_deref().filter(|n| !n.is_empty());
    let mut ranges = Vec::new();
    for (i, r) in spec.ranges.iter().enumerate() {
        let path = format!("spec.ranges[{i}]");
        let parsed = r.parse(i);
        match parsed {
            Ok(range) => {
                assert!(range.usable_count() >= 1);
                let _ = ipam::pool_name(network_name, range.cidr());
                let mut pool = Pool::new(range.clone());
                let owner = Allocation::new(
                    spec.container_id.clone(),
                    format!("{}/{}", spec.pod.namespace, spec.pod.name),
                    spec.interface.clone(),
                );
                let got = pool.allocate(owner).expect("a valid range has room");
                assert!(range.is_usable(got.offset));
                ranges.push(range);
            }
            Err(e) => assert!(e.field().starts_with(&path), "{e} names {path}"),
        }
    }
    if ranges.len() == spec.ranges.len() {
        let per_range: Vec<Option<&str>> =
            spec.ranges.iter().map(|r| r.static_ip.as_deref()).collect();
        let refs: Vec<&IpRange> = ranges.iter().collect();
        match claim_requests(&refs, &per_range, &spec.static_ips) {
            Ok(plan) => {
                assert_eq!(plan.len(), ranges.len());
                for (range, planned) in ranges.iter().zip(plan) {
                    if let RangeRequest::Static(r) = planned {
                        assert!(
                            range.contains(r.ip),
                            "{} is matched to {}",
                            r.ip,
                            range.cidr()
                        );
                    }
                }
            }
            Err(e) => assert!(e.to_string().starts_with("spec."), "{e} names a spec field"),
        }
    }
});
