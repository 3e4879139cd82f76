//! A fourth adversarial review, of issue 13's changes (at 177fd37): the
//! per-range static contract of IPClaims and the claim and NAD
//! reconcilers as `kube_runtime::Controller`s. Each test is a sequence of
//! API-server-visible events against the real local API server
//! (fixtures of tests/common; the plugin and controller are the built
//! binaries); a failing test is a finding, its assertion names what
//! breaks. At 177fd37 both fail:
//!
//! 1. a claim that arrives while the leader's Lease renewal is late (the
//!    replica still leads, `is_leader()` is false for a moment) is never
//!    answered: `claims::reconcile` returns `await_change`, and nothing
//!    reconciles it again (the old loop's 30 s rescan is gone, and no
//!    leadership transition happened);
//! 2. a static address is silently replaced by a dynamic one when the
//!    claim's `spec.ranges[].staticIP` does not reach the controller (the
//!    IPClaim CRD of the previous release, which `helm upgrade` keeps,
//!    prunes it): the plugin never checks the answer against what it
//!    asked for.

use hereabouts_api::{ClaimRange, IPClaim};
use hereabouts_kit::eventually;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

mod common;
use common::shaping::{cni_env, kubectl_proxy, plain_kubeconfig, plugin};
use common::{pods, range, ready_addresses, replica, setup};

/// The tests of this file run one at a time: one of them changes the
/// cluster-wide IPClaim CRD for its duration.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn claim(ns: &str, pod: &(String, String), ranges: Vec<ClaimRange>) -> IPClaim {
    IPClaim::new(
        &format!("{}-net1", pod.0),
        common::claim_spec(ns, "test-network", "net1", pod, ranges),
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

/// A plain-HTTP forwarder in front of `upstream` that, while `hold` is
/// set, holds every request for a Lease (the renewal) until it is
/// cleared: the API server answering the renewal late, nothing else.
async fn late_lease_renewals(
    upstream: u16,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use std::sync::atomic::Ordering;
    common::shaping::forwarder(
        upstream,
        move |_, line, chunk| {
            let hold = hold.clone();
            let lease = line.contains("/leases");
            Box::pin(async move {
                while lease && hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                chunk
            })
        },
        |_, _| common::shaping::Down::Pass,
    )
    .await
}

// ===========================================================================
// Finding 1: a claim that arrives while the Lease renewal is late is never
// answered.
//
// `Leadership::is_leader()` is false once the last successful renewal was
// sent more than --renew-deadline ago, while the `leading` flag (whose
// changes are the only thing that makes the claim Controller reconcile
// everything again, through `releaser` -> `reconcile_all`) stays true as
// long as the late renewal ends up succeeding. A claim applied in that
// window reaches `claims::reconcile`, which returns
// `Action::await_change()` (crates/controller/src/claims.rs, the
// `!ctx.leadership.is_leader()` branch), and the Controller never looks at
// it again: no event, no leadership change, no requeue. The loop before
// b40ae4f rescanned every pending claim every 30 s (`RESCAN`) and answered
// it then. The same window silently drops an answer already computed:
// `publish` returns Ok(()) when `is_leader()` is false, and the reconcile
// ends with `await_change` (addresses committed, claim unanswered).
// ===========================================================================

#[tokio::test]
async fn a_claim_applied_while_the_lease_renewal_is_late_is_answered_once_the_leader_is_fresh() {
    let _serial = SERIAL.lock().await;
    let (kit, ns) = setup("rv4-late").await;
    let (_kubectl, upstream) = kubectl_proxy().await;
    let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = late_lease_renewals(upstream, hold.clone()).await;
    let kubeconfig = plain_kubeconfig(&format!("{}-late", ns.name), port, &ns.name);
    // The kit's defaults: --lease-duration 3s --renew-deadline 2s
    // --retry-period 250ms; one replica, so nobody takes the Lease over.
    let replica = hereabouts_kit::Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &kubeconfig,
    )
    .expect("controller");
    replica.wait_ready().await.expect("controller ready");
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut pods = pods(&kit.client, &ns.name, "late", 3).await.into_iter();
    let (warm, late, after) = (
        pods.next().expect("pod"),
        pods.next().expect("pod"),
        pods.next().expect("pod"),
    );

    // Premise: the replica leads and answers.
    claims
        .create(
            &PostParams::default(),
            &claim(&ns.name, &warm, vec![range("100.64.40.0/28")]),
        )
        .await
        .expect("create claim");
    assert!(
        ready_within(&kit.client, &ns.name, &format!("{}-net1", warm.0), 30)
            .await
            .is_some(),
        "premise: the replica answers claims"
    );

    // The API server answers one renewal 4 s late (within the Lease: no
    // one else could have taken it, and the renewal succeeds). From 2 s
    // after the last renewal was sent, the replica does not act as leader.
    hold.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    claims
        .create(
            &PostParams::default(),
            &claim(&ns.name, &late, vec![range("100.64.40.0/28")]),
        )
        .await
        .expect("create claim");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    hold.store(false, std::sync::atomic::Ordering::SeqCst);
    // The late renewal completes (stamped with when it was sent, so still
    // stale) and the next one, 250 ms later, is fresh.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    // The replica leads again: a claim made now is answered.
    claims
        .create(
            &PostParams::default(),
            &claim(&ns.name, &after, vec![range("100.64.40.0/28")]),
        )
        .await
        .expect("create claim");
    let again = ready_within(&kit.client, &ns.name, &format!("{}-net1", after.0), 30).await;
    assert!(
        again.is_some(),
        "premise: the replica leads again after the late renewal"
    );
    // The one that came in the window must be answered too (the loop
    // before b40ae4f did within its 30 s rescan).
    let answered = ready_within(&kit.client, &ns.name, &format!("{}-net1", late.0), 45).await;
    assert!(
        answered.is_some(),
        "IPClaim {}-net1, applied while the leader's renewal was late, is never answered: \
         claims::reconcile returned await_change and nothing reconciles it again \
         (no leadership transition, no rescan); its ADD would wait until it times out, \
         and every repeated ADD reuses the same unanswered claim",
        late.0
    );
    drop(replica);
}

// ===========================================================================
// Finding 2: a static address is silently replaced when `staticIP` does
// not reach the controller.
//
// The plugin now sends a static address only as `spec.ranges[i].staticIP`
// (crates/node/src/cni/verbs.rs `claim_ranges`, `static_ips: Vec::new()`)
// and prints whatever addresses the answer carries (`add`, after
// `wait_for_answer`), without checking that range i's address is the one
// it asked for. Whenever the field does not reach a controller that
// honours it, the static request silently becomes a dynamic one:
// - `helm upgrade` never updates the CRDs in charts/hereabouts/crds/, so
//   the IPClaim CRD of the previous release stays, and the API server
//   prunes the unknown `staticIP` from every claim (this test);
// - during a rolling upgrade with `kubectl apply -f manifests/install.yaml`
//   the DaemonSet's new plugins run beside the previous controller, which
//   does not know the field (serde ignores it) and allocates dynamically.
// The previous contract refused nothing silently here: the flat
// `spec.staticIPs` was known to both. ARCHITECTURE.md: static addresses
// are "honoured or the ADD fails with a clear error; never silently
// replaced".
// ===========================================================================

/// The IPClaim CRD as the previous release (98da262) defined it: the
/// current definition without `spec.ranges[].staticIP`.
fn previous_ipclaim_crd() -> CustomResourceDefinition {
    let (_, crd) = hereabouts_api::definitions()
        .into_iter()
        .find(|(_, c)| c.name_any() == "ipclaims.hereabouts.dev")
        .expect("IPClaim CRD");
    let mut value = serde_json::to_value(&crd).expect("CRD as JSON");
    for version in value["spec"]["versions"].as_array_mut().expect("versions") {
        let items = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["ranges"]
            ["items"]["properties"];
        assert!(
            items
                .as_object_mut()
                .expect("range properties")
                .remove("staticIP")
                .is_some(),
            "the current CRD has spec.ranges[].staticIP"
        );
    }
    serde_json::from_value(value).expect("CRD")
}

#[tokio::test]
async fn a_static_address_is_never_silently_replaced_when_the_crd_is_the_previous_releases() {
    let _serial = SERIAL.lock().await;
    let (kit, ns) = setup("rv4-crd").await;
    let crds: Api<CustomResourceDefinition> = Api::all(kit.client.clone());
    crds.patch(
        "ipclaims.hereabouts.dev",
        &PatchParams::apply("hereabouts").force(),
        &Patch::Apply(&previous_ipclaim_crd()),
    )
    .await
    .expect("the previous release's IPClaim CRD");
    // Premise: the API server now prunes the field (give it a moment to
    // load the schema).
    let probe_pod = pods(&kit.client, &ns.name, "probe", 1).await.remove(0);
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut probe = claim(&ns.name, &probe_pod, vec![range("100.64.41.0/28")]);
    probe.spec.ranges[0].static_ip = Some("100.64.41.9".into());
    let pruned = eventually("staticIP pruned", 20, || {
        let (claims, probe) = (claims.clone(), probe.clone());
        async move {
            let created = claims.create(&PostParams::default(), &probe).await.ok()?;
            let _ = claims.delete(&probe.name_any(), &Default::default()).await;
            if created.spec.ranges[0].static_ip.is_none() {
                Some(())
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                None
            }
        }
    })
    .await;
    pruned.expect("premise: the previous CRD prunes spec.ranges[].staticIP");

    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    let mut config = json!({
        "cniVersion": "1.0.0", "name": "tenant", "type": "macvlan", "master": "eth1",
        "ipam": {"type": "hereabouts", "range": "100.64.41.0/28",
                 "kubernetes": {"kubeconfig": kubeconfig}},
    });
    config["runtimeConfig"] = json!({"ips": ["100.64.41.9/28"]});
    let pod = pods(&kit.client, &ns.name, "web", 1).await.remove(0);
    let add = plugin(&cni_env("ADD", &ns.name, &pod, "sandbox-1"), &config);
    let result: Value = serde_json::from_str(&add.stdout).unwrap_or_default();
    let address = result["ips"][0]["address"].as_str().map(str::to_owned);
    // The current CRD back (a panic above leaves it to the next setup(),
    // which applies the current CRDs).
    hereabouts_kit::install_crds(&kit.client)
        .await
        .expect("current CRDs");
    assert!(
        add.code != Some(0) || address.as_deref() == Some("100.64.41.9/28"),
        "ADD asked for 100.64.41.9/28 (runtimeConfig.ips) and succeeded with {address:?}: \
         the static address was silently replaced by a dynamic one (the claim's \
         spec.ranges[0].staticIP never reached the controller, and the plugin does not check \
         the answer against what it asked for). Output: {}",
        add.stdout
    );
    drop(replica);
}
