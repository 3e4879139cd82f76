//! `pools` (usage per range) and `who` (who holds an address).

use std::net::IpAddr;

use serde::Serialize;

use hereabouts_core::parse_ip;

use super::inventory::{Inventory, Pool};

/// One range's usage. Sizes are decimal strings: an IPv6 range can exceed
/// what JSON numbers carry exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: String,
    pub range: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_name: Option<String>,
    pub shards: usize,
    /// `None` when the range cannot be read.
    pub size: Option<String>,
    pub allocated: usize,
    pub free: Option<String>,
    pub exhausted: bool,
}

pub fn usage(pools: &[Pool]) -> Vec<PoolUsage> {
    pools
        .iter()
        .map(|p| {
            let allocated = p.allocations.len();
            let size = p.size();
            let free = size.map(|s| s.saturating_sub(allocated as u128));
            PoolUsage {
                name: p.name.clone(),
                range: p.range.clone(),
                network_name: p.network_name.clone(),
                shards: p.objects.len(),
                size: size.map(|s| s.to_string()),
                allocated,
                free: free.map(|f| f.to_string()),
                exhausted: free == Some(0) || p.exhausted_condition(),
            }
        })
        .collect()
}

/// Something that holds (or claims to hold) an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub ip: String,
    /// The range whose IPPool holds it, or the pool a claim names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Whether an IPPool's `spec.allocations` holds it for this pod (an
    /// allocation, a hold or a cooldown: see `state`).
    pub allocated: bool,
    /// What the pool entry is: `allocated` (a live attachment's, or an
    /// IPAMClaim's), `held` (kept for a pod of this name coming back),
    /// `cooling` (released, resting before another pod gets it); `None`
    /// for claims and reservations no pool entry backs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// When a hold or cooldown ends (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// `namespace/name` of the IPAMClaim that owns the address (KubeVirt's
    /// persistent IPs): the address is the claim's, whichever pod uses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipamclaim: Option<String>,
    /// `namespace/name`
    pub pod: String,
    pub interface: String,
    pub container_id: String,
    pub pod_exists: bool,
    /// `namespace/name` of the IPClaim answered with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The OverlappingRangeIPReservation held for this pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
}

/// The claims answered with `ip`: `(namespace/name, pool, claim)`.
fn claims_of(inv: &Inventory, ip: IpAddr) -> Vec<(String, String, &hereabouts_api::IPClaim)> {
    inv.claims
        .iter()
        .flat_map(|claim| {
            claim
                .status
                .iter()
                .flat_map(|s| s.ips.iter())
                .filter(move |a| address_ip(&a.address) == Some(ip))
                .map(move |a| {
                    (
                        format!(
                            "{}/{}",
                            claim.metadata.namespace.as_deref().unwrap_or_default(),
                            claim.metadata.name.as_deref().unwrap_or_default()
                        ),
                        a.pool.clone(),
                        claim,
                    )
                })
        })
        .collect()
}

/// `until` as RFC 3339 in UTC, to the second.
fn rfc3339(until: std::time::SystemTime) -> String {
    let secs = until
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map_or_else(|_| format!("@{secs}"), |t| t.to_string())
}

/// The address of `10.0.0.5/24` (or a bare address).
pub fn address_ip(address: &str) -> Option<IpAddr> {
    parse_ip(address.split_once('/').map_or(address, |(ip, _)| ip))
}

/// Everything that holds `ip`: allocations (with the claim and reservation
/// that go with them), then claims and reservations no allocation backs.
pub fn who(inv: &Inventory, ip: IpAddr) -> Vec<Holder> {
    let claims = claims_of(inv, ip);
    let mut used_claims = vec![false; claims.len()];
    let mut used_reservations = vec![false; inv.reservations.len()];
    let mut holders = Vec::new();
    for pool in &inv.pools {
        for held in pool.holding(ip) {
            let a = &held.allocation;
            let claim = claims.iter().position(|(_, name, c)| {
                *name == pool.name
                    && format!("{}/{}", c.spec.pod.namespace, c.spec.pod.name) == a.podref
                    && c.spec.interface == a.ifname
            });
            if let Some(i) = claim {
                used_claims[i] = true;
            }
            let reservation = hereabouts_core::reservation_name(pool.network_name.as_deref(), ip)
                .ok()
                .and_then(|name| {
                    inv.reservations.iter().position(|r| {
                        r.metadata.name.as_deref() == Some(name.as_str())
                            && r.spec.podref == a.podref
                    })
                });
            if let Some(i) = reservation {
                used_reservations[i] = true;
            }
            let (state, until) = match (
                hereabouts_core::ledger::held_until(&a.id),
                hereabouts_core::ledger::cooling_until(&a.id),
            ) {
                (Some(until), _) => ("held", Some(until)),
                (None, Some(until)) => ("cooling", Some(until)),
                (None, None) => ("allocated", None),
            };
            holders.push(Holder {
                ip: ip.to_string(),
                pool: Some(pool.name.clone()),
                allocated: true,
                state: Some(state),
                until: until.map(rfc3339),
                ipamclaim: hereabouts_api::claim_of_podref(&a.podref)
                    .map(|(ns, name)| format!("{ns}/{name}")),
                pod: a.podref.clone(),
                interface: a.ifname.clone(),
                container_id: a.id.clone(),
                pod_exists: inv.pod_exists(&a.podref),
                claim: claim.map(|i| claims[i].0.clone()),
                node: claim.map(|i| claims[i].2.spec.node.clone()),
                reservation: reservation.and_then(|i| inv.reservations[i].metadata.name.clone()),
            });
        }
    }
    for (i, (name, pool, claim)) in claims.iter().enumerate() {
        if used_claims[i] {
            continue;
        }
        let pod = format!("{}/{}", claim.spec.pod.namespace, claim.spec.pod.name);
        holders.push(Holder {
            ip: ip.to_string(),
            pool: Some(pool.clone()),
            allocated: false,
            state: None,
            until: None,
            ipamclaim: None,
            pod_exists: inv.pod_exists(&pod),
            pod,
            interface: claim.spec.interface.clone(),
            container_id: claim.spec.container_id.clone(),
            claim: Some(name.clone()),
            node: Some(claim.spec.node.clone()),
            reservation: None,
        });
    }
    // Reservations are named after the address, with the network name in
    // front when there is one: the names `ip` has in the known networks.
    let names: std::collections::HashSet<String> = std::iter::once(None)
        .chain(inv.pools.iter().map(|p| p.network_name.as_deref()))
        .filter_map(|network| hereabouts_core::reservation_name(network, ip).ok())
        .map(hereabouts_core::ReservationName::into_string)
        .collect();
    for (i, r) in inv.reservations.iter().enumerate() {
        let name = r.metadata.name.clone().unwrap_or_default();
        let matches = names.contains(&name);
        if used_reservations[i] || !matches {
            continue;
        }
        holders.push(Holder {
            ip: ip.to_string(),
            pool: None,
            allocated: false,
            state: None,
            until: None,
            ipamclaim: hereabouts_api::claim_of_podref(&r.spec.podref)
                .map(|(ns, name)| format!("{ns}/{name}")),
            pod_exists: inv.pod_exists(&r.spec.podref),
            pod: r.spec.podref.clone(),
            interface: r.spec.ifname.clone(),
            container_id: r.spec.containerid.clone(),
            claim: None,
            node: None,
            reservation: Some(name),
        });
    }
    holders
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::inventory::fixtures::*;
    use super::super::inventory::merge;
    use super::*;
    use hereabouts_api::IPPoolStatus;

    fn inventory() -> Inventory {
        let mut full = pool(
            "10.9.0.0-30",
            "10.9.0.0/30",
            None,
            &[
                ("1", allocation("c1", "ns/a", "net1")),
                ("2", allocation("c2", "ns/b", "net1")),
            ],
        );
        full.status = Some(IPPoolStatus {
            range_size: "2".to_owned(),
            ..Default::default()
        });
        Inventory {
            namespace: "pools".to_owned(),
            pools: merge(vec![
                full,
                pool(
                    "blue-10.0.0.0-24",
                    "10.0.0.0/24",
                    None,
                    &[("5", allocation("c5", "ns/web", "net1"))],
                ),
            ]),
            reservations: vec![
                reservation("blue-10.0.0.5", "ns/web", "net1"),
                reservation("10.0.0.7", "ns/old", "net2"),
            ],
            claims: vec![
                claim(
                    "web-net1",
                    "ns/web",
                    "net1",
                    "10.0.0.5/24",
                    "blue-10.0.0.0-24",
                ),
                claim(
                    "ghost-net1",
                    "ns/ghost",
                    "net1",
                    "10.0.0.7/24",
                    "blue-10.0.0.0-24",
                ),
            ],
            pods: HashSet::from(["ns/web".to_owned()]),
            malformed: Vec::new(),
        }
    }

    #[test]
    fn usage_counts_and_flags_full_pools() {
        let inv = inventory();
        let usage = usage(&inv.pools);
        assert_eq!(usage[0].name, "10.9.0.0-30");
        assert_eq!(usage[0].size.as_deref(), Some("2"));
        assert_eq!(usage[0].allocated, 2);
        assert_eq!(usage[0].free.as_deref(), Some("0"));
        assert!(usage[0].exhausted);
        assert_eq!(usage[1].network_name.as_deref(), Some("blue"));
        assert_eq!(usage[1].free.as_deref(), Some("253"));
        assert!(!usage[1].exhausted);
    }

    #[test]
    fn who_joins_allocation_claim_and_reservation() {
        let inv = inventory();
        let holders = who(&inv, "10.0.0.5".parse().expect("ip"));
        assert_eq!(holders.len(), 1, "{holders:?}");
        let h = &holders[0];
        assert_eq!(h.pool.as_deref(), Some("blue-10.0.0.0-24"));
        assert!(h.allocated && h.pod_exists);
        assert_eq!(h.pod, "ns/web");
        assert_eq!(h.claim.as_deref(), Some("ns/web-net1"));
        assert_eq!(h.node.as_deref(), Some("node-a"));
        assert_eq!(h.reservation.as_deref(), Some("blue-10.0.0.5"));
    }

    #[test]
    fn who_shows_claims_and_reservations_without_allocation() {
        let inv = inventory();
        let holders = who(&inv, "10.0.0.7".parse().expect("ip"));
        assert_eq!(holders.len(), 2, "{holders:?}");
        assert_eq!(holders[0].claim.as_deref(), Some("ns/ghost-net1"));
        assert!(!holders[0].allocated && !holders[0].pod_exists);
        assert_eq!(holders[1].reservation.as_deref(), Some("10.0.0.7"));
        assert!(who(&inv, "10.0.0.8".parse().expect("ip")).is_empty());
    }

    #[test]
    fn who_tells_holds_cooldowns_and_ipamclaims_from_allocations() {
        use hereabouts_core::ledger::{cooling_marker, hold_marker};
        let until = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let owner = hereabouts_api::owner_podref("vms", "vm1.net1");
        let mut inv = inventory();
        inv.pools = merge(vec![pool(
            "10.1.0.0-24",
            "10.1.0.0/24",
            None,
            &[
                ("1", allocation(&hold_marker(until), "ns/web-0", "net1")),
                ("2", allocation(&cooling_marker(until), "ns/gone", "net1")),
                ("3", allocation("ipamclaim-uid", &owner, "net1")),
                ("4", allocation("c4", "ns/web", "net1")),
            ],
        )]);
        let one = |ip: &str| {
            let mut h = who(&inv, ip.parse().expect("ip"));
            assert_eq!(h.len(), 1, "{h:?}");
            h.remove(0)
        };
        let held = one("10.1.0.1");
        assert_eq!((held.state, held.pod.as_str()), (Some("held"), "ns/web-0"));
        assert_eq!(held.until.as_deref(), Some("2027-01-15T08:00:00Z"));
        let cooling = one("10.1.0.2");
        assert_eq!(cooling.state, Some("cooling"));
        assert_eq!(cooling.until.as_deref(), Some("2027-01-15T08:00:00Z"));
        let vm = one("10.1.0.3");
        assert_eq!(vm.state, Some("allocated"));
        assert_eq!(vm.ipamclaim.as_deref(), Some("vms/vm1.net1"));
        assert_eq!(vm.until, None);
        let web = one("10.1.0.4");
        assert_eq!((web.state, web.ipamclaim), (Some("allocated"), None));
    }
}
