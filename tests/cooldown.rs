//! Issue 15: the release cooldown and the per-network hold, end to end.
//! Pods are made by the kit through real Multus and the reference macvlan
//! plugin on simulated nodes; the controller runs as its own processes
//! against the kit's API server. What a user checks: the address inside
//! the pod's network namespace, the pool objects, and `kubectl hereabouts`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hereabouts_api::{IPPool, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use hereabouts_kit::{Controller, TestNamespace, eventually, install_plugin, unique};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

struct Setup {
    client: Client,
    ns: TestNamespace,
    kubeconfig: String,
}

async fn setup(prefix: &str) -> Setup {
    let (kit, ns) = common::setup(prefix).await;
    install_plugin(Path::new(env!("CARGO_BIN_EXE_hereabouts")), "hereabouts")
        .expect("plugin in the CNI bin dir");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    Setup {
        client: kit.client.clone(),
        ns,
        kubeconfig,
    }
}

/// What a pool entry is, as a user reads the pool object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Allocated(String),
    Held(String),
    Cooling(String),
}

impl Setup {
    async fn controller(&self, name: &str, extra: &[&str]) -> Controller {
        let mut args = vec!["--gc-schedule", "* * * * * *", "--gc-grace", "2s"];
        args.extend_from_slice(extra);
        let c = common::replica(&self.ns, name, &args);
        c.wait_ready().await.expect("controller ready");
        c
    }

    /// A macvlan NAD with hereabouts IPAM on `range`; `ipam` is merged into
    /// the `ipam` section.
    async fn nad(&self, name: &str, range: &str, ipam: Value) {
        let mut config = json!({
            "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth1",
            "mode": "bridge",
            "ipam": {"type": "hereabouts", "range": range,
                     "kubernetes": {"kubeconfig": self.kubeconfig}},
        });
        if let Some(extra) = ipam.as_object() {
            for (k, v) in extra {
                config["ipam"][k] = v.clone();
            }
        }
        let api: Api<NetworkAttachmentDefinition> =
            Api::namespaced(self.client.clone(), &self.ns.name);
        let nad = NetworkAttachmentDefinition::new(
            name,
            NetworkAttachmentDefinitionSpec {
                config: config.to_string(),
            },
        );
        api.create(&PostParams::default(), &nad)
            .await
            .expect("create NAD");
    }

    fn networks(&self, nad: &str) -> String {
        format!("{}/{nad}", self.ns.name)
    }

    /// The address on net1 inside the pod, without prefix length.
    async fn ip(&self, pod: &str) -> String {
        let ips = self.ns.addresses(pod, "net1").await.expect("ip addr");
        assert_eq!(ips.len(), 1, "{pod}: {ips:?}");
        ips[0].split('/').next().unwrap_or_default().to_owned()
    }

    /// Every entry of the test's pools, by address.
    async fn entries(&self) -> BTreeMap<String, Entry> {
        let api: Api<IPPool> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut out = BTreeMap::new();
        for pool in api.list(&ListParams::default()).await.expect("pools").items {
            let (_, cidr) =
                hereabouts_core::Cidr::parse_with_host(&pool.spec.range).expect("range");
            for (key, a) in pool.spec.allocations {
                let ip = cidr.ip_at(key.parse().expect("offset")).expect("ip");
                let entry = if hereabouts_core::ledger::held_until(&a.id).is_some() {
                    Entry::Held(a.podref)
                } else if hereabouts_core::ledger::cooling_until(&a.id).is_some() {
                    Entry::Cooling(a.podref)
                } else {
                    Entry::Allocated(a.podref)
                };
                assert!(out.insert(ip.to_string(), entry).is_none(), "{ip} twice");
            }
        }
        out
    }

    fn podref(&self, pod: &str) -> String {
        format!("{}/{pod}", self.ns.name)
    }

    /// Runs `kubectl hereabouts` on the test's pools and claims.
    async fn admin(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hereabouts"))
            .env("KUBECONFIG", hereabouts_kit::kubeconfig_path())
            .args(["--namespace", &self.ns.name])
            .args(args)
            .args(["--claim-namespace", &self.ns.name])
            .output()
            .await
            .expect("run kubectl-hereabouts")
    }

    async fn who(&self, ip: &str) -> Value {
        let out = self.admin(&["who", ip, "-o", "json"]).await;
        assert!(
            out.status.success(),
            "who {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("who JSON")
    }

    async fn check_is_clean(&self) {
        let out = self.admin(&["check"]).await;
        assert!(
            out.status.success(),
            "check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A StatefulSet object (inert: the kit runs no StatefulSet
    /// controller) to own pods the way a real one does.
    async fn statefulset(&self, name: &str) -> (String, String) {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.ns.name);
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 0, "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"containers": [{"name": "app", "image": "pause"}]}}
            }
        }))
        .expect("StatefulSet");
        let sts = api
            .create(&PostParams::default(), &sts)
            .await
            .expect("create StatefulSet");
        (name.to_owned(), sts.uid().expect("uid"))
    }

    /// A pod of `sts` on `node`: made through Multus, then owned by the
    /// StatefulSet (as its controller would have made it), and seen so by
    /// the controller's pod watch before anything else happens to it.
    async fn statefulset_pod(&self, sts: &(String, String), pod: &str, node: &str, nad: &str) {
        self.ns
            .pod(pod, node, &self.networks(nad))
            .await
            .expect("ADD through Multus");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns.name);
        let patch = json!({"metadata": {"ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts.0, "uid": sts.1,
            "controller": true, "blockOwnerDeletion": true,
        }]}});
        api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("owned by the StatefulSet");
        // The controller's pod cache follows a watch: give it a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The cooldown: a released address rests in the pool (marked, with its
/// end), goes to no other pod while anything else is free, survives the
/// death of the leader that made it, and gives way once the range is full;
/// `kubectl hereabouts who` shows it, `check` finds nothing wrong.
#[tokio::test]
async fn a_released_address_cools_down_across_a_leader_change_and_gives_way_when_full() {
    let s = setup("cooldown").await;
    let flags = ["--hold-released", "0s", "--release-cooldown", "120s"];
    let mut a = s.controller("a", &flags).await;
    let mut b = s.controller("b", &flags).await;
    s.nad("rest", "198.51.100.0/29", json!({})).await; // .1-.6
    let node = s.ns.node(&unique("cdn")).await.expect("node");
    for pod in ["p1", "p2"] {
        s.ns.pod(pod, &node, &s.networks("rest"))
            .await
            .expect("ADD");
    }
    assert_eq!(s.ip("p1").await, "198.51.100.1");
    assert_eq!(s.ip("p2").await, "198.51.100.2");

    // p1 goes (DEL through Multus, then the pod object): .1 cools down,
    // written into the pool under p1's name.
    s.ns.delete_pod("p1").await.expect("DEL");
    let released = Instant::now();
    eventually("the cooldown written into the pool", 20, || async {
        (s.entries().await.get("198.51.100.1") == Some(&Entry::Cooling(s.podref("p1"))))
            .then_some(())
    })
    .await
    .expect("a cooling entry for .1");
    let who = s.who("198.51.100.1").await;
    assert_eq!(who["holders"][0]["state"], json!("cooling"), "{who}");
    assert_eq!(who["holders"][0]["pod"], json!(s.podref("p1")), "{who}");
    let until = who["holders"][0]["until"]
        .as_str()
        .expect("until")
        .to_owned();
    assert!(until.ends_with('Z') && until.len() == 20, "{until}");
    s.check_is_clean().await;

    // The leader that made the cooldown dies; the other replica leads.
    let leader = eventually("a leader", 20, || {
        hereabouts_kit::leader_pid(&s.client, &s.ns.name)
    })
    .await
    .expect("leader elected");
    let (victim, survivor) = if leader == a.process.id() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.process.kill();
    let survivor_pid = survivor.process.id();
    eventually("the other replica leads", 30, || async {
        (hereabouts_kit::leader_pid(&s.client, &s.ns.name).await == Some(survivor_pid))
            .then_some(())
    })
    .await
    .expect("failover");

    // On the new leader: another pod does not get .1, nor does p1 made
    // again under its name (a cooldown rests the address; only a hold
    // gives it back by name, and this controller holds nothing).
    s.ns.pod("p3", &node, &s.networks("rest"))
        .await
        .expect("ADD");
    assert_eq!(s.ip("p3").await, "198.51.100.3");
    s.ns.pod("p1", &node, &s.networks("rest"))
        .await
        .expect("ADD of p1 again");
    assert_eq!(s.ip("p1").await, "198.51.100.4");
    for pod in ["p5", "p6"] {
        s.ns.pod(pod, &node, &s.networks("rest"))
            .await
            .expect("ADD");
    }
    assert_eq!(s.ip("p5").await, "198.51.100.5");
    assert_eq!(s.ip("p6").await, "198.51.100.6");
    assert!(
        released.elapsed() < Duration::from_secs(100),
        "the cooldown must still run for the next step to mean anything"
    );
    // Only the cooled .1 is left: it goes rather than the ADD failing.
    s.ns.pod("p7", &node, &s.networks("rest"))
        .await
        .expect("ADD with only a cooled address left");
    assert_eq!(s.ip("p7").await, "198.51.100.1");
    assert_eq!(
        s.entries().await.get("198.51.100.1"),
        Some(&Entry::Allocated(s.podref("p7")))
    );
    // Now the range is really full.
    let full = s.ns.pod("p8", &node, &s.networks("rest")).await;
    assert!(full.is_err(), "a full range refuses: {full:?}");
    s.check_is_clean().await;
}

/// Per-network policy: a NAD with `hold_released: "off"` and a short
/// `release_cooldown` beside a NAD that says nothing (the controller's
/// long defaults). A StatefulSet pod recreated under its name, after the
/// leader that released its address died, keeps its address on the
/// default network (the hold, through real Multus), not on the "off" one;
/// the short cooldown ends and the address is handed out again while the
/// default network's release still rests.
#[tokio::test]
async fn a_network_chooses_its_own_hold_and_cooldown() {
    let s = setup("cooldown-nad").await;
    let flags = ["--hold-released", "300s", "--release-cooldown", "300s"];
    let mut a = s.controller("a", &flags).await;
    let mut b = s.controller("b", &flags).await;
    s.nad(
        "quick",
        "203.0.113.0/29",
        json!({"hold_released": "off", "release_cooldown": "25s"}),
    )
    .await;
    s.nad("plain", "203.0.113.8/29", json!({})).await;
    let node = s.ns.node(&unique("cdq")).await.expect("node");
    let web = s.statefulset("web").await;
    let db = s.statefulset("db").await;

    s.statefulset_pod(&web, "web-0", &node, "quick").await;
    s.statefulset_pod(&db, "db-0", &node, "plain").await;
    assert_eq!(s.ip("web-0").await, "203.0.113.1");
    assert_eq!(s.ip("db-0").await, "203.0.113.9");

    // Both StatefulSets replace their pod: DEL, pod gone, same name again.
    s.ns.delete_pod("web-0").await.expect("DEL");
    s.ns.delete_pod("db-0").await.expect("DEL");
    let released = Instant::now();
    eventually("the releases written into the pools", 20, || async {
        let e = s.entries().await;
        (e.get("203.0.113.1") == Some(&Entry::Cooling(s.podref("web-0")))
            && e.get("203.0.113.9") == Some(&Entry::Held(s.podref("db-0"))))
        .then_some(())
    })
    .await
    .expect("quick: cooling, not held; plain: held by the default");
    // The leader that made them dies; the other replica leads.
    let leader = eventually("a leader", 20, || {
        hereabouts_kit::leader_pid(&s.client, &s.ns.name)
    })
    .await
    .expect("leader elected");
    let (victim, survivor) = if leader == a.process.id() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.process.kill();
    let survivor_pid = survivor.process.id();
    eventually("the other replica leads", 30, || async {
        (hereabouts_kit::leader_pid(&s.client, &s.ns.name).await == Some(survivor_pid))
            .then_some(())
    })
    .await
    .expect("failover");
    s.statefulset_pod(&web, "web-0", &node, "quick").await;
    s.statefulset_pod(&db, "db-0", &node, "plain").await;
    assert!(
        released.elapsed() < Duration::from_secs(25),
        "the quick cooldown must still run for the next check to mean anything"
    );
    assert_eq!(
        s.ip("web-0").await,
        "203.0.113.2",
        "hold off: the recreated pod does not keep its address"
    );
    assert_eq!(
        s.ip("db-0").await,
        "203.0.113.9",
        "the default hold: the recreated pod keeps its address"
    );

    // Another pod of the default network: the held address stays web's.
    s.ns.pod("x", &node, &s.networks("plain"))
        .await
        .expect("ADD");
    assert_eq!(s.ip("x").await, "203.0.113.10");

    // The quick network's 25 s cooldown ends (the controller's 300 s does
    // not apply): the collector removes the entry, the address is free.
    eventually("the quick cooldown ended and collected", 60, || async {
        (!s.entries().await.contains_key("203.0.113.1")).then_some(())
    })
    .await
    .expect("the 25 s cooldown ends and its entry goes");
    assert!(released.elapsed() >= Duration::from_secs(25));
    s.ns.pod("y", &node, &s.networks("quick"))
        .await
        .expect("ADD");
    assert_eq!(s.ip("y").await, "203.0.113.1");

    // The default network's own release still rests: x goes and its
    // address is kept for its name (a pod no controller owns may come
    // back under it) for the controller's 300 s.
    s.ns.delete_pod("x").await.expect("DEL");
    eventually("x's address held", 20, || async {
        (s.entries().await.get("203.0.113.10") == Some(&Entry::Held(s.podref("x")))).then_some(())
    })
    .await
    .expect("held for x");
    s.ns.pod("z", &node, &s.networks("plain"))
        .await
        .expect("ADD");
    assert_eq!(s.ip("z").await, "203.0.113.11");
    s.check_is_clean().await;
}
