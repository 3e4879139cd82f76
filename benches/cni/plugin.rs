//! One system under test (hereabouts or the whereabouts peer) in its own
//! namespace, and its IPAM plugin spawned the way a runtime spawns it.
//!
//! The plugin gets what Multus (or the main plugin) would hand it: the CNI
//! environment, `CNI_ARGS` with the pod's namespace, name, infra container
//! ID and UID, `NODENAME`, and the network configuration on stdin. NETNS is
//! a path that does not exist: an IPAM plugin never enters it (checked for
//! both plugins), so the measurement is the IPAM and nothing else.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hereabouts::crd::{IPPool, OverlappingRangeIPReservation};
use hereabouts_kit::{Process, TestNamespace, cni_bin_dir, free_port, local_dir};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

pub const NODES: usize = 10;
const NETNS: &str = "/var/run/netns/hereabouts-bench-no-such-netns";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hereabouts,
    Whereabouts,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hereabouts => "hereabouts",
            Kind::Whereabouts => "whereabouts",
        }
    }
}

/// A pod the plugin is called for.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
    pub node: String,
}

/// One plugin invocation's outcome.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub ok: bool,
    /// Killed at the run's time cap.
    pub capped: bool,
    /// Never started: the cap came first.
    pub not_started: bool,
    pub ip: Option<IpAddr>,
    /// From spawn to exit.
    pub latency: Duration,
    /// From the start of the batch to exit.
    pub finished_at: Duration,
    pub error: Option<String>,
}

/// A system under test: its namespace, configuration and binaries.
pub struct Target {
    pub kind: Kind,
    pub ns: TestNamespace,
    pub client: Client,
    plugin: PathBuf,
    flat_file: PathBuf,
    pub controller: Option<Process>,
    pub controller_port: u16,
    /// The storm's attachments, for the re-creation to delete.
    pub storm_calls: Vec<Call>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("namespace", &self.ns.name)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Sets up `kind` in `ns`: the flat configuration file both plugins
    /// read their kubeconfig from (whereabouts refuses to run without one),
    /// and for hereabouts a release controller scoped to the namespace.
    pub async fn new(
        kind: Kind,
        ns: TestNamespace,
        client: Client,
        bin_dir: &Path,
    ) -> anyhow::Result<Self> {
        let kubeconfig = ns.kubeconfig()?;
        let dir = local_dir().join("bench");
        std::fs::create_dir_all(&dir)?;
        let flat_file = dir.join(format!("{}.conf", ns.name));
        std::fs::write(
            &flat_file,
            serde_json::json!({"kubernetes": {"kubeconfig": kubeconfig}}).to_string(),
        )?;
        let (plugin, controller, controller_port) = match kind {
            Kind::Whereabouts => (cni_bin_dir().join("whereabouts"), None, 0),
            Kind::Hereabouts => {
                let port = free_port()?;
                let args: Vec<String> = [
                    "--namespace",
                    &ns.name,
                    "--watch-namespace",
                    &ns.name,
                    "--http-addr",
                    &format!("127.0.0.1:{port}"),
                ]
                .iter()
                .map(ToString::to_string)
                .collect();
                let process = Process::spawn(
                    &format!("{}-controller", ns.name),
                    &bin_dir.join("hereabouts-controller"),
                    &args,
                    &[
                        (
                            "KUBECONFIG",
                            hereabouts_kit::kubeconfig_path().display().to_string(),
                        ),
                        ("RUST_LOG", "info".to_owned()),
                    ],
                )?;
                (bin_dir.join("hereabouts"), Some(process), port)
            }
        };
        anyhow::ensure!(
            plugin.exists(),
            "{} not found (make bench builds it)",
            plugin.display()
        );
        let target = Target {
            kind,
            ns,
            client,
            plugin,
            flat_file,
            controller,
            controller_port,
            storm_calls: Vec::new(),
        };
        if target.controller.is_some() {
            hereabouts_kit::eventually("controller /readyz", 60, || async {
                matches!(target.http_get("/readyz").await, Some((200, _))).then_some(())
            })
            .await?;
        }
        Ok(target)
    }

    /// GET on the controller's HTTP port.
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.controller_port))
            .await
            .ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    }

    /// The controller's counters that explain a phase: commit batches and
    /// their duration, conflicts, claims answered (sums and counts).
    pub async fn controller_metrics(&self) -> BTreeMap<String, f64> {
        let Some((200, text)) = self.http_get("/metrics").await else {
            return BTreeMap::new();
        };
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
            .filter(|l| {
                [
                    "pool_commit",
                    "conflict",
                    "claim_latency",
                    "reconcile_duration",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((
                    name.trim_start_matches("hereabouts_").to_owned(),
                    value.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The controller's process id, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Process::id)
    }

    /// The controller's resident set (VmRSS), in KiB.
    pub fn controller_rss_kib(&mut self) -> Option<u64> {
        let pid = self.controller.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The network configuration (the same for both systems but `type`).
    pub fn config(&self, network: &Network) -> String {
        let mut ipam = serde_json::json!({
            "type": self.kind.name(),
            "range": network.range,
            "configuration_path": self.flat_file,
        });
        if let Some((start, end)) = &network.start_end {
            ipam["range_start"] = start.clone().into();
            ipam["range_end"] = end.clone().into();
        }
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network.name,
            "type": "macvlan",
            "master": "eth0",
            "ipam": ipam,
        })
        .to_string()
    }

    /// Creates `count` Pod objects bound to the simulated nodes (no kubelet
    /// runs them: they only have to exist, with UIDs, for the plugin and
    /// the garbage collectors).
    pub async fn pods(&self, prefix: &str, count: usize) -> anyhow::Result<Vec<PodRef>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns.name);
        let made: Vec<anyhow::Result<PodRef>> = futures::stream::iter(0..count)
            .map(|i| {
                let api = api.clone();
                let name = format!("{prefix}-{i}");
                let node = format!("bench-node-{}", i % NODES);
                async move {
                    let pod: Pod = serde_json::from_value(serde_json::json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name},
                        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "bench.invalid/none"}]}
                    }))?;
                    let created = api.create(&PostParams::default(), &pod).await?;
                    Ok(PodRef {
                        name,
                        uid: created.uid().unwrap_or_default(),
                        node,
                    })
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        made.into_iter().collect()
    }

    /// Runs `command` for every pod at once (at most `inflight` processes
    /// alive at a time), killing what still runs at `cap`.
    pub async fn run(
        &self,
        command: &str,
        network: &Network,
        calls: &[Call],
        inflight: usize,
        cap: Option<Duration>,
    ) -> Vec<Outcome> {
        let config = Arc::new(self.config(network));
        let slots = Arc::new(Semaphore::new(inflight.max(1)));
        let started = Instant::now();
        let deadline = cap.map(|c| tokio::time::Instant::now() + c);
        let tasks: Vec<_> = calls
            .iter()
            .map(|call| {
                let config = config.clone();
                let slots = slots.clone();
                let env = self.env(command, call);
                let plugin = self.plugin.clone();
                tokio::spawn(async move {
                    let permit = match deadline {
                        Some(d) => tokio::time::timeout_at(d, slots.acquire_owned()).await.ok(),
                        None => Some(slots.acquire_owned().await),
                    };
                    let Some(Ok(_permit)) = permit else {
                        return Outcome {
                            not_started: true,
                            error: Some("not started before the cap".to_owned()),
                            ..Outcome::default()
                        };
                    };
                    let mut outcome = invoke(&plugin, &env, &config, deadline).await;
                    outcome.finished_at = started.elapsed();
                    outcome
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await.unwrap_or_else(|e| Outcome {
                error: Some(format!("task: {e}")),
                ..Outcome::default()
            }));
        }
        out
    }

    fn env(&self, command: &str, call: &Call) -> Vec<(String, String)> {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.ns.name, call.pod.name, call.container_id, call.pod.uid
        );
        [
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", call.container_id.clone()),
            ("CNI_NETNS", NETNS.to_owned()),
            ("CNI_IFNAME", "net1".to_owned()),
            ("CNI_PATH", cni_bin_dir().display().to_string()),
            ("CNI_ARGS", args),
            ("NODENAME", call.pod.node.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// `VERSION`: only the process start-up and the answer.
    pub async fn version(&self) -> Outcome {
        let env = vec![("CNI_COMMAND".to_owned(), "VERSION".to_owned())];
        invoke(&self.plugin, &env, r#"{"cniVersion":"1.0.0"}"#, None).await
    }

    /// Every allocation of `network`'s pools in this namespace (all shards),
    /// as (address, podref).
    pub async fn pool_allocations(
        &self,
        network: &Network,
    ) -> anyhow::Result<Vec<(IpAddr, String)>> {
        let cidr: hereabouts::ipam::Cidr = network.range.parse()?;
        let pools: Api<IPPool> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut out = Vec::new();
        for pool in pools.list(&ListParams::default()).await? {
            if pool.spec.range != network.range {
                continue;
            }
            for (key, a) in &pool.spec.allocations {
                if let Some(ip) = key.parse::<u128>().ok().and_then(|o| cidr.ip_at(o)) {
                    out.push((ip, a.podref.clone()));
                }
            }
        }
        Ok(out)
    }

    /// OverlappingRangeIPReservations of `network`'s addresses (reservations
    /// are named after the address; the scenarios use IPv4 only).
    pub async fn reservations(&self, network: &Network) -> anyhow::Result<usize> {
        let cidr: hereabouts::ipam::Cidr = network.range.parse()?;
        let api: Api<OverlappingRangeIPReservation> =
            Api::namespaced(self.client.clone(), &self.ns.name);
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(|r| r.name_any().parse::<IpAddr>().ok())
            .filter(|ip| cidr.contains(*ip))
            .count())
    }

    /// (largest IPPool of `network` in JSON bytes as the API server lists
    /// it, managed fields included: what etcd stores for it, near enough;
    /// how many IPPools the network has).
    pub async fn largest_pool_bytes(&self, network: &Network) -> anyhow::Result<(usize, usize)> {
        let resource = ApiResource::erase::<IPPool>(&());
        let pools: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns.name, &resource);
        let list = pools.list(&ListParams::default()).await?;
        let mut largest = 0;
        let mut objects = 0;
        for pool in list
            .items
            .iter()
            .filter(|p| p.data["spec"]["range"] == network.range.as_str())
        {
            largest = largest.max(serde_json::to_vec(pool)?.len());
            objects += 1;
        }
        Ok((largest, objects))
    }
}

/// A network (the NAD's `ipam` ranges) both systems are given.
#[derive(Clone, Debug, Serialize)]
pub struct Network {
    pub name: String,
    pub range: String,
    pub start_end: Option<(String, String)>,
}

/// One plugin call: the pod and the sandbox (container) ID.
#[derive(Clone, Debug)]
pub struct Call {
    pub pod: PodRef,
    pub container_id: String,
}

impl Call {
    pub fn new(pod: &PodRef, generation: u32) -> Self {
        Call {
            pod: pod.clone(),
            container_id: format!("{:064x}", fnv(&format!("{}/{generation}", pod.uid))),
        }
    }
}

fn fnv(s: &str) -> u128 {
    s.bytes()
        .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        })
}

async fn invoke(
    plugin: &Path,
    env: &[(String, String)],
    stdin: &str,
    deadline: Option<tokio::time::Instant>,
) -> Outcome {
    let started = Instant::now();
    let child = tokio::process::Command::new(plugin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                error: Some(format!("spawn: {e}")),
                ..Outcome::default()
            };
        }
    };
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes()).await;
    }
    let output = match deadline {
        Some(d) => match tokio::time::timeout_at(d, child.wait_with_output()).await {
            Ok(o) => o,
            Err(_) => {
                return Outcome {
                    capped: true,
                    latency: started.elapsed(),
                    error: Some("killed at the time cap".to_owned()),
                    ..Outcome::default()
                };
            }
        },
        None => child.wait_with_output().await,
    };
    let latency = started.elapsed();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            return Outcome {
                latency,
                error: Some(format!("wait: {e}")),
                ..Outcome::default()
            };
        }
    };
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let ip = doc["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok());
    Outcome {
        ok: output.status.success(),
        ip,
        latency,
        error: (!output.status.success()).then(|| {
            doc["msg"]
                .as_str()
                .map_or_else(|| format!("exit {}", output.status), str::to_owned)
        }),
        ..Outcome::default()
    }
}

/// What the pool says against what the plugins said.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Audit {
    /// Addresses returned to more than one live attachment (each extra
    /// holder counts once).
    pub duplicates: usize,
    /// Successful ADDs whose address the pool does not hold for that pod.
    pub missing_from_pool: usize,
    pub pool_allocations: usize,
}

/// Compares the successful ADD results (pod, address) with the pool.
pub async fn audit(
    target: &Target,
    network: &Network,
    results: &[(String, IpAddr)],
) -> anyhow::Result<Audit> {
    let mut by_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (_, ip) in results {
        *by_ip.entry(*ip).or_default() += 1;
    }
    let duplicates = by_ip.values().map(|n| n.saturating_sub(1)).sum();
    let pool: BTreeMap<IpAddr, String> = target
        .pool_allocations(network)
        .await?
        .into_iter()
        .collect();
    let missing_from_pool = results
        .iter()
        .filter(|(pod, ip)| pool.get(ip) != Some(&format!("{}/{pod}", target.ns.name)))
        .count();
    Ok(Audit {
        duplicates,
        missing_from_pool,
        pool_allocations: pool.len(),
    })
}
