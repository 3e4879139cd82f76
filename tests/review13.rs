//! review13: adversarial tests of 4bc2576, a667569 and 6766863 (claim
//! names answered or released one task at a time; bounded releases; the
//! answer-by annotation and the deletion of claims created after it).
//!
//! Found (failing):
//! - invariants 1, 2, 5: a deleted claim's release frees the sandbox's
//!   (pod, interface, container) entry of a pool another, live claim of
//!   the same sandbox shares (another network on the same range): the
//!   name lock and `successor` see only the deleted claim's own name
//!   (`a_same_sandbox_claim_of_another_network_on_the_same_pool_...`,
//!   `a_refused_second_attachment_deleted_before_its_refusal_lands_...`,
//!   the second one new with `may_hold`'s unanswered branch);
//! - liveness: a node whose clock is behind the API server's by more than
//!   request_timeout + 5 s has every claim deleted as abandoned
//!   (`a_node_whose_clock_is_behind_still_gets_addresses`).
//!
//! Fixed: answers and releases exclude each other per pod interface, and a
//! release keeps an entry any live, unrefused claim of the same sandbox's
//! interface may hold (8e3340e); the agent stamps the deadline on the API
//! server's clock, and the direct path stamps none.
//!
//! Everything runs against the real API server and the real controller
//! binary; where timing must be shaped, a plain-HTTP forwarder sits between
//! the controller and the API server (`common::shaping`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hereabouts_api::{ANSWER_BY_ANNOTATION, IPClaim};
use hereabouts_kit::{Controller, eventually};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

mod common;
use common::{ip_of, pool_allocations, range, range_nad, ready_addresses, shaping};

/// The claim `name`'s Ready addresses, once answered (and of `uid`, if given).
async fn answered(claims: &Api<IPClaim>, name: &str, uid: Option<String>) -> Option<String> {
    let c = claims.get_opt(name).await.ok()??;
    if uid.is_some() && c.uid() != uid {
        return None;
    }
    ready_addresses(&c)?.into_iter().next()
}

/// Answered, or refused: settled for its current spec.
async fn settled(claims: &Api<IPClaim>, name: &str) {
    let _ = eventually("the claim settled", 30, || {
        let claims = claims.clone();
        let name = name.to_owned();
        async move {
            let c = claims.get(&name).await.ok()?;
            let status = c.status.as_ref()?;
            (status.observed_generation == c.metadata.generation
                && status.conditions.iter().any(|c| c.type_ == "Ready"))
            .then_some(())
        }
    })
    .await;
}

/// Invariants 1 and 2 (Multus' dynamic networks, one sandbox): interface
/// net1 of pod p-0 is attached to network `blue` (claim p-0-blue, address
/// a), then detached (DEL: the claim goes) and attached again as net1 to
/// network `green`, a NAD on the same range (same pool: no network_name).
/// The second claim, p-0-green, has another name: the claim-name lock of
/// a667569 did not order it against p-0-blue's release, and `successor`
/// only looked at the deleted claim's name. The pool is idempotent per (pod, interface) and
/// the container ID is the same, so p-0-green is answered with p-0-blue's
/// entry; the release of p-0-blue (its `successor` read slow here, a race
/// otherwise: both are started by adjacent watch events) then removes that
/// entry from under the live claim, and a pod on a full range is answered
/// the same address.
///
/// The user's checks: a claim answered Ready has its address in the pool;
/// no two live claims share an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_same_sandbox_claim_of_another_network_on_the_same_pool_keeps_its_address() {
    let (cidr, pool) = ("203.0.113.160/30", "203.0.113.160-30");
    let (kit, ns) = common::setup("r13-xnet").await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let slow = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    // The release's successor read: the pod's claims.
    let claim_read = ns.name.clone();
    let port = {
        let (slow, reads, read) = (slow.clone(), reads.clone(), claim_read.clone());
        shaping::forwarder(
            upstream,
            move |_, line, chunk| {
                if common::is_token_read(line, &read) {
                    // The cache stays untrusted: every release reads.
                    return Box::pin(std::future::pending());
                }
                if common::is_successor_read(line, &read, "p-0") && slow.load(Ordering::SeqCst) {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let slow = slow.clone();
                    return Box::pin(async move {
                        while slow.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        chunk
                    });
                }
                shaping::at_once(chunk)
            },
            |_, _| shaping::Down::Pass,
        )
        .await
    };
    let proxied = shaping::plain_kubeconfig(&format!("{}-xnet", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    range_nad(&client, &ns.name, "green", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    // ADD net1 on blue.
    let blue = claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                "p-0-blue",
                common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]),
            ),
        )
        .await
        .expect("claim");
    eventually("p-0-blue answered", 30, || {
        answered(&claims, "p-0-blue", blue.uid())
    })
    .await
    .expect("answered");
    // DEL net1 (blue): the claim goes; its release reads for a successor.
    slow.store(true, Ordering::SeqCst);
    claims
        .delete("p-0-blue", &DeleteParams::default())
        .await
        .expect("the DEL");
    eventually("the release reading for a successor", 20, || async {
        (reads.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await
    .expect("the successor read in flight");
    // ADD net1 on green, same sandbox.
    let green = claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                "p-0-green",
                common::claim_spec(&ns.name, "green", "net1", &pods[0], vec![range(cidr)]),
            ),
        )
        .await
        .expect("claim");
    let b = eventually("p-0-green answered", 30, || {
        answered(&claims, "p-0-green", green.uid())
    })
    .await
    .expect("answered");
    // The release of p-0-blue goes on.
    slow.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = claims.get("p-0-green").await.expect("the live claim");
    assert_eq!(
        ready_addresses(&live).and_then(|a| a.into_iter().next()),
        Some(b.clone())
    );
    let held = pool_allocations(&client, &ns.name, pool).await;
    let kept = held.get(&ip_of(&b)) == Some(&podref);
    // Two more pods on the (then) full range.
    for pod in common::pods(&client, &ns.name, "q", 2).await {
        let name = format!("{}-blue", pod.0);
        claims
            .create(
                &PostParams::default(),
                &IPClaim::new(
                    &name,
                    common::claim_spec(&ns.name, "blue", "net1", &pod, vec![range(cidr)]),
                ),
            )
            .await
            .expect("claim");
        settled(&claims, &name).await;
    }
    let mut by_address: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for c in claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
    {
        for a in ready_addresses(&c).unwrap_or_default() {
            by_address.entry(a).or_default().push(c.name_any());
        }
    }
    let shared: Vec<_> = by_address.iter().filter(|(_, c)| c.len() > 1).collect();
    assert!(
        kept && shared.is_empty(),
        "the live claim p-0-green (answered {b}) {} in the pool after p-0-blue's release \
         ({held:?}); live claims sharing an address: {shared:?} (all: {by_address:?})",
        if kept { "is" } else { "is NOT" }
    );
}

/// Liveness (a pod that can never get an address): the answer-by stamp is
/// the node's clock plus the ADD's bound (request_timeout 30 s + 5 s); the
/// controller compares it with the API server's creationTimestamp. A node
/// whose clock is 60 s behind the API server's (NTP not yet synced after a
/// boot, a paused VM) stamps every claim 25 s "in the past": every claim it
/// files is deleted unanswered, every retry too, for as long as the skew
/// lasts. The claim here is what the plugin on such a node files (the
/// test cannot set the plugin's clock back; the stamp is computed as
/// `add()` computes it, from a clock 60 s behind).
///
/// Fixed: the agent stamps on the API server's clock (it reads the `Date`
/// of the server's answers, and the creation time of the claims it files,
/// and carries them on its monotonic clock), and the direct path stamps
/// nothing. The stamp below is what the agent's own `ClaimWatch` computes,
/// having read the server's clock once.
///
/// The user's check: the pod's (repeated) ADD gets an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_clock_is_behind_still_gets_addresses() {
    let cidr = "203.0.113.176/29";
    let (kit, ns) = common::setup("r13-skew").await;
    let client = kit.client.clone();
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let mut outcomes = Vec::new();
    // The first ADD, and the runtime's retry (a new sandbox, a new claim).
    for attempt in 0..2 {
        // The agent's reading of the server's clock (its `Date`), carried
        // on the node's monotonic clock: the node's own clock, 60 s behind
        // or not, plays no part.
        let view = hereabouts_node::cni::watch::ClaimWatch::default();
        view.clock_sample(
            k8s_openapi::jiff::Timestamp::now(),
            std::time::Instant::now(),
        );
        let answer_by = view
            .server_clock_at(std::time::Instant::now() + Duration::from_secs(35))
            .expect("the agent knows the server's clock");
        let mut spec = common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]);
        spec.container_id = format!("{}-{attempt}", spec.container_id);
        let mut claim = IPClaim::new("p-0-net1", spec);
        claim.metadata.annotations = Some(std::collections::BTreeMap::from([(
            ANSWER_BY_ANNOTATION.to_owned(),
            format!("{answer_by:.3}"),
        )]));
        let made = claims
            .create(&PostParams::default(), &claim)
            .await
            .expect("claim");
        // The ADD waits request_timeout (30 s); 20 s is plenty here.
        let got = eventually("the claim answered", 20, || {
            answered(&claims, "p-0-net1", made.uid())
        })
        .await;
        let exists = claims
            .get_opt("p-0-net1")
            .await
            .expect("read")
            .is_some_and(|c| c.uid() == made.uid());
        outcomes.push((attempt, got.ok(), exists));
        // The ADD gave up; its DEL deletes the claim (if still there).
        let _ = claims.delete("p-0-net1", &DeleteParams::default()).await;
        eventually("the claim gone", 20, || async {
            claims
                .get_opt("p-0-net1")
                .await
                .ok()
                .and_then(|c| c.is_none().then_some(()))
        })
        .await
        .expect("gone");
    }
    assert!(
        outcomes.iter().all(|(_, got, _)| got.is_some()),
        "an ADD from a node whose clock is 60 s behind never gets an address: \
         (attempt, address, claim still there) = {outcomes:?}"
    );
}

/// Invariant 2 (4bc2576's "other order", reopened by a667569): the
/// controller commits an address for a claim and its status write is slow;
/// meanwhile the pod is deleted and so is its claim (the runtime gave up).
/// The deletion's release waits for the claim name, which the answer holds
/// (the claim-name lock, now `Interfaces`), so it is in flight when the
/// answer meets the 404 and hands the claim over "as granted": the releaser finds the UID in flight
/// (`Entry::Occupied`), sets `again`, and drops the handed-over entry (the
/// one with `answered = true`). Both runs of the release then read the
/// deletion's entry (never answered) with no pod in the cache:
/// `may_hold` says it held nothing. The address stays with no claim and no
/// pod, until the collector's grace period (60 s by default) and schedule.
///
/// The user's check: 20 s after the pod and its claim are gone, the pool no
/// longer holds an address for them (what review11 asks of the same leak
/// when the pod lives).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_committed_for_a_deleted_pods_claim_deleted_before_its_answer_is_released() {
    let (cidr, pool) = ("203.0.113.192/28", "203.0.113.192-28");
    let (kit, ns) = common::setup("r13-gone").await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let hold = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicUsize::new(0));
    let port = {
        let (hold, held) = (hold.clone(), held.clone());
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
    };
    let proxied = shaping::plain_kubeconfig(&format!("{}-gone", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                "p-0-net1",
                common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]),
            ),
        )
        .await
        .expect("claim");
    eventually("committed, its answer on its way", 30, || async {
        (held.load(Ordering::SeqCst) > 0
            && pool_allocations(&client, &ns.name, pool)
                .await
                .values()
                .any(|p| *p == podref))
        .then_some(())
    })
    .await
    .expect("committed");
    // The pod goes, and its claim.
    let pod_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
    pod_api
        .delete(
            &pods[0].0,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("pod deleted");
    claims
        .delete("p-0-net1", &DeleteParams::default())
        .await
        .expect("the DEL");
    eventually("the pod gone", 20, || async {
        pod_api
            .get_opt(&pods[0].0)
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await
    .expect("pod gone");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The answer lands: 404.
    hold.store(false, Ordering::SeqCst);
    let released = eventually("the address given back", 20, || async {
        (!pool_allocations(&client, &ns.name, pool)
            .await
            .values()
            .any(|p| *p == podref))
        .then_some(())
    })
    .await;
    let left = pool_allocations(&client, &ns.name, pool).await;
    assert!(
        released.is_ok(),
        "20 s after pod {podref} and its claim were deleted (the claim's grant answered 404), \
         the pool still holds {left:?}"
    );
}

/// Invariants 5 and 1 (4bc2576's `may_hold`): pod p-0 has net1 on network
/// `blue` (claim p-0-blue, answered a). A second attachment named net1 on
/// network `green` (a NAD on the same range: same pool) is filed for the
/// same sandbox (claim p-0-green); the controller refuses it
/// (InterfaceClaimed), but that refusal is slow to land (its status write
/// held here) and the claim is deleted first (the runtime's DEL after its
/// ADD failed). The deleted claim is neither answered nor refused as the
/// cache saw it, and acts for its own pod: `may_hold` says it may hold what
/// the sandbox holds, and the release frees (pod, net1, container) in the
/// shared pool: p-0-blue's address, while p-0-blue and its pod live.
///
/// The user's checks: the live claim p-0-blue keeps its address in the
/// pool; no two live claims share an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_second_attachment_deleted_before_its_refusal_lands_frees_nothing() {
    let (cidr, pool) = ("203.0.113.208/30", "203.0.113.208-30");
    let (kit, ns) = common::setup("r13-refd").await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let hold = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let port = {
        let (hold, held) = (hold.clone(), held.clone());
        shaping::forwarder(
            upstream,
            move |_, line, chunk| {
                let status_write = (line.starts_with("PUT ") || line.starts_with("PATCH "))
                    && line.contains("/ipclaims/p-0-green/status");
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
    };
    let proxied = shaping::plain_kubeconfig(&format!("{}-refd", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    range_nad(&client, &ns.name, "green", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let blue = claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                "p-0-blue",
                common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]),
            ),
        )
        .await
        .expect("claim");
    let a = eventually("p-0-blue answered", 30, || {
        answered(&claims, "p-0-blue", blue.uid())
    })
    .await
    .expect("answered");
    hold.store(true, Ordering::SeqCst);
    claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                "p-0-green",
                common::claim_spec(&ns.name, "green", "net1", &pods[0], vec![range(cidr)]),
            ),
        )
        .await
        .expect("claim");
    eventually("p-0-green's answer on its way", 30, || async {
        (held.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await
    .expect("held");
    claims
        .delete("p-0-green", &DeleteParams::default())
        .await
        .expect("the DEL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    hold.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let live = claims.get("p-0-blue").await.expect("the live claim");
    assert_eq!(
        ready_addresses(&live).and_then(|x| x.into_iter().next()),
        Some(a.clone())
    );
    let held_now = pool_allocations(&client, &ns.name, pool).await;
    let kept = held_now.get(&ip_of(&a)) == Some(&podref);
    for pod in common::pods(&client, &ns.name, "q", 2).await {
        let name = format!("{}-blue", pod.0);
        claims
            .create(
                &PostParams::default(),
                &IPClaim::new(
                    &name,
                    common::claim_spec(&ns.name, "blue", "net1", &pod, vec![range(cidr)]),
                ),
            )
            .await
            .expect("claim");
        settled(&claims, &name).await;
    }
    let mut by_address: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for c in claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
    {
        for x in ready_addresses(&c).unwrap_or_default() {
            by_address.entry(x).or_default().push(c.name_any());
        }
    }
    let shared: Vec<_> = by_address.iter().filter(|(_, c)| c.len() > 1).collect();
    assert!(
        kept && shared.is_empty(),
        "the live claim p-0-blue (answered {a}) {} in the pool after p-0-green's deletion \
         ({held_now:?}); live claims sharing an address: {shared:?} (all: {by_address:?})",
        if kept { "is" } else { "is NOT" }
    );
}

/// Invariant 5 (6766863): a claim answered before its answer-by, whose
/// spec is replaced after that time (a repeated ADD from a new sandbox of
/// the same pod reuses the claim: 409, then replace, keeping the first
/// ADD's annotation), is reconciled again (a new generation) and must be
/// answered, not deleted as "created after its ADD gave up"; so too after
/// a leader change (`reconcile_all`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answered_claim_changed_after_its_answer_by_is_answered_again_not_deleted() {
    let cidr = "203.0.113.224/29";
    let (kit, ns) = common::setup("r13-late").await;
    let client = kit.client.clone();
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let answer_by = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(3))
        .expect("time");
    let mut claim = IPClaim::new(
        "p-0-net1",
        common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]),
    );
    claim.metadata.annotations = Some(std::collections::BTreeMap::from([(
        ANSWER_BY_ANNOTATION.to_owned(),
        format!("{answer_by:.3}"),
    )]));
    let made = claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    let a = eventually("answered", 20, || answered(&claims, "p-0-net1", made.uid()))
        .await
        .expect("answered");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut current = claims.get("p-0-net1").await.expect("claim");
    current.spec.container_id = format!("{}-again", current.spec.container_id);
    claims
        .replace("p-0-net1", &PostParams::default(), &current)
        .await
        .expect("replace");
    let again = eventually("answered again", 20, || {
        answered(&claims, "p-0-net1", made.uid())
    })
    .await;
    // A leader change: every claim reconciled again.
    drop(controller);
    let controller = common::replica(&ns, "b", &[]);
    controller.wait_ready().await.expect("ready");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = claims.get_opt("p-0-net1").await.expect("read");
    assert!(
        again.as_ref().is_ok_and(|b| *b == a)
            && after.as_ref().is_some_and(|c| c.uid() == made.uid()
                && ready_addresses(c).and_then(|x| x.into_iter().next()) == Some(a.clone())),
        "answered {a}; after the spec change: {again:?}; after a leader change: {:?}",
        after.map(|c| (c.uid(), ready_addresses(&c)))
    );
}

/// The race of `a_same_sandbox_claim_of_another_network_...` unshaped: the
/// DEL of net1 on `blue` and the ADD of net1 on `green` back to back, as a
/// dynamic-networks controller issues them; several rounds (one pod per
/// round). The user's check: every live claim's address is in the pool.
/// A race: it failed in 1 of 3 runs here (one round in six lost its
/// address); the shaped test above is the deterministic proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn back_to_back_del_and_add_on_another_network_of_the_same_pool_keep_the_address() {
    let (cidr, pool) = ("203.0.113.240/28", "203.0.113.240-28");
    let (kit, ns) = common::setup("r13-race").await;
    let client = kit.client.clone();
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    range_nad(&client, &ns.name, "green", cidr).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let mut lost = Vec::new();
    for (i, pod) in common::pods(&client, &ns.name, "p", 6)
        .await
        .into_iter()
        .enumerate()
    {
        let podref = format!("{}/{}", ns.name, pod.0);
        let (blue, green) = (format!("p-{i}-blue"), format!("p-{i}-green"));
        let x = claims
            .create(
                &PostParams::default(),
                &IPClaim::new(
                    &blue,
                    common::claim_spec(&ns.name, "blue", "net1", &pod, vec![range(cidr)]),
                ),
            )
            .await
            .expect("claim");
        eventually("answered", 30, || answered(&claims, &blue, x.uid()))
            .await
            .expect("answered");
        claims
            .delete(&blue, &DeleteParams::default())
            .await
            .expect("DEL");
        let y = claims
            .create(
                &PostParams::default(),
                &IPClaim::new(
                    &green,
                    common::claim_spec(&ns.name, "green", "net1", &pod, vec![range(cidr)]),
                ),
            )
            .await
            .expect("claim");
        let b = eventually("answered", 30, || answered(&claims, &green, y.uid()))
            .await
            .expect("answered");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = pool_allocations(&client, &ns.name, pool).await;
        if held.get(&ip_of(&b)) != Some(&podref) {
            lost.push((green, b));
        }
    }
    assert!(
        lost.is_empty(),
        "live claims whose address left the pool: {lost:?}"
    );
}
