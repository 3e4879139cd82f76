//! review16: adversarial tests of 9fd9240 (the controller's IPPools kept
//! as a compact index, `caches::PoolEntry`, read by the collector, the
//! IPAMClaim releaser and the NAD pruning instead of a reflector store).
//!
//! Found (both older than 9fd9240, which kept the readers' behaviour):
//! - invariants 5 and 1: two entries of a range for one address (keys
//!   "05" and "5", made by hand); the collector released the gone pod's,
//!   and the pool actor's rewrite dropped the live pod's with it. Fixed:
//!   the collector leaves an address two entries hold (`doubled_offsets`).
//! - invariant 2: a leak in a shard whose range's base object is gone was
//!   never reclaimed (`reclaim` looked the base up and gave up). Fixed: a
//!   suspect names the object that holds its entry.
//!
//! Everything runs against the real API server and the real controller:
//! pool objects are written as whereabouts (or a hereabouts shard) left
//! them, and the collector is left to run for many passes.

use std::time::{Duration, SystemTime};

use hereabouts_api::{IPPool, MANAGED_BY, POOL_LABEL, SHARD_LABEL};
use hereabouts_kit::eventually;
use kube::api::Api;

mod common;
use common::{entry, pods, pool, replica, setup};

/// A collector that runs every second with a one-second grace period.
const GC: [&str; 4] = ["--gc-schedule", "* * * * * *", "--gc-grace", "1s"];

/// Every entry of the pool object `name` that is no hold or cooldown:
/// (key, id, podref).
async fn live_entries(pools: &Api<IPPool>, name: &str) -> Vec<(String, String, String)> {
    let Some(pool) = pools.get_opt(name).await.expect("read pool") else {
        return Vec::new();
    };
    pool.spec
        .allocations
        .into_iter()
        .filter(|(_, a)| hereabouts_core::ledger::resting_until(&a.id).is_none())
        .map(|(k, a)| (k, a.id, a.podref))
        .collect()
}

/// Invariant 5 (and 1 after the cooldown): keys "05" and "5" of one
/// whereabouts pool both name offset 5. The collector's index keeps both
/// entries (`PoolEntry::of` parses each key); "05" belongs to a pod that
/// is gone, "5" to a live pod. The collector suspects only "05"'s
/// (container ID of the gone pod) and releases it `Exact{ip .5, id}`. The
/// pool actor's ledger loaded the first key read ("05") and dropped "5"
/// as a duplicate; the release matches "05" and the shard is rewritten
/// from the ledger: the live pod's entry "5" vanishes.
///
/// The user's check: the live pod's entry for .5 stays.
#[tokio::test]
async fn a_leak_under_05_keeps_the_live_entry_under_5() {
    let (kit, ns) = setup("r16-dupkey").await;
    let client = kit.client.clone();
    let live = pods(&client, &ns.name, "live", 1).await.remove(0);
    let live_ref = format!("{}/{}", ns.name, live.0);
    let gone_ref = format!("{}/gone", ns.name);
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    let name = "100.64.9.0-24";
    pool(
        &pools,
        name,
        "100.64.9.0/24",
        &[],
        vec![
            ("05", entry("c-gone", &gone_ref)),
            ("5", entry("c-live", &live_ref)),
        ],
    )
    .await;
    let controller = replica(&ns, "a", &GC);
    controller.wait_ready().await.expect("ready");
    // Many passes, each well past the grace period.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = live_entries(&pools, name).await;
    assert!(
        now.iter()
            .any(|(k, id, p)| k.trim_start_matches('0') == "5" && id == "c-live" && *p == live_ref),
        "invariant 5: the live pod {live_ref} lost its entry for 100.64.9.5 when the collector \
         released the leak under key \"05\"; the pool now holds {now:?} (all entries: {:?})",
        pools.get(name).await.expect("pool").spec.allocations
    );
}

/// Invariant 2: a leak whose pool base object (shard 0) is absent. The
/// collector finds the leak in shard 1 (`suspects` reads every cached
/// object) but `reclaim` looks the pool up by its base name in the index
/// and, not finding it, forgets the suspect without releasing: it is
/// found again each pass and never released.
///
/// How a base goes missing: `nad::prune` deletes a range's empty shards
/// one by one with their versions; the base can go while a shard's delete
/// fails (it got an entry). Here the base is simply not there.
#[tokio::test]
async fn a_leak_in_a_shard_whose_base_is_gone_is_reclaimed() {
    let (kit, ns) = setup("r16-nobase").await;
    let client = kit.client.clone();
    let live = pods(&client, &ns.name, "live", 1).await.remove(0);
    let live_ref = format!("{}/{}", ns.name, live.0);
    let gone_ref = format!("{}/gone", ns.name);
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    let base = "203.0.113.0-24";
    let shard = hereabouts_core::shard_name(base, 1);
    let label = hereabouts_api::label_value(base);
    pool(
        &pools,
        &shard,
        "203.0.113.0/24",
        &[
            (POOL_LABEL, &label),
            (SHARD_LABEL, "1"),
            (MANAGED_BY.0, MANAGED_BY.1),
        ],
        vec![
            ("200", entry("c-gone", &gone_ref)),
            ("201", entry("c-live", &live_ref)),
        ],
    )
    .await;
    let controller = replica(&ns, "a", &GC);
    controller.wait_ready().await.expect("ready");
    let reclaimed = eventually("the leak at 203.0.113.200 reclaimed", 15, || async {
        let now = live_entries(&pools, &shard).await;
        (!now.iter().any(|(_, _, p)| *p == gone_ref)).then_some(())
    })
    .await;
    let now = live_entries(&pools, &shard).await;
    assert!(
        reclaimed.is_ok(),
        "invariant 2: the leak of the gone pod {gone_ref} in {shard} (no base object {base}) \
         was never reclaimed: {now:?}"
    );
    assert!(
        now.iter()
            .any(|(_, id, p)| id == "c-live" && *p == live_ref),
        "the live entry stays: {now:?}"
    );
}

/// Defence: whereabouts-made entries whose container IDs are not 64
/// lowercase hex digits (uppercase, short), a key written "+7", a
/// cooldown that ended, and runtime-style IDs: the leaked ones are
/// reclaimed (the release carries the ID exactly as the API keeps it),
/// the live ones keep their entries and IDs exactly.
#[tokio::test]
async fn odd_ids_and_keys_are_reclaimed_and_live_ones_kept_exactly() {
    let (kit, ns) = setup("r16-odd").await;
    let client = kit.client.clone();
    let live = pods(&client, &ns.name, "live", 3).await;
    let live_ref = |i: usize| format!("{}/{}", ns.name, live[i].0);
    let gone_ref = |i: usize| format!("{}/gone-{i}", ns.name);
    let lower = "0123456789abcdef".repeat(4);
    let upper = lower.to_uppercase();
    let lower2 = "fedcba9876543210".repeat(4);
    let upper2 = lower2.to_uppercase();
    let ended =
        hereabouts_core::ledger::cooling_marker(SystemTime::now() - Duration::from_secs(60));
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    let name = "198.51.100.0-24";
    pool(
        &pools,
        name,
        "198.51.100.0/24",
        &[],
        vec![
            // Leaks.
            ("+7", entry(&upper, &gone_ref(0))),
            ("8", entry("abc123", &gone_ref(1))),
            ("11", entry(&lower, &gone_ref(2))),
            ("12", entry(&ended, &gone_ref(3))),
            // Live.
            ("9", entry(&upper2, &live_ref(0))),
            ("10", entry(&lower2, &live_ref(1))),
            ("13", entry("short", &live_ref(2))),
        ],
    )
    .await;
    let controller = replica(&ns, "a", &GC);
    controller.wait_ready().await.expect("ready");
    let reclaimed = eventually("every leak reclaimed", 20, || async {
        let now = live_entries(&pools, name).await;
        (!now.iter().any(|(_, _, p)| p.contains("/gone-"))).then_some(())
    })
    .await;
    let now = live_entries(&pools, name).await;
    assert!(reclaimed.is_ok(), "invariant 2: leaks left: {now:?}");
    let all = pools.get(name).await.expect("pool").spec.allocations;
    assert!(
        !all.values().any(|a| a.id == ended),
        "the ended cooldown goes: {all:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut now = live_entries(&pools, name).await;
    now.sort();
    let mut want = vec![
        ("10".to_owned(), lower2.clone(), live_ref(1)),
        ("13".to_owned(), "short".to_owned(), live_ref(2)),
        ("9".to_owned(), upper2.clone(), live_ref(0)),
    ];
    want.sort();
    assert_eq!(now, want, "the live entries stay exactly");
}
