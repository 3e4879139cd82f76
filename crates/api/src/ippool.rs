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
    printcolumn = r#"{"name":"Shard","type":"string","jsonPath":".status.shard"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".status.addresses"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"Held","type":"integer","jsonPath":".status.held"}"#,
    printcolumn = r#"{"name":"Free","type":"string","jsonPath":".status.free"}"#,
    printcolumn = r#"{"name":"Range Allocated","type":"integer","priority":1,"jsonPath":".status.rangeAllocated"}"#,
    printcolumn = r#"{"name":"Range Free","type":"string","priority":1,"jsonPath":".status.rangeFree"}"#,
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

/// Written by the controller on every object of a range (whereabouts never
/// reads it). A large range is stored in shards of 128 offsets, each its
/// own IPPool object (`<range name>-s<k>`); each says which shard it is and
/// what it holds, and the range's object (shard 0) also gives the totals.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// Which shard of the range this object is (decimal): 0 for the object
    /// named after the range, `k` for `<range name>-s<k>`.
    #[serde(default)]
    pub shard: String,
    /// The addresses this shard covers, `first-last`: its lowest and
    /// highest the range hands out (empty when it hands out none of them).
    #[serde(default)]
    pub addresses: String,
    /// Addresses of this shard the range can hand out (exclusions applied;
    /// decimal: an IPv6 range can exceed any integer type Kubernetes
    /// schemas know).
    #[serde(default)]
    pub size: String,
    /// Addresses of this shard allocated to a pod now.
    #[serde(default)]
    pub allocated: u64,
    /// Addresses of this shard resting: kept for a pod that went
    /// (`hold_released`, so a StatefulSet pod comes back to its address) or
    /// cooling after a release (`release_cooldown`); handed to others only
    /// when nothing else is free.
    #[serde(default)]
    pub held: u64,
    /// `size - allocated - held`, decimal.
    #[serde(default)]
    pub free: String,
    /// Shard 0 only: what the whole range hands out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range_size: String,
    /// Shard 0 only: addresses allocated across every shard of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_allocated: Option<u64>,
    /// Shard 0 only: addresses held or cooling across every shard of the
    /// range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_held: Option<u64>,
    /// Shard 0 only: `rangeSize - rangeAllocated - rangeHeld`, decimal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range_free: String,
    /// Shard 0 only: `Exhausted` and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
