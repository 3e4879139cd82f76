//! A network's release policy: how long an address released by a pod's
//! deletion is held for a pod of the same name coming back, and how long a
//! released address rests before another pod gets it (the decisions
//! themselves are the ledger's, in `hereabouts_core::ledger`).
//!
//! The controller learns a network's policy from the NAD it already
//! caches: the NAD that declares the claim's network (its CNI `name`, else
//! the NAD's name; the one in the pod's namespace first) and its
//! `ipam.hold_released` and `ipam.release_cooldown`. What the NAD does not
//! say (or a NAD that cannot be found or parsed) falls back to the
//! controller's `--hold-released` and `--release-cooldown`. The IPClaim
//! carries no policy: a NAD changed after the ADD applies at the release.
//!
//! A hold is made only for a pod whose name can come back: one owned by a
//! StatefulSet, or one with no controlling owner (recreated by hand or by
//! an operator under the same name). Pods of ReplicaSets, Jobs, DaemonSets
//! and the like get generated names that never return, so their addresses
//! only cool down. A pod the cache no longer knows is held (the safe side:
//! a hold gives way when the range would otherwise be exhausted).

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use hereabouts_api::NetworkAttachmentDefinition;
pub use hereabouts_core::ledger::Policy;
use hereabouts_core::ledger::ReleaseReason;

use super::caches::PodEntry;

/// The release of a deleted claim under `policy`, for the pod the cache
/// has under its name (`None`: none).
pub fn claim_deleted(policy: Policy, pod: Option<&PodEntry>) -> ReleaseReason {
    policy.claim_deleted(pod.is_none_or(PodEntry::name_comes_back))
}

/// The policy of the network `network` (a CNI network name) as seen from
/// `namespace`: the first IPAM section that declares it, in a NAD of
/// `namespace` first, then in any other (by namespace and name).
pub fn of_network(
    nads: &Store<NetworkAttachmentDefinition>,
    namespace: &str,
    network: &str,
    defaults: Policy,
) -> Policy {
    let mut nads = nads.state();
    nads.sort_by_key(|n| {
        let ns = n.namespace().unwrap_or_default();
        (ns != namespace, ns, n.name_any())
    });
    let config = nads.iter().find_map(|nad| {
        let sections = hereabouts_core::find_ipam_sections(&nad.spec.config).ok()?;
        sections.into_iter().find_map(|section| {
            let name = section.name.clone().unwrap_or_else(|| nad.name_any());
            (name == network)
                .then(|| section.ipam_config().ok())
                .flatten()
        })
    });
    defaults.with(config.as_ref())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEFAULTS: Policy = Policy {
        hold: Duration::from_secs(60),
        cooldown: Duration::from_secs(5),
    };

    fn config(extra: serde_json::Value) -> hereabouts_core::IpamConfig {
        let mut ipam = serde_json::json!({"type": "hereabouts", "range": "10.0.0.0/24"});
        for (k, v) in extra.as_object().expect("object") {
            ipam[k] = v.clone();
        }
        hereabouts_core::IpamConfig::parse(&ipam, "ipam").expect("valid")
    }

    #[test]
    fn a_network_overrides_what_it_says_and_keeps_the_rest() {
        assert_eq!(DEFAULTS.with(None), DEFAULTS);
        let c = config(serde_json::json!({}));
        assert_eq!(DEFAULTS.with(Some(&c)), DEFAULTS);
        let c = config(serde_json::json!({"hold_released": "off"}));
        assert_eq!(
            DEFAULTS.with(Some(&c)),
            Policy {
                hold: Duration::ZERO,
                ..DEFAULTS
            }
        );
        let c = config(serde_json::json!({"hold_released": "2m", "release_cooldown": "off"}));
        assert_eq!(
            DEFAULTS.with(Some(&c)),
            Policy {
                hold: Duration::from_secs(120),
                cooldown: Duration::ZERO
            }
        );
    }

    fn pod(owner: Option<(&str, bool)>) -> PodEntry {
        let mut pod = k8s_openapi::api::core::v1::Pod::default();
        pod.metadata.name = Some("p".to_owned());
        pod.metadata.namespace = Some("ns".to_owned());
        pod.metadata.owner_references = owner.map(|(kind, controller)| {
            vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: kind.to_owned(),
                    name: "o".to_owned(),
                    uid: "u".to_owned(),
                    controller: Some(controller),
                    ..Default::default()
                },
            ]
        });
        PodEntry::of(&pod).1
    }

    #[test]
    fn only_pods_whose_name_comes_back_are_held() {
        let hold = |pod: Option<&PodEntry>| match claim_deleted(DEFAULTS, pod) {
            ReleaseReason::ClaimDeleted { hold, cooldown } => {
                assert_eq!(cooldown, DEFAULTS.cooldown);
                hold
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(hold(Some(&pod(Some(("StatefulSet", true))))), DEFAULTS.hold);
        assert_eq!(hold(Some(&pod(None))), DEFAULTS.hold, "a bare pod");
        assert_eq!(hold(None), DEFAULTS.hold, "unknown: held");
        assert_eq!(hold(Some(&pod(Some(("ReplicaSet", true))))), Duration::ZERO);
        assert_eq!(hold(Some(&pod(Some(("Job", true))))), Duration::ZERO);
        // An owner that does not control the pod does not name it.
        assert_eq!(hold(Some(&pod(Some(("ConfigMap", false))))), DEFAULTS.hold);
    }
}
