//! A third adversarial review of issue 12 (at 3dca9a7): the fixes of the
//! second review (durable holds, the collector's fresh confirmation,
//! IPAMClaims). Each test is a sequence of API-server-visible events
//! against the real local API server (fixtures of tests/common); a
//! failing test is a finding, its assertion names what breaks. At
//! 3dca9a7 all three fail:
//!
//! 1. a pod back within its hold gets no address while an overlapping
//!    range holds the held one (ledger `decide_one`'s hold path ignores
//!    foreign marks; the hold is reloaded after every failed attempt);
//! 2. a live pod that references a deleted IPAMClaim loses the address to
//!    another pod when the controller's pod cache lags (`ipamclaims::run`
//!    and the collector's confirmation read references from the cache);
//! 3. CNI CHECK fails for an IPAMClaim-bound attachment (the pool entry
//!    names the IPAMClaim, CHECK wants the pod).

use hereabouts_api::{ClaimRange, IPClaim, IPPool, OverlappingRangeIPReservation};
use hereabouts_kit::eventually;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

mod common;
use common::shaping::{cni_env, kubectl_proxy, plain_kubeconfig, plugin, stalling_pod_watch};
use common::{pods, range, ready_addresses, replica, setup};

fn claim(ns: &str, pod: &(String, String), ifname: &str, ranges: Vec<ClaimRange>) -> IPClaim {
    IPClaim::new(
        &format!("{}-{ifname}", pod.0),
        common::claim_spec(ns, "test-network", ifname, pod, ranges),
    )
}

/// The addresses of claim `name` once answered Ready; `None` after
/// `seconds`.
async fn ready_within(client: &Client, ns: &str, name: &str, seconds: u64) -> Option<Vec<String>> {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    eventually(&format!("claim {name} ready"), seconds, || async {
        ready_addresses(&api.get_opt(name).await.ok()??)
    })
    .await
    .ok()
}

/// Whether pool `name` (all shards) has a hold entry for `podref`.
async fn holds_for(client: &Client, ns: &str, name: &str, podref: &str) -> bool {
    let api: Api<IPPool> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("list pools")
        .items
        .iter()
        .filter(|p| p.name_any() == name || p.name_any().starts_with(&format!("{name}-s")))
        .flat_map(|p| p.spec.allocations.values())
        .any(|a| a.podref == podref && hereabouts_core::ledger::held_until(&a.id).is_some())
}

/// Durable holds vs overlapping ranges. A claim's deletion holds its
/// address for the pod name, but removes the address's
/// OverlappingRangeIPReservation at once, so an overlapping range of the
/// same network hands the held address out (the hold promise is kept only
/// inside one pool). When the pod name comes back within the hold, the
/// ledger gives it the held address without looking at the foreign mark
/// its reservation failure left (`decide_one`'s hold path), the pool is
/// reloaded with the hold entry still in it (it was never written), and
/// every attempt of the batch picks the same address again until the
/// `learning` budget runs out: the claim (and every request batched with
/// it) fails until the hold expires, although the range has free
/// addresses.
#[tokio::test]
async fn a_pod_back_within_its_hold_is_served_when_an_overlapping_range_took_the_address() {
    let (kit, ns) = setup("rv3-hold").await;
    let replica = replica(&ns, "a", &["--hold-released", "300s"]);
    replica.wait_ready().await.expect("controller ready");
    let narrow = vec![range("203.0.113.0/29")];
    let wide = vec![range("203.0.113.0/28")];
    let first = pods(&kit.client, &ns.name, "web", 1).await.remove(0);
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    claims
        .create(
            &PostParams::default(),
            &claim(&ns.name, &first, "net1", narrow.clone()),
        )
        .await
        .expect("create claim");
    let name = format!("{}-net1", first.0);
    let held = ready_within(&kit.client, &ns.name, &name, 30)
        .await
        .expect("the first claim is answered")
        .remove(0);

    // The pod goes: its claim (DEL), then the pod object. The address is
    // held for web-0 in the /29 pool; its reservation is removed.
    hereabouts_kit::delete_and_wait(&claims, &name, 20)
        .await
        .expect("DEL");
    let pods_api: Api<Pod> = Api::namespaced(kit.client.clone(), &ns.name);
    pods_api
        .delete(
            &first.0,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("delete pod");
    let podref = format!("{}/{}", ns.name, first.0);
    eventually("the hold written into the /29 pool", 20, || async {
        holds_for(&kit.client, &ns.name, "203.0.113.0-29", &podref)
            .await
            .then_some(())
    })
    .await
    .expect("a hold entry in the pool");
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    eventually("the held address's reservation removed", 20, || async {
        let list = reservations.list(&ListParams::default()).await.ok()?;
        (!list.items.iter().any(|r| r.spec.podref == podref)).then_some(())
    })
    .await
    .expect("reservation removed");

    // A stranger on the overlapping /28 of the same network.
    let other = pods(&kit.client, &ns.name, "other", 1).await.remove(0);
    claims
        .create(
            &PostParams::default(),
            &claim(&ns.name, &other, "net1", wide.clone()),
        )
        .await
        .expect("create claim");
    let stranger = ready_within(&kit.client, &ns.name, &format!("{}-net1", other.0), 30)
        .await
        .expect("the stranger is answered")
        .remove(0);
    let ip = |a: &str| a.split('/').next().unwrap_or_default().to_owned();
    eprintln!(
        "held {held} for {podref}; the overlapping /28 gave {stranger} to {}",
        other.0
    );

    // web-0 comes back (new UID, same name) well within the 300 s hold.
    let again = eventually("pod recreated", 20, || async {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": first.0},
            "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "pause"}]}
        }))
        .ok()?;
        let pod = pods_api.create(&PostParams::default(), &pod).await.ok()?;
        Some((first.0.clone(), pod.uid()?))
    })
    .await
    .expect("recreated");
    claims
        .create(
            &PostParams::default(),
            &claim(&ns.name, &again, "net1", narrow),
        )
        .await
        .expect("create claim");
    let started = std::time::Instant::now();
    let back = ready_within(&kit.client, &ns.name, &name, 30).await;
    let status = claims
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.status)
        .map(|s| format!("{:?}", s.conditions))
        .unwrap_or_default();
    let back = back.unwrap_or_else(|| {
        panic!(
            "invariant: a pod is served while its range has free addresses (5 of 6 are free): \
             web-0, back within its hold, got no answer in {:?} (the held {held} was given to \
             the overlapping range's {} as {stranger}); its claim's conditions: {status}",
            started.elapsed(),
            other.0
        )
    });
    assert_ne!(
        ip(&back[0]),
        ip(&stranger),
        "invariant 1: {} given to two live attachments",
        back[0]
    );
    drop(replica);
}

// ===========================================================================
// IPAMClaims: "an IPAMClaim's address ... no other pod can be given it
// while the claim, or a pod that references it, exists" (README). Whether a
// pod references a deleted IPAMClaim is read only from the pod cache: by
// `ipamclaims::run` when the Delete event comes (no confirmation at all),
// and by the collector's `suspects`, whose fresh confirmation
// (`Collector::confirmed`, the IPAMClaim arm) asks the API server only
// whether the IPAMClaim exists, never whether a pod references it. The
// collector's own doc says a cache can lag (a stalled watch) "so nothing
// is released on their word alone".
// ===========================================================================

/// KubeVirt's interface name for a VM's pod network.
const VM_IFACE: &str = "pod16367aacb67";

#[tokio::test]
async fn a_live_pod_referencing_a_deleted_ipamclaim_keeps_its_address_when_the_pod_watch_stalls() {
    use hereabouts_api::NetworkAttachmentDefinitionSpec;
    use hereabouts_api::{IPAMClaim, IPAMClaimSpec, NetworkAttachmentDefinition};
    let (kit, ns) = setup("rv3-ipc").await;
    let (_kubectl, upstream) = kubectl_proxy().await;
    let stall = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = stalling_pod_watch(upstream, stall.clone()).await;
    let kubeconfig = plain_kubeconfig(&format!("{}-stall", ns.name), port, &ns.name);
    let replica = hereabouts_kit::Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[
            "--gc-schedule",
            "* * * * * *",
            "--gc-grace",
            "2s",
            "--hold-released",
            "0s",
        ],
        &kubeconfig,
    )
    .expect("controller");
    replica.wait_ready().await.expect("controller ready");
    let cidr = "100.64.5.0/28";
    let config = json!({
        "cniVersion": "1.0.0", "name": "tenant", "type": "macvlan", "master": "eth1",
        "allowPersistentIPs": true, "ipam": {"type": "hereabouts", "range": cidr},
    });
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &NetworkAttachmentDefinition::new(
            "tenant",
            NetworkAttachmentDefinitionSpec {
                config: config.to_string(),
            },
        ),
    )
    .await
    .expect("create NAD");
    let ipamclaims: Api<IPAMClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    ipamclaims
        .create(
            &PostParams::default(),
            &IPAMClaim::new(
                "vm5.tenant",
                IPAMClaimSpec {
                    network: "tenant".into(),
                    interface: String::new(),
                },
            ),
        )
        .await
        .expect("create IPAMClaim");
    // Let the controller's NAD and IPAMClaim caches see them.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // From now on the controller's pod watch is quiet (review 2's fault).
    stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let pods_api: Api<Pod> = Api::namespaced(kit.client.clone(), &ns.name);
    let selection = json!([{"name": "tenant", "namespace": ns.name, "interface": VM_IFACE,
                            "ipam-claim-reference": "vm5.tenant"}])
    .to_string();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "virt-launcher-vm5-aaaaa",
                     "annotations": {hereabouts_api::NETWORKS_ANNOTATION: selection}},
        "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "pause"}]}
    }))
    .expect("pod");
    let pod = pods_api
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let launcher = (pod.name_any(), pod.uid().expect("uid"));
    let mut vm_claim = claim(&ns.name, &launcher, VM_IFACE, vec![range(cidr)]);
    vm_claim.spec.network.name = "tenant".into();
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    claims
        .create(&PostParams::default(), &vm_claim)
        .await
        .expect("create claim");
    let vm_name = vm_claim.name_any();
    let got = ready_within(&kit.client, &ns.name, &vm_name, 30)
        .await
        .expect("the launcher pod's claim is answered")
        .remove(0);
    let ip = got.split('/').next().unwrap_or_default().to_owned();
    let owner = format!("{}/ipamclaim:vm5.tenant", ns.name);
    let owned = |pool: std::collections::BTreeMap<std::net::IpAddr, String>| {
        pool.iter()
            .find(|(a, _)| a.to_string() == ip)
            .map(|(_, p)| p.clone())
    };
    assert_eq!(
        owned(common::pool_allocations(&kit.client, &ns.name, "100.64.5.0-28").await),
        Some(owner.clone()),
        "premise: {ip} is allocated in the IPAMClaim's name"
    );

    // The VM's IPAMClaim is deleted while its launcher pod still runs
    // (not even Terminating).
    ipamclaims
        .delete("vm5.tenant", &DeleteParams::default())
        .await
        .expect("delete IPAMClaim");
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let kept = owned(common::pool_allocations(&kit.client, &ns.name, "100.64.5.0-28").await);
    // Someone else on the network now.
    let other = pods(&kit.client, &ns.name, "other", 1).await.remove(0);
    let mut other_claim = claim(&ns.name, &other, "net1", vec![range(cidr)]);
    other_claim.spec.network.name = "tenant".into();
    claims
        .create(&PostParams::default(), &other_claim)
        .await
        .expect("create claim");
    let stranger = ready_within(&kit.client, &ns.name, &other_claim.name_any(), 30)
        .await
        .map(|mut a| a.remove(0));
    let alive = pods_api
        .get_opt(&launcher.0)
        .await
        .expect("read pod")
        .is_some_and(|p| p.uid().as_deref() == Some(launcher.1.as_str()));
    assert!(
        alive
            && kept.as_deref() == Some(owner.as_str())
            && stranger
                .as_deref()
                .is_none_or(|s| s.split('/').next() != Some(ip.as_str())),
        "invariant 5 (and 1): pod {} (alive: {alive}) references IPAMClaim vm5.tenant and \
         runs with {got}; with its pod watch stalled the IPAMClaim's deletion left the pool \
         entry as {kept:?}, and pod {} was then given {stranger:?}",
        launcher.0,
        other.0
    );
    drop(replica);
}

// ===========================================================================
// CNI CHECK of an IPAMClaim-bound attachment (crates/node/src/cni/verbs.rs
// `check`): the pool entry of a claim-owned address names the IPAMClaim
// (`ns/ipamclaim:name`, interface = the IPAMClaim's `spec.interface`), but
// CHECK accepts only an entry naming the pod and CNI_IFNAME, so CHECK
// fails for every healthy VM pod (and the address is still its own).
// ===========================================================================

/// A plain-HTTP proxy in front of `upstream` that holds the first DELETE

#[tokio::test]
async fn check_passes_for_a_pod_whose_address_is_its_ipamclaims() {
    use hereabouts_api::{IPAMClaim, IPAMClaimSpec};
    let (kit, ns) = setup("rv3-check").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    let config = json!({
        "cniVersion": "1.0.0", "name": "tenant", "type": "macvlan", "master": "eth1",
        "allowPersistentIPs": true,
        "ipam": {"type": "hereabouts", "range": "100.64.6.0/28",
                 "kubernetes": {"kubeconfig": kubeconfig}},
    });
    let nads: Api<hereabouts_api::NetworkAttachmentDefinition> =
        Api::namespaced(kit.client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &hereabouts_api::NetworkAttachmentDefinition::new(
            "tenant",
            hereabouts_api::NetworkAttachmentDefinitionSpec {
                config: config.to_string(),
            },
        ),
    )
    .await
    .expect("create NAD");
    let ipamclaims: Api<IPAMClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    ipamclaims
        .create(
            &PostParams::default(),
            &IPAMClaim::new(
                "vm6.tenant",
                IPAMClaimSpec {
                    network: "tenant".into(),
                    interface: String::new(),
                },
            ),
        )
        .await
        .expect("create IPAMClaim");
    let selection = json!([{"name": "tenant", "namespace": ns.name, "interface": "net1",
                            "ipam-claim-reference": "vm6.tenant"}])
    .to_string();
    let pods_api: Api<Pod> = Api::namespaced(kit.client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "virt-launcher-vm6-aaaaa",
                     "annotations": {hereabouts_api::NETWORKS_ANNOTATION: selection}},
        "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "pause"}]}
    }))
    .expect("pod");
    let pod = pods_api
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let launcher = (pod.name_any(), pod.uid().expect("uid"));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let add = plugin(&cni_env("ADD", &ns.name, &launcher, "sandbox-1"), &config);
    assert_eq!(add.code, Some(0), "ADD: {}", add.stdout);
    let result: Value = serde_json::from_str(&add.stdout).expect("result");
    let address = result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();
    let ip = address.split('/').next().unwrap_or_default().to_owned();
    let owner = format!("{}/ipamclaim:vm6.tenant", ns.name);
    let entry = common::pool_allocations(&kit.client, &ns.name, "100.64.6.0-28")
        .await
        .into_iter()
        .find(|(a, _)| a.to_string() == ip)
        .map(|(_, p)| p);
    assert_eq!(
        entry,
        Some(owner),
        "premise: {ip} is allocated in the IPAMClaim's name"
    );
    let mut check_conf = config.clone();
    check_conf["prevResult"] = result;
    let check = plugin(
        &cni_env("CHECK", &ns.name, &launcher, "sandbox-1"),
        &check_conf,
    );
    assert_eq!(
        check.code,
        Some(0),
        "CHECK of a healthy attachment whose address is its IPAMClaim's (still allocated to \
         that claim, the claim and pod alive) fails: {}",
        check.stdout
    );
    drop(replica);
}
