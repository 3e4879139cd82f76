//! review12: adversarial tests of 4bc2576 (a deleted claim that was never
//! answered releases what its sandbox holds; a grant whose answer meets a
//! 404 is handed to the releaser) and 7b30975 (creates sent again, every
//! verb bounded in time).
//!
//! Found:
//! - invariants 1 and 2: a release's `successor` read answered "none"
//!   before the same sandbox's next claim existed, delivered after that
//!   claim was answered: the release takes the live claim's address, and
//!   the next claim on a full range is answered it too
//!   (`a_release_whose_successor_read_is_answered_late_...`,
//!   `no_two_live_claims_share_an_address_...`);
//! - invariant 2: a claim create that reaches the API server after the ADD
//!   gave up (bounded) and after its DEL found no claim is answered, and
//!   nothing ever releases it while the pod lives
//!   (`a_create_that_lands_after_the_add_gave_up_...`);
//! - liveness: a release whose read hangs keeps `releases_pending` up for
//!   RELEASE_PATIENCE, and full ranges retry rather than answer
//!   (`a_claim_on_a_full_range_is_answered_though_a_release_read_hangs`).
//!
//! Fixed: a claim name is answered or released by one task at a time
//! (claims.rs `Interfaces`, per pod interface since 8e3340e), so the
//! successor read is made after any answer of the name; a release is
//! bounded in time, and counts as awaited
//! by full ranges for 30 s only. A claim carries when its ADD gives up
//! (`hereabouts.dev/answer-by`); the controller deletes one created at or
//! after that second, unanswered.
//!
//! Everything runs against the real API server, the real controller and
//! (where it matters) the real node agent and plugin binary; where timing
//! must be shaped, a plain-HTTP forwarder sits between a component and the
//! API server (`common::shaping`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hereabouts_api::IPClaim;
use hereabouts_kit::{Controller, eventually};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};

mod common;
use common::agent::{Agent, env, plugin, pod, setup};
use common::{ip_of, pool_allocations, range, range_nad, ready_addresses, shaping};

/// How the controller's read of the deleted claim's name (its release's
/// `successor` check) is shaped.
#[derive(Clone, Copy, PartialEq)]
enum Read {
    /// Answered at once by the API server (before the next ADD's claim
    /// exists), that answer delivered late.
    AnswerLate,
    /// Sent late: the API server answers it after the next ADD's claim
    /// is answered.
    SentLate,
    /// Not made: the controller's cache has shown the claims past its
    /// term's start, and the release trusts it.
    Trusted,
}

/// The state after one sandbox's ADD, DEL and ADD again (Multus' dynamic
/// networks), with the first claim's release reading shaped by `read`:
/// (client, namespace, pod ref, the live claim, its address, the kit and
/// controller to keep alive).
async fn add_del_add(
    prefix: &str,
    cidr: &str,
    read: Read,
) -> (
    Client,
    hereabouts_kit::TestNamespace,
    String,
    IPClaim,
    String,
    Controller,
    tokio::process::Child,
) {
    let (kit, ns) = common::setup(prefix).await;
    let client = kit.client.clone();
    let (proxy, upstream) = shaping::kubectl_proxy().await;
    let slow = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    // The release's successor read: the pod's claims.
    let claim_read = ns.name.clone();
    let port = {
        let (slow_q, slow_r, reads) = (slow.clone(), slow.clone(), reads.clone());
        let (read_q, read_r) = (claim_read.clone(), claim_read.clone());
        shaping::forwarder(
            upstream,
            move |_, line, chunk| {
                if read != Read::Trusted && common::is_token_read(line, &read_q) {
                    // The cache stays untrusted: every release reads.
                    return Box::pin(std::future::pending());
                }
                if common::is_successor_read(line, &read_q, "p-0") && slow_q.load(Ordering::SeqCst)
                {
                    reads.fetch_add(1, Ordering::SeqCst);
                    if read == Read::SentLate {
                        let slow = slow_q.clone();
                        return Box::pin(async move {
                            while slow.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            chunk
                        });
                    }
                }
                shaping::at_once(chunk)
            },
            move |_, line| {
                if read == Read::AnswerLate
                    && common::is_successor_read(line, &read_r, "p-0")
                    && slow_r.load(Ordering::SeqCst)
                {
                    shaping::Down::Delay(Duration::from_secs(6))
                } else {
                    shaping::Down::Pass
                }
            },
        )
        .await
    };
    let proxied = shaping::plain_kubeconfig(&format!("{}-succ", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    range_nad(&client, &ns.name, "blue", cidr).await;
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let podref = format!("{}/{}", ns.name, pods[0].0);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let spec = common::claim_spec(&ns.name, "blue", "net1", &pods[0], vec![range(cidr)]);
    let answered = |uid: Option<String>| {
        let claims = claims.clone();
        async move {
            let c = claims.get_opt("p-0-net1").await.ok()??;
            if uid.is_some() && c.uid() != uid {
                return None;
            }
            ready_addresses(&c)?.into_iter().next()
        }
    };
    // ADD: the first claim, answered.
    let first = claims
        .create(
            &PostParams::default(),
            &IPClaim::new("p-0-net1", spec.clone()),
        )
        .await
        .expect("claim");
    eventually("the first claim answered", 30, || answered(first.uid()))
        .await
        .expect("answered");
    // DEL: the claim goes; its release reads the pod's claims.
    slow.store(true, Ordering::SeqCst);
    claims
        .delete("p-0-net1", &DeleteParams::default())
        .await
        .expect("the DEL");
    if read == Read::Trusted {
        // The release trusts the cache: no read, nothing to wait for.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            reads.load(Ordering::SeqCst),
            0,
            "a trusted cache reads nothing"
        );
    } else {
        eventually("the release reading for a successor", 20, || async {
            (reads.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await
        .expect("the successor read in flight");
    }
    // Let the API server answer it (AnswerLate) before the next claim.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ADD again, same sandbox: answered from the pool at once.
    let second = claims
        .create(
            &PostParams::default(),
            &IPClaim::new("p-0-net1", spec.clone()),
        )
        .await
        .expect("the second claim");
    let b = eventually("the second claim answered", 30, || answered(second.uid()))
        .await
        .expect("answered");
    // The read (or its answer) goes on; the release runs.
    tokio::time::sleep(Duration::from_secs(7)).await;
    slow.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = claims.get("p-0-net1").await.expect("the live claim");
    assert_eq!(live.uid(), second.uid(), "the second claim still stands");
    assert_eq!(
        ready_addresses(&live).and_then(|a| a.into_iter().next()),
        Some(b.clone()),
        "the second claim is still answered"
    );
    (client, ns, podref, live, b, controller, proxy)
}

/// Invariant 2, Multus' dynamic networks (ADD, DEL, ADD in one sandbox):
/// the first claim is answered and deleted (the DEL); the controller's
/// release asks the API server whether a newer claim of the same sandbox
/// exists (`successor`), and that answer ("none") is slow to come back.
/// Meanwhile the same sandbox's next ADD files its claim, which the
/// controller answers with the sandbox's address (still in the pool: same
/// pod, interface and container ID). Then the stale "none" lands and the
/// release takes that address from the pool, under the live claim.
///
/// The user's check: a claim answered Ready has its address in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_whose_successor_read_is_answered_late_keeps_the_successors_address() {
    let (cidr, pool) = ("198.51.100.96/28", "198.51.100.96-28");
    let (client, ns, podref, _live, b, _controller, _proxy) =
        add_del_add("r12-succ", cidr, Read::AnswerLate).await;
    let held = pool_allocations(&client, &ns.name, pool).await;
    assert_eq!(
        held.get(&ip_of(&b)),
        Some(&podref),
        "the live claim p-0-net1 (answered {b}) has no allocation in the pool: {held:?}"
    );
}

/// The same with the read itself late (sent after the next claim was
/// answered): `successor` finds that claim and the release keeps its
/// address. HELD: the race needs the answer of a read made before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_whose_successor_read_is_sent_late_keeps_the_successors_address() {
    let (cidr, pool) = ("198.51.100.112/28", "198.51.100.112-28");
    let (client, ns, podref, _live, b, _controller, _proxy) =
        add_del_add("r12-succ2", cidr, Read::SentLate).await;
    let held = pool_allocations(&client, &ns.name, pool).await;
    assert_eq!(
        held.get(&ip_of(&b)),
        Some(&podref),
        "the live claim p-0-net1 (answered {b}) has no allocation in the pool: {held:?}"
    );
}

/// The same sequence with the controller's cache trusted (its term's
/// revision read, and shown since): the release reads nothing, and the
/// interface's lock orders it against the next claim's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_that_trusts_its_cache_keeps_the_successors_address() {
    let (cidr, pool) = ("198.51.100.144/28", "198.51.100.144-28");
    let (client, ns, podref, _live, b, _controller, _proxy) =
        add_del_add("r12-trust", cidr, Read::Trusted).await;
    let held = pool_allocations(&client, &ns.name, pool).await;
    assert_eq!(
        held.get(&ip_of(&b)),
        Some(&podref),
        "the live claim p-0-net1 (answered {b}) has no allocation in the pool: {held:?}"
    );
}

/// Invariant 1, what the race above leads to: in a range of two
/// addresses, two more pods' claims are answered after the release took
/// the live claim's address; the one that meets a full range takes the
/// oldest hold, the live claim's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_two_live_claims_share_an_address_after_a_late_successor_read() {
    let cidr = "198.51.100.128/30";
    let (client, ns, _podref, _live, _b, _controller, _proxy) =
        add_del_add("r12-dup", cidr, Read::AnswerLate).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    for pod in common::pods(&client, &ns.name, "q", 2).await {
        let name = format!("{}-net1", pod.0);
        claims
            .create(
                &PostParams::default(),
                &IPClaim::new(
                    &name,
                    common::claim_spec(&ns.name, "blue", "net1", &pod, vec![range(cidr)]),
                ),
            )
            .await
            .expect("claim");
        // Answered, or refused (the range full): either way, settled.
        let _ = eventually("the claim settled", 30, || {
            let claims = claims.clone();
            let name = name.clone();
            async move {
                let c = claims.get(&name).await.ok()?;
                let status = c.status.as_ref()?;
                (status.observed_generation == c.metadata.generation
                    && status.conditions.iter().any(|c| c.type_ == "Ready"))
                .then_some(())
            }
        })
        .await;
    }
    let mut by_address: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for c in claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
    {
        for a in ready_addresses(&c).unwrap_or_default() {
            by_address.entry(a).or_default().push(c.name_any());
        }
    }
    let shared: Vec<_> = by_address.iter().filter(|(_, c)| c.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "live claims answered the same address: {shared:?} (all: {by_address:?})"
    );
}

/// Sends `request` (raw HTTP/1.1) to 127.0.0.1:`port`, returns what came back.
async fn replay(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Invariant 2 (and CNI's contract: after a failed ADD and its DEL,
/// nothing is left): the ADD's claim create is slow to reach the API
/// server (queued by the API server's flow control, a slow load balancer).
/// The agent gives the ADD up in time (7b30975), the runtime's DEL finds
/// no claim and succeeds; then the create lands. The controller answers
/// it: an address is committed for a sandbox the runtime has torn down,
/// and no DEL will ever come for it.
///
/// The user's check: after the failed ADD and its DEL, no claim and no
/// address of the pod remain (what 7b30975's own test checks when the
/// create's response, rather than its request, is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_that_lands_after_the_add_gave_up_and_its_del_leaves_nothing() {
    let (client, ns, _controller, _kubeconfig, socket) = setup("r12-late").await;
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let captured: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let port = {
        let captured = captured.clone();
        shaping::forwarder(
            upstream,
            move |_, line, chunk| {
                if line.starts_with("POST ") && line.contains("/ipclaims") {
                    let mut c = captured.lock().expect("captured");
                    if c.is_none() {
                        *c = Some(chunk);
                    }
                    // Never forwarded on this connection.
                    Box::pin(std::future::pending())
                } else {
                    shaping::at_once(chunk)
                }
            },
            |_, _| shaping::Down::Pass,
        )
        .await
    };
    let kubeconfig = shaping::plain_kubeconfig(&format!("{}-late", ns.name), port, &ns.name);
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = common::agent::conf("r12late", "203.0.113.48/28", &kubeconfig, "2s");
    let add = plugin(
        &env("ADD", &ns.name, "p", &uid, "sandbox-1", &socket),
        &stdin,
    );
    assert!(!add.success, "the ADD gives up: {}", add.stdout);
    let del = plugin(
        &env("DEL", &ns.name, "p", &uid, "sandbox-1", &socket),
        &stdin,
    );
    assert!(del.success, "DEL: {}", del.stdout);
    let request = captured
        .lock()
        .expect("captured")
        .clone()
        .expect("the create was captured");
    // The whole request (headers and body) was one chunk.
    let text = String::from_utf8_lossy(&request).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("length"))
        })
        .expect("content-length");
    assert_eq!(body.len(), length, "the whole create was captured: {text}");
    // The create lands now.
    let landed = replay(upstream, &request).await;
    assert!(
        landed.starts_with("HTTP/1.1 201"),
        "the late create landed: {landed}"
    );
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let left = || async {
        let claims = claims.list(&ListParams::default()).await.ok()?.items;
        let held = common::pool_holders(&client, &ns.name).await;
        Some((claims, held))
    };
    // Give the controller time to answer it, and anything time to clean.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gone = eventually("the claim and its address gone", 20, || async {
        let (claims, held) = left().await?;
        (claims.is_empty() && held.is_empty()).then_some(())
    })
    .await;
    let (claims_left, held) = left().await.expect("read");
    assert!(
        gone.is_ok(),
        "25 s after the ADD failed and its DEL succeeded, sandbox-1 still has claims {:?} \
         (answered: {:?}) and the pools hold {held:?}",
        claims_left
            .iter()
            .map(|c| (c.name_any(), c.spec.container_id.clone()))
            .collect::<Vec<_>>(),
        claims_left.iter().map(ready_addresses).collect::<Vec<_>>()
    );
}

/// Liveness of a full range (what `releases_pending` gates): a deleted
/// claim's release reads its pod's claims (`successors`), and the API server
/// (or a proxy before it) takes that read and never answers; the client
/// has no read timeout. The release hangs, counted pending, and every claim
/// on a full range is retried rather than answered: neither its address
/// (the deleted claim's, never given back) nor a refusal ("exhausted")
/// comes while it hangs (RELEASE_PATIENCE, 600 s), though the ADDs waiting
/// on them give up after their request_timeout.
///
/// The user's check: a claim on a range whose other pod is gone is
/// answered (an address or a refusal) in well under a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_on_a_full_range_is_answered_though_a_release_read_hangs() {
    let (kit, ns) = common::setup("r12-hang").await;
    let client = kit.client.clone();
    let (_proxy, upstream) = shaping::kubectl_proxy().await;
    let reads = Arc::new(AtomicUsize::new(0));
    // The release's successor read: the pod's claims.
    let claim_read = ns.name.clone();
    let port = {
        let reads = reads.clone();
        shaping::forwarder(
            upstream,
            move |_, line, chunk| {
                if common::is_successor_read(line, &claim_read, "p-0")
                    || common::is_token_read(line, &claim_read)
                {
                    reads.fetch_add(1, Ordering::SeqCst);
                    Box::pin(std::future::pending())
                } else {
                    shaping::at_once(chunk)
                }
            },
            |_, _| shaping::Down::Pass,
        )
        .await
    };
    let proxied = shaping::plain_kubeconfig(&format!("{}-hang", ns.name), port, &ns.name);
    let controller = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
        &proxied,
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    let cidr = "198.51.100.136/30";
    range_nad(&client, &ns.name, "blue", cidr).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let settled = |name: String| {
        let claims = claims.clone();
        async move {
            let c = claims.get(&name).await.ok()?;
            let status = c.status.as_ref()?;
            (status.observed_generation == c.metadata.generation
                && status.conditions.iter().any(|c| c.type_ == "Ready"))
            .then_some(())
        }
    };
    // p-0 and q-0 fill the range.
    let pods = common::pods(&client, &ns.name, "p", 1).await;
    let more = common::pods(&client, &ns.name, "q", 2).await;
    for pod in [&pods[0], &more[0]] {
        let name = format!("{}-net1", pod.0);
        claims
            .create(
                &PostParams::default(),
                &IPClaim::new(
                    &name,
                    common::claim_spec(&ns.name, "blue", "net1", pod, vec![range(cidr)]),
                ),
            )
            .await
            .expect("claim");
        eventually("answered", 30, || settled(name.clone()))
            .await
            .expect("answered");
    }
    // p-0's DEL: its release's read hangs.
    claims
        .delete("p-0-net1", &DeleteParams::default())
        .await
        .expect("the DEL");
    eventually("the release reading for a successor", 20, || async {
        (reads.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await
    .expect("the read hangs");
    // q-1 asks on the full range.
    let name = format!("{}-net1", more[1].0);
    claims
        .create(
            &PostParams::default(),
            &IPClaim::new(
                &name,
                common::claim_spec(&ns.name, "blue", "net1", &more[1], vec![range(cidr)]),
            ),
        )
        .await
        .expect("claim");
    // A release is awaited 30 s at most (RELEASE_AWAITED); the claim's own
    // retry backs off up to 30 s (BACKOFF_MAX): answered well within 90 s
    // even on a loaded machine (without the bound: 600 s).
    let answered = eventually("q-1 answered", 90, || settled(name.clone())).await;
    let status = claims.get(&name).await.expect("claim").status;
    assert!(
        answered.is_ok(),
        "90 s on, q-1's claim on the full range is neither granted nor refused: {status:?}"
    );
}
