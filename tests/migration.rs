//! Switching a live network from whereabouts to hereabouts: pods started by
//! the real whereabouts CNI keep their addresses, new pods get free ones,
//! and the adopted allocations are collected by the same rules as ours.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hereabouts_api::{IPPool, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use hereabouts_kit::{Controller, eventually, install_plugin, kit, local_dir, unique};
use kube::api::{Api, PostParams};
use serde_json::json;

const POOL: &str = "100.64.60.0-24";

fn nad_config(ipam_type: &str, kubeconfig: &str, flat_file: &str) -> String {
    json!({
        "cniVersion": "0.3.1", "name": "lan", "type": "macvlan", "master": "eth1", "mode": "bridge",
        "ipam": {"type": ipam_type, "range": "100.64.60.0/24", "configuration_path": flat_file,
                 "kubernetes": {"kubeconfig": kubeconfig}}
    })
    .to_string()
}

/// offset -> (podref, container id) of the pool.
async fn allocations(pools: &Api<IPPool>) -> BTreeMap<u32, (String, String)> {
    let pool = pools.get(POOL).await.expect("pool");
    pool.spec
        .allocations
        .into_iter()
        .map(|(k, a)| (k.parse().expect("offset"), (a.podref, a.id)))
        .collect()
}

#[tokio::test]
async fn a_network_switches_from_whereabouts_without_moving_a_pod() {
    let kit = kit().await.expect("local control plane");
    hereabouts_kit::install_crds(&kit.client)
        .await
        .expect("CRDs");
    install_plugin(Path::new(env!("CARGO_BIN_EXE_hereabouts")), "hereabouts").expect("plugin");
    let ns = kit.namespace("migrate").await.expect("namespace");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    // whereabouts refuses to run without its flat file.
    let flat_file = local_dir()
        .join("kubeconfigs")
        .join(format!("{}-whereabouts.conf", ns.name));
    std::fs::write(
        &flat_file,
        json!({"datastore": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig}}).to_string(),
    )
    .expect("flat file");
    let flat_file = flat_file.display().to_string();
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    let nad = NetworkAttachmentDefinition::new(
        "lan",
        NetworkAttachmentDefinitionSpec {
            config: nad_config("whereabouts", &kubeconfig, &flat_file),
        },
    );
    nads.create(&PostParams::default(), &nad)
        .await
        .expect("NAD");
    let net = format!("{}/lan", ns.name);

    // Before: the real whereabouts CNI hands out the addresses.
    let node = ns.node(&unique("mig")).await.expect("node");
    for pod in ["w1", "w2", "w3"] {
        ns.pod(pod, &node, &net)
            .await
            .expect("ADD under whereabouts");
    }
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let before = allocations(&pools).await;
    assert_eq!(
        before.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "whereabouts allocated .1-.3"
    );
    let address_of = |pod: &'static str| {
        let ns = &ns;
        async move { ns.addresses(pod, "net1").await.expect("ip addr") }
    };
    let w1 = address_of("w1").await;
    assert_eq!(w1, vec!["100.64.60.1/24".to_owned()]);

    // The switch: start hereabouts, point the NAD at it.
    let controller = Controller::start(
        Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[
            "--gc-schedule",
            "* * * * * *",
            "--gc-grace",
            "3s",
            "--hold-released",
            "0s",
        ],
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    let mut nad = nads.get("lan").await.expect("NAD");
    nad.spec.config = nad_config("hereabouts", &kubeconfig, &flat_file);
    nads.replace("lan", &PostParams::default(), &nad)
        .await
        .expect("switch the NAD");

    // Several collector passes later, the running pods hold what they held.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        allocations(&pools).await,
        before,
        "the adopted allocations are untouched"
    );
    assert_eq!(address_of("w1").await, w1, "no running pod changed address");

    // New pods get free addresses, after the adopted ones.
    ns.pod("h1", &node, &net)
        .await
        .expect("ADD under hereabouts");
    assert_eq!(address_of("h1").await, vec!["100.64.60.4/24".to_owned()]);

    // A whereabouts pod lost without DEL is collected like any other...
    ns.vanish_pod("w2").await.expect("vanish");
    eventually("w2's adopted address collected", 30, || async {
        (!allocations(&pools).await.contains_key(&2)).then_some(())
    })
    .await
    .expect("collected");
    // ...and one deleted properly is released by the DEL Multus replays
    // with the configuration it cached at ADD time (whereabouts').
    ns.delete_pod("w3").await.expect("DEL");
    eventually("w3's address released", 20, || async {
        (!allocations(&pools).await.contains_key(&3)).then_some(())
    })
    .await
    .expect("released");
    ns.pod("h2", &node, &net).await.expect("ADD");
    assert_eq!(
        address_of("h2").await,
        vec!["100.64.60.2/24".to_owned()],
        "the lowest free address again"
    );
    let after = allocations(&pools).await;
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
    assert_eq!(after[&1], before[&1], "w1 kept its allocation throughout");
}
