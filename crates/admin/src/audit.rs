//! `check`: the consistency audit. It reports, without changing anything:
//!
//! - allocations whose pod (or IPAMClaim) does not exist (what the garbage
//!   collector returns after its grace period; a finding that persists
//!   means the collector is not running);
//! - reservations that no allocation backs;
//! - claims answered with an address their pool does not hold for them
//!   (invariant 2: a claim that got an address always has it in the pool);
//! - the same address held twice in one network (invariant 1);
//! - allocation keys that are no offset in the range, and objects that do
//!   not parse.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use hereabouts_core;

use super::inventory::Inventory;
use super::query::address_ip;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "finding", rename_all_fields = "camelCase")]
pub enum Finding {
    AllocationWithoutPod {
        pool: String,
        object: String,
        ip: IpAddr,
        pod: String,
        interface: String,
        container_id: String,
    },
    ReservationWithoutAllocation {
        reservation: String,
        pod: String,
    },
    ClaimWithoutAllocation {
        claim: String,
        address: String,
        pool: String,
        reason: String,
    },
    DuplicateAddress {
        ip: IpAddr,
        network_name: Option<String>,
        /// `pool (object): pod interface`, one per entry.
        holders: Vec<String>,
    },
    MalformedAllocation {
        object: String,
        key: String,
    },
    MalformedObject {
        kind: String,
        name: String,
        error: String,
    },
}

impl Finding {
    /// `(finding, object, detail)` for a table row.
    pub fn describe(&self) -> (&'static str, String, String) {
        match self {
            Finding::AllocationWithoutPod {
                pool,
                object,
                ip,
                pod,
                interface,
                container_id,
            } => (
                "AllocationWithoutPod",
                format!("ippool/{object}"),
                format!(
                    "{ip} in {pool} is held by {pod} {interface} (container {}), and that pod does not exist",
                    short(container_id)
                ),
            ),
            Finding::ReservationWithoutAllocation { reservation, pod } => (
                "ReservationWithoutAllocation",
                format!("overlappingrangeipreservation/{reservation}"),
                format!("reserved for {pod}, but no IPPool allocation backs it"),
            ),
            Finding::ClaimWithoutAllocation {
                claim,
                address,
                pool,
                reason,
            } => (
                "ClaimWithoutAllocation",
                format!("ipclaim/{claim}"),
                format!("answered with {address} from {pool}, but {reason}"),
            ),
            Finding::DuplicateAddress {
                ip,
                network_name,
                holders,
            } => (
                "DuplicateAddress",
                ip.to_string(),
                format!(
                    "held {} times in network {}: {}",
                    holders.len(),
                    network_name.as_deref().unwrap_or("(unnamed)"),
                    holders.join("; ")
                ),
            ),
            Finding::MalformedAllocation { object, key } => (
                "MalformedAllocation",
                format!("ippool/{object}"),
                format!("allocation key {key:?} is not an offset in the range"),
            ),
            Finding::MalformedObject { kind, name, error } => (
                "MalformedObject",
                format!("{}/{name}", kind.to_lowercase()),
                error.clone(),
            ),
        }
    }
}

/// A container ID as people read it.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Everything inconsistent in `inv`, in a stable order.
pub fn audit(inv: &Inventory) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut by_address: BTreeMap<(Option<String>, IpAddr), Vec<String>> = BTreeMap::new();
    let mut reserved: HashSet<String> = HashSet::new();
    for pool in &inv.pools {
        for (object, key) in &pool.bad_keys {
            findings.push(Finding::MalformedAllocation {
                object: object.clone(),
                key: key.clone(),
            });
        }
        for held in &pool.allocations {
            let a = &held.allocation;
            // A hold keeps an address for a pod name whose claim went, a
            // cooldown rests a released address: their pod is gone by
            // design until they end; an ended one the collector has not
            // removed yet is reported like any leak.
            let holding = hereabouts_core::ledger::resting_until(&a.id).is_some_and(|until| {
                hereabouts_core::ledger::rests(until, std::time::SystemTime::now())
            });
            if !holding && !inv.pod_exists(&a.podref) {
                findings.push(Finding::AllocationWithoutPod {
                    pool: pool.name.clone(),
                    object: held.object.clone(),
                    ip: held.ip,
                    pod: a.podref.clone(),
                    interface: a.ifname.clone(),
                    container_id: a.id.clone(),
                });
            }
            if let Ok(name) =
                hereabouts_core::reservation_name(pool.network_name.as_deref(), held.ip)
            {
                reserved.insert(name.into_string());
            }
            by_address
                .entry((pool.network_name.clone(), held.ip))
                .or_default()
                .push(format!(
                    "{} ({}): {} {}",
                    pool.name, held.object, a.podref, a.ifname
                ));
        }
    }
    for ((network_name, ip), holders) in by_address {
        if holders.len() > 1 {
            findings.push(Finding::DuplicateAddress {
                ip,
                network_name,
                holders,
            });
        }
    }
    for r in &inv.reservations {
        let name = r.metadata.name.clone().unwrap_or_default();
        if !reserved.contains(&name) {
            findings.push(Finding::ReservationWithoutAllocation {
                reservation: name,
                pod: r.spec.podref.clone(),
            });
        }
    }
    for claim in &inv.claims {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = format!(
            "{}/{}",
            claim.metadata.namespace.as_deref().unwrap_or_default(),
            claim.metadata.name.as_deref().unwrap_or_default()
        );
        let pod = format!("{}/{}", claim.spec.pod.namespace, claim.spec.pod.name);
        for address in claim.status.iter().flat_map(|s| s.ips.iter()) {
            let reason = match (address_ip(&address.address), inv.pool(&address.pool)) {
                (None, _) => Some("that is not an address".to_owned()),
                (Some(_), None) => Some(format!(
                    "there is no IPPool {} in namespace {}",
                    address.pool, inv.namespace
                )),
                (Some(ip), Some(pool)) => {
                    let holders: Vec<_> = pool.holding(ip).collect();
                    // An address may be held for an IPAMClaim of the
                    // claim's namespace that its pod references.
                    let claim_namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
                    // A hold or cooldown under the pod's name is no
                    // allocation: the claim's answer is stale.
                    if holders.iter().any(|h| {
                        hereabouts_core::ledger::resting_until(&h.allocation.id).is_none()
                            && ((h.allocation.podref == pod
                                && h.allocation.ifname == claim.spec.interface)
                                || hereabouts_api::claim_of_podref(&h.allocation.podref)
                                    .is_some_and(|(ns, _)| ns == claim_namespace))
                    }) {
                        None
                    } else if let Some(other) = holders.first() {
                        Some(format!(
                            "the pool holds it for {} {}",
                            other.allocation.podref, other.allocation.ifname
                        ))
                    } else {
                        Some("the pool does not hold it".to_owned())
                    }
                }
            };
            if let Some(reason) = reason {
                findings.push(Finding::ClaimWithoutAllocation {
                    claim: name.clone(),
                    address: address.address.clone(),
                    pool: address.pool.clone(),
                    reason,
                });
            }
        }
    }
    for m in &inv.malformed {
        findings.push(Finding::MalformedObject {
            kind: m.kind.to_owned(),
            name: m.name.clone(),
            error: m.error.clone(),
        });
    }
    findings.sort();
    findings
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::inventory::fixtures::*;
    use super::super::inventory::{Malformed, merge};
    use super::*;

    fn consistent() -> Inventory {
        Inventory {
            namespace: "pools".to_owned(),
            pools: merge(vec![pool(
                "blue-10.0.0.0-24",
                "10.0.0.0/24",
                None,
                &[("5", allocation("c5", "ns/web", "net1"))],
            )]),
            reservations: vec![reservation("blue-10.0.0.5", "ns/web", "net1")],
            claims: vec![claim(
                "web-net1",
                "ns/web",
                "net1",
                "10.0.0.5/24",
                "blue-10.0.0.0-24",
            )],
            pods: HashSet::from(["ns/web".to_owned()]),
            malformed: Vec::new(),
        }
    }

    #[test]
    fn a_consistent_inventory_has_no_findings() {
        assert_eq!(audit(&consistent()), []);
    }

    #[test]
    fn a_hold_or_cooldown_that_lasts_is_no_finding_and_one_that_ended_is() {
        let now = std::time::SystemTime::now();
        let ten_minutes = std::time::Duration::from_secs(600);
        let markers = [
            hereabouts_core::ledger::hold_marker,
            hereabouts_core::ledger::cooling_marker,
        ];
        for (_, expected, marker) in [(now + ten_minutes, 0), (now - ten_minutes, 1)]
            .into_iter()
            .flat_map(|(u, e)| markers.map(|m| (u, e, m(u))))
        {
            let mut inv = consistent();
            inv.pools = merge(vec![pool(
                "blue-10.0.0.0-24",
                "10.0.0.0/24",
                None,
                &[
                    ("5", allocation("c5", "ns/web", "net1")),
                    ("7", allocation(&marker, "ns/web-0", "net1")),
                ],
            )]);
            let findings = audit(&inv);
            assert_eq!(findings.len(), expected, "{marker}: {findings:?}");
        }
    }

    #[test]
    fn a_claim_answered_with_an_address_that_now_cools_is_reported() {
        let until = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
        let mut inv = consistent();
        let marker = hereabouts_core::ledger::cooling_marker(until);
        inv.pools = merge(vec![pool(
            "blue-10.0.0.0-24",
            "10.0.0.0/24",
            None,
            &[("5", allocation(&marker, "ns/web", "net1"))],
        )]);
        let findings = audit(&inv);
        let kinds: Vec<&str> = findings.iter().map(|f| f.describe().0).collect();
        assert!(kinds.contains(&"ClaimWithoutAllocation"), "{findings:?}");
        assert!(!kinds.contains(&"AllocationWithoutPod"), "{findings:?}");
    }

    #[test]
    fn an_ipamclaims_address_is_held_while_the_claim_exists() {
        let mut inv = consistent();
        let owner = hereabouts_api::owner_podref("ns", "vm1.tenant");
        inv.pools = merge(vec![pool(
            "blue-10.0.0.0-24",
            "10.0.0.0/24",
            None,
            &[
                ("5", allocation("c5", "ns/web", "net1")),
                ("7", allocation("ipamclaim-u", &owner, "")),
            ],
        )]);
        inv.reservations
            .push(reservation("blue-10.0.0.7", &owner, ""));
        // Two pods of a live migration, both answered with the claim's.
        for pod in ["ns/virt-launcher-a", "ns/virt-launcher-b"] {
            inv.pods.insert(pod.to_owned());
            inv.claims.push(claim(
                &format!("{pod}-if"),
                pod,
                "pod16367aacb67",
                "10.0.0.7/24",
                "blue-10.0.0.0-24",
            ));
        }
        let without_claim = audit(&inv);
        assert!(
            matches!(
                without_claim.as_slice(),
                [Finding::AllocationWithoutPod { pod, .. }] if *pod == owner
            ),
            "{without_claim:?}"
        );
        inv.pods.insert(owner.clone());
        assert_eq!(audit(&inv), []);
    }

    #[test]
    fn finds_each_kind_of_inconsistency() {
        let mut inv = consistent();
        inv.pools = merge(vec![
            pool(
                "blue-10.0.0.0-24",
                "10.0.0.0/24",
                None,
                &[
                    ("5", allocation("c5", "ns/web", "net1")),
                    ("6", allocation("c6", "ns/gone", "net1")),
                    ("999", allocation("c9", "ns/web", "net2")),
                ],
            ),
            // Overlaps in the same network and holds .5 again.
            pool(
                "blue-10.0.0.0-25",
                "10.0.0.0/25",
                None,
                &[("5", allocation("c7", "ns/web", "net3"))],
            ),
        ]);
        inv.pods.insert("ns/other".to_owned());
        inv.reservations
            .push(reservation("blue-10.0.0.9", "ns/old", "net1"));
        inv.claims.push(claim(
            "other-net1",
            "ns/other",
            "net1",
            "10.0.0.6/24",
            "blue-10.0.0.0-24",
        ));
        inv.claims.push(claim(
            "lost-net1",
            "ns/other",
            "net2",
            "10.0.0.44/24",
            "blue-10.0.0.0-24",
        ));
        inv.claims.push(claim(
            "nopool-net1",
            "ns/other",
            "net3",
            "10.7.0.1/24",
            "10.7.0.0-24",
        ));
        inv.malformed.push(Malformed {
            kind: "IPPool",
            name: "pools/bad".to_owned(),
            error: "missing field `range`".to_owned(),
        });
        let findings = audit(&inv);
        let kinds: Vec<&str> = findings.iter().map(|f| f.describe().0).collect();
        assert_eq!(
            kinds,
            [
                "AllocationWithoutPod",
                "ReservationWithoutAllocation",
                "ClaimWithoutAllocation",
                "ClaimWithoutAllocation",
                "ClaimWithoutAllocation",
                "DuplicateAddress",
                "MalformedAllocation",
                "MalformedObject",
            ],
            "{findings:#?}"
        );
        let details: Vec<String> = findings.iter().map(|f| f.describe().2).collect();
        assert!(details[0].contains("10.0.0.6") && details[0].contains("ns/gone"));
        assert!(details[2].contains("does not hold it"), "{details:?}");
        assert!(details[3].contains("no IPPool 10.7.0.0-24"), "{details:?}");
        assert!(
            details[4].contains("holds it for ns/gone net1"),
            "{details:?}"
        );
        assert!(
            details[5].contains("held 2 times in network blue"),
            "{details:?}"
        );
        let json = serde_json::to_value(&findings[0]).expect("json");
        assert_eq!(json["finding"], "AllocationWithoutPod");
        assert_eq!(json["containerId"], "c6");
    }

    #[test]
    fn deleted_claims_are_not_judged() {
        let mut inv = consistent();
        let mut gone = claim("x", "ns/web", "net9", "10.0.0.99/24", "blue-10.0.0.0-24");
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        inv.claims.push(gone);
        assert_eq!(audit(&inv), []);
    }
}
