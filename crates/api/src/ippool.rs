use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The addresses of one range (or one shard of a large range) and who holds
/// them, exactly as whereabouts stores them: `allocations` is keyed by the
/// decimal offset of the address from the range's network address.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "whereabouts.cni.cncf.io",
    version = "v1alpha1",
    kind = "IPPool",
    namespaced,
    status = "IPPoolStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Range","type":"string","jsonPath":".spec.range"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"Free","type":"string","jsonPath":".status.free"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct IPPoolSpec {
    /// The range in CIDR notation, e.g. `10.0.0.0/24`.
    pub range: String,
    /// Offset from the network address (decimal) -> holder.
    #[serde(default)]
    pub allocations: BTreeMap<String, IPAllocation>,
}

/// Who holds an address: whereabouts' format, unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct IPAllocation {
    /// The container (sandbox) ID of the ADD that got the address.
    pub id: String,
    /// `namespace/name` of the pod.
    pub podref: String,
    /// The pod's interface, e.g. `net1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ifname: String,
}

/// Written by the controller; whereabouts never reads it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// Addresses the range can hand out (decimal: an IPv6 range can exceed
    /// any integer type Kubernetes schemas know).
    #[serde(default)]
    pub size: String,
    /// Addresses held now, across all shards of the range.
    #[serde(default)]
    pub allocated: u64,
    /// `size - allocated`, decimal.
    #[serde(default)]
    pub free: String,
    /// `Exhausted` and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
