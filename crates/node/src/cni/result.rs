//! The CNI result of an IPAM plugin (`ips`, `routes`, `dns`), written in
//! the configuration's own cniVersion: 0.3.x and 0.4.0 carry a `version`
//! per address, 1.x does not.

use std::net::IpAddr;

use serde_json::{Value, json};

use hereabouts_core::{Cidr, IpamConfig};

use super::env::version_less;

/// One address of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultIp {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
}

impl ResultIp {
    /// Parses `a.b.c.d/len` as the controller publishes it.
    pub fn parse(address: &str, gateway: Option<&str>) -> Option<Self> {
        let (ip, cidr) = Cidr::parse_with_host(address).ok()?;
        Some(ResultIp {
            ip,
            prefix_len: cidr.prefix_len(),
            gateway: gateway.and_then(hereabouts_core::parse_ip),
        })
    }
}

/// The result document for `ips` under `config`.
pub fn render(cni_version: &str, ips: &[ResultIp], config: &IpamConfig) -> Value {
    let legacy = version_less(cni_version, "1.0.0");
    let mut all: Vec<ResultIp> = ips.to_vec();
    // `addresses` are returned as given, never reserved (whereabouts).
    all.extend(config.addresses.iter().map(|a| ResultIp {
        ip: a.address,
        prefix_len: a.prefix_len,
        gateway: a.gateway,
    }));
    let ips: Vec<Value> = all
        .iter()
        .map(|r| {
            let mut entry = json!({ "address": format!("{}/{}", r.ip, r.prefix_len) });
            if legacy {
                entry["version"] = json!(if r.ip.is_ipv4() { "4" } else { "6" });
            }
            if let Some(gw) = r.gateway {
                entry["gateway"] = json!(gw.to_string());
            }
            entry
        })
        .collect();
    let mut result = json!({ "cniVersion": cni_version, "ips": ips });
    if !config.routes.is_empty() {
        result["routes"] = serde_json::to_value(&config.routes).unwrap_or(Value::Null);
    }
    if !config.dns.is_empty() {
        result["dns"] = serde_json::to_value(&config.dns).unwrap_or(Value::Null);
    }
    result
}

/// The addresses (`ip/len`) of a previous result, for CHECK.
pub fn addresses_of(prev_result: &Value) -> Vec<String> {
    prev_result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str().map(str::to_owned))
        .collect()
}
