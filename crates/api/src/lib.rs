//! The Kubernetes objects hereabouts reads and writes, as Rust types. These
//! types are the only schema source: `crdgen` renders `crds/*.yaml` from
//! them and a test fails when the files are stale.
//!
//! - [`IPPool`] and [`OverlappingRangeIPReservation`] keep whereabouts'
//!   group, version and fields, so existing objects are adopted as they are.
//! - [`IPClaim`] is hereabouts' own: one per (pod, interface, network),
//!   written by the CNI plugin, answered by the controller in its status.
//! - [`NetworkAttachmentDefinition`] belongs to Multus; it is only read.
//! - [`IPAMClaim`] is the k8snetworkplumbingwg ipamclaims API (KubeVirt's
//!   persistent addresses): read, and answered in its status.

mod claim;
mod ipamclaim;
mod ippool;
mod nad;
mod reservation;

pub use claim::{
    ClaimRange, ClaimedAddress, IPClaim, IPClaimSpec, IPClaimStatus, NetworkRef, PodRef, Refusal,
    Refused,
};
pub use ipamclaim::{
    ALLOW_PERSISTENT_IPS, ClaimReference, IP_ALLOCATED, IPAMClaim, IPAMClaimSpec, IPAMClaimStatus,
    NETWORKS_ANNOTATION, OwnerPod, allows_persistent_ips, claim_of_podref, claim_references,
    owner_container_id, owner_podref,
};
pub use ippool::{IPAllocation, IPPool, IPPoolSpec, IPPoolStatus};
pub use nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
pub use reservation::{OverlappingRangeIPReservation, OverlappingRangeIPReservationSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Label on every shard of a sharded range: which range (base pool) it
/// belongs to (as a [`label_value`]).
pub const POOL_LABEL: &str = "hereabouts.dev/pool";
/// On IPClaims: the node the claim was filed on (the node agent watches
/// its node's claims by it), and its network.
pub const NODE_LABEL: &str = "hereabouts.dev/node";
pub const NETWORK_LABEL: &str = "hereabouts.dev/network";
/// On IPClaims: when the ADD that files the claim gives up (RFC 3339, on
/// the API server's clock as the node agent learned it). A claim the API
/// server creates after that (a create held on its way, landing after the
/// ADD failed and its DEL found nothing) is deleted by the controller
/// unanswered: no one would ever be given, or release, its address.
pub const ANSWER_BY_ANNOTATION: &str = "hereabouts.dev/answer-by";
/// On IPClaims: written by a DEL that found the claim another sandbox's,
/// `<nanoseconds since the Unix epoch on the node's clock>/<the DEL's
/// container ID>`, so that a takeover by the DEL's own sandbox still on its
/// way (decided on the version the DEL read) fails its precondition, and
/// one its ADD would decide again after it sees the fence is not made:
/// neither may make the claim a torn-down sandbox's.
pub const FENCED_BY_DEL_ANNOTATION: &str = "hereabouts.dev/fenced-by-del";
/// The field selector of IPClaims by the name of the pod they act for (a
/// selectable field of the IPClaim CRD).
pub const POD_NAME_FIELD: &str = "spec.pod.name";
/// Label on every shard of a sharded range: its index.
pub const SHARD_LABEL: &str = "hereabouts.dev/shard";

/// The range (base pool) an IPPool object belongs to: shard `k > 0` is
/// named `<base>-s<k>` and labelled with its index; any other object is
/// its own base.
pub fn base_name(pool: &IPPool) -> String {
    use kube::ResourceExt;
    let name = pool.name_any();
    let labels = pool.labels();
    let index = labels
        .get(SHARD_LABEL)
        .filter(|_| labels.contains_key(POOL_LABEL));
    hereabouts_core::shard_base(&name, index.map(String::as_str)).to_owned()
}

/// Label on every object the controller creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "hereabouts");

/// FNV-1a: a hash that stays the same across builds and Rust versions, so
/// a repeated ADD after an upgrade finds the same claim.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The claim the plugin files for (pod, interface, network):
/// `<pod>-<ifname>-<hash>`, the same for every ADD of that attachment.
pub fn claim_name(pod: &str, ifname: &str, network: &str) -> String {
    let hash = stable_hash(&[pod, ifname, network]);
    format!("{}{:08x}", claim_name_stem(pod, ifname), hash & 0xffff_ffff)
}

/// What every [`claim_name`] of a pod's interface begins with, whatever
/// the network: the pod's name (cut to leave room for the rest of a
/// 253-character name), the interface, and the dashes around it.
pub fn claim_name_stem(pod: &str, ifname: &str) -> String {
    let ifname: String = ifname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let ifname = ifname.trim_matches('-');
    // The dashes around it and the eight hexadecimal digits of the hash.
    let room = 253usize.saturating_sub(ifname.len() + 10);
    let pod: String = pod.chars().take(room).collect();
    format!("{}-{ifname}-", pod.trim_end_matches(['-', '.']))
}

/// A label value for `value` (hashed when it would not be a valid one).
pub fn label_value(value: &str) -> String {
    let valid = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if valid {
        value.to_owned()
    } else {
        format!("h{:016x}", stable_hash(&[value]))
    }
}

/// The CRDs hereabouts installs, with the file name each is rendered to.
pub fn definitions() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("whereabouts.cni.cncf.io_ippools.yaml", IPPool::crd()),
        (
            "whereabouts.cni.cncf.io_overlappingrangeipreservations.yaml",
            OverlappingRangeIPReservation::crd(),
        ),
        ("hereabouts.dev_ipclaims.yaml", IPClaim::crd()),
        ("k8s.cni.cncf.io_ipamclaims.yaml", IPAMClaim::crd()),
    ]
}

/// A CRD as the YAML document `crds/` holds.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated by `cargo run --bin crdgen` from crates/api; do not edit.\n---\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_are_stable_valid_and_bounded() {
        let a = claim_name("web-0", "net1", "blue");
        assert_eq!(a, claim_name("web-0", "net1", "blue"));
        assert_ne!(a, claim_name("web-0", "net2", "blue"));
        assert_ne!(a, claim_name("web-0", "net1", "green"));
        assert!(a.starts_with("web-0-net1-"), "{a}");
        assert!(a.starts_with(&claim_name_stem("web-0", "net1")), "{a}");
        let long = claim_name(&"p".repeat(253), "Net_1", "blue");
        assert!(long.len() <= 253);
        assert!(long.starts_with(&claim_name_stem(&"p".repeat(253), "Net_1")));
        assert!(
            hereabouts_core::naming::check_object_name(&long).is_ok(),
            "{long}"
        );
        // Every network's claim of a long-named pod's interface begins
        // with the same stem; another interface's does not.
        let pod = format!("{}-x", "q".repeat(240));
        let stem = claim_name_stem(&pod, "net1");
        for network in ["blue", "green", &"n".repeat(300)] {
            let name = claim_name(&pod, "net1", network);
            assert!(
                name.starts_with(&stem) && name.len() == stem.len() + 8,
                "{name}"
            );
        }
        assert!(!claim_name(&pod, "net2", "blue").starts_with(&stem));
    }
}
