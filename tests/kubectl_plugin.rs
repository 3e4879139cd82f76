//! `kubectl hereabouts` against the real local API server: the built binary
//! is run with the kit's kubeconfig on pools, shards, reservations, claims
//! and pods a test writes into its own namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Output;

use hereabouts_admin::{inventory::Inventory, release};
use hereabouts_api::{
    ClaimRange, ClaimedAddress, IPAllocation, IPClaim, IPClaimSpec, IPClaimStatus, IPPool,
    IPPoolSpec, NetworkRef, OverlappingRangeIPReservation, OverlappingRangeIPReservationSpec,
    PodRef,
};
use hereabouts_kit::{Kit, TestNamespace, kit, kubeconfig_path};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// Runs the plugin binary on `ns`'s pools (and claims).
async fn plugin(ns: &TestNamespace, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hereabouts"))
        .env("KUBECONFIG", kubeconfig_path())
        .args(["--namespace", &ns.name])
        .args(args)
        .output()
        .await
        .expect("run kubectl-hereabouts")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn held(container: &str, pod: &str, ifname: &str) -> IPAllocation {
    IPAllocation {
        id: container.to_owned(),
        podref: pod.to_owned(),
        ifname: ifname.to_owned(),
    }
}

async fn create_pool(
    client: &Client,
    ns: &str,
    name: &str,
    range: &str,
    shard: Option<(&str, u32)>,
    allocations: &[(&str, IPAllocation)],
) -> IPPool {
    let api: Api<IPPool> = Api::namespaced(client.clone(), ns);
    let pool = IPPool {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: shard.map(|(base, k)| {
                BTreeMap::from([
                    ("hereabouts.dev/pool".to_owned(), base.to_owned()),
                    ("hereabouts.dev/shard".to_owned(), k.to_string()),
                ])
            }),
            ..Default::default()
        },
        spec: IPPoolSpec {
            range: range.to_owned(),
            allocations: allocations
                .iter()
                .map(|(k, a)| ((*k).to_owned(), a.clone()))
                .collect(),
        },
        status: None,
    };
    api.create(&PostParams::default(), &pool)
        .await
        .expect("create IPPool")
}

async fn create_reservation(client: &Client, ns: &str, name: &str, pod: &str, ifname: &str) {
    let api: Api<OverlappingRangeIPReservation> = Api::namespaced(client.clone(), ns);
    let r = OverlappingRangeIPReservation {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: OverlappingRangeIPReservationSpec {
            containerid: String::new(),
            podref: pod.to_owned(),
            ifname: ifname.to_owned(),
        },
    };
    api.create(&PostParams::default(), &r)
        .await
        .expect("create reservation");
}

async fn create_pod(client: &Client, ns: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "pause"}]}
    }))
    .expect("pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// A claim of pod `name` in `ns`, answered (in its status) with `address`
/// from `pool`, as the controller would.
async fn create_answered_claim(
    client: &Client,
    ns: &str,
    pod: &str,
    ifname: &str,
    address: &str,
    pool: &str,
) {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    let name = format!("{pod}-{ifname}");
    let claim = IPClaim::new(
        &name,
        IPClaimSpec {
            network: NetworkRef {
                namespace: ns.to_owned(),
                name: "lan".to_owned(),
            },
            ranges: vec![ClaimRange {
                range: "100.64.1.0/24".to_owned(),
                ..Default::default()
            }],
            network_name: None,
            enable_overlapping_ranges: true,
            interface: ifname.to_owned(),
            pod: PodRef {
                namespace: ns.to_owned(),
                name: pod.to_owned(),
                uid: "uid".to_owned(),
            },
            container_id: "c".to_owned(),
            node: "simulated".to_owned(),
            static_ips: Vec::new(),
        },
    );
    api.create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
    let status = IPClaimStatus {
        addresses: vec![address.to_owned()],
        ips: vec![ClaimedAddress {
            address: address.to_owned(),
            gateway: None,
            pool: pool.to_owned(),
        }],
        ..Default::default()
    };
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .expect("claim status");
}

const BLUE: &str = "blue-100.64.1.0-24";
const BIG: &str = "big-100.64.32.0-20";

/// A namespace holding: pod `web` (which exists); pool BLUE with .5 for
/// web/net1 (reserved and claimed, all consistent) and .6 for `gone`
/// (no such pod); pool BIG sharded in two with one entry per shard for web;
/// an orphan reservation of .9; a claim of web/net4 answered with .77,
/// which no pool holds.
async fn scenario(prefix: &str) -> (Kit, TestNamespace) {
    let kit = kit().await.expect("local control plane");
    hereabouts_kit::install_crds(&kit.client)
        .await
        .expect("install CRDs");
    let ns = kit.namespace(prefix).await.expect("namespace");
    let (c, n) = (&kit.client, ns.name.as_str());
    let web = format!("{n}/web");
    let gone = format!("{n}/gone");
    create_pod(c, n, "web").await;
    create_pool(
        c,
        n,
        BLUE,
        "100.64.1.0/24",
        None,
        &[
            ("5", held("c5", &web, "net1")),
            ("6", held("c6", &gone, "net1")),
        ],
    )
    .await;
    create_pool(
        c,
        n,
        BIG,
        "100.64.32.0/20",
        Some((BIG, 0)),
        &[("1", held("c1", &web, "net2"))],
    )
    .await;
    create_pool(
        c,
        n,
        &format!("{BIG}-s1"),
        "100.64.32.0/20",
        Some((BIG, 1)),
        &[("2050", held("c2", &web, "net3"))],
    )
    .await;
    create_reservation(c, n, "blue-100.64.1.5", &web, "net1").await;
    create_reservation(c, n, "blue-100.64.1.9", &gone, "net1").await;
    create_answered_claim(c, n, "web", "net1", "100.64.1.5/24", BLUE).await;
    create_answered_claim(c, n, "web", "net4", "100.64.1.77/24", BLUE).await;
    (kit, ns)
}

#[tokio::test]
async fn pools_shows_usage_with_shards_merged() {
    let (_kit, ns) = scenario("kplug-pools").await;
    let out = plugin(&ns, &["pools", "-o", "json"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let doc = stdout_json(&out);
    let pools = doc["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 2, "{doc}");
    let big = &pools[0];
    assert_eq!(big["name"], BIG);
    assert_eq!(big["networkName"], "big");
    assert_eq!(big["shards"], 2);
    assert_eq!(big["allocated"], 2);
    assert_eq!(big["size"], "4094");
    assert_eq!(big["free"], "4092");
    assert_eq!(big["exhausted"], false);
    assert_eq!(pools[1]["name"], BLUE);
    assert_eq!(pools[1]["allocated"], 2);
    assert_eq!(pools[1]["free"], "252");

    let out = plugin(&ns, &["pools"]).await;
    let table = text(&out.stdout);
    assert!(
        table.starts_with("NAME ") && table.contains("SHARDS") && table.contains("EXHAUSTED"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(BIG) && l.contains("100.64.32.0/20") && l.contains("4092")),
        "{table}"
    );
}

#[tokio::test]
async fn who_names_the_pod_its_claim_and_reservation() {
    let (_kit, ns) = scenario("kplug-who").await;
    let n = ns.name.as_str();
    let out = plugin(
        &ns,
        &["who", "100.64.1.5", "--claim-namespace", n, "-o", "json"],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let holders = stdout_json(&out)["holders"].clone();
    assert_eq!(holders.as_array().map(Vec::len), Some(1), "{holders}");
    let h = &holders[0];
    assert_eq!(h["pool"], BLUE);
    assert_eq!(h["pod"], format!("{n}/web"));
    assert_eq!(h["interface"], "net1");
    assert_eq!(h["podExists"], true);
    assert_eq!(h["allocated"], true);
    assert_eq!(h["claim"], format!("{n}/web-net1"));
    assert_eq!(h["node"], "simulated");
    assert_eq!(h["reservation"], "blue-100.64.1.5");

    // The second shard's entry: offset 2050 of 100.64.32.0/20.
    let out = plugin(&ns, &["who", "100.64.40.2", "--claim-namespace", n]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains(BIG) && table.contains("net3"), "{table}");

    let out = plugin(&ns, &["who", "100.64.1.200", "--claim-namespace", n]).await;
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("nobody holds 100.64.1.200"));

    let out = plugin(&ns, &["who", "not-an-ip"]).await;
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("not-an-ip"));
}

#[tokio::test]
async fn check_reports_every_inconsistency_and_fails() {
    let (kit, ns) = scenario("kplug-check").await;
    let n = ns.name.as_str();
    let out = plugin(&ns, &["check", "--claim-namespace", n, "-o", "json"]).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let doc = stdout_json(&out);
    assert_eq!(doc["consistent"], false);
    let findings: Vec<(String, String)> = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["finding"].as_str().unwrap_or("").to_owned(),
                f.to_string(),
            )
        })
        .collect();
    let kinds: Vec<&str> = findings.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "AllocationWithoutPod",
            "ReservationWithoutAllocation",
            "ClaimWithoutAllocation"
        ],
        "{doc}"
    );
    assert!(findings[0].1.contains("100.64.1.6") && findings[0].1.contains("/gone"));
    assert!(findings[1].1.contains("blue-100.64.1.9"));
    assert!(findings[2].1.contains("web-net4") && findings[2].1.contains("100.64.1.77"));

    let out = plugin(&ns, &["check", "--claim-namespace", n]).await;
    assert_eq!(code(&out), 1);
    let table = text(&out.stdout);
    assert!(table.starts_with("FINDING"), "{table}");
    assert!(table.contains("ippool/blue-100.64.1.0-24"), "{table}");

    // Duplicates: a second pool of the same network holds .5 again.
    create_pool(
        &kit.client,
        n,
        "blue-100.64.1.0-25",
        "100.64.1.0/25",
        None,
        &[("5", held("c7", &format!("{n}/web"), "net7"))],
    )
    .await;
    let doc = stdout_json(&plugin(&ns, &["check", "--claim-namespace", n, "-o", "json"]).await);
    let duplicate = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["finding"] == "DuplicateAddress")
        .cloned()
        .unwrap_or_else(|| panic!("no DuplicateAddress in {doc}"));
    assert_eq!(duplicate["ip"], "100.64.1.5");
    assert_eq!(duplicate["networkName"], "blue");
}

#[tokio::test]
async fn check_passes_on_a_consistent_namespace() {
    let kit = kit().await.expect("local control plane");
    hereabouts_kit::install_crds(&kit.client)
        .await
        .expect("install CRDs");
    let ns = kit.namespace("kplug-clean").await.expect("namespace");
    let n = ns.name.as_str();
    create_pod(&kit.client, n, "web").await;
    create_pool(
        &kit.client,
        n,
        BLUE,
        "100.64.1.0/24",
        None,
        &[("5", held("c5", &format!("{n}/web"), "net1"))],
    )
    .await;
    create_reservation(
        &kit.client,
        n,
        "blue-100.64.1.5",
        &format!("{n}/web"),
        "net1",
    )
    .await;
    create_answered_claim(&kit.client, n, "web", "net1", "100.64.1.5/24", BLUE).await;
    let out = plugin(&ns, &["check", "--claim-namespace", n]).await;
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "consistent: 1 pools, 1 allocations, 1 reservations, 1 claims\n"
    );
}

async fn entries(client: &Client, ns: &str, pool: &str) -> (Vec<String>, String) {
    let pool = Api::<IPPool>::namespaced(client.clone(), ns)
        .get(pool)
        .await
        .expect("get pool");
    (
        pool.spec.allocations.keys().cloned().collect(),
        pool.resource_version().unwrap_or_default(),
    )
}

#[tokio::test]
async fn release_needs_yes_and_force_for_a_live_pod() {
    let (kit, ns) = scenario("kplug-release").await;
    let (c, n) = (&kit.client, ns.name.as_str());
    let (keys, version) = entries(c, n, BLUE).await;
    assert_eq!(keys, ["5", "6"]);

    // Without --yes: says what it would do, changes nothing.
    let out = plugin(&ns, &["release", "100.64.1.6", "--claim-namespace", n]).await;
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stdout).starts_with(&format!(
            "would release 100.64.1.6 from IPPool {n}/{BLUE} (entry \"6\"), held by {n}/gone net1"
        )),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(entries(c, n, BLUE).await, (keys.clone(), version.clone()));

    // With --yes: the entry goes, the rest of the pool stays.
    let out = plugin(
        &ns,
        &["release", "100.64.1.6", "--yes", "--claim-namespace", n],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let (keys, after) = entries(c, n, BLUE).await;
    assert_eq!(keys, ["5"]);
    assert_ne!(after, version);

    // The pod of .5 exists: refused without --force.
    let out = plugin(
        &ns,
        &["release", "100.64.1.5", "--yes", "--claim-namespace", n],
    )
    .await;
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains(&format!("pod {n}/web still exists")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(entries(c, n, BLUE).await.0, ["5"]);

    // --force: entry, reservation and claim go.
    let out = plugin(
        &ns,
        &[
            "release",
            "100.64.1.5",
            "--yes",
            "--force",
            "--claim-namespace",
            n,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let doc = stdout_json(&out);
    assert_eq!(doc["outcome"]["released"], true, "{doc}");
    assert_eq!(doc["outcome"]["reservationDeleted"], true, "{doc}");
    assert_eq!(
        doc["outcome"]["claimsDeleted"],
        json!([format!("{n}/web-net1")])
    );
    assert!(entries(c, n, BLUE).await.0.is_empty());
    let reservations: Api<OverlappingRangeIPReservation> = Api::namespaced(c.clone(), n);
    assert!(
        reservations
            .get_opt("blue-100.64.1.5")
            .await
            .expect("get")
            .is_none()
    );
    let claims: Api<IPClaim> = Api::namespaced(c.clone(), n);
    assert!(claims.get_opt("web-net1").await.expect("get").is_none());

    // An entry in the second shard is released from that shard.
    let out = plugin(
        &ns,
        &[
            "release",
            "100.64.40.2",
            "--yes",
            "--force",
            "--claim-namespace",
            n,
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(entries(c, n, &format!("{BIG}-s1")).await.0.is_empty());
    assert_eq!(entries(c, n, BIG).await.0, ["1"]);
}

#[tokio::test]
async fn release_rereads_and_never_takes_an_address_that_changed_hands() {
    let (kit, ns) = scenario("kplug-cas").await;
    let (c, n) = (&kit.client, ns.name.as_str());
    let (client, namespace) = hereabouts_admin::connect(Some(&kubeconfig_path()), None, Some(n))
        .await
        .expect("connect");
    let ip: IpAddr = "100.64.1.6".parse().expect("ip");
    let inv = Inventory::load(&client, &namespace, Some(n))
        .await
        .expect("inventory");
    let plan = release::plan(&inv, ip, None).expect("plan");

    // Someone else writes the pool after the plan: another entry is added.
    // The release re-reads, keeps that entry and removes only its own.
    let pools: Api<IPPool> = Api::namespaced(c.clone(), n);
    let patch = json!({"spec": {"allocations": {"7": {"id": "c7", "podref": format!("{n}/new"), "ifname": "net1"}}}});
    pools
        .patch(BLUE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("concurrent write");
    let outcome = release::execute(&client, &plan, false)
        .await
        .expect("release");
    assert!(outcome.released);
    assert_eq!(entries(c, n, BLUE).await.0, ["5", "7"]);

    // The address was released and handed to a new pod before a stale
    // plan runs: the release refuses instead of taking it away.
    let patch = json!({"spec": {"allocations": {"6": {"id": "c8", "podref": format!("{n}/newer"), "ifname": "net1"}}}});
    pools
        .patch(BLUE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("reallocate");
    let e = release::execute(&client, &plan, false)
        .await
        .expect_err("changed hands")
        .to_string();
    assert!(
        e.contains("changed hands") && e.contains(&format!("{n}/newer")),
        "{e}"
    );
    assert_eq!(entries(c, n, BLUE).await.0, ["5", "6", "7"]);
}
