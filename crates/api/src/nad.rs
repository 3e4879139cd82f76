use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Multus' NetworkAttachmentDefinition, reduced to what hereabouts reads.
/// Never written, and its CRD is Multus', not rendered into `crds/`.
///
/// Written by hand rather than derived: Multus allows a NAD without `spec`
/// (its configuration is then a file on the nodes), and a derived type
/// would refuse that object, failing the whole watch (and with it every
/// check of what networks declare). Here a missing `spec` is an empty one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachmentDefinition {
    #[serde(default = "NetworkAttachmentDefinition::api_version_value")]
    pub api_version: String,
    #[serde(default = "NetworkAttachmentDefinition::kind_value")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NetworkAttachmentDefinitionSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration (a network config or a conflist) as JSON.
    #[serde(default)]
    pub config: String,
}

impl NetworkAttachmentDefinition {
    const GROUP: &'static str = "k8s.cni.cncf.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "NetworkAttachmentDefinition";

    fn api_version_value() -> String {
        format!("{}/{}", Self::GROUP, Self::VERSION)
    }

    fn kind_value() -> String {
        Self::KIND.to_owned()
    }

    /// A NAD named `name` (namespace set by the API it is created with).
    pub fn new(name: &str, spec: NetworkAttachmentDefinitionSpec) -> Self {
        NetworkAttachmentDefinition {
            api_version: Self::api_version_value(),
            kind: Self::kind_value(),
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec,
        }
    }
}

impl kube::Resource for NetworkAttachmentDefinition {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Self::KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        Self::GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        Self::VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "network-attachment-definitions".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nad_without_spec_reads_as_an_empty_one() {
        let nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "from-a-file", "namespace": "default"},
        }))
        .expect("a spec-less NAD is valid");
        assert_eq!(nad.spec.config, "");
        let written = serde_json::to_value(NetworkAttachmentDefinition::new(
            "n",
            NetworkAttachmentDefinitionSpec::default(),
        ))
        .expect("serializes");
        assert_eq!(written["apiVersion"], "k8s.cni.cncf.io/v1");
        assert_eq!(written["kind"], "NetworkAttachmentDefinition");
    }
}
