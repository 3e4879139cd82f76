//! review11: adversarial tests of issue 16's work (the node agent's verbs
//! on its shared watch, DEL by UID + resourceVersion, the leaner
//! controller's release of deleted claims).
//!
//! It found one leak (invariant 2): an address committed for a claim that
//! is deleted before its answer lands stayed in the pool while the pod
//! lived. The fix (claims.rs: `may_hold`, and a grant whose answer finds
//! its claim gone handed to the releaser) is held here from three sides:
//! the answer outrun by the deletion, the answer failing until the claim
//! is deleted, and the deletion's release running before the commit.
//!
//! Everything runs against the real API server, the real controller and
//! (where it matters) the real node agent and plugin binary; where timing
//! must be shaped, a plain-HTTP forwarder sits between the controller and
//! the API server (`common::shaping`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hereabouts_api::IPClaim;
use hereabouts_kit::{Controller, eventually};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod common;
use common::agent::{Agent, env, plugin, pod, setup};
use common::{ip_of, pool_allocations, range, range_nad, ready_addresses, shaping};

fn conf(name: &str, range: &str, kubeconfig: &std::path::Path, timeout_s: u64) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth1",
           "ipam": {"type": "hereabouts", "range": range, "request_timeout": timeout_s,
                    "kubernetes": {"kubeconfig": kubeconfig}}})
}

fn address_of(run: &common::agent::Run) -> Option<String> {
    run.stdout["ips"][0]["address"].as_str().map(str::to_owned)
}

/// The one claim of pod `pod` in `ns`, if any.
async fn claim_of(claims: &Api<IPClaim>, pod: &str) -> Option<IPClaim> {
    claims
        .list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find(|c| c.spec.pod.name == pod)
}

/// Invariant 2 ("a request that got an address always has it in the pool")
/// and 3 (ADD after DEL of one sandbox, as Multus' dynamic networks do).
///
/// The sandbox's claim is held by a finalizer someone else put on it (a
/// backup or policy tool; `kubectl delete --cascade=foreground` does the
/// same for a moment): the sandbox's DEL leaves it Terminating. The same
/// sandbox's next ADD meets it (409) with the same spec: were its answer
/// taken, the runtime would hold an address the controller releases once
/// the finalizer goes. HELD: setting the deletion timestamp bumps the
/// claim's generation, so its answer is stale and the ADD waits and fails
/// (code 11) rather than answer; either way the pool keeps whatever the
/// runtime was given.
#[tokio::test]
async fn an_add_that_meets_its_terminating_claim_gets_an_address_the_pool_keeps() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r11-term").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = conf("r11term", "203.0.113.0/28", &kubeconfig, 8);
    let run = |command: &str| {
        plugin(
            &env(command, &ns.name, "p", &uid, "sandbox-1", &socket),
            &stdin,
        )
    };
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);

    let first = run("ADD");
    assert!(first.success, "first ADD: {}", first.raw);
    let claim = claim_of(&claims, "p").await.expect("the claim");
    claims
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["review11.example/hold"]}})),
        )
        .await
        .expect("finalizer");
    let del = run("DEL");
    assert!(del.success, "DEL: {}", del.raw);
    let terminating = claim_of(&claims, "p").await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());

    let again = run("ADD");
    // Let the finalizer go: the claim is deleted for good.
    claims
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
    eventually("the terminating claim gone", 20, || async {
        claims
            .get_opt(&claim.name_any())
            .await
            .ok()
            .and_then(|c| c.is_none_or(|c| c.uid() != claim.uid()).then_some(()))
    })
    .await
    .expect("gone");
    if !again.success {
        // Refusing (try again later) is a correct answer.
        return;
    }
    let given = address_of(&again).expect("an address");
    // Give the controller time to act on the deletion.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pool = pool_allocations(&client, &ns.name, "203.0.113.0-28").await;
    let holder = pool.get(&ip_of(&given)).cloned();
    let claim_now = claim_of(&claims, "p").await;
    assert_eq!(
        holder.as_deref(),
        Some(format!("{}/p", ns.name).as_str()),
        "the repeated ADD of sandbox-1 succeeded with {given}, taken from its Terminating claim; \
         once that claim went, the pool holds {given} for {holder:?} (pool: {pool:?}) and the \
         pod's claim is {:?}",
        claim_now
            .as_ref()
            .map(|c| (c.spec.container_id.clone(), ready_addresses(c)))
    );
}

/// A forwarder to `upstream` that holds every IPClaim status write while
/// `hold` is set (counting them in `held`): the controller has committed
/// the address to the pool and is about to publish it.
async fn holding_status_writes(
    upstream: u16,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
) -> u16 {
    shaping::forwarder(
        upstream,
        move |_, line, chunk| {
            let status_write = (line.starts_with("PUT ") || line.starts_with("PATCH "))
                && line.contains("/ipclaims/")
                && line.contains("/status");
            if status_write && hold.load(Ordering::SeqCst) {
                held.fetch_add(1, Ordering::SeqCst);
                let hold = hold.clone();
                Box::pin(async move {
                    while hold.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    chunk
                })
            } else {
                shaping::at_once(chunk)
            }
        },
        |_, _| shaping::Down::Pass,
    )
    .await
}

/// Invariant 2: an address committed for a claim that is deleted before
/// its answer is published (the runtime's DEL after an ADD it gave up on,
/// during a storm: the controller committed, the status write was slow)
/// is released: the pool keeps no address for the torn-down attachment.
///
/// `pod_recorded`: the pod carries Multus' network-status (listing nothing
/// of this network), as a pod whose other attachments succeeded does;
/// otherwise it has none, as a pod whose sandbox never came up.
async fn committed_then_deleted_before_the_answer(
    prefix: &str,
    cidr: &str,
    pool: &str,
    pod_recorded: bool,
) {
    let (kit, ns) = common::setup(prefix).await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let hold = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicUsize::new(0));
    let port = holding_status_writes(upstream, hold.clone(), held.clone()).await;
    let proxied = shaping::plain_kubeconfig(&format!("{}-held", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    if pod_recorded {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
        api.patch(
            &pods[0].0,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "k8s.v1.cni.cncf.io/network-status":
                    "[{\"name\":\"default\",\"interface\":\"eth0\",\"ips\":[\"100.64.9.9\"],\"default\":true}]"
            }}})),
        )
        .await
        .expect("network-status");
    }
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let claim = IPClaim::new(
        "p-0-net1",
        common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]),
    );
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    let podref = format!("{}/{}", ns.name, pods[0].0);
    // Committed to the pool, answer held.
    eventually(
        "the address committed and its answer on its way",
        30,
        || async {
            (held.load(Ordering::SeqCst) > 0
                && pool_allocations(&client, &ns.name, pool)
                    .await
                    .values()
                    .any(|p| *p == podref))
            .then_some(())
        },
    )
    .await
    .expect("committed");
    claims
        .delete("p-0-net1", &DeleteParams::default())
        .await
        .expect("the runtime's DEL");
    // The controller sees the deletion; then its answer goes out (404).
    tokio::time::sleep(Duration::from_secs(2)).await;
    hold.store(false, Ordering::SeqCst);
    let released = eventually("the address of the deleted claim released", 20, || async {
        (!pool_allocations(&client, &ns.name, pool)
            .await
            .values()
            .any(|p| *p == podref))
        .then_some(())
    })
    .await;
    let left = pool_allocations(&client, &ns.name, pool).await;
    let claims_left = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    assert!(
        released.is_ok(),
        "20 s after its claim was deleted (GC every second, grace 1 s), the pool still holds \
         {left:?} for {podref}; claims left: {:?}",
        claims_left
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_committed_for_a_claim_deleted_before_its_answer_is_released() {
    committed_then_deleted_before_the_answer(
        "r11-unpub",
        "198.51.100.16/28",
        "198.51.100.16-28",
        false,
    )
    .await;
}

/// The same, with the pod's network-status recorded without the address
/// (the collector's rule for an allocation no claim asks for).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_committed_for_a_claim_deleted_before_its_answer_is_collected() {
    committed_then_deleted_before_the_answer(
        "r11-unpub2",
        "198.51.100.32/28",
        "198.51.100.32-28",
        true,
    )
    .await;
}

/// Invariant 2, the other order: the claim's deletion is released before
/// its grant is committed. The controller's pod cache does not know the
/// pod yet (its pod watch stalled), so it reads the pod from the API
/// server, and that read is held; meanwhile the claim is deleted, and its
/// release finds nothing to give back (and no pod it could vouch for).
/// Then the read lands: the grant is committed, its answer finds the claim
/// gone (404), and what it committed must be given back all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_committed_after_its_claims_release_is_given_back() {
    let (kit, ns) = common::setup("r11-late").await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let stall = Arc::new(AtomicBool::new(false));
    let hold = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicUsize::new(0));
    let pod_read = format!("GET /api/v1/namespaces/{}/pods/p-0 ", ns.name);
    let port = {
        let (stall, hold, held) = (stall.clone(), hold.clone(), held.clone());
        shaping::forwarder(
            upstream,
            move |_, line, chunk| {
                if line.starts_with(&pod_read) && hold.load(Ordering::SeqCst) {
                    held.fetch_add(1, Ordering::SeqCst);
                    let hold = hold.clone();
                    Box::pin(async move {
                        while hold.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        chunk
                    })
                } else {
                    shaping::at_once(chunk)
                }
            },
            move |_, line| {
                let pod_watch = line.starts_with("GET ")
                    && line.contains("/pods?")
                    && line.contains("watch=true");
                if pod_watch && stall.load(Ordering::SeqCst) {
                    shaping::Down::Drop
                } else {
                    shaping::Down::Pass
                }
            },
        )
        .await
    };
    let proxied = shaping::plain_kubeconfig(&format!("{}-late", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    stall.store(true, Ordering::SeqCst);
    let (cidr, pool) = ("198.51.100.48/28", "198.51.100.48-28");
    range_nad(&client, &ns.name, "blue", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let claim = IPClaim::new(
        "p-0-net1",
        common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]),
    );
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    eventually("the controller reading the pod", 30, || async {
        (held.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await
    .expect("the pod read held");
    claims
        .delete("p-0-net1", &DeleteParams::default())
        .await
        .expect("the runtime's DEL");
    // The deletion's release runs with nothing committed yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    assert!(
        !pool_allocations(&client, &ns.name, pool)
            .await
            .values()
            .any(|p| *p == podref),
        "nothing committed while the pod read is held"
    );
    hold.store(false, Ordering::SeqCst);
    // Committed once the read lands (observed or not, it must not stay).
    let released = eventually("the late grant given back", 20, || async {
        (!pool_allocations(&client, &ns.name, pool)
            .await
            .values()
            .any(|p| *p == podref))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = pool_allocations(&client, &ns.name, pool).await;
    assert!(
        released.is_ok() && !left.values().any(|p| *p == podref),
        "the pool holds {left:?} for {podref}, whose claim was deleted before its grant"
    );
}

/// Invariant 2, when the answer fails rather than waits: every status write
/// of the claim is refused (its URL rewritten to name another object than
/// its body: 400 each time), so the controller would answer on a later
/// attempt; the claim is deleted first. Its deletion gives back what was
/// committed for it, though it was never
/// answered: it acted for its own live pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_committed_whose_answer_failed_is_released_with_its_claim() {
    let (kit, ns) = common::setup("r11-failed").await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let failed = Arc::new(AtomicUsize::new(0));
    let port = {
        let failed = failed.clone();
        shaping::forwarder(
            upstream,
            move |_, line, mut chunk| {
                if line.starts_with("PUT ")
                    && line.contains("/ipclaims/")
                    && line.contains("/status")
                {
                    failed.fetch_add(1, Ordering::SeqCst);
                    // `<name>/status` becomes the name `<name>-status`,
                    // which the body's name does not match: 400.
                    let key = b"/status";
                    if let Some(at) = chunk.windows(key.len()).position(|w| w == key) {
                        chunk[at] = b'-';
                    }
                }
                shaping::at_once(chunk)
            },
            |_, _| shaping::Down::Pass,
        )
        .await
    };
    let proxied = shaping::plain_kubeconfig(&format!("{}-failed", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    let (cidr, pool) = ("198.51.100.64/28", "198.51.100.64-28");
    range_nad(&client, &ns.name, "blue", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let claim = IPClaim::new(
        "p-0-net1",
        common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]),
    );
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    eventually("committed, its answer failed", 30, || async {
        (failed.load(Ordering::SeqCst) > 0
            && pool_allocations(&client, &ns.name, pool)
                .await
                .values()
                .any(|p| *p == podref))
        .then_some(())
    })
    .await
    .expect("committed");
    let answered = claims.get("p-0-net1").await.expect("claim");
    assert!(
        ready_addresses(&answered).is_none(),
        "never answered: {:?}",
        answered.status
    );
    claims
        .delete("p-0-net1", &DeleteParams::default())
        .await
        .expect("the runtime's DEL");
    let released = eventually("the address of the deleted claim released", 20, || async {
        (!pool_allocations(&client, &ns.name, pool)
            .await
            .values()
            .any(|p| *p == podref))
        .then_some(())
    })
    .await;
    assert!(
        released.is_ok(),
        "the pool still holds {:?} for {podref}, whose claim was deleted",
        pool_allocations(&client, &ns.name, pool).await
    );
}
