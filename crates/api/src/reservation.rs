use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One address reserved across all ranges that share a `network_name`, so
/// overlapping ranges never hand it out twice. Named after the address
/// (whereabouts' rule), which makes creating it the uniqueness check.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "whereabouts.cni.cncf.io",
    version = "v1alpha1",
    kind = "OverlappingRangeIPReservation",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.podref"}"#,
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.ifname"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct OverlappingRangeIPReservationSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub containerid: String,
    pub podref: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ifname: String,
}
