//! review14: adversarial tests of 8e3340e (a release skips what a live
//! claim of the same sandbox's interface holds, found by name), fcd8acb
//! (the agent stamps a claim's deadline on the API server's clock) and
//! 6766863 (the controller deletes a claim created after its deadline).
//!
//! Found, and fixed here:
//! - invariant 2: a release skipped every range when a live claim of the
//!   same sandbox's interface asked for any pool: the interface re-plugged
//!   on a network of another range left the old range's address held for
//!   a sandbox that no longer asks for it, until the collector's pass
//!   (`a_replug_on_another_range_releases_the_old_range`). A release now
//!   skips only the ranges such a claim asks for (same network name,
//!   overlapping CIDR);
//! - invariants 1 and 2: a pod whose name fills most of the 253
//!   characters has its claim names cut short, so the cache's scan for the
//!   interface's other claims (`namespace/<pod>-`) missed them, the read of
//!   the deleted claim's own name found none, and the release took the
//!   live claim's address (`a_long_named_pods_replug_on_the_same_pool_...`).
//!   The scan now reads the plugin's own name stem (`claim_name_stem`);
//! - invariants 1 and 2: a new leader whose claim watch lost events (the
//!   live claim of the sandbox never reached its cache) read only the
//!   deleted claim's own name, and released the live claim's address
//!   (`a_new_leader_whose_watch_lost_a_successor_keeps_its_address`). The
//!   read is now a consistent list of the pod's claims (the CRD's
//!   selectable field `spec.pod.name`);
//! - invariant 2, liveness: a claim whose create landed after its ADD gave
//!   up, replaced by the pod's next ADD (another sandbox, the same name),
//!   kept the old ADD's deadline, and the controller deleted it as
//!   abandoned: the next ADD failed too
//!   (`a_retry_that_takes_over_a_late_claim_is_answered`). The replace now
//!   carries the retry's own deadline.
//!
//! Everything runs against the real API server, the real controller and
//! the real node agent and plugin binary.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hereabouts_api::{IPClaim, claim_name};
use hereabouts_kit::eventually;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};

mod common;
use common::agent::{Agent, late_claim, pod, retry_taking_over, setup};
use common::replicas;
use common::{ip_of, pool_allocations, pool_holders, range, range_nad, ready_addresses};

/// Liveness (and CNI's contract that a retried ADD succeeds once the
/// cluster can answer it): an ADD gave up and its claim's create landed
/// later, after the DEL that followed found nothing; before any controller
/// read it, the pod's next sandbox ADDs on the same network. Its create
/// meets the late claim (same name) and takes it over with its own spec.
/// Until fixed, the claim kept the first ADD's deadline
/// (`hereabouts.dev/answer-by`), which its creation time is after: the
/// controller deleted the retry's claim as abandoned, and the retry failed.
///
/// The user's check: the retry gets an address, and the pool holds it for
/// the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_that_takes_over_a_late_claim_is_answered() {
    let cidr = "203.0.113.64/28";
    let (client, ns, controller, kubeconfig, socket) = setup("r14-retry").await;
    // No controller reads the late claim before the retry takes it over.
    drop(controller);
    let uid = pod(&client, &ns.name, "p").await;
    let network = "r14retry";
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let name = late_claim(&claims, &ns.name, &uid, network, cidr)
        .await
        .name_any();
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    // The retry has taken the claim over before a controller starts.
    let add = retry_taking_over(&claims, &ns.name, &uid, network, cidr, &kubeconfig, &socket).await;
    let _controller = common::replica(&ns, "b", &[]);
    let add = add.await.expect("ADD");
    let claim = claims.get_opt(&name).await.expect("read");
    assert!(
        add.success,
        "the retry gets an address: {} (claim now: {:?})",
        add.stdout,
        claim.as_ref().map(|c| (c.uid(), c.annotations().clone()))
    );
    let claim = claim.expect("the retry's claim stays");
    let address = ready_addresses(&claim).expect("answered")[0].clone();
    assert!(
        add.stdout
            .to_string()
            .contains(address.split('/').next().expect("ip")),
        "the ADD printed the claim's address {address}: {}",
        add.stdout
    );
    let held = pool_holders(&client, &ns.name).await;
    assert_eq!(held, vec![format!("{}/p", ns.name)], "the pool holds it");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        claims
            .get_opt(&name)
            .await
            .expect("read")
            .is_some_and(|c| c.uid() == claim.uid()),
        "the claim is kept"
    );
}

/// Invariant 2 (no address held for no one), Multus' dynamic networks:
/// interface net1 of a sandbox is re-plugged from network `blue` (range
/// A) to network `green` (range B, another pool) while the leader is
/// stalled; the standby replica takes over, and releases `blue` with
/// `green` in its cache. Until fixed, the release saw a live claim of the
/// same sandbox's interface and skipped every range: range A kept the old
/// address for the sandbox though nothing asks for it, until the
/// collector's next pass after its grace period.
///
/// The user's check: after the DEL, range A holds nothing for the pod;
/// range B holds the live claim's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replug_on_another_range_releases_the_old_range() {
    let (a_cidr, pool_a) = ("198.51.100.200/29", "198.51.100.200-29");
    let (b_cidr, pool_b) = ("203.0.113.200/29", "203.0.113.200-29");
    let (client, ns, a, b, _proxy) = replicas::two_replicas("r14-replug", None).await;
    range_nad(&client, &ns.name, "blue", a_cidr).await;
    range_nad(&client, &ns.name, "green", b_cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let (blue, _) = common::attach(&claims, &ns.name, &pods[0], "blue", a_cidr).await;
    // The leader stalls (a paused VM): the DEL and the next ADD meet the
    // standby only.
    assert!(hereabouts_kit::signal(a.process.id(), "STOP"), "stopped");
    claims
        .delete(&blue, &DeleteParams::default())
        .await
        .expect("the DEL");
    let green = claim_name(&pods[0].0, "net1", "green");
    claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                &green,
                common::claim_spec(&ns.name, "green", "net1", &pods[0], vec![range(b_cidr)]),
            ),
        )
        .await
        .expect("claim");
    common::leads(&client, &ns.name, &b).await;
    drop(a);
    let on_b = eventually("the claim answered", 30, || {
        common::ready_address(&claims, &green)
    })
    .await
    .expect("answered");
    let released = eventually("range A holds nothing for the pod", 15, || async {
        let held = pool_allocations(&client, &ns.name, pool_a).await;
        (!held.values().any(|p| *p == podref)).then_some(())
    })
    .await;
    assert!(
        released.is_ok(),
        "15 s after the DEL of {blue}, range A still holds {:?}",
        pool_allocations(&client, &ns.name, pool_a).await
    );
    let held_b = pool_allocations(&client, &ns.name, pool_b).await;
    assert_eq!(
        held_b.get(&ip_of(&on_b)),
        Some(&podref),
        "range B: {held_b:?}"
    );
}

/// Invariants 1 and 2: a pod whose name is 247 characters long (names of
/// up to 253 are valid) has its claims named with the pod's name cut to
/// 238, so none begins with `<pod>-`. Its net1 is re-plugged from `blue`
/// to `green` ([`replicas::replugged_across_a_leader_change`]). Until fixed, the new
/// leader's release of `blue` found no claim of the interface in its cache
/// (it scanned `namespace/<pod>-`), read `blue`'s own name (gone), and
/// released the entry `green` holds: the next pod was given its address.
///
/// The user's checks: the live claim's address stays in the pool for its
/// pod; no two live claims share an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_named_pods_replug_on_the_same_pool_keeps_its_address() {
    let (cidr, pool) = ("198.51.100.208/30", "198.51.100.208-30");
    let (client, ns, a, b, _proxy) = replicas::two_replicas("r14-long", None).await;
    let pods = common::pods(&client, &ns.name, &"w".repeat(245), 1).await;
    assert_eq!(pods[0].0.len(), 247);
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let live =
        replicas::replugged_across_a_leader_change(&client, &ns, (a, &b), &pods[0], cidr, None)
            .await;
    replicas::kept(&client, &ns.name, &podref, pool, live, cidr).await;
}

/// Invariants 1 and 2: as above with a short name, but the standby's claim
/// watch lost every event while `green` was made (a watch gone quiet:
/// nothing tells it so). Until fixed, the new leader's cache knew no claim
/// of the interface, it read `blue`'s own name only (gone), and released
/// the entry `green` holds.
///
/// The user's checks: the live claim's address stays in the pool for its
/// pod; no two live claims share an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_whose_watch_lost_a_successor_keeps_its_address() {
    let (cidr, pool) = ("203.0.113.216/30", "203.0.113.216-30");
    let quiet = Arc::new(AtomicBool::new(false));
    let (client, ns, a, b, _proxy) = replicas::two_replicas("r14-lost", Some(quiet.clone())).await;
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
    replicas::kept(&client, &ns.name, &podref, pool, live, cidr).await;
}
