//! `IPAMClaim` (k8s.cni.cncf.io/v1alpha1), the k8snetworkplumbingwg
//! ipamclaims API that KubeVirt uses for addresses that outlive a pod, and
//! the pure rules around it: where a pod names its claim (the
//! `ipam-claim-reference` of a network-selection element), whether a NAD
//! opts in (`allowPersistentIPs`), and how a claim-owned address is
//! written in an IPPool.
//!
//! The schema keeps the upstream group, version and field names
//! (`spec.network`, `spec.interface`, `status.ips`, `status.ownerPod.name`,
//! `status.conditions`), so objects KubeVirt's ipam-extensions creates are
//! read as they are and a CRD installed by another project serves the same
//! objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An address reservation that belongs to something other than a pod (a
/// KubeVirt VM): the first pod that references it gets addresses, every
/// later pod referencing it gets the same ones, and only deleting the
/// claim frees them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1alpha1",
    kind = "IPAMClaim",
    namespaced,
    status = "IPAMClaimStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#,
    printcolumn = r#"{"name":"IPs","type":"string","jsonPath":".status.ips"}"#,
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".status.ownerPod.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct IPAMClaimSpec {
    /// The network name for which this persistent allocation was created
    /// (the CNI configuration's `name`).
    pub network: String,
    /// The pod interface name for which this allocation was created
    /// (KubeVirt may leave it empty).
    pub interface: String,
}

/// What the IPAM plugin recorded for the claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAMClaimStatus {
    /// The addresses (CIDR form, one per range) allocated for the claim.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The pod holding the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pod: Option<OwnerPod>,
    /// `IPAllocated`: True (`SuccessfulAllocation`) once the addresses are
    /// committed; False with the reason when they cannot be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OwnerPod {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The condition type hereabouts writes on an IPAMClaim.
pub const IP_ALLOCATED: &str = "IPAllocated";

/// Multus' network-selection annotation on a pod.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

/// The NAD configuration key by which a network opts in to IPAMClaims.
pub const ALLOW_PERSISTENT_IPS: &str = "allowPersistentIPs";

/// One network-selection element that names an IPAMClaim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimReference {
    /// The element's position in the annotation (0-based), for messages.
    pub index: usize,
    /// The NAD the element selects.
    pub nad_namespace: String,
    pub nad_name: String,
    /// The interface the element's attachment gets: its `interface`, else
    /// `net<index + 1>`, as Multus names it.
    pub interface: String,
    /// The IPAMClaim's name, in the pod's namespace.
    pub claim: String,
}

/// The elements of a pod's `k8s.v1.cni.cncf.io/networks` annotation that
/// carry an `ipam-claim-reference`. Only the JSON form can carry one; the
/// short form (`ns/name@if,...`) and anything Multus could not parse
/// either yields none (Multus refuses such a pod before any ADD).
pub fn claim_references(annotation: &str, pod_namespace: &str) -> Vec<ClaimReference> {
    let Ok(serde_json::Value::Array(elements)) =
        serde_json::from_str::<serde_json::Value>(annotation.trim())
    else {
        return Vec::new();
    };
    let text = |e: &serde_json::Value, key: &str| {
        e.get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    elements
        .iter()
        .enumerate()
        .filter_map(|(index, element)| {
            let claim = text(element, "ipam-claim-reference")?;
            let name = text(element, "name")?;
            // Multus also accepts `namespace/name` in `name`.
            let (nad_namespace, nad_name) = match (text(element, "namespace"), name.split_once('/'))
            {
                (Some(ns), _) => (ns, name),
                (None, Some((ns, n))) => (ns.to_owned(), n.to_owned()),
                (None, None) => (pod_namespace.to_owned(), name),
            };
            let interface = text(element, "interface")
                // Multus' delegate 0 is the cluster network: net1 first.
                .unwrap_or_else(|| format!("net{}", index + 1));
            Some(ClaimReference {
                index,
                nad_namespace,
                nad_name,
                interface,
                claim,
            })
        })
        .collect()
}

/// Whether a NAD's CNI configuration (a network configuration or a
/// conflist) says `"allowPersistentIPs": true` at its top level, where
/// KubeVirt's ipam-extensions looks.
pub fn allows_persistent_ips(config: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|c| c.get(ALLOW_PERSISTENT_IPS)?.as_bool())
        .unwrap_or(false)
}

/// The `podref` under which an IPPool holds an IPAMClaim's address:
/// `<namespace>/ipamclaim:<name>`. The `:` cannot occur in a pod name, so
/// no pod is ever mistaken for the claim (or the other way round), and
/// tools that print the podref show whose the address is.
pub fn owner_podref(namespace: &str, claim: &str) -> String {
    format!("{namespace}/{OWNER_PREFIX}{claim}")
}

const OWNER_PREFIX: &str = "ipamclaim:";

/// The (namespace, IPAMClaim name) of a podref written by
/// [`owner_podref`]; `None` for a pod's.
pub fn claim_of_podref(podref: &str) -> Option<(&str, &str)> {
    let (namespace, rest) = podref.split_once('/')?;
    let claim = rest.strip_prefix(OWNER_PREFIX)?;
    (!namespace.is_empty() && !claim.is_empty()).then_some((namespace, claim))
}

/// The container ID written with a claim-owned address: the claim's UID,
/// the same for every pod that references it, so a later pod's ADD finds
/// the allocation as it is and changes nothing.
pub fn owner_container_id(claim_uid: &str) -> String {
    format!("ipamclaim-{claim_uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_as_kubevirt_writes_them() {
        // ipam-extensions' webhook marshals NetworkSelectionElements: the
        // namespace and name of the NAD, KubeVirt's interface name, the
        // claim `<vm>.<network>`.
        let annotation = r#"[{"name":"tenant-a","namespace":"vms","interface":"pod16367aacb67","ipam-claim-reference":"vm1.tenant"},
            {"name":"plain","namespace":"vms"},
            {"name":"other/third","ipam-claim-reference":"vm1.third"}]"#;
        let refs = claim_references(annotation, "vms");
        assert_eq!(
            refs,
            vec![
                ClaimReference {
                    index: 0,
                    nad_namespace: "vms".into(),
                    nad_name: "tenant-a".into(),
                    interface: "pod16367aacb67".into(),
                    claim: "vm1.tenant".into(),
                },
                ClaimReference {
                    index: 2,
                    nad_namespace: "other".into(),
                    nad_name: "third".into(),
                    interface: "net3".into(),
                    claim: "vm1.third".into(),
                },
            ]
        );
    }

    #[test]
    fn the_short_form_and_garbage_name_no_claim() {
        for annotation in [
            "",
            "vms/tenant-a",
            "vms/tenant-a@net1,vms/b",
            "{",
            r#"{"name":"a","ipam-claim-reference":"c"}"#,
            r#"[1, "x", null, {"ipam-claim-reference": 7}]"#,
            r#"[{"name":"a","ipam-claim-reference":""}]"#,
            r#"[{"ipam-claim-reference":"c"}]"#,
        ] {
            assert!(
                claim_references(annotation, "ns").is_empty(),
                "{annotation:?}"
            );
        }
    }

    #[test]
    fn the_default_interface_counts_every_element() {
        let annotation = r#"[{"name":"a"},{"name":"b","interface":"x"},{"name":"c","ipam-claim-reference":"k"}]"#;
        assert_eq!(claim_references(annotation, "ns")[0].interface, "net3");
        assert_eq!(claim_references(annotation, "ns")[0].nad_namespace, "ns");
    }

    #[test]
    fn only_a_true_top_level_flag_opts_in() {
        assert!(allows_persistent_ips(
            r#"{"name":"n","type":"macvlan","allowPersistentIPs":true,"ipam":{}}"#
        ));
        assert!(allows_persistent_ips(
            r#"{"name":"n","allowPersistentIPs":true,"plugins":[{"type":"macvlan"}]}"#
        ));
        for config in [
            r#"{"name":"n","type":"macvlan"}"#,
            r#"{"name":"n","allowPersistentIPs":false}"#,
            r#"{"name":"n","allowPersistentIPs":"true"}"#,
            r#"{"name":"n","ipam":{"allowPersistentIPs":true}}"#,
            "not json",
        ] {
            assert!(!allows_persistent_ips(config), "{config}");
        }
    }

    #[test]
    fn owner_podrefs_round_trip_and_never_match_a_pod() {
        let podref = owner_podref("vms", "vm1.tenant");
        assert_eq!(podref, "vms/ipamclaim:vm1.tenant");
        assert_eq!(claim_of_podref(&podref), Some(("vms", "vm1.tenant")));
        for pod in [
            "vms/vm1",
            "vms/ipamclaim",
            "ipamclaim:x",
            "/ipamclaim:x",
            "vms/ipamclaim:",
        ] {
            assert_eq!(claim_of_podref(pod), None, "{pod}");
        }
    }

    #[test]
    fn status_serialises_with_the_upstream_names() {
        let status = IPAMClaimStatus {
            ips: vec!["198.51.100.1/24".into()],
            owner_pod: Some(OwnerPod {
                name: "virt-launcher-vm1-abcde".into(),
            }),
            conditions: Vec::new(),
        };
        assert_eq!(
            serde_json::to_value(&status).expect("json"),
            serde_json::json!({"ips": ["198.51.100.1/24"], "ownerPod": {"name": "virt-launcher-vm1-abcde"}})
        );
        let spec: IPAMClaimSpec =
            serde_json::from_str(r#"{"network":"tenant","interface":""}"#).expect("spec");
        assert_eq!(spec.network, "tenant");
    }
}
