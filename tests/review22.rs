//! review22: adversarial tests of 2948633 (`take_over` in
//! crates/node/src/cni/verbs.rs: the claim an ADD's create meets (409) is
//! taken over: a repeated ADD of the same sandbox now also takes its
//! attachment's unanswered claim under another `hereabouts.dev/answer-by`
//! over with its own; a replace that meets 409 reads and decides again).
//!
//! The question: can a takeover make the controller answer (commit an
//! address for) a claim whose sandbox the runtime has torn down, the very
//! thing `answer-by` exists to prevent; and does the takeover keep its
//! promise (a repeated ADD that meets a late claim succeeds)?
//!
//! Every test runs the real node agent (`hereabouts-install
//! --agent-only`), the real plugin binary and real controller replicas
//! against the kit's real API server. Where a request must land at a
//! given moment, a plain TCP forwarder sits between the agent (or the
//! controller) and `kubectl proxy` and holds that one request
//! (`tests/common/shaping.rs`); everything else passes at once.
//!
//! 1. `a_repeated_adds_late_claim_deleted_before_its_takeover_lands`
//!    (liveness, the change's own promise; FAILS at 2948633): the
//!    controller's abandoned-delete lands between the repeated ADD's read
//!    and its replace; the replace meets 409 (the API server's answer to a
//!    precondition on a deleted object), `take_over` reads again, meets
//!    404, and the ADD fails with code 11 instead of filing its claim.
//! 2. `a_takeover_held_past_its_add_and_del_is_not_answered` (the
//!    `answer-by` contract; FAILS at 2948633, and at 749f447: the "another
//!    spec" takeover predates the change): the next sandbox's takeover of
//!    the late claim lands after that ADD gave up and after its DEL, which
//!    read the claim as the older sandbox's and left it; the controller
//!    then answers the claim for the torn-down sandbox.
//! 3. `a_same_sandbox_takeover_held_past_its_del_leaves_nothing` (held):
//!    the same race on the path the change added (same spec, another
//!    deadline): the DEL of the same sandbox deletes exactly what it read
//!    and the held replace meets a deleted claim; nothing is committed.
//!
//! Fixed beside them (crates/node/src/cni/verbs.rs): `take_over` files
//! this ADD's claim again when the claim it met is gone by its read (1);
//! a DEL that finds its attachment's claim another sandbox's writes a new
//! `hereabouts.dev/fenced-by-del` on the version it read (`fence`), so a
//! takeover of its own sandbox still on its way fails its precondition
//! (2). Both tests failed before and pass since.
//!
//! Run (with the kit up): `cargo test --locked --test review22 --
//! --test-threads=1`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hereabouts_api::{ANSWER_BY_ANNOTATION, IPClaim, claim_name};
use hereabouts_kit::{TestNamespace, eventually};
use kube::ResourceExt;
use kube::api::Api;

use common::agent::{
    Agent, code_of, conf, env, finish, late_claim, late_claim_of_sandbox_1, pod, run_verb,
    spawn_plugin,
};
use common::shaping::{Hold, holding};
use common::{ip_of, pool_allocations, ready_addresses, replicas, shaping};

/// A plain-HTTP forwarder on a loopback port (returned) to `upstream` (a
/// `kubectl proxy`) that holds, while `hold` is armed, the first `method`
/// request on exactly `path` until `hold.go`, and records the API
/// server's answer to it. Unlike `shaping::forwarder` it keeps the
/// connection to the API server open after its client went away, until
/// the answer came: a request the client gave up on still reaches the
/// server and is applied there (a write held in a slow API server or on
/// the network), rather than cancelled with the client's connection.
async fn patient_forwarder(
    upstream: u16,
    method: &'static str,
    path: String,
    hold: Arc<Hold>,
) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind forwarder");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (path, hold) = (path.clone(), hold.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                // Set while the held request waits for its answer.
                let awaiting = Arc::new(AtomicBool::new(false));
                let waiting = awaiting.clone();
                let recorder = hold.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if waiting.swap(false, Ordering::SeqCst) {
                            let line = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
                            *recorder.answer.lock().expect("answer") =
                                Some(String::from_utf8_lossy(line).trim_end().to_owned());
                        }
                        // The client may be gone: the answer is read all the same.
                        let _ = client_write.write_all(&buf[..n]).await;
                    }
                });
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let first = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
                    let first = String::from_utf8_lossy(first).trim_end().to_owned();
                    let target = first.split(' ').nth(1).unwrap_or_default();
                    let target = target.split('?').next().unwrap_or_default();
                    if first.starts_with(&format!("{method} "))
                        && first.ends_with(" HTTP/1.1")
                        && target == path
                        && hold.armed.load(Ordering::SeqCst)
                        && !hold.seen.swap(true, Ordering::SeqCst)
                    {
                        // At most 60 s, the API server's own request timeout.
                        for _ in 0..1200 {
                            if hold.go.load(Ordering::SeqCst) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        awaiting.store(true, Ordering::SeqCst);
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // The client went away: the API server's connection stays
                // until a held request's answer came.
                for _ in 0..200 {
                    if !awaiting.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                drop(server_write);
            });
        }
    });
    port
}

/// The path of claim `name` in `ns`.
fn claim_path(ns: &str, name: &str) -> String {
    format!("/apis/hereabouts.dev/v1alpha1/namespaces/{ns}/ipclaims/{name}")
}

/// The node agent for `ns`, reaching the API server through a forwarder
/// that holds its replace (PUT) of claim `name` while the returned hold is
/// armed; its kubeconfig (the one a configuration names to be served by
/// it) and the proxy to keep alive with it.
async fn agent_holding_replace(
    ns: &TestNamespace,
    name: &str,
) -> (Agent, PathBuf, Arc<Hold>, tokio::process::Child) {
    let hold = Arc::new(Hold::default());
    let (proxy, upstream) = shaping::kubectl_proxy().await;
    let port = patient_forwarder(upstream, "PUT", claim_path(&ns.name, name), hold.clone()).await;
    let kubeconfig = shaping::plain_kubeconfig(&format!("{}-agent", ns.name), port, &ns.name);
    let agent = Agent::start(ns, "agent", &common::agent::socket_of(ns), &kubeconfig);
    (agent, kubeconfig, hold, proxy)
}

/// Attack 1 (liveness: CNI's contract that an ADD the cluster can answer
/// succeeds, and the promise of the change under review: "a repeated ADD
/// of the same sandbox used to wait on such a claim and then fail when it
/// was deleted; now it takes it over").
///
/// Sandbox-1's ADD gave up and its claim's create landed late (its
/// `answer-by` before its creation). The controller reads it, finds it
/// abandoned and sends its DELETE (uid + resourceVersion), which the API
/// server applies a little late (held). The runtime's repeated ADD of
/// sandbox-1 runs through the agent: its create meets the claim (409),
/// `take_over` reads it (same spec, unanswered, another deadline) and
/// sends its replace. The controller's DELETE lands first (the claim is
/// still the version it read); then the replace reaches the API server.
///
/// review15 covers the other order (the takeover first, the DELETE then
/// meets 409). This order is as real: the DELETE and the replace are both
/// decided on the same version, and whichever lands first wins.
///
/// At 2948633 the replace meets 409 (the API server answers a PUT whose
/// resourceVersion names a deleted object with Conflict), `take_over`
/// reads the claim again as its retry loop says, and that read meets 404:
/// `resent(|| api.get(..))?` turns it into code 11 ("reading IPClaim ...
/// not found") although nothing stands in the ADD's way any more. The
/// first read has the same gap when the DELETE lands between the create's
/// 409 and it (that one predates the change). Fix: a read that finds the
/// claim gone creates it again (this ADD's `claim`, whose 409 loops back
/// to the read), within the same attempts.
///
/// The user's check: the repeated ADD succeeds, and the pool holds its
/// address for the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_adds_late_claim_deleted_before_its_takeover_lands() {
    let (kit, ns) = common::setup("r22-gone").await;
    let client = kit.client.clone();
    let (network, range, pool) = ("r22gone", "100.64.100.0/28", "100.64.100.0-28");
    let name = claim_name("p", "net1", network);
    let (agent, kubeconfig, put, _agent_proxy) = agent_holding_replace(&ns, &name).await;
    let uid = pod(&client, &ns.name, "p").await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let stdin = conf(network, range, &kubeconfig, "30s");
    late_claim_of_sandbox_1(&claims, &ns.name, &uid, &agent.socket, &stdin, &name).await;
    // The controller's DELETE of the claim is held until `delete.go`.
    let delete = Arc::new(Hold::default());
    delete.armed.store(true, Ordering::SeqCst);
    let (controller, _controller_proxy) = replicas::shaped_replica(
        &ns,
        "a",
        holding("DELETE", claim_path(&ns.name, &name), delete.clone()),
        |_, _| shaping::Down::Pass,
    )
    .await;
    delete
        .wait_seen("the controller deletes the abandoned claim")
        .await;
    // The repeated ADD of sandbox-1; its replace of the claim is held.
    put.armed.store(true, Ordering::SeqCst);
    let repeated = run_verb("ADD", &ns.name, &uid, "sandbox-1", &agent.socket, &stdin);
    put.wait_seen("the repeated ADD takes the claim over").await;
    // The DELETE lands first.
    delete.go.store(true, Ordering::SeqCst);
    eventually("the abandoned claim is deleted", 20, || async {
        claims
            .get_opt(&name)
            .await
            .expect("read")
            .is_none()
            .then_some(())
    })
    .await
    .expect("the controller's DELETE landed");
    // Then the replace.
    put.go.store(true, Ordering::SeqCst);
    let replaced = put.answered("the replace is answered").await;
    let repeated = repeated.await.expect("ADD");
    assert!(
        repeated.success,
        "the repeated ADD of sandbox-1, whose late claim the controller deleted while it took it over (its replace answered {replaced:?}), gets an address: {}",
        repeated.raw
    );
    let address = repeated.stdout["ips"][0]["address"]
        .as_str()
        .expect("an address")
        .to_owned();
    let held = pool_allocations(&client, &ns.name, pool).await;
    assert_eq!(
        held.get(&ip_of(&address)),
        Some(&format!("{}/p", ns.name)),
        "the pool holds {address} for the pod: {held:?}"
    );
    drop(controller);
}

/// Attack 2 (invariant 2 and the `answer-by` contract: no address is
/// committed for a sandbox the runtime has torn down).
///
/// Sandbox-1's ADD gave up, its DEL found nothing, and then its create
/// landed (the late claim: `answer-by` before its creation). The pod's
/// next sandbox, sandbox-2, ADDs through the agent: its create meets the
/// claim (409) and `take_over` replaces spec, owner and `answer-by` (its
/// own deadline D2). That replace is held on the wire (an API server slow
/// on one write; it may hold a request up to its 60 s timeout) and the
/// controller is not leading (a restart, a failover), so nothing else
/// touches the claim. Sandbox-2's ADD gives up (code 11); the runtime
/// DELs sandbox-2: the DEL reads the claim, finds it sandbox-1's and
/// leaves it ("a newer ADD took it over"). The runtime tears sandbox-2
/// down. Then the replace lands: its resourceVersion precondition still
/// holds, so the claim is now sandbox-2's, with D2 in the past. A
/// controller leads again: `claims::abandoned` compares D2 with the
/// claim's *creation* time (sandbox-1's late create, before D2), finds it
/// in time, and answers: an address committed for the torn-down sandbox.
///
/// Cause: a takeover is a late write like a late create, but `abandoned`
/// (crates/controller/src/claims.rs) judges lateness by
/// `creation_timestamp` only; a takeover landing after its deadline
/// cannot be told from one in time, and the DEL (verbs.rs `del`: "another
/// sandbox's claim, not mine") leaves a claim whose takeover is still on
/// its way. The "another spec" takeover predates 2948633 (749f447
/// replaced the same way), so this is not new; the same-spec takeover the
/// change added is safe against it (attack 3). Fixes: judge lateness by
/// the time of the write that set `answer-by` (the `time` of the
/// managedFields entry owning that annotation; a create's is its creation
/// time), or have a DEL that finds another sandbox's unanswered claim
/// bump its resourceVersion (a no-op annotation), so a takeover decided
/// on the version before meets 409 after its ADD is gone.
///
/// How long it stays: the collector keeps a claim while its pod exists,
/// so the address is held until the pod's next sandbox takes the claim
/// over (the same pod and interface: the allocator gives it the same
/// address) or the pod is deleted (the claim's owner reference); for a
/// pod that never gets another sandbox on this network, for its life.
///
/// The user's check: once the DEL of sandbox-2 has returned and a
/// controller leads, no claim is answered for sandbox-2 and the pool
/// holds nothing for the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_held_past_its_add_and_del_is_not_answered() {
    let (kit, ns) = common::setup("r22-held").await;
    let client = kit.client.clone();
    let (network, range, pool) = ("r22held", "100.64.101.0/28", "100.64.101.0-28");
    let name = claim_name("p", "net1", network);
    let (agent, kubeconfig, put, _agent_proxy) = agent_holding_replace(&ns, &name).await;
    let uid = pod(&client, &ns.name, "p").await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let late = late_claim(&claims, &ns.name, &uid, network, range).await;
    // Sandbox-2's ADD: its takeover's replace is held; it gives up.
    put.armed.store(true, Ordering::SeqCst);
    let stdin = conf(network, range, &kubeconfig, "1s");
    let add = run_verb("ADD", &ns.name, &uid, "sandbox-2", &agent.socket, &stdin);
    put.wait_seen("sandbox-2's ADD takes the claim over").await;
    let add = add.await.expect("ADD");
    assert!(
        !add.success && code_of(&add) == 11,
        "sandbox-2's ADD gives up: {}",
        add.raw
    );
    // The runtime's DEL of sandbox-2, then its teardown.
    let del = run_verb("DEL", &ns.name, &uid, "sandbox-2", &agent.socket, &stdin)
        .await
        .expect("DEL");
    assert!(del.success, "sandbox-2's DEL: {}", del.raw);
    // The replace lands.
    put.go.store(true, Ordering::SeqCst);
    let replaced = put.answered("the held replace is answered").await;
    let landed = eventually("the held replace is applied or refused", 20, || async {
        let now = claims.get_opt(&name).await.expect("read");
        match &now {
            Some(c) if c.resource_version() == late.resource_version() => None,
            _ => Some(now),
        }
    })
    .await;
    let after_replace = landed
        .ok()
        .flatten()
        .map(|c| (c.spec.container_id.clone(), c.annotations().clone()));
    // A controller leads again.
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    let settled = eventually(
        "no address committed for the torn-down sandbox-2",
        20,
        || async {
            let claim = claims.get_opt(&name).await.expect("read");
            let held = pool_allocations(&client, &ns.name, pool).await;
            (claim.is_none() && held.is_empty()).then_some(())
        },
    )
    .await;
    let claim = claims.get_opt(&name).await.expect("read");
    let held = pool_allocations(&client, &ns.name, pool).await;
    assert!(
        settled.is_ok(),
        "after sandbox-2's ADD gave up and its DEL returned, the claim is {:?} (container, Ready addresses) and the pool holds {held:?}; the held replace was answered {replaced:?} and left it as {after_replace:?}",
        claim
            .as_ref()
            .map(|c| (c.spec.container_id.clone(), ready_addresses(c))),
    );
    drop(controller);
}

/// Attack 3 (invariant 2 on the path 2948633 added: a DEL racing a
/// same-spec takeover).
///
/// Sandbox-1's late claim (as in attack 1); no controller leads. The
/// runtime's repeated ADD of sandbox-1 takes it over (same spec,
/// unanswered, another deadline: the new branch of `take_over`); its
/// replace is held; the ADD gives up. The runtime's DEL of sandbox-1
/// reads the claim (its own sandbox) and deletes exactly that version.
/// Then the held replace lands, and a controller leads.
///
/// Held: the replace carries the version it read, so it meets a deleted
/// claim and changes nothing; no claim is left and nothing is committed
/// for the pod, while the controller answers another pod's ADD on the
/// same range (so it was running). Not covered before: review21's
/// late-claim test and review15 have no DEL, and no test held a
/// takeover past its ADD.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_same_sandbox_takeover_held_past_its_del_leaves_nothing() {
    let (kit, ns) = common::setup("r22-same").await;
    let client = kit.client.clone();
    let (network, range, pool) = ("r22same", "100.64.102.0/28", "100.64.102.0-28");
    let name = claim_name("p", "net1", network);
    let (agent, kubeconfig, put, _agent_proxy) = agent_holding_replace(&ns, &name).await;
    let uid = pod(&client, &ns.name, "p").await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let stdin = conf(network, range, &kubeconfig, "1s");
    let gave_up =
        late_claim_of_sandbox_1(&claims, &ns.name, &uid, &agent.socket, &stdin, &name).await;
    put.armed.store(true, Ordering::SeqCst);
    let repeated = run_verb("ADD", &ns.name, &uid, "sandbox-1", &agent.socket, &stdin);
    put.wait_seen("the repeated ADD takes the claim over").await;
    let repeated = repeated.await.expect("ADD");
    assert!(
        !repeated.success && code_of(&repeated) == 11,
        "the repeated ADD gives up: {}",
        repeated.raw
    );
    let before = claims.get(&name).await.expect("the late claim is there");
    assert_eq!(
        before.annotations().get(ANSWER_BY_ANNOTATION),
        Some(&gave_up),
        "the takeover has not landed yet"
    );
    let del = run_verb("DEL", &ns.name, &uid, "sandbox-1", &agent.socket, &stdin)
        .await
        .expect("DEL");
    assert!(del.success, "sandbox-1's DEL: {}", del.raw);
    put.go.store(true, Ordering::SeqCst);
    // The held replace reached the API server, which refused it.
    let replaced = put.answered("the held replace is answered").await;
    assert!(
        replaced.starts_with("HTTP/1.1 409") || replaced.starts_with("HTTP/1.1 404"),
        "the takeover decided on the version the DEL deleted is refused: {replaced}"
    );
    let controller = common::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    // Another pod on the range is answered: the controller runs.
    let other_uid = pod(&client, &ns.name, "q").await;
    let other_env = env("ADD", &ns.name, "q", &other_uid, "sandbox-q", &agent.socket);
    let other_stdin = conf(network, range, &kubeconfig, "30s");
    let other = tokio::task::spawn_blocking(move || finish(spawn_plugin(&other_env, &other_stdin)))
        .await
        .expect("ADD");
    assert!(other.success, "pod q's ADD: {}", other.raw);
    // Give a wrongly kept claim time to be answered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = claims.get_opt(&name).await.expect("read");
    let held = pool_allocations(&client, &ns.name, pool).await;
    assert!(
        left.is_none(),
        "sandbox-1's claim is gone after its DEL: {:?}",
        left.map(|c| (c.spec.container_id.clone(), ready_addresses(&c)))
    );
    let ours = format!("{}/p", ns.name);
    assert!(
        !held.values().any(|podref| *podref == ours),
        "nothing is committed for pod p: {held:?}"
    );
    drop(controller);
}
