//! The controller against the real local API server: pools from NADs, a
//! burst of claims, leader failover, a deposed leader, garbage collection,
//! StatefulSet-style recreation and malformed NADs. Each test runs its own
//! controller replicas, scoped to the test's namespace.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::future::join_all;
use hereabouts_api::{
    ClaimRange, IPClaim, IPPool, NetworkAttachmentDefinition, OverlappingRangeIPReservation,
};
use hereabouts_kit::eventually;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

mod common;
use common::{adopt, pods, pool_allocations, range, ready_addresses, replica, setup};

fn claim(ns: &str, pod: &(String, String), ifname: &str, ranges: Vec<ClaimRange>) -> IPClaim {
    IPClaim::new(
        &format!("{}-{ifname}", pod.0),
        common::claim_spec(ns, "test-network", ifname, pod, ranges),
    )
}

fn condition_reason(claim: &IPClaim) -> Option<(String, String)> {
    let c = claim
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Waits until every claim in the namespace is answered Ready; returns
/// claim name -> addresses.
async fn all_ready(
    client: &Client,
    ns: &str,
    expected: usize,
    seconds: u64,
) -> BTreeMap<String, Vec<String>> {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{expected} claims ready"), seconds, || async {
        let claims = api.list(&ListParams::default()).await.ok()?;
        let ready: BTreeMap<_, _> = claims
            .items
            .iter()
            .filter_map(|c| Some((c.name_any(), ready_addresses(c)?)))
            .collect();
        (ready.len() == expected).then_some(ready)
    })
    .await
    .expect("claims answered")
}

fn assert_unique(ready: &BTreeMap<String, Vec<String>>) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (claim, addresses) in ready {
        for a in addresses {
            assert!(seen.insert(a.clone()), "{a} given twice (again to {claim})");
        }
    }
    seen
}

async fn create_claims(client: &Client, ns: &str, claims: Vec<IPClaim>) {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    let params = PostParams::default();
    for result in join_all(claims.iter().map(|c| api.create(&params, c))).await {
        result.expect("create claim");
    }
}

async fn leader_identity(client: &Client, ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get_opt("hereabouts-controller")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

fn nad(name: &str, config: serde_json::Value) -> NetworkAttachmentDefinition {
    NetworkAttachmentDefinition::new(
        name,
        hereabouts_api::NetworkAttachmentDefinitionSpec {
            config: config.to_string(),
        },
    )
}

#[tokio::test]
async fn nads_get_whereabouts_named_pools_and_bad_ones_get_an_event() {
    let (kit, ns) = setup("ctl-nad").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    let good = nad(
        "blue",
        json!({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan", "master": "eth1",
               "ipam": {"type": "whereabouts", "range": "100.64.0.0/24", "network_name": "blue",
                        "ipRanges": [{"range": "2001:db8::/116"}]}}),
    );
    let bad = nad(
        "broken",
        json!({"cniVersion": "1.0.0", "name": "broken", "type": "macvlan", "master": "eth1",
               "ipam": {"type": "hereabouts", "range": "100.64.0.0/33"}}),
    );
    let plain = nad(
        "other",
        json!({"cniVersion": "1.0.0", "name": "other", "type": "macvlan",
               "ipam": {"type": "hereabouts", "range": "10.0.0.0/8"}}),
    );
    for n in [&bad, &good, &plain] {
        nads.create(&PostParams::default(), n)
            .await
            .expect("create NAD");
    }
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let names = eventually("pools created", 20, || async {
        let names: HashSet<String> = pools
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        (names.len() >= 3).then_some(names)
    })
    .await
    .expect("pools for the good NADs");
    let expected: HashSet<String> = ["blue-100.64.0.0-24", "blue-2001-db8---116", "10.0.0.0-8"]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, expected);
    assert_eq!(
        pools.get("10.0.0.0-8").await.expect("pool").spec.range,
        "10.0.0.0/8"
    );

    let events: Api<Event> = Api::namespaced(kit.client.clone(), &ns.name);
    let note = eventually("warning event on the broken NAD", 20, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("broken")
                    && e.type_.as_deref() == Some("Warning")
            })
            .and_then(|e| e.message)
    })
    .await
    .expect("an event");
    assert!(
        note.contains("range") && note.contains("100.64.0.0/33"),
        "event names field and value: {note}"
    );
    let mut replica = replica;
    assert!(
        replica.process.running(),
        "the controller survives a malformed NAD"
    );
}

/// A rollout on a range sized to fit: every old claim deleted at once,
/// then as many new claims at once, without reservations (the fastest
/// path, where the new claims reach the pool before the releases). A claim
/// that finds the range full while releases wait is asked again, not
/// refused: every new claim is answered.
#[tokio::test]
async fn a_rollout_on_a_range_sized_to_fit_refuses_nobody() {
    let (kit, ns) = setup("ctl-rollout").await;
    let replica = replica(&ns, "a", &["--release-cooldown", "0s"]);
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![ClaimRange {
        range: "198.51.100.0/24".into(),
        range_start: Some("198.51.100.1".into()),
        range_end: Some("198.51.100.60".into()),
        ..Default::default()
    }];
    let sized = |pod: &(String, String)| {
        let mut c = claim(&ns.name, pod, "net1", ranges.clone());
        c.spec.enable_overlapping_ranges = false;
        c
    };
    let old = pods(&kit.client, &ns.name, "old", 60).await;
    create_claims(&kit.client, &ns.name, old.iter().map(sized).collect()).await;
    all_ready(&kit.client, &ns.name, 60, 60).await;
    let new = pods(&kit.client, &ns.name, "new", 60).await;
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    join_all(old.iter().map(|p| {
        let api = api.clone();
        async move {
            api.delete(&format!("{}-net1", p.0), &DeleteParams::default())
                .await
                .expect("delete claim");
        }
    }))
    .await;
    create_claims(&kit.client, &ns.name, new.iter().map(sized).collect()).await;
    let ready = eventually("the 60 new claims answered", 60, || async {
        let claims = api.list(&ListParams::default()).await.ok()?;
        let refused: Vec<String> = claims
            .items
            .iter()
            .filter(|c| c.refused())
            .map(|c| c.name_any())
            .collect();
        assert!(refused.is_empty(), "refused: {refused:?}");
        let ready: BTreeMap<_, _> = claims
            .items
            .iter()
            .filter(|c| c.name_any().starts_with("new-"))
            .filter_map(|c| Some((c.name_any(), ready_addresses(c)?)))
            .collect();
        (ready.len() == 60).then_some(ready)
    })
    .await
    .expect("every new claim answered");
    assert_eq!(assert_unique(&ready).len(), 60);
}

/// TCP connections from `pid` to the local API server's port: the sockets
/// among its open files, looked up in the kernel's TCP tables.
fn api_connections(pid: u32) -> usize {
    // The kit's kubeconfig names the server: `server: https://127.0.0.1:PORT`.
    let kubeconfig =
        std::fs::read_to_string(hereabouts_kit::kubeconfig_path()).expect("the kit's kubeconfig");
    let port: u16 = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .and_then(|url| url.rsplit(':').next())
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("the kubeconfig names the server's port");
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the controller's open files")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let remote = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state (01: established), ..., inode (10th)
            fields.len() > 9
                && fields[2].ends_with(&remote)
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count()
}

#[tokio::test]
async fn a_claim_burst_rides_no_more_connections_than_the_concurrency_limit() {
    // kube's client speaks HTTP/1.1: each request in flight holds a
    // connection, and before `--api-concurrency` a burst of claims left the
    // controller with one open connection per concurrent write.
    let (kit, ns) = setup("ctl-conns").await;
    let replica = replica(&ns, "a", &["--api-concurrency", "4"]);
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![ClaimRange {
        range: "198.51.100.0/24".into(),
        ..Default::default()
    }];
    let pods = pods(&kit.client, &ns.name, "conn", 150).await;
    let claims: Vec<_> = pods
        .iter()
        .map(|p| claim(&ns.name, p, "net1", ranges.clone()))
        .collect();
    create_claims(&kit.client, &ns.name, claims).await;
    let ready = all_ready(&kit.client, &ns.name, 150, 60).await;
    assert_eq!(
        assert_unique(&ready).len(),
        150,
        "every claim answered, once"
    );
    // Six watches (IPPools, reservations, pods, IPClaims, NADs,
    // IPAMClaims), the Lease's own client, the four in flight, and room
    // for a few made while an idle one was on its way back to the pool
    // (without the limit: 154).
    let open = api_connections(replica.process.id());
    assert!(
        (1..=4 + 6 + 2 + 8).contains(&open),
        "the controller keeps {open} connections to the API server open"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_claims_fill_a_two_hundred_address_pool() {
    let (kit, ns) = setup("ctl-burst").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![ClaimRange {
        range: "198.51.100.0/24".into(),
        range_start: Some("198.51.100.1".into()),
        range_end: Some("198.51.100.200".into()),
        ..Default::default()
    }];
    let pods = pods(&kit.client, &ns.name, "burst", 201).await;
    let claims: Vec<_> = pods[..200]
        .iter()
        .map(|p| claim(&ns.name, p, "net1", ranges.clone()))
        .collect();
    let started = std::time::Instant::now();
    create_claims(&kit.client, &ns.name, claims).await;
    let ready = all_ready(&kit.client, &ns.name, 200, 60).await;
    eprintln!("200 claims answered in {:?}", started.elapsed());
    let addresses = assert_unique(&ready);
    assert_eq!(addresses.len(), 200);
    let held = pool_allocations(&kit.client, &ns.name, "198.51.100.0-24").await;
    assert_eq!(held.len(), 200, "the pool holds exactly 200 allocations");
    for a in &addresses {
        let ip: IpAddr = a.split('/').next().expect("ip").parse().expect("ip");
        assert!(
            held.contains_key(&ip),
            "{a} is published but not in the pool"
        );
    }

    // The 201st finds the pool exhausted, and says so.
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &pods[200], "net1", ranges)],
    )
    .await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let reason = eventually("exhaustion reported", 20, || async {
        condition_reason(&claims.get(&format!("{}-net1", pods[200].0)).await.ok()?)
    })
    .await
    .expect("condition");
    assert_eq!(reason, ("False".to_owned(), "Exhausted".to_owned()));
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let exhausted = eventually("Exhausted condition on the pool", 20, || async {
        let status = pools.get("198.51.100.0-24").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Exhausted" && c.status == "True")
            .then_some(status)
    })
    .await
    .expect("pool status");
    // The range's totals on its object; shard 0 (offsets 0-127) holds 127.
    assert_eq!(exhausted.range_allocated, Some(200));
    assert_eq!(exhausted.range_free, "0");
    assert_eq!(exhausted.allocated, 127);
    assert_eq!(exhausted.free, "0");
}

#[tokio::test]
async fn a_killed_leader_is_replaced_and_no_request_is_lost() {
    let (kit, ns) = setup("ctl-failover").await;
    let mut a = replica(&ns, "a", &[]);
    let mut b = replica(&ns, "b", &[]);
    a.wait_ready().await.expect("controller ready");
    b.wait_ready().await.expect("controller ready");
    let leader = eventually("a leader", 20, || leader_identity(&kit.client, &ns.name))
        .await
        .expect("leader elected");
    let ranges = vec![range("203.0.113.0/24")];
    let pods = pods(&kit.client, &ns.name, "fo", 100).await;
    create_claims(
        &kit.client,
        &ns.name,
        pods[..50]
            .iter()
            .map(|p| claim(&ns.name, p, "net1", ranges.clone()))
            .collect(),
    )
    .await;
    // Crash the leader while requests are in flight.
    let (victim, survivor) = if leader.ends_with(&format!("_{}", a.process.id())) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.process.kill();
    let killed_at = std::time::Instant::now();
    create_claims(
        &kit.client,
        &ns.name,
        pods[50..]
            .iter()
            .map(|p| claim(&ns.name, p, "net1", ranges.clone()))
            .collect(),
    )
    .await;
    let ready = all_ready(&kit.client, &ns.name, 100, 60).await;
    eprintln!(
        "all 100 answered {:?} after the leader was killed",
        killed_at.elapsed()
    );
    assert_unique(&ready);
    let new_leader = leader_identity(&kit.client, &ns.name)
        .await
        .expect("leader");
    assert!(
        new_leader.ends_with(&format!("_{}", survivor.process.id())),
        "the standby took over: {new_leader}"
    );
    assert_eq!(
        pool_allocations(&kit.client, &ns.name, "203.0.113.0-24")
            .await
            .len(),
        100
    );
}

#[tokio::test]
async fn a_deposed_leader_cannot_commit() {
    let (kit, ns) = setup("ctl-deposed").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![range("100.64.0.0/28")];
    let pods = pods(&kit.client, &ns.name, "dp", 3).await;
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &pods[0], "net1", ranges.clone())],
    )
    .await;
    all_ready(&kit.client, &ns.name, 1, 30).await;

    // Another writer changes the pool behind the leader's back (what a new
    // leader does): the leader's next write must not overwrite it.
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut pool = pools.get("100.64.0.0-28").await.expect("pool");
    pool.spec.allocations.insert(
        "2".to_owned(),
        hereabouts_api::IPAllocation {
            id: "outsider".into(),
            podref: "elsewhere/pod".into(),
            ifname: "net1".into(),
        },
    );
    pools
        .replace("100.64.0.0-28", &PostParams::default(), &pool)
        .await
        .expect("outside write");
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &pods[1], "net1", ranges.clone())],
    )
    .await;
    let ready = all_ready(&kit.client, &ns.name, 2, 30).await;
    let held = pool_allocations(&kit.client, &ns.name, "100.64.0.0-28").await;
    assert_eq!(
        held.get(&"100.64.0.2".parse::<IpAddr>().expect("ip"))
            .map(String::as_str),
        Some("elsewhere/pod"),
        "the outside write survived"
    );
    assert_eq!(
        ready[&format!("{}-net1", pods[1].0)],
        vec!["100.64.0.3/28".to_owned()],
        "and was respected"
    );

    // Take the Lease away for good: the replica must stop answering.
    // (The holder renews every 250 ms: read and write until no renewal
    // came in between.)
    let leases: Api<Lease> = Api::namespaced(kit.client.clone(), &ns.name);
    eventually("lease usurped", 20, || async {
        let mut lease = leases.get("hereabouts-controller").await.ok()?;
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some("usurper".into());
        spec.lease_duration_seconds = Some(3600);
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        leases
            .replace("hereabouts-controller", &PostParams::default(), &lease)
            .await
            .ok()
    })
    .await
    .expect("usurp");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = pools
        .get("100.64.0.0-28")
        .await
        .expect("pool")
        .metadata
        .resource_version;
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &pods[2], "net1", ranges)],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = pools
        .get("100.64.0.0-28")
        .await
        .expect("pool")
        .metadata
        .resource_version;
    assert_eq!(before, after, "a deposed leader wrote the pool");
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let last = claims
        .get(&format!("{}-net1", pods[2].0))
        .await
        .expect("claim");
    assert!(
        ready_addresses(&last).is_none(),
        "a deposed leader answered a claim"
    );
}

#[tokio::test]
async fn a_force_deleted_pods_address_is_reclaimed_after_the_grace_period_and_not_before() {
    let (kit, ns) = setup("ctl-gc").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "4s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![range("198.51.100.0/28")];
    let pods = pods(&kit.client, &ns.name, "gc", 2).await;
    create_claims(
        &kit.client,
        &ns.name,
        pods.iter()
            .map(|p| claim(&ns.name, p, "net1", ranges.clone()))
            .collect(),
    )
    .await;
    all_ready(&kit.client, &ns.name, 2, 30).await;
    // A whereabouts-era allocation of a pod that no longer exists.
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut pool = pools.get("198.51.100.0-28").await.expect("pool");
    pool.spec.allocations.insert(
        "9".into(),
        hereabouts_api::IPAllocation {
            id: "gone-container".into(),
            podref: format!("{}/vanished", ns.name),
            ifname: "net1".into(),
        },
    );
    pools
        .replace("198.51.100.0-28", &PostParams::default(), &pool)
        .await
        .expect("adopted allocation");
    // A reservation no allocation backs (a crash between a release's pool
    // write and its reservation's removal).
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let orphan = OverlappingRangeIPReservation::new(
        "198.51.100.13",
        hereabouts_api::OverlappingRangeIPReservationSpec {
            containerid: "gone-container".into(),
            podref: format!("{}/vanished", ns.name),
            ifname: "net1".into(),
        },
    );
    reservations
        .create(&PostParams::default(), &orphan)
        .await
        .expect("orphaned reservation");
    let reserved = || async {
        let list = reservations.list(&ListParams::default()).await.ok()?;
        Some(
            list.items
                .into_iter()
                .map(|r| r.name_any())
                .collect::<HashSet<_>>(),
        )
    };

    // Force-delete one pod; nothing deletes its claim (a lost DEL).
    let api: Api<Pod> = Api::namespaced(kit.client.clone(), &ns.name);
    api.delete(
        &pods[0].0,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("force delete");
    let deleted_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let held = pool_allocations(&kit.client, &ns.name, "198.51.100.0-28").await;
    assert_eq!(
        held.len(),
        3,
        "nothing reclaimed before the grace period: {held:?}"
    );
    assert!(
        reserved()
            .await
            .is_some_and(|names| names.contains("198.51.100.13")),
        "no reservation removed before the grace period"
    );

    let held = eventually("reclaimed", 30, || async {
        let held = pool_allocations(&kit.client, &ns.name, "198.51.100.0-28").await;
        (held.len() == 1).then_some(held)
    })
    .await
    .expect("the leaked addresses come back");
    assert!(deleted_at.elapsed() >= Duration::from_secs(4));
    assert_eq!(
        held.values().next().map(String::as_str),
        Some(format!("{}/{}", ns.name, pods[1].0).as_str()),
        "the live pod keeps its address"
    );
    let live_ip = held.keys().next().expect("one address").to_string();
    let names = eventually("orphaned reservations removed", 30, || async {
        let names = reserved().await?;
        (!names.contains("198.51.100.13") && names.len() == 1).then_some(names)
    })
    .await
    .expect("the collector removes reservations no allocation backs");
    assert!(
        names.contains(&live_ip),
        "the live pod keeps its reservation: {names:?}"
    );
}

#[tokio::test]
async fn a_statefulset_pod_recreated_under_its_name_keeps_its_address() {
    let (kit, ns) = setup("ctl-sts").await;
    let replica = replica(&ns, "a", &["--hold-released", "30s"]);
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![range("203.0.113.0/29")];
    let first = pods(&kit.client, &ns.name, "web", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &first, "net1", ranges.clone())],
    )
    .await;
    let before = all_ready(&kit.client, &ns.name, 1, 30).await;
    let address = before.values().next().expect("address").clone();

    // The pod goes: DEL deletes its claim, the pod object goes.
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    hereabouts_kit::delete_and_wait(&claims, &format!("{}-net1", first.0), 20)
        .await
        .expect("DEL");
    let api: Api<Pod> = Api::namespaced(kit.client.clone(), &ns.name);
    api.delete(
        &first.0,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("delete pod");
    // Meanwhile another pod asks: it must not get the held address.
    let other = pods(&kit.client, &ns.name, "other", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &other, "net1", ranges.clone())],
    )
    .await;
    let during = all_ready(&kit.client, &ns.name, 1, 30).await;
    assert_ne!(
        during.values().next(),
        Some(&address),
        "the held address went to another pod"
    );

    // The StatefulSet recreates web-0: new UID, new sandbox, same name.
    let again = eventually("pod recreated", 20, || async {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": first.0},
            "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "pause"}]}
        }))
        .ok()?;
        let pod = api.create(&PostParams::default(), &pod).await.ok()?;
        Some((first.0.clone(), pod.uid()?))
    })
    .await
    .expect("recreated");
    assert_ne!(again.1, first.1);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &again, "net1", ranges)],
    )
    .await;
    let after = all_ready(&kit.client, &ns.name, 2, 30).await;
    assert_eq!(
        after[&format!("{}-net1", first.0)],
        address,
        "the recreated pod got its address back"
    );
}

#[tokio::test]
async fn a_graceful_shutdown_hands_the_lease_over_at_once() {
    let (kit, ns) = setup("ctl-handover").await;
    // A long lease: only an explicit release explains a quick handover.
    let flags = ["--lease-duration", "30s", "--renew-deadline", "20s"];
    let mut a = replica(&ns, "a", &flags);
    let mut b = replica(&ns, "b", &flags);
    a.wait_ready().await.expect("controller ready");
    b.wait_ready().await.expect("controller ready");
    let leader = eventually("a leader", 20, || leader_identity(&kit.client, &ns.name))
        .await
        .expect("leader elected");
    let (old, new) = if leader.ends_with(&format!("_{}", a.process.id())) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let stopped = std::time::Instant::now();
    let status = old.process.terminate().expect("exit status");
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    let successor = format!("_{}", new.process.id());
    eventually("the standby leads", 10, || async {
        leader_identity(&kit.client, &ns.name)
            .await
            .filter(|h| h.ends_with(&successor))
    })
    .await
    .expect("handover");
    let took = stopped.elapsed();
    eprintln!("handover took {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "released, not expired: {took:?}"
    );
    // And the new leader serves.
    let pods = pods(&kit.client, &ns.name, "ho", 1).await;
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(
            &ns.name,
            &pods[0],
            "net1",
            vec![range("198.51.100.0/28")],
        )],
    )
    .await;
    all_ready(&kit.client, &ns.name, 1, 20).await;
}

/// Two overlapping ranges of one network are two pools; the reservations
/// keep them from handing out an address twice, the wider range passes
/// over what the narrower holds, and a released address's reservation
/// goes with it.
#[tokio::test]
async fn overlapping_ranges_never_share_an_address() {
    let (kit, ns) = setup("ctl-overlap").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    // 203.0.113.0/29 hands out .1-.6; 203.0.113.0/28 hands out .1-.14,
    // of which only 8 are left once the /29 is full.
    let pods = pods(&kit.client, &ns.name, "ov", 14).await;
    let (narrow, wide) = pods.split_at(6);
    let on = |pods: &[(String, String)], cidr: &str| -> Vec<IPClaim> {
        pods.iter()
            .map(|p| claim(&ns.name, p, "net1", vec![range(cidr)]))
            .collect()
    };
    create_claims(&kit.client, &ns.name, on(narrow, "203.0.113.0/29")).await;
    all_ready(&kit.client, &ns.name, 6, 30).await;
    create_claims(&kit.client, &ns.name, on(wide, "203.0.113.0/28")).await;
    let ready = all_ready(&kit.client, &ns.name, 14, 60).await;
    let addresses = assert_unique(&ready);
    assert_eq!(addresses.len(), 14, "the /28 is shared out exactly");

    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let held = |list: Vec<OverlappingRangeIPReservation>| -> BTreeMap<String, String> {
        list.into_iter()
            .map(|r| (r.name_any(), r.spec.podref))
            .collect()
    };
    let all = held(
        reservations
            .list(&ListParams::default())
            .await
            .expect("list reservations")
            .items,
    );
    assert_eq!(all.len(), 14, "one reservation per address: {all:?}");
    for (claim, a) in &ready {
        let ip = a[0].split('/').next().expect("ip");
        let pod = claim.strip_suffix("-net1").expect("claim name");
        assert_eq!(
            all.get(ip),
            Some(&format!("{}/{pod}", ns.name)),
            "{ip} is reserved for its holder"
        );
    }

    // The /29's holders go: their reservations go with their allocations.
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    for p in narrow {
        api.delete(&format!("{}-net1", p.0), &DeleteParams::default())
            .await
            .expect("delete claim");
    }
    let left = eventually("the /29's reservations removed", 30, || async {
        let left = held(reservations.list(&ListParams::default()).await.ok()?.items);
        (left.len() == 8).then_some(left)
    })
    .await
    .expect("reservations of the released addresses removed");
    for p in narrow {
        let podref = format!("{}/{}", ns.name, p.0);
        assert!(
            !left.values().any(|v| *v == podref),
            "{podref} still holds a reservation"
        );
    }
    assert!(
        pool_allocations(&kit.client, &ns.name, "203.0.113.0-29")
            .await
            .is_empty(),
        "the /29 pool is empty"
    );
}

// ===========================================================================
// Regressions of issue 12: each failed before its fix.
// ===========================================================================

/// A pod from JSON (metadata and spec as given); returns (name, uid).
async fn pod_from(client: &Client, ns: &str, pod: serde_json::Value) -> (String, String) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    let pod = api
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    (pod.name_any(), pod.uid().expect("uid"))
}

/// Clears a pod's finalizers so its namespace can go.
async fn release_finalizers(client: &Client, ns: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {"finalizers": null}});
    let _ = api
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await;
}

/// Defect 1: a Terminating pod (long grace, or a finalizer) still runs
/// with its address: the collector must not hand it to the next pod.
#[tokio::test]
async fn a_terminating_pod_keeps_its_address_through_gc_rounds() {
    let (kit, ns) = setup("ctl-term").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![range("198.51.100.0/29")];
    let held = |name: &str| {
        json!({"metadata": {"name": name, "finalizers": ["hereabouts.dev/test-hold"]},
               "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                        "containers": [{"name": "app", "image": "pause"}]}})
    };
    let nf = pod_from(&kit.client, &ns.name, held("nf-0")).await;
    // A whereabouts-era pod: its allocation has no claim behind it.
    let legacy = pod_from(&kit.client, &ns.name, held("legacy-0")).await;
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &nf, "net1", ranges.clone())],
    )
    .await;
    let before = all_ready(&kit.client, &ns.name, 1, 30).await;
    adopt(
        &kit.client,
        &ns.name,
        "198.51.100.0-29",
        6,
        &format!("{}/{}", ns.name, legacy.0),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(kit.client.clone(), &ns.name);
    for pod in [&nf, &legacy] {
        api.delete(&pod.0, &DeleteParams::default())
            .await
            .expect("delete pod");
    }
    assert!(
        api.get(&nf.0)
            .await
            .expect("still there")
            .metadata
            .deletion_timestamp
            .is_some(),
        "the pod is Terminating"
    );
    // Many collector rounds, each well past the grace period.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let allocations = pool_allocations(&kit.client, &ns.name, "198.51.100.0-29").await;
    assert_eq!(
        allocations.len(),
        2,
        "both Terminating pods keep their addresses: {allocations:?}"
    );
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    assert!(
        claims
            .get_opt(&format!("{}-net1", nf.0))
            .await
            .expect("read claim")
            .is_some(),
        "the Terminating pod's claim is not collected"
    );
    // The next pod gets another address.
    let next = pods(&kit.client, &ns.name, "next", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &next, "net1", ranges)],
    )
    .await;
    let after = all_ready(&kit.client, &ns.name, 2, 30).await;
    let taken: HashSet<String> = before.values().flatten().cloned().collect();
    let given = &after[&format!("{}-net1", next.0)][0];
    assert!(!taken.contains(given), "{given} was still in use");
    assert_ne!(given, "198.51.100.6/29", "{given} is the legacy pod's");
    for pod in [&nf, &legacy] {
        release_finalizers(&kit.client, &ns.name, &pod.0).await;
    }
}

/// Defect 2: a controller scoped to one namespace sees only its pods and
/// claims; the pools it shares with other namespaces' pods must keep
/// their allocations.
#[tokio::test]
async fn a_namespace_scoped_controller_collects_only_its_own_namespace() {
    let (kit, pools_ns) = setup("ctl-scope").await;
    let watched = kit.namespace("ctl-scope-a").await.expect("namespace");
    let other = kit.namespace("ctl-scope-b").await.expect("namespace");
    let replica = replica(
        &pools_ns,
        "a",
        &[
            "--watch-namespace",
            &watched.name,
            "--gc-schedule",
            "* * * * * *",
            "--gc-grace",
            "1s",
        ],
    );
    replica.wait_ready().await.expect("controller ready");
    let mine = pods(&kit.client, &watched.name, "mine", 1).await.remove(0);
    create_claims(
        &kit.client,
        &watched.name,
        vec![claim(
            &watched.name,
            &mine,
            "net1",
            vec![range("203.0.113.0/28")],
        )],
    )
    .await;
    all_ready(&kit.client, &watched.name, 1, 30).await;
    // Live pods of another namespace (another controller's, or whereabouts'),
    // and a pod of the watched namespace that is gone.
    let theirs = pods(&kit.client, &other.name, "theirs", 2).await;
    for (i, pod) in theirs.iter().enumerate() {
        let offset = u32::try_from(10 + i).expect("small");
        let podref = format!("{}/{}", other.name, pod.0);
        adopt(
            &kit.client,
            &pools_ns.name,
            "203.0.113.0-28",
            offset,
            &podref,
        )
        .await;
    }
    let vanished = format!("{}/vanished", watched.name);
    adopt(&kit.client, &pools_ns.name, "203.0.113.0-28", 12, &vanished).await;
    let left = eventually("the watched namespace's leak collected", 60, || async {
        let held = pool_allocations(&kit.client, &pools_ns.name, "203.0.113.0-28").await;
        (!held.values().any(|p| *p == vanished)).then_some(held)
    })
    .await
    .expect("in-scope leak collected");
    // Several more rounds: the other namespace's allocations stay.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let left = {
        let now = pool_allocations(&kit.client, &pools_ns.name, "203.0.113.0-28").await;
        assert_eq!(now, left, "nothing else changed");
        now
    };
    for pod in &theirs {
        let podref = format!("{}/{}", other.name, pod.0);
        assert!(
            left.values().any(|p| *p == podref),
            "{podref}'s address was collected by a controller that cannot see it: {left:?}"
        );
    }
    assert_eq!(left.len(), 3, "{left:?}");
}

/// An entry another hand wrote (a whereabouts plugin still running during
/// the migration) after the pool's actor last wrote the pool: the actor's
/// ledger does not have it, and a release that finds nothing there must
/// read the pool again before it says there was nothing to release, or the
/// leak stays until some allocation happens to conflict. (CI met this when
/// a loaded machine let the actor's status write land before the test's
/// adoptions.)
#[tokio::test]
async fn an_entry_written_after_the_pool_actor_last_wrote_is_collected() {
    let (kit, ns) = setup("ctl-stale").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let live = pods(&kit.client, &ns.name, "live", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(
            &ns.name,
            &live,
            "net1",
            vec![range("203.0.113.16/28")],
        )],
    )
    .await;
    all_ready(&kit.client, &ns.name, 1, 30).await;
    // The actor writes the pool's status once idle (half a second): let it,
    // so the entry below comes after everything the actor wrote.
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    eventually("the pool's status written", 30, || async {
        let pool = pools.get("203.0.113.16-28").await.ok()?;
        pool.status.is_some().then_some(())
    })
    .await
    .expect("status");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gone = format!("{}/gone", ns.name);
    adopt(&kit.client, &ns.name, "203.0.113.16-28", 9, &gone).await;
    let left = eventually("the gone pod's entry collected", 30, || async {
        let held = pool_allocations(&kit.client, &ns.name, "203.0.113.16-28").await;
        (!held.values().any(|p| *p == gone)).then_some(held)
    })
    .await
    .expect("an entry written after the actor's last write is collected");
    let mine = format!("{}/{}", ns.name, live.0);
    assert_eq!(
        left.values().collect::<Vec<_>>(),
        vec![&mine],
        "only the live pod's address stays"
    );
}

/// The same for a refusal: a range found full, then freed by another hand
/// (a whereabouts DEL during the migration) after the actor last wrote the
/// pool. The next claim must get the freed address, not "exhausted" from
/// what the actor read before.
#[tokio::test]
async fn an_address_freed_after_the_pool_actor_last_wrote_is_handed_out() {
    let (kit, ns) = setup("ctl-freed").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let pods = pods(&kit.client, &ns.name, "full", 3).await;
    // A /30 hands out .1 and .2: one to a claim, one to whereabouts.
    let ask = |pod: &(String, String)| claim(&ns.name, pod, "net1", vec![range("203.0.113.32/30")]);
    create_claims(&kit.client, &ns.name, vec![ask(&pods[0])]).await;
    all_ready(&kit.client, &ns.name, 1, 30).await;
    adopt(
        &kit.client,
        &ns.name,
        "203.0.113.32-30",
        2,
        &format!("{}/wb", ns.name),
    )
    .await;
    // The second claim finds the range full (its write conflicts, the actor
    // reads the pool and refuses): then the actor writes the status.
    create_claims(&kit.client, &ns.name, vec![ask(&pods[1])]).await;
    let second = format!("{}-net1", pods[1].0);
    eventually("the second claim refused", 30, || async {
        let c = claims.get(&second).await.ok()?;
        (condition_reason(&c)?.0 == "False").then_some(())
    })
    .await
    .expect("a full range refuses");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Whereabouts frees its address.
    let mut pool = pools.get("203.0.113.32-30").await.expect("pool");
    assert!(pool.spec.allocations.remove("2").is_some(), "{pool:?}");
    pools
        .replace("203.0.113.32-30", &PostParams::default(), &pool)
        .await
        .expect("freed");
    create_claims(&kit.client, &ns.name, vec![ask(&pods[2])]).await;
    let third = format!("{}-net1", pods[2].0);
    let address = eventually("the third claim answered", 30, || async {
        let c = claims.get(&third).await.ok()?;
        match condition_reason(&c)?.0.as_str() {
            "True" => ready_addresses(&c),
            _ => Some(vec![format!("refused: {:?}", c.status)]),
        }
    })
    .await
    .expect("answered");
    assert_eq!(address, vec!["203.0.113.34/30".to_owned()]);
}

/// Defect 3: claim names repeat across DEL and a new ADD; an answer
/// computed for the old claim must not land on the new one.
#[tokio::test]
async fn a_late_answer_never_lands_on_a_recreated_claim() {
    let (kit, ns) = setup("ctl-late").await;
    let pod = pods(&kit.client, &ns.name, "late", 1).await.remove(0);
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let first = api
        .create(
            &PostParams::default(),
            &claim(&ns.name, &pod, "net1", vec![range("198.51.100.0/28")]),
        )
        .await
        .expect("create claim");
    let name = first.name_any();
    hereabouts_kit::delete_and_wait(&api, &name, 20)
        .await
        .expect("DEL");
    let second = api
        .create(
            &PostParams::default(),
            &claim(&ns.name, &pod, "net1", vec![range("198.51.100.0/28")]),
        )
        .await
        .expect("the next ADD's claim");
    assert_ne!(first.uid(), second.uid());
    let answer = hereabouts_api::IPClaimStatus {
        addresses: vec!["198.51.100.1/28".into()],
        observed_generation: first.metadata.generation,
        ..Default::default()
    };
    // The old claim as the controller cached it, and with no version
    // (the merge-patch fallback after a conflict).
    let mut unversioned = first.clone();
    unversioned.metadata.resource_version = None;
    for stale in [&first, &unversioned] {
        let written =
            hereabouts_controller::claims::write_status(&api, stale, answer.clone()).await;
        assert!(
            written.is_err(),
            "an answer to the old claim was written to the new one"
        );
    }
    let now = api.get(&name).await.expect("claim");
    assert_eq!(now.uid(), second.uid());
    assert!(now.status.is_none(), "the new claim got {:?}", now.status);
    // Its own answer lands.
    hereabouts_controller::claims::write_status(&api, &second, answer)
        .await
        .expect("the right claim's answer");
    let now = api.get(&name).await.expect("claim");
    assert_eq!(
        now.status.expect("status").addresses,
        vec!["198.51.100.1/28".to_owned()]
    );
}

/// Defect 4: a reservation adopted for its owner must change, so that a
/// deletion prepared against it as it was (a leftover release task, the
/// collector's cache) fails instead of removing it.
#[tokio::test]
async fn an_adopted_reservation_changes_so_stale_deleters_fail() {
    let (kit, ns) = setup("ctl-adopt").await;
    let pod = pods(&kit.client, &ns.name, "adopt", 1).await.remove(0);
    let podref = format!("{}/{}", ns.name, pod.0);
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let before = reservations
        .create(
            &PostParams::default(),
            &OverlappingRangeIPReservation::new(
                "198.51.100.1",
                hereabouts_api::OverlappingRangeIPReservationSpec {
                    containerid: format!("container-{}", pod.1),
                    podref: podref.clone(),
                    ifname: "net1".into(),
                },
            ),
        )
        .await
        .expect("a reservation left by an earlier attempt");
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(
            &ns.name,
            &pod,
            "net1",
            vec![range("198.51.100.0/28")],
        )],
    )
    .await;
    let ready = all_ready(&kit.client, &ns.name, 1, 30).await;
    assert_eq!(ready.values().next(), Some(&vec!["198.51.100.1/28".into()]));
    // A deleter holding the object as it was before the adoption.
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: before.uid(),
            resource_version: before.resource_version(),
        }),
        ..Default::default()
    };
    let deleted = reservations.delete("198.51.100.1", &stale).await;
    assert!(
        deleted.is_err(),
        "a stale deleter removed the reservation the allocation relies on"
    );
    let now = reservations.get("198.51.100.1").await.expect("reservation");
    assert_eq!(now.spec.podref, podref);
    assert_ne!(now.resource_version(), before.resource_version());
}

/// Defect 5: a claim acts only for its own pod (namespace, UID, node) and
/// only on the ranges its network declares.
#[tokio::test]
async fn claims_for_another_pod_or_undeclared_ranges_are_refused() {
    let (kit, ns) = setup("ctl-trust").await;
    let elsewhere = kit.namespace("ctl-trust-b").await.expect("namespace");
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &nad(
            "blue",
            json!({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan", "master": "eth1",
                   "ipam": {"type": "hereabouts", "range": "100.64.7.0/28"}}),
        ),
    )
    .await
    .expect("NAD");
    let blue = |pod: &(String, String), ranges: Vec<ClaimRange>| {
        let mut c = claim(&ns.name, pod, "net1", ranges);
        c.spec.network.name = "blue".into();
        c
    };
    let victim = pods(&kit.client, &ns.name, "victim", 1).await.remove(0);
    let intruder = pods(&kit.client, &ns.name, "intruder", 1).await.remove(0);
    let outsider = pods(&kit.client, &elsewhere.name, "outsider", 1)
        .await
        .remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![blue(&victim, vec![range("100.64.7.0/28")])],
    )
    .await;
    let ready = all_ready(&kit.client, &ns.name, 1, 30).await;
    let victim_address = ready.values().next().expect("address").clone();

    let mut cases: Vec<(&str, IPClaim, &str, &str)> = Vec::new();
    // The victim's pod and interface, named by a claim of another name.
    let mut c = blue(&victim, vec![range("100.64.7.0/28")]);
    c.metadata.name = Some("steal-uid".into());
    c.spec.pod.uid = intruder.1.clone();
    cases.push(("wrong uid", c, "PodMismatch", "spec.pod.uid"));
    let mut c = blue(&victim, vec![range("100.64.7.0/28")]);
    c.metadata.name = Some("steal-node".into());
    c.spec.node = "another-node".into();
    cases.push(("wrong node", c, "PodMismatch", "spec.node"));
    let mut c = blue(&outsider, vec![range("100.64.7.0/28")]);
    c.metadata.name = Some("steal-namespace".into());
    c.spec.pod.namespace = elsewhere.name.clone();
    cases.push((
        "pod of another namespace",
        c,
        "PodNotInNamespace",
        "spec.pod.namespace",
    ));
    let mut c = blue(&intruder, vec![range("100.64.7.0/28")]);
    c.metadata.name = Some("ghost".into());
    c.spec.pod.name = "no-such-pod".into();
    cases.push(("missing pod", c, "PodNotFound", "spec.pod.name"));
    let mut c = blue(&intruder, vec![range("100.64.0.0/16")]);
    c.metadata.name = Some("wider".into());
    cases.push((
        "range blue does not declare",
        c,
        "UndeclaredRange",
        "spec.ranges",
    ));
    let mut c = claim(&ns.name, &intruder, "net2", vec![range("100.64.7.0/29")]);
    c.metadata.name = Some("invented".into());
    c.spec.network.name = "invented".into();
    cases.push((
        "invented network on blue's range",
        c,
        "UndeclaredNetwork",
        "spec.ranges[0]",
    ));
    let names: Vec<String> = cases.iter().map(|(_, c, _, _)| c.name_any()).collect();
    create_claims(
        &kit.client,
        &ns.name,
        cases.iter().map(|(_, c, _, _)| c.clone()).collect(),
    )
    .await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    for ((what, _, reason, field), name) in cases.iter().zip(&names) {
        let refused = eventually(&format!("{what} refused"), 30, || async {
            let c = claims.get(name).await.ok()?;
            let status = c.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        })
        .await
        .expect("a refusal");
        assert_eq!(refused.reason, *reason, "{what}: {}", refused.message);
        assert!(
            refused.message.contains(field),
            "{what}: the message names {field}: {}",
            refused.message
        );
    }
    // Nothing was allocated for them, and the victim keeps its address.
    let held = pool_allocations(&kit.client, &ns.name, "100.64.7.0-28").await;
    assert_eq!(held.len(), 1, "{held:?}");
    let after = claims
        .get(&format!("{}-net1", victim.0))
        .await
        .expect("victim claim");
    assert_eq!(ready_addresses(&after), Some(victim_address));
    let events: Api<Event> = Api::namespaced(kit.client.clone(), &ns.name);
    eventually("an event on a refused claim", 20, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.involved_object.name.as_deref() == Some("steal-node")
                    && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await
    .expect("Warning event");
    // The intruder's own, declared attachment is served.
    create_claims(
        &kit.client,
        &ns.name,
        vec![blue(&intruder, vec![range("100.64.7.0/28")])],
    )
    .await;
    eventually("the intruder's own claim answered", 30, || async {
        ready_addresses(&claims.get(&format!("{}-net1", intruder.0)).await.ok()?)
    })
    .await
    .expect("served");
}

/// Defect 6: whereabouts' node-slice pools are `<network>-<node>-<slice>`;
/// their reservations are named with `<network>` alone.
#[tokio::test]
async fn node_slice_pools_keep_their_reservations() {
    let (kit, ns) = setup("ctl-slice").await;
    let pod = pods(&kit.client, &ns.name, "slice", 1).await.remove(0);
    let podref = format!("{}/{}", ns.name, pod.0);
    // The NAD whereabouts serves in node-slice mode.
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &nad(
            "bluenet",
            json!({"cniVersion": "1.0.0", "name": "bluenet", "type": "macvlan", "master": "eth1",
                   "ipam": {"type": "whereabouts", "range": "100.64.9.0/24",
                            "network_name": "bluenet", "node_slice_size": "/28"}}),
        ),
    )
    .await
    .expect("NAD");
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut pool = IPPool::new(
        "bluenet-worker-1-100.64.9.16-28",
        hereabouts_api::IPPoolSpec {
            range: "100.64.9.16/28".into(),
            allocations: BTreeMap::new(),
        },
    );
    pool.spec.allocations.insert(
        "1".into(),
        hereabouts_api::IPAllocation {
            id: "c1".into(),
            podref: podref.clone(),
            ifname: "net1".into(),
        },
    );
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("node-slice pool");
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    reservations
        .create(
            &PostParams::default(),
            &OverlappingRangeIPReservation::new(
                "bluenet-100.64.9.17",
                hereabouts_api::OverlappingRangeIPReservationSpec {
                    containerid: "c1".into(),
                    podref,
                    ifname: "net1".into(),
                },
            ),
        )
        .await
        .expect("its reservation");
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        reservations
            .get_opt("bluenet-100.64.9.17")
            .await
            .expect("read")
            .is_some(),
        "the collector removed a live node-slice reservation"
    );
}

/// Defect 8: an address held for a StatefulSet name gives way to a static
/// request for exactly it (a Deployment's fixed IP moving to its next pod).
#[tokio::test]
async fn a_static_request_takes_an_address_held_for_another_name() {
    let (kit, ns) = setup("ctl-static-hold").await;
    let replica = replica(&ns, "a", &["--hold-released", "120s"]);
    replica.wait_ready().await.expect("controller ready");
    let ranges = vec![range("203.0.113.0/28")];
    let old = pods(&kit.client, &ns.name, "fixed-old", 1).await.remove(0);
    let mut first = claim(&ns.name, &old, "net1", ranges.clone());
    first.spec.static_ips = vec!["203.0.113.9".into()];
    create_claims(&kit.client, &ns.name, vec![first]).await;
    all_ready(&kit.client, &ns.name, 1, 30).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    hereabouts_kit::delete_and_wait(&claims, &format!("{}-net1", old.0), 20)
        .await
        .expect("DEL");
    // Held, not allocated: the release landed (a request racing it would
    // meet the old allocation and be refused as taken).
    let fixed: IpAddr = "203.0.113.9".parse().expect("address");
    eventually("the release of 203.0.113.9", 20, || async {
        let held = pool_allocations(&kit.client, &ns.name, "203.0.113.0-28").await;
        (!held.contains_key(&fixed)).then_some(())
    })
    .await
    .expect("released into a hold");
    let new = pods(&kit.client, &ns.name, "fixed-new", 1).await.remove(0);
    let mut next = claim(&ns.name, &new, "net1", ranges);
    next.spec.static_ips = vec!["203.0.113.9".into()];
    let asked = std::time::Instant::now();
    create_claims(&kit.client, &ns.name, vec![next]).await;
    let ready = all_ready(&kit.client, &ns.name, 1, 20).await;
    assert_eq!(
        ready[&format!("{}-net1", new.0)],
        vec!["203.0.113.9/28".to_owned()]
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "handed over at once, not after the hold"
    );
}

/// Defect 9: a range whose first half an overlapping range holds finds
/// every foreign address in one attempt, not one per attempt.
#[tokio::test]
async fn a_range_half_held_by_an_overlapping_one_is_served_at_once() {
    let (kit, ns) = setup("ctl-half").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let all = pods(&kit.client, &ns.name, "half", 127).await;
    let (narrow, wide) = all.split_at(126);
    create_claims(
        &kit.client,
        &ns.name,
        narrow
            .iter()
            .map(|p| claim(&ns.name, p, "net1", vec![range("100.64.2.0/25")]))
            .collect(),
    )
    .await;
    all_ready(&kit.client, &ns.name, 126, 60).await;
    let asked = std::time::Instant::now();
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(
            &ns.name,
            &wide[0],
            "net1",
            vec![range("100.64.2.0/24")],
        )],
    )
    .await;
    let ready = all_ready(&kit.client, &ns.name, 127, 60).await;
    let took = asked.elapsed();
    assert_unique(&ready);
    assert_eq!(
        ready[&format!("{}-net1", wide[0].0)],
        vec!["100.64.2.127/24".to_owned()]
    );
    assert!(
        took < Duration::from_secs(10),
        "the /24 waited {took:?} for its first free address"
    );
}

/// Defect 12: a claim whose ranges change gives back what it no longer
/// asks for.
#[tokio::test]
async fn a_claim_moved_to_another_range_releases_the_old_one() {
    let (kit, ns) = setup("ctl-move").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "move", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(
            &ns.name,
            &pod,
            "net1",
            vec![range("198.51.100.0/28")],
        )],
    )
    .await;
    all_ready(&kit.client, &ns.name, 1, 30).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let name = format!("{}-net1", pod.0);
    let mut moved = claims.get(&name).await.expect("claim");
    moved.spec.ranges = vec![range("198.51.100.16/28")];
    claims
        .replace(&name, &PostParams::default(), &moved)
        .await
        .expect("the NAD changed and the pod was ADDed again");
    let ready = eventually("answered on the new range", 30, || async {
        ready_addresses(&claims.get(&name).await.ok()?)
    })
    .await
    .expect("answer");
    assert_eq!(ready, vec!["198.51.100.17/28".to_owned()]);
    eventually("the old range's address released", 30, || async {
        pool_allocations(&kit.client, &ns.name, "198.51.100.0-28")
            .await
            .is_empty()
            .then_some(())
    })
    .await
    .expect("released");
    assert_eq!(
        pool_allocations(&kit.client, &ns.name, "198.51.100.16-28")
            .await
            .len(),
        1
    );
}

/// Defect 13: reservations a stalled or dead leader wrote for allocations
/// it never committed are resolved when they are in the way, not minutes
/// later by the collector: an exact-fit range serves every pod.
#[tokio::test]
async fn a_dead_leaders_uncommitted_reservations_do_not_exhaust_a_range() {
    let (kit, ns) = setup("ctl-orphans").await;
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    // The pool as the dead leader last committed it: empty, with the
    // version its pending write would carry.
    pools
        .create(
            &PostParams::default(),
            &IPPool::new(
                "203.0.113.32-29",
                hereabouts_api::IPPoolSpec {
                    range: "203.0.113.32/29".into(),
                    allocations: BTreeMap::new(),
                },
            ),
        )
        .await
        .expect("pool");
    let stale_pool = pools.get("203.0.113.32-29").await.expect("pool");
    for i in 1..=3 {
        let mut r = OverlappingRangeIPReservation::new(
            &format!("203.0.113.{}", 32 + i),
            hereabouts_api::OverlappingRangeIPReservationSpec {
                containerid: format!("dead-{i}"),
                podref: format!("{}/never-answered-{i}", ns.name),
                ifname: "net1".into(),
            },
        );
        r.metadata.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "hereabouts".to_owned(),
        )]));
        r.metadata.annotations = Some(BTreeMap::from([(
            "hereabouts.dev/pool".to_owned(),
            "203.0.113.32-29".to_owned(),
        )]));
        reservations
            .create(&PostParams::default(), &r)
            .await
            .expect("an uncommitted reservation");
    }
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let pods = pods(&kit.client, &ns.name, "fit", 6).await;
    create_claims(
        &kit.client,
        &ns.name,
        pods.iter()
            .map(|p| claim(&ns.name, p, "net1", vec![range("203.0.113.32/29")]))
            .collect(),
    )
    .await;
    let ready = all_ready(&kit.client, &ns.name, 6, 30).await;
    assert_eq!(assert_unique(&ready).len(), 6, "every pod served");
    // The dead leader's write, should it wake now, cannot commit.
    let mut late = stale_pool;
    late.spec.allocations.insert(
        "1".into(),
        hereabouts_api::IPAllocation {
            id: "dead-1".into(),
            podref: format!("{}/never-answered-1", ns.name),
            ifname: "net1".into(),
        },
    );
    assert!(
        pools
            .replace("203.0.113.32-29", &PostParams::default(), &late)
            .await
            .is_err(),
        "a deposed leader's pool write committed"
    );
    for (claim, a) in &ready {
        let ip = a[0].split('/').next().expect("ip");
        let pod = claim.strip_suffix("-net1").expect("claim name");
        let r = reservations.get(ip).await.expect("reservation");
        assert_eq!(r.spec.podref, format!("{}/{pod}", ns.name));
    }
}

/// Defect 14: a pool write keeps what others put on an adopted pool.
#[tokio::test]
async fn pool_writes_keep_annotations_owners_and_finalizers() {
    let (kit, ns) = setup("ctl-keep").await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut pool = IPPool::new(
        "198.51.100.64-28",
        hereabouts_api::IPPoolSpec {
            range: "198.51.100.64/28".into(),
            allocations: BTreeMap::new(),
        },
    );
    pool.metadata.annotations = Some(BTreeMap::from([(
        "example.com/owner-note".to_owned(),
        "keep me".to_owned(),
    )]));
    pool.metadata.finalizers = Some(vec!["example.com/keep".to_owned()]);
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("a whereabouts pool with someone's metadata");
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "keep", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(
            &ns.name,
            &pod,
            "net1",
            vec![range("198.51.100.64/28")],
        )],
    )
    .await;
    all_ready(&kit.client, &ns.name, 1, 30).await;
    let written = pools.get("198.51.100.64-28").await.expect("pool");
    assert_eq!(written.spec.allocations.len(), 1);
    assert_eq!(
        written
            .metadata
            .annotations
            .unwrap_or_default()
            .get("example.com/owner-note")
            .map(String::as_str),
        Some("keep me")
    );
    assert_eq!(
        written.metadata.finalizers,
        Some(vec!["example.com/keep".to_owned()])
    );
    let patch = json!({"metadata": {"finalizers": null}});
    let _ = pools
        .patch(
            "198.51.100.64-28",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await;
}

/// Issue 15: the StatefulSet hold lives in the pool, not in the leader's
/// memory. web-0's claim goes (DEL), the leader that held the address for
/// it is killed, a stranger asks on the new leader and gets another
/// address, and web-0, recreated under its name, gets its own back.
#[tokio::test]
async fn a_hold_survives_the_death_of_the_leader_that_made_it() {
    let (kit, ns) = setup("ctl-hold-failover").await;
    let mut a = replica(&ns, "a", &["--hold-released", "120s"]);
    let mut b = replica(&ns, "b", &["--hold-released", "120s"]);
    a.wait_ready().await.expect("controller ready");
    b.wait_ready().await.expect("controller ready");
    let ranges = vec![range("203.0.113.0/29")];
    let first = pods(&kit.client, &ns.name, "web", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &first, "net1", ranges.clone())],
    )
    .await;
    let before = all_ready(&kit.client, &ns.name, 1, 30).await;
    let address = before.values().next().expect("address").clone();
    let ip: IpAddr = address[0]
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("an address");

    // DEL deletes the claim; the pod object goes.
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    hereabouts_kit::delete_and_wait(&claims, &format!("{}-net1", first.0), 20)
        .await
        .expect("DEL");
    let api: Api<Pod> = Api::namespaced(kit.client.clone(), &ns.name);
    api.delete(
        &first.0,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("delete pod");
    // The hold is in the pool (what any replica reads), not allocated.
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    eventually("the hold written into the pool", 20, || async {
        let pool = pools.get("203.0.113.0-29").await.ok()?;
        pool.spec
            .allocations
            .values()
            .any(|e| {
                e.podref == format!("{}/{}", ns.name, first.0)
                    && hereabouts_core::ledger::held_until(&e.id).is_some()
            })
            .then_some(())
    })
    .await
    .expect("a hold entry for web-0");
    assert!(
        !pool_allocations(&kit.client, &ns.name, "203.0.113.0-29")
            .await
            .contains_key(&ip),
        "held, not allocated"
    );

    // The leader that made the hold dies; the other replica leads.
    let leader = eventually("a leader", 20, || leader_identity(&kit.client, &ns.name))
        .await
        .expect("leader elected");
    let (victim, survivor) = if leader.ends_with(&format!("_{}", a.process.id())) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.process.kill();
    let survivor_id = format!("_{}", survivor.process.id());
    eventually("the other replica leads", 30, || async {
        leader_identity(&kit.client, &ns.name)
            .await
            .filter(|l| l.ends_with(&survivor_id))
    })
    .await
    .expect("failover");

    // A stranger asks on the new leader: not the held address.
    let other = pods(&kit.client, &ns.name, "other", 1).await.remove(0);
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &other, "net1", ranges.clone())],
    )
    .await;
    let during = all_ready(&kit.client, &ns.name, 1, 30).await;
    assert_ne!(
        during.values().next(),
        Some(&address),
        "the new leader gave the held address to another pod"
    );

    // web-0 comes back under its name: its address.
    let again = eventually("pod recreated", 20, || async {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": first.0},
            "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "pause"}]}
        }))
        .ok()?;
        let pod = api.create(&PostParams::default(), &pod).await.ok()?;
        Some((first.0.clone(), pod.uid()?))
    })
    .await
    .expect("recreated");
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &again, "net1", ranges)],
    )
    .await;
    let after = all_ready(&kit.client, &ns.name, 2, 30).await;
    assert_eq!(
        after[&format!("{}-net1", first.0)],
        address,
        "the recreated pod got its address back from the new leader"
    );
}

/// The claim contract (issue 13): a static address travels with the range
/// the plugin matched it to, so a claim whose two ranges both hold it asks
/// it of that range alone; a claim whose flat list (which plugins also
/// write, for controllers and schemas that predate the per-range field)
/// disagrees is refused, naming both fields, and allocates nothing.
#[tokio::test]
async fn a_static_address_is_asked_of_the_range_the_plugin_matched_it_to() {
    let (kit, ns) = setup("ctl-per-range").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let mut pair = pods(&kit.client, &ns.name, "per-range", 2).await;
    let (both, matched) = (pair.remove(1), pair.remove(0));
    let mut wide = range("100.64.40.0/23");
    wide.static_ip = Some("100.64.41.7".into());
    let ranges = vec![range("100.64.41.0/24"), wide];
    let mut twice = claim(&ns.name, &both, "net1", ranges.clone());
    twice.spec.static_ips = vec!["100.64.41.9".into()];
    create_claims(
        &kit.client,
        &ns.name,
        vec![claim(&ns.name, &matched, "net1", ranges), twice],
    )
    .await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let refused = eventually("the two-contract claim refused", 30, || async {
        let c = claims.get(&format!("{}-net1", both.0)).await.ok()?;
        c.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")
    })
    .await
    .expect("a refusal");
    assert_eq!(
        refused.reason, "InvalidStaticAddress",
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("spec.ranges[0].staticIP")
            && refused.message.contains("spec.staticIPs"),
        "{}",
        refused.message
    );
    let ready = all_ready(&kit.client, &ns.name, 1, 30).await;
    assert_eq!(
        ready[&format!("{}-net1", matched.0)],
        vec!["100.64.41.1/24".to_owned(), "100.64.41.7/23".to_owned()],
        "the static address went to the range it was matched to, once"
    );
    let narrow = pool_allocations(&kit.client, &ns.name, "100.64.41.0-24").await;
    let wide = pool_allocations(&kit.client, &ns.name, "100.64.40.0-23").await;
    assert_eq!((narrow.len(), wide.len()), (1, 1), "{narrow:?} {wide:?}");
}
