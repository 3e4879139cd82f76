//! review9: adversarial tests of commit 2a5f974 (the node agent's claim
//! cache: DEL by the version its watch saw, a waiting ADD that reads its
//! claim only when the whole watch went silent, relists that tell waiters
//! of claims deleted in the gap; the controller's interned range lists).
//!
//! Where a watch must be stale, silent or mid-relist, the test feeds an
//! in-process `ClaimWatch` the exact event sequence kube-runtime's watcher
//! emits (Init, InitApply..., InitDone after a failed watch) and runs the
//! real verbs (`run_with`, `Backend::Agent`) against the real API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hereabouts_api::{ClaimRange, IPClaim};
use hereabouts_controller::caches::ClaimEntry;
use hereabouts_node::cni::watch::{ClaimWatch, Seen};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

mod common;
use common::agent::{Agent, NODE, env, environment, plugin, pod, run_through, setup};

fn conf(range: &str, kubeconfig: &std::path::Path, timeout_s: u64) -> Value {
    json!({"cniVersion": "1.0.0", "name": "r9net", "type": "macvlan", "master": "eth1",
           "ipam": {"type": "hereabouts", "range": range, "request_timeout": timeout_s,
                    "kubernetes": {"kubeconfig": kubeconfig}}})
}

/// A claim of this node that is no waiter's (another pod's attachment).
fn bystander(ns: &str, version: u64) -> IPClaim {
    serde_json::from_value(json!({
        "apiVersion": "hereabouts.dev/v1alpha1",
        "kind": "IPClaim",
        "metadata": {"name": "bystander", "namespace": ns, "uid": "bystander-uid",
                     "resourceVersion": version.to_string()},
        "spec": {
            "network": {"namespace": ns, "name": "r9net"},
            "ranges": [],
            "interface": "net1",
            "pod": {"namespace": ns, "name": "other", "uid": "u"},
            "containerID": "c-other",
            "node": NODE
        }
    }))
    .expect("claim")
}

/// Keeps `view` live, as a busy node's watch is: an event of another claim
/// every 500 ms, until the flag is cleared.
fn keep_live(view: Arc<ClaimWatch>, ns: String) -> Arc<AtomicBool> {
    let on = Arc::new(AtomicBool::new(true));
    let flag = on.clone();
    tokio::spawn(async move {
        let mut v = 1;
        while flag.load(Ordering::SeqCst) {
            view.observe(watcher::Event::Apply(bystander(&ns, v)));
            v += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    on
}

async fn the_claim(claims: &Api<IPClaim>) -> IPClaim {
    hereabouts_kit::eventually("the ADD's claim", 20, || async {
        claims
            .list(&ListParams::default())
            .await
            .ok()
            .and_then(|l| l.items.into_iter().find(|c| c.name_any() != "bystander"))
    })
    .await
    .expect("the ADD created its claim")
}

/// A copy of `claim` to create afresh under its name (new UID), for
/// `container`.
fn remade(claim: &IPClaim, container: &str) -> IPClaim {
    let mut fresh = IPClaim::new(&claim.name_any(), claim.spec.clone());
    fresh.spec.container_id = container.to_owned();
    fresh.metadata = ObjectMeta {
        name: Some(claim.name_any()),
        namespace: claim.namespace(),
        labels: claim.metadata.labels.clone(),
        ..Default::default()
    };
    fresh
}

/// A relist tells the waiters of claims deleted in the gap, which the
/// reread used to find, and that includes a claim deleted and made again
/// under its name (a new UID: e.g. the runtime's DEL of the old sandbox,
/// then a new sandbox's ADD): the waiter of the old UID must hear of it,
/// not only an `Applied` of a UID it ignores (found by review: the relist
/// compared keys, not UIDs).
#[test]
fn a_relist_tells_the_waiter_of_a_claim_remade_in_the_gap() {
    let watch = Arc::new(ClaimWatch::default());
    let mut old = bystander("ns", 10);
    old.metadata.name = Some("a".into());
    old.metadata.uid = Some("uid-old".into());
    watch.observe(watcher::Event::Apply(old.clone()));
    let mut waiting = watch.register("ns", "a");
    let _ = waiting.events.try_recv();
    // The watch failed; meanwhile "a" was deleted and made again.
    let mut new = old.clone();
    new.metadata.uid = Some("uid-new".into());
    new.metadata.resource_version = Some("30".into());
    watch.observe(watcher::Event::Init);
    watch.observe(watcher::Event::InitApply(new));
    watch.observe(watcher::Event::InitDone);
    let mut told_deleted = false;
    while let Ok(seen) = waiting.events.try_recv() {
        if matches!(seen, Seen::Deleted(Some(ref uid)) if uid == "uid-old") {
            told_deleted = true;
        }
    }
    assert!(
        told_deleted,
        "the waiter of uid-old was not told its claim was deleted in the gap"
    );
}

/// An ADD of pod `p` on `range` through an in-process view of the node's
/// claims, kept live by another claim's events (a busy node), with no
/// controller to answer it: it waits, as during a storm.
struct WaitingAdd {
    _kit: hereabouts_kit::Kit,
    _ns: hereabouts_kit::TestNamespace,
    namespace: String,
    view: Arc<ClaimWatch>,
    live: Arc<AtomicBool>,
    claims: Api<IPClaim>,
    started: Instant,
    add: tokio::task::JoinHandle<hereabouts_node::cni::Outcome>,
}

impl WaitingAdd {
    async fn start(prefix: &str, range: &str) -> WaitingAdd {
        let (kit, ns) = common::setup(prefix).await;
        let client = kit.client.clone();
        let kubeconfig = ns.kubeconfig().expect("kubeconfig");
        let uid = pod(&client, &ns.name, "p").await;
        let view = Arc::new(ClaimWatch::default());
        let live = keep_live(view.clone(), ns.name.clone());
        let stdin = conf(range, &kubeconfig, 30).to_string();
        let started = Instant::now();
        let add = tokio::spawn(run_through(
            client.clone(),
            ns.name.clone(),
            view.clone(),
            stdin,
            environment("ADD", &ns.name, &uid, "sandbox-1"),
        ));
        WaitingAdd {
            claims: Api::namespaced(client, &ns.name),
            namespace: ns.name.clone(),
            _kit: kit,
            _ns: ns,
            view,
            live,
            started,
            add,
        }
    }

    /// The ADD fails well before its 30 s timeout, with a message that
    /// says `why`; `when` is what happened to its claim, for the message.
    async fn fails_fast(self, why: &[&str], when: &str) {
        let out = self.add.await.expect("ADD task");
        let took = self.started.elapsed();
        self.live.store(false, Ordering::SeqCst);
        assert!(!out.success, "{:?}", out.stdout);
        let msg = out
            .stdout
            .as_ref()
            .map(|v| v["msg"].to_string())
            .unwrap_or_default();
        assert!(
            took < Duration::from_secs(15),
            "the ADD took {took:?} (its whole timeout) to fail with {msg}; its claim was {when} at about 1 s"
        );
        assert!(why.iter().any(|w| msg.contains(w)), "{msg}");
    }
}

/// A waiting ADD whose claim was deleted and made again under its name
/// while the watch was relisting fails at once ("replaced by another ADD"),
/// even while other claims keep the watch live (found by review: it waited
/// out its whole timeout and blamed the allocator).
#[tokio::test]
async fn an_add_whose_claim_is_remade_in_a_relist_gap_fails_fast_on_a_busy_node() {
    let waiting = WaitingAdd::start("r9-remade", "203.0.113.32/28").await;
    let (view, claims) = (&waiting.view, &waiting.claims);
    let first = the_claim(claims).await;
    view.observe(watcher::Event::Apply(first.clone()));
    // The watch fails and lists again; in the gap the claim is deleted and
    // made again for another sandbox.
    view.observe(watcher::Event::Init);
    claims
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .expect("delete");
    let second = claims
        .create(&PostParams::default(), &remade(&first, "sandbox-2"))
        .await
        .expect("remake");
    view.observe(watcher::Event::InitApply(second));
    view.observe(watcher::Event::InitDone);
    waiting
        .fails_fast(&["replaced", "deleted"], "replaced")
        .await;
}

/// Same, for a claim the watch never showed before the gap (the watch
/// failed right after the ADD's create) and that is gone by the relist
/// (e.g. its pod was deleted and the garbage collector took the claim).
/// Every waiter reads its claim after a relist (found by review: only the
/// waiters of claims the watch knew were told).
#[tokio::test]
async fn an_add_whose_unseen_claim_vanished_in_a_relist_gap_fails_fast_on_a_busy_node() {
    let waiting = WaitingAdd::start("r9-vanish", "203.0.113.48/28").await;
    let (view, claims) = (&waiting.view, &waiting.claims);
    let first = the_claim(claims).await;
    view.observe(watcher::Event::Init);
    claims
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .expect("delete");
    view.observe(watcher::Event::InitApply(bystander(
        &waiting.namespace,
        1000,
    )));
    view.observe(watcher::Event::InitDone);
    waiting.fails_fast(&["deleted"], "deleted").await;
}

/// DEL with a view naming this sandbox's claim of an older UID, the claim
/// since deleted and made again (new UID) by a newer sandbox's ADD: the
/// newer claim and its address stay.
#[tokio::test]
async fn a_del_whose_view_names_a_remade_claim_leaves_the_newer_sandboxs() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r9-del-remade").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = conf("100.64.200.0/28", &kubeconfig, 20);
    let run = |command: &str, container: &str| {
        plugin(
            &env(command, &ns.name, "p", &uid, container, &socket),
            &stdin,
        )
    };
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let a = run("ADD", "sandbox-old");
    assert!(a.success, "{}", a.stdout);
    let stale = Arc::new(ClaimWatch::default());
    stale.observe(watcher::Event::Apply(the_claim(&claims).await));
    assert!(run("DEL", "sandbox-old").success);
    let b = run("ADD", "sandbox-new");
    assert!(b.success, "{}", b.stdout);
    let del = run_through(
        client.clone(),
        ns.name.clone(),
        stale.clone(),
        stdin.to_string(),
        environment("DEL", &ns.name, &uid, "sandbox-old"),
    )
    .await;
    assert!(del.success, "{:?}", del.stdout);
    let kept = the_claim(&claims).await;
    assert_eq!(kept.spec.container_id, "sandbox-new");
    let again = run("ADD", "sandbox-new");
    assert_eq!(
        again.stdout["ips"], b.stdout["ips"],
        "the newer sandbox keeps it"
    );
}

/// DEL with a view naming this sandbox's claim of an older UID, the claim
/// since made again by this same sandbox (e.g. a refused claim asked
/// again): the DEL must still delete the current one (no leak).
#[tokio::test]
async fn a_del_whose_view_names_an_older_uid_of_its_own_claim_still_deletes_it() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r9-del-own").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = conf("100.64.201.0/28", &kubeconfig, 20);
    let run = |command: &str, container: &str| {
        plugin(
            &env(command, &ns.name, "p", &uid, container, &socket),
            &stdin,
        )
    };
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    assert!(run("ADD", "sandbox-1").success);
    let stale = Arc::new(ClaimWatch::default());
    stale.observe(watcher::Event::Apply(the_claim(&claims).await));
    assert!(run("DEL", "sandbox-1").success);
    let b = run("ADD", "sandbox-1");
    assert!(b.success, "{}", b.stdout);
    let del = run_through(
        client.clone(),
        ns.name.clone(),
        stale,
        stdin.to_string(),
        environment("DEL", &ns.name, &uid, "sandbox-1"),
    )
    .await;
    assert!(del.success, "{:?}", del.stdout);
    let left = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    assert!(left.is_empty(), "the DEL left its own claim: {left:?}");
    hereabouts_kit::eventually("the address released", 20, || async {
        common::pool_allocations(&client, &ns.name, "100.64.201.0-28")
            .await
            .is_empty()
            .then_some(())
    })
    .await
    .expect("no leak");
}

/// The real agent (its real watch): an old sandbox's DEL right after a new
/// sandbox's ADD re-pointed the claim, and a sandbox's DEL right after its
/// own ADD, a few times: the new sandbox's claim always stays, the own
/// claim always goes.
#[tokio::test]
async fn dels_racing_the_agents_watch() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r9-race").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = conf("100.64.202.0/28", &kubeconfig, 20);
    let run = |command: &str, container: &str| {
        plugin(
            &env(command, &ns.name, "p", &uid, container, &socket),
            &stdin,
        )
    };
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    for round in 0..4 {
        let old = format!("old-{round}");
        let new = format!("new-{round}");
        assert!(run("ADD", &old).success);
        assert!(run("ADD", &new).success);
        assert!(run("DEL", &old).success);
        let c = claims
            .list(&ListParams::default())
            .await
            .expect("list")
            .items;
        assert_eq!(c.len(), 1, "round {round}: {c:?}");
        assert_eq!(c[0].spec.container_id, new, "round {round}");
        assert!(run("DEL", &new).success);
        let c = claims
            .list(&ListParams::default())
            .await
            .expect("list")
            .items;
        assert!(c.is_empty(), "round {round}: own DEL left {c:?}");
    }
}

/// Interning keeps each claim's own ranges: lists that differ in any field
/// are not shared, equal ones are equal.
#[test]
fn interned_ranges_are_each_claims_own() {
    let base = ClaimRange {
        range: "100.66.0.0/24".into(),
        range_start: Some("100.66.0.10".into()),
        range_end: Some("100.66.0.20".into()),
        exclude: vec!["100.66.0.12/32".into(), "100.66.0.13/32".into()],
        gateway: Some("100.66.0.1".into()),
        static_ip: None,
    };
    let variants: Vec<Vec<ClaimRange>> = vec![
        vec![base.clone()],
        vec![ClaimRange {
            range_start: None,
            ..base.clone()
        }],
        vec![ClaimRange {
            range_end: Some("100.66.0.21".into()),
            ..base.clone()
        }],
        vec![ClaimRange {
            exclude: vec!["100.66.0.13/32".into(), "100.66.0.12/32".into()],
            ..base.clone()
        }],
        vec![ClaimRange {
            exclude: vec![],
            ..base.clone()
        }],
        vec![ClaimRange {
            gateway: None,
            ..base.clone()
        }],
        vec![ClaimRange {
            static_ip: Some("100.66.0.15".into()),
            ..base.clone()
        }],
        vec![base.clone(), base.clone()],
        vec![],
    ];
    for _ in 0..2 {
        for (i, ranges) in variants.iter().enumerate() {
            let mut claim = bystander("ns", 1);
            claim.metadata.name = Some(format!("c{i}"));
            claim.spec.ranges = ranges.clone();
            let (_, entry) = ClaimEntry::of(&claim);
            assert_eq!(&*entry.ranges, ranges.as_slice(), "variant {i}");
        }
    }
}
