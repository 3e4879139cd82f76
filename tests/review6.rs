//! review6 (issue 14): failing tests for the per-shard status the
//! controller writes on IPPools. Against the real API server, with a real
//! controller replica, like tests/pool_status.rs.

use std::time::Duration;

use hereabouts_api::{ClaimRange, IPClaim, IPPool, IPPoolStatus};
use hereabouts_kit::eventually;
use kube::api::{Api, DeleteParams, PostParams};

mod common;
use common::{pods, ready_addresses, replica, setup};

const RANGE: &str = "203.0.113.0/24";
const POOL: &str = "203.0.113.0-24";

/// A claim of the 11 addresses .10 to .20.
fn claim(ns: &str, pod: &(String, String)) -> IPClaim {
    IPClaim::new(
        &format!("{}-net1", pod.0),
        common::claim_spec(
            ns,
            "review6-network",
            "net1",
            pod,
            vec![ClaimRange {
                range: RANGE.to_owned(),
                range_start: Some("203.0.113.10".to_owned()),
                range_end: Some("203.0.113.20".to_owned()),
                ..Default::default()
            }],
        ),
    )
}

async fn status(pools: &Api<IPPool>, name: &str) -> Option<IPPoolStatus> {
    pools.get(name).await.ok()?.status
}

/// An address cooling down after a release is no more free than a held
/// one: a dynamic request passes it over (README, "Holds and cooldowns").
/// FREE must not count it; today write_status counts holds only
/// (crates/controller/src/pools.rs, `self.ledger.holds()`), so a cooling
/// address shows as free.
#[tokio::test]
async fn a_cooling_address_is_not_counted_free() {
    let (kit, ns) = setup("review6-cool").await;
    let replica = replica(
        &ns,
        "a",
        &["--hold-released", "0s", "--release-cooldown", "600s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let pods = pods(&kit.client, &ns.name, "c", 3).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    for p in &pods {
        claims
            .create(&PostParams::default(), &claim(&ns.name, p))
            .await
            .expect("create claim");
    }
    let first = format!("{}-net1", pods[0].0);
    eventually("three claims answered", 60, || async {
        let all = claims.list(&Default::default()).await.ok()?.items;
        (all.iter().filter(|c| ready_addresses(c).is_some()).count() == 3).then_some(())
    })
    .await
    .expect("claims ready");
    claims
        .delete(&first, &DeleteParams::default())
        .await
        .expect("delete claim");
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    // The released address is written as a cooling-until marker.
    eventually("the release written as a cooldown", 60, || async {
        let pool = pools.get(POOL).await.ok()?;
        let cooling = pool
            .spec
            .allocations
            .values()
            .filter(|a| a.id.starts_with("hereabouts.dev/cooling-until="))
            .count();
        (cooling == 1).then_some(())
    })
    .await
    .expect("cooling marker");
    let s = eventually("status with two allocated", 60, || async {
        let s = status(&pools, POOL).await?;
        (s.allocated == 2).then_some(s)
    })
    .await
    .expect("status");
    // 11 addresses: 2 allocated, 1 cooling, 8 a new pod can get.
    assert_eq!(
        (s.size.as_str(), s.free.as_str(), s.range_free.as_str()),
        ("11", "8", "8"),
        "a cooling address counted as free: {s:?}"
    );
}

/// metav1.Condition's lastTransitionTime is when the condition last
/// changed status; write_status sets it to now on every write of shard 0
/// (crates/controller/src/pools.rs, `exhausted_condition`), so
/// Exhausted=False appears to have just transitioned after every
/// allocation.
#[tokio::test]
async fn exhausted_transition_time_stays_while_the_status_does() {
    let (kit, ns) = setup("review6-ltt").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let pods = pods(&kit.client, &ns.name, "t", 2).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    claims
        .create(&PostParams::default(), &claim(&ns.name, &pods[0]))
        .await
        .expect("create claim");
    let before = eventually("status after one claim", 60, || async {
        let s = status(&pools, POOL).await?;
        (s.allocated == 1).then_some(s)
    })
    .await
    .expect("status");
    let exhausted = |s: &IPPoolStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Exhausted")
            .cloned()
            .expect("an Exhausted condition")
    };
    let c0 = exhausted(&before);
    // lastTransitionTime has second precision.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    claims
        .create(&PostParams::default(), &claim(&ns.name, &pods[1]))
        .await
        .expect("create claim");
    let after = eventually("status after two claims", 60, || async {
        let s = status(&pools, POOL).await?;
        (s.allocated == 2).then_some(s)
    })
    .await
    .expect("status");
    let c1 = exhausted(&after);
    assert_eq!(c0.status, c1.status, "{before:?} / {after:?}");
    assert_eq!(
        c0.last_transition_time, c1.last_transition_time,
        "Exhausted stayed {} but its lastTransitionTime moved",
        c1.status
    );
}

/// A fresh actor (a new leader, or any reload: `Ledger::load` clears the
/// ranges it knows) whose first command is a release knows no configured
/// range, so write_status falls back to the whole CIDR
/// (crates/controller/src/pools.rs, `or_else(|| IpRange::from_cidr(..))`):
/// the status of a range of 11 addresses then says 254.
#[tokio::test]
async fn a_new_leaders_first_release_keeps_the_ranges_size() {
    let (kit, ns) = setup("review6-size").await;
    let mut first = replica(&ns, "a", &["--hold-released", "0s"]);
    first.wait_ready().await.expect("controller ready");
    let pods = pods(&kit.client, &ns.name, "s", 3).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    for p in &pods {
        claims
            .create(&PostParams::default(), &claim(&ns.name, p))
            .await
            .expect("create claim");
    }
    let s = eventually("status with three allocated", 60, || async {
        let s = status(&pools, POOL).await?;
        (s.allocated == 3).then_some(s)
    })
    .await
    .expect("status");
    assert_eq!(s.range_size, "11", "{s:?}");
    first.process.terminate();
    let second = replica(&ns, "b", &["--hold-released", "0s"]);
    second.wait_ready().await.expect("second controller ready");
    claims
        .delete(&format!("{}-net1", pods[0].0), &DeleteParams::default())
        .await
        .expect("delete claim");
    let s = eventually("status with two allocated", 90, || async {
        let s = status(&pools, POOL).await?;
        (s.allocated == 2).then_some(s)
    })
    .await
    .expect("status");
    assert_eq!(
        (s.size.as_str(), s.range_size.as_str(), s.free.as_str()),
        ("11", "11", "8"),
        "a release by a fresh actor: {s:?}"
    );
}
