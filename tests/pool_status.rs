//! What an admin sees in `kubectl get ippools`: every object of a range
//! (the range's own and each shard of 128 offsets) says which shard it is,
//! the addresses it covers and what it holds; the range's object also
//! gives the range's totals. Against the real API server, with a real
//! controller replica.

use std::process::Command;

use hereabouts_api::{ClaimRange, IPClaim, IPPool, IPPoolStatus};
use hereabouts_kit::{eventually, kubeconfig_path};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

mod common;
use common::{pods, ready_addresses, replica, setup};

const RANGE: &str = "198.51.100.0/24";
const POOL: &str = "198.51.100.0-24";
const SHARD_1: &str = "198.51.100.0-24-s1";

fn claim(ns: &str, pod: &(String, String)) -> IPClaim {
    IPClaim::new(
        &format!("{}-net1", pod.0),
        common::claim_spec(
            ns,
            "status-network",
            "net1",
            pod,
            // 191 addresses: .10 to .200, .150-.159 excluded.
            vec![ClaimRange {
                range: RANGE.to_owned(),
                range_start: Some("198.51.100.10".to_owned()),
                range_end: Some("198.51.100.200".to_owned()),
                exclude: vec!["198.51.100.150/31".to_owned()],
                ..Default::default()
            }],
        ),
    )
}

async fn status(pools: &Api<IPPool>, name: &str) -> Option<IPPoolStatus> {
    pools.get(name).await.ok()?.status
}

/// `kubectl get ippools` as an admin runs it: rows split on whitespace.
fn kubectl_rows(ns: &str, wide: bool) -> Vec<Vec<String>> {
    let mut args = vec!["get", "ippools.whereabouts.cni.cncf.io", "-n", ns];
    if wide {
        args.extend(["-o", "wide"]);
    }
    let out = Command::new("kubectl")
        .args(&args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl get ippools: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "kubectl get ippools{}:\n{text}",
        if wide { " -o wide" } else { "" }
    );
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn every_shard_says_which_it_is_and_what_it_holds() {
    let (kit, ns) = setup("pool-status").await;
    let replica = replica(&ns, "a", &["--hold-released", "600s"]);
    replica.wait_ready().await.expect("controller ready");
    let pods = pods(&kit.client, &ns.name, "st", 130).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    for p in &pods {
        claims
            .create(&PostParams::default(), &claim(&ns.name, p))
            .await
            .expect("create claim");
    }
    // Lowest free first: shard 0 (offsets 0-127) fills with .10-.127
    // (118 addresses), the other 12 go to shard 1 (.128-.139).
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let (base, s1) = eventually("both shards' status", 60, || async {
        let base = status(&pools, POOL).await?;
        let s1 = status(&pools, SHARD_1).await?;
        (base.range_allocated == Some(130) && s1.allocated == 12).then_some((base, s1))
    })
    .await
    .expect("statuses");
    assert_eq!(
        (
            base.shard.as_str(),
            base.addresses.as_str(),
            base.size.as_str(),
            base.allocated,
            base.held,
            base.free.as_str()
        ),
        ("0", "198.51.100.10-198.51.100.127", "118", 118, 0, "0"),
        "shard 0: {base:?}"
    );
    assert_eq!(
        (
            base.range_size.as_str(),
            base.range_allocated,
            base.range_held,
            base.range_free.as_str()
        ),
        ("189", Some(130), Some(0), "59"),
        "the range's totals on its object: {base:?}"
    );
    assert!(
        base.conditions
            .iter()
            .any(|c| c.type_ == "Exhausted" && c.status == "False"),
        "{base:?}"
    );
    assert_eq!(
        (
            s1.shard.as_str(),
            s1.addresses.as_str(),
            s1.size.as_str(),
            s1.allocated,
            s1.held,
            s1.free.as_str()
        ),
        ("1", "198.51.100.128-198.51.100.200", "71", 12, 0, "59"),
        "shard 1: {s1:?}"
    );
    assert!(
        s1.range_size.is_empty() && s1.range_allocated.is_none() && s1.conditions.is_empty(),
        "range totals only on the range's object: {s1:?}"
    );

    // Two of shard 1's pods go: their addresses are held for them.
    let in_shard_1 = eventually("12 claims answered in shard 1", 30, || async {
        let names: Vec<String> = claims
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|c| {
                ready_addresses(c).is_some_and(|a| {
                    a.iter().any(|a| {
                        a.split(['.', '/'])
                            .nth(3)
                            .and_then(|h| h.parse::<u8>().ok())
                            .is_some_and(|h| h >= 128)
                    })
                })
            })
            .map(ResourceExt::name_any)
            .collect();
        (names.len() == 12).then_some(names)
    })
    .await
    .expect("claims in shard 1");
    for name in &in_shard_1[..2] {
        claims
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete claim");
    }
    let (base, s1) = eventually("the holds counted", 60, || async {
        let base = status(&pools, POOL).await?;
        let s1 = status(&pools, SHARD_1).await?;
        (s1.held == 2 && base.range_held == Some(2)).then_some((base, s1))
    })
    .await
    .expect("statuses after the deletions");
    assert_eq!(
        (s1.allocated, s1.held, s1.free.as_str()),
        (10, 2, "59"),
        "{s1:?}"
    );
    assert_eq!(
        (
            base.allocated,
            base.range_allocated,
            base.range_free.as_str()
        ),
        (118, Some(128), "59"),
        "{base:?}"
    );

    // What an admin reads: one row per object, each saying what it is.
    let rows = kubectl_rows(&ns.name, false);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "RANGE",
            "SHARD",
            "ADDRESSES",
            "ALLOCATED",
            "HELD",
            "FREE",
            "AGE"
        ],
        "{rows:?}"
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("a row for {name}: {rows:?}"))
            .clone()
    };
    assert_eq!(
        row(POOL)[1..7],
        [RANGE, "0", "198.51.100.10-198.51.100.127", "118", "0", "0"]
    );
    assert_eq!(
        row(SHARD_1)[1..7],
        [RANGE, "1", "198.51.100.128-198.51.100.200", "10", "2", "59"]
    );
    let wide = kubectl_rows(&ns.name, true);
    assert_eq!(
        wide[0][7..9],
        ["RANGE", "ALLOCATED"],
        "-o wide adds the range's totals: {wide:?}"
    );
    let base_row = wide.iter().find(|r| r[0] == POOL).expect("base row");
    assert_eq!(base_row[7..9], ["128", "59"], "{wide:?}");
}
