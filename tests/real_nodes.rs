//! The cluster admin's path on real nodes: the image built here (no
//! container engine) and imported into each node's containerd, then
//! `kubectl apply --server-side -f manifests/install.yaml` exactly as the
//! README says, and pods that start the way they do on a host: kubelet ->
//! containerd -> Multus -> macvlan -> hereabouts.
//!
//! Two real nodes (`e2e/real-node.sh`: kubelet and containerd in a node
//! network namespace, uplink eth1 on the kit's shared segment). One test,
//! in steps, because the nodes and the install take a minute to come up and
//! every step builds on the last; each step says what it checks.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hereabouts_kit::{kubeconfig_path, repo_root};
use serde_json::{Value, json};

const NODES: [&str; 2] = ["hb-real-a", "hb-real-b"];
const POOLS_NS: &str = "kube-system";
const PAUSE: &str = "localhost/hereabouts-kit/pause:3.10";
/// The networks of this tier (100.64.0.0/10, the test range).
const LAN: &str = "100.72.14.0/24";
const SBR: &str = "100.72.15.0/24";
const SBR_GATEWAY: &str = "100.72.15.254";
const ROUTED: &str = "100.72.16.0/24";
const ROUTE_DST: &str = "203.0.113.0/24";
/// The network of the Helm install's pods.
const HELM_LAN: &str = "100.72.17.0/24";
const HELM_RELEASE: &str = "hereabouts";
/// The node plugin's token lifetime for this tier: the shortest the API
/// server accepts, so the kubelet rotates it after 80% (8 minutes).
const TOKEN_SECONDS: u64 = 600;
/// The controller's default `--hold-released`.
const HOLD_RELEASED_SECONDS: u64 = 60;

fn step(what: &str) {
    eprintln!("[real-nodes] {what}");
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .unwrap_or_else(|e| panic!("run {program:?}: {e}"))
}

fn ok(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let program = program.as_ref().to_owned();
    let out = run(&program, args);
    assert!(
        out.status.success(),
        "{program:?} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn script(name: &str, args: &[&str]) -> String {
    ok(repo_root().join("e2e").join(name), args)
}

fn kubectl(args: &[&str]) -> String {
    ok("kubectl", args)
}

fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&all)).expect("kubectl printed JSON")
}

fn apply(doc: &Value) {
    let mut child = Command::new("kubectl")
        .args(["apply", "--server-side", "-f", "-"])
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(doc.to_string().as_bytes())
            .expect("write manifest");
    }
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "apply {doc}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `probe` every half second until it yields `Some`.
fn wait<T>(what: &str, seconds: u64, probe: impl FnMut() -> Option<T>) -> T {
    wait_explained(what, seconds, probe, String::new)
}

/// [`wait`], and when it gives up, what `explain` finds (the cleanup
/// removes the nodes and their logs right after).
fn wait_explained<T>(
    what: &str,
    seconds: u64,
    mut probe: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {seconds}s\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The pods of `selector` and the namespace's warnings, newest last.
fn pods_explained(ns: &str, selector: &str) -> String {
    let table = run(
        "kubectl",
        &["get", "pods", "-n", ns, "-l", selector, "-o", "wide"],
    );
    let events = run(
        "kubectl",
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "type=Warning",
            "--sort-by=.lastTimestamp",
        ],
    );
    let events = String::from_utf8_lossy(&events.stdout);
    let lines: Vec<&str> = events.lines().collect();
    format!(
        "{}\nlast warnings in {ns}:\n{}",
        String::from_utf8_lossy(&table.stdout),
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
}

/// helm, built from its Go module into the kit's tools (e2e/tools/build.sh).
fn helm() -> PathBuf {
    PathBuf::from(script("tools/build.sh", &[]).trim()).join("helm")
}

fn node_dir(node: &str) -> PathBuf {
    PathBuf::from(script("real-node.sh", &["dir", node]).trim())
}

/// Removes what the tier made, also when a step fails.
struct Cleanup {
    /// The tier's namespaces: the kustomize install's pods, the Helm install's.
    namespaces: Vec<String>,
    install: PathBuf,
}

/// Keeps what a failed run's cause can be read from, before the cleanup
/// removes the nodes: each node's kubelet and containerd logs and its pods'
/// logs (the controller's and the installer's among them), and what the
/// API server holds. Returns the folder.
fn keep_evidence() -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = hereabouts_kit::local_dir().join(format!("real-nodes-evidence-{stamp}"));
    let _ = std::fs::create_dir_all(&out);
    for node in NODES {
        let dir = node_dir(node);
        let to = out.join(node);
        let _ = std::fs::create_dir_all(&to);
        for what in ["kubelet.log", "containerd.log", "var-log-pods"] {
            let _ = run(
                "cp",
                &[
                    "-rL",
                    &dir.join(what).display().to_string(),
                    &to.display().to_string(),
                ],
            );
        }
    }
    for (file, args) in [
        ("pods.txt", &["get", "pods", "-A", "-o", "wide"][..]),
        (
            "events.txt",
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
        ),
        (
            "nodes.txt",
            &["get", "nodes", "-o", "wide", "--show-labels"][..],
        ),
        (
            "ippools.yaml",
            &["get", "ippools.whereabouts.cni.cncf.io", "-A", "-o", "yaml"][..],
        ),
        (
            "ipclaims.yaml",
            &["get", "ipclaims.hereabouts.dev", "-A", "-o", "yaml"][..],
        ),
    ] {
        let shown = run("kubectl", args);
        let _ = std::fs::write(out.join(file), [shown.stdout, shown.stderr].concat());
    }
    out
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[real-nodes] failed: node logs, pod logs, events, pools and claims kept in {}",
                keep_evidence().display()
            );
        }
        if std::env::var_os("HB_KEEP_REAL_NODES").is_some() {
            eprintln!(
                "[real-nodes] HB_KEEP_REAL_NODES: leaving namespaces {:?} and the nodes",
                self.namespaces
            );
            return;
        }
        // The namespaces first, while a controller still runs to release
        // their pods' addresses.
        for ns in &self.namespaces {
            let _ = run(
                "kubectl",
                &[
                    "delete",
                    "namespace",
                    ns,
                    "--ignore-not-found",
                    "--timeout=120s",
                ],
            );
        }
        let _ = run(
            helm(),
            &[
                "uninstall",
                HELM_RELEASE,
                "--namespace",
                POOLS_NS,
                "--ignore-not-found",
            ],
        );
        // Everything install.yaml made but the CRDs (the other tiers share them).
        let _ = run(
            "kubectl",
            &[
                "delete",
                "--ignore-not-found",
                "--wait=false",
                "-f",
                &self.install.display().to_string(),
            ],
        );
        for node in NODES {
            let _ = run(repo_root().join("e2e/node.sh"), &["remove", node]);
        }
        // The tier's pools, empty by now (the controller that would delete
        // them is gone with the install).
        for pool in [
            "100.72.14.0-24",
            "100.72.15.0-24",
            "100.72.16.0-24",
            "100.72.17.0-24",
        ] {
            let _ = run(
                "kubectl",
                &[
                    "delete",
                    "ippool.whereabouts.cni.cncf.io",
                    "-n",
                    POOLS_NS,
                    pool,
                    "--ignore-not-found",
                ],
            );
        }
        let _ = run(
            repo_root().join("e2e/real-node.sh"),
            &["control-plane", "down"],
        );
    }
}

#[derive(Debug, Clone)]
struct PodInfo {
    name: String,
    node: String,
    uid: String,
    /// net1's addresses from Multus' network-status annotation.
    ips: Vec<String>,
}

fn pods(ns: &str, selector: &str) -> Vec<Value> {
    kubectl_json(&["get", "pods", "-n", ns, "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The addresses Multus reports for the attachment of `network` (ns/name).
fn network_ips(pod: &Value, network: &str) -> Option<Vec<String>> {
    let status = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str()?;
    let status: Value = serde_json::from_str(status).ok()?;
    status
        .as_array()?
        .iter()
        .find(|s| s["name"] == network)
        .map(|s| {
            s["ips"]
                .as_array()
                .map(|ips| {
                    ips.iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
}

/// Waits until exactly `count` pods match and all are Ready with an
/// address on `network`.
fn ready_pods(ns: &str, selector: &str, network: &str, count: usize, seconds: u64) -> Vec<PodInfo> {
    wait_explained(
        &format!("{count} Ready pods {selector} with {network}"),
        seconds,
        || {
            let all = pods(ns, selector);
            if all.len() != count || !all.iter().all(ready) {
                return None;
            }
            all.iter()
                .map(|p| {
                    Some(PodInfo {
                        name: p["metadata"]["name"].as_str()?.to_owned(),
                        node: p["spec"]["nodeName"].as_str()?.to_owned(),
                        uid: p["metadata"]["uid"].as_str()?.to_owned(),
                        ips: network_ips(p, network).filter(|ips| !ips.is_empty())?,
                    })
                })
                .collect()
        },
        || pods_explained(ns, selector),
    )
}

/// Allocations of `range` across its pool shards: address offset ->
/// podref. Resting addresses (kept for a pod that went, or cooling after a
/// release: a `held-until` or `cooling-until` marker for a container ID)
/// are left out.
fn allocations(range: &str) -> BTreeMap<String, String> {
    let pools = kubectl_json(&["get", "ippools.whereabouts.cni.cncf.io", "-n", POOLS_NS]);
    let mut out = BTreeMap::new();
    for pool in pools["items"].as_array().into_iter().flatten() {
        if pool["spec"]["range"] != range {
            continue;
        }
        for (offset, a) in pool["spec"]["allocations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let id = a["id"].as_str().unwrap_or_default();
            if hereabouts_core::ledger::resting_until(id).is_none() {
                out.insert(
                    offset.clone(),
                    a["podref"].as_str().unwrap_or_default().to_owned(),
                );
            }
        }
    }
    out
}

/// What `kubectl get ippools` says of the pool named after `range`.
fn pool_status(range: &str) -> Value {
    let name = range.replace('/', "-");
    kubectl_json(&[
        "get",
        "ippools.whereabouts.cni.cncf.io",
        "-n",
        POOLS_NS,
        &name,
    ])["status"]
        .clone()
}

fn claims(ns: &str) -> usize {
    kubectl_json(&["get", "ipclaims.hereabouts.dev", "-n", ns])["items"]
        .as_array()
        .map_or(0, Vec::len)
}

/// The pod's sandbox pid on its node, for running commands in its netns.
fn pod_pid(ns: &str, pod: &PodInfo) -> String {
    wait(&format!("sandbox of {}", pod.name), 30, || {
        let out = run(
            repo_root().join("e2e/real-node.sh"),
            &["pod-pid", &pod.node, ns, &pod.name],
        );
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !pid.is_empty()).then_some(pid)
    })
}

fn in_pod(ns: &str, pod: &PodInfo, command: &[&str]) -> Output {
    let pid = pod_pid(ns, pod);
    let mut args = vec!["-t", pid.as_str(), "-n"];
    args.extend(command);
    run("nsenter", &args)
}

fn in_pod_ok(ns: &str, pod: &PodInfo, command: &[&str]) -> String {
    let out = in_pod(ns, pod, command);
    assert!(
        out.status.success(),
        "in pod {}: {command:?}: {}",
        pod.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn addr(ip: &str) -> &str {
    ip.split('/').next().unwrap_or(ip)
}

fn nad(ns: &str, name: &str, config: Value) {
    apply(&json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": config.to_string()}
    }));
}

fn pod_template(app: &str, networks: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}, "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": PAUSE, "imagePullPolicy": "Never"}],
            // Real nodes only, in the pod itself: the spread below counts
            // the nodes the pod's own affinity admits (the scheduler's
            // added affinity is not one of them), and a simulated node,
            // where nothing starts, would hold the skew at zero.
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "hereabouts.dev/kubelet", "operator": "Exists"}]}]}}},
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": app}}
            }]
        }
    })
}

fn kubeconfig_token(node: &str) -> String {
    let path = node_dir(node).join("etc-cni-net.d/hereabouts.d/hereabouts.kubeconfig");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .map(|t| t.trim().trim_matches('"').to_owned())
        .unwrap_or_default()
}

fn node_installed(node: &str) -> bool {
    let dir = node_dir(node);
    let conf = dir.join("etc-cni-net.d/hereabouts.d");
    let kubeconfig = conf.join("hereabouts.kubeconfig");
    dir.join("opt-cni-bin/hereabouts").is_file()
        && std::fs::read_to_string(conf.join("nodename")).is_ok_and(|n| n.trim() == node)
        && std::fs::metadata(&kubeconfig).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600)
        && !kubeconfig_token(node).is_empty()
}

fn install_without_crds(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(repo_root().join("manifests/install.yaml")).expect("install.yaml");
    let kept: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| !d.contains("kind: CustomResourceDefinition"))
        .collect();
    let path = dir.join("install-without-crds.yaml");
    std::fs::write(&path, kept.join("\n---\n")).expect("write");
    path
}

// Run by e2e/test.sh (`make test`) beside the other tiers, on a kit of its
// own (HB_LOCAL, its own ports), since it runs 9 to 10 minutes, 8 of them
// bound by the token rotation (the shortest token the API server issues
// lives 600 s; the kubelet renews it at 80%). Ignored under a plain
// `cargo test`, which would run it on the main kit alongside every other
// tier; `make test-real-nodes` runs it alone.
#[test]
#[ignore = "run by e2e/test.sh on a kit of its own, or: make test-real-nodes"]
fn admin_path_on_real_nodes() {
    let began = Instant::now();
    step("local control plane");
    script("cluster.sh", &["up"]);
    let scratch = hereabouts_kit::local_dir().join("real-nodes-test");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let ns = hereabouts_kit::unique("real");
    let helm_ns = hereabouts_kit::unique("real-helm");
    let install = install_without_crds(&scratch);
    let _cleanup = Cleanup {
        namespaces: vec![ns.clone(), helm_ns.clone()],
        install: install.clone(),
    };

    // e2e/test.sh builds the image before the other tiers start, so this
    // tier never waits for cargo's lock while they run.
    let archive = match std::env::var("HB_REAL_NODES_IMAGE") {
        Ok(built) => {
            step(&format!(
                "the image e2e/test.sh built (make image): {built}"
            ));
            built
        }
        Err(_) => {
            step("make image: static binaries packed as an OCI archive");
            script("image.sh", &[]).trim().to_owned()
        }
    };
    assert!(
        Path::new(&archive).is_file(),
        "no image archive at {archive}"
    );

    step("kubectl apply --server-side -f manifests/install.yaml");
    let manifest = repo_root().join("manifests/install.yaml");
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &manifest.display().to_string(),
    ]);
    kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/ippools.whereabouts.cni.cncf.io",
        "crd/ipclaims.hereabouts.dev",
        "crd/overlappingrangeipreservations.whereabouts.cni.cncf.io",
    ]);
    // Pools of this tier's ranges left by an earlier run that was cut off
    // (the controller cannot run before the nodes: nothing else writes them).
    let stale = kubectl_json(&["get", "ippools.whereabouts.cni.cncf.io", "-n", POOLS_NS]);
    for pool in stale["items"].as_array().into_iter().flatten() {
        if [LAN, SBR, ROUTED, HELM_LAN]
            .iter()
            .any(|r| pool["spec"]["range"] == *r)
        {
            let name = pool["metadata"]["name"].as_str().unwrap_or_default();
            kubectl(&[
                "delete",
                "ippool.whereabouts.cni.cncf.io",
                "-n",
                POOLS_NS,
                name,
            ]);
        }
    }

    // A short-lived node token, so this tier sees the kubelet rotate it;
    // patched before any node runs the DaemonSet, so no rollout follows.
    kubectl(&[
        "patch", "daemonset", "hereabouts-node", "-n", POOLS_NS, "--type", "json", "-p",
        &json!([{"op": "replace",
            "path": "/spec/template/spec/volumes/2/projected/sources/0/serviceAccountToken/expirationSeconds",
            "value": TOKEN_SECONDS}])
        .to_string(),
    ]);

    for node in NODES {
        step(&format!(
            "real node {node}: containerd + kubelet, the image imported (never pulled)"
        ));
        script("node.sh", &["add", node, "--real", &archive]);
    }

    step("the controller's two replicas become Ready and one holds the Lease");
    let controllers = wait("two Ready controller replicas", 180, || {
        let all: Vec<Value> = pods(POOLS_NS, "app.kubernetes.io/name=hereabouts-controller")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (all.len() == 2 && all.iter().all(ready)).then_some(all)
    });
    let names: BTreeSet<String> = controllers
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let holder = wait("the Lease held by a replica", 60, || {
        let lease = kubectl_json(&["get", "lease", "hereabouts-controller", "-n", POOLS_NS]);
        let holder = lease["spec"]["holderIdentity"].as_str()?.to_owned();
        names
            .iter()
            .any(|n| holder.contains(n.as_str()))
            .then_some(holder)
    });
    eprintln!("[real-nodes] lease holder: {holder}");
    // The anti-affinity is preferred, not required: the replicas may share
    // a node (both were scheduled as the first node registered).
    let spread: BTreeSet<&str> = controllers
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    eprintln!("[real-nodes] controller replicas on {spread:?}");

    step("the DaemonSet installs the plugin and its 0600 kubeconfig on each real node");
    for node in NODES {
        wait(&format!("hereabouts installed on {node}"), 120, || {
            node_installed(node).then_some(())
        });
    }
    let first_tokens: Vec<String> = NODES.iter().map(|n| kubeconfig_token(n)).collect();
    let token_since = Instant::now();

    kubectl(&["create", "namespace", &ns]);
    let lan = format!("{ns}/lan");
    nad(
        &ns,
        "lan",
        json!({
            "cniVersion": "1.0.0", "name": "lan", "type": "macvlan", "master": "eth1", "mode": "bridge",
            "ipam": {"type": "hereabouts", "range": LAN}
        }),
    );

    step(
        "a Deployment of 6 pods with a macvlan network starts through kubelet, containerd and Multus",
    );
    let deployment = |replicas: u32| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": pod_template("web", "lan")}
        })
    };
    apply(&deployment(6));
    let web = ready_pods(&ns, "app=web", &lan, 6, 240);
    let addresses: BTreeSet<String> = web.iter().map(|p| addr(&p.ips[0]).to_owned()).collect();
    assert_eq!(addresses.len(), 6, "unique addresses: {web:?}");
    eprintln!("[real-nodes] web addresses: {addresses:?}");
    let on: BTreeSet<&str> = web.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(on.len(), 2, "pods on both nodes: {web:?}");
    assert_eq!(allocations(LAN).len(), 6, "six allocations in the pool");
    for p in &web {
        let shown = in_pod_ok(&ns, p, &["ip", "-o", "addr", "show", "net1"]);
        assert!(
            shown.contains(&p.ips[0]),
            "net1 of {} holds {}: {shown}",
            p.name,
            p.ips[0]
        );
    }

    step("pods ping each other across nodes over net1");
    let a = web
        .iter()
        .find(|p| p.node == NODES[0])
        .expect("a pod on the first node");
    let b = web
        .iter()
        .find(|p| p.node == NODES[1])
        .expect("a pod on the second node");
    for (from, to) in [(a, b), (b, a)] {
        let out = in_pod(&ns, from, &["ping", "-c", "2", "-W", "3", addr(&to.ips[0])]);
        assert!(
            out.status.success(),
            "{} ({}) pings {} ({}): {}",
            from.name,
            from.node,
            to.name,
            to.node,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    step("scaling down releases, scaling up reuses the released addresses");
    apply(&deployment(2));
    let kept = ready_pods(&ns, "app=web", &lan, 2, 120);
    // Released. A Deployment's pods come back under new names, so their
    // addresses are not held for them; they cool down (--release-cooldown,
    // 5 s) before anyone else gets them, then leave the pool.
    wait("four addresses released", 60, || {
        (allocations(LAN).len() == 2).then_some(())
    });
    // What an admin sees of it (kubectl get ippools: ALLOCATED, HELD,
    // FREE; HELD counts the cooling ones while they cool): the shard's 127
    // addresses and the range's 254, less what is allocated and resting.
    let status = wait("the pool's status says 2 allocated", 30, || {
        let s = pool_status(LAN);
        (s["allocated"] == 2).then_some(s)
    });
    let resting = status["held"].as_u64().expect("held is a count");
    assert!(resting <= 4, "{status}");
    assert_eq!(
        (&status["shard"], &status["free"], &status["rangeFree"]),
        (
            &json!("0"),
            &json!((125 - resting).to_string()),
            &json!((252 - resting).to_string())
        ),
        "{status}"
    );
    let kept_addresses: BTreeSet<String> =
        kept.iter().map(|p| addr(&p.ips[0]).to_owned()).collect();
    // Released addresses stay held for their pod's name for the
    // controller's --hold-released (60 s, for StatefulSets); a Deployment's
    // new pods have new names, so they get them once the holds lapse.
    std::thread::sleep(Duration::from_secs(HOLD_RELEASED_SECONDS + 5));
    apply(&deployment(6));
    let again = ready_pods(&ns, "app=web", &lan, 6, 240);
    let again_addresses: BTreeSet<String> =
        again.iter().map(|p| addr(&p.ips[0]).to_owned()).collect();
    // Lowest free first: the kept addresses and the lowest others, which
    // include released ones.
    let released: BTreeSet<&String> = addresses.difference(&kept_addresses).collect();
    let expected: BTreeSet<String> = kept_addresses
        .iter()
        .cloned()
        .chain(
            (1..=254)
                .map(|host| format!("100.72.14.{host}"))
                .filter(|a| !kept_addresses.contains(a))
                .take(4),
        )
        .collect();
    assert_eq!(
        again_addresses, expected,
        "the kept addresses and the lowest free ones (first: {addresses:?}, kept: {kept_addresses:?})"
    );
    assert!(
        again_addresses.iter().any(|a| released.contains(a)),
        "released addresses are handed out again: {again_addresses:?}, released {released:?}"
    );

    step("a StatefulSet pod deleted by hand comes back with its address");
    apply(&json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": pod_template("db", "lan")}
    }));
    let db = ready_pods(&ns, "app=db", &lan, 1, 180).remove(0);
    kubectl(&["delete", "pod", "-n", &ns, &db.name, "--wait=false"]);
    let db_again = wait("db-0 recreated", 180, || {
        let p = ready_pods(&ns, "app=db", &lan, 1, 180).remove(0);
        (p.uid != db.uid).then_some(p)
    });
    assert_eq!(
        db_again.ips, db.ips,
        "db-0 keeps its address across recreation"
    );

    step("pods deleted while their node's kubelet is stopped leak nothing once it starts again");
    let node = NODES[1];
    script("real-node.sh", &["kubelet", node, "stop"]);
    let victims: Vec<&PodInfo> = again.iter().filter(|p| p.node == node).collect();
    assert!(!victims.is_empty());
    for v in &victims {
        kubectl(&["delete", "pod", "-n", &ns, &v.name, "--wait=false"]);
    }
    // The replacements may go to either node; none of the deleted pods'
    // containers can be stopped until the kubelet is back.
    std::thread::sleep(Duration::from_secs(5));
    script("real-node.sh", &["kubelet", node, "start"]);
    let settled = ready_pods(&ns, "app=web", &lan, 6, 300);
    wait(
        "every allocation held by a live pod, none by a deleted one",
        180,
        || {
            let live: BTreeSet<String> = settled
                .iter()
                .map(|p| format!("{ns}/{}", p.name))
                .chain([format!("{ns}/{}", db_again.name)])
                .collect();
            let held: BTreeSet<String> = allocations(LAN).into_values().collect();
            (allocations(LAN).len() == 7 && held == live && claims(&ns) == 7).then_some(())
        },
    );
    for v in &victims {
        assert!(
            run("kubectl", &["get", "pod", "-n", &ns, &v.name])
                .stdout
                .is_empty(),
            "{} is gone",
            v.name
        );
    }

    step("source-based routing: macvlan + sbr + tuning with a hereabouts gateway");
    nad(
        &ns,
        "sbr",
        json!({
            "cniVersion": "1.0.0", "name": "sbr",
            "plugins": [
                {"type": "macvlan", "master": "eth1", "mode": "bridge",
                 "ipam": {"type": "hereabouts", "range": SBR, "gateway": SBR_GATEWAY}},
                {"type": "sbr"},
                {"type": "tuning", "mtu": 1400}
            ]
        }),
    );
    nad(
        &ns,
        "routed",
        json!({
            "cniVersion": "1.0.0", "name": "routed", "type": "macvlan", "master": "eth1", "mode": "bridge",
            "ipam": {"type": "hereabouts", "range": ROUTED, "routes": [{"dst": ROUTE_DST}]}
        }),
    );
    apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "chains", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "chains"}},
                 "template": pod_template("chains", "sbr,routed")}
    }));
    let chains = ready_pods(&ns, "app=chains", &format!("{ns}/sbr"), 1, 180).remove(0);
    let source = addr(&chains.ips[0]).to_owned();
    let rules = in_pod_ok(&ns, &chains, &["ip", "rule", "show"]);
    let table = rules
        .lines()
        .find(|l| l.contains(&format!("from {source} lookup")))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("an sbr rule for {source}: {rules}"))
        .to_owned();
    let routes = in_pod_ok(&ns, &chains, &["ip", "route", "show", "table", &table]);
    assert!(
        routes.contains(&format!("default via {SBR_GATEWAY} dev net1")),
        "table {table} routes via the gateway: {routes}"
    );
    let get = in_pod_ok(
        &ns,
        &chains,
        &["ip", "route", "get", "198.51.100.7", "from", &source],
    );
    assert!(
        get.contains(&format!("via {SBR_GATEWAY} dev net1")),
        "traffic from {source} leaves through the sbr table: {get}"
    );
    let link = in_pod_ok(&ns, &chains, &["ip", "link", "show", "net1"]);
    assert!(link.contains("mtu 1400"), "tuning set the MTU: {link}");
    let main_routes = in_pod_ok(&ns, &chains, &["ip", "route", "show"]);
    assert!(
        main_routes.contains(&format!("{ROUTE_DST} dev net2")),
        "the NAD's route is in the pod: {main_routes}"
    );

    step("token rotation rewrites the kubeconfig, and ADDs keep working");
    let rotate_by = Duration::from_secs(TOKEN_SECONDS + 120);
    for (node, first) in NODES.iter().zip(&first_tokens) {
        let left = rotate_by
            .saturating_sub(token_since.elapsed())
            .as_secs()
            .max(30);
        wait(&format!("a new token in {node}'s kubeconfig"), left, || {
            let now = kubeconfig_token(node);
            (!now.is_empty() && &now != first && node_installed(node)).then_some(())
        });
    }
    apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "after", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "after"}},
                 "template": pod_template("after", "lan")}
    }));
    let after = ready_pods(&ns, "app=after", &lan, 2, 180);
    for node in NODES {
        assert!(
            after.iter().any(|p| p.node == node),
            "an ADD on {node} after rotation: {after:?}"
        );
    }
    let mut all: Vec<String> = after
        .iter()
        .chain(&settled)
        .map(|p| addr(&p.ips[0]).to_owned())
        .collect();
    all.push(addr(&db_again.ips[0]).to_owned());
    let unique_all: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        unique_all.len(),
        all.len(),
        "unique addresses after rotation: {all:?}"
    );

    step("uninstall: the pods' namespace deleted releases every address, then the install goes");
    kubectl(&["delete", "namespace", &ns, "--timeout=180s"]);
    for range in [LAN, SBR, ROUTED] {
        wait(&format!("no allocation left in {range}"), 120, || {
            allocations(range).is_empty().then_some(())
        });
    }
    kubectl(&[
        "delete",
        "-f",
        &install.display().to_string(),
        "--timeout=180s",
    ]);
    wait("the install's pods gone", 120, || {
        pods(
            POOLS_NS,
            "app.kubernetes.io/name in (hereabouts-controller,hereabouts-node)",
        )
        .is_empty()
        .then_some(())
    });
    // What the kustomize install's DaemonSet wrote on the nodes goes too,
    // so what is there next is the chart's doing.
    for node in NODES {
        let dir = node_dir(node);
        for removed in [
            std::fs::remove_file(dir.join("opt-cni-bin/hereabouts")),
            std::fs::remove_dir_all(dir.join("etc-cni-net.d/hereabouts.d")),
        ] {
            if let Err(e) = removed {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{node}: {e}");
            }
        }
        assert!(
            !node_installed(node),
            "nothing of hereabouts left on {node}"
        );
    }

    step("the second install path: helm install from charts/hereabouts");
    ok(
        helm(),
        &[
            "install",
            HELM_RELEASE,
            &repo_root().join("charts/hereabouts").display().to_string(),
            "--namespace",
            POOLS_NS,
        ],
    );
    let helm_controllers = wait("two Ready controller replicas (Helm)", 180, || {
        let all: Vec<Value> = pods(POOLS_NS, "app.kubernetes.io/name=hereabouts-controller")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (all.len() == 2 && all.iter().all(ready)).then_some(all)
    });
    let helm_names: BTreeSet<String> = helm_controllers
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    wait("the Lease held by a Helm-installed replica", 90, || {
        let lease = kubectl_json(&["get", "lease", "hereabouts-controller", "-n", POOLS_NS]);
        let holder = lease["spec"]["holderIdentity"].as_str()?.to_owned();
        helm_names
            .iter()
            .any(|n| holder.contains(n.as_str()))
            .then_some(())
    });
    for node in NODES {
        wait(
            &format!("the chart's DaemonSet installed hereabouts on {node}"),
            120,
            || node_installed(node).then_some(()),
        );
    }
    let managed = kubectl_json(&["get", "daemonset", "hereabouts-node", "-n", POOLS_NS]);
    assert_eq!(
        managed["metadata"]["annotations"]["meta.helm.sh/release-name"], HELM_RELEASE,
        "the DaemonSet is the chart's: {}",
        managed["metadata"]
    );
    kubectl(&["create", "namespace", &helm_ns]);
    let helm_lan = format!("{helm_ns}/lan");
    nad(
        &helm_ns,
        "lan",
        json!({
            "cniVersion": "1.0.0", "name": "lan", "type": "macvlan", "master": "eth1", "mode": "bridge",
            "ipam": {"type": "hereabouts", "range": HELM_LAN}
        }),
    );
    apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": helm_ns},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": pod_template("web", "lan")}
    }));
    let helm_web = ready_pods(&helm_ns, "app=web", &helm_lan, 4, 240);
    let helm_addresses: BTreeSet<String> = helm_web
        .iter()
        .map(|p| addr(&p.ips[0]).to_owned())
        .collect();
    eprintln!("[real-nodes] Helm install's pods: {helm_addresses:?}");
    assert_eq!(helm_addresses.len(), 4, "unique addresses: {helm_web:?}");
    assert_eq!(
        allocations(HELM_LAN).len(),
        4,
        "four allocations in the pool"
    );
    let c = helm_web
        .iter()
        .find(|p| p.node == NODES[0])
        .expect("a pod on the first node");
    let d = helm_web
        .iter()
        .find(|p| p.node == NODES[1])
        .expect("a pod on the second node");
    let out = in_pod(
        &helm_ns,
        c,
        &["ping", "-c", "2", "-W", "3", addr(&d.ips[0])],
    );
    assert!(
        out.status.success(),
        "{} pings {} across nodes: {}",
        c.name,
        d.name,
        String::from_utf8_lossy(&out.stdout)
    );
    kubectl(&["delete", "namespace", &helm_ns, "--timeout=180s"]);
    wait("the Helm install released every address", 120, || {
        allocations(HELM_LAN).is_empty().then_some(())
    });
    ok(
        helm(),
        &["uninstall", HELM_RELEASE, "--namespace", POOLS_NS, "--wait"],
    );
    eprintln!("[real-nodes] done in {}s", began.elapsed().as_secs());
}
