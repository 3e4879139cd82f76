//! The built `hereabouts` CNI binary, spawned as a runtime spawns it: every
//! verb and spec version, bad input with the right error code and a message
//! naming the field, and the claim protocol against the real API server
//! with a controller running.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use hereabouts_api::IPClaim;
use hereabouts_kit::{Controller, TestNamespace, kit};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

struct Run {
    success: bool,
    stdout: Value,
}

fn plugin(env: &[(&str, &str)], stdin: &Value) -> Run {
    let out = hereabouts_kit::plugin::call(
        Path::new(env!("CARGO_BIN_EXE_hereabouts")),
        env.iter().copied(),
        &stdin.to_string(),
    )
    .expect("plugin output");
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("stdout is one JSON document")
    };
    Run {
        success: out.status.success(),
        stdout,
    }
}

fn error_of(run: &Run) -> (u64, String) {
    assert!(!run.success, "expected a failure, got {}", run.stdout);
    (
        run.stdout["code"].as_u64().expect("code"),
        run.stdout["msg"].as_str().expect("msg").to_owned(),
    )
}

fn conf(version: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": "testnet", "type": "macvlan", "master": "eth1", "ipam": ipam})
}

#[test]
fn version_answers_every_spec_version() {
    for version in VERSIONS {
        let run = plugin(
            &[("CNI_COMMAND", "VERSION")],
            &json!({"cniVersion": version}),
        );
        assert!(run.success);
        assert_eq!(run.stdout["cniVersion"], version);
        let supported: Vec<&str> = run.stdout["supportedVersions"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(supported, VERSIONS);
    }
}

#[test]
fn bad_input_gets_the_right_code_and_names_the_field() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "net1"),
        ("CNI_NETNS", "/var/run/netns/x"),
    ];
    // (environment, stdin, expected code, what the message must name)
    type Case<'a> = (&'a [(&'a str, &'a str)], Value, u64, &'a str);
    let cases: Vec<Case> = vec![
        (&add, json!("not an object"), 7, "stdin"),
        (
            &add,
            json!({"name": "n", "type": "macvlan", "ipam": {"type": "hereabouts", "range": "198.51.100.0/24"}}),
            7,
            "cniVersion",
        ),
        (
            &add,
            conf(
                "9.9.9",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            1,
            "9.9.9",
        ),
        (
            &add,
            conf("1.0.0", json!({"type": "dhcp", "range": "198.51.100.0/24"})),
            7,
            "ipam.type",
        ),
        (
            &add,
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/33"}),
            ),
            7,
            "ipam.range",
        ),
        (
            &add,
            conf("1.0.0", json!({"type": "hereabouts", "range": 24})),
            7,
            "ipam.range",
        ),
        (
            &add,
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24", "range_start": "203.0.113.5"}),
            ),
            7,
            "range_start",
        ),
        (
            &add,
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24", "exclude": ["198.51.100.0/24"]}),
            ),
            7,
            "exclude",
        ),
        (
            &add,
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": "soon"}),
            ),
            7,
            "request_timeout",
        ),
        (
            &add,
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            4,
            "K8S_POD_NAME",
        ),
        (
            &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "net1")],
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            4,
            "CNI_CONTAINERID",
        ),
        (
            &[("CNI_COMMAND", "FROB")],
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            4,
            "CNI_COMMAND",
        ),
        (
            &[],
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            4,
            "CNI_COMMAND",
        ),
        (
            &[("CNI_COMMAND", "GC")],
            conf(
                "1.0.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            1,
            "1.1.0",
        ),
        (
            &[("CNI_COMMAND", "STATUS")],
            conf(
                "0.4.0",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            1,
            "1.1.0",
        ),
        (
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "net1"),
            ],
            conf(
                "0.3.1",
                json!({"type": "hereabouts", "range": "198.51.100.0/24"}),
            ),
            1,
            "0.4.0",
        ),
    ];
    for (env, stdin, code, field) in cases {
        let run = plugin(env, &stdin);
        let (got, msg) = error_of(&run);
        assert_eq!(got, code, "{stdin}: {msg}");
        assert!(
            msg.contains(field),
            "message for {stdin} should name {field}: {msg}"
        );
    }
    // Invalid JSON, not even an object: a decoding error.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .env_clear()
        .envs(add)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{not json")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("an error document");
    assert_eq!(doc["code"], 6);
}

#[test]
fn del_of_a_configuration_that_never_allocated_succeeds() {
    // Teardown must not wedge on a broken config: nothing was allocated.
    let run = plugin(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "net1"),
        ],
        &conf("1.0.0", json!({"type": "hereabouts", "range": "bogus"})),
    );
    assert!(run.success, "{}", run.stdout);
}

/// Everything a runtime passes for one attachment of `pod`.
struct Attachment<'a> {
    ns: &'a str,
    pod: &'a str,
    uid: String,
    container: String,
    ifname: &'a str,
}

impl Attachment<'_> {
    fn env(&self, command: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", self.container.clone()),
            ("CNI_NETNS", "/var/run/netns/unused".to_owned()),
            ("CNI_IFNAME", self.ifname.to_owned()),
            ("CNI_PATH", "/usr/lib/cni".to_owned()),
            (
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={};K8S_POD_INFRA_CONTAINER_ID={}",
                    self.ns, self.pod, self.uid, self.container
                ),
            ),
            ("NODENAME", "node-a".to_owned()),
        ]
    }

    fn run(&self, command: &'static str, stdin: &Value) -> Run {
        let env = self.env(command);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        plugin(&env, stdin)
    }
}

async fn pod(client: &kube::Client, ns: &str, name: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "node-a", "automountServiceAccountToken": false, "containers": [{"name": "app", "image": "pause"}]}
    }))
    .expect("pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod")
        .uid()
        .expect("uid")
}

async fn cluster_with_controller(
    prefix: &str,
) -> (kube::Client, TestNamespace, Controller, String) {
    let kit = kit().await.expect("local control plane");
    hereabouts_kit::install_crds(&kit.client)
        .await
        .expect("CRDs");
    let ns = kit.namespace(prefix).await.expect("namespace");
    let controller = Controller::start(
        Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
        &ns,
        "a",
        &[],
    )
    .expect("controller");
    controller.wait_ready().await.expect("ready");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    (kit.client, ns, controller, kubeconfig)
}

#[tokio::test]
async fn add_check_del_in_every_spec_version() {
    let (client, ns, _controller, kubeconfig) = cluster_with_controller("cni-verbs").await;
    for (i, version) in VERSIONS.iter().enumerate() {
        let name = format!("p{i}");
        let attachment = Attachment {
            ns: &ns.name,
            uid: pod(&client, &ns.name, &name).await,
            pod: &name,
            container: format!("sandbox-{i}"),
            ifname: "net1",
        };
        let stdin = conf(
            version,
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "gateway": "198.51.100.254",
                   "routes": [{"dst": "203.0.113.0/24"}], "dns": {"nameservers": ["198.51.100.53"]},
                   "kubernetes": {"kubeconfig": kubeconfig}}),
        );
        let run = attachment.run("ADD", &stdin);
        assert!(run.success, "ADD {version}: {}", run.stdout);
        let result = &run.stdout;
        assert_eq!(result["cniVersion"], *version);
        let ip = &result["ips"][0];
        assert_eq!(
            ip["address"],
            format!("198.51.100.{}/24", i + 1),
            "lowest free first"
        );
        assert_eq!(ip["gateway"], "198.51.100.254");
        assert_eq!(
            ip.get("version").is_some(),
            version.starts_with('0'),
            "0.x results carry ips[].version"
        );
        if version.starts_with('0') {
            assert_eq!(ip["version"], "4");
        }
        assert_eq!(result["routes"][0]["dst"], "203.0.113.0/24");
        assert_eq!(result["dns"]["nameservers"][0], "198.51.100.53");

        // A repeated ADD returns the same address.
        let again = attachment.run("ADD", &stdin);
        assert_eq!(again.stdout["ips"], result["ips"]);

        if *version != "0.3.0" && *version != "0.3.1" {
            let mut check = stdin.clone();
            check["prevResult"] = result.clone();
            let run = attachment.run("CHECK", &check);
            assert!(run.success, "CHECK {version}: {}", run.stdout);
            // A prevResult that does not match fails.
            check["prevResult"]["ips"][0]["address"] = json!("198.51.100.200/24");
            let (code, msg) = error_of(&attachment.run("CHECK", &check));
            assert_eq!(code, 103, "{msg}");
        }
        let run = attachment.run("DEL", &stdin);
        assert!(run.success, "DEL {version}: {}", run.stdout);
        assert!(attachment.run("DEL", &stdin).success, "DEL is idempotent");
    }
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    hereabouts_kit::eventually("claims deleted", 10, || async {
        claims
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await
    .expect("DEL removed every claim");
}

#[tokio::test]
async fn static_addresses_are_granted_exactly_or_refused() {
    let (client, ns, _controller, kubeconfig) = cluster_with_controller("cni-static").await;
    let ipam = json!({"type": "hereabouts", "range": "203.0.113.0/24", "kubernetes": {"kubeconfig": kubeconfig}});
    let mut with_ips = conf("1.0.0", ipam.clone());
    with_ips["runtimeConfig"] = json!({"ips": ["203.0.113.77/24"]});
    let a = Attachment {
        ns: &ns.name,
        uid: pod(&client, &ns.name, "a").await,
        pod: "a",
        container: "sa".into(),
        ifname: "net1",
    };
    let run = a.run("ADD", &with_ips);
    assert!(run.success, "{}", run.stdout);
    assert_eq!(run.stdout["ips"][0]["address"], "203.0.113.77/24");

    // args.cni.ips and CNI_ARGS IP= are honoured too; a taken one fails.
    let b = Attachment {
        ns: &ns.name,
        uid: pod(&client, &ns.name, "b").await,
        pod: "b",
        container: "sb".into(),
        ifname: "net1",
    };
    let mut taken = conf("1.0.0", ipam.clone());
    taken["args"] = json!({"cni": {"ips": ["203.0.113.77"]}});
    let (code, msg) = error_of(&b.run("ADD", &taken));
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("203.0.113.77"), "{msg}");

    let c = Attachment {
        ns: &ns.name,
        uid: pod(&client, &ns.name, "c").await,
        pod: "c",
        container: "sc".into(),
        ifname: "net1",
    };
    let mut env = c.env("ADD");
    env[5].1.push_str(";IP=203.0.113.99");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = plugin(&env, &conf("1.0.0", ipam.clone()));
    assert!(run.success, "{}", run.stdout);
    assert_eq!(run.stdout["ips"][0]["address"], "203.0.113.99/24");

    let mut outside = conf("1.0.0", ipam);
    outside["runtimeConfig"] = json!({"ips": ["198.51.100.7/24"]});
    let (code, msg) = error_of(&b.run("ADD", &outside));
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("198.51.100.7"), "{msg}");
}

#[tokio::test]
async fn gc_releases_this_nodes_attachments_the_runtime_no_longer_has() {
    let (client, ns, _controller, kubeconfig) = cluster_with_controller("cni-gc").await;
    let mut stdin = conf(
        "1.1.0",
        json!({"type": "hereabouts", "range": "198.51.100.0/28", "kubernetes": {"kubeconfig": kubeconfig}}),
    );
    // A network of its own: a node's GC covers every attachment of the
    // network on that node, and the other tests here run on node-a at the
    // same time (one of them lost its claim to this GC).
    stdin["name"] = json!("gc-testnet");
    let mut kept = None;
    for name in ["keep", "drop"] {
        let a = Attachment {
            ns: &ns.name,
            uid: pod(&client, &ns.name, name).await,
            pod: name,
            container: format!("c-{name}"),
            ifname: "net1",
        };
        assert!(a.run("ADD", &stdin).success);
        if name == "keep" {
            kept = Some(a.container.clone());
        }
    }
    let mut gc = stdin.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": kept.expect("kept"), "ifname": "net1"}]);
    let run = plugin(&[("CNI_COMMAND", "GC"), ("NODENAME", "node-a")], &gc);
    assert!(run.success, "{}", run.stdout);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let left = hereabouts_kit::eventually("GC deleted the stale claim", 10, || async {
        let items = claims.list(&ListParams::default()).await.ok()?.items;
        (items.len() == 1).then_some(items)
    })
    .await
    .expect("one claim left");
    assert_eq!(left[0].spec.pod.name, "keep");
}

#[tokio::test]
async fn status_and_add_say_when_no_allocator_answers() {
    let (client, ns, mut controller, kubeconfig) = cluster_with_controller("cni-status").await;
    let stdin = conf(
        "1.1.0",
        json!({"type": "hereabouts", "range": "203.0.113.0/28", "request_timeout": 2, "kubernetes": {"kubeconfig": kubeconfig}}),
    );
    let lease_held = hereabouts_kit::eventually("STATUS ok", 10, || async {
        plugin(&[("CNI_COMMAND", "STATUS")], &stdin)
            .success
            .then_some(())
    })
    .await;
    assert!(lease_held.is_ok(), "STATUS is 0 while a controller leads");
    controller.process.kill();
    let (code, msg) = hereabouts_kit::eventually("STATUS 50", 15, || async {
        let run = plugin(&[("CNI_COMMAND", "STATUS")], &stdin);
        (!run.success).then(|| error_of(&run))
    })
    .await
    .expect("STATUS fails once the lease expires");
    assert_eq!(code, 50, "{msg}");

    let a = Attachment {
        ns: &ns.name,
        uid: pod(&client, &ns.name, "late").await,
        pod: "late",
        container: "c0".into(),
        ifname: "net1",
    };
    let (code, msg) = error_of(&a.run("ADD", &stdin));
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("no allocator answered"), "{msg}");
}
