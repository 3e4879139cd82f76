//! A skeptical review of the fixes for issue 12 (commits 2d2352a..8f445bb):
//! each test is a sequence of API-server-visible events that, when the test
//! fails, breaks one of the design's invariants (the README's "What
//! hereabouts guarantees"). They run against the real local API
//! server, like tests/controller.rs, with the same fixtures (tests/common).
//!
//! A failing test here is a finding, not a flaky test: each says in its
//! assertion message which invariant it breaks.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use hereabouts_api::{
    ClaimRange, IPAllocation, IPClaim, IPPool, OverlappingRangeIPReservation,
    OverlappingRangeIPReservationSpec,
};
use hereabouts_kit::eventually;

mod common;
use common::{adopt, pods, pool_allocations, range, ready_addresses, replica, setup};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// A claim as the plugin files it for (pod, interface) on `network`.
fn claim(
    ns: &str,
    name: &str,
    pod: &(String, String),
    ifname: &str,
    network: &str,
    ranges: Vec<ClaimRange>,
) -> IPClaim {
    IPClaim::new(name, common::claim_spec(ns, network, ifname, pod, ranges))
}

async fn create_claim(client: &Client, ns: &str, claim: &IPClaim) {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), claim)
        .await
        .expect("create claim");
}

/// The Ready=False condition of a claim, once it has one: (reason, message).
fn refusal(claim: &IPClaim) -> Option<(String, String)> {
    let c = claim
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False")?;
    Some((c.reason.clone(), c.message.clone()))
}

/// Waits for the claim `name` to be answered Ready; its addresses.
async fn ready(client: &Client, ns: &str, name: &str, seconds: u64) -> Vec<String> {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    eventually(&format!("claim {name} ready"), seconds, || async {
        ready_addresses(&api.get(name).await.ok()?)
    })
    .await
    .expect("claim answered")
}

// ===========================================================================
// Invariant 1: a second claim of the same (pod, interface) on an
// overlapping pool of the same network_name takes the first pool's
// reservation over ("same owner"); releasing it then removes the
// reservation the first pool's live allocation relies on.
// ===========================================================================

/// Node credentials may file claims for their own pods (the admission
/// policy checks `spec.node` only; the controller checks namespace, UID,
/// node and, for an undeclared network, that its ranges overlap no
/// declared one). Two such claims for one pod and interface on overlapping
/// ranges (or a claim whose network changed under a live pod) make the
/// second pool take the first pool's reservation over as "the same
/// owner"; deleting the second claim deletes that reservation, and a third
/// overlapping pool hands the first pool's live address to another pod.
#[tokio::test]
async fn a_second_claim_of_the_same_interface_unprotects_the_first_pools_address() {
    let (kit, ns) = setup("rv-owner").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let mut made = pods(&kit.client, &ns.name, "p", 2).await;
    let q = made.pop().expect("q");
    let p = made.pop().expect("p");

    // P's net1 on network "a": 100.64.1.0/28 gives it .1.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "p-a",
            &p,
            "net1",
            "a",
            vec![range("100.64.1.0/28")],
        ),
    )
    .await;
    let first = ready(&kit.client, &ns.name, "p-a", 30).await;
    assert_eq!(first, vec!["100.64.1.1/28".to_owned()]);

    // The same pod and interface on network "b", overlapping (same,
    // unset network_name): a claim P's own node may file.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "p-b",
            &p,
            "net1",
            "b",
            vec![range("100.64.1.0/27")],
        ),
    )
    .await;
    // It is refused: an interface of a pod has one attachment.
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let refusal = eventually("the second claim refused", 30, || async {
        let c = claims.get("p-b").await.ok()?;
        c.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")
    })
    .await
    .expect("refusal");
    assert_eq!(refusal.reason, "InterfaceClaimed", "{}", refusal.message);
    assert!(
        refusal.message.contains("spec.interface"),
        "{}",
        refusal.message
    );
    hereabouts_kit::delete_and_wait(&claims, "p-b", 20)
        .await
        .expect("delete the second claim");
    eventually("the /27 pool emptied", 20, || async {
        pool_allocations(&kit.client, &ns.name, "100.64.1.0-27")
            .await
            .is_empty()
            .then_some(())
    })
    .await
    .expect("released");
    // Let its reservation removal run.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Another pod on a third overlapping range of the same network_name.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "q-c",
            &q,
            "net1",
            "c",
            vec![range("100.64.1.0/26")],
        ),
    )
    .await;
    let third = ready(&kit.client, &ns.name, "q-c", 30).await;

    let narrow = pool_allocations(&kit.client, &ns.name, "100.64.1.0-28").await;
    let wide = pool_allocations(&kit.client, &ns.name, "100.64.1.0-26").await;
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let reserved: BTreeMap<String, String> = reservations
        .list(&ListParams::default())
        .await
        .expect("reservations")
        .items
        .into_iter()
        .map(|r| (r.name_any(), r.spec.podref))
        .collect();
    let shared: Vec<_> = narrow
        .iter()
        .filter(|(ip, _)| wide.contains_key(ip))
        .map(|(ip, holder)| format!("{ip}: {holder} (/28) and {} (/26)", wide[ip]))
        .collect();
    assert!(
        shared.is_empty(),
        "invariant 1: one address committed to two live attachments of overlapping \
         pools of one network_name: {shared:?} (P's claim answered {first:?} on /28; \
         Q's {third:?} on /26; reservations now {reserved:?})"
    );
}

// ===========================================================================
// Invariants 5 and 6: the collector counts every claim whose spec.pod.uid
// is some live pod's UID as the record of (spec.pod.name, interface),
// without checking that the UID is that pod's, nor that the claim was
// ever accepted.
// ===========================================================================

/// A claim refused for naming another pod (PodMismatch) still tells the
/// collector which pools that pod's interface uses: an address the pod
/// holds without a claim (adopted from whereabouts) is released while the
/// pod runs, and handed to the next pod.
#[tokio::test]
async fn a_refused_claim_naming_another_pod_gets_that_pods_address_collected() {
    let (kit, ns) = setup("rv-gcvictim").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let mut made = pods(&kit.client, &ns.name, "v", 2).await;
    let intruder = made.pop().expect("intruder");
    let victim = made.pop().expect("victim");
    // The intruder's own attachment makes the pool.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "intruder-own",
            &intruder,
            "net1",
            "a",
            vec![range("198.51.100.0/28")],
        ),
    )
    .await;
    ready(&kit.client, &ns.name, "intruder-own", 30).await;
    // The victim, a whereabouts-era pod, runs with .5 on net1.
    let victim_ref = format!("{}/{}", ns.name, victim.0);
    let victim_ip: IpAddr = "198.51.100.5".parse().expect("ip");
    adopt(&kit.client, &ns.name, "198.51.100.0-28", 5, &victim_ref).await;
    // Control: several collector rounds leave it alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = pool_allocations(&kit.client, &ns.name, "198.51.100.0-28").await;
    assert_eq!(
        held.get(&victim_ip),
        Some(&victim_ref),
        "setup: the live victim keeps its adopted address: {held:?}"
    );

    // The intruder's node files a claim naming the victim's pod, with the
    // UID of the intruder's own pod (the only UIDs a node knows), for a
    // range elsewhere. The controller refuses it...
    let mut sneaky = claim(
        &ns.name,
        "sneaky",
        &(victim.0.clone(), intruder.1.clone()),
        "net1",
        "b",
        vec![range("203.0.113.0/28")],
    );
    sneaky.spec.container_id = "sneaky".into();
    create_claim(&kit.client, &ns.name, &sneaky).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let (reason, _) = eventually("the sneaky claim refused", 30, || async {
        refusal(&claims.get("sneaky").await.ok()?)
    })
    .await
    .expect("refused");
    assert_eq!(reason, "PodMismatch");
    // ...and yet, several collector rounds later:
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = pool_allocations(&kit.client, &ns.name, "198.51.100.0-28").await;
    assert_eq!(
        held.get(&victim_ip),
        Some(&victim_ref),
        "invariants 5 and 6: a refused claim naming pod {victim_ref} made the collector \
         release the address that live pod holds: {held:?}"
    );
}

/// The other direction: a claim naming a pod that is gone, with any live
/// pod's UID, keeps that gone pod's address (and itself) forever.
#[tokio::test]
async fn a_claim_with_a_borrowed_uid_keeps_a_gone_pods_address_forever() {
    let (kit, ns) = setup("rv-gcleak").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let intruder = pods(&kit.client, &ns.name, "k", 1).await.remove(0);
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "intruder-own",
            &intruder,
            "net1",
            "a",
            vec![range("198.51.100.16/28")],
        ),
    )
    .await;
    ready(&kit.client, &ns.name, "intruder-own", 30).await;
    // A pod that is gone (force-deleted, its DEL lost) left .21 behind.
    let gone_ref = format!("{}/gone-0", ns.name);
    adopt(&kit.client, &ns.name, "198.51.100.16-28", 5, &gone_ref).await;
    // A claim naming the gone pod, with the intruder's live UID.
    let mut keeper = claim(
        &ns.name,
        "keeper",
        &("gone-0".to_owned(), intruder.1.clone()),
        "net1",
        "a",
        vec![range("198.51.100.16/28")],
    );
    keeper.spec.container_id = "keeper".into();
    create_claim(&kit.client, &ns.name, &keeper).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let (reason, _) = eventually("the keeper claim refused", 30, || async {
        refusal(&claims.get("keeper").await.ok()?)
    })
    .await
    .expect("refused");
    assert_eq!(reason, "PodNotFound");
    // Far more than two observations a grace period apart.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let held = pool_allocations(&kit.client, &ns.name, "198.51.100.16-28").await;
    let still_claimed = claims.get_opt("keeper").await.expect("read").is_some();
    assert!(
        !held.values().any(|p| *p == gone_ref),
        "invariant 2: {gone_ref} is gone, yet its address is never collected while a \
         refused claim naming it carries a live pod's UID (claim still there: \
         {still_claimed}): {held:?}"
    );
}

// ===========================================================================
// Invariant 4: a network_name accepted for the pool name whose shard names
// Kubernetes refuses; every claim past the first 128 addresses retries
// forever, with no refusal naming the field.
// ===========================================================================

#[tokio::test]
async fn a_network_name_too_long_for_the_pools_shards_is_refused_naming_the_field() {
    let (kit, ns) = setup("rv-shardname").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "s", 1).await.remove(0);
    // `<network_name>-100.64.2.0-24` is 253 characters: a valid pool name
    // (the plugin's configuration check passes), but shard 1 is
    // `<pool>-s1`, 256.
    let network_name = "n".repeat(239);
    let pool = hereabouts_core::pool_name(
        Some(&network_name),
        &hereabouts_core::Cidr::parse_with_host("100.64.2.0/24")
            .expect("cidr")
            .1,
    )
    .expect("the pool name is valid");
    assert_eq!(pool.as_str().len(), 253);
    let mut c = claim(
        &ns.name,
        "past-128",
        &pod,
        "net1",
        "a",
        vec![ClaimRange {
            range_start: Some("100.64.2.200".into()),
            ..range("100.64.2.0/24")
        }],
    );
    c.spec.network_name = Some(network_name);
    create_claim(&kit.client, &ns.name, &c).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let answer = eventually("the claim answered or refused", 30, || async {
        let c = claims.get("past-128").await.ok()?;
        match (ready_addresses(&c), refusal(&c)) {
            (Some(a), _) => Some(Ok(a)),
            (None, Some(r)) => Some(Err(r)),
            (None, None) => None,
        }
    })
    .await;
    match answer {
        Ok(Ok(_)) => {}
        Ok(Err((reason, message))) => assert!(
            message.contains("network_name") || message.contains("networkName"),
            "invariant 4: the refusal ({reason}) does not name the field: {message}"
        ),
        Err(e) => panic!(
            "invariant 4: a claim past the first shard of a pool whose name is valid \
             was neither served nor refused within 30 s (the shard's name is too long \
             and the controller retries for ever): {e}"
        ),
    }
}

// ===========================================================================
// Invariant 4: durations from input (issue 12, defect 7) still overflow.
// ===========================================================================

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn plugin(env: &[(&str, &str)], stdin: &Value) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("plugin output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `request_timeout: 1e300` (or 1e19): ADD must fail with code 7 naming
/// the field; DEL must not wedge the pod's teardown.
#[test]
fn a_huge_request_timeout_is_an_error_naming_the_field_not_a_panic() {
    let mut failures = Vec::new();
    for verb in ["DEL", "ADD"] {
        for timeout in [json!(1e300), json!(1e19), json!("500000000000years")] {
            let env = [
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "net1"),
                ("CNI_NETNS", "/var/run/netns/x"),
                ("CNI_PATH", "/opt/cni/bin"),
                ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"),
            ];
            let conf = json!({"cniVersion": "1.0.0", "name": "testnet", "type": "macvlan",
                "master": "eth1", "ipam": {"type": "hereabouts", "range": "198.51.100.0/24",
                "request_timeout": timeout,
                "kubernetes": {"kubeconfig": "/nonexistent/kubeconfig"}}});
            let run = plugin(&env, &conf);
            if run.stderr.contains("panicked") || run.code == Some(101) {
                let first = run
                    .stderr
                    .lines()
                    .find(|l| !l.contains("panicked") && !l.trim().is_empty())
                    .unwrap_or_default()
                    .to_owned();
                failures.push(format!("{verb} with {timeout}: panic ({first})"));
                continue;
            }
            if verb == "ADD" {
                let answer: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
                let named = answer["msg"]
                    .as_str()
                    .is_some_and(|m| m.contains("request_timeout"));
                if answer["code"] != 7 || !named {
                    failures.push(format!("{verb} with {timeout}: {}", run.stdout.trim()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "invariant 4 (issue 12 defect 7 still open): {failures:#?}"
    );
}

/// `--gc-grace` past what an Instant can hold: the controller must refuse
/// the flag at start, not die at its first collector round with an orphan.
#[tokio::test]
async fn a_huge_gc_grace_is_refused_at_start_not_a_crash_later() {
    let (kit, ns) = setup("rv-grace").await;
    // An orphan for the collector to find: a reservation no allocation
    // backs.
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    reservations
        .create(
            &PostParams::default(),
            &OverlappingRangeIPReservation::new(
                "198.51.100.77",
                OverlappingRangeIPReservationSpec {
                    containerid: "gone".into(),
                    podref: format!("{}/gone", ns.name),
                    ifname: "net1".into(),
                },
            ),
        )
        .await
        .expect("orphaned reservation");
    let mut replica = replica(
        &ns,
        "a",
        &[
            "--gc-schedule",
            "* * * * * *",
            "--gc-grace",
            "500000000000years",
        ],
    );
    // Refused at start is fine (the process ends at once, with a message);
    // otherwise it must keep running through collector rounds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if !replica.process.running() {
        let log = std::fs::read_to_string(
            hereabouts_kit::local_dir()
                .join("logs")
                .join(format!("{}-a.log", ns.name)),
        )
        .unwrap_or_default();
        let panics: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("panicked") || l.contains("overflow"))
            .take(2)
            .collect();
        assert!(
            panics.is_empty(),
            "invariant 4: the controller accepted --gc-grace 500000000000years and died \
             at its first collector round: {panics:?}"
        );
        assert!(
            log.contains("gc-grace"),
            "refused, but without naming --gc-grace: {log}"
        );
        return;
    }
    replica.wait_ready().await.expect("controller ready");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let running = replica.process.running();
    let log = std::fs::read_to_string(
        hereabouts_kit::local_dir()
            .join("logs")
            .join(format!("{}-a.log", ns.name)),
    )
    .unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("overflow"))
        .take(2)
        .collect();
    assert!(
        running,
        "invariant 4: the controller accepted --gc-grace 500000000000years and died \
         at its first collector round: {tail:?}"
    );
}

// ===========================================================================
// Invariant 4 (a wrong refusal): after one collision with an overlapping
// range, every address the reservation cache shows is "suspected" for a
// minute, and a static request for one of them is refused outright
// (StaticAddressTaken), though the reservation is an orphan that the
// orphan rule would take over.
// ===========================================================================

/// A reservation a dead leader left (hereabouts', for a pool shard that
/// does not hold its address).
async fn orphan(client: &Client, ns: &str, name: &str, shard: &str) {
    let reservations: Api<OverlappingRangeIPReservation> = Api::namespaced(client.clone(), ns);
    let mut r = OverlappingRangeIPReservation::new(
        name,
        OverlappingRangeIPReservationSpec {
            containerid: "dead".into(),
            podref: format!("{ns}/never-answered"),
            ifname: "net1".into(),
        },
    );
    r.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_owned(),
        "hereabouts".to_owned(),
    )]));
    r.metadata.annotations = Some(BTreeMap::from([(
        "hereabouts.dev/pool".to_owned(),
        shard.to_owned(),
    )]));
    reservations
        .create(&PostParams::default(), &r)
        .await
        .expect("an uncommitted reservation");
}

#[tokio::test]
async fn a_static_request_for_an_orphan_reserved_address_is_served_after_a_collision() {
    let (kit, ns) = setup("rv-suspect").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let made = pods(&kit.client, &ns.name, "s", 5).await;
    let [b, p, s, cp, cs] = made.as_slice() else {
        unreachable!("five pods")
    };
    let statically = |name: &str, pod: &(String, String), ip: &str, network_name: Option<&str>| {
        let cidr = if ip.starts_with("100.64.4.") {
            "100.64.4.0/28"
        } else {
            "100.64.3.0/28"
        };
        let mut c = claim(&ns.name, name, pod, "net1", "a", vec![range(cidr)]);
        c.spec.static_ips = vec![ip.to_owned()];
        c.spec.network_name = network_name.map(str::to_owned);
        c
    };

    // Control (network "ctl", no collision): the orphan rule serves a
    // static request for the orphan's address.
    orphan(&kit.client, &ns.name, "ctl-100.64.4.9", "ctl-100.64.4.0-28").await;
    let mut c = claim(
        &ns.name,
        "ctl-p",
        cp,
        "net1",
        "a",
        vec![range("100.64.4.0/28")],
    );
    c.spec.network_name = Some("ctl".into());
    create_claim(&kit.client, &ns.name, &c).await;
    ready(&kit.client, &ns.name, "ctl-p", 30).await;
    create_claim(
        &kit.client,
        &ns.name,
        &statically("ctl-s", cs, "100.64.4.9", Some("ctl")),
    )
    .await;
    assert_eq!(
        ready(&kit.client, &ns.name, "ctl-s", 30).await,
        vec!["100.64.4.9/28".to_owned()],
        "control: the orphan's address is served to a static request"
    );

    // The same, after one collision with an overlapping /29 of the
    // (unnamed) network.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "b-29",
            b,
            "net1",
            "a",
            vec![range("100.64.3.0/29")],
        ),
    )
    .await;
    assert_eq!(
        ready(&kit.client, &ns.name, "b-29", 30).await,
        vec!["100.64.3.1/29".to_owned()]
    );
    orphan(&kit.client, &ns.name, "100.64.3.9", "100.64.3.0-28").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "p-28",
            p,
            "net1",
            "a",
            vec![range("100.64.3.0/28")],
        ),
    )
    .await;
    let dynamic = ready(&kit.client, &ns.name, "p-28", 30).await;
    create_claim(
        &kit.client,
        &ns.name,
        &statically("s-28", s, "100.64.3.9", None),
    )
    .await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let answer = eventually("the static claim answered", 30, || async {
        let c = claims.get("s-28").await.ok()?;
        match (ready_addresses(&c), refusal(&c)) {
            (Some(a), _) => Some(Ok(a)),
            (None, Some(r)) => Some(Err(r)),
            (None, None) => None,
        }
    })
    .await
    .expect("answered");
    assert_eq!(
        answer,
        Ok(vec!["100.64.3.9/28".to_owned()]),
        "invariant 4: a static request for an address only an orphan reservation holds \
         is refused for a minute after the pool met one overlapping reservation \
         (the dynamic claim before it got {dynamic:?})"
    );
}

// ===========================================================================
// Invariant 1 via the collector: a reservation suspect is identified by
// (name, uid) only, and deleted with the version the cache holds when its
// turn comes in the pass, not the version that was seen orphaned. A
// take-over keeps the uid; an orphan taken over (and its address
// committed) while a long pass is under way is deleted under its new
// holder, and an overlapping range hands the address out again.
// ===========================================================================

#[tokio::test]
async fn the_collector_never_deletes_a_reservation_taken_over_during_its_pass() {
    let (kit, ns) = setup("rv-gcrace").await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    // The pool of the orphan, as a dead leader left it: empty.
    pools
        .create(
            &PostParams::default(),
            &IPPool::new(
                "203.0.113.0-28",
                hereabouts_api::IPPoolSpec {
                    range: "203.0.113.0/28".into(),
                    allocations: BTreeMap::new(),
                },
            ),
        )
        .await
        .expect("pool");
    orphan(&kit.client, &ns.name, "203.0.113.1", "203.0.113.0-28").await;
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let original = reservations.get("203.0.113.1").await.expect("orphan");
    // Leaks of gone pods in another pool: a long collector pass.
    let leaks = 250u32;
    let mut leaky = IPPool::new(
        "198.51.100.0-24",
        hereabouts_api::IPPoolSpec {
            range: "198.51.100.0/24".into(),
            allocations: (1..=leaks)
                .map(|o| {
                    (
                        o.to_string(),
                        IPAllocation {
                            id: format!("gone-{o}"),
                            podref: format!("{}/gone-{o}", ns.name),
                            ifname: "net1".into(),
                        },
                    )
                })
                .collect(),
        },
    );
    leaky.metadata.namespace = Some(ns.name.clone());
    pools
        .create(&PostParams::default(), &leaky)
        .await
        .expect("leaky pool");
    let mut made = pods(&kit.client, &ns.name, "r", 2).await;
    let z = made.pop().expect("z");
    let q = made.pop().expect("q");
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "3s"],
    );
    replica.wait_ready().await.expect("controller ready");
    // The pass that reclaims has begun once the first leak is gone.
    eventually("the collector's reclaiming pass under way", 60, || async {
        let left = pool_allocations(&kit.client, &ns.name, "198.51.100.0-24").await;
        (left.len() < leaks as usize).then_some(())
    })
    .await
    .expect("reclaiming");
    // Q's claim needs .1: the orphan is taken over (fenced, same uid).
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "q",
            &q,
            "net1",
            "a",
            vec![range("203.0.113.0/28")],
        ),
    )
    .await;
    let got = ready(&kit.client, &ns.name, "q", 30).await;
    assert_eq!(got, vec!["203.0.113.1/28".to_owned()]);
    let taken = reservations.get_opt("203.0.113.1").await.expect("read");
    let race_won = taken.as_ref().and_then(ResourceExt::uid) == original.uid();
    // The pass ends.
    eventually("every leak reclaimed", 120, || async {
        pool_allocations(&kit.client, &ns.name, "198.51.100.0-24")
            .await
            .is_empty()
            .then_some(())
    })
    .await
    .expect("leaks reclaimed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = reservations.get_opt("203.0.113.1").await.expect("read");
    // An overlapping range of the same network.
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "z",
            &z,
            "net1",
            "a",
            vec![range("203.0.113.0/29")],
        ),
    )
    .await;
    let other = ready(&kit.client, &ns.name, "z", 30).await;
    let held = pool_allocations(&kit.client, &ns.name, "203.0.113.0-28").await;
    assert!(
        after.is_some() && other != vec!["203.0.113.1/29".to_owned()],
        "invariant 1: the collector deleted the reservation of {got:?}, which Q holds in \
         the /28 ({held:?}), after taking it over from an orphan during its pass \
         (taken over with the orphan's uid: {race_won}); the overlapping /29 then gave \
         {other:?} to another pod"
    );
}

// ===========================================================================
// Invariant 4: "one static address per range" (8f445bb) is enforced as a
// count only; a second static address in a range another static address
// already took is dropped without a word.
// ===========================================================================

#[tokio::test]
async fn two_static_addresses_in_one_range_are_refused_not_one_dropped() {
    let (kit, ns) = setup("rv-statics").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "st", 1).await.remove(0);
    let mut c = claim(
        &ns.name,
        "two-in-one",
        &pod,
        "net1",
        "a",
        vec![range("100.64.5.0/28"), range("2001:db8:5::/120")],
    );
    c.spec.static_ips = vec!["100.64.5.3".into(), "100.64.5.4".into()];
    create_claim(&kit.client, &ns.name, &c).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let answer = eventually("the claim answered", 30, || async {
        let c = claims.get("two-in-one").await.ok()?;
        match (ready_addresses(&c), refusal(&c)) {
            (Some(a), _) => Some(Ok(a)),
            (None, Some(r)) => Some(Err(r)),
            (None, None) => None,
        }
    })
    .await
    .expect("answered");
    match answer {
        Err((reason, message)) => assert!(
            message.contains("staticIPs[1]"),
            "refused ({reason}) without naming spec.staticIPs[1]: {message}"
        ),
        Ok(addresses) => panic!(
            "invariant 4: staticIPs [100.64.5.3, 100.64.5.4] for ranges [100.64.5.0/28, \
             2001:db8:5::/120] answered {addresses:?}: 100.64.5.4 silently dropped"
        ),
    }
}

// ===========================================================================
// Invariant 2 (reservations): the collector keeps a reservation when any
// pool holds its address under any name it could have been written with:
// no network_name at all, and every '-' prefix of the pool's. So a
// leftover reservation of the unnamed network, or of network "blue", is
// kept for ever while network "blue-2" holds the same address.
// ===========================================================================

#[tokio::test]
async fn leftover_reservations_of_other_networks_are_collected() {
    let (kit, ns) = setup("rv-prefix").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "1s"],
    );
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "b2", 1).await.remove(0);
    let mut c = claim(
        &ns.name,
        "b2",
        &pod,
        "net1",
        "a",
        vec![range("100.64.6.0/28")],
    );
    c.spec.network_name = Some("blue-2".into());
    create_claim(&kit.client, &ns.name, &c).await;
    assert_eq!(
        ready(&kit.client, &ns.name, "b2", 30).await,
        vec!["100.64.6.1/28".to_owned()]
    );
    // Leftovers (whereabouts', say, of releases that crashed half-way) of
    // network "blue", of the unnamed network, and of "green" (the control),
    // all for 100.64.6.1, which nothing of theirs holds.
    let reservations: Api<OverlappingRangeIPReservation> =
        Api::namespaced(kit.client.clone(), &ns.name);
    let leftovers = ["blue-100.64.6.1", "100.64.6.1", "green-100.64.6.1"];
    for name in leftovers {
        reservations
            .create(
                &PostParams::default(),
                &OverlappingRangeIPReservation::new(
                    name,
                    OverlappingRangeIPReservationSpec {
                        containerid: "crashed".into(),
                        podref: format!("{}/gone", ns.name),
                        ifname: "net1".into(),
                    },
                ),
            )
            .await
            .expect("leftover");
    }
    eventually("the control leftover collected", 30, || async {
        reservations
            .get_opt("green-100.64.6.1")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .expect("control: green's leftover is collected");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut kept = Vec::new();
    for name in &leftovers[..2] {
        if reservations.get_opt(name).await.expect("read").is_some() {
            kept.push(*name);
        }
    }
    assert!(
        kept.is_empty(),
        "invariant 2: leftover reservations {kept:?} (no allocation of their network \
         holds 100.64.6.1) are kept for ever because network \"blue-2\" holds that address"
    );
}

// ===========================================================================
// Invariants 1 and 6: a claim's ranges and network_name are checked
// against its NAD, its enable_overlapping_ranges is not. A node's claim
// for its own pod on a declared network, with the flag off, commits an
// address with no reservation, and an overlapping NAD of the same
// network_name hands it to another pod.
// ===========================================================================

#[tokio::test]
async fn a_claim_cannot_switch_off_the_overlap_check_its_network_declares() {
    let (kit, ns) = setup("rv-flag").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let nads: Api<hereabouts_api::NetworkAttachmentDefinition> =
        Api::namespaced(kit.client.clone(), &ns.name);
    for (name, cidr) in [("blue", "100.64.8.0/28"), ("wide", "100.64.8.0/27")] {
        nads.create(
            &PostParams::default(),
            &hereabouts_api::NetworkAttachmentDefinition::new(
                name,
                hereabouts_api::NetworkAttachmentDefinitionSpec {
                    config: json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan",
                        "master": "eth1", "ipam": {"type": "hereabouts", "range": cidr}})
                    .to_string(),
                },
            ),
        )
        .await
        .expect("NAD");
    }
    let mut made = pods(&kit.client, &ns.name, "f", 2).await;
    let q = made.pop().expect("q");
    let p = made.pop().expect("p");
    // P's node files P's claim on blue as declared, but with the flag off.
    let mut c = claim(
        &ns.name,
        "p-blue",
        &p,
        "net1",
        "blue",
        vec![range("100.64.8.0/28")],
    );
    c.spec.enable_overlapping_ranges = false;
    create_claim(&kit.client, &ns.name, &c).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let first = eventually("P's claim answered", 30, || async {
        let c = claims.get("p-blue").await.ok()?;
        match (ready_addresses(&c), refusal(&c)) {
            (Some(a), _) => Some(Ok(a)),
            (None, Some(r)) => Some(Err(r)),
            (None, None) => None,
        }
    })
    .await
    .expect("answered");
    let Ok(first) = first else {
        // Refused: the flag is checked against the NAD. Fine.
        return;
    };
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "q-wide",
            &q,
            "net1",
            "wide",
            vec![range("100.64.8.0/27")],
        ),
    )
    .await;
    let second = ready(&kit.client, &ns.name, "q-wide", 30).await;
    let blue = pool_allocations(&kit.client, &ns.name, "100.64.8.0-28").await;
    let wide = pool_allocations(&kit.client, &ns.name, "100.64.8.0-27").await;
    let shared: Vec<_> = blue.keys().filter(|ip| wide.contains_key(ip)).collect();
    assert!(
        shared.is_empty(),
        "invariants 1 and 6: P's claim on blue with enable_overlapping_ranges=false \
         (blue declares it true) got {first:?} with no reservation; Q on wide (same \
         network_name, overlapping) got {second:?}: {shared:?} held twice"
    );
}

/// The same for `range_start`, `range_end` and `exclude`: only the CIDR of
/// each range is compared with the NAD's, so a claim for the declared CIDR
/// without the NAD's exclusions is handed an excluded address (here the
/// router's).
#[tokio::test]
async fn a_claim_cannot_drop_the_exclusions_its_network_declares() {
    let (kit, ns) = setup("rv-excl").await;
    let replica = replica(&ns, "a", &[]);
    replica.wait_ready().await.expect("controller ready");
    let nads: Api<hereabouts_api::NetworkAttachmentDefinition> =
        Api::namespaced(kit.client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &hereabouts_api::NetworkAttachmentDefinition::new(
            "routed",
            hereabouts_api::NetworkAttachmentDefinitionSpec {
                config: json!({"cniVersion": "1.0.0", "name": "routed", "type": "macvlan",
                    "master": "eth1", "ipam": {"type": "hereabouts", "range": "100.64.9.0/28",
                    "range_start": "100.64.9.5", "exclude": ["100.64.9.1/32"],
                    "gateway": "100.64.9.1"}})
                .to_string(),
            },
        ),
    )
    .await
    .expect("NAD");
    let p = pods(&kit.client, &ns.name, "x", 1).await.remove(0);
    let c = claim(
        &ns.name,
        "p-routed",
        &p,
        "net1",
        "routed",
        vec![range("100.64.9.0/28")],
    );
    create_claim(&kit.client, &ns.name, &c).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let answer = eventually("the claim answered", 30, || async {
        let c = claims.get("p-routed").await.ok()?;
        match (ready_addresses(&c), refusal(&c)) {
            (Some(a), _) => Some(Ok(a)),
            (None, Some(r)) => Some(Err(r)),
            (None, None) => None,
        }
    })
    .await
    .expect("answered");
    if let Ok(addresses) = answer {
        let ip: IpAddr = addresses[0]
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("address");
        let start: IpAddr = "100.64.9.5".parse().expect("ip");
        assert!(
            ip >= start,
            "invariant 6: a claim on \"routed\" without its range_start/exclude got {ip}, \
             below range_start 100.64.9.5 (100.64.9.1 is the router)"
        );
    }
}

// ===========================================================================
// Invariants 5, 6 and 1: a claim is authorized before it is served, but
// not before its deletion releases. A node reads any pool (its RBAC
// allows IPPools), learns a victim's pod, interface and container ID,
// files a claim naming them (refused: PodMismatch), deletes it: the
// victim's address is released while the victim runs, and handed out
// again once the name hold is over.
// ===========================================================================

#[tokio::test]
async fn deleting_a_refused_claim_never_releases_another_pods_address() {
    let (kit, ns) = setup("rv-delrel").await;
    let replica = replica(&ns, "a", &["--hold-released", "1s"]);
    replica.wait_ready().await.expect("controller ready");
    let mut made = pods(&kit.client, &ns.name, "d", 3).await;
    let z = made.pop().expect("z");
    let intruder = made.pop().expect("intruder");
    let victim = made.pop().expect("victim");
    let ranges = vec![range("203.0.113.16/28")];
    create_claim(
        &kit.client,
        &ns.name,
        &claim(&ns.name, "victim", &victim, "net1", "a", ranges.clone()),
    )
    .await;
    let victims = ready(&kit.client, &ns.name, "victim", 30).await;
    // What a node can read: the pool's entry for the victim.
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let pool = pools.get("203.0.113.16-28").await.expect("pool");
    let entry = pool
        .spec
        .allocations
        .values()
        .find(|a| a.podref == format!("{}/{}", ns.name, victim.0))
        .expect("the victim's entry")
        .clone();
    let mut evil = claim(
        &ns.name,
        "evil",
        &(victim.0.clone(), intruder.1.clone()),
        &entry.ifname,
        "a",
        ranges.clone(),
    );
    evil.spec.container_id = entry.id.clone();
    create_claim(&kit.client, &ns.name, &evil).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let (reason, _) = eventually("the evil claim refused", 30, || async {
        refusal(&claims.get("evil").await.ok()?)
    })
    .await
    .expect("refused");
    assert_eq!(reason, "PodMismatch");
    hereabouts_kit::delete_and_wait(&claims, "evil", 20)
        .await
        .expect("delete the refused claim");
    tokio::time::sleep(Duration::from_secs(3)).await;
    create_claim(
        &kit.client,
        &ns.name,
        &claim(&ns.name, "z", &z, "net1", "a", ranges),
    )
    .await;
    let zs = ready(&kit.client, &ns.name, "z", 30).await;
    let held = pool_allocations(&kit.client, &ns.name, "203.0.113.16-28").await;
    let still = ready_addresses(&claims.get("victim").await.expect("victim claim"));
    assert!(
        zs != victims,
        "invariants 5, 6 and 1: deleting a refused claim released the address of the \
         live pod {} ({victims:?}, its claim still says {still:?}); pod {} got it too; \
         the pool now: {held:?}",
        victim.0,
        z.0
    );
}

// ===========================================================================
// Issue 12 item 14 (still open): STATUS reads a lease named
// "hereabouts-controller" whatever --lease-name the controller was given.
// ===========================================================================

#[tokio::test]
async fn status_finds_a_controller_that_leads_under_another_lease_name() {
    let (kit, ns) = setup("rv-lease").await;
    let replica = replica(&ns, "a", &["--lease-name", "ipam-leader"]);
    replica.wait_ready().await.expect("controller ready");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(kit.client.clone(), &ns.name);
    eventually("the controller leads", 20, || async {
        leases
            .get_opt("ipam-leader")
            .await
            .ok()??
            .spec?
            .holder_identity
    })
    .await
    .expect("leading");
    // The plugin is told the Lease's name in its configuration.
    let stdin = json!({"cniVersion": "1.1.0", "name": "testnet", "type": "macvlan",
        "master": "eth1", "ipam": {"type": "hereabouts", "range": "203.0.113.0/28",
        "controller_lease": "ipam-leader",
        "kubernetes": {"kubeconfig": kubeconfig}}});
    let run = plugin(&[("CNI_COMMAND", "STATUS")], &stdin);
    assert!(
        run.code == Some(0),
        "STATUS says no allocator while one leads under --lease-name ipam-leader: {}",
        run.stdout.trim()
    );
}

/// `--hold-released` past what an Instant can hold: every claim deletion
/// panics its pool's actor, and the address is never released.
#[tokio::test]
async fn a_huge_hold_released_is_refused_at_start_not_a_lost_release() {
    let (kit, ns) = setup("rv-hold").await;
    let mut replica = replica(&ns, "a", &["--hold-released", "500000000000years"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    if !replica.process.running() {
        let log = std::fs::read_to_string(
            hereabouts_kit::local_dir()
                .join("logs")
                .join(format!("{}-a.log", ns.name)),
        )
        .unwrap_or_default();
        assert!(
            log.contains("hold-released") && !log.contains("panicked"),
            "ended, but not with a refusal naming --hold-released: {log}"
        );
        return;
    }
    replica.wait_ready().await.expect("controller ready");
    let pod = pods(&kit.client, &ns.name, "h", 1).await.remove(0);
    create_claim(
        &kit.client,
        &ns.name,
        &claim(
            &ns.name,
            "h",
            &pod,
            "net1",
            "a",
            vec![range("198.51.100.32/28")],
        ),
    )
    .await;
    ready(&kit.client, &ns.name, "h", 30).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    hereabouts_kit::delete_and_wait(&claims, "h", 20)
        .await
        .expect("DEL");
    let released = eventually("the address released", 15, || async {
        pool_allocations(&kit.client, &ns.name, "198.51.100.32-28")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let log = std::fs::read_to_string(
        hereabouts_kit::local_dir()
            .join("logs")
            .join(format!("{}-a.log", ns.name)),
    )
    .unwrap_or_default();
    let panics: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("overflow"))
        .take(2)
        .collect();
    assert!(
        released.is_ok(),
        "invariant 4: --hold-released 500000000000years accepted; the claim's deletion \
         did not release its address: {panics:?}"
    );
}

/// The same without the intruder deleting anything: a refused claim whose
/// UID is no live pod's is collected by the controller itself, and its
/// deletion releases what the victim holds.
#[tokio::test]
async fn the_collector_deleting_a_refused_claim_never_releases_another_pods_address() {
    let (kit, ns) = setup("rv-gcdel").await;
    let replica = replica(
        &ns,
        "a",
        &[
            "--hold-released",
            "1s",
            "--gc-schedule",
            "* * * * * *",
            "--gc-grace",
            "1s",
        ],
    );
    replica.wait_ready().await.expect("controller ready");
    let mut made = pods(&kit.client, &ns.name, "g", 2).await;
    let z = made.pop().expect("z");
    let victim = made.pop().expect("victim");
    let ranges = vec![range("203.0.113.48/28")];
    create_claim(
        &kit.client,
        &ns.name,
        &claim(&ns.name, "victim", &victim, "net1", "a", ranges.clone()),
    )
    .await;
    let victims = ready(&kit.client, &ns.name, "victim", 30).await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let entry = pools
        .get("203.0.113.48-28")
        .await
        .expect("pool")
        .spec
        .allocations
        .into_values()
        .next()
        .expect("the victim's entry");
    let mut evil = claim(
        &ns.name,
        "evil",
        &(victim.0.clone(), "no-such-uid".to_owned()),
        &entry.ifname,
        "a",
        ranges.clone(),
    );
    evil.spec.container_id = entry.id.clone();
    create_claim(&kit.client, &ns.name, &evil).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    eventually("the evil claim collected", 30, || async {
        claims.get_opt("evil").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("the collector deletes a claim whose pod UID is gone");
    tokio::time::sleep(Duration::from_secs(3)).await;
    create_claim(
        &kit.client,
        &ns.name,
        &claim(&ns.name, "z", &z, "net1", "a", ranges),
    )
    .await;
    let zs = ready(&kit.client, &ns.name, "z", 30).await;
    let held = pool_allocations(&kit.client, &ns.name, "203.0.113.48-28").await;
    assert!(
        zs != victims,
        "invariants 5, 6 and 1: the collector deleted a refused claim naming live pod {} \
         and that deletion released its address {victims:?}; pod {} got it too: {held:?}",
        victim.0,
        z.0
    );
}
