use hereabouts_core::{IpRange, RangeError, RangeFields};
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
    selectable = ".spec.pod.name",
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
    /// Exact addresses requested, as plugins before the per-range contract
    /// wrote them (`spec.ranges[].staticIP` replaces it): still honoured,
    /// matched to ranges by the plugin's own rule, so a claim filed by an
    /// older plugin during an upgrade keeps its static address. A claim may
    /// carry one form or the other, not both.
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
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
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
    /// The exact address asked of this range (runtimeConfig.ips,
    /// args.cni.ips or CNI_ARGS IP=, matched to its range by the plugin),
    /// granted as asked or refused; absent: the lowest free address.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "staticIP")]
    pub static_ip: Option<String>,
}

impl ClaimRange {
    /// The range, parsed by the rules of the IPAM configuration; errors
    /// name the field as `spec.ranges[index]...`.
    pub fn parse(&self, index: usize) -> Result<IpRange, RangeError> {
        let path = format!("spec.ranges[{index}]");
        let exclude: Vec<&str> = self.exclude.iter().map(String::as_str).collect();
        IpRange::parse(&RangeFields {
            path: &path,
            range: &self.range,
            range_start: self.range_start.as_deref(),
            range_end: self.range_end.as_deref(),
            exclude: &exclude,
        })
        .map(|(range, _warnings)| range)
    }
}

impl IPClaim {
    /// Whether the controller refused the claim's current spec for good.
    pub fn refused(&self) -> bool {
        self.has_ready("False")
    }

    /// Whether the claim's current spec was answered with addresses.
    pub fn answered(&self) -> bool {
        self.has_ready("True")
    }

    /// Whether the status answers the current spec with a `Ready`
    /// condition of `status`.
    fn has_ready(&self, status: &str) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.observed_generation == self.metadata.generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == status)
        })
    }
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

/// Why the controller did not (yet) serve a claim: the `reason` of its
/// `Ready=False` condition, the one contract between the controller that
/// writes it and the plugin that maps it to a CNI error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The range has no free address.
    Exhausted,
    /// The static address asked for is someone else's.
    StaticAddressTaken,
    /// The static address asked for is not one the range hands out.
    StaticAddressNotAllocatable,
    /// The static address asked for is in none of the claim's ranges.
    StaticAddressOutsideRanges,
    /// `spec.ranges` is empty or one of them does not parse.
    InvalidRange,
    /// A field naming the attachment (`spec.interface`, `spec.containerID`)
    /// is not one a runtime gives (e.g. an interface name over 15 bytes).
    InvalidClaim,
    /// A static address does not parse.
    InvalidStaticAddress,
    /// `spec.networkName` cannot name pools.
    InvalidNetworkName,
    /// The claim is not in its pod's namespace.
    PodNotInNamespace,
    /// No pod of that name (and UID) exists.
    PodNotFound,
    /// The pod's UID or node differ from the claim's.
    PodMismatch,
    /// Another claim holds the same pod interface.
    InterfaceClaimed,
    /// A range the claim asks for is not within one its network declares.
    UndeclaredRange,
    /// The claim's network overlaps a declared network's range.
    UndeclaredNetwork,
    /// A transient failure (API server, leadership): it is being retried.
    Retrying,
    /// The IPAMClaim the attachment references does not exist (or is
    /// being deleted).
    IPAMClaimNotFound,
    /// The IPAMClaim is for another network or interface, or holds
    /// addresses outside the network's ranges.
    IPAMClaimMismatch,
    /// The `ipam-claim-reference` is no object name.
    InvalidIPAMClaimReference,
    /// The IPAMClaim's `status.ips` do not parse.
    InvalidIPAMClaimStatus,
    /// A static address asked for is not the one the IPAMClaim holds.
    StaticAddressConflict,
    /// The NAD a network-selection element names does not exist.
    NetworkNotFound,
}

impl Refusal {
    pub const ALL: [Refusal; 21] = [
        Refusal::Exhausted,
        Refusal::StaticAddressTaken,
        Refusal::StaticAddressNotAllocatable,
        Refusal::StaticAddressOutsideRanges,
        Refusal::InvalidRange,
        Refusal::InvalidClaim,
        Refusal::InvalidStaticAddress,
        Refusal::InvalidNetworkName,
        Refusal::PodNotInNamespace,
        Refusal::PodNotFound,
        Refusal::PodMismatch,
        Refusal::InterfaceClaimed,
        Refusal::UndeclaredRange,
        Refusal::UndeclaredNetwork,
        Refusal::Retrying,
        Refusal::IPAMClaimNotFound,
        Refusal::IPAMClaimMismatch,
        Refusal::InvalidIPAMClaimReference,
        Refusal::InvalidIPAMClaimStatus,
        Refusal::StaticAddressConflict,
        Refusal::NetworkNotFound,
    ];

    /// The condition reason (also usable as a bounded metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Exhausted => "Exhausted",
            Refusal::StaticAddressTaken => "StaticAddressTaken",
            Refusal::StaticAddressNotAllocatable => "StaticAddressNotAllocatable",
            Refusal::StaticAddressOutsideRanges => "StaticAddressOutsideRanges",
            Refusal::InvalidRange => "InvalidRange",
            Refusal::InvalidClaim => "InvalidClaim",
            Refusal::InvalidStaticAddress => "InvalidStaticAddress",
            Refusal::InvalidNetworkName => "InvalidNetworkName",
            Refusal::PodNotInNamespace => "PodNotInNamespace",
            Refusal::PodNotFound => "PodNotFound",
            Refusal::PodMismatch => "PodMismatch",
            Refusal::InterfaceClaimed => "InterfaceClaimed",
            Refusal::UndeclaredRange => "UndeclaredRange",
            Refusal::UndeclaredNetwork => "UndeclaredNetwork",
            Refusal::Retrying => "Retrying",
            Refusal::IPAMClaimNotFound => "IPAMClaimNotFound",
            Refusal::IPAMClaimMismatch => "IPAMClaimMismatch",
            Refusal::InvalidIPAMClaimReference => "InvalidIPAMClaimReference",
            Refusal::InvalidIPAMClaimStatus => "InvalidIPAMClaimStatus",
            Refusal::StaticAddressConflict => "StaticAddressConflict",
            Refusal::NetworkNotFound => "NetworkNotFound",
        }
    }

    /// The refusal a condition reason names; `None` for a reason this
    /// version does not know (a newer controller's).
    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == reason)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal and its message (naming the field and value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Refusal,
    pub message: String,
}

impl Refused {
    pub fn new(reason: Refusal, message: impl Into<String>) -> Self {
        Refused {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Refusal;

    #[test]
    fn every_refusal_reads_back_from_its_reason() {
        for r in Refusal::ALL {
            assert_eq!(Refusal::from_reason(r.as_str()), Some(r));
        }
        assert_eq!(Refusal::from_reason("SomethingNewer"), None);
    }
}
