//! review21: adversarial tests of the node agent (`hereabouts-install
//! --agent-only`, serving the plugin on a unix socket from one watch of its
//! node's claims) and of the thin plugin's direct path beside it. Each test
//! runs the real agent and plugin binaries and a real controller replica
//! against the kit's real API server; where timing is shaped, a plain TCP
//! forwarder sits between the agent and `kubectl proxy`
//! (`tests/common/shaping.rs`).
//!
//! Attacks (each asserts what a user would check: every answered address
//! is in its pool for its pod, no address twice, nothing left behind):
//!
//! 1. `add_del_add_of_one_sandbox_through_a_lagging_agent`: ADD, DEL and
//!    ADD again of the same sandbox (Multus' dynamic networks do this),
//!    cycle after cycle, through an agent whose watch lags, so that the
//!    deleted claim's `Ready` (same name, old UID) and the DEL's stale
//!    view arrive while the new ADD waits; the re-ADD doubled (a repeated
//!    ADD meets the claim the other one just made). Invariants 2 and 3.
//! 2. `exactly_n_addresses_two_networks_per_pod_through_the_agent`: a storm
//!    of pods with two networks each, every attachment at once through the
//!    agent, on two ranges of exactly as many addresses as pods; then one
//!    pod too many ("exhausted" and nothing else), a DEL, and that pod
//!    served. Invariants 1 and 2, and no failure but exhaustion.
//! 3. `the_agent_and_the_direct_path_for_one_attachment_at_once`: the
//!    socket present for one call and absent for the other (an agent
//!    restarting): the same ADD through the agent and through the direct
//!    path at once; the old sandbox's DEL (direct) racing the new
//!    sandbox's ADD through both; then that sandbox's DEL (agent) racing a
//!    repeat of its ADD (direct). Claims and pools must agree after each
//!    race: an existing claim's address is in the pool for its pod, a
//!    deleted one's is given back. Invariants 1, 2, 3.
//!
//! 4. `a_relist_of_the_agents_watch_after_claims_were_remade_in_the_gap`:
//!    the agent's watch goes quiet while claims are deleted and made again
//!    under their names (new UIDs), and the gap ends in a 410 and a relist
//!    while an ADD waits across it; DELs then act on the relisted cache.
//!    Invariants 2 and 3.
//!
//! All four held at HEAD 749f447 (no break found); each exercises a path
//! the earlier agent tests (node_agent.rs, review7.rs) do not.
//!
//! Found (liveness, no invariant broken) and fixed beside it:
//!
//! 5. `a_repeated_add_takes_its_sandboxs_late_claim_over`: a repeated ADD
//!    of one sandbox that met its attachment's unanswered claim under an
//!    earlier ADD's passed deadline used it as it was, so the controller
//!    deleted it as abandoned and the ADD failed with code 11; it failed
//!    at 749f447 and passes since the repeated ADD takes such a claim over
//!    with its own deadline (`take_over` in crates/node/src/cni/verbs.rs).
//!
//! Run: `cargo test --locked --test review21 -- --test-threads=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hereabouts_api::IPClaim;
use hereabouts_kit::eventually;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use common::agent::{
    Agent, Run, code_of, finish, late_claim_of_sandbox_1, pod, run_verb, setup, spawn_plugin,
};
use common::{ip_of, pool_allocations, ready_addresses, shaping};

/// A macvlan attachment on `network` (its CNI name), range `range`.
fn conf(network: &str, range: &str, kubeconfig: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": network, "type": "macvlan", "master": "eth1",
           "ipam": {"type": "hereabouts", "range": range, "request_timeout": "30s",
                    "kubernetes": {"kubeconfig": kubeconfig}}})
}

/// The CNI environment of `command` for interface `ifname` of pod `pod`
/// (UID `uid`) in `ns`, sandbox `container`, on the agent's node, naming
/// `socket` (an absent one: the direct path).
fn cni(
    command: &str,
    ns: &str,
    pod: &str,
    uid: &str,
    container: &str,
    ifname: &str,
    socket: &Path,
) -> Vec<(&'static str, String)> {
    let mut env = common::agent::env(command, ns, pod, uid, container, socket);
    for (key, value) in &mut env {
        if *key == "CNI_IFNAME" {
            *value = ifname.to_owned();
        }
    }
    env
}

/// The first address an ADD printed.
fn address_of(run: &Run) -> String {
    run.stdout["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {}", run.raw))
        .to_owned()
}

/// Runs the plugin calls at once (each its own process), in order.
fn at_once(calls: Vec<(Vec<(&'static str, String)>, Value)>) -> Vec<Run> {
    let children: Vec<_> = calls
        .iter()
        .map(|(env, stdin)| spawn_plugin(env, stdin))
        .collect();
    children.into_iter().map(finish).collect()
}

/// A plain-HTTP forwarder to `upstream` that delivers the agent's watch of
/// its node's claims (an IPClaim watch by label) `lag` late while `on`.
async fn lagging_claim_watch(upstream: u16, lag: Duration, on: Arc<AtomicBool>) -> u16 {
    shaping::forwarder(
        upstream,
        |_, _, chunk| shaping::at_once(chunk),
        move |_, line| {
            if node_watch(line) && on.load(Ordering::SeqCst) {
                shaping::Down::Delay(lag)
            } else {
                shaping::Down::Pass
            }
        },
    )
    .await
}

/// The pool `pool` of `ns`: address -> podref (holds and cooldowns left
/// out; two entries of one address panic).
async fn holders(client: &kube::Client, ns: &str, pool: &str) -> BTreeMap<IpAddr, String> {
    pool_allocations(client, ns, pool).await
}

/// The claims of `ns` by (pod name, interface).
async fn claims_by_pod(claims: &Api<IPClaim>) -> BTreeMap<(String, String), IPClaim> {
    claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .map(|c| ((c.spec.pod.name.clone(), c.spec.interface.clone()), c))
        .collect()
}

/// Attack 1 (invariants 2 and 3; "an ADD repeated after a DEL", "an old
/// claim's Ready status of the same name", "a claim deleted and recreated
/// under the same name with a new uid", through a lagging watch).
///
/// Six pods, four cycles after a first ADD. Each cycle: every pod's
/// sandbox `sb` is DELed through the agent, then ADDed again at once,
/// twice (the second ADD meets the claim the first just made, through the
/// 409 path). The agent's watch delivers everything 2 s
/// late, so while a re-ADD waits for its new claim (new UID) the watch
/// still shows the deleted claim's `Ready` of the same name, then its
/// deletion; and the DEL deletes from a view that may be one version
/// behind.
///
/// Checked when each ADD returns: its address is in the pool, for that
/// pod (durable before the runtime is told); both ADDs of a pair print the
/// same address. At the end: one entry per pod, the one its claim and last
/// ADD name, and no address twice.
///
/// Held at HEAD: the agent filters its waiter's events by UID (verbs.rs
/// wait_on_shared_watch), the DEL's fast path deletes with UID and version
/// preconditions, and the controller skips the deleted claim's release
/// when the remade claim (same sandbox) asks for the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_del_add_of_one_sandbox_through_a_lagging_agent() {
    let (client, ns, _controller, _kubeconfig, socket) = setup("r21-readd").await;
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let on = Arc::new(AtomicBool::new(true));
    let port = lagging_claim_watch(upstream, Duration::from_secs(2), on).await;
    let agent_kubeconfig = shaping::plain_kubeconfig(&format!("{}-lag", ns.name), port, &ns.name);
    let _agent = Agent::start(&ns, "agent", &socket, &agent_kubeconfig);
    const PODS: usize = 6;
    const CYCLES: usize = 4;
    let mut uids = Vec::new();
    for i in 0..PODS {
        uids.push(pod(&client, &ns.name, &format!("d{i}")).await);
    }
    let range = "100.64.90.0/27";
    let pool = "100.64.90.0-27";
    let stdin = conf("r21readd", range, &agent_kubeconfig);
    let call = |command: &str, i: usize| {
        (
            cni(
                command,
                &ns.name,
                &format!("d{i}"),
                &uids[i],
                "sb",
                "net1",
                &socket,
            ),
            stdin.clone(),
        )
    };
    let mut last: BTreeMap<usize, String> = BTreeMap::new();
    // The first ADD of every pod.
    let runs = at_once((0..PODS).map(|i| call("ADD", i)).collect());
    let held = holders(&client, &ns.name, pool).await;
    for (i, run) in runs.iter().enumerate() {
        assert!(run.success, "d{i} first ADD: {}", run.raw);
        let address = address_of(run);
        assert_eq!(
            held.get(&ip_of(&address)).map(String::as_str),
            Some(format!("{}/d{i}", ns.name).as_str()),
            "d{i}: ADD printed {address}; the pool holds {held:?}"
        );
        last.insert(i, address);
    }
    for cycle in 0..CYCLES {
        // DEL every pod's sandbox through the agent.
        let runs = at_once((0..PODS).map(|i| call("DEL", i)).collect());
        for (i, run) in runs.iter().enumerate() {
            assert!(run.success, "cycle {cycle} d{i} DEL: {}", run.raw);
        }
        // ADD the same sandbox again at once, twice per pod.
        let runs = at_once(
            (0..PODS)
                .flat_map(|i| [call("ADD", i), call("ADD", i)])
                .collect(),
        );
        let held = holders(&client, &ns.name, pool).await;
        for (i, pair) in runs.chunks(2).enumerate() {
            let mut printed = BTreeSet::new();
            for run in pair {
                if run.success {
                    let address = address_of(run);
                    assert_eq!(
                        held.get(&ip_of(&address)).map(String::as_str),
                        Some(format!("{}/d{i}", ns.name).as_str()),
                        "cycle {cycle} d{i}: ADD printed {address}, the pool holds {held:?}"
                    );
                    printed.insert(address);
                } else {
                    // Only "try again later" (the other ADD of the pair
                    // replaced a refused claim, say): the runtime retries.
                    assert_eq!(code_of(run), 11, "cycle {cycle} d{i}: {}", run.raw);
                }
            }
            assert!(
                printed.len() <= 1,
                "cycle {cycle} d{i}: two ADDs of one sandbox printed {printed:?}"
            );
            match printed.pop_first() {
                Some(address) => {
                    last.insert(i, address);
                }
                None => {
                    let again = at_once(vec![call("ADD", i)]);
                    assert!(again[0].success, "cycle {cycle} d{i}: {}", again[0].raw);
                    last.insert(i, address_of(&again[0]));
                }
            }
        }
    }
    // Settled: every claim Ready with its last ADD's address, the pool
    // holding exactly those, once each.
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_pod = claims_by_pod(&claims).await;
    let held = holders(&client, &ns.name, pool).await;
    for (i, address) in &last {
        let claim = by_pod
            .get(&(format!("d{i}"), "net1".to_owned()))
            .unwrap_or_else(|| panic!("d{i}: no claim after its last ADD succeeded"));
        assert_eq!(
            ready_addresses(claim),
            Some(vec![address.clone()]),
            "d{i}: the runtime was last given {address}"
        );
        assert_eq!(
            held.get(&ip_of(address)).map(String::as_str),
            Some(format!("{}/d{i}", ns.name).as_str()),
            "d{i}: {address} in the pool ({held:?})"
        );
    }
    assert_eq!(
        held.len(),
        PODS,
        "one entry per pod, nothing left of the deleted claims: {held:?}"
    );
}

/// Attack 2 (invariants 1 and 2; "a storm on exactly N addresses", "many
/// networks per pod at once"): two /28 ranges (14 addresses each) and 14
/// pods with two interfaces each (net1 on one range, net2 on the other);
/// all 28 ADDs at once through the agent. Every one must succeed, no
/// address twice, each in its pool for its pod. A 15th pod then gets
/// "exhausted" (100) on both networks and no other error, and no entry;
/// after one pod's DEL of both interfaces (its pod object stays, so its
/// name keeps no hold), the 15th pod's retry is served, with addresses no
/// one else holds.
///
/// Held at HEAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_n_addresses_two_networks_per_pod_through_the_agent() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r21-storm").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    const N: usize = 14;
    let networks = [
        ("r21a", "net1", "100.64.91.0/28", "100.64.91.0-28"),
        ("r21b", "net2", "100.64.92.0/28", "100.64.92.0-28"),
    ];
    let mut uids = Vec::new();
    for i in 0..=N {
        uids.push(pod(&client, &ns.name, &format!("s{i}")).await);
    }
    let call = |command: &str, i: usize, container: &str, n: usize| {
        let (network, ifname, range, _) = networks[n];
        (
            cni(
                command,
                &ns.name,
                &format!("s{i}"),
                &uids[i],
                container,
                ifname,
                &socket,
            ),
            conf(network, range, &kubeconfig),
        )
    };
    let runs = at_once(
        (0..N)
            .flat_map(|i| [call("ADD", i, "sb-1", 0), call("ADD", i, "sb-1", 1)])
            .collect(),
    );
    let mut answered: Vec<BTreeMap<IpAddr, String>> = vec![BTreeMap::new(), BTreeMap::new()];
    for (k, run) in runs.iter().enumerate() {
        let (i, n) = (k / 2, k % 2);
        assert!(
            run.success,
            "s{i} {}: every attachment fits: {}",
            networks[n].1, run.raw
        );
        let ip = ip_of(&address_of(run));
        if let Some(other) = answered[n].insert(ip, format!("{}/s{i}", ns.name)) {
            panic!("{ip} answered to {other} and to s{i}");
        }
    }
    for (n, (_, ifname, _, pool)) in networks.iter().enumerate() {
        let held = holders(&client, &ns.name, pool).await;
        assert_eq!(
            held, answered[n],
            "{ifname}: the pool holds what was answered"
        );
    }
    // One pod too many: exhausted, on both networks, nothing held for it.
    let extra = at_once(vec![call("ADD", N, "sb-1", 0), call("ADD", N, "sb-1", 1)]);
    for (n, run) in extra.iter().enumerate() {
        assert!(!run.success, "s{N} {}: {}", networks[n].1, run.raw);
        assert_eq!(code_of(run), 100, "only 'exhausted': {}", run.raw);
    }
    // The runtime's DEL of the failed sandbox, then one pod's teardown.
    let dels = at_once(vec![
        call("DEL", N, "sb-1", 0),
        call("DEL", N, "sb-1", 1),
        call("DEL", 0, "sb-1", 0),
        call("DEL", 0, "sb-1", 1),
    ]);
    for run in &dels {
        assert!(run.success, "DEL: {}", run.raw);
    }
    // The extra pod's next sandbox is served (the runtime may have to ask
    // again while s0's release lands).
    for n in 0..2 {
        let mut served = None;
        for _ in 0..10 {
            let run = at_once(vec![call("ADD", N, "sb-2", n)]).remove(0);
            if run.success {
                served = Some(address_of(&run));
                break;
            }
            assert!(
                [11, 100].contains(&code_of(&run)),
                "s{N} {}: {}",
                networks[n].1,
                run.raw
            );
            let _ = at_once(vec![call("DEL", N, "sb-2", n)]);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let served = served.unwrap_or_else(|| panic!("s{N} {} never served", networks[n].1));
        let ip = ip_of(&served);
        let before = answered[n].remove(&ip);
        assert!(
            before.is_none() || before == Some(format!("{}/s0", ns.name)),
            "{ip} given to s{N} while {before:?} holds it"
        );
        answered[n].retain(|_, podref| *podref != format!("{}/s0", ns.name));
        answered[n].insert(ip, format!("{}/s{N}", ns.name));
    }
    for (n, (_, ifname, _, pool)) in networks.iter().enumerate() {
        let held = eventually("the pool settles", 20, || async {
            let held = holders(&client, &ns.name, pool).await;
            (held == answered[n]).then_some(held)
        })
        .await;
        assert!(
            held.is_ok(),
            "{ifname}: the pool holds {:?}, the runtime was given {:?}",
            holders(&client, &ns.name, pool).await,
            answered[n]
        );
    }
}

/// Attack 3 (invariants 1, 2, 3; "an agent plus a direct-path plugin for
/// the same claim", "the socket absent/present flipping", "a DEL racing an
/// ADD of the same sandbox"). Eight pods, three races each:
///
/// 1. sandbox sb-1's ADD through the agent and through the direct path at
///    once: both print the same address, which the pool holds for the pod;
/// 2. sb-1's DEL (direct) racing sb-2's ADD through the agent and through
///    the direct path at once: the two sb-2 ADDs that succeed print the
///    same address; afterwards the claim is sb-2's, Ready with it, and the
///    pool holds it (a DEL of an old sandbox never takes the new one's);
/// 3. sb-2's DEL (agent) racing a repeat of sb-2's ADD (direct): either
///    order is the runtime's business, but the claims and pools must agree
///    once it settles: a claim left is Ready with what the ADD printed, and
///    its address is in the pool for its pod; a pod whose claim went has no
///    entry (its release was not lost between the two).
///
/// Held at HEAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_and_the_direct_path_for_one_attachment_at_once() {
    let (client, ns, _controller, kubeconfig, socket) = setup("r21-mixed").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let absent = socket.with_file_name("absent.sock");
    const PODS: usize = 8;
    let mut uids = Vec::new();
    for i in 0..PODS {
        uids.push(pod(&client, &ns.name, &format!("m{i}")).await);
    }
    let pool = "100.64.93.0-24";
    let stdin = conf("r21mixed", "100.64.93.0/24", &kubeconfig);
    let call = |command: &str, i: usize, container: &str, through: &Path| {
        (
            cni(
                command,
                &ns.name,
                &format!("m{i}"),
                &uids[i],
                container,
                "net1",
                through,
            ),
            stdin.clone(),
        )
    };
    let podref = |i: usize| format!("{}/m{i}", ns.name);
    // 1. The same ADD through the agent and the direct path at once.
    let runs = at_once(
        (0..PODS)
            .flat_map(|i| {
                [
                    call("ADD", i, "sb-1", &socket),
                    call("ADD", i, "sb-1", &absent),
                ]
            })
            .collect(),
    );
    let held = holders(&client, &ns.name, pool).await;
    for (i, pair) in runs.chunks(2).enumerate() {
        assert!(pair[0].success, "m{i} agent: {}", pair[0].raw);
        assert!(pair[1].success, "m{i} direct: {}", pair[1].raw);
        assert_eq!(
            address_of(&pair[0]),
            address_of(&pair[1]),
            "m{i}: one attachment, two answers"
        );
        assert_eq!(
            held.get(&ip_of(&address_of(&pair[0]))),
            Some(&podref(i)),
            "m{i}: {held:?}"
        );
    }
    // 2. The old sandbox's DEL racing the new sandbox's ADD, both ways.
    let runs = at_once(
        (0..PODS)
            .flat_map(|i| {
                [
                    call("DEL", i, "sb-1", &absent),
                    call("ADD", i, "sb-2", &socket),
                    call("ADD", i, "sb-2", &absent),
                ]
            })
            .collect(),
    );
    let mut sb2 = BTreeMap::new();
    for (i, three) in runs.chunks(3).enumerate() {
        assert!(three[0].success, "m{i} DEL sb-1: {}", three[0].raw);
        let mut printed = BTreeSet::new();
        for run in &three[1..] {
            if run.success {
                printed.insert(address_of(run));
            } else {
                assert_eq!(code_of(run), 11, "m{i} ADD sb-2: {}", run.raw);
            }
        }
        assert!(printed.len() <= 1, "m{i}: sb-2 printed {printed:?}");
        let address = match printed.pop_first() {
            Some(a) => a,
            None => {
                let again = at_once(vec![call("ADD", i, "sb-2", &socket)]).remove(0);
                assert!(again.success, "m{i} ADD sb-2 again: {}", again.raw);
                address_of(&again)
            }
        };
        sb2.insert(i, address);
    }
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let by_pod = claims_by_pod(&claims).await;
    let held = holders(&client, &ns.name, pool).await;
    for (i, address) in &sb2 {
        let claim = by_pod
            .get(&(format!("m{i}"), "net1".to_owned()))
            .unwrap_or_else(|| panic!("m{i}: no claim after sb-2's ADD"));
        assert_eq!(claim.spec.container_id, "sb-2", "m{i}");
        assert_eq!(ready_addresses(claim), Some(vec![address.clone()]), "m{i}");
        assert_eq!(held.get(&ip_of(address)), Some(&podref(*i)), "m{i}");
    }
    // 3. sb-2's DEL (agent) racing a repeat of its ADD (direct).
    let mut last = BTreeMap::new();
    let runs = at_once(
        (0..PODS)
            .flat_map(|i| {
                [
                    call("DEL", i, "sb-2", &socket),
                    call("ADD", i, "sb-2", &absent),
                ]
            })
            .collect(),
    );
    for (i, pair) in runs.chunks(2).enumerate() {
        assert!(pair[0].success, "m{i} DEL sb-2: {}", pair[0].raw);
        if pair[1].success {
            last.insert(i, address_of(&pair[1]));
        } else {
            assert_eq!(code_of(&pair[1]), 11, "m{i}: {}", pair[1].raw);
        }
    }
    // Settled: claims and pool agree.
    let agreed = eventually("claims and the pool agree", 30, || async {
        let by_pod = claims_by_pod(&claims).await;
        let held = holders(&client, &ns.name, pool).await;
        let mut want = BTreeMap::new();
        for ((pod, _), claim) in &by_pod {
            let addresses = ready_addresses(claim)?;
            // The ADD that left this claim printed what it holds.
            let i: usize = pod.trim_start_matches('m').parse().ok()?;
            if let Some(printed) = last.get(&i) {
                assert_eq!(
                    &addresses,
                    &vec![printed.clone()],
                    "{pod}: its ADD printed {printed}"
                );
            }
            for a in addresses {
                want.insert(ip_of(&a), format!("{}/{pod}", ns.name));
            }
        }
        (want == held).then_some(())
    })
    .await;
    if agreed.is_err() {
        let by_pod = claims_by_pod(&claims).await;
        let claimed: Vec<_> = by_pod
            .iter()
            .map(|((pod, _), c)| (pod.clone(), c.spec.container_id.clone(), ready_addresses(c)))
            .collect();
        panic!(
            "claims {claimed:?} but the pool holds {:?}",
            holders(&client, &ns.name, pool).await
        );
    }
}

/// Attack 4 (invariants 2, 3; "the agent's watch relisting mid-ADD", "a
/// claim deleted and recreated under the same name with a new uid"): the
/// agent's watch goes quiet, and in the gap pods g0 and g1 are DELed and
/// ADDed again in the same sandbox (their claims made again, new UIDs), g2
/// is DELed only, g3 is left alone. The gap ends in a 410 and a relist
/// (the agent's cache swaps in the list: g0's and g1's old UIDs are told
/// deleted, g2 leaves it) while a new pod g4's ADD waits across it. Then
/// g0 is DELed through the agent (its cache now holds the relisted claim)
/// and ADDed once more, and g1 is ADDed again (a repeated ADD: the same
/// address).
///
/// Checked: every ADD's address is in the pool for its pod when it
/// returns; g1's repeated ADD prints what it printed before; at the end
/// the claims and the pool agree exactly (g2 holds nothing, nothing of the
/// old UIDs is left).
///
/// Held at HEAD: the relist's swap (watch.rs `InitDone`) and the waiters'
/// reads after a quiet watch or a relist keep the agent's answers right;
/// the only unit coverage of that swap was in watch.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relist_of_the_agents_watch_after_claims_were_remade_in_the_gap() {
    let (client, ns, _controller, _kubeconfig, socket) = setup("r21-relist").await;
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let (stall, cut, expire_next) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let port = shaping::gap_in_watch(
        upstream,
        node_watch,
        stall.clone(),
        cut.clone(),
        expire_next.clone(),
    )
    .await;
    let agent_kubeconfig = shaping::plain_kubeconfig(&format!("{}-gap", ns.name), port, &ns.name);
    let _agent = Agent::start(&ns, "agent", &socket, &agent_kubeconfig);
    let mut uids = Vec::new();
    for i in 0..5 {
        uids.push(pod(&client, &ns.name, &format!("g{i}")).await);
    }
    let pool = "100.64.94.0-24";
    let stdin = conf("r21relist", "100.64.94.0/24", &agent_kubeconfig);
    let call = |command: &str, i: usize| {
        (
            cni(
                command,
                &ns.name,
                &format!("g{i}"),
                &uids[i],
                "sb",
                "net1",
                &socket,
            ),
            stdin.clone(),
        )
    };
    let podref = |i: usize| format!("{}/g{i}", ns.name);
    let client_ref = &client;
    let ns_name = ns.name.clone();
    // An ADD's address, checked in the pool at once.
    let durable = |run: &Run, i: usize| {
        let address = address_of(run);
        let podref = podref(i);
        let ns_name = ns_name.clone();
        async move {
            let held = holders(client_ref, &ns_name, pool).await;
            assert_eq!(
                held.get(&ip_of(&address)),
                Some(&podref),
                "g{i}: ADD printed {address}; the pool holds {held:?}"
            );
            address
        }
    };
    let mut last: BTreeMap<usize, String> = BTreeMap::new();
    let runs = at_once((0..4).map(|i| call("ADD", i)).collect());
    for (i, run) in runs.iter().enumerate() {
        assert!(run.success, "g{i}: {}", run.raw);
        last.insert(i, durable(run, i).await);
    }
    // Let the watch show every answer, then open the gap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stall.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = at_once(vec![call("DEL", 0), call("DEL", 1), call("DEL", 2)]);
    for run in &runs {
        assert!(run.success, "DEL in the gap: {}", run.raw);
    }
    let runs = at_once(vec![call("ADD", 0), call("ADD", 1)]);
    for (i, run) in runs.iter().enumerate() {
        assert!(run.success, "g{i} re-ADD in the gap: {}", run.raw);
        last.insert(i, durable(run, i).await);
    }
    last.remove(&2);
    // g4's ADD waits across the relist.
    let waiting = spawn_plugin(&call("ADD", 4).0, &stdin);
    tokio::time::sleep(Duration::from_millis(200)).await;
    expire_next.store(true, Ordering::SeqCst);
    cut.store(true, Ordering::SeqCst);
    let run = tokio::task::spawn_blocking(move || finish(waiting))
        .await
        .expect("g4");
    assert!(run.success, "g4 across the relist: {}", run.raw);
    last.insert(4, durable(&run, 4).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // After the relist: g0's DEL from the relisted cache, and its ADD;
    // g1's repeated ADD.
    let del = at_once(vec![call("DEL", 0)]).remove(0);
    assert!(del.success, "g0 DEL after the relist: {}", del.raw);
    let runs = at_once(vec![call("ADD", 0), call("ADD", 1)]);
    assert!(runs[0].success, "g0: {}", runs[0].raw);
    assert!(runs[1].success, "g1: {}", runs[1].raw);
    last.insert(0, durable(&runs[0], 0).await);
    let again = durable(&runs[1], 1).await;
    assert_eq!(Some(&again), last.get(&1), "g1: a repeated ADD");
    // Settled: the claims and the pool agree, and with what was printed.
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let mut want = BTreeMap::new();
    for (i, address) in &last {
        want.insert(ip_of(address), podref(*i));
    }
    let agreed = eventually("the pool holds what the claims do", 20, || async {
        let held = holders(&client, &ns.name, pool).await;
        (held == want).then_some(())
    })
    .await;
    let by_pod = claims_by_pod(&claims).await;
    assert!(
        agreed.is_ok(),
        "printed {last:?}; the pool holds {:?}",
        holders(&client, &ns.name, pool).await
    );
    assert_eq!(by_pod.len(), 4, "g2's claim is gone, the others are there");
    for (i, address) in &last {
        let claim = &by_pod[&(format!("g{i}"), "net1".to_owned())];
        assert_eq!(ready_addresses(claim), Some(vec![address.clone()]), "g{i}");
    }
}

/// Found by this review (liveness; fixed beside it): a repeated ADD of the
/// same sandbox that meets its own attachment's claim as an earlier ADD
/// left it, unanswered and stamped with that ADD's deadline
/// (`hereabouts.dev/answer-by`) which the claim's creation is past (the
/// create of an ADD that gave up, landing after it), used that claim as it
/// was: the controller deleted it as abandoned and the repeated ADD failed
/// with "try again later". A repeated ADD now takes such a claim over with
/// its own deadline, as it already did for a claim of another spec.
///
/// Here the first ADD goes through the agent with no controller running,
/// so it gives up with its claim filed; its deadline is then moved 10 s
/// before the claim's creation (what a late landing leaves). The repeated
/// ADD of the same sandbox runs, and only then a controller starts: the
/// ADD must succeed with an address its pool holds for the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_add_takes_its_sandboxs_late_claim_over() {
    let (kit, ns) = common::setup("r21-late").await;
    let client = kit.client.clone();
    let kubeconfig = ns.kubeconfig().expect("kubeconfig");
    let socket = common::agent::socket_of(&ns);
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let (network, range, pool) = ("r21late", "100.64.93.0/28", "100.64.93.0-28");
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = conf(network, range, &kubeconfig);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let name = hereabouts_api::claim_name("p", "net1", network);
    let gave_up = late_claim_of_sandbox_1(&claims, &ns.name, &uid, &socket, &stdin, &name).await;
    let repeated = run_verb("ADD", &ns.name, &uid, "sandbox-1", &socket, &stdin);
    // Once the repeated ADD has met the claim (it took it over, or it waits
    // on it as it was), the controller starts.
    let _ = eventually("the repeated ADD takes the claim over", 10, || async {
        let c = claims.get(&name).await.ok()?;
        (c.annotations().get(hereabouts_api::ANSWER_BY_ANNOTATION) != Some(&gave_up)).then_some(())
    })
    .await;
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    let repeated = repeated.await.expect("ADD");
    assert!(
        repeated.success,
        "the repeated ADD of the sandbox gets an address: {}",
        repeated.raw
    );
    let address: IpAddr = address_of(&repeated)
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("an address");
    let held = holders(&client, &ns.name, pool).await;
    assert_eq!(
        held.get(&address).map(String::as_str),
        Some(format!("{}/p", ns.name).as_str()),
        "the pool holds {address} for the pod: {held:?}"
    );
}

/// The agent's watch of its node's claims (an IPClaim watch by label), by
/// its request line.
fn node_watch(line: &str) -> bool {
    line.starts_with("GET ")
        && line.contains("/ipclaims?")
        && line.contains("watch=true")
        && line.contains("labelSelector")
}
