//! Any bytes as a plugin's stdin, a NAD's `spec.config`, a flat file, a
//! range or `CNI_ARGS`: parsing must refuse or accept, never panic, and
//! whatever it accepts must be allocatable.

#![no_main]

use std::path::Path;

use hereabouts::ipam::{
    CniArgs, IpRange, IpamConfig, NetConf, Pool, find_ipam_sections, match_requests,
};
use libfuzzer_sys::fuzz_target;

fn check(config: &IpamConfig) {
    for r in &config.ranges {
        assert!(r.range.usable_count() >= 1);
        assert!(!r.pool_name.is_empty());
        let mut pool = Pool::new(r.range.clone());
        let a = pool
            .allocate(hereabouts::ipam::Allocation::new("c", "ns/p", "net1"))
            .expect("a valid range has room");
        assert!(r.range.is_usable(a.offset));
        let _ = config.reservation_name(a.ip);
    }
}

fn netconf(nc: &NetConf, text: &str) {
    if let Ok(config) = nc.ipam_config() {
        check(&config);
    }
    // The same document as a flat file under itself.
    if let Ok(flat) = serde_json::from_str::<serde_json::Value>(text)
        && let Ok(config) = nc.ipam_config_merged(Some((Path::new("/fuzz"), &flat)))
    {
        check(&config);
    }
    let args = CniArgs::parse(text).ok();
    if let (Ok(requested), Ok(config)) = (nc.requested_ips(args.as_ref()), nc.ipam_config()) {
        let _ = match_requests(config.ranges.iter().map(|r| &r.range), &requested);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(nc) = NetConf::parse(data) {
        netconf(&nc, std::str::from_utf8(data).unwrap_or(""));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(found) = find_ipam_sections(text) {
        for nc in &found {
            netconf(nc, text);
        }
    }
    if let Ok(range) = text.parse::<IpRange>() {
        assert!(range.usable_count() >= 1);
        let _ = Pool::new(range).peek_lowest_free().expect("room");
    }
    if let Ok(args) = CniArgs::parse(text) {
        let none: &[&str] = &[];
        let _ = hereabouts::ipam::requested_ips(none, none, Some(&args));
    }
});
