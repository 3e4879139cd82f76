use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Multus' NetworkAttachmentDefinition, reduced to what hereabouts reads.
/// Never written, and its CRD is Multus', not rendered into `crds/`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    namespaced
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration (a network config or a conflist) as JSON.
    #[serde(default)]
    pub config: String,
}
