//! review7: adversarial tests of the node agent (`hereabouts-install`
//! serving the plugin on a unix socket), the thin plugin and its direct
//! fallback, and the controller's lean claim index. Each test runs against
//! the real API server of the kit with a real controller replica, the real
//! agent binary and the real plugin binaries; where timing is shaped, it is
//! shaped by a plain TCP forwarder between a real component and `kubectl
//! proxy` (every component and the API server stay the real ones).
//!
//! Three of them failed when written, each a finding (the doc comment
//! says the cause and the fix); they pass since. The others are evidence
//! that the attack did not work.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hereabouts_api::{IPClaim, IPPool};
use hereabouts_kit::{Controller, eventually};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

mod common;
use common::agent::{Agent, Run, env, finish, plugin, pod, setup, spawn_plugin};
use common::{ready_addresses, shaping};

fn conf(range: &str, kubeconfig: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "r7net", "type": "macvlan", "master": "eth1",
           "ipam": {"type": "hereabouts", "range": range, "kubernetes": {"kubeconfig": kubeconfig}}})
}

/// A plain-HTTP forwarder to `upstream` (a `kubectl proxy`) that delivers
/// the responses of IPClaim watches by label (the agent's one watch of its
/// node's claims) `lag` late, in order; everything else passes at once.
/// A watch that falls behind, as one does behind a slow or congested link.
async fn lagging_claim_watch(upstream: u16, lag: Duration, on: Arc<AtomicBool>) -> u16 {
    shaping::forwarder(
        upstream,
        |_, _, chunk| shaping::at_once(chunk),
        move |_, line| {
            let node_watch = line.starts_with("GET ")
                && line.contains("/ipclaims?")
                && line.contains("watch=true")
                && line.contains("labelSelector");
            if node_watch && on.load(Ordering::SeqCst) {
                shaping::Down::Delay(lag)
            } else {
                shaping::Down::Pass
            }
        },
    )
    .await
}

/// Found (invariant 3 and 2; "an answer for a different claim
/// generation"): the agent accepts an answer the controller gave an
/// OLDER generation of the claim.
///
/// A pod's first sandbox got an address of the network's range then; the
/// NAD's range was changed since; the pod's next sandbox is attached
/// through the agent, whose node-wide watch lags a few seconds. ADD
/// replaces the claim's spec (generation 2) and waits on the shared watch,
/// which now delivers the generation-1 `Ready` it had not yet shown. That
/// event has the same UID, and `answer_of` only compares the status's
/// observedGeneration with the generation *of that same stale object*
/// (crates/node/src/cni/verbs.rs:482-488, used by wait_on_shared_watch at
/// verbs.rs:636-645), so the old answer is taken: the runtime gets an
/// address of the old range while the claim (and the pool) give the pod
/// one of the new range. The pod then uses an address its claim does not
/// hold; the collector frees it ("claims whose ranges changed") and it can
/// be handed to another pod. The direct path is not affected: it watches
/// from the resourceVersion it wrote (verbs.rs:545).
///
/// Fixed: wait_on_shared_watch takes only versions of the generation the
/// ADD wrote or a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_takes_an_older_generations_answer_from_its_lagging_watch() {
    let (client, ns, _controller, _kubeconfig, socket) = setup("r7-stale-gen").await;
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let on = Arc::new(AtomicBool::new(true));
    let port = lagging_claim_watch(upstream, Duration::from_secs(3), on).await;
    let agent_kubeconfig =
        shaping::plain_kubeconfig(&format!("{}-lagging", ns.name), port, &ns.name);
    let _agent = Agent::start(&ns, "agent", &socket, &agent_kubeconfig);
    let uid = pod(&client, &ns.name, "web").await;

    // The first sandbox, while the agent was not answering (restarting, or
    // not installed yet): the plugin's direct path. The NAD said R1.
    let nowhere = socket.with_file_name("absent.sock");
    let first = plugin(
        &env("ADD", &ns.name, "web", &uid, "sandbox-1", &nowhere),
        &conf("198.51.100.0/28", &agent_kubeconfig),
    );
    assert!(first.success, "first ADD: {}", first.raw);
    let old = first.stdout["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();
    assert!(old.starts_with("198.51.100."), "{old}");

    // The NAD now says R2; the pod's next sandbox, through the agent.
    let second = plugin(
        &env("ADD", &ns.name, "web", &uid, "sandbox-2", &socket),
        &conf("203.0.113.0/28", &agent_kubeconfig),
    );
    assert!(second.success, "second ADD: {}", second.raw);
    let given = second.stdout["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();

    // What the claim holds for its current spec.
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let held = eventually("the claim answered for its current spec", 20, || async {
        let items = claims.list(&ListParams::default()).await.ok()?.items;
        let claim = items.into_iter().find(|c| c.spec.pod.name == "web")?;
        (claim.spec.container_id == "sandbox-2")
            .then(|| ready_addresses(&claim))
            .flatten()
    })
    .await
    .expect("an answer");
    assert_eq!(
        vec![given.clone()],
        held,
        "the runtime was given {given} (the old generation's answer was {old}); \
         the claim holds {held:?} for the sandbox's spec"
    );
}

/// Control for the test above: with the watch on time (no lag), the same
/// sequence gives the new range's address. Expected to PASS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_the_same_change_through_an_agent_whose_watch_is_on_time() {
    let (client, ns, _controller, _kubeconfig, socket) = setup("r7-ontime").await;
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let on = Arc::new(AtomicBool::new(false));
    let port = lagging_claim_watch(upstream, Duration::from_secs(3), on).await;
    let agent_kubeconfig =
        shaping::plain_kubeconfig(&format!("{}-ontime", ns.name), port, &ns.name);
    let _agent = Agent::start(&ns, "agent", &socket, &agent_kubeconfig);
    let uid = pod(&client, &ns.name, "web").await;
    let nowhere = socket.with_file_name("absent.sock");
    let first = plugin(
        &env("ADD", &ns.name, "web", &uid, "sandbox-1", &nowhere),
        &conf("198.51.100.0/28", &agent_kubeconfig),
    );
    assert!(first.success, "first ADD: {}", first.raw);
    let second = plugin(
        &env("ADD", &ns.name, "web", &uid, "sandbox-2", &socket),
        &conf("203.0.113.0/28", &agent_kubeconfig),
    );
    assert!(second.success, "second ADD: {}", second.raw);
    let given = second.stdout["ips"][0]["address"]
        .as_str()
        .expect("address");
    assert!(given.starts_with("203.0.113."), "{given}");
}

/// Found (liveness; "socket present but agent hung"): an agent that
/// accepts but never answers (stopped, deadlocked, starved) holds every
/// plugin call on the node for an hour, DEL included, and the plugin never
/// takes its direct path.
///
/// The kernel accepts connections on a stopped agent's listening socket
/// (the backlog), the request fits the socket buffer, and the plugin then
/// blocks in read with ANSWER_TIMEOUT = 3660 s for every verb
/// (crates/plugin/src/client.rs:19, set at client.rs:94); on that timeout
/// it answers 11 without falling back (client.rs:101-124). A DEL, which
/// waits on nothing, or an ADD whose configuration says
/// `request_timeout: 2s`, thus waits an hour: pod teardown and start on the
/// node stall until the runtime's own deadline kills the plugin.
///
/// Fixed: the plugin waits for the agent as long as the verb may take (an
/// ADD its request_timeout plus 10 s, any other verb 30 s), then takes
/// its direct path.
#[tokio::test]
async fn a_hung_agent_does_not_hold_the_plugin_for_an_hour() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r7-hung").await;
    let mut agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "web").await;
    let mut stdin = conf("198.51.100.0/28", &kubeconfig);
    stdin["ipam"]["request_timeout"] = json!("2s");
    let add = plugin(
        &env("ADD", &ns.name, "web", &uid, "sandbox-1", &socket),
        &stdin,
    );
    assert!(add.success, "ADD through the agent: {}", add.raw);

    // The agent hangs (SIGSTOP: alive, its socket bound, answering nothing).
    assert!(hereabouts_kit::signal(agent.process.id(), "STOP"));
    let started = Instant::now();
    let mut del = spawn_plugin(
        &env("DEL", &ns.name, "web", &uid, "sandbox-1", &socket),
        &stdin,
    );
    let bound = Duration::from_secs(60);
    let mut finished = None;
    while started.elapsed() < bound {
        if let Ok(Some(status)) = del.try_wait() {
            finished = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = started.elapsed();
    if finished.is_none() {
        let _ = del.kill();
    }
    let _ = del.wait();
    assert!(hereabouts_kit::signal(agent.process.id(), "CONT"));
    agent.process.kill();
    assert!(
        finished.is_some(),
        "DEL (request_timeout 2s) with a hung agent had no answer after {waited:?}: the plugin \
         neither fell back to its direct path nor gave up"
    );
}

/// Attack: two ADDs of the same attachment at once through the agent, and
/// a DEL of the sandbox racing a new sandbox's ADD (all through the agent,
/// many pods at once). Invariants: one address per pod; a repeated ADD the
/// same address; the DEL of the old sandbox never takes the new sandbox's
/// claim; the pool holds each answered address for its pod.
#[tokio::test]
async fn concurrent_adds_and_a_del_racing_a_new_sandbox_through_the_agent() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r7-race").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    const PODS: usize = 12;
    let mut uids = Vec::new();
    for i in 0..PODS {
        uids.push(pod(&client, &ns.name, &format!("r{i}")).await);
    }
    let stdin = conf("100.64.0.0/24", &kubeconfig);
    // Two ADDs per pod, same sandbox, at once.
    let children: Vec<_> = (0..PODS)
        .flat_map(|i| {
            let e = env("ADD", &ns.name, &format!("r{i}"), &uids[i], "sb-1", &socket);
            [spawn_plugin(&e, &stdin), spawn_plugin(&e, &stdin)]
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    let mut first = Vec::new();
    for (i, pair) in runs.chunks(2).enumerate() {
        assert!(
            pair[0].success && pair[1].success,
            "r{i}: {} / {}",
            pair[0].raw,
            pair[1].raw
        );
        assert_eq!(
            pair[0].stdout["ips"], pair[1].stdout["ips"],
            "r{i}: two ADDs, two answers"
        );
        first.push(
            pair[0].stdout["ips"][0]["address"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // The old sandbox's DEL races the new sandbox's ADD.
    let children: Vec<_> = (0..PODS)
        .flat_map(|i| {
            let del = env("DEL", &ns.name, &format!("r{i}"), &uids[i], "sb-1", &socket);
            let add = env("ADD", &ns.name, &format!("r{i}"), &uids[i], "sb-2", &socket);
            [spawn_plugin(&del, &stdin), spawn_plugin(&add, &stdin)]
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    let mut answers = Vec::new();
    for (i, pair) in runs.chunks(2).enumerate() {
        assert!(pair[0].success, "DEL r{i}: {}", pair[0].raw);
        // The ADD may lose to the DEL (11: deleted while waiting); the
        // runtime retries it.
        let add = if pair[1].success {
            pair[1].stdout.clone()
        } else {
            assert_eq!(pair[1].stdout["code"], 11, "ADD r{i}: {}", pair[1].raw);
            let again = plugin(
                &env("ADD", &ns.name, &format!("r{i}"), &uids[i], "sb-2", &socket),
                &stdin,
            );
            assert!(again.success, "ADD r{i} again: {}", again.raw);
            again.stdout
        };
        answers.push(
            add["ips"][0]["address"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // Every sandbox-2 claim exists, is answered, and holds what its ADD got.
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let pools: Api<IPPool> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let items = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    for (i, address) in answers.iter().enumerate() {
        let name = format!("r{i}");
        let claim = items
            .iter()
            .find(|c| c.spec.pod.name == name)
            .unwrap_or_else(|| panic!("{name}: its claim is gone after its ADD succeeded"));
        assert_eq!(claim.spec.container_id, "sb-2", "{name}");
        assert_eq!(
            ready_addresses(claim),
            Some(vec![address.clone()]),
            "{name}"
        );
    }
    let allocations = common::pool_allocations(&client, &ns.name, "100.64.0.0-24").await;
    for (i, address) in answers.iter().enumerate() {
        let ip: std::net::IpAddr = address
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .expect("ip");
        assert_eq!(
            allocations.get(&ip).map(String::as_str),
            Some(format!("{}/r{i}", ns.name).as_str()),
            "r{i}: {address} in the pool for it ({allocations:?})"
        );
    }
    let _ = pools;
    let _ = first;
}

/// Attack on the thin plugin's fallback: the agent answers half a document
/// and dies (here: a fake agent that writes a cut answer and closes). The
/// plugin must take the direct path, print exactly one JSON document, and
/// the ADD must leave one claim and one allocation. Expected to PASS.
#[tokio::test]
async fn a_cut_agent_answer_falls_back_once_with_one_document() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r7-cut").await;
    let uid = pod(&client, &ns.name, "web").await;
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let fake = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).expect("blocking");
                    let mut body = Vec::new();
                    let _ = s.read_to_end(&mut body);
                    let _ = s.write_all(
                        br#"{"kind":"answer","stdout":{"cniVersion":"1.0.0","ips":[{"addr"#,
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let stdin = conf("198.51.100.0/28", &kubeconfig);
    let run = plugin(
        &env("ADD", &ns.name, "web", &uid, "sandbox-1", &socket),
        &stdin,
    );
    stop.store(true, Ordering::SeqCst);
    let _ = fake.join();
    assert!(run.success, "{}", run.raw);
    assert_eq!(
        run.raw.trim().lines().count(),
        1,
        "one document: {:?}",
        run.raw
    );
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let items = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    assert_eq!(items.len(), 1);
    let allocations = common::pool_allocations(&client, &ns.name, "198.51.100.0-28").await;
    assert_eq!(allocations.len(), 1, "{allocations:?}");
}

/// Found (invariant 2, a claim that got an address the pool lacks; and
/// then invariant 1): a standby replays, on becoming leader, the releases
/// of claims deleted up to ten minutes earlier, which the old leader had
/// long done, and one of them frees the address a newer claim of the same
/// attachment holds.
///
/// Every replica feeds every deleted claim to its releaser
/// (crates/controller/src/claims.rs:252-255); a standby keeps it in
/// `unreleased` (start_release returns while not leading, claims.rs:325)
/// for RELEASE_PATIENCE = 600 s (claims.rs:42, 338), and on becoming
/// leader releases them all (claims.rs:352-356) with
/// ReleaseBy::Owner{pod, ifname, container_id} (claims.rs:1123-1137),
/// without asking whether the old leader did it already or whether a
/// live claim now holds that owner's address. When the attachment came
/// back with the same container ID (Multus' dynamic-networks controller
/// removes and re-adds an interface of a running sandbox; a runtime may
/// repeat ADD after DEL), the newer claim's pool entry has that
/// container ID (crates/core/src/ledger.rs:670-685 matches it), so the
/// replay frees the address the pod uses: its claim stays Ready with an
/// address its pool no longer holds (a hold, handed to another pod when
/// the range is full, or a plain free address where no hold applies).
///
/// Fixed: a release is skipped when a newer claim of the same name asks
/// for the same sandbox's interface (the cache is asked first, then the
/// API server: the cache may lag behind a successor an earlier leader
/// answered).
#[tokio::test]
async fn a_new_leader_replays_a_release_its_predecessor_did_and_frees_a_live_address() {
    let (kit, ns) = common::setup("r7-replay").await;
    let client = kit.client.clone();
    let mut a = common::replica(&ns, "a", &[]);
    a.wait_ready().await.expect("a ready");
    let a_pid = a.process.id();
    eventually("a leads", 20, || async {
        (hereabouts_kit::leader_pid(&client, &ns.name).await == Some(a_pid)).then_some(())
    })
    .await
    .expect("a leads");
    let b = common::replica(&ns, "b", &[]);
    b.wait_ready().await.expect("b ready");
    let b_pid = b.process.id();
    let kubeconfig = ns.kubeconfig().expect("kubeconfig");
    let uid = pod(&client, &ns.name, "web").await;
    let nowhere = hereabouts_kit::local_dir().join("no-agent-r7.sock");
    let stdin = conf("198.51.100.0/28", &kubeconfig);
    let run = |command: &str| {
        plugin(
            &env(command, &ns.name, "web", &uid, "sandbox-1", &nowhere),
            &stdin,
        )
    };

    let add = run("ADD");
    assert!(add.success, "ADD: {}", add.raw);
    let address = add.stdout["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();
    let ip: std::net::IpAddr = address
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("ip");
    // The interface is removed from the running sandbox, then added back
    // (same container ID).
    assert!(run("DEL").success, "DEL");
    eventually("the DEL released it", 20, || async {
        let held = common::pool_allocations(&client, &ns.name, "198.51.100.0-28").await;
        (!held.contains_key(&ip)).then_some(())
    })
    .await
    .expect("released by the leader");
    let again = run("ADD");
    assert!(again.success, "ADD again: {}", again.raw);
    assert_eq!(
        again.stdout["ips"], add.stdout["ips"],
        "the held address back"
    );
    let held = common::pool_allocations(&client, &ns.name, "198.51.100.0-28").await;
    assert_eq!(
        held.get(&ip).map(String::as_str),
        Some(format!("{}/web", ns.name).as_str())
    );

    // The leader dies; the standby takes over.
    a.process.kill();
    eventually("b leads", 30, || async {
        (hereabouts_kit::leader_pid(&client, &ns.name).await == Some(b_pid)).then_some(())
    })
    .await
    .expect("b leads");
    tokio::time::sleep(Duration::from_secs(6)).await;

    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let claim = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .find(|c| c.spec.pod.name == "web")
        .expect("web's claim");
    assert_eq!(
        ready_addresses(&claim),
        Some(vec![address.clone()]),
        "the claim still says {address}"
    );
    let held = common::pool_allocations(&client, &ns.name, "198.51.100.0-28").await;
    assert_eq!(
        held.get(&ip).map(String::as_str),
        Some(format!("{}/web", ns.name).as_str()),
        "web's live claim holds {address}, but its pool no longer does: {held:?}"
    );
    drop(b);
}

/// Attack on the lean claim index (crates/controller/src/index.rs
/// Writer::apply, `vanished` in claims.rs): during a gap in the
/// controller's claim watch that ends in a relist (410 Gone), one pod's
/// claim is deleted (its DEL), and another pod's interface is removed and
/// added back in the same sandbox (its claim deleted and made again under
/// the same name, new UID, same container ID). After the relist: the
/// deleted claim's address is released; the re-made claim is answered
/// and its address is in its pool; an untouched pod keeps its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_deleted_and_remade_during_a_relist_gap() {
    let (kit, ns) = common::setup("r7-gap").await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let stall = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicBool::new(false));
    let expire = Arc::new(AtomicBool::new(false));
    let port = shaping::gap_in_watch(
        upstream,
        claim_watch,
        stall.clone(),
        cut.clone(),
        expire.clone(),
    )
    .await;
    let controller_kubeconfig =
        shaping::plain_kubeconfig(&format!("{}-gap", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &controller_kubeconfig,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig");
    let nowhere = hereabouts_kit::local_dir().join("no-agent-r7.sock");
    let stdin = conf("198.51.100.0/28", &kubeconfig);
    let mut uids = std::collections::BTreeMap::new();
    let mut addresses = std::collections::BTreeMap::new();
    for name in ["gone", "back", "stays"] {
        let uid = pod(&client, &ns.name, name).await;
        let run = plugin(
            &env("ADD", &ns.name, name, &uid, &format!("c-{name}"), &nowhere),
            &stdin,
        );
        assert!(run.success, "{name}: {}", run.raw);
        addresses.insert(
            name,
            run.stdout["ips"][0]["address"]
                .as_str()
                .expect("address")
                .to_owned(),
        );
        uids.insert(name, uid);
    }
    let ip = |name: &str| -> std::net::IpAddr {
        addresses[name]
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .expect("ip")
    };

    // The gap opens.
    stall.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run_as = |command: &str, name: &str| {
        env(
            command,
            &ns.name,
            name,
            &uids[name],
            &format!("c-{name}"),
            &nowhere,
        )
    };
    assert!(plugin(&run_as("DEL", "gone"), &stdin).success, "DEL gone");
    assert!(plugin(&run_as("DEL", "back"), &stdin).success, "DEL back");
    // The interface comes back into the same sandbox: a new claim, same
    // name, same container ID; it waits for an answer through the gap.
    let back = spawn_plugin(&run_as("ADD", "back"), &stdin);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The gap ends: the watch drops, and comes back to a 410.
    expire.store(true, Ordering::SeqCst);
    cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stall.store(false, Ordering::SeqCst);
    cut.store(false, Ordering::SeqCst);
    let back = finish(back);
    assert!(back.success, "ADD back: {}", back.raw);
    assert!(
        !expire.load(Ordering::SeqCst),
        "the controller watched again through the 410"
    );
    // The controller did list again (the relist path ran, not a resumed
    // watch that replayed the deletions).
    let log = std::fs::read_to_string(
        hereabouts_kit::local_dir()
            .join("logs")
            .join(format!("{}-a.log", ns.name)),
    )
    .expect("controller log");
    let lists = log
        .lines()
        .filter(|l| l.contains("listing") && l.contains("IPClaim"))
        .count();
    assert!(lists >= 2, "the claim watch was listed {lists} time(s)");
    let got = back.stdout["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();

    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = common::pool_allocations(&client, &ns.name, "198.51.100.0-28").await;
    let podref = |name: &str| format!("{}/{name}", ns.name);
    assert!(
        !held.contains_key(&ip("gone")),
        "gone's address released: {held:?}"
    );
    let got_ip: std::net::IpAddr = got
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("ip");
    assert_eq!(
        held.get(&got_ip),
        Some(&podref("back")),
        "back's new claim's {got} in its pool: {held:?}"
    );
    assert_eq!(held.get(&ip("stays")), Some(&podref("stays")), "{held:?}");
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let items = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    let back_claim = items
        .iter()
        .find(|c| c.spec.pod.name == "back")
        .expect("back's claim");
    assert_eq!(ready_addresses(back_claim), Some(vec![got.clone()]));
    drop(controller);
}

#[tokio::test]
async fn the_thin_plugin_alone_answers_one_error_document() {
    let (_kit, ns) = common::setup("r7-alone").await;
    let dir = hereabouts_kit::local_dir().join("alone").join(&ns.name);
    std::fs::create_dir_all(&dir).expect("dir");
    let thin = dir.join("hereabouts");
    std::fs::copy(env!("CARGO_BIN_EXE_hereabouts"), &thin).expect("copy the thin plugin");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig");
    let nowhere = dir.join("absent.sock");
    for command in ["ADD", "DEL", "VERSION"] {
        let mut child = Command::new(&thin)
            .env_clear()
            .envs(
                env(command, &ns.name, "web", "uid-1", "sandbox-1", &nowhere)
                    .iter()
                    .map(|(k, v)| (*k, v.as_str())),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf("198.51.100.0/28", &kubeconfig).to_string().as_bytes())
            .expect("stdin");
        let run = finish(child);
        assert_eq!(
            run.raw.trim().lines().count(),
            1,
            "{command}: {:?}",
            run.raw
        );
        if command == "VERSION" {
            assert!(run.success, "{}", run.raw);
            continue;
        }
        assert!(!run.success, "{command}: {}", run.raw);
        assert_eq!(run.stdout["code"], 5, "{command}: {}", run.raw);
        assert!(
            run.stdout["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("hereabouts-direct"),
            "{command}: {}",
            run.raw
        );
    }
}

/// The controller's IPClaim watch, by its request line.
fn claim_watch(line: &str) -> bool {
    line.starts_with("GET ") && line.contains("/ipclaims?") && line.contains("watch=true")
}
