//! Fixtures the integration tests share (each test binary includes this
//! module and uses part of it): the local control plane with the CRDs, a
//! controller replica, pods bound to a node no kubelet runs, ranges, and
//! reading what pools and claims hold.
#![allow(dead_code)]

pub mod agent;
pub mod replicas;
pub mod shaping;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use futures::future::join_all;
use hereabouts_api::{
    ClaimRange, IPAllocation, IPClaim, IPClaimSpec, IPPool, IPPoolSpec,
    NetworkAttachmentDefinition, NetworkRef, PodRef,
};
use hereabouts_kit::{Controller, Kit, TestNamespace, kit};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The local control plane with hereabouts' CRDs, and a fresh namespace.
pub async fn setup(prefix: &str) -> (Kit, TestNamespace) {
    let kit = kit().await.expect("local control plane");
    hereabouts_kit::install_crds(&kit.client)
        .await
        .expect("install CRDs");
    let ns = kit.namespace(prefix).await.expect("namespace");
    (kit, ns)
}

/// The spec of the claim of `pod` (name, UID) in `ns` for its interface
/// `ifname` on `network`, asking `ranges`, as a plugin on a simulated node
/// files it.
pub fn claim_spec(
    ns: &str,
    network: &str,
    ifname: &str,
    pod: &(String, String),
    ranges: Vec<ClaimRange>,
) -> IPClaimSpec {
    IPClaimSpec {
        network: NetworkRef {
            namespace: ns.to_owned(),
            name: network.to_owned(),
        },
        ranges,
        network_name: None,
        enable_overlapping_ranges: true,
        interface: ifname.to_owned(),
        pod: PodRef {
            namespace: ns.to_owned(),
            name: pod.0.clone(),
            uid: pod.1.clone(),
        },
        container_id: format!("container-{}", pod.1),
        node: "simulated".to_owned(),
        static_ips: Vec::new(),
    }
}

/// Every live entry (no hold, no cooldown) of every IPPool object of
/// `range` in `ns`, by offset: (object, podref).
pub async fn entries_by_offset(
    client: &Client,
    ns: &str,
    range: &str,
) -> BTreeMap<u128, Vec<(String, String)>> {
    let api: Api<IPPool> = Api::namespaced(client.clone(), ns);
    let mut out: BTreeMap<u128, Vec<(String, String)>> = BTreeMap::new();
    for p in api.list(&ListParams::default()).await.expect("pools").items {
        if p.spec.range != range {
            continue;
        }
        for (key, a) in &p.spec.allocations {
            if hereabouts_core::ledger::resting_until(&a.id).is_some() {
                continue;
            }
            let offset: u128 = key.parse().expect("offset key");
            out.entry(offset)
                .or_default()
                .push((p.name_any(), a.podref.clone()));
        }
    }
    out
}

/// The pod reference of every allocation of every pool in `ns` (holds and
/// cooldowns left out: they keep an address for no one live).
pub async fn pool_holders(client: &Client, ns: &str) -> Vec<String> {
    let pools: Api<IPPool> = Api::namespaced(client.clone(), ns);
    pools
        .list(&ListParams::default())
        .await
        .expect("pools")
        .items
        .iter()
        .flat_map(|p| p.spec.allocations.values())
        .filter(|a| hereabouts_core::ledger::resting_until(&a.id).is_none())
        .map(|a| a.podref.clone())
        .collect()
}

/// Whether the request `line` (HTTP/1.1) is a controller's read of pod
/// `pod`'s claims in `ns` (a release's successor read: a consistent list by
/// `spec.pod.name`).
pub fn is_successor_read(line: &str, ns: &str, pod: &str) -> bool {
    let field = format!("fieldSelector=spec.pod.name%3D{pod}");
    line.starts_with(&format!(
        "GET /apis/hereabouts.dev/v1alpha1/namespaces/{ns}/ipclaims?"
    )) && line
        .split_once(&field)
        .is_some_and(|(_, rest)| rest.starts_with([' ', '&']))
}

/// Whether the request `line` (HTTP/1.1) is a controller's read of the
/// claims' revision in `ns` at the start of its leadership term (a list
/// of one item): until it is answered, the controller's releases do not
/// trust their cache and read the pod's claims ([`is_successor_read`]).
pub fn is_token_read(line: &str, ns: &str) -> bool {
    line.strip_prefix(&format!(
        "GET /apis/hereabouts.dev/v1alpha1/namespaces/{ns}/ipclaims?"
    ))
    .and_then(|rest| rest.split(' ').next())
    .is_some_and(|query| query.split('&').any(|p| p == "limit=1") && !query.contains("watch="))
}

/// One controller replica, killed when dropped.
pub fn replica(ns: &TestNamespace, name: &str, extra: &[&str]) -> Controller {
    Controller::start(
        Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        ns,
        name,
        extra,
    )
    .expect("start controller")
}

/// The address of `198.51.100.7/24`-style text.
pub fn ip_of(address: &str) -> IpAddr {
    address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {address}"))
}

/// A NAD `name` in `ns`: hereabouts on `range` (CNI network name `name`).
pub async fn range_nad(client: &Client, ns: &str, name: &str, range: &str) {
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), ns);
    nads.create(
        &PostParams::default(),
        &NetworkAttachmentDefinition::new(
            name,
            hereabouts_api::NetworkAttachmentDefinitionSpec {
                config: json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan",
                               "master": "eth1",
                               "ipam": {"type": "hereabouts", "range": range}})
                .to_string(),
            },
        ),
    )
    .await
    .expect("NAD");
}

/// A range of a claim, the whole CIDR.
pub fn range(cidr: &str) -> ClaimRange {
    ClaimRange {
        range: cidr.to_owned(),
        ..Default::default()
    }
}

/// Pod objects bound to a node no kubelet runs; returns (name, uid).
pub async fn pods(client: &Client, ns: &str, prefix: &str, count: usize) -> Vec<(String, String)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    join_all((0..count).map(|i| {
        let api = api.clone();
        let name = format!("{prefix}-{i}");
        async move {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                         "containers": [{"name": "app", "image": "pause"}]}
            }))
            .expect("pod");
            let pod = api
                .create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
            (name, pod.uid().expect("uid"))
        }
    }))
    .await
}

/// The addresses of a claim answered Ready for its current spec.
pub fn ready_addresses(claim: &IPClaim) -> Option<Vec<String>> {
    let status = claim.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
        && status.observed_generation == claim.metadata.generation;
    ready.then(|| status.addresses.clone())
}

/// All allocations of the pool `name` (all shards), as IP -> podref.
/// The allocations (address -> podref) of the pool `name`, all shards;
/// holds left out.
pub async fn pool_allocations(client: &Client, ns: &str, name: &str) -> BTreeMap<IpAddr, String> {
    let api: Api<IPPool> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for pool in api
        .list(&ListParams::default())
        .await
        .expect("list pools")
        .items
    {
        let pool_name = pool.name_any();
        if pool_name != name && !pool_name.starts_with(&format!("{name}-s")) {
            continue;
        }
        let (_, cidr) =
            hereabouts_core::Cidr::parse_with_host(&pool.spec.range).expect("pool range");
        for (key, a) in pool.spec.allocations {
            let offset: u128 = key.parse().expect("offset key");
            let ip = cidr.ip_at(offset).expect("offset in range");
            // A hold keeps an address for a pod name whose claim went, a
            // cooldown rests a released one: neither is allocated.
            if hereabouts_core::ledger::resting_until(&a.id).is_some() {
                continue;
            }
            assert!(
                out.insert(ip, a.podref.clone()).is_none(),
                "{ip} allocated twice"
            );
        }
    }
    out
}

/// Adds a whereabouts-style allocation to the pool object `name`.
pub async fn adopt(client: &Client, ns: &str, name: &str, offset: u32, podref: &str) {
    let pools: Api<IPPool> = Api::namespaced(client.clone(), ns);
    let mut pool = pools.get(name).await.expect("pool");
    pool.spec.allocations.insert(
        offset.to_string(),
        hereabouts_api::IPAllocation {
            id: format!("container-of-{podref}"),
            podref: podref.to_owned(),
            ifname: "net1".into(),
        },
    );
    pools
        .replace(name, &PostParams::default(), &pool)
        .await
        .expect("adopted allocation");
}

/// The claim `name`'s first Ready address, once answered.
pub async fn ready_address(claims: &Api<IPClaim>, name: &str) -> Option<String> {
    let c = claims.get_opt(name).await.ok()??;
    ready_addresses(&c)?.into_iter().next()
}

/// Creates the claim of `pod`'s interface net1 on `network` (a NAD on
/// `cidr`), named as the plugin names it, and waits for its address:
/// (its name, its address).
pub async fn attach(
    claims: &Api<IPClaim>,
    ns: &str,
    pod: &(String, String),
    network: &str,
    cidr: &str,
) -> (String, String) {
    let name = hereabouts_api::claim_name(&pod.0, "net1", network);
    claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                &name,
                claim_spec(ns, network, "net1", pod, vec![range(cidr)]),
            ),
        )
        .await
        .expect("claim");
    let address =
        hereabouts_kit::eventually("the claim answered", 30, || ready_address(claims, &name))
            .await
            .expect("answered");
    (name, address)
}

/// Until `replica` holds the Lease.
pub async fn leads(client: &Client, ns: &str, replica: &Controller) {
    let pid = replica.process.id();
    hereabouts_kit::eventually("the replica leads", 30, || async {
        (hereabouts_kit::leader_pid(client, ns).await == Some(pid)).then_some(())
    })
    .await
    .expect("leads");
}

/// A whereabouts-style pool entry on net1.
pub fn entry(id: &str, podref: &str) -> IPAllocation {
    IPAllocation {
        id: id.to_owned(),
        podref: podref.to_owned(),
        ifname: "net1".to_owned(),
    }
}

/// Creates the IPPool `name` on `range` with `labels` and `entries`.
pub async fn pool(
    pools: &Api<IPPool>,
    name: &str,
    range: &str,
    labels: &[(&str, &str)],
    entries: Vec<(&str, IPAllocation)>,
) {
    let mut object = IPPool::new(
        name,
        IPPoolSpec {
            range: range.to_owned(),
            allocations: entries
                .into_iter()
                .map(|(k, a)| (k.to_owned(), a))
                .collect(),
        },
    );
    object.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    pools
        .create(&PostParams::default(), &object)
        .await
        .expect("pool");
}
