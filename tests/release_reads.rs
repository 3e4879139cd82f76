//! What a release reads. A claim deleted must not take what a newer claim
//! of the same sandbox holds, so the release looks for such successors:
//! in its cache once that has shown the claims as they were after the
//! leadership term began, in the API server before. The API server's read
//! is a consistent list of the namespace's claims, whose cost grows with
//! every claim of the namespace: made per release, it made the DEL of a
//! scale run of 60,000 claims release nothing in five minutes (`make
//! bench`, 2026-12-03). One test binary, one test: the API server's
//! request counts are its alone while it runs.

mod common;

use kube::api::{Api, DeleteParams, ListParams};
use kube::core::Request;

use hereabouts_api::IPClaim;

/// The IPClaim lists the API server has served so far, any client's
/// (`apiserver_request_total`).
async fn claim_lists(client: &kube::Client) -> f64 {
    let request = Request::new("/metrics")
        .list(&ListParams::default())
        .expect("a request for /metrics");
    let text = client.request_text(request).await.expect("/metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"ipclaims\"") && l.contains("verb=\"LIST\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Invariant 2 at scale: twenty claims deleted at once are released
/// (their addresses leave the pool), and the API server serves at most
/// two lists of the claims meanwhile, not one per release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_trust_a_fresh_cache_instead_of_listing_the_claims() {
    let (cidr, pool) = ("100.64.40.0/26", "100.64.40.0-26");
    let (kit, ns) = common::setup("release-reads").await;
    let client = kit.client.clone();
    common::range_nad(&client, &ns.name, "wide", cidr).await;
    let a = common::replica(&ns, "a", &[]);
    a.wait_ready().await.expect("ready");
    common::leads(&client, &ns.name, &a).await;
    let pods = common::pods(&client, &ns.name, "p", 20).await;
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let mut names = Vec::new();
    for pod in &pods {
        names.push(common::attach(&claims, &ns.name, pod, "wide", cidr).await.0);
    }
    assert_eq!(
        common::pool_allocations(&client, &ns.name, pool)
            .await
            .len(),
        20,
        "every claim holds an address"
    );
    let before = claim_lists(&client).await;
    for name in &names {
        claims
            .delete(name, &DeleteParams::default())
            .await
            .expect("the DEL");
    }
    hereabouts_kit::eventually("every address released", 30, || async {
        common::pool_allocations(&client, &ns.name, pool)
            .await
            .is_empty()
            .then_some(())
    })
    .await
    .expect("released");
    let lists = claim_lists(&client).await - before;
    assert!(
        lists <= 2.0,
        "the API server listed the claims {lists} times for 20 releases"
    );
}
