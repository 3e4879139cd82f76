//! review18: adversarial tests of the collector (gc.rs) against the claim
//! reconciler, and of e464065 (`PoolEntry::of`'s `in_place`, which
//! `doubled_offsets` trusts).
//!
//! 1. `a_collected_entry_taken_back_by_a_claim_mid_pass_stays`
//!    (invariants 1, 2, 5): the collector confirms an orphan against the
//!    API server (`confirmed`: the pod, then the namespace's claims, read
//!    once per pass into `Fresh`) and only then releases it. Nothing orders
//!    that read and the release against the claim reconciler (the
//!    collector takes no `Interfaces` lock, and `Fresh` is reused for the
//!    whole pass). A claim of the same sandbox's interface answered in
//!    between is given the very entry (`allocator::existing`: same owner,
//!    same container ID) and the collector then releases it `Exact` by
//!    that container ID: the claim stays Ready with an address the pool no
//!    longer holds, and the next pod gets it too.
//!    Here the gap is widened by a proxy that holds the collector's claim
//!    list response back (the list itself is read at once); in production
//!    it is the length of a pass (every due suspect of the namespace is
//!    confirmed against the list read for the first one).
//!
//! 2. `a_base_labelled_as_a_shard_hides_a_doubled_offset` (invariant 1):
//!    `in_place` reads the shard label alone, `base_name` reads it only
//!    with the pool label. A whereabouts base object carrying a shard
//!    label (no pool label) and the range's shard 1 both hold offset 130:
//!    both count as in place, `doubled_offsets` finds nothing, the
//!    collector releases the gone pod's entry the pool actor kept, and the
//!    actor hands 130 out again while the base still gives it to a live
//!    pod. Hand-made input (like review16's "05"/"5").
//!
//! Both tests FAILED against 4d2afd0..ff927b1 (defects found), and pass
//! since the fixes: the collector holds the claim reconciler's interface
//! lock (`Context::interfaces`) from its check to its release and reads
//! the pod's claims under it; `PoolEntry::of` reads the shard label only
//! beside the pool label, as `base_name` does. The defects were:
//! 1. gc.rs `confirmed` reads the claims (once per pass, `Fresh`) and
//!    `reclaim` releases later, with no lock shared with the claim
//!    reconciler: the answered claim's entry is released (the pool ends
//!    `{}` while the claim is Ready with 100.64.77.1/28).
//! 2. caches.rs `PoolEntry::of` takes the shard from `SHARD_LABEL` alone;
//!    `base_name` and the pool actor (`shard_of_name`, by name) read the
//!    base as shard 0: 100.64.0.130 ends held for `l` in the base and for
//!    `q` in shard 1.
//!
//! Run: `cargo test --locked --test review18 -- --test-threads=1`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hereabouts_api::{
    IPClaim, IPPool, MANAGED_BY, NetworkAttachmentDefinition, POOL_LABEL, SHARD_LABEL,
};
use hereabouts_kit::{Controller, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use common::{entry, pool, shaping};

/// A collector every second with a one-second grace, and no cooldown: a
/// released address is the next one handed out.
const GC: [&str; 6] = [
    "--gc-schedule",
    "* * * * * *",
    "--gc-grace",
    "1s",
    "--release-cooldown",
    "0s",
];

/// A pod bound to the simulated node, with Multus' `network-status` when
/// given: (name, uid).
async fn pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    status: Option<&str>,
) -> (String, String) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut object = json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "pause"}]}
    });
    if let Some(status) = status {
        object["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/network-status": status});
    }
    let object: Pod = serde_json::from_value(object).expect("pod");
    let pod = api
        .create(&PostParams::default(), &object)
        .await
        .expect("create pod");
    (name.to_owned(), pod.uid().expect("uid"))
}

/// The live entries (no hold, no cooldown) of every IPPool object in `ns`
/// for `range`: (object, key, id, podref).
async fn entries_of(
    client: &kube::Client,
    ns: &str,
    range: &str,
) -> Vec<(String, String, String, String)> {
    let api: Api<IPPool> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for p in api.list(&Default::default()).await.expect("pools").items {
        if p.spec.range != range {
            continue;
        }
        for (key, a) in &p.spec.allocations {
            if hereabouts_core::ledger::resting_until(&a.id).is_none() {
                out.push((p.name_any(), key.clone(), a.id.clone(), a.podref.clone()));
            }
        }
    }
    out
}

/// Whether `line` is the collector's read of the claims of `ns`: a plain
/// list of the namespace's claims (before the fix, `Fresh`), or the pod's
/// claims by `spec.pod.name` (since: no claim is deleted in this test, so
/// no release reads the same). A watcher's list pages with `limit=`, the
/// term's token is `limit=1`.
fn is_collector_claim_list(line: &str, ns: &str) -> bool {
    let path = format!("GET /apis/hereabouts.dev/v1alpha1/namespaces/{ns}/ipclaims");
    line.strip_prefix(&path).is_some_and(|rest| {
        rest == "? HTTP/1.1"
            || rest == " HTTP/1.1"
            || (rest.starts_with("?&fieldSelector=spec.pod.name") && !rest.contains("watch"))
    })
}

/// Invariants 1, 2 and 5. Pod `p` lives; its net1 entry in the pool is a
/// whereabouts allocation (no claim) that Multus no longer records for it
/// (its network-status lists only the default network), so the collector
/// finds it orphaned, twice, and confirms: the pod (still there), then the
/// namespace's claims (none for p's net1). That list's response is held
/// back 12 s; meanwhile the same sandbox's net1 comes back on the range
/// (its claim, same container ID) and is answered with the entry's
/// address. Then the collector, on the claims it read before, releases the
/// entry `Exact` by its container ID: the one the answered claim holds.
///
/// The user's checks: a Ready claim's address is in its pool, held by its
/// pod; and the next pod on the range gets another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collected_entry_taken_back_by_a_claim_mid_pass_stays() {
    let (cidr, pool_name) = ("100.64.77.0/28", "100.64.77.0-28");
    let (kit, ns) = common::setup("r18-gcrace").await;
    let client = kit.client.clone();
    common::range_nad(&client, &ns.name, "blue", cidr).await;
    let p = pod(
        &client,
        &ns.name,
        "p",
        Some(r#"[{"name":"default","interface":"eth0","ips":["100.64.200.9"],"default":true}]"#),
    )
    .await;
    let p_ref = format!("{}/{}", ns.name, p.0);
    let spec = common::claim_spec(&ns.name, "blue", "net1", &p, vec![common::range(cidr)]);
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    // The sandbox's net1 as whereabouts left it: offset 1, its container ID.
    pool(
        &pools,
        pool_name,
        cidr,
        &[],
        vec![("1", entry(&spec.container_id, &p_ref))],
    )
    .await;

    // The collector's claim list of the namespace: answered 12 s late.
    let held: Arc<Mutex<Option<(u64, String)>>> = Arc::default();
    let held_r = held.clone();
    let namespace = ns.name.clone();
    let (proxy, upstream) = shaping::kubectl_proxy().await;
    let port = shaping::forwarder(
        upstream,
        |_, _, chunk| shaping::at_once(chunk),
        move |conn, line| {
            let mut held = held_r.lock().expect("held");
            if held.is_none() && is_collector_claim_list(line, &namespace) {
                *held = Some((conn, line.to_owned()));
            }
            if held.as_ref().is_some_and(|(c, l)| *c == conn && l == line) {
                shaping::Down::Delay(Duration::from_secs(12))
            } else {
                shaping::Down::Pass
            }
        },
    )
    .await;
    let kubeconfig = shaping::plain_kubeconfig(&format!("{}-a", ns.name), port, &ns.name);
    let a = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &GC,
        &kubeconfig,
    )
    .expect("controller");
    a.wait_ready().await.expect("ready");
    common::leads(&client, &ns.name, &a).await;

    eventually(
        "the collector confirms the orphan (its claim list)",
        30,
        || async { held.lock().expect("held").is_some().then_some(()) },
    )
    .await
    .expect("the collector suspected p's net1 entry twice and read the claims");

    // The list is read (its response held); the same sandbox's net1 comes
    // back on the range while that response is on its way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let name = hereabouts_api::claim_name(&p.0, "net1", "blue");
    claims
        .create(&PostParams::default(), &IPClaim::new(&name, spec))
        .await
        .expect("claim");
    // Before the fix the claim was answered at once, from the entry, while
    // the list was held; since, the answer waits for the collector to let
    // go of the interface (after its release), and is made afresh.
    let address = eventually("p's claim answered", 40, || {
        common::ready_address(&claims, &name)
    })
    .await
    .expect("answered");
    let ip = common::ip_of(&address);

    // The held list has arrived; the collector acted on it. Let it settle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        common::ready_address(&claims, &name).await.as_deref(),
        Some(address.as_str()),
        "p's claim stays Ready with its address"
    );
    let held_now = common::pool_allocations(&client, &ns.name, pool_name).await;
    assert_eq!(
        held_now.get(&ip).map(String::as_str),
        Some(p_ref.as_str()),
        "invariants 2 and 5: {p_ref}'s claim {name} is Ready with {address}, but the pool \
         no longer holds it for p (the collector released it on a claim list read before \
         the claim was answered): {held_now:?}"
    );
    let q = pod(&client, &ns.name, "q", None).await;
    let (_, other) = common::attach(&claims, &ns.name, &q, "blue", cidr).await;
    assert_ne!(
        common::ip_of(&other),
        ip,
        "invariant 1: q was given {other}, which p's Ready claim {name} holds"
    );
    drop(a);
    drop(proxy);
}

/// Invariant 1. The range 100.64.0.0/24 hands out from .130 (shard 1).
/// Its base object is a whereabouts pool holding 130 for the live pod `l`,
/// labelled with a shard label "1" (no pool label); shard 1 (hereabouts'
/// labels) holds 130 for a pod that is gone. Both entries count as in
/// place (key as written, shard label == the offset's shard), so
/// `doubled_offsets` does not look; the collector releases the gone pod's
/// entry (the one the pool actor read first: shard 1, listed by label
/// before the base is fetched by name), and the actor hands 130 to the
/// next pod while the base still gives it to `l`.
///
/// The user's check: no address is held for two live pods.
#[tokio::test]
async fn a_base_labelled_as_a_shard_hides_a_doubled_offset() {
    let (kit, ns) = common::setup("r18-label").await;
    let client = kit.client.clone();
    let (cidr, base) = ("100.64.0.0/24", "100.64.0.0-24");
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &NetworkAttachmentDefinition::new(
            "wide",
            hereabouts_api::NetworkAttachmentDefinitionSpec {
                config: json!({"cniVersion": "1.0.0", "name": "wide", "type": "macvlan",
                               "master": "eth1",
                               "ipam": {"type": "hereabouts", "range": cidr,
                                        "range_start": "100.64.0.130"}})
                .to_string(),
            },
        ),
    )
    .await
    .expect("NAD");
    let l = pod(&client, &ns.name, "l", None).await;
    let l_ref = format!("{}/{}", ns.name, l.0);
    let gone_ref = format!("{}/gone", ns.name);
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    pool(
        &pools,
        base,
        cidr,
        &[(SHARD_LABEL, "1")],
        vec![("130", entry("c-live", &l_ref))],
    )
    .await;
    let shard = hereabouts_core::shard_name(base, 1);
    let label = hereabouts_api::label_value(base);
    pool(
        &pools,
        &shard,
        cidr,
        &[
            (POOL_LABEL, &label),
            (SHARD_LABEL, "1"),
            (MANAGED_BY.0, MANAGED_BY.1),
        ],
        vec![("130", entry("c-gone", &gone_ref))],
    )
    .await;
    let a = common::replica(&ns, "a", &GC);
    a.wait_ready().await.expect("ready");
    common::leads(&client, &ns.name, &a).await;
    // Many collector passes, each past the grace period.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let q = pod(&client, &ns.name, "q", None).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    // q's claim as the plugin files it for this NAD (its range_start too).
    let name = hereabouts_api::claim_name(&q.0, "net1", "wide");
    let from_130 = hereabouts_api::ClaimRange {
        range: cidr.to_owned(),
        range_start: Some("100.64.0.130".to_owned()),
        ..Default::default()
    };
    claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                &name,
                common::claim_spec(&ns.name, "wide", "net1", &q, vec![from_130]),
            ),
        )
        .await
        .expect("q's claim");
    let address = eventually("q's claim answered", 30, || {
        common::ready_address(&claims, &name)
    })
    .await
    .expect("answered");
    let now = entries_of(&client, &ns.name, cidr).await;
    let l_keeps = now
        .iter()
        .any(|(_, k, id, p)| k == "130" && id == "c-live" && *p == l_ref);
    assert!(
        l_keeps,
        "invariant 5: the live pod {l_ref} lost its entry for 100.64.0.130: {now:?}"
    );
    assert_ne!(
        common::ip_of(&address),
        common::ip_of("100.64.0.130"),
        "invariant 1: 100.64.0.130 is held for the live pod {l_ref} (base {base}) and was \
         given to q as well: {now:?}"
    );
    drop(a);
}
