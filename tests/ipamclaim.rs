//! IPAMClaims (KubeVirt's persistent addresses) end to end: pods made by
//! the kit through real Multus and the reference macvlan plugin on
//! simulated nodes, the controller running, the pod annotation written the
//! way KubeVirt's ipam-extensions webhook writes it (JSON network-selection
//! elements with the NAD, KubeVirt's interface name and
//! `ipam-claim-reference`), the IPAMClaim the way its VM controller makes
//! it (`spec.network` the NAD's network name, `spec.interface` empty).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hereabouts_api::{
    IPAMClaim, IPAMClaimSpec, IPPool, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec,
};
use hereabouts_kit::{Controller, TestNamespace, eventually, install_plugin, unique};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// KubeVirt names a VM's pod interfaces `pod<hash of the network name>`.
const VM_IFACE: &str = "pod16367aacb67";

struct Setup {
    client: Client,
    ns: TestNamespace,
    controller: Option<Controller>,
    kubeconfig: String,
}

async fn setup(prefix: &str) -> Setup {
    let (kit, ns) = common::setup(prefix).await;
    install_plugin(Path::new(env!("CARGO_BIN_EXE_hereabouts")), "hereabouts")
        .expect("plugin in the CNI bin dir");
    let controller = controller(&ns, "a").await;
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    Setup {
        client: kit.client.clone(),
        ns,
        controller: Some(controller),
        kubeconfig,
    }
}

/// A controller whose collector runs every second with a short grace: it
/// must still never take an address whose IPAMClaim exists. Released
/// addresses cool down for 3 s.
async fn controller(ns: &TestNamespace, name: &str) -> Controller {
    let controller = common::replica(
        ns,
        name,
        &[
            "--gc-schedule",
            "* * * * * *",
            "--gc-grace",
            "2s",
            "--hold-released",
            "0s",
            "--release-cooldown",
            "3s",
        ],
    );
    controller.wait_ready().await.expect("controller ready");
    controller
}

impl Setup {
    /// A macvlan NAD with hereabouts IPAM on `range`; `extra` goes to the
    /// top level of the configuration (e.g. `allowPersistentIPs`).
    async fn nad(&self, name: &str, range: &str, extra: Value) {
        let mut config = json!({
            "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth1",
            "mode": "bridge", "capabilities": {"ips": true},
            "ipam": {"type": "hereabouts", "range": range,
                     "kubernetes": {"kubeconfig": self.kubeconfig}},
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
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

    /// An IPAMClaim as KubeVirt's VM controller makes it.
    async fn ipamclaim(&self, name: &str, network: &str) {
        let claim = IPAMClaim::new(
            name,
            IPAMClaimSpec {
                network: network.into(),
                interface: String::new(),
            },
        );
        self.ipamclaims()
            .create(&PostParams::default(), &claim)
            .await
            .expect("create IPAMClaim");
    }

    fn ipamclaims(&self) -> Api<IPAMClaim> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// The network-selection annotation as ipam-extensions writes it.
    fn selection(&self, nad: &str, claim: &str, ips: &[&str]) -> String {
        let mut element = json!({
            "name": nad, "namespace": self.ns.name, "interface": VM_IFACE,
            "ipam-claim-reference": claim,
        });
        if !ips.is_empty() {
            element["ips"] = json!(ips);
        }
        json!([element]).to_string()
    }

    /// The addresses on `ifname` in the pod, without prefix length.
    async fn ips(&self, pod: &str, ifname: &str) -> Vec<String> {
        self.ns
            .addresses(pod, ifname)
            .await
            .expect("ip addr in the pod")
            .into_iter()
            .map(|a| a.split('/').next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Runs `kubectl hereabouts` on the test's pools and claims.
    async fn plugin(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hereabouts"))
            .env("KUBECONFIG", hereabouts_kit::kubeconfig_path())
            .args(["--namespace", &self.ns.name])
            .args(args)
            .args(["--claim-namespace", &self.ns.name])
            .output()
            .await
            .expect("run kubectl-hereabouts")
    }

    /// IP -> podref of every allocation in the test's pools (holds and
    /// cooldowns left out: see [`Setup::cooling`]).
    async fn allocations(&self) -> BTreeMap<String, String> {
        self.entries(false).await
    }

    /// IP -> former podref of every address cooling down after a release.
    async fn cooling(&self) -> BTreeMap<String, String> {
        self.entries(true).await
    }

    async fn entries(&self, cooling: bool) -> BTreeMap<String, String> {
        let api: Api<IPPool> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut out = BTreeMap::new();
        for pool in api.list(&ListParams::default()).await.expect("pools").items {
            let (_, cidr) =
                hereabouts_core::Cidr::parse_with_host(&pool.spec.range).expect("range");
            for (key, a) in pool.spec.allocations {
                let ip = cidr.ip_at(key.parse().expect("offset")).expect("ip");
                let resting = hereabouts_core::ledger::resting_until(&a.id).is_some();
                let cools = hereabouts_core::ledger::cooling_until(&a.id).is_some();
                if (cooling && !cools) || (!cooling && resting) {
                    continue;
                }
                assert!(
                    out.insert(ip.to_string(), a.podref).is_none(),
                    "{ip} allocated twice"
                );
            }
        }
        out
    }
}

#[tokio::test]
async fn a_vm_keeps_its_address_across_pods_and_live_migration_until_its_claim_goes() {
    let s = setup("ipamclaim-vm").await;
    s.nad(
        "tenant",
        "198.51.100.0/28",
        json!({"allowPersistentIPs": true}),
    )
    .await;
    s.ipamclaim("vm1.tenant", "tenant").await;
    let node_a = s.ns.node(&unique("ica")).await.expect("node");
    let node_b = s.ns.node(&unique("icb")).await.expect("node");
    let owner = format!("{}/ipamclaim:vm1.tenant", s.ns.name);

    // The VM starts: its pod gets the lowest address, which now belongs
    // to the IPAMClaim.
    let selection = s.selection("tenant", "vm1.tenant", &[]);
    s.ns.pod("virt-launcher-vm1-aaaaa", &node_a, &selection)
        .await
        .expect("ADD of the VM's first pod");
    assert_eq!(
        s.ips("virt-launcher-vm1-aaaaa", VM_IFACE).await,
        vec!["198.51.100.1"]
    );
    let claim = s.ipamclaims().get("vm1.tenant").await.expect("IPAMClaim");
    let status = claim.status.expect("the IPAMClaim's status is written");
    assert_eq!(status.ips, vec!["198.51.100.1/28"]);
    assert_eq!(
        status.owner_pod.map(|o| o.name).as_deref(),
        Some("virt-launcher-vm1-aaaaa")
    );
    let allocated = status
        .conditions
        .iter()
        .find(|c| c.type_ == "IPAllocated")
        .expect("IPAllocated condition");
    assert_eq!(
        (allocated.status.as_str(), allocated.reason.as_str()),
        ("True", "SuccessfulAllocation")
    );
    assert_eq!(
        s.allocations().await.get("198.51.100.1"),
        Some(&owner),
        "the pool holds the address in the IPAMClaim's name"
    );

    // The VM stops: DEL through Multus, the pod goes. The address stays
    // the claim's, through several collector passes.
    s.ns.delete_pod("virt-launcher-vm1-aaaaa")
        .await
        .expect("DEL through Multus");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        s.allocations().await.get("198.51.100.1"),
        Some(&owner),
        "neither the DEL nor the collector released the IPAMClaim's address"
    );
    // Meanwhile an ordinary pod of the network gets another address.
    s.ns.pod("web", &node_a, &format!("{}/tenant", s.ns.name))
        .await
        .expect("ADD of an ordinary pod");
    assert_eq!(s.ips("web", "net1").await, vec!["198.51.100.2"]);

    // The VM starts again: a new pod, another name, the same address.
    s.ns.pod("virt-launcher-vm1-bbbbb", &node_a, &selection)
        .await
        .expect("ADD of the VM's second pod");
    assert_eq!(
        s.ips("virt-launcher-vm1-bbbbb", VM_IFACE).await,
        vec!["198.51.100.1"]
    );
    let status = s
        .ipamclaims()
        .get("vm1.tenant")
        .await
        .expect("IPAMClaim")
        .status
        .expect("status");
    assert_eq!(status.ips, vec!["198.51.100.1/28"]);
    assert_eq!(
        status.owner_pod.map(|o| o.name).as_deref(),
        Some("virt-launcher-vm1-bbbbb"),
        "the former owner is gone: the new pod owns the claim"
    );

    // Live migration: the target pod runs beside the source, on another
    // node, and gets the same address; the source stays the owner.
    s.ns.pod("virt-launcher-vm1-ccccc", &node_b, &selection)
        .await
        .expect("ADD of the migration target");
    assert_eq!(
        s.ips("virt-launcher-vm1-ccccc", VM_IFACE).await,
        vec!["198.51.100.1"]
    );
    assert_eq!(
        s.ips("virt-launcher-vm1-bbbbb", VM_IFACE).await,
        vec!["198.51.100.1"],
        "the source keeps it"
    );
    let status = s
        .ipamclaims()
        .get("vm1.tenant")
        .await
        .expect("IPAMClaim")
        .status
        .expect("status");
    assert_eq!(
        status.owner_pod.map(|o| o.name).as_deref(),
        Some("virt-launcher-vm1-bbbbb")
    );
    let held = s.allocations().await;
    assert_eq!(
        held.len(),
        2,
        "one entry for the claim, one for web: {held:?}"
    );
    // What an admin sees: the address is the IPAMClaim's, and the audit
    // finds nothing wrong with two pods answered with it.
    let who = s.plugin(&["who", "198.51.100.1", "-o", "json"]).await;
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let who: Value = serde_json::from_slice(&who.stdout).expect("who JSON");
    assert_eq!(who["holders"][0]["pod"], json!(owner), "{who}");
    assert_eq!(who["holders"][0]["podExists"], json!(true), "{who}");
    let check = s.plugin(&["check"]).await;
    assert!(
        check.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // A static request for another address conflicts with the claim.
    let refused =
        s.ns.pod(
            "virt-launcher-vm1-ddddd",
            &node_b,
            &s.selection("tenant", "vm1.tenant", &["198.51.100.9/28"]),
        )
        .await
        .expect_err("a static address other than the claim's is refused");
    let message = format!("{refused:?}");
    assert!(
        message.contains("198.51.100.9") && message.contains("vm1.tenant"),
        "the error names the address and the claim: {message}"
    );
    // The claim's own address, asked for statically, is granted.
    s.ns.pod(
        "virt-launcher-vm1-eeeee",
        &node_b,
        &s.selection("tenant", "vm1.tenant", &["198.51.100.1/28"]),
    )
    .await
    .expect("the claim's own address as a static request");
    assert_eq!(
        s.ips("virt-launcher-vm1-eeeee", VM_IFACE).await,
        vec!["198.51.100.1"]
    );

    // A reference to an IPAMClaim that does not exist fails clearly.
    let missing =
        s.ns.pod(
            "virt-launcher-vm9-aaaaa",
            &node_b,
            &s.selection("tenant", "vm9.tenant", &[]),
        )
        .await
        .expect_err("no such IPAMClaim");
    let message = format!("{missing:?}");
    assert!(
        message.contains("vm9.tenant") && message.contains("IPAMClaim"),
        "the error names the missing claim: {message}"
    );

    // A reference that is no object name is refused naming the field.
    let invalid =
        s.ns.pod(
            "virt-launcher-vm8-aaaaa",
            &node_b,
            &s.selection("tenant", "VM8/Tenant", &[]),
        )
        .await
        .expect_err("not an object name");
    let message = format!("{invalid:?}");
    assert!(
        message.contains("ipam-claim-reference") && message.contains("VM8/Tenant"),
        "the error names the field and the value: {message}"
    );

    // The VM is deleted: its pods go (the refused one too: a pod that
    // references the claim keeps its address), then KubeVirt deletes the
    // claim, which frees the address for anyone.
    for pod in [
        "virt-launcher-vm1-bbbbb",
        "virt-launcher-vm1-ccccc",
        "virt-launcher-vm1-ddddd",
        "virt-launcher-vm1-eeeee",
    ] {
        s.ns.delete_pod(pod).await.expect("DEL");
    }
    assert_eq!(s.allocations().await.get("198.51.100.1"), Some(&owner));
    s.ipamclaims()
        .delete("vm1.tenant", &DeleteParams::default())
        .await
        .expect("delete IPAMClaim");
    eventually("the IPAMClaim's address released", 10, || async {
        (!s.allocations().await.contains_key("198.51.100.1")).then_some(())
    })
    .await
    .expect("deleting the IPAMClaim releases its address");
    // Released, it cools down (under the claim's name) before anyone
    // else gets it: the VM's stale ARP entries age meanwhile.
    assert_eq!(s.cooling().await.get("198.51.100.1"), Some(&owner));
    let who = s.plugin(&["who", "198.51.100.1", "-o", "json"]).await;
    let who: Value = serde_json::from_slice(&who.stdout).expect("who JSON");
    assert_eq!(who["holders"][0]["state"], json!("cooling"), "{who}");
    assert_eq!(
        who["holders"][0]["ipamclaim"],
        json!(format!("{}/vm1.tenant", s.ns.name)),
        "{who}"
    );
    s.ns.pod("next", &node_a, &format!("{}/tenant", s.ns.name))
        .await
        .expect("ADD");
    assert_eq!(
        s.ips("next", "net1").await,
        vec!["198.51.100.3"],
        "not the cooling address while others are free"
    );
    eventually("the cooldown over and its entry collected", 20, || async {
        (!s.cooling().await.contains_key("198.51.100.1")).then_some(())
    })
    .await
    .expect("the 3 s cooldown ends");
    s.ns.pod("after", &node_a, &format!("{}/tenant", s.ns.name))
        .await
        .expect("ADD");
    assert_eq!(
        s.ips("after", "net1").await,
        vec!["198.51.100.1"],
        "the released address is handed out again after its cooldown"
    );
}

#[tokio::test]
async fn a_network_without_allow_persistent_ips_ignores_the_reference() {
    let s = setup("ipamclaim-off").await;
    s.nad("plain", "203.0.113.0/28", json!({})).await;
    s.ipamclaim("vm2.plain", "plain").await;
    let node = s.ns.node(&unique("ico")).await.expect("node");
    let selection = s.selection("plain", "vm2.plain", &[]);
    s.ns.pod("virt-launcher-vm2-aaaaa", &node, &selection)
        .await
        .expect("ADD");
    s.ns.pod("virt-launcher-vm2-bbbbb", &node, &selection)
        .await
        .expect("ADD");
    assert_eq!(
        s.ips("virt-launcher-vm2-aaaaa", VM_IFACE).await,
        vec!["203.0.113.1"]
    );
    assert_eq!(
        s.ips("virt-launcher-vm2-bbbbb", VM_IFACE).await,
        vec!["203.0.113.2"],
        "not shared: each pod has its own address"
    );
    let held = s.allocations().await;
    assert_eq!(
        held.get("203.0.113.1"),
        Some(&format!("{}/virt-launcher-vm2-aaaaa", s.ns.name)),
        "the address is the pod's"
    );
    let claim = s.ipamclaims().get("vm2.plain").await.expect("IPAMClaim");
    assert!(
        claim.status.is_none_or(|st| st.ips.is_empty()),
        "the IPAMClaim is left alone"
    );
    // The pod's DEL releases its address as for any pod.
    s.ns.delete_pod("virt-launcher-vm2-aaaaa")
        .await
        .expect("DEL");
    eventually("the pod's address released", 10, || async {
        (!s.allocations().await.contains_key("203.0.113.1")).then_some(())
    })
    .await
    .expect("DEL releases");
}

#[tokio::test]
async fn an_ipamclaim_deleted_while_no_controller_ran_is_collected() {
    let mut s = setup("ipamclaim-gc").await;
    s.nad(
        "tenant",
        "100.64.3.0/28",
        json!({"allowPersistentIPs": true}),
    )
    .await;
    s.ipamclaim("vm3.tenant", "tenant").await;
    let node = s.ns.node(&unique("icg")).await.expect("node");
    let selection = s.selection("tenant", "vm3.tenant", &[]);
    s.ns.pod("virt-launcher-vm3-aaaaa", &node, &selection)
        .await
        .expect("ADD");
    assert_eq!(
        s.ips("virt-launcher-vm3-aaaaa", VM_IFACE).await,
        vec!["100.64.3.1"]
    );
    s.ns.delete_pod("virt-launcher-vm3-aaaaa")
        .await
        .expect("DEL");
    // The controller is down when the VM's claim goes: no one sees the
    // deletion.
    drop(s.controller.take());
    s.ipamclaims()
        .delete("vm3.tenant", &DeleteParams::default())
        .await
        .expect("delete IPAMClaim");
    let owner = format!("{}/ipamclaim:vm3.tenant", s.ns.name);
    assert_eq!(s.allocations().await.get("100.64.3.1"), Some(&owner));
    s.controller = Some(controller(&s.ns, "b").await);
    eventually("the collector frees the address", 20, || async {
        (!s.allocations().await.contains_key("100.64.3.1")).then_some(())
    })
    .await
    .expect("an IPAMClaim's address whose claim is gone is collected");
}

#[tokio::test]
async fn an_ipamclaim_deleted_while_its_pod_terminates_keeps_the_address_until_the_pod_goes() {
    let s = setup("ipamclaim-term").await;
    s.nad(
        "tenant",
        "100.64.4.0/28",
        json!({"allowPersistentIPs": true}),
    )
    .await;
    s.ipamclaim("vm4.tenant", "tenant").await;
    let node = s.ns.node(&unique("ict")).await.expect("node");
    let pod = "virt-launcher-vm4-aaaaa";
    s.ns.pod(pod, &node, &s.selection("tenant", "vm4.tenant", &[]))
        .await
        .expect("ADD");
    assert_eq!(s.ips(pod, VM_IFACE).await, vec!["100.64.4.1"]);
    // A finalizer keeps the pod Terminating (a VM still shutting down, a
    // partitioned node) after the VM and its claim are deleted.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns.name);
    let hold = json!({"metadata": {"finalizers": ["hereabouts.dev/test-hold"]}});
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .expect("finalizer");
    pods.delete(pod, &DeleteParams::default())
        .await
        .expect("delete pod");
    s.ipamclaims()
        .delete("vm4.tenant", &DeleteParams::default())
        .await
        .expect("delete IPAMClaim");
    // Several collector passes (grace 2 s): the Terminating pod keeps it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let owner = format!("{}/ipamclaim:vm4.tenant", s.ns.name);
    assert_eq!(
        s.allocations().await.get("100.64.4.1"),
        Some(&owner),
        "a pod that references the claim still exists: the address stays"
    );
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("finalizer removed");
    eventually("the address freed once the pod is gone", 20, || async {
        (!s.allocations().await.contains_key("100.64.4.1")).then_some(())
    })
    .await
    .expect("the collector frees it after the pod goes");
}
