//! Any bytes as a plugin's stdin, a NAD's `spec.config`, a flat file, a
//! range or `CNI_ARGS`: parsing must refuse or accept, never panic, and
//! whatever it accepts must be allocatable.
//!
//! Inputs starting with an odd byte are read as choices that build a
//! network configuration from whereabouts' keys and interesting values, so
//! that a short run without a seed corpus still reaches deep into the
//! validation; the rest are used as raw text.

#![no_main]

use std::path::Path;

use hereabouts_core::{
    CniArgs, IpRange, IpamConfig, NetConf, Pool, find_ipam_sections, match_requests,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "type", "range", "range_start", "range_end", "exclude", "ipRanges", "gateway", "routes",
    "dns", "addresses", "network_name", "enable_overlapping_ranges", "kubernetes", "kubeconfig",
    "log_file", "log_level", "configuration_path", "leader_lease_duration", "node_slice_size",
    "reconciler_cron_expression", "address", "dst", "gw", "nameservers", "ips", "cni",
    "request_timeout",
];

const STRINGS: &[&str] = &[
    "whereabouts", "hereabouts", "static", "", "10.0.0.0/24", "10.0.0.0/31", "10.0.0.1/32",
    "192.168.1.5-192.168.1.25/24", "192.168.1.5-192.168.2.25/28", "00192.00168.1.0/024",
    "10.0.0.5", "10.0.0.255", "10.0.1.0", "10.0.0.0/25", "10.0.0.128/25", "2001::1/116",
    "2001::", "2001::2", "caa5::0/112", "caa5::0/113", "::/0", "::/127", "::1/128", "fd00::/64",
    "fd00::8000:0:0:0", "::ffff:10.0.0.0/104", "2001:db8::/30", "2001:db8::/32", "x", "1.2.3",
    "blue", "Blue", "a_b", "-", "/", "10.0.0.0/33", "debug", "/28", "10.0.0.5/24",
    "30s", "1000000000y", "18446744073709551615s",
];

struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[usize::from(self.next()) % from.len()]
    }

    fn value(&mut self, depth: u8) -> Value {
        match self.next() % 10 {
            0..=3 => Value::String(self.pick(STRINGS).to_owned()),
            4 => json!(i64::from(self.next()) - 10),
            5 => json!(self.next() & 1 == 1),
            6 => Value::Null,
            7 | 8 if depth < 3 => {
                let n = self.next() % 4;
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            _ if depth < 3 => Value::Object(self.object(depth + 1)),
            _ => json!([1.5, 1e300, 1e19, -0.0][usize::from(self.next() % 4)]),
        }
    }

    fn object(&mut self, depth: u8) -> Map<String, Value> {
        let n = self.next() % 8;
        (0..n).map(|_| (self.pick(KEYS).to_owned(), self.value(depth))).collect()
    }

    fn netconf(&mut self) -> Value {
        let mut ipam = self.object(1);
        ipam.insert("type".to_owned(), json!(self.pick(&["whereabouts", "hereabouts", "static"])));
        if self.next() & 1 == 1 {
            ipam.insert("range".to_owned(), json!(self.pick(STRINGS)));
        }
        let mut conf = json!({"cniVersion": "1.0.0", "name": "fuzz", "type": "macvlan", "ipam": ipam});
        if self.next() & 1 == 1 {
            conf["runtimeConfig"] = json!({"ips": self.value(2)});
        }
        if self.next() & 3 == 0 {
            conf = json!({"cniVersion": "0.3.1", "plugins": [conf, {"type": "tuning"}]});
        }
        conf
    }
}

fn check(config: &IpamConfig) {
    if let Some(t) = config.request_timeout {
        let bounds = hereabouts_core::duration::REQUEST_TIMEOUT;
        assert!(bounds.min <= t && t <= bounds.max, "{t:?}");
    }
    for r in &config.ranges {
        assert!(r.range.usable_count() >= 1);
        assert!(!r.pool_name.is_empty());
        let mut pool = Pool::new(r.range.clone());
        let a = pool
            .allocate(hereabouts_core::Allocation::new("c", "ns/p", "net1"))
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
    if let Some((&first, rest)) = data.split_first()
        && first & 1 == 1
    {
        let mut choices = Choices(rest);
        let conf = choices.netconf().to_string();
        let flat = choices.object(1);
        if let Ok(found) = find_ipam_sections(&conf) {
            for nc in &found {
                netconf(nc, &conf);
                if let Ok(config) = nc.ipam_config_merged(Some((Path::new("/f"), &Value::Object(flat.clone())))) {
                    check(&config);
                }
            }
        }
        if let Ok(nc) = NetConf::parse(conf.as_bytes()) {
            netconf(&nc, &conf);
        }
        return;
    }
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
        let _ = hereabouts_core::requested_ips(none, none, Some(&args));
    }
});
