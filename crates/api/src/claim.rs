use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pod's request for addresses on one interface of one network. The CNI
/// plugin creates it on ADD (named deterministically, owned by the pod) and
/// deletes it on DEL; the controller allocates and answers in `status`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hereabouts.dev",
    version = "v1alpha1",
    kind = "IPClaim",
    namespaced,
    status = "IPClaimStatus",
    shortname = "ipc",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.pod.name"}"#,
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.interface"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".status.addresses"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPClaimSpec {
    /// The NetworkAttachmentDefinition (or CNI network name) asked for.
    pub network: NetworkRef,
    /// The ranges to take one address from each, as the IPAM config says.
    pub ranges: Vec<ClaimRange>,
    /// whereabouts' `network_name`: pools and reservations are named with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_name: Option<String>,
    /// Keep the address unique across overlapping ranges of the network.
    #[serde(default = "enabled")]
    pub enable_overlapping_ranges: bool,
    /// The pod's interface, e.g. `net1`.
    pub interface: String,
    pub pod: PodRef,
    /// The sandbox ID of the ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The node the pod runs on.
    pub node: String,
    /// Exact addresses requested (runtimeConfig.ips, args.cni.ips, IP=),
    /// granted as asked or refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "staticIPs")]
    pub static_ips: Vec<String>,
}

fn enabled() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct NetworkRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One range of the IPAM config, with its own limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRange {
    /// CIDR (or `A-B/len`, as whereabouts accepts).
    pub range: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPClaimStatus {
    /// The granted addresses in CIDR form, one per range, in range order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<ClaimedAddress>,
    /// `Ready` True once addresses are committed; False with the reason
    /// (e.g. `Exhausted`, `StaticAddressTaken`, `InvalidRange`) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedAddress {
    /// `10.0.0.5/24`
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The IPPool (primary object) the address is committed in.
    pub pool: String,
}
