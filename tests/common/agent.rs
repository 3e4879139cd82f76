//! The node agent in tests: `hereabouts-install --agent-only` on a socket
//! of its own, a controller, pods bound to [`NODE`], and the plugin run
//! with the CNI environment naming that socket.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hereabouts_api::IPClaim;
use hereabouts_kit::{Controller, Process, TestNamespace};
use hereabouts_node::cni::Outcome;
use hereabouts_node::cni::env::Environment;
use hereabouts_node::cni::verbs::Backend;
use hereabouts_node::cni::watch::ClaimWatch;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// The node the agent serves and the pods are bound to.
pub const NODE: &str = "node-a";

pub struct Run {
    pub success: bool,
    pub stdout: Value,
    pub raw: String,
}

pub fn spawn_plugin(env: &[(&str, String)], stdin: &Value) -> std::process::Child {
    hereabouts_kit::plugin::spawn(
        Path::new(env!("CARGO_BIN_EXE_hereabouts")),
        env.iter().map(|(k, v)| (*k, v.as_str())),
        &stdin.to_string(),
    )
    .expect("spawn plugin")
}

pub fn finish(child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("plugin output");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let stdout = if raw.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {raw:?}"))
    };
    Run {
        success: out.status.success(),
        stdout,
        raw,
    }
}

pub fn plugin(env: &[(&str, String)], stdin: &Value) -> Run {
    finish(spawn_plugin(env, stdin))
}

pub fn env(
    command: &str,
    ns: &str,
    pod: &str,
    uid: &str,
    container: &str,
    socket: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", container.to_owned()),
        ("CNI_NETNS", "/var/run/netns/unused".to_owned()),
        ("CNI_IFNAME", "net1".to_owned()),
        ("CNI_PATH", "/usr/lib/cni".to_owned()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=true;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_UID={uid};K8S_POD_INFRA_CONTAINER_ID={container}"
            ),
        ),
        ("NODENAME", NODE.to_owned()),
        ("HEREABOUTS_AGENT_SOCKET", socket.display().to_string()),
    ]
}

/// The CNI error code a verb printed (0 when it printed none).
pub fn code_of(run: &Run) -> u64 {
    run.stdout["code"].as_u64().unwrap_or_default()
}

/// Runs `command` of pod `p`'s net1 in sandbox `container` through the
/// agent at `socket`, with `stdin`, on a blocking thread.
pub fn run_verb(
    command: &str,
    ns: &str,
    uid: &str,
    container: &str,
    socket: &Path,
    stdin: &Value,
) -> tokio::task::JoinHandle<Run> {
    let env = env(command, ns, "p", uid, container, socket);
    let stdin = stdin.clone();
    tokio::task::spawn_blocking(move || finish(spawn_plugin(&env, &stdin)))
}

/// Files sandbox-1's claim `name` of pod `p`'s net1 as the plugin does (an
/// ADD through the agent at `socket` with `stdin`, no controller running,
/// so it gives up with the claim filed), then moves its `answer-by` 10 s
/// before its creation: what an ADD whose create landed after it gave up
/// leaves. Returns that `answer-by`.
pub async fn late_claim_of_sandbox_1(
    claims: &Api<IPClaim>,
    ns: &str,
    uid: &str,
    socket: &Path,
    stdin: &Value,
    name: &str,
) -> String {
    let mut quick = stdin.clone();
    quick["ipam"]["request_timeout"] = json!("1s");
    let first = run_verb("ADD", ns, uid, "sandbox-1", socket, &quick)
        .await
        .expect("ADD");
    assert!(
        !first.success && code_of(&first) == 11,
        "with no controller the first ADD gives up: {}",
        first.raw
    );
    let filed = claims.get(name).await.expect("the first ADD's claim");
    let created = filed.metadata.creation_timestamp.expect("created").0;
    let gave_up = format!(
        "{:.3}",
        created
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(10))
            .expect("time")
    );
    claims
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                hereabouts_api::ANSWER_BY_ANNOTATION: gave_up.clone()
            }}})),
        )
        .await
        .expect("the claim reads as created after its ADD gave up");
    gave_up
}

/// The environment of `command` for interface `net1` of pod `p` (UID
/// `uid`) in `ns`, sandbox `container`, on [`NODE`].
pub fn environment(command: &str, ns: &str, uid: &str, container: &str) -> Environment {
    Environment {
        command: Some(command.to_owned()),
        container_id: Some(container.to_owned()),
        netns: Some("/var/run/netns/unused".to_owned()),
        ifname: Some("net1".to_owned()),
        args: Some(format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE={ns};K8S_POD_NAME=p;K8S_POD_UID={uid}"
        )),
        path: Some("/usr/lib/cni".to_owned()),
        node_name: Some(NODE.to_owned()),
    }
}

/// One verb, in process, as the agent runs it, with `view` as the agent's
/// watch of the node's claims (which a test can make stale or silent).
pub async fn run_through(
    client: kube::Client,
    ns: String,
    view: Arc<ClaimWatch>,
    stdin: String,
    environment: Environment,
) -> Outcome {
    let backend = Backend::Agent {
        client: &client,
        namespace: &ns,
        claims: &view,
        flat_file: None,
    };
    hereabouts_node::cni::run_with(environment, stdin.as_bytes(), backend).await
}

/// A node agent (`hereabouts-install --agent-only`), killed when dropped.
pub struct Agent {
    pub process: Process,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start(ns: &TestNamespace, name: &str, socket: &Path, kubeconfig: &Path) -> Agent {
        let args: Vec<String> = [
            "--agent-only",
            "--agent-socket",
            &socket.display().to_string(),
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--namespace",
            &ns.name,
            "--node-name",
            NODE,
            "--log-level",
            "debug",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let process = Process::spawn(
            &format!("{}-{name}", ns.name),
            Path::new(env!("CARGO_BIN_EXE_hereabouts-install")),
            &args,
            &[],
        )
        .expect("start the agent");
        let agent = Agent {
            process,
            socket: socket.to_path_buf(),
        };
        agent.wait_listening();
        agent
    }

    /// Until the socket accepts a connection.
    pub fn wait_listening(&self) {
        for _ in 0..200 {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent never listened on {}", self.socket.display());
    }

    /// Sends raw bytes, returns the raw answer.
    pub fn raw(&self, body: &[u8]) -> Value {
        let mut stream = UnixStream::connect(&self.socket).expect("connect");
        // The agent may answer (and close) before reading everything of an
        // oversized request: a failed write is part of that answer.
        let _ = stream.write_all(body);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read the answer");
        serde_json::from_slice(&answer).expect("the answer is one JSON document")
    }
}

pub async fn pod(client: &kube::Client, ns: &str, name: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": NODE, "automountServiceAccountToken": false, "containers": [{"name": "app", "image": "pause"}]}
    }))
    .expect("pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod")
        .uid()
        .expect("uid")
}

pub async fn setup(prefix: &str) -> (kube::Client, TestNamespace, Controller, PathBuf, PathBuf) {
    let (kit, ns) = super::setup(prefix).await;
    let controller = super::replica(&ns, "a", &[]);
    controller.wait_ready().await.expect("ready");
    let kubeconfig = ns.kubeconfig().expect("kubeconfig");
    let socket = socket_of(&ns);
    (kit.client, ns, controller, kubeconfig, socket)
}

/// Where a node agent of the test namespace `ns` listens, in a folder of
/// its own made empty.
pub fn socket_of(ns: &TestNamespace) -> PathBuf {
    let dir = hereabouts_kit::local_dir().join("agents").join(&ns.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("agent dir");
    dir.join("agent.sock")
}
/// A macvlan attachment's configuration on `range`, asking the agent (or
/// the API server through `kubeconfig`) within `timeout`.
pub fn conf(name: &str, range: &str, kubeconfig: &Path, timeout: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth1",
           "ipam": {"type": "hereabouts", "range": range, "request_timeout": timeout,
                    "kubernetes": {"kubeconfig": kubeconfig}}})
}

/// The claim of pod `p`'s net1 on `network` (range `cidr`) that the ADD of
/// sandbox-1 filed, created as it lands long after that ADD gave up (its
/// `hereabouts.dev/answer-by` 10 s before now).
pub async fn late_claim(
    claims: &Api<IPClaim>,
    ns: &str,
    uid: &str,
    network: &str,
    cidr: &str,
) -> IPClaim {
    let name = hereabouts_api::claim_name("p", "net1", network);
    let mut spec = super::claim_spec(
        ns,
        network,
        "net1",
        &("p".to_owned(), uid.to_owned()),
        vec![super::range(cidr)],
    );
    spec.container_id = "sandbox-1".to_owned();
    spec.node = NODE.to_owned();
    let mut late = IPClaim::new(&name, spec);
    let gave_up = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(10))
        .expect("time");
    late.metadata.annotations = Some(std::collections::BTreeMap::from([(
        hereabouts_api::ANSWER_BY_ANNOTATION.to_owned(),
        format!("{gave_up:.3}"),
    )]));
    claims
        .create(&PostParams::default(), &late)
        .await
        .expect("the late create lands")
}

/// The ADD of pod `p`'s next sandbox (sandbox-2) on `network` (range
/// `cidr`) through the agent at `socket`, still running once its create
/// has met the [`late_claim`] and taken it over.
pub async fn retry_taking_over(
    claims: &Api<IPClaim>,
    ns: &str,
    uid: &str,
    network: &str,
    cidr: &str,
    kubeconfig: &Path,
    socket: &Path,
) -> tokio::task::JoinHandle<Run> {
    let name = hereabouts_api::claim_name("p", "net1", network);
    let stdin = conf(network, cidr, kubeconfig, "20s");
    let env = env("ADD", ns, "p", uid, "sandbox-2", socket);
    let add = tokio::task::spawn_blocking(move || plugin(&env, &stdin));
    hereabouts_kit::eventually("the retry takes the claim over", 15, || async {
        let c = claims.get(&name).await.ok()?;
        (c.spec.container_id == "sandbox-2").then_some(())
    })
    .await
    .expect("taken over");
    add
}
