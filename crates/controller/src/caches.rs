//! What the reconcilers decide from, besides the pool actors' ledgers:
//! reflector stores of NADs and IPAMClaims, and compact indexes of what
//! they read of claims, pods and IPPool objects (one claim, one pod and
//! one pool entry per allocation).

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use hereabouts_api::{
    ClaimRange, ClaimReference, IPAMClaim, IPClaim, IPPool, MANAGED_BY,
    NetworkAttachmentDefinition, POOL_LABEL, SHARD_LABEL, base_name,
};
use hereabouts_core::parse_allocation_key;

use super::compact::{self, ContainerId, Uid};
use super::index::Index;

/// Multus' record of a pod's attachments.
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// What the reconciler checks a claim against before serving it.
#[derive(Clone, Debug)]
pub struct Lookups {
    /// Pods by `namespace/name`.
    pub pods: Index<Box<PodEntry>>,
    pub nads: Store<NetworkAttachmentDefinition>,
    /// Every claim (answered or not) by `namespace/name`.
    pub claims: Index<Box<ClaimEntry>>,
    pub ipamclaims: Store<IPAMClaim>,
}

/// What the collector, the IPAMClaim releaser and the NAD pruning read of
/// an IPPool object: who it is, its labels and range, and its entries with
/// the offset parsed, the container ID as bytes and the interface name
/// shared. The whole object costs about twice as much per entry, and the
/// pool actors keep every entry in their ledgers besides.
#[derive(Clone, Debug)]
pub struct PoolEntry {
    pub name: Box<str>,
    pub uid: Option<Box<str>>,
    pub resource_version: Option<Box<str>>,
    /// The pool it is a shard of (`hereabouts_api::base_name`).
    pub base: Box<str>,
    /// Its `POOL_LABEL` and `SHARD_LABEL`, when set.
    pub pool_label: Option<Box<str>>,
    pub shard_label: Option<Box<str>>,
    /// Made by hereabouts (`MANAGED_BY`).
    pub managed: bool,
    /// `spec.range`.
    pub range: Box<str>,
    /// Its entries whose key is an offset, in key order...
    pub allocations: Box<[PoolAllocation]>,
    /// ...and how many entries it has, those included.
    pub entries: usize,
}

/// One entry of an IPPool: whereabouts' `{id, podref, ifname}` at `offset`.
#[derive(Clone, Debug)]
pub struct PoolAllocation {
    pub offset: u128,
    /// Its key is the offset as whereabouts and hereabouts write it, and
    /// it is in the shard that offset belongs to: then no other entry of
    /// the range can hold the same offset.
    pub in_place: bool,
    pub id: ContainerId,
    pub podref: Box<str>,
    pub ifname: Arc<str>,
}

impl PoolEntry {
    /// The index entry of `pool`, under its name (IPPools live in the
    /// controller's namespace only).
    pub fn of(pool: &IPPool) -> (String, PoolEntry) {
        let labels = pool.labels();
        let label = |key: &str| labels.get(key).map(|v| Box::from(v.as_str()));
        // The shard the object is, by the rule `base_name` reads it with:
        // the shard label counts only beside the pool label (no label, or a
        // whereabouts object carrying one by hand: the base, shard 0).
        let shard = written_as_number(
            labels
                .get(SHARD_LABEL)
                .filter(|_| labels.contains_key(POOL_LABEL))
                .map_or("0", String::as_str),
        );
        let entry = PoolEntry {
            name: pool.name_any().into(),
            uid: pool.metadata.uid.as_deref().map(Into::into),
            resource_version: pool.metadata.resource_version.as_deref().map(Into::into),
            base: base_name(pool).into(),
            pool_label: label(POOL_LABEL),
            shard_label: label(SHARD_LABEL),
            managed: labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1),
            range: pool.spec.range.as_str().into(),
            allocations: pool
                .spec
                .allocations
                .iter()
                .filter_map(|(key, a)| {
                    let offset = parse_allocation_key(key)?;
                    Some(PoolAllocation {
                        offset,
                        in_place: written_as_number(key).is_some()
                            && shard == Some(hereabouts_core::shard_index(offset)),
                        id: ContainerId::new(&a.id),
                        podref: a.podref.as_str().into(),
                        ifname: compact::name(&a.ifname),
                    })
                })
                .collect(),
            entries: pool.spec.allocations.len(),
        };
        (pool.name_any(), entry)
    }

    /// A reference to the object, for Events about it.
    pub fn object_ref(&self, namespace: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some(IPPool::api_version(&()).into_owned()),
            kind: Some(IPPool::kind(&()).into_owned()),
            name: Some(self.name.to_string()),
            namespace: Some(namespace.to_owned()),
            uid: self.uid.as_deref().map(ToOwned::to_owned),
            ..ObjectReference::default()
        }
    }
}

/// `text` as the number it is when written as `u128::to_string` writes
/// it (decimal digits, no sign, no leading zero).
fn written_as_number(text: &str) -> Option<u128> {
    let canonical =
        text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// What the reconcilers read of a pod.
#[derive(Clone, Debug)]
pub struct PodEntry {
    uid: Uid,
    /// The node it is bound to (`None` while unscheduled).
    node: Option<Box<str>>,
    /// Addresses Multus recorded; `None` when the pod has no record (yet).
    recorded: Option<Box<[IpAddr]>>,
    /// The network-selection elements that name an IPAMClaim (rare: empty
    /// for all but KubeVirt's pods).
    claim_references: Box<[ClaimReference]>,
    /// Whether a pod of the same name may come back: a StatefulSet's, or
    /// one no controller owns (see `policy`).
    name_comes_back: bool,
}

impl PodEntry {
    /// The index entry of `pod`, under `namespace/name`.
    pub fn of(pod: &Pod) -> (String, PodEntry) {
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let entry = PodEntry {
            uid: Uid::new(pod.metadata.uid.as_deref().unwrap_or_default()),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
                .map(Into::into),
            recorded: recorded_addresses(pod),
            claim_references: pod
                .annotations()
                .get(hereabouts_api::NETWORKS_ANNOTATION)
                .map(|a| hereabouts_api::claim_references(a, &pod.namespace().unwrap_or_default()))
                .unwrap_or_default()
                .into(),
            name_comes_back: pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .is_none_or(|o| o.kind == "StatefulSet"),
        };
        (key, entry)
    }

    /// [`PodEntry::of`], boxed for an index (of 60,000 entries, with room
    /// for 131,072: an empty slot costs what a full one does).
    pub fn boxed(pod: &Pod) -> (String, Box<PodEntry>) {
        let (key, entry) = PodEntry::of(pod);
        (key, Box::new(entry))
    }

    pub fn uid(&self) -> &Uid {
        &self.uid
    }

    /// Whether the pod keeps `ip` as far as Multus recorded: yes when it
    /// recorded nothing (yet) or lists it.
    pub fn lists(&self, ip: IpAddr) -> bool {
        self.recorded.as_ref().is_none_or(|ips| ips.contains(&ip))
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    pub fn claim_references(&self) -> &[ClaimReference] {
        &self.claim_references
    }

    pub fn name_comes_back(&self) -> bool {
        self.name_comes_back
    }
}

/// What the collector, the releaser and the one-claim-per-interface check
/// read of a claim. The claim reconciler's own store holds only the claims
/// that wait for an answer (a handful at a time); this holds all of them,
/// without the metadata, status, node and static addresses a reflector
/// store would keep (`make bench`: a slimmed claim in a reflector store
/// cost about 2 KiB, one per allocation).
#[derive(Clone, Debug)]
pub struct ClaimEntry {
    pub uid: Uid,
    pub resource_version: Box<str>,
    /// The namespace of the pod it names, when not the claim's own (such a
    /// claim backs nothing: a claim acts for a pod of its namespace only).
    pub foreign_pod_namespace: Option<Box<str>>,
    pub pod_name: Box<str>,
    pub pod_uid: Uid,
    pub interface: Arc<str>,
    pub container_id: ContainerId,
    /// The NAD's name (in the pod's namespace, for the release policy).
    pub network: Arc<str>,
    pub network_name: Option<Arc<str>>,
    /// Shared by every claim of the same configuration (see [`interned`]).
    pub ranges: Arc<[ClaimRange]>,
    /// `Ready` True for the current generation: it holds addresses.
    pub answered: bool,
    /// `Ready` False for the current generation: it holds nothing.
    pub refused: bool,
    /// It has a deletion timestamp.
    pub deleting: bool,
}

/// The claim index's key of `claim`: `namespace/name`.
pub fn claim_key(claim: &IPClaim) -> String {
    format!(
        "{}/{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    )
}

impl ClaimEntry {
    /// The index entry of `claim`, under `namespace/name` (boxed: an index
    /// of 60,000 entries has room for 131,072, and an empty slot costs
    /// what a full one does).
    pub fn of(claim: &IPClaim) -> (String, Box<ClaimEntry>) {
        let namespace = claim.namespace().unwrap_or_default();
        let key = claim_key(claim);
        let spec = &claim.spec;
        let entry = Box::new(ClaimEntry {
            uid: Uid::new(&claim.uid().unwrap_or_default()),
            resource_version: claim.resource_version().unwrap_or_default().into(),
            foreign_pod_namespace: (spec.pod.namespace != namespace)
                .then(|| spec.pod.namespace.as_str().into()),
            pod_name: spec.pod.name.as_str().into(),
            pod_uid: Uid::new(&spec.pod.uid),
            interface: compact::name(&spec.interface),
            container_id: ContainerId::new(&spec.container_id),
            network: compact::name(&spec.network.name),
            network_name: spec.network_name.as_deref().map(compact::name),
            ranges: interned(&spec.ranges),
            answered: claim.answered(),
            refused: claim.refused(),
            deleting: claim.metadata.deletion_timestamp.is_some(),
        });
        (key, entry)
    }

    /// The namespace of its pod, given the claim's own.
    pub fn pod_namespace<'a>(&'a self, claim_namespace: &'a str) -> &'a str {
        self.foreign_pod_namespace
            .as_deref()
            .unwrap_or(claim_namespace)
    }

    /// Whether it acts for the pod of its own namespace with `pod_uid`.
    pub fn of_own_pod(&self, pod_uid: &Uid) -> bool {
        self.foreign_pod_namespace.is_none() && self.pod_uid == *pod_uid
    }

    /// Its `network_name`, when set.
    pub fn network_name(&self) -> Option<&str> {
        self.network_name.as_deref().filter(|n| !n.is_empty())
    }
}

/// The distinct range lists the claim index holds, shared: every claim of
/// a network carries the same list (a static address makes a list its own,
/// and it is not kept here). `make bench`'s scale run: about 190 bytes a
/// claim otherwise.
static RANGES: compact::Shared<[ClaimRange]> = LazyLock::new(Default::default);

/// `ranges` as a list shared with every claim that asks the same.
fn interned(ranges: &[ClaimRange]) -> Arc<[ClaimRange]> {
    if ranges.iter().any(|r| r.static_ip.is_some()) {
        return ranges.into();
    }
    compact::shared(&RANGES, ranges)
}

/// `namespace/name` split in two.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The addresses in a pod's `k8s.v1.cni.cncf.io/network-status`.
fn recorded_addresses(pod: &Pod) -> Option<Box<[IpAddr]>> {
    let raw = pod.annotations().get(NETWORK_STATUS)?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(raw).ok()?;
    Some(
        entries
            .iter()
            .flat_map(|e| e["ips"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| hereabouts_core::parse_ip(ip.as_str()?))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPPool object named `name` with `labels` and `entries` (key, id).
    pub(crate) fn pool(name: &str, labels: &[(&str, &str)], entries: &[(&str, &str)]) -> IPPool {
        let mut pool = IPPool::new(
            name,
            hereabouts_api::IPPoolSpec {
                range: "100.64.0.0/16".to_owned(),
                allocations: entries
                    .iter()
                    .map(|(key, id)| {
                        let entry = hereabouts_api::IPAllocation {
                            id: (*id).to_owned(),
                            podref: format!("ns/pod-{key}"),
                            ifname: "net1".to_owned(),
                        };
                        ((*key).to_owned(), entry)
                    })
                    .collect(),
            },
        );
        pool.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        pool.metadata.uid = Some("0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b3".to_owned());
        pool
    }

    #[test]
    fn a_pool_entry_keeps_what_its_readers_read() {
        let id = "ab".repeat(32);
        let object = pool(
            "net-100.64.0.0-16-s2",
            &[
                (POOL_LABEL, "net-100.64.0.0-16"),
                (SHARD_LABEL, "2"),
                (MANAGED_BY.0, MANAGED_BY.1),
            ],
            &[("300", &id), ("not-an-offset", &id), ("257", "marker")],
        );
        let (key, entry) = PoolEntry::of(&object);
        assert_eq!(key, "net-100.64.0.0-16-s2");
        assert_eq!(&*entry.base, "net-100.64.0.0-16");
        assert!(entry.managed);
        assert_eq!(entry.shard_label.as_deref(), Some("2"));
        assert_eq!(&*entry.range, "100.64.0.0/16");
        assert_eq!(entry.entries, 3, "every entry counts, parsed or not");
        let kept: Vec<(u128, String, &str, &str)> = entry
            .allocations
            .iter()
            .map(|a| (a.offset, a.id.to_string(), &*a.podref, &*a.ifname))
            .collect();
        assert_eq!(
            kept,
            vec![
                (257, "marker".to_owned(), "ns/pod-257", "net1"),
                (300, id.clone(), "ns/pod-300", "net1"),
            ]
        );
        assert!(
            entry.allocations.iter().all(|a| a.in_place),
            "keys written as their offsets, in their offsets' shard"
        );
        let (_, moved) = PoolEntry::of(&pool(
            "p",
            &[(POOL_LABEL, "p"), (SHARD_LABEL, "1")],
            &[("300", "x"), ("+130", "y"), ("0130", "z"), ("130", "w")],
        ));
        let in_place: Vec<bool> = moved.allocations.iter().map(|a| a.in_place).collect();
        assert_eq!(
            in_place,
            [false, false, true, false],
            "+130, 0130, 130, 300 (shard 2)"
        );
        let reference = entry.object_ref("hereabouts");
        assert_eq!(reference.kind.as_deref(), Some("IPPool"));
        assert_eq!(reference.name.as_deref(), Some("net-100.64.0.0-16-s2"));
        assert_eq!(reference.uid, object.metadata.uid);
    }

    fn range(cidr: &str, static_ip: Option<&str>) -> ClaimRange {
        ClaimRange {
            range: cidr.to_owned(),
            gateway: Some("100.64.0.254".to_owned()),
            static_ip: static_ip.map(str::to_owned),
            ..ClaimRange::default()
        }
    }

    #[test]
    fn claims_asking_the_same_ranges_share_one_list() {
        let a = interned(&[range("100.64.0.0/24", None), range("2001:db8::/64", None)]);
        let b = interned(&[range("100.64.0.0/24", None), range("2001:db8::/64", None)]);
        assert!(Arc::ptr_eq(&a, &b));
        let other = interned(&[range("100.64.1.0/24", None)]);
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(&*other, &[range("100.64.1.0/24", None)]);
        // A static address is the claim's own: its list is not kept.
        let fixed = [range("100.64.0.0/24", Some("100.64.0.7"))];
        let c = interned(&fixed);
        let d = interned(&fixed);
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(&*c, &fixed);
    }
}
