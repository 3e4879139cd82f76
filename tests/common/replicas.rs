//! Two controller replicas, one leading and one standing by, and what
//! the review tests do across a leader change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hereabouts_api::IPClaim;
use hereabouts_kit::Controller;
use kube::api::{Api, DeleteParams};

use super::shaping;

/// A controller replica `name` whose every request goes through a
/// [`shaping::forwarder`] with `request` and `response`; the proxy to keep
/// alive with it.
pub async fn shaped_replica<Q, R>(
    ns: &hereabouts_kit::TestNamespace,
    name: &str,
    request: Q,
    response: R,
) -> (Controller, tokio::process::Child)
where
    Q: Fn(u64, &str, Vec<u8>) -> shaping::Held + Send + Sync + 'static,
    R: Fn(u64, &str) -> shaping::Down + Send + Sync + 'static,
{
    let (proxy, upstream) = shaping::kubectl_proxy().await;
    let port = shaping::forwarder(upstream, request, response).await;
    let proxied = shaping::plain_kubeconfig(&format!("{}-{name}", ns.name), port, &ns.name);
    let replica = Controller::start_as(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        ns,
        name,
        &[],
        &proxied,
    )
    .expect("controller");
    replica.wait_ready().await.expect("ready");
    (replica, proxy)
}

/// Two replicas, `a` leading and `b` standing by (its claim watch
/// dropping its events while `quiet` is set, when given): (client,
/// namespace, a, b, the proxy to keep alive).
pub async fn two_replicas(
    prefix: &str,
    quiet: Option<Arc<AtomicBool>>,
) -> (
    kube::Client,
    hereabouts_kit::TestNamespace,
    Controller,
    Controller,
    Option<tokio::process::Child>,
) {
    let (kit, ns) = super::setup(prefix).await;
    let client = kit.client.clone();
    let a = super::replica(&ns, "a", &[]);
    a.wait_ready().await.expect("ready");
    super::leads(&client, &ns.name, &a).await;
    let (b, proxy) = match quiet {
        None => {
            let b = super::replica(&ns, "b", &[]);
            b.wait_ready().await.expect("ready");
            (b, None)
        }
        Some(quiet) => {
            let (b, proxy) = shaped_replica(
                &ns,
                "b",
                |_, _, chunk| shaping::at_once(chunk),
                move |_, line| {
                    let claim_watch = line.contains("/ipclaims?") && line.contains("watch=true");
                    if claim_watch && quiet.load(Ordering::SeqCst) {
                        shaping::Down::Drop
                    } else {
                        shaping::Down::Pass
                    }
                },
            )
            .await;
            (b, Some(proxy))
        }
    };
    (client, ns, a, b, proxy)
}

/// The ADD, DEL and ADD again of one sandbox's net1, on two NADs of one
/// range (one pool), answered by `a` (which releases `blue` before it
/// answers `green`: the pool's entry for the interface, the same address
/// again); `b` stands by and keeps `blue`'s release for when it leads.
/// While `green` is made, `quiet` (when given) makes `b`'s claim watch
/// drop its events. Then `a` dies and `b` leads, and releases `blue` once
/// more. Returns the live claim's address, once that release had time.
pub async fn replugged_across_a_leader_change(
    client: &kube::Client,
    ns: &hereabouts_kit::TestNamespace,
    (a, b): (Controller, &Controller),
    pod: &(String, String),
    cidr: &str,
    quiet: Option<&AtomicBool>,
) -> (String, String) {
    super::range_nad(client, &ns.name, "blue", cidr).await;
    super::range_nad(client, &ns.name, "green", cidr).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let (blue, address) = super::attach(&claims, &ns.name, pod, "blue", cidr).await;
    claims
        .delete(&blue, &DeleteParams::default())
        .await
        .expect("the DEL");
    // Both replicas see the deletion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(quiet) = quiet {
        quiet.store(true, Ordering::SeqCst);
    }
    let (green, again) = super::attach(&claims, &ns.name, pod, "green", cidr).await;
    assert_eq!(
        address, again,
        "the pool's entry for the sandbox's interface"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(quiet) = quiet {
        quiet.store(false, Ordering::SeqCst);
    }
    drop(a);
    super::leads(client, &ns.name, b).await;
    // `b` has released `blue` (or found it must not).
    tokio::time::sleep(Duration::from_secs(5)).await;
    (green, address)
}

/// The user's checks after [`replugged_across_a_leader_change`]: the live
/// claim's address stays in the pool for its pod, and the next pod on the
/// range is given another.
pub async fn kept(
    client: &kube::Client,
    ns: &str,
    podref: &str,
    pool: &str,
    (green, address): (String, String),
    cidr: &str,
) {
    let held = super::pool_allocations(client, ns, pool).await;
    assert_eq!(
        held.get(&super::ip_of(&address)),
        Some(&podref.to_owned()),
        "{green}'s address stays in the pool for its pod: {held:?}"
    );
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    let others = super::pods(client, ns, "q", 1).await;
    let (_, other) = super::attach(&claims, ns, &others[0], "blue", cidr).await;
    assert_ne!(
        super::ip_of(&other),
        super::ip_of(&address),
        "two live claims share {other}"
    );
    assert_eq!(
        super::ready_address(&claims, &green).await,
        Some(address),
        "{green} stays"
    );
}
