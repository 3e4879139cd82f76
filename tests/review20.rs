//! review20: adversarial tests of 6c6bf12 and a301b08 (`Decision::unwitnessed`:
//! the pool actor answers what no write of its batch backs from a fresh
//! read of the pool).
//!
//! Each test makes the actor's cached view stale the way the fix is about
//! (another hand writes a shard after the actor's last write, and nothing
//! the actor writes meanwhile conflicts), then asks for an answer of one
//! kind the change lists:
//!
//! 1. `a_static_address_another_hand_freed_is_not_refused_as_taken`: a
//!    refusal `Taken` (the change's tests cover `Exhausted` only).
//! 2. `an_address_another_hand_moved_is_not_answered_again` and
//!    `..._to_the_same_sandbox`: an admin moved the claim's address (in
//!    shard 1) to another pod; the claim is asked again. A new sandbox
//!    updates the entry's container ID (a write: it conflicts and reloads);
//!    the same sandbox is an address granted again (`Granted::Again`) from
//!    a shard the batch does not write: the unwitnessed re-read (its log
//!    line seen on the review run).
//! 3. `releases_over_two_shards_one_of_them_stale_all_land`: releases over
//!    two shards after another hand moved one shard's version. Meant to
//!    meet a partial commit (one shard's write lands, the other conflicts,
//!    the batch is decided again); on the review machine the releases
//!    reached the actor one or two at a time, so it met a conflict and a
//!    reload instead. Every address must come back, and a new pod for each
//!    must be served.
//!
//! Run: `cargo test --locked --test review20 -- --test-threads=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::join_all;
use hereabouts_api::{ClaimRange, IPClaim, IPPool};
use hereabouts_kit::eventually;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use common::{claim_spec, entries_by_offset, entry, pods, pool, ready_address, replica, setup};

/// The claim of `pod`'s net1 on `cidr` (optionally bounded), named as the
/// plugin names it here.
fn ask(
    ns: &str,
    pod: &(String, String),
    cidr: &str,
    bounds: Option<(&str, &str)>,
    static_ip: Option<&str>,
) -> IPClaim {
    let mut spec = claim_spec(
        ns,
        "test-network",
        "net1",
        pod,
        vec![ClaimRange {
            range: cidr.to_owned(),
            range_start: bounds.map(|b| b.0.to_owned()),
            range_end: bounds.map(|b| b.1.to_owned()),
            ..Default::default()
        }],
    );
    if let Some(ip) = static_ip {
        spec.static_ips = vec![ip.to_owned()];
    }
    IPClaim::new(&format!("{}-net1", pod.0), spec)
}

/// Every pod's claim of net1 on `cidr` (optionally bounded), created at
/// once.
async fn ask_all(
    claims: &Api<IPClaim>,
    ns: &str,
    pods: &[(String, String)],
    cidr: &str,
    bounds: Option<(&str, &str)>,
) {
    for created in join_all(pods.iter().map(|pod| {
        let claim = ask(ns, pod, cidr, bounds, None);
        async move { claims.create(&PostParams::default(), &claim).await }
    }))
    .await
    {
        created.expect("claim");
    }
}

/// The claim `name`'s answer: its address, or what its Ready condition
/// says when refused.
async fn answer(claims: &Api<IPClaim>, name: &str) -> Option<String> {
    let c = claims.get_opt(name).await.ok()??;
    let status = c.status.as_ref()?;
    if status.observed_generation != c.metadata.generation {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    if ready.status == "True" {
        return status.addresses.first().cloned();
    }
    Some(format!("refused: {} {}", ready.reason, ready.message))
}

/// Until the pool's status is written, then two more seconds: the hand
/// that writes next comes after everything the actor wrote.
async fn actor_idle(pools: &Api<IPPool>, base: &str) {
    eventually("the pool's status written", 30, || async {
        let p = pools.get(base).await.ok()?;
        p.status.is_some().then_some(())
    })
    .await
    .expect("status");
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Invariant 4's "a refusal says why" must not say "taken" for a free
/// address. Whereabouts (a migration) holds .10 in the base object; the
/// actor loads the pool (a claim gets .1) and goes idle. Whereabouts' DEL
/// frees .10 after the actor's last write; nothing the actor writes
/// conflicts since (the status it wrote counts what it knew). A claim asks
/// for .10 by name: the ledger says Taken, which no write of the batch
/// backs: it must be decided again from a fresh read, and granted.
#[tokio::test]
async fn a_static_address_another_hand_freed_is_not_refused_as_taken() {
    let (cidr, base) = ("100.64.80.0/24", "100.64.80.0-24");
    let (kit, ns) = setup("r20-taken").await;
    let client = kit.client.clone();
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let wb = pods(&client, &ns.name, "wb", 1).await.remove(0);
    let wb_ref = format!("{}/{}", ns.name, wb.0);
    pool(
        &pools,
        base,
        cidr,
        &[],
        vec![("10", entry("wb-container", &wb_ref))],
    )
    .await;
    let a = replica(&ns, "a", &[]);
    a.wait_ready().await.expect("controller ready");
    let hb = pods(&client, &ns.name, "hb", 2).await;
    claims
        .create(
            &PostParams::default(),
            &ask(&ns.name, &hb[0], cidr, None, None),
        )
        .await
        .expect("claim");
    let first_name = format!("{}-net1", hb[0].0);
    let first = eventually("the first claim answered", 30, || {
        ready_address(&claims, &first_name)
    })
    .await
    .expect("answered");
    assert_eq!(first, "100.64.80.1/24");
    actor_idle(&pools, base).await;
    // Whereabouts' DEL.
    let mut object = pools.get(base).await.expect("base");
    assert!(object.spec.allocations.remove("10").is_some());
    pools
        .replace(base, &PostParams::default(), &object)
        .await
        .expect("whereabouts' DEL");
    claims
        .create(
            &PostParams::default(),
            &ask(&ns.name, &hb[1], cidr, None, Some("100.64.80.10")),
        )
        .await
        .expect("claim");
    let second_name = format!("{}-net1", hb[1].0);
    let second = eventually("the static claim answered", 30, || {
        answer(&claims, &second_name)
    })
    .await
    .expect("answered");
    assert_eq!(
        second, "100.64.80.10/24",
        "a freed address refused as taken"
    );
}

/// Invariants 1 and 2 ("a request that got an address always has it in
/// the pool"). A sharded range (.128-.131, all in `<base>-s1`). Pod P's
/// claim gets .128. Then an admin moves .128 to pod W by hand (P's entry
/// replaced by W's in `<base>-s1`; counts unchanged, so the actor has no
/// status to write and nothing conflicts). P's plugin files its claim
/// again (a new container ID: a new generation). The actor's ledger still
/// says P holds .128: granted again, from a shard the batch does not
/// write. Answered from the stale view, P would be told .128, which the
/// pool holds for W (two live pods on .128). From a fresh read, P gets
/// another address, in the pool under P.
#[tokio::test]
async fn an_address_another_hand_moved_is_not_answered_again() {
    moved_then_asked_again(true).await;
}

/// The same, P's claim asked again for the same sandbox (its status lost:
/// the reconciler answers it again, same container ID): the ledger's
/// answer is `Granted::Again` with nothing to write (the new sandbox
/// above updates the entry's container ID, a write that conflicts).
#[tokio::test]
async fn an_address_another_hand_moved_is_not_answered_again_to_the_same_sandbox() {
    moved_then_asked_again(false).await;
}

async fn moved_then_asked_again(new_sandbox: bool) {
    let cidr = if new_sandbox {
        "100.64.81.0/24"
    } else {
        "100.64.83.0/24"
    };
    let base = cidr.replace('/', "-");
    let base = base.as_str();
    let shard1 = format!("{base}-s1");
    let first_ip = cidr.replace(".0/24", ".128");
    let last_ip = cidr.replace(".0/24", ".131");
    let bounds = Some((first_ip.as_str(), last_ip.as_str()));
    let (kit, ns) = setup("r20-again").await;
    let client = kit.client.clone();
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let a = replica(&ns, "a", &[]);
    a.wait_ready().await.expect("controller ready");
    let p = pods(&client, &ns.name, "p", 1).await.remove(0);
    let w = pods(&client, &ns.name, "w", 1).await.remove(0);
    let name = format!("{}-net1", p.0);
    claims
        .create(
            &PostParams::default(),
            &ask(&ns.name, &p, cidr, bounds, None),
        )
        .await
        .expect("claim");
    let first = eventually("P answered", 30, || ready_address(&claims, &name))
        .await
        .expect("answered");
    assert_eq!(first, format!("{first_ip}/24"));
    // All of the range is in shard 1: the base object is never written.
    actor_idle(&pools, &shard1).await;
    // The admin's move (P's reservation goes to W as well, as a hand that
    // knows hereabouts would do it).
    let w_ref = format!("{}/{}", ns.name, w.0);
    let mut object = pools.get(&shard1).await.expect("shard 1");
    object
        .spec
        .allocations
        .insert("128".to_owned(), entry("w-container", &w_ref));
    pools
        .replace(&shard1, &PostParams::default(), &object)
        .await
        .expect("the admin's move");
    let reservations: Api<hereabouts_api::OverlappingRangeIPReservation> =
        Api::namespaced(client.clone(), &ns.name);
    if let Some(mut r) = reservations.get_opt(&first_ip).await.expect("read") {
        r.spec.podref = w_ref.clone();
        r.spec.containerid = "w-container".to_owned();
        reservations
            .replace(&first_ip, &PostParams::default(), &r)
            .await
            .expect("reservation moved");
    }
    if new_sandbox {
        // P's plugin again, for a new sandbox.
        let mut claim = claims.get(&name).await.expect("claim");
        claim.spec.container_id = format!("container-{}-again", p.1);
        claims
            .replace(&name, &PostParams::default(), &claim)
            .await
            .expect("claim re-filed");
    } else {
        // Its answer lost: asked again as it is.
        claims
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&serde_json::json!({"status": null})),
            )
            .await
            .expect("status cleared");
    }
    let generation = claims.get(&name).await.expect("claim").metadata.generation;
    let again = eventually("P answered again", 30, || async {
        let c = claims.get_opt(&name).await.ok()??;
        let status = c.status.as_ref()?;
        (status.observed_generation == generation)
            .then(|| common::ready_addresses(&c))
            .flatten()?
            .into_iter()
            .next()
    })
    .await
    .expect("answered");
    let entries = entries_by_offset(&client, &ns.name, cidr).await;
    let (_, parsed) = hereabouts_core::Cidr::parse_with_host(cidr).expect("cidr");
    let offset = parsed.offset_of(common::ip_of(&again)).expect("in range");
    let p_ref = format!("{}/{}", ns.name, p.0);
    let mut broken = Vec::new();
    if !entries
        .get(&offset)
        .is_some_and(|e| e.iter().any(|(_, who)| *who == p_ref))
    {
        broken.push(format!(
            "P is Ready with {again}, which the pool holds for {:?}",
            entries.get(&offset)
        ));
    }
    for (offset, held) in entries.iter().filter(|(_, e)| e.len() > 1) {
        broken.push(format!("offset {offset} in two objects: {held:?}"));
    }
    assert!(broken.is_empty(), "{broken:#?}\n{entries:#?}");
}

/// Invariants 2 and "refused as exhausted while one is free". A range
/// .120-.135 over two shards (.120-.127 in the base object, .128-.135 in
/// `<base>-s1`), no hold, no cooldown, reservations on. Sixteen pods fill
/// it. After the actor's last write another hand touches `<base>-s1` (an
/// annotation: its version moves, nothing the actor decides changes).
/// Then every claim goes at once: the actor batches releases of both
/// shards; the base's write lands, `<base>-s1`'s conflicts, and the batch
/// is decided again from a read that no longer has the base's released
/// entries (a release "found nothing", answered from a fresh read: allowed
/// by `read_now`). Whatever was answered, every address must be free again
/// and sixteen new pods must each get one, none twice.
///
/// The batching is not forced: on the review machine the claim releases
/// reached the actor one or two at a time (each reads the pod's claims
/// first), so this run met a conflict of a shard-1 release and its reload,
/// not a partial commit. By reading: a partial commit answers the base's
/// releases `false` (benign to both callers) and skips removing their
/// reservations, which `reservations::reserve` takes over as orphans
/// (written for this pool, its address not held) when the address is next
/// handed out.
#[tokio::test]
async fn releases_over_two_shards_one_of_them_stale_all_land() {
    let (cidr, base) = ("100.64.82.0/24", "100.64.82.0-24");
    let shard1 = format!("{base}-s1");
    let bounds = Some(("100.64.82.120", "100.64.82.135"));
    let (kit, ns) = setup("r20-partial").await;
    let client = kit.client.clone();
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let a = replica(
        &ns,
        "a",
        &["--hold-released", "0s", "--release-cooldown", "0s"],
    );
    a.wait_ready().await.expect("controller ready");
    let first = pods(&client, &ns.name, "old", 16).await;
    ask_all(&claims, &ns.name, &first, cidr, bounds).await;
    for pod in &first {
        let name = format!("{}-net1", pod.0);
        eventually("old answered", 60, || ready_address(&claims, &name))
            .await
            .expect("answered");
    }
    actor_idle(&pools, base).await;
    // Another hand touches shard 1: its version moves.
    let mut object = pools.get(&shard1).await.expect("shard 1");
    object
        .annotations_mut()
        .insert("example.com/touched".to_owned(), "yes".to_owned());
    pools
        .replace(&shard1, &PostParams::default(), &object)
        .await
        .expect("touched");
    join_all(first.iter().map(|pod| {
        let claims = claims.clone();
        let name = format!("{}-net1", pod.0);
        async move { claims.delete(&name, &Default::default()).await }
    }))
    .await
    .into_iter()
    .for_each(|r| {
        r.expect("delete claim");
    });
    let left = eventually("every old entry released", 30, || async {
        let entries = entries_by_offset(&client, &ns.name, cidr).await;
        entries.is_empty().then_some(())
    })
    .await;
    let entries = entries_by_offset(&client, &ns.name, cidr).await;
    assert!(left.is_ok(), "entries never released: {entries:#?}");
    let second = pods(&client, &ns.name, "new", 16).await;
    ask_all(&claims, &ns.name, &second, cidr, bounds).await;
    let mut answers = BTreeMap::new();
    for pod in &second {
        let name = format!("{}-net1", pod.0);
        let got = eventually("new answered", 60, || answer(&claims, &name)).await;
        answers.insert(name, got.ok());
    }
    let addresses: BTreeSet<_> = answers
        .values()
        .flatten()
        .filter(|a| !a.starts_with("refused"))
        .collect();
    assert_eq!(addresses.len(), 16, "{answers:#?}");
    let entries = entries_by_offset(&client, &ns.name, cidr).await;
    assert!(
        entries.values().all(|e| e.len() == 1) && entries.len() == 16,
        "{entries:#?}"
    );
}
