//! Any bytes as an IPClaim's `spec` (the controller reads claims that any
//! holder of a node credential may write): deserializing as the CRD type,
//! then parsing every range, static address and pool name the way the
//! controller does, must refuse or accept, never panic; whatever it
//! accepts must be allocatable, and a refusal must name a `spec.` field.

#![no_main]

use hereabouts::crd::IPClaimSpec;
use hereabouts::ipam::{
    self, Allocation, Cidr, IpRange, Pool, RangeFields, RequestedIp, match_requests, parse_ip,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<IPClaimSpec>(data) else {
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
