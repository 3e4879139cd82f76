//! review15: adversarial tests of 3b243a7 (the agent's answer-by is a
//! lower bound of the API server's clock; a 409 takeover carries the
//! retry's own answer-by) and 8f666b4 (a release skips only the ranges a
//! live claim of the same sandbox's interface asks for, found by the name
//! stem in the cache and by a consistent list of the pod's claims on the
//! CRD's selectable field `spec.pod.name`, or the claim's own name when
//! the CRD has no such field).
//!
//! Found (both tests fail on 8f666b4/ff7f45b):
//! - invariant 2, liveness: the controller's abandoned-delete carries the
//!   claim's UID only, so a retry that took the claim over (same UID, new
//!   spec and answer-by) before that DELETE landed loses its claim and
//!   fails (`a_takeover_that_outruns_the_abandoned_delete_is_answered`);
//! - invariants 1 and 2: with an IPClaim CRD that has no selectable
//!   `spec.pod.name` (CRDs not upgraded with the controller), the
//!   successor read falls back to the deleted claim's own name, and the
//!   review14 bug (a new leader whose watch lost the successor frees its
//!   live address) is back
//!   (`an_older_crd_and_a_lost_watch_event_keep_the_live_address`).
//!
//! Fixed: the abandoned-delete carries the version read as well (a
//! takeover makes it fail, and the next reconcile answers the retry); on
//! a CRD without the field the successor read lists all the namespace's
//! claims.
//!
//! Everything runs against the real API server, the real controller and
//! the real node agent and plugin binary. The tests share one lock: one of
//! them takes the IPClaim CRD's selectable field away for a while, and
//! every other test's setup applies the current CRDs again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hereabouts_api::{IPClaim, claim_name};
use hereabouts_kit::eventually;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};

mod common;
use common::agent::{Agent, late_claim, pod, retry_taking_over};
use common::replicas;
use common::{ip_of, pool_allocations, ready_addresses, shaping};

/// One test at a time (see the module's comment).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Invariant 2 (liveness: a request that can be answered gets its
/// address; CNI's contract that a retried ADD succeeds once the cluster
/// can answer it), idea 1 of the brief: a takeover racing the
/// controller's abandoned-delete.
///
/// An ADD of sandbox-1 gave up and its claim's create landed later (its
/// `hereabouts.dev/answer-by` is before its creation time). The controller
/// reads it, finds it [`abandoned`] and sends its DELETE, which the API
/// server is slow to apply (held here by the forwarder). Meanwhile the
/// pod's next sandbox ADDs on the same network through the node agent: its
/// create meets the late claim (409) and `add_planned` takes it over with
/// a `replace` of spec and answer-by (3b243a7): the claim is now the
/// retry's, same UID, a new generation that is not abandoned. Then the
/// controller's DELETE lands.
///
/// Why the code lets it happen: `claims::answer` deletes an abandoned
/// claim with `shared::delete_exactly(&api, name, claim.uid(), None)`:
/// the UID only, no resourceVersion. The takeover keeps the UID, so the
/// DELETE decided on the abandoned version removes the retry's claim, and
/// the retry (waiting on it) fails with "deleted while waiting". With the
/// claim's resourceVersion as a precondition the DELETE would meet 409 and
/// the reconciler would answer the new generation.
///
/// The user's check: the retry's ADD succeeds and the pool holds its
/// address for the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_that_outruns_the_abandoned_delete_is_answered() {
    let _serial = SERIAL.lock().await;
    let cidr = "203.0.113.96/28";
    let (kit, ns) = common::setup("r15-race").await;
    let client = kit.client.clone();
    let kubeconfig = ns.kubeconfig().expect("kubeconfig");
    let socket = common::agent::socket_of(&ns);
    let network = "r15race";
    let name = claim_name("p", "net1", network);
    // The controller's DELETE of the claim is held until `go`.
    let (seen, go) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let delete_path = format!(
        "/apis/hereabouts.dev/v1alpha1/namespaces/{}/ipclaims/{name}",
        ns.name
    );
    let (controller, _proxy) = {
        let (seen, go) = (seen.clone(), go.clone());
        replicas::shaped_replica(
            &ns,
            "a",
            move |_, line, chunk| {
                let path = line.split(' ').nth(1).unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default();
                if !(line.starts_with("DELETE ") && path == delete_path) {
                    return shaping::at_once(chunk);
                }
                seen.store(true, Ordering::SeqCst);
                let go = go.clone();
                Box::pin(async move {
                    for _ in 0..600 {
                        if go.load(Ordering::SeqCst) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    chunk
                })
            },
            |_, _| shaping::Down::Pass,
        )
        .await
    };
    let uid = pod(&client, &ns.name, "p").await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let late = late_claim(&claims, &ns.name, &uid, network, cidr).await;
    eventually("the controller deletes the abandoned claim", 30, || async {
        seen.load(Ordering::SeqCst).then_some(())
    })
    .await
    .expect("an abandoned-delete sent");
    // The retry: the pod's next sandbox, through the node agent.
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let add = retry_taking_over(&claims, &ns.name, &uid, network, cidr, &kubeconfig, &socket).await;
    // The slow DELETE lands now.
    go.store(true, Ordering::SeqCst);
    let add = add.await.expect("ADD");
    let now = claims.get_opt(&name).await.expect("read");
    assert!(
        add.success,
        "the retry (which took over claim {name}, UID {:?}) gets an address: {} (claim now: {:?})",
        late.uid(),
        add.stdout,
        now.as_ref().map(|c| (c.uid(), c.spec.container_id.clone()))
    );
    let now = now.expect("the retry's claim stays");
    let address = ready_addresses(&now).expect("answered")[0].clone();
    let held = pool_allocations(&client, &ns.name, "203.0.113.96-28").await;
    assert_eq!(
        held.get(&ip_of(&address)),
        Some(&format!("{}/p", ns.name)),
        "the pool holds {address} for the pod: {held:?}"
    );
    drop(controller);
}

/// The IPClaim CRD as an installation whose CRDs were not upgraded with
/// the controller has it: without `selectableFields` (Helm, for one,
/// installs a chart's `crds/` once and never upgrades them).
async fn an_older_ipclaim_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "ipclaims.hereabouts.dev";
    let mut crd = crds.get(name).await.expect("the IPClaim CRD");
    for version in &mut crd.spec.versions {
        version.selectable_fields = None;
    }
    crd.metadata.managed_fields = None;
    crds.replace(name, &PostParams::default(), &crd)
        .await
        .expect("the older CRD");
}

/// Invariants 1 and 2, idea 2 of the brief (the fallback of
/// `claims::successors` when the list by `spec.pod.name` answers 400).
///
/// The review14 scenario `a_new_leader_whose_watch_lost_a_successor_...`
/// on a cluster whose IPClaim CRD predates the selectable field (the
/// controller upgraded, the CRDs not: `helm upgrade` never touches a
/// chart's `crds/`). Interface net1 of one sandbox is re-plugged from
/// `blue` to `green`, two NADs of one range (one pool, one entry per pod
/// interface): `a` releases `blue` and answers `green` with the same
/// address. The standby `b`'s claim watch lost every event while `green`
/// was made; `a` dies, `b` leads and releases `blue` once more.
///
/// Why the code lets it happen: `cached_successors` finds nothing (the
/// watch lost `green`), so `successors` lists the pod's claims with the
/// field selector `spec.pod.name=p`; the API server answers 400 for a CRD
/// without that selectable field, and the fallback reads only the deleted
/// claim's own name (`api.get_opt(&gone.name)`: gone). No successor, so
/// `release` takes the pool entry (same pod, interface and container ID)
/// that `green` holds. That is exactly the bug 8f666b4 fixed, still there
/// on such a cluster. A fallback that lists the namespace's claims (no
/// selector) and filters them here is as consistent and needs no CRD.
///
/// The user's checks: the live claim's address stays in the pool for its
/// pod; the next pod on the range is given another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_crd_and_a_lost_watch_event_keep_the_live_address() {
    let _serial = SERIAL.lock().await;
    let (cidr, pool) = ("198.51.100.224/30", "198.51.100.224-30");
    let quiet = Arc::new(AtomicBool::new(false));
    let (client, ns, a, b, _proxy) =
        replicas::two_replicas("r15-oldcrd", Some(quiet.clone())).await;
    an_older_ipclaim_crd(&client).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    // The list a release reads is refused, as on such a cluster.
    let listed = eventually("the list by spec.pod.name is refused", 30, || async {
        claims
            .list(&ListParams::default().fields("spec.pod.name=p-0"))
            .await
            .err()
    })
    .await
    .expect("refused");
    assert!(
        matches!(&listed, kube::Error::Api(e) if e.code == 400),
        "{listed}"
    );
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let live = replicas::replugged_across_a_leader_change(
        &client,
        &ns,
        (a, &b),
        &pods[0],
        cidr,
        Some(&quiet),
    )
    .await;
    // Put the current CRD back for whatever runs next.
    hereabouts_kit::install_crds(&client)
        .await
        .expect("the current CRDs");
    replicas::kept(&client, &ns.name, &podref, pool, live, cidr).await;
}
