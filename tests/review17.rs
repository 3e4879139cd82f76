//! review17: adversarial tests of 75f34bb (a release trusts the claim
//! cache once it has shown the revision of a consistent read made at the
//! start of the leadership term, instead of listing the pod's claims).
//!
//! The "term" is counted by `Leadership::changed()`, which fires only when
//! this replica's `leading` flag flips. A replica whose renewal hangs
//! (network cut that blackholes, not resets) keeps `leading == true` while
//! it acts as no leader; another replica leads meanwhile, answers a new
//! claim and hands the lease back (graceful shutdown). The first replica's
//! hung renewal then finds the lease free and takes it: `leading` never
//! flipped, so no new term began and the token of the old term still
//! "trusts" a cache that lags behind what the other leader answered.
//!
//! Fixed: taking the lease over (it was held by another, expired or
//! released) while still counting as its holder is a new term, told to
//! watchers as a step down and up (leader.rs `Round::TookOver`).
//!
//! Everything runs against the real API server and the real controller.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hereabouts_api::IPClaim;
use kube::api::{Api, DeleteParams};

use common::shaping;

/// Invariants 1, 2 and 7: replica `a` leads and answers `blue` (its cache
/// trusted: it has shown a claim past its term's token). `a`'s lease
/// renewal hangs; `b` takes over; `blue` is deleted (`b` releases it, `a`
/// keeps the release for when it leads) and `green`, the same sandbox's
/// interface on the same range, is answered by `b`, while `a`'s claim
/// watch falls behind. `b` shuts down gracefully (lease released); `a`'s
/// renewal goes through and takes the free lease without its `leading`
/// flag flipping, so the old term's token stands, and `a` releases
/// `blue` again from a cache that lacks `green`: green's address leaves
/// the pool while green is Ready with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_retaking_a_released_lease_without_a_flip_keeps_an_old_token() {
    let (cidr, pool) = ("198.51.100.160/28", "198.51.100.160-28");
    let (kit, ns) = common::setup("r17-term").await;
    let client = kit.client.clone();
    common::range_nad(&client, &ns.name, "blue", cidr).await;
    common::range_nad(&client, &ns.name, "green", cidr).await;
    let pod = common::pods(&client, &ns.name, "p", 1).await.remove(0);
    let podref = format!("{}/{}", ns.name, pod.0);

    let hang = Arc::new(AtomicBool::new(false));
    let lag = Arc::new(AtomicBool::new(false));
    let (hang_q, lag_r) = (hang.clone(), lag.clone());
    let lease_path = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases/hereabouts-controller",
        ns.name
    );
    let (a, _proxy) = common::replicas::shaped_replica(
        &ns,
        "a",
        move |_, line, chunk| {
            if line.contains(&lease_path) && hang_q.load(Ordering::SeqCst) {
                let hang = hang_q.clone();
                // A renewal that hangs (a cut that blackholes): held until
                // the cut heals, then sent on.
                return Box::pin(async move {
                    while hang.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    chunk
                });
            }
            shaping::at_once(chunk)
        },
        move |_, line| {
            let claim_watch = line.contains("/ipclaims?") && line.contains("watch=true");
            if claim_watch && lag_r.load(Ordering::SeqCst) {
                // The watch falls behind (in order, nothing lost).
                shaping::Down::Delay(Duration::from_secs(20))
            } else {
                shaping::Down::Pass
            }
        },
    )
    .await;
    common::leads(&client, &ns.name, &a).await;
    let mut b = common::replica(&ns, "b", &[]);
    b.wait_ready().await.expect("ready");

    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    // `a` answers blue: its cache has shown a claim past its term's token.
    let (blue, first) = common::attach(&claims, &ns.name, &pod, "blue", cidr).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // `a`'s renewal hangs; `b` takes over.
    hang.store(true, Ordering::SeqCst);
    common::leads(&client, &ns.name, &b).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The DEL: `b` releases blue; `a` sees the deletion and keeps it.
    claims
        .delete(&blue, &DeleteParams::default())
        .await
        .expect("the DEL");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // `a`'s claim watch falls behind; the ADD again, answered by `b`.
    lag.store(true, Ordering::SeqCst);
    let (green, address) = common::attach(&claims, &ns.name, &pod, "green", cidr).await;
    eprintln!("blue had {first}, green has {address}");
    assert_eq!(
        common::pool_allocations(&client, &ns.name, pool)
            .await
            .get(&common::ip_of(&address)),
        Some(&podref),
        "green's address is in the pool before the leader change"
    );

    // `b` shuts down gracefully (the lease handed back); `a`'s hung
    // renewal goes through and finds the lease free.
    b.process.terminate();
    hang.store(false, Ordering::SeqCst);
    common::leads(&client, &ns.name, &a).await;
    // `a` retries blue's release (every 2 s) while its watch still lags.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let held = common::pool_allocations(&client, &ns.name, pool).await;
    eprintln!("pool after a leads again: {held:?}");
    let kept = held.get(&common::ip_of(&address)) == Some(&podref);

    // Then the watch catches up, and the next pod on the range.
    lag.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let others = common::pods(&client, &ns.name, "q", 1).await;
    let (_, other) = common::attach(&claims, &ns.name, &others[0], "blue", cidr).await;
    eprintln!("the next pod got {other}");
    assert_eq!(
        common::ready_address(&claims, &green).await,
        Some(address.clone()),
        "{green} stays Ready"
    );
    assert!(
        kept,
        "invariant 2: {green} is Ready with {address}, but the pool no longer holds it for {podref}: {held:?}"
    );
    assert_ne!(
        common::ip_of(&other),
        common::ip_of(&address),
        "invariant 1: two live claims share {other}"
    );
}
