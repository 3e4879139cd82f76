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
use hereabouts_core::{
    self, Allocation, Cidr, IpRange, Pool, RangeFields, RequestedIp, match_requests, parse_ip,
};
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
        let exclude: Vec<&str> = r.exclude.iter().map(String::as_str).collect();
        let parsed = IpRange::parse(&RangeFields {
            path: &path,
            range: &r.range,
            range_start: r.range_start.as_deref(),
            range_end: r.range_end.as_deref(),
            exclude: &exclude,
        });
        match parsed {
            Ok((range, _warnings)) => {
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
    let mut requested = Vec::new();
    for (index, value) in spec.static_ips.iter().enumerate() {
        let ip = parse_ip(value).or_else(|| Cidr::parse_with_host(value).ok().map(|(ip, _)| ip));
        if let Some(ip) = ip {
            requested.push(RequestedIp {
                ip,
                prefix_len: None,
                source: ipam::IpSource::RuntimeConfig,
                index,
            });
        }
    }
    if let Ok(plan) = match_requests(ranges.iter(), &requested) {
        assert_eq!(plan.len(), ranges.len());
    }
});
