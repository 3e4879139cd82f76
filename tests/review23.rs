//! review23: adversarial tests of 49b054c (`fence` in
//! crates/node/src/cni/verbs.rs: a DEL that finds its attachment's claim
//! another sandbox's writes a new `hereabouts.dev/fenced-by-del` on the
//! version it read, so that a takeover its own ADD sent before giving up
//! fails its precondition instead of landing after the DEL).
//!
//! The question: the fence stops a takeover *request* still on the wire;
//! does it stop the takeover? `take_over` answers a 409 by reading the
//! claim again and deciding again, and in the node agent an ADD is not
//! over when the runtime gives up on it: the agent runs each request to
//! its own deadline (`bounded`: `request_timeout` + 5 s) whether or not
//! the plugin process that asked is still there
//! (crates/node/src/agent/server.rs `connection`). A runtime that kills
//! the plugin (libcni runs it under the CRI request's context: a cancelled
//! or timed-out RunPodSandbox kills it) then runs DEL at once, while the
//! agent's ADD of the same sandbox is still running.
//!
//! Every test runs the real node agent (`hereabouts-install
//! --agent-only`), the real plugin binary and a real controller replica
//! against the kit's real API server. One request of the agent is held
//! by a plain TCP forwarder (`tests/common/shaping.rs`) until released;
//! everything else passes at once.
//!
//! 1. `a_takeover_outliving_its_killed_plugin_lands_after_the_fence`
//!    (invariant 2, the fence's own promise; FAILS at 49b054c): the
//!    fence makes the held takeover meet 409, and `take_over`, still
//!    running in the agent, reads the fenced claim and takes it over
//!    again, after the DEL returned; the controller answers it for the
//!    torn-down sandbox. Not covered before: review22 held the takeover
//!    past an ADD that the agent itself gave up (its `bounded` dropped
//!    `take_over`), so no retry could follow the fence.
//! 2. `a_create_outliving_its_killed_plugin_is_answered_after_del`
//!    (invariant 2; FAILS at 49b054c and before, the same cause without
//!    a takeover): the agent's create lands after the DEL of its sandbox
//!    found nothing; its `answer-by` is the agent's deadline, still to
//!    come, so the controller answers it. Not covered before: the late
//!    claims of review21/22 all carry an `answer-by` already past.
//!
//! Fixed: 1 (the fence names its sandbox and when, `<nanos>/<container>`;
//! `take_over` leaves a claim its own sandbox's DEL fenced after the ADD
//! began). Fixed later: 2 (crates/node/src/agent/overtaken.rs: a DEL that
//! arrives while the agent still runs an ADD of the same attachment is run
//! again when that ADD ends; by then the ADD's create has landed, and the
//! DEL finds and deletes it, or it can only land past the ADD's
//! `answer-by`, and the controller deletes it unanswered). The claim may be
//! answered for a moment between its landing and the ADD's end; it is then
//! released, never given to another pod.
//!
//! Run (with the kit up): `cargo test --locked --test review23 --
//! --test-threads=1`.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hereabouts_api::{FENCED_BY_DEL_ANNOTATION, IPClaim, claim_name};
use hereabouts_kit::{TestNamespace, eventually};
use kube::ResourceExt;
use kube::api::Api;

use common::agent::{Agent, conf, env, late_claim, pod, run_verb, spawn_plugin};
use common::shaping::{Hold, holding};
use common::{pool_allocations, ready_addresses, shaping};

/// The path of the IPClaims of `ns`.
fn claims_path(ns: &str) -> String {
    format!("/apis/hereabouts.dev/v1alpha1/namespaces/{ns}/ipclaims")
}

/// The node agent for `ns`, reaching the API server through a forwarder
/// that holds its first `method` request on `path` while the returned hold
/// is armed; its kubeconfig and the proxy to keep alive with it.
async fn agent_holding(
    ns: &TestNamespace,
    method: &'static str,
    path: String,
) -> (Agent, std::path::PathBuf, Arc<Hold>, tokio::process::Child) {
    let hold = Arc::new(Hold::default());
    let (proxy, upstream) = shaping::kubectl_proxy().await;
    let port = shaping::forwarder(upstream, holding(method, path, hold.clone()), |_, _| {
        shaping::Down::Pass
    })
    .await;
    let kubeconfig = shaping::plain_kubeconfig(&format!("{}-agent", ns.name), port, &ns.name);
    let agent = Agent::start(ns, "agent", &common::agent::socket_of(ns), &kubeconfig);
    (agent, kubeconfig, hold, proxy)
}

/// The runtime gives up on an ADD: it kills the plugin process (libcni
/// runs it under the request's context) and reaps it.
async fn kill(mut plugin: std::process::Child) {
    tokio::task::spawn_blocking(move || {
        plugin.kill().expect("kill the plugin");
        plugin.wait().expect("reap the plugin");
    })
    .await
    .expect("killed");
}

/// The user's check once the DEL of a torn-down sandbox has returned and a
/// controller leads: within 20 s no claim of pod `p`'s attachment is left
/// (answered or not) and the pool holds nothing for the pod. The claim
/// and the pool as they are then, when the check fails.
async fn nothing_left_for(
    client: &kube::Client,
    claims: &Api<IPClaim>,
    ns: &str,
    name: &str,
    pool: &str,
) -> Result<(), String> {
    let ours = format!("{ns}/p");
    let settled = eventually(
        "nothing committed for the torn-down sandbox",
        20,
        || async {
            let claim = claims.get_opt(name).await.expect("read");
            let held = pool_allocations(client, ns, pool).await;
            (claim.is_none() && !held.values().any(|podref| *podref == ours)).then_some(())
        },
    )
    .await;
    if settled.is_ok() {
        return Ok(());
    }
    let claim = claims.get_opt(name).await.expect("read");
    let held = pool_allocations(client, ns, pool).await;
    Err(format!(
        "the claim is {:?} (container, Ready addresses, annotations) and the pool holds {held:?}",
        claim.as_ref().map(|c| (
            c.spec.container_id.clone(),
            ready_addresses(c),
            c.annotations().clone()
        )),
    ))
}

/// Attack 1 (invariant 2 and the fence's promise: "a takeover this
/// sandbox's ADD sent before it gave up can no longer land after the DEL
/// and get an address committed for a torn-down sandbox").
///
/// Sandbox-1's claim of pod `p` landed late (its `answer-by` past), no
/// controller leads (a failover), as in review22's attack 2. Sandbox-2's
/// ADD runs through the agent: its create meets the claim (409),
/// `take_over` reads it (version V1) and sends its replace, which the API
/// server is slow to apply (held). The runtime gives up on the ADD: it
/// kills the plugin process and runs DEL of sandbox-2 through the agent.
/// The DEL reads V1 (sandbox-1's), fences it (V2) and returns success;
/// the runtime tears sandbox-2 down. Then the held replace reaches the
/// API server and meets 409, exactly as the fence intends; but the ADD is
/// still running in the agent (its `bounded` deadline is `request_timeout`
/// + 5 s, the plugin's death is not noticed), and `take_over` answers the
/// 409 by reading again (V2, sandbox-1's: "another spec") and replacing
/// again, now with V2 as precondition: it lands. A controller leads again
/// and answers the claim: an address committed for the torn-down
/// sandbox-2, kept while the pod exists.
///
/// Cause: crates/node/src/cni/verbs.rs `take_over` (the `Err(409) if
/// attempts < TAKEOVER_ATTEMPTS => {}` arm of the replace) re-decides on
/// a version the fence wrote, and crates/node/src/agent/server.rs
/// `connection` keeps running `agent.answer` after its client is gone:
/// the fence only fences requests, not a live `take_over`. Fixes: the
/// fence names the DEL's sandbox (`fenced-by-del: <container id>`) and
/// `take_over` (and the wait for the answer) gives up on a claim fenced
/// by its own sandbox; and/or the agent cancels (and awaits) an ADD of a
/// sandbox when that sandbox's DEL arrives, and an ADD whose client hung
/// up.
///
/// The user's check: once sandbox-2's DEL has returned and a controller
/// leads, no claim is answered for sandbox-2 and the pool holds nothing
/// for the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_outliving_its_killed_plugin_lands_after_the_fence() {
    let (kit, ns) = common::setup("r23-kill").await;
    let client = kit.client.clone();
    let (network, range, pool) = ("r23kill", "100.64.110.0/28", "100.64.110.0-28");
    let name = claim_name("p", "net1", network);
    let claim_path = format!("{}/{name}", claims_path(&ns.name));
    let (agent, kubeconfig, put, _proxy) = agent_holding(&ns, "PUT", claim_path).await;
    let uid = pod(&client, &ns.name, "p").await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let late = late_claim(&claims, &ns.name, &uid, network, range).await;
    // Sandbox-2's ADD; its takeover's replace is held.
    put.armed.store(true, Ordering::SeqCst);
    let stdin = conf(network, range, &kubeconfig, "30s");
    let add = spawn_plugin(
        &env("ADD", &ns.name, "p", &uid, "sandbox-2", &agent.socket),
        &stdin,
    );
    put.wait_seen("sandbox-2's ADD takes the claim over").await;
    // The runtime gives up on it, DELs sandbox-2, tears it down.
    kill(add).await;
    let del = run_verb("DEL", &ns.name, &uid, "sandbox-2", &agent.socket, &stdin)
        .await
        .expect("DEL");
    assert!(del.success, "sandbox-2's DEL: {}", del.raw);
    let fenced = claims.get(&name).await.expect("the claim is there");
    assert_eq!(
        (fenced.spec.container_id.as_str(), fenced.uid()),
        ("sandbox-1", late.uid()),
        "the DEL left sandbox-1's claim"
    );
    assert!(
        fenced.annotations().contains_key(FENCED_BY_DEL_ANNOTATION)
            && fenced.resource_version() != late.resource_version(),
        "the DEL fenced the claim: {:?}",
        fenced.annotations()
    );
    // The held replace reaches the API server.
    put.go.store(true, Ordering::SeqCst);
    let after = eventually("the claim after the held replace", 10, || async {
        let now = claims.get_opt(&name).await.expect("read");
        match &now {
            Some(c) if c.resource_version() == fenced.resource_version() => None,
            _ => Some(now),
        }
    })
    .await
    .ok()
    .flatten()
    .map(|c| (c.spec.container_id.clone(), c.annotations().clone()));
    // A controller leads again.
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    if let Err(left) = nothing_left_for(&client, &claims, &ns.name, &name, pool).await {
        panic!(
            "after sandbox-2's plugin was killed and its DEL returned, {left}; after the fence the claim became {after:?}"
        );
    }
    drop(controller);
}

/// Attack 2 (invariant 2 and the `answer-by` contract: a create that
/// lands after its ADD failed and after the DEL that found nothing is
/// not answered).
///
/// A controller leads. Sandbox-1's ADD of pod `p` runs through the agent;
/// its create is slow to be applied (held). The runtime gives up on the
/// ADD: it kills the plugin process and runs DEL of sandbox-1 through the
/// agent, which finds no claim and returns success; the runtime tears
/// sandbox-1 down. Then the create lands. Its `answer-by` is the agent's
/// deadline (`request_timeout` + 5 s after the ADD reached the agent),
/// still to come: the controller finds it in time and answers it, for a
/// sandbox the runtime tore down. The agent's ADD then "succeeds" to a
/// closed socket; nothing will DEL sandbox-1 again.
///
/// Cause: the same as attack 1, without a takeover: the agent's ADD
/// outlives the plugin that asked (crates/node/src/agent/server.rs
/// `connection`), and `answer-by` (crates/node/src/cni/verbs.rs `add`)
/// is the agent's deadline, not the moment the runtime stopped waiting;
/// there is no claim for the DEL to fence. Fixed by the agent keeping
/// which running ADD a DEL of its attachment overtook, and running that
/// DEL again when the ADD ends (crates/node/src/agent/overtaken.rs): the
/// claim the late create made is then found and deleted.
///
/// The user's check: once sandbox-1's DEL has returned, no claim is
/// answered for it and the pool holds nothing for the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_outliving_its_killed_plugin_is_answered_after_del() {
    let (kit, ns) = common::setup("r23-create").await;
    let client = kit.client.clone();
    let (network, range, pool) = ("r23create", "100.64.111.0/28", "100.64.111.0-28");
    let name = claim_name("p", "net1", network);
    let (agent, kubeconfig, post, _proxy) = agent_holding(&ns, "POST", claims_path(&ns.name)).await;
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    let uid = pod(&client, &ns.name, "p").await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    // Sandbox-1's ADD; its create is held.
    post.armed.store(true, Ordering::SeqCst);
    let stdin = conf(network, range, &kubeconfig, "30s");
    let add = spawn_plugin(
        &env("ADD", &ns.name, "p", &uid, "sandbox-1", &agent.socket),
        &stdin,
    );
    post.wait_seen("sandbox-1's ADD files its claim").await;
    // The runtime gives up on it, DELs sandbox-1, tears it down.
    kill(add).await;
    let del = run_verb("DEL", &ns.name, &uid, "sandbox-1", &agent.socket, &stdin)
        .await
        .expect("DEL");
    assert!(del.success, "sandbox-1's DEL: {}", del.raw);
    assert!(
        claims.get_opt(&name).await.expect("read").is_none(),
        "the DEL found no claim"
    );
    // The held create lands.
    post.go.store(true, Ordering::SeqCst);
    // (A fixed controller may delete it again at once: not waited for.)
    let _ = eventually("the held create lands", 5, || async {
        claims.get_opt(&name).await.expect("read").map(drop)
    })
    .await;
    if let Err(left) = nothing_left_for(&client, &claims, &ns.name, &name, pool).await {
        panic!("after sandbox-1's plugin was killed and its DEL returned, {left}");
    }
    drop(controller);
}
