//! review14: adversarial tests of 8e3340e (a release skips what a live
//! claim of the same sandbox's interface holds, found by name), fcd8acb
//! (the agent stamps a claim's deadline on the API server's clock) and
//! 6766863 (the controller deletes a claim created after its deadline).
//!
//! Found, and fixed here:
//! - invariant 2, liveness: a claim whose create landed after its ADD gave
//!   up, replaced by the pod's next ADD (another sandbox, the same name),
//!   kept the old ADD's deadline, and the controller deleted it as
//!   abandoned: the next ADD failed too
//!   (`a_retry_that_takes_over_a_late_claim_is_answered`). The replace now
//!   carries the retry's own deadline.
//!
//! Everything runs against the real API server, the real controller and
//! the real node agent and plugin binary.

use std::time::Duration;

use hereabouts_api::{ANSWER_BY_ANNOTATION, IPClaim};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

mod common;
use common::agent::{Agent, env, plugin, pod, setup};
use common::{pool_holders, range, ready_addresses};

fn conf(name: &str, range: &str, kubeconfig: &std::path::Path, timeout: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth1",
           "ipam": {"type": "hereabouts", "range": range, "request_timeout": timeout,
                    "kubernetes": {"kubeconfig": kubeconfig}}})
}

/// Liveness (and CNI's contract that a retried ADD succeeds once the
/// cluster can answer it): an ADD gave up and its claim's create landed
/// later, after the DEL that followed found nothing; before any controller
/// read it, the pod's next sandbox ADDs on the same network. Its create
/// meets the late claim (same name) and takes it over with its own spec.
/// Until fixed, the claim kept the first ADD's deadline
/// (`hereabouts.dev/answer-by`), which its creation time is after: the
/// controller deleted the retry's claim as abandoned, and the retry failed.
///
/// The user's check: the retry gets an address, and the pool holds it for
/// the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_that_takes_over_a_late_claim_is_answered() {
    let cidr = "203.0.113.64/28";
    let (client, ns, controller, kubeconfig, socket) = setup("r14-retry").await;
    // No controller reads the late claim before the retry takes it over.
    drop(controller);
    let uid = pod(&client, &ns.name, "p").await;
    let network = "r14retry";
    let name = hereabouts_node::cni::verbs::claim_name("p", "net1", network);
    let mut spec = common::claim_spec(
        &ns.name,
        network,
        "net1",
        &("p".to_owned(), uid.clone()),
        vec![range(cidr)],
    );
    spec.container_id = "sandbox-1".to_owned();
    spec.node = common::agent::NODE.to_owned();
    let mut late = IPClaim::new(&name, spec);
    // The first ADD gave up 10 s before its create landed.
    let gave_up = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(10))
        .expect("time");
    late.metadata.annotations = Some(std::collections::BTreeMap::from([(
        ANSWER_BY_ANNOTATION.to_owned(),
        format!("{gave_up:.3}"),
    )]));
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    claims
        .create(&PostParams::default(), &late)
        .await
        .expect("the late create lands");
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let stdin = conf(network, cidr, &kubeconfig, "20s");
    let add = {
        let (env, stdin) = (
            env("ADD", &ns.name, "p", &uid, "sandbox-2", &socket),
            stdin.clone(),
        );
        tokio::task::spawn_blocking(move || plugin(&env, &stdin))
    };
    // The retry has taken the claim over before a controller starts.
    hereabouts_kit::eventually("the retry takes the claim over", 15, || async {
        let c = claims.get(&name).await.ok()?;
        (c.spec.container_id == "sandbox-2").then_some(())
    })
    .await
    .expect("taken over");
    let _controller = common::replica(&ns, "b", &[]);
    let add = add.await.expect("ADD");
    let claim = claims.get_opt(&name).await.expect("read");
    assert!(
        add.success,
        "the retry gets an address: {} (claim now: {:?})",
        add.stdout,
        claim.as_ref().map(|c| (c.uid(), c.annotations().clone()))
    );
    let claim = claim.expect("the retry's claim stays");
    let address = ready_addresses(&claim).expect("answered")[0].clone();
    assert!(
        add.stdout
            .to_string()
            .contains(address.split('/').next().expect("ip")),
        "the ADD printed the claim's address {address}: {}",
        add.stdout
    );
    let held = pool_holders(&client, &ns.name).await;
    assert_eq!(held, vec![format!("{}/p", ns.name)], "the pool holds it");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        claims
            .get_opt(&name)
            .await
            .expect("read")
            .is_some_and(|c| c.uid() == claim.uid()),
        "the claim is kept"
    );
}
