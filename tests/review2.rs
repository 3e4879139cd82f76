//! A second adversarial review of issue 12 (at 3d0addc): each test is a
//! sequence of API-server-visible events that, when it fails, breaks one
//! of the design's invariants (ARCHITECTURE.md, "Invariants"). Against
//! the real local API server, with the fixtures of tests/common.
//!
//! A failing test here is a finding: its assertion names the invariant.
//! At 3d0addc every test fails but one (marked "Coverage", which passes
//! and guards a path the suspicion got wrong). Some put a proxy between a
//! component and the API server (`kubectl proxy`, then a small plain-HTTP
//! forwarder in this file) to hold one kind of request: the component and
//! the API server are the real ones; only timing is shaped.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hereabouts_api::{
    ClaimRange, IPAllocation, IPClaim, IPPool, NetworkAttachmentDefinition,
    NetworkAttachmentDefinitionSpec, OverlappingRangeIPReservation,
    OverlappingRangeIPReservationSpec,
};
use hereabouts_kit::eventually;

mod common;
use common::shaping::{
    Down, cni_env, forwarder, kubectl_proxy, plain_kubeconfig, plugin, stalling_pod_watch,
};
use common::{pods, pool_allocations, range, ready_addresses, replica, setup};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// A claim as the plugin files it for (pod, interface) on `network`.
fn claim(
    ns: &str,
    name: &str,
    pod: &(String, String),
    ifname: &str,
    network: &str,
    ranges: Vec<ClaimRange>,
) -> IPClaim {
    IPClaim::new(name, common::claim_spec(ns, network, ifname, pod, ranges))
}

async fn create_claim(client: &Client, ns: &str, claim: &IPClaim) {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), claim)
        .await
        .expect("create claim");
}

/// The Ready=False condition of a claim, once it has one: (reason, message).
fn refusal(claim: &IPClaim) -> Option<(String, String)> {
    let c = claim
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False")?;
    Some((c.reason.clone(), c.message.clone()))
}

/// Waits for the claim `name` to be answered Ready; its addresses.
async fn ready(client: &Client, ns: &str, name: &str, seconds: u64) -> Vec<String> {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    eventually(&format!("claim {name} ready"), seconds, || async {
        ready_addresses(&api.get(name).await.ok()?)
    })
    .await
    .expect("claim answered")
}

/// A NetworkAttachmentDefinition of the namespace, from its CNI config.
fn nad(name: &str, config: &Value) -> NetworkAttachmentDefinition {
    NetworkAttachmentDefinition::new(
        name,
        NetworkAttachmentDefinitionSpec {
            config: config.to_string(),
        },
    )
}

/// The Ready=False reason of the claim `name` once it has one, or its
/// addresses once it is answered Ready, whichever comes first.
async fn outcome(
    client: &Client,
    ns: &str,
    name: &str,
    seconds: u64,
) -> Result<Vec<String>, (String, String)> {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("claim {name} answered or refused"),
        seconds,
        || async {
            let claim = api.get(name).await.ok()?;
            if let Some(addresses) = ready_addresses(&claim) {
                return Some(Ok(addresses));
            }
            refusal(&claim).map(Err)
        },
    )
    .await
    .expect("claim answered or refused")
}

// ===========================================================================
// Invariants 6, 4 and 2: a NetworkAttachmentDefinition without `spec`
// (valid for Multus' CRD, and what Multus documents for a network whose
// CNI config is a file on the nodes) cannot be read into the controller's
// NetworkAttachmentDefinition type (`spec` is required there,
// src/crd/nad.rs). The NAD watch's list fails on it forever
// (src/controller/mod.rs, the `nads` reflector): the NAD cache stays
// empty, so `check_network` (src/controller/claims.rs) knows no declared
// network and serves any range for a declared one; the caches never
// sync, so /readyz never says ready and the collector, which waits for
// readiness, never runs (no leak ever comes back).
// ===========================================================================

#[tokio::test]
async fn a_nad_without_spec_does_not_blind_the_controller() {
    let (kit, ns) = setup("rv2-nospec").await;
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &nad(
            "blue",
            &json!({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan", "master": "eth1",
                    "ipam": {"type": "hereabouts", "range": "100.64.20.0/28"}}),
        ),
    )
    .await
    .expect("NAD blue");
    // As Multus documents it: no spec, the config is a file on the nodes.
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        kit.client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<NetworkAttachmentDefinition>(&()),
    );
    let specless: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "from-file"}
    }))
    .expect("object");
    raw.create(&PostParams::default(), &specless)
        .await
        .expect("the API server accepts a NAD without spec");

    let replica = replica(
        &ns,
        "a",
        &["--gc-grace", "1s", "--gc-schedule", "*/2 * * * * *"],
    );
    let mut made = pods(&kit.client, &ns.name, "p", 2).await;
    let q = made.pop().expect("q");
    let p = made.pop().expect("p");
    // Serving at all: a claim of blue within what blue declares.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "p-blue",
            &p,
            "net1",
            "blue",
            vec![range("100.64.20.0/28")],
        ),
    )
    .await;
    ready(&kit.client, &ns.name, "p-blue", 60).await;

    let mut broken = Vec::new();
    // Invariant 6: blue declares 100.64.20.0/28 only.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "q-blue",
            &q,
            "net1",
            "blue",
            vec![range("100.64.21.0/28")],
        ),
    )
    .await;
    match outcome(&kit.client, &ns.name, "q-blue", 30).await {
        Err((reason, _)) if reason == "UndeclaredRange" => {}
        other => broken.push(format!(
            "invariant 6: a claim of network blue for 100.64.21.0/28 (blue declares 100.64.20.0/28) must be refused UndeclaredRange, got {other:?}"
        )),
    }
    // Invariants 4 and 2: ready, so the collector runs.
    if replica.wait_ready().await.is_err() {
        broken.push(format!(
            "invariant 4/2: one NAD without spec keeps /readyz at {:?} for 30 s, and the collector (which waits for readiness) never runs",
            replica.get("/readyz").await
        ));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

// ===========================================================================
// Invariant 4: a claim's `spec.interface` (and `spec.containerID`) are
// never bounded (src/controller/claims.rs `requests`, lines 418-510,
// checks ranges, static IPs and the network name only; the admission
// policy checks `spec.node`). A node credential's claim for its own pod
// with a 1 MiB interface name is served: the name is written into the
// shared IPPool shard and into a reservation, so one claim makes the
// pool shard, which every other pod of the range shares and every commit
// rewrites whole, an object over 1 MiB (ARCHITECTURE: "no object over
// 1 MiB"); a few more fill etcd's request limit, and every batch that
// touches the shard fails from then on. A Linux interface name is at most
// 15 bytes; the refusal must name the field and change nothing.
// ===========================================================================

#[tokio::test]
async fn a_megabyte_interface_name_is_refused_not_written_into_the_shared_pool() {
    let (kit, ns) = setup("rv2-ifname").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let mut made = pods(&kit.client, &ns.name, "p", 1).await;
    let p = made.pop().expect("p");
    let huge = "n".repeat(1 << 20);
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "p-huge",
            &p,
            &huge,
            "blue",
            vec![range("100.64.22.0/28")],
        ),
    )
    .await;
    let got = outcome(&kit.client, &ns.name, "p-huge", 30).await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let biggest = pools
        .list(&ListParams::default())
        .await
        .expect("list pools")
        .items
        .iter()
        .map(|p| serde_json::to_vec(p).map_or(0, |v| v.len()))
        .max()
        .unwrap_or(0);
    assert!(
        matches!(&got, Err((_, message)) if message.contains("spec.interface")),
        "invariant 4: a claim whose spec.interface is 1 MiB long must be refused naming spec.interface; got {:?} (largest IPPool now {biggest} bytes)",
        got.as_ref()
            .map_err(|(r, m)| (r, m.chars().take(200).collect::<String>()))
    );
    assert!(
        biggest < 1 << 20,
        "invariant 4: a refused claim changes nothing, yet an IPPool is now {biggest} bytes"
    );
}

// ===========================================================================
// Invariants 5 and 7 via the collector: a claim suspect is identified by
// (namespace, name, uid) only (src/controller/gc.rs `Suspect::Claim`,
// lines 109-128) and deleted with a uid precondition only (`reclaim`,
// lines 369-394), from what the cache said when the pass began. Claims
// are changed in place, keeping their uid: a pod recreated under the same
// name (a StatefulSet) gets its old claim re-pointed at the new pod by the
// plugin's ADD (src/cni/verbs.rs `add`: 409, then replace). A claim that
// was orphaned when a long pass began and re-pointed at a live pod during
// it is deleted under that live pod, and its address released.
// ===========================================================================

#[tokio::test]
async fn the_collector_never_deletes_a_claim_re_pointed_at_a_live_pod_during_its_pass() {
    let (kit, ns) = setup("rv2-gcclaim").await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let pod_api: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    // Leaks of gone pods: a long collector pass.
    let leaks = 250u32;
    let mut leaky = IPPool::new(
        "198.51.100.0-24",
        hereabouts_api::IPPoolSpec {
            range: "198.51.100.0/24".into(),
            allocations: (1..=leaks)
                .map(|o| {
                    (
                        o.to_string(),
                        IPAllocation {
                            id: format!("gone-{o}"),
                            podref: format!("{}/gone-{o}", ns.name),
                            ifname: "net1".into(),
                        },
                    )
                })
                .collect(),
        },
    );
    leaky.metadata.namespace = Some(ns.name.clone());
    pools
        .create(&PostParams::default(), &leaky)
        .await
        .expect("leaky pool");
    // StatefulSet pods whose claims outlived them (a DEL never came).
    let count = 20usize;
    let first = pods(&kit.client, &ns.name, "s", count).await;
    for pod in &first {
        create_claim(
            &kit.client,
            &ns.name,
            &claim(
                &ns.name,
                &pod.0,
                pod,
                "net1",
                "a",
                vec![range("203.0.113.0/27")],
            ),
        )
        .await;
    }
    for pod in &first {
        pod_api
            .delete(&pod.0, &kube::api::DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
    }
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "3s"],
    );
    replica.wait_ready().await.expect("controller ready");
    eventually("the collector's reclaiming pass under way", 60, || async {
        let left = pool_allocations(&kit.client, &ns.name, "198.51.100.0-24").await;
        (left.len() < leaks as usize).then_some(())
    })
    .await
    .expect("reclaiming");
    // The StatefulSet makes the pods again; their ADDs find the old claims
    // (409) and re-point them, as the plugin does.
    let second = pods(&kit.client, &ns.name, "s", count).await;
    let mut repointed = Vec::new();
    for pod in &second {
        let Some(mut existing) = claims.get_opt(&pod.0).await.expect("read claim") else {
            continue; // deleted before its pod came back: fair
        };
        existing.spec.pod.uid = pod.1.clone();
        existing.spec.container_id = format!("container-{}", pod.1);
        if claims
            .replace(&pod.0, &PostParams::default(), &existing)
            .await
            .is_ok()
        {
            repointed.push(pod.0.clone());
        }
    }
    // What the controller answers the re-pointed claims meanwhile (the
    // new pods' ADDs return these addresses).
    let mut answered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..20 {
        for name in &repointed {
            if let Some(addresses) = claims
                .get_opt(name)
                .await
                .expect("read claim")
                .as_ref()
                .and_then(ready_addresses)
            {
                answered.entry(name.clone()).or_insert(addresses);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("every leak reclaimed", 120, || async {
        pool_allocations(&kit.client, &ns.name, "198.51.100.0-24")
            .await
            .is_empty()
            .then_some(())
    })
    .await
    .expect("leaks reclaimed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lost = Vec::new();
    for name in &repointed {
        if claims
            .get_opt(name)
            .await
            .expect("read claim")
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
        {
            lost.push(name.clone());
        }
    }
    let held = pool_allocations(&kit.client, &ns.name, "203.0.113.0-27").await;
    assert!(
        !repointed.is_empty() && lost.is_empty(),
        "invariant 5: the collector deleted {} of the {} claims re-pointed at live pods during its pass ({lost:?}); \
         answered to the live pods before that: {answered:?}; the pool now holds {held:?}",
        lost.len(),
        repointed.len()
    );
}

// ===========================================================================
// Invariant 1 via the collector and whereabouts' node-slice pools (the
// path issue 12's defect 6 did not cover): releasing one leaked
// allocation from a node-slice pool `<network_name>-<node>-<slice>`
// goes through a pool actor named as if `<network_name>-<node>` were the
// network name (src/controller/gc.rs `reclaim`, lines 317-340,
// `network_name_of`), and the actor's write labels the pool as
// hereabouts' own (src/controller/pools.rs `shard_object`, lines
// 1140-1157, always sets hereabouts.dev/pool). From then on the
// collector reads the pool's network name exactly from its name
// (gc.rs `suspects`, lines 258-265: labelled pools are "named exactly"),
// so the whereabouts reservations `<network_name>-<ip>` of the pool's
// other, live allocations look unbacked and are deleted; an overlapping
// pool of the same network_name then hands a live pod's address out again.
// ===========================================================================

#[tokio::test]
async fn collecting_one_leak_of_a_node_slice_pool_keeps_its_live_reservations() {
    let (kit, ns) = setup("rv2-slice").await;
    let mut made = pods(&kit.client, &ns.name, "slice", 2).await;
    let q = made.pop().expect("q");
    let pod = made.pop().expect("live pod");
    let podref = format!("{}/{}", ns.name, pod.0);
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &nad(
            "bluenet",
            &json!({"cniVersion": "1.0.0", "name": "bluenet", "type": "macvlan", "master": "eth1",
                    "ipam": {"type": "whereabouts", "range": "100.64.9.0/24",
                             "network_name": "bluenet", "node_slice_size": "/28"}}),
        ),
    )
    .await
    .expect("NAD");
    // What whereabouts v0.9 wrote in node-slice mode: a live pod at .17,
    // a leak (its pod is gone, the DEL never came) at .18.
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut pool = IPPool::new(
        "bluenet-worker-1-100.64.9.16-28",
        hereabouts_api::IPPoolSpec {
            range: "100.64.9.16/28".into(),
            allocations: BTreeMap::new(),
        },
    );
    let gone = format!("{}/gone-0", ns.name);
    for (offset, id, owner) in [("1", "c1", &podref), ("2", "c2", &gone)] {
        pool.spec.allocations.insert(
            offset.into(),
            IPAllocation {
                id: id.into(),
                podref: owner.clone(),
                ifname: "net1".into(),
            },
        );
    }
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("node-slice pool");
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    for (name, id, owner) in [
        ("bluenet-100.64.9.17", "c1", &podref),
        ("bluenet-100.64.9.18", "c2", &gone),
    ] {
        reservations
            .create(
                &PostParams::default(),
                &OverlappingRangeIPReservation::new(
                    name,
                    OverlappingRangeIPReservationSpec {
                        containerid: id.into(),
                        podref: owner.clone(),
                        ifname: "net1".into(),
                    },
                ),
            )
            .await
            .expect("reservation");
    }
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    // The leak is collected (that is right)...
    eventually("the leak at .18 collected", 60, || async {
        let left = pools.get("bluenet-worker-1-100.64.9.16-28").await.ok()?;
        (!left.spec.allocations.contains_key("2")).then_some(())
    })
    .await
    .expect("leak collected");
    // ...and some passes later:
    tokio::time::sleep(Duration::from_secs(8)).await;
    let kept = reservations
        .get_opt("bluenet-100.64.9.17")
        .await
        .expect("read")
        .is_some();
    // An overlapping hereabouts range of the same network asks for .17.
    let mut wants = claim(
        &ns.name,
        "q-bluenet",
        &q,
        "net1",
        "bluenet",
        vec![range("100.64.9.0/24")],
    );
    wants.spec.network_name = Some("bluenet".into());
    wants.spec.static_ips = vec!["100.64.9.17".into()];
    create_claim(&kit.client, &ns.name, &wants).await;
    let got = outcome(&kit.client, &ns.name, "q-bluenet", 30).await;
    let labels = pools
        .get("bluenet-worker-1-100.64.9.16-28")
        .await
        .expect("node-slice pool")
        .metadata
        .labels;
    assert!(
        kept && got.is_err(),
        "invariant 1: the live whereabouts pod {podref} holds 100.64.9.17 in the node-slice pool \
         (labelled {labels:?} since the collection); its reservation bluenet-100.64.9.17 still \
         there: {kept}; a claim of the overlapping 100.64.9.0/24 (network_name bluenet) for it \
         got {got:?}"
    );
}

// ===========================================================================
// Invariant 6 at the admission layer: the node restriction policy
// (config/rbac/node-restriction.yaml, `claimNode`, lines 34-37) checks
// `spec.node` of the object as written for CREATE and UPDATE, and of the
// old object only for DELETE. A node credential may therefore UPDATE
// another node's claim by writing its own node name into it, and then
// DELETE it: "a node may only write its own claims" does not hold for
// updates. (tests/manifests.rs checks an update that keeps the other
// node's name, not one that rewrites it.)
// ===========================================================================

/// kubectl on the kit's API server as its admin.
fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(hereabouts_kit::kubeconfig_path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("kubectl output")
}

/// Cluster-scoped objects a test made, deleted when dropped.
struct ClusterObjects(Vec<String>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = kubectl(&args, None);
    }
}

#[tokio::test]
async fn a_node_cannot_take_another_nodes_claim_by_renaming_its_node() {
    let (kit, ns) = setup("rv2-nodeup").await;
    let n = ns.name.clone();
    let account = "hereabouts-node";
    // The node plugin's identity, bound to a pod on its node.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(kit.client.clone(), &n);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": account}})).expect("sa"),
        )
        .await
        .expect("service account");
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(kit.client.clone(), &n);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": account},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": n}]
            }))
            .expect("binding"),
        )
        .await
        .expect("role binding");
    let node = hereabouts_kit::unique("rv2node");
    let policy = format!("hereabouts-node-restriction-{n}");
    let _cleanup = ClusterObjects(vec![
        format!("node/{node}"),
        format!("validatingadmissionpolicy/{policy}"),
        format!("validatingadmissionpolicybinding/{policy}"),
    ]);
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(kit.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node}})).expect("node"),
        )
        .await
        .expect("node");
    let pod_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(kit.client.clone(), &n);
    let agent = pod_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "agent"},
                "spec": {"nodeName": node, "serviceAccountName": account,
                         "automountServiceAccountToken": false,
                         "containers": [{"name": "install", "image": "hereabouts"}]}
            }))
            .expect("pod"),
        )
        .await
        .expect("agent pod");
    let uid = agent.metadata.uid.clone().expect("uid");
    let out = kubectl(
        &[
            "create",
            "token",
            account,
            "-n",
            &n,
            "--duration=10m",
            "--bound-object-kind=Pod",
            "--bound-object-name=agent",
            &format!("--bound-object-uid={uid}"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // The policy as shipped, for this namespace's account.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rbac/node-restriction.yaml"),
    )
    .expect("policy file");
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&shipped) {
        let mut value: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        value["metadata"]["name"] = json!(policy);
        if value["kind"] == "ValidatingAdmissionPolicy" {
            value["spec"]["matchConditions"][0]["expression"] = json!(format!(
                "request.userInfo.username == 'system:serviceaccount:{n}:{account}'"
            ));
        } else {
            value["spec"]["policyName"] = json!(policy);
        }
        docs.push(format!(
            "---\n{}",
            serde_yaml::to_string(&value).expect("YAML")
        ));
    }
    let out = kubectl(&["apply", "-f", "-"], Some(&docs.concat()));
    assert!(
        out.status.success(),
        "policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The plugin's client.
    let admin = std::fs::read_to_string(hereabouts_kit::kubeconfig_path()).expect("kubeconfig");
    let scoped: String = admin
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("token:") {
                format!("    token: {token}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&scoped).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let plugin = Client::try_from(config).expect("client");
    let claims: Api<IPClaim> = Api::namespaced(plugin, &n);
    let admin_claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &n);
    // Another node's pod and its claim.
    let victim = pods(&kit.client, &n, "victim", 1).await.remove(0);
    let mut theirs = claim(
        &n,
        "theirs",
        &victim,
        "net1",
        "blue",
        vec![range("100.64.23.0/28")],
    );
    theirs.spec.node = "some-other-node".into();
    admin_claims
        .create(&PostParams::default(), &theirs)
        .await
        .expect("the other node's claim");
    // Once the policy is in force, this node cannot write a claim naming
    // the other node.
    eventually("the policy in force", 30, || async {
        let mut probe = theirs.clone();
        probe.metadata.name = Some("probe".into());
        match claims.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(e)) if e.code == 403 => Some(()),
            Ok(_) => {
                let _ = admin_claims
                    .delete("probe", &kube::api::DeleteParams::default())
                    .await;
                None
            }
            Err(_) => None,
        }
    })
    .await
    .expect("policy in force");
    let mut taken = claims.get("theirs").await.expect("read their claim");
    taken.spec.node = node.clone();
    taken.spec.container_id = "hijack".into();
    let update = claims
        .replace("theirs", &PostParams::default(), &taken)
        .await;
    let delete = claims
        .delete("theirs", &kube::api::DeleteParams::default())
        .await;
    assert!(
        matches!(&update, Err(kube::Error::Api(e)) if e.code == 403),
        "invariant 6: node {node}'s credential rewrote another node's IPClaim (spec.node \
         some-other-node -> {node}): update {:?}; then delete {:?}",
        update.as_ref().map(|c| c.spec.node.clone()),
        delete.as_ref().map(|_| "accepted")
    );
}

// ===========================================================================
// Invariants 3 and 5 at the plugin: DEL reads the attachment's claim,
// compares its container ID, then deletes it with a uid precondition only
// (src/cni/verbs.rs `del`, lines 466-503, and `delete_claim`, 505-518).
// An ADD of the same pod and interface from a new sandbox re-points that
// claim in place (same uid, new container ID, `add`, lines 306-340). A
// DEL of the old sandbox that read the claim before the re-pointing ADD
// and deletes it after deletes the new sandbox's claim: the controller
// then releases the address the running sandbox was just given (held for
// the pod name for --hold-released, then anyone's). Runtimes retry DEL
// and may run the old sandbox's DEL late; the window is one round trip,
// made wide here by holding the DEL's DELETE request in a proxy between
// the plugin and the API server (kubectl proxy).
// ===========================================================================

/// A plain-HTTP proxy in front of `upstream` that holds the first DELETE
/// request until `release` is notified, and tells `seen` when it has it.
async fn holding_proxy(
    upstream: u16,
    seen: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
) -> u16 {
    forwarder(
        upstream,
        move |_, line, chunk| {
            let (seen, release) = (seen.clone(), release.clone());
            let delete = line.starts_with("DELETE ");
            Box::pin(async move {
                if delete {
                    seen.notify_one();
                    release.notified().await;
                }
                chunk
            })
        },
        |_, _| Down::Pass,
    )
    .await
}

#[tokio::test]
async fn a_late_del_of_the_old_sandbox_never_deletes_the_new_sandboxs_claim() {
    let (kit, ns) = setup("rv2-delrace").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "s", 1).await.remove(0);
    let direct = ns.kubeconfig().expect("kubeconfig").display().to_string();
    let conf = |kubeconfig: &str| {
        json!({"cniVersion": "1.0.0", "name": "testnet", "type": "macvlan", "master": "eth1",
               "ipam": {"type": "hereabouts", "range": "100.64.24.0/28",
                        "kubernetes": {"kubeconfig": kubeconfig}}})
    };
    // Sandbox 1's ADD.
    let first = plugin(&cni_env("ADD", &ns.name, &pod, "sandbox-1"), &conf(&direct));
    assert_eq!(first.code, Some(0), "ADD sandbox-1: {}", first.stdout);
    let address: Value = serde_json::from_str(&first.stdout).expect("result");
    let address = address["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();

    // The path of sandbox 1's DEL: plugin -> holding proxy -> kubectl proxy.
    let (_kubectl_proxy, upstream) = kubectl_proxy().await;
    let seen = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let port = holding_proxy(upstream, seen.clone(), release.clone()).await;
    let proxied = plain_kubeconfig(&format!("{}-proxied", ns.name), port, &ns.name);
    let del_env = cni_env("DEL", &ns.name, &pod, "sandbox-1");
    let del_conf = conf(&proxied.display().to_string());
    let del = tokio::task::spawn_blocking(move || plugin(&del_env, &del_conf));
    tokio::time::timeout(Duration::from_secs(30), seen.notified())
        .await
        .expect("sandbox-1's DEL read the claim and sent its DELETE");
    // Meanwhile the runtime starts sandbox 2 of the same pod.
    let add_env = cni_env("ADD", &ns.name, &pod, "sandbox-2");
    let add_conf = conf(&direct);
    let second = tokio::task::spawn_blocking(move || plugin(&add_env, &add_conf))
        .await
        .expect("ADD sandbox-2");
    assert_eq!(second.code, Some(0), "ADD sandbox-2: {}", second.stdout);
    let result: Value = serde_json::from_str(&second.stdout).expect("result");
    assert_eq!(
        result["ips"][0]["address"], address,
        "same pod and interface, same address"
    );
    // Sandbox 1's DEL goes on.
    release.notify_one();
    let del = del.await.expect("DEL sandbox-1");
    assert_eq!(del.code, Some(0), "DEL sandbox-1: {}", del.stdout);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let left: Vec<String> = claims
        .list(&ListParams::default())
        .await
        .expect("list claims")
        .items
        .iter()
        .map(|c| {
            format!(
                "{} ({})",
                c.metadata.name.clone().unwrap_or_default(),
                c.spec.container_id
            )
        })
        .collect();
    let held = pool_allocations(&kit.client, &ns.name, "100.64.24.0-28").await;
    let ip: IpAddr = address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("ip");
    let podref = format!("{}/{}", ns.name, pod.0);
    assert!(
        held.get(&ip) == Some(&podref),
        "invariants 3 and 5: sandbox-2 of {podref} runs with {address}, yet after sandbox-1's late DEL \
         the claims are {left:?} and the pool holds {held:?}"
    );
}

// ===========================================================================
// Invariant 7: the fence rests on "the renew deadline is shorter than the
// lease duration", checked on the flags (src/bin/hereabouts-controller.rs,
// lines 128-141), but standbys judge expiry by the Lease record's
// leaseDurationSeconds, which is the flag truncated to whole seconds
// (src/controller/leader.rs `spec`, line 254: `as_secs()`). With
// `--lease-duration 1900ms --renew-deadline 1800ms` (accepted) the record
// says 1 s: a standby takes over 1 s after the last renewal it saw, while
// the paused leader still counts itself leader for 1.8 s after its last
// renewal was sent (split brain for up to 0.8 s, with every write the
// Lease check alone fences: claim answers, collector deletions,
// reservation removals).
// ===========================================================================

#[tokio::test]
async fn the_lease_record_never_expires_before_the_holders_renew_deadline() {
    let (kit, ns) = setup("rv2-lease").await;
    let mut replica = replica(
        &ns,
        "a",
        &[
            "--lease-duration",
            "1900ms",
            "--renew-deadline",
            "1800ms",
            "--retry-period",
            "100ms",
        ],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    if !replica.process.running() {
        // Refusing sub-second precision at start is a fix too.
        return;
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let seconds = eventually("the Lease written", 30, || async {
        leases
            .get_opt("hereabouts-controller")
            .await
            .ok()??
            .spec?
            .lease_duration_seconds
    })
    .await
    .expect("lease");
    let renew_deadline = Duration::from_millis(1800);
    assert!(
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0)) > renew_deadline,
        "invariant 7: the Lease says leaseDurationSeconds {seconds}, so a standby takes over \
         {seconds} s after the last renewal it saw, but the holder acts as leader for \
         {renew_deadline:?} after its last renewal"
    );
}

// ===========================================================================
// Coverage (passes; the suspicion was wrong): an allocation suspect is
// released by exact container ID (gc.rs `Suspect::Allocation`, pools.rs
// `ReleaseBy::Exact`), so unlike a claim suspect it survives being
// re-pointed during a long pass: whereabouts allocations of pods that were
// gone when the pass began, whose pods come back and ADD through
// hereabouts meanwhile (same pod and interface, new container), keep
// their addresses.
// ===========================================================================

#[tokio::test]
async fn the_collector_never_releases_an_allocation_re_adopted_during_its_pass() {
    let (kit, ns) = setup("rv2-gcalloc").await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let leaks = 250u32;
    let count = 20u32;
    for (name, cidr, entries, prefix) in [
        ("198.51.100.0-24", "198.51.100.0/24", leaks, "gone"),
        ("203.0.113.0-27", "203.0.113.0/27", count, "w"),
    ] {
        let mut pool = IPPool::new(
            name,
            hereabouts_api::IPPoolSpec {
                range: cidr.into(),
                allocations: (1..=entries)
                    .map(|o| {
                        (
                            o.to_string(),
                            IPAllocation {
                                id: format!("old-{prefix}-{o}"),
                                podref: format!("{}/{prefix}-{o}", ns.name),
                                ifname: "net1".into(),
                            },
                        )
                    })
                    .collect(),
            },
        );
        pool.metadata.namespace = Some(ns.name.clone());
        pools
            .create(&PostParams::default(), &pool)
            .await
            .expect("whereabouts pool");
    }
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "3s"],
    );
    replica.wait_ready().await.expect("controller ready");
    eventually("the collector's reclaiming pass under way", 60, || async {
        let left = pool_allocations(&kit.client, &ns.name, "198.51.100.0-24").await;
        (left.len() < leaks as usize).then_some(())
    })
    .await
    .expect("reclaiming");
    // The pods come back (w-1 .. w-20) and ADD through hereabouts.
    let back = pods(&kit.client, &ns.name, "w", count as usize + 1).await;
    for pod in back.iter().skip(1) {
        create_claim(
            &kit.client,
            &ns.name,
            &claim(
                &ns.name,
                &pod.0,
                pod,
                "net1",
                "w",
                vec![range("203.0.113.0/27")],
            ),
        )
        .await;
    }
    let mut answered = BTreeMap::new();
    for pod in back.iter().skip(1) {
        answered.insert(
            pod.0.clone(),
            ready(&kit.client, &ns.name, &pod.0, 30).await,
        );
    }
    eventually("every leak reclaimed", 120, || async {
        pool_allocations(&kit.client, &ns.name, "198.51.100.0-24")
            .await
            .is_empty()
            .then_some(())
    })
    .await
    .expect("leaks reclaimed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = pool_allocations(&kit.client, &ns.name, "203.0.113.0-27").await;
    // Those answered their whereabouts address were re-adopted before the
    // pass reached them (the others were rightly released first).
    let readopted = answered
        .iter()
        .filter(|(name, addresses)| {
            let offset = name.trim_start_matches("w-");
            addresses[0] == format!("203.0.113.{offset}/27")
        })
        .count();
    assert!(
        readopted > 0,
        "no allocation was re-adopted before its turn: {answered:?}"
    );
    let mut lost = Vec::new();
    for (name, addresses) in &answered {
        let ip: IpAddr = addresses[0]
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("ip");
        if held.get(&ip) != Some(&format!("{}/{name}", ns.name)) {
            lost.push(format!("{name} {ip}"));
        }
    }
    assert!(
        lost.is_empty(),
        "invariant 5: addresses released under pods that came back during the pass: {lost:?}; pool {held:?}"
    );
}

// ===========================================================================
// Invariants 5 and 1 with `--gc-grace 0s` (allowed: "0-7 days"): the
// collector acts on the pass that first sees a suspect (gc.rs `pass`,
// lines 189-205: due when `now - first_seen >= grace`), so "observed
// twice across the grace period" becomes "seen once". A reservation is
// written before its pool write (pools.rs `commit`); a pass that runs in
// between sees it unbacked and deletes it at once, with the version it
// still has, and the allocation is then committed without the
// reservation that protects it from overlapping ranges.
// ===========================================================================

#[tokio::test]
async fn a_zero_gc_grace_still_needs_two_observations() {
    storm_keeps_every_reservation("rv2-grace0", "0s").await;
}

/// 200 claims at once on a /24 under a collector running every second
/// with `grace`; every committed allocation must keep its reservation.
async fn storm_keeps_every_reservation(prefix: &str, grace: &str) {
    let (kit, ns) = setup(prefix).await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", grace],
    );
    replica.wait_ready().await.expect("controller ready");
    let count = 200usize;
    let made = pods(&kit.client, &ns.name, "g", count + 1).await;
    futures::future::join_all(made.iter().skip(1).map(|pod| {
        let client = kit.client.clone();
        let ns = ns.name.clone();
        async move {
            create_claim(
                &client,
                &ns,
                &claim(&ns, &pod.0, pod, "net1", "a", vec![range("100.64.30.0/24")]),
            )
            .await;
        }
    }))
    .await;
    for pod in made.iter().skip(1) {
        ready(&kit.client, &ns.name, &pod.0, 60).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = pool_allocations(&kit.client, &ns.name, "100.64.30.0-24").await;
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let reserved: std::collections::BTreeSet<String> = reservations
        .list(&ListParams::default())
        .await
        .expect("list reservations")
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    let unprotected: Vec<IpAddr> = held
        .keys()
        .filter(|ip| !reserved.contains(&ip.to_string()))
        .copied()
        .collect();
    // What that means: an overlapping range of the same network hands a
    // live pod's address to another pod.
    let duplicate = match unprotected.first() {
        Some(ip) => {
            let mut wants = claim(
                &ns.name,
                "intruder",
                &made[0],
                "net1",
                "a",
                vec![range("100.64.30.0/25")],
            );
            wants.spec.static_ips = vec![ip.to_string()];
            create_claim(&kit.client, &ns.name, &wants).await;
            Some((ip, outcome(&kit.client, &ns.name, "intruder", 30).await))
        }
        None => None,
    };
    assert!(
        unprotected.is_empty(),
        "invariant 1/5: {} of {} committed allocations lost their reservation to a collector \
         that acted on one sighting ({unprotected:?}); an overlapping /25 asked for the first: {duplicate:?}",
        unprotected.len(),
        held.len()
    );
}

// ===========================================================================
// Invariant 1 under a slow API server, whatever the grace period: a
// reservation is unbacked from its creation until its batch's pool write
// lands (pools.rs `commit`, reservations first, lines 969-1100), and the
// collector deletes a reservation it has seen unbacked, unchanged, twice
// `--gc-grace` apart (gc.rs `suspects`, lines 297-304, and `reclaim`,
// lines 395-410) without asking whether a commit of its own replica is
// relying on it (the pool book knows: `PoolBook::reserved_in_flight`).
// When one pool write takes longer than the grace period (a brownout, a
// loaded API server: the storm above lost 3 of 200 reservations with a
// 1 s grace on this shared machine), the batch commits allocations whose
// reservations the collector has just deleted, and an overlapping range
// hands those addresses out again. Here pool writes (PUT of an IPPool)
// are held 2.5 s by a proxy between the controller and the API server
// (kubectl proxy), with a 1 s grace.
// ===========================================================================

/// A plain-HTTP proxy in front of `upstream` that holds every IPPool PUT
/// (a pool write) for `delay`.
async fn slow_pool_writes(upstream: u16, delay: Duration) -> u16 {
    forwarder(
        upstream,
        move |_, line, chunk| {
            let pool_write =
                line.starts_with("PUT ") && line.contains("/ippools/") && !line.contains("/status");
            Box::pin(async move {
                if pool_write {
                    tokio::time::sleep(delay).await;
                }
                chunk
            })
        },
        |_, _| Down::Pass,
    )
    .await
}

#[tokio::test]
async fn the_collector_never_deletes_a_reservation_its_leaders_commit_relies_on() {
    let (kit, ns) = setup("rv2-slowpool").await;
    let (_kubectl, upstream) = kubectl_proxy().await;
    let port = slow_pool_writes(upstream, Duration::from_millis(2500)).await;
    let kubeconfig = plain_kubeconfig(&format!("{}-slow", ns.name), port, &ns.name);
    let replica = hereabouts_kit::Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
        &kubeconfig,
    )
    .expect("controller");
    replica.wait_ready().await.expect("controller ready");
    let made = pods(&kit.client, &ns.name, "s", 12).await;
    // The pool exists (its first write is a create, not held).
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            &made[1].0,
            &made[1],
            "net1",
            "a",
            vec![range("100.64.31.0/24")],
        ),
    )
    .await;
    ready(&kit.client, &ns.name, &made[1].0, 60).await;
    // Ten more at once: one batch, one held pool write.
    futures::future::join_all(made.iter().skip(2).map(|pod| {
        let client = kit.client.clone();
        let ns = ns.name.clone();
        async move {
            create_claim(
                &client,
                &ns,
                &claim(&ns, &pod.0, pod, "net1", "a", vec![range("100.64.31.0/24")]),
            )
            .await;
        }
    }))
    .await;
    for pod in made.iter().skip(2) {
        ready(&kit.client, &ns.name, &pod.0, 60).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = pool_allocations(&kit.client, &ns.name, "100.64.31.0-24").await;
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let reserved: std::collections::BTreeSet<String> = reservations
        .list(&ListParams::default())
        .await
        .expect("list reservations")
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    let unprotected: Vec<IpAddr> = held
        .keys()
        .filter(|ip| !reserved.contains(&ip.to_string()))
        .copied()
        .collect();
    let duplicate = match unprotected.first() {
        Some(ip) => {
            let mut wants = claim(
                &ns.name,
                "intruder",
                &made[0],
                "net1",
                "a",
                vec![range("100.64.31.0/25")],
            );
            wants.spec.static_ips = vec![ip.to_string()];
            create_claim(&kit.client, &ns.name, &wants).await;
            Some((ip, outcome(&kit.client, &ns.name, "intruder", 30).await))
        }
        None => None,
    };
    assert!(
        unprotected.is_empty(),
        "invariant 1: with pool writes taking 2.5 s and a 1 s grace, {} of {} committed \
         allocations lost their reservation to the collector ({unprotected:?}); an overlapping \
         /25 asked for the first: {duplicate:?}",
        unprotected.len(),
        held.len()
    );
}

// ===========================================================================
// Invariant 4: refusals echo the offending value whole, and for a range
// that is not a CIDR twice over (src/ipam/cidr.rs `CidrError::
// InvalidAddress`, line 121: `{value:?} ... {address:?}`), into the
// claim's status (src/controller/claims.rs `answer` -> `publish`). A node
// credential's claim whose spec.ranges[0].range is 600 KB of garbage fits
// in etcd, its refusal does not: the status write fails, the claim is
// retried forever and never refused, and the plugin's ADD can only time
// out (code 11) instead of failing with code 7 naming the field.
// ===========================================================================

#[tokio::test]
async fn a_huge_malformed_range_is_refused_naming_the_field() {
    let (kit, ns) = setup("rv2-hugerange").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "p", 1).await.remove(0);
    let garbage = format!("{}/24", "x".repeat(600_000));
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "p-huge",
            &pod,
            "net1",
            "blue",
            vec![range(&garbage)],
        ),
    )
    .await;
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let refused = eventually("claim p-huge refused", 30, || async {
        refusal(&api.get("p-huge").await.ok()?)
    })
    .await;
    assert!(
        matches!(&refused, Ok((reason, message)) if reason == "InvalidRange" && message.contains("spec.ranges[0]")),
        "invariant 4: a claim whose spec.ranges[0].range is 600 KB of garbage must be refused \
         InvalidRange naming spec.ranges[0].range; got {:?}",
        refused.map(|(r, m)| (r, m.len()))
    );
}

// ===========================================================================
// Invariant 5 during a watch outage: the collector judges "its pod is
// gone" from the pod cache alone (gc.rs `suspects`, lines 213-243) and
// deletes the claim without asking the API server (`reclaim`, lines
// 369-394), while the claim reconciler, on a cache miss, does ask
// (claims.rs `authorize`). A pod watch that stalls (a half-open
// connection, an API server that stops sending events to one watch)
// while the claim watch works makes every new pod's claim look orphaned:
// it is answered, then deleted one grace period later, and its address
// released while the pod runs. Here the pod watch's events are held by a
// proxy between the controller and the API server (kubectl proxy).
// ===========================================================================

#[tokio::test]
async fn a_stalled_pod_watch_never_gets_a_live_pods_claim_collected() {
    let (kit, ns) = setup("rv2-podstall").await;
    let (_kubectl, upstream) = kubectl_proxy().await;
    let stall = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = stalling_pod_watch(upstream, stall.clone()).await;
    let kubeconfig = plain_kubeconfig(&format!("{}-stall", ns.name), port, &ns.name);
    let replica = hereabouts_kit::Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "2s"],
        &kubeconfig,
    )
    .expect("controller");
    replica.wait_ready().await.expect("controller ready");
    stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let pod = pods(&kit.client, &ns.name, "q", 1).await.remove(0);
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "q-net1",
            &pod,
            "net1",
            "a",
            vec![range("100.64.32.0/28")],
        ),
    )
    .await;
    let got = ready(&kit.client, &ns.name, "q-net1", 60).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let kept = claims
        .get_opt("q-net1")
        .await
        .expect("read claim")
        .is_some();
    let held = pool_allocations(&kit.client, &ns.name, "100.64.32.0-28").await;
    assert!(
        kept && !held.is_empty(),
        "invariant 5: pod {} runs with {got:?}; with its watch stalled the collector left its \
         claim: {kept}, and the pool holds {held:?}",
        pod.0
    );
}

// ===========================================================================
// Invariant 1 and issue 12's defect 2 rule ("a scoped controller collects
// only what it can see"), for reservations: a controller scoped with
// --watch-namespace sees only its namespaces' NADs, yet judges every
// reservation of the shared pool namespace (gc.rs `suspects`, lines
// 297-304, not scoped). For a whereabouts node-slice pool
// `<network_name>-<node>-<slice>` whose NAD lives in a namespace it does
// not watch, it cannot tell the network name (`possible_network_names`,
// gc.rs lines 469-488, needs the NAD) and deletes the live pod's
// reservation `<network_name>-<ip>`: whereabouts' own protection of that
// address against overlapping ranges is gone.
// ===========================================================================

#[tokio::test]
async fn a_scoped_collector_keeps_reservations_of_networks_it_cannot_see() {
    let (kit, ns) = setup("rv2-scopeslice").await;
    let other = kit.namespace("rv2-elsewhere").await.expect("namespace");
    let pod = pods(&kit.client, &other.name, "slice", 1).await.remove(0);
    let podref = format!("{}/{}", other.name, pod.0);
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &other.name);
    nads.create(
        &PostParams::default(),
        &nad(
            "bluenet",
            &json!({"cniVersion": "1.0.0", "name": "bluenet", "type": "macvlan", "master": "eth1",
                    "ipam": {"type": "whereabouts", "range": "100.64.33.0/24",
                             "network_name": "bluenet", "node_slice_size": "/28"}}),
        ),
    )
    .await
    .expect("NAD elsewhere");
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut pool = IPPool::new(
        "bluenet-worker-1-100.64.33.16-28",
        hereabouts_api::IPPoolSpec {
            range: "100.64.33.16/28".into(),
            allocations: BTreeMap::new(),
        },
    );
    pool.spec.allocations.insert(
        "1".into(),
        IPAllocation {
            id: "c1".into(),
            podref: podref.clone(),
            ifname: "net1".into(),
        },
    );
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("node-slice pool");
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    reservations
        .create(
            &PostParams::default(),
            &OverlappingRangeIPReservation::new(
                "bluenet-100.64.33.17",
                OverlappingRangeIPReservationSpec {
                    containerid: "c1".into(),
                    podref: podref.clone(),
                    ifname: "net1".into(),
                },
            ),
        )
        .await
        .expect("its reservation");
    // Scoped to the pools' namespace (the kit's default --watch-namespace).
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        reservations
            .get_opt("bluenet-100.64.33.17")
            .await
            .expect("read")
            .is_some(),
        "invariant 1: a collector scoped to {} deleted the reservation of {podref}'s live \
         whereabouts address 100.64.33.17 (node-slice pool of a NAD in a namespace it does not watch)",
        ns.name
    );
}
