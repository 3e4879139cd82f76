//! The controller against the real local API server: pools from NADs, a
//! burst of claims, leader failover, a deposed leader, garbage collection,
//! StatefulSet-style recreation and malformed NADs. Each test runs its own
//! controller replicas, scoped to the test's namespace.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use futures::future::join_all;
use hereabouts::crd::{
    ClaimRange, IPClaim, IPClaimSpec, IPPool, NetworkAttachmentDefinition, NetworkRef,
    OverlappingRangeIPReservation, PodRef,
};
use hereabouts_kit::{Controller, Kit, TestNamespace, eventually, kit};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// One controller replica, killed when dropped.
fn replica(ns: &TestNamespace, name: &str, extra: &[&str]) -> Controller {
    Controller::start(
        Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        ns,
        name,
        extra,
    )
    .expect("start controller")
}

async fn setup(prefix: &str) -> (Kit, TestNamespace) {
    let kit = kit().await.expect("local control plane");
    hereabouts::crd::install(&kit.client)
        .await
        .expect("install CRDs");
    let ns = kit.namespace(prefix).await.expect("namespace");
    (kit, ns)
}

fn range(cidr: &str) -> ClaimRange {
    ClaimRange {
        range: cidr.to_owned(),
        ..Default::default()
    }
}

/// Pod objects bound to a node that needs no kubelet; returns (name, uid).
async fn pods(client: &Client, ns: &str, prefix: &str, count: usize) -> Vec<(String, String)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    join_all((0..count).map(|i| {
        let api = api.clone();
        let name = format!("{prefix}-{i}");
        async move {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": "simulated", "automountServiceAccountToken": false,
                         "containers": [{"name": "app", "image": "pause"}]}
            }))
            .expect("pod");
            let pod = api
                .create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
            (name, pod.uid().expect("uid"))
        }
    }))
    .await
}

fn claim(ns: &str, pod: &(String, String), ifname: &str, ranges: Vec<ClaimRange>) -> IPClaim {
    IPClaim::new(
        &format!("{}-{ifname}", pod.0),
        IPClaimSpec {
            network: NetworkRef {
                namespace: ns.to_owned(),
                name: "test-network".to_owned(),
            },
            ranges,
            network_name: None,
            enable_overlapping_ranges: true,
            interface: ifname.to_owned(),
            pod: PodRef {
                namespace: ns.to_owned(),
                name: pod.0.clone(),
                uid: pod.1.clone(),
            },
            container_id: format!("container-{}", pod.1),
            node: "simulated".to_owned(),
            static_ips: Vec::new(),
        },
    )
}

fn ready_addresses(claim: &IPClaim) -> Option<Vec<String>> {
    let status = claim.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
        && status.observed_generation == claim.metadata.generation;
    ready.then(|| status.addresses.clone())
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

/// All allocations of the pool `name` (all shards), as IP -> podref.
async fn pool_allocations(client: &Client, ns: &str, name: &str) -> BTreeMap<IpAddr, String> {
    let api: Api<IPPool> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for pool in api
        .list(&ListParams::default())
        .await
        .expect("list pools")
        .items
    {
        let pool_name = pool.name_any();
        if pool_name != name && !pool_name.starts_with(&format!("{name}-s")) {
            continue;
        }
        let (_, cidr) =
            hereabouts::ipam::Cidr::parse_with_host(&pool.spec.range).expect("pool range");
        for (key, a) in pool.spec.allocations {
            let offset: u128 = key.parse().expect("offset key");
            let ip = cidr.ip_at(offset).expect("offset in range");
            assert!(
                out.insert(ip, a.podref.clone()).is_none(),
                "{ip} allocated twice"
            );
        }
    }
    out
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
        hereabouts::crd::NetworkAttachmentDefinitionSpec {
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
    assert_eq!(exhausted.allocated, 200);
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
        hereabouts::crd::IPAllocation {
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
    let leases: Api<Lease> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut lease = leases.get("hereabouts-controller").await.expect("lease");
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("usurper".into());
    spec.lease_duration_seconds = Some(3600);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    leases
        .replace("hereabouts-controller", &PostParams::default(), &lease)
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
        hereabouts::crd::IPAllocation {
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
        hereabouts::crd::OverlappingRangeIPReservationSpec {
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
