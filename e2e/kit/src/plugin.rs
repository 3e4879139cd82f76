//! An IPAM plugin (hereabouts or the whereabouts peer) spawned the way a
//! runtime spawns it, one process per call, many in flight: what the bench
//! (`benches/cni`) and the fault suite (`tests/faults`) both drive.
//!
//! The plugin gets what Multus (or the main plugin) would hand it: the CNI
//! environment, `CNI_ARGS` with the pod's namespace, name, infra container
//! ID and UID, `NODENAME`, and the network configuration on stdin. NETNS is
//! a path that does not exist: an IPAM plugin never enters it, so what is
//! measured is the IPAM and nothing else.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::{KitError, Result, cni_bin_dir};

pub const NETNS: &str = "/var/run/netns/hereabouts-bench-no-such-netns";

/// A pod the plugin is called for.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
    pub node: String,
}

/// One plugin call: the pod and the sandbox (container) ID.
#[derive(Clone, Debug)]
pub struct Call {
    pub pod: PodRef,
    pub container_id: String,
}

impl Call {
    /// The `generation`th sandbox of `pod` (a runtime retrying with a new
    /// sandbox gets a new container ID).
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

/// One plugin invocation's outcome.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub ok: bool,
    /// Killed at the run's time cap.
    pub capped: bool,
    /// Killed (SIGKILL) on purpose mid-call.
    pub killed: bool,
    /// Never started: the cap came first.
    pub not_started: bool,
    pub ip: Option<IpAddr>,
    /// The CNI error code of a failure, when the plugin printed one.
    pub code: Option<u32>,
    /// From spawn to exit.
    pub latency: Duration,
    /// From the start of the batch to exit.
    pub finished_at: Duration,
    pub error: Option<String>,
}

impl Outcome {
    fn failed(error: impl Into<String>) -> Self {
        Outcome {
            error: Some(error.into()),
            ..Outcome::default()
        }
    }
}

/// How a batch of calls runs.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Processes alive at once.
    pub inflight: usize,
    /// What still runs then is killed and counted as capped.
    pub cap: Option<Duration>,
    /// The `i`th call's process gets SIGKILL this long after it started (a
    /// runtime or node crashing mid-call).
    pub kill_after: Vec<Option<Duration>>,
    /// Counts the calls that have finished, while the batch runs.
    pub done: Arc<AtomicUsize>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            inflight: 1,
            cap: None,
            kill_after: Vec::new(),
            done: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Writes `<local>/<folder>/<namespace>.conf`, a flat file (the NAD's
/// `configuration_path`) naming `kubeconfig`: whereabouts refuses to run
/// without one, and its context namespace keeps the pools there.
pub fn flat_file(folder: &str, namespace: &str, kubeconfig: &Path) -> std::io::Result<PathBuf> {
    let dir = crate::local_dir().join(folder);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{namespace}.conf"));
    std::fs::write(
        &path,
        serde_json::json!({"kubernetes": {"kubeconfig": kubeconfig}}).to_string(),
    )?;
    Ok(path)
}

/// A plugin binary called for the pods of one namespace on interface
/// `net1`.
#[derive(Clone, Debug)]
pub struct Plugin {
    pub path: PathBuf,
    pub namespace: String,
    /// When set, each call names its node's agent socket,
    /// `<agents>/<node>.sock` (`HEREABOUTS_AGENT_SOCKET`): one node agent
    /// per simulated node.
    pub agents: Option<PathBuf>,
}

impl Plugin {
    pub fn new(path: PathBuf, namespace: &str) -> Self {
        Plugin {
            path,
            namespace: namespace.to_owned(),
            agents: None,
        }
    }

    fn env(&self, command: &str, call: &Call, ifname: &str) -> Vec<(String, String)> {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, call.pod.name, call.container_id, call.pod.uid
        );
        [
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", call.container_id.clone()),
            ("CNI_NETNS", NETNS.to_owned()),
            ("CNI_IFNAME", ifname.to_owned()),
            ("CNI_PATH", cni_bin_dir().display().to_string()),
            ("CNI_ARGS", args),
            ("NODENAME", call.pod.node.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(self.agents.as_ref().map(|dir| {
            (
                "HEREABOUTS_AGENT_SOCKET".to_owned(),
                dir.join(format!("{}.sock", call.pod.node))
                    .display()
                    .to_string(),
            )
        }))
        .collect()
    }

    /// Runs `command` with `config` on stdin for every call at once (at most
    /// `inflight` processes alive at a time), killing what still runs at
    /// `cap`.
    pub async fn run(
        &self,
        command: &str,
        config: &str,
        calls: &[Call],
        inflight: usize,
        cap: Option<Duration>,
    ) -> Vec<Outcome> {
        let batch = Batch {
            inflight,
            cap,
            ..Batch::default()
        };
        self.run_batch(command, config, calls, &batch).await
    }

    /// [`Plugin::run`] with the fault suite's extras (see [`Batch`]).
    pub async fn run_batch(
        &self,
        command: &str,
        config: &str,
        calls: &[Call],
        batch: &Batch,
    ) -> Vec<Outcome> {
        let config: Arc<str> = Arc::from(config);
        let slots = Arc::new(Semaphore::new(batch.inflight.max(1)));
        let started = Instant::now();
        let deadline = batch.cap.map(|c| tokio::time::Instant::now() + c);
        let tasks: Vec<_> = calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let config = config.clone();
                let slots = slots.clone();
                let env = self.env(command, call, "net1");
                let plugin = self.path.clone();
                let kill = batch.kill_after.get(i).copied().flatten();
                let done = batch.done.clone();
                tokio::spawn(async move {
                    let permit = match deadline {
                        Some(d) => tokio::time::timeout_at(d, slots.acquire_owned()).await.ok(),
                        None => Some(slots.acquire_owned().await),
                    };
                    let Some(Ok(_permit)) = permit else {
                        return Outcome {
                            not_started: true,
                            ..Outcome::failed("not started before the cap")
                        };
                    };
                    let mut outcome = invoke(&plugin, &env, &config, deadline, kill).await;
                    outcome.finished_at = started.elapsed();
                    done.fetch_add(1, Ordering::Relaxed);
                    outcome
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(
                task.await
                    .unwrap_or_else(|e| Outcome::failed(format!("task: {e}"))),
            );
        }
        out
    }

    /// Runs `command` for every call's pod over `attachments` (a network
    /// configuration and its interface each), the way Multus serves a pod
    /// with several networks: one pod's calls one after another (ADD in
    /// order, DEL in reverse), the pods at once, at most `inflight` pods in
    /// flight. What is left at `cap` is killed or never started. The
    /// outcomes are per call, in `attachments`' order.
    pub async fn run_attachments(
        &self,
        command: &str,
        attachments: &[(String, String)],
        calls: &[Call],
        inflight: usize,
        cap: Option<Duration>,
    ) -> Vec<Vec<Outcome>> {
        let attachments: Arc<[(String, String)]> = Arc::from(attachments);
        let reverse = command == "DEL";
        let slots = Arc::new(Semaphore::new(inflight.max(1)));
        let started = Instant::now();
        let deadline = cap.map(|c| tokio::time::Instant::now() + c);
        let tasks: Vec<_> = calls
            .iter()
            .map(|call| {
                let attachments = attachments.clone();
                let slots = slots.clone();
                let envs: Vec<_> = attachments
                    .iter()
                    .map(|(_, ifname)| self.env(command, call, ifname))
                    .collect();
                let plugin = self.path.clone();
                tokio::spawn(async move {
                    let n = attachments.len();
                    let mut out = vec![Outcome::failed("not started before the cap"); n];
                    for o in &mut out {
                        o.not_started = true;
                    }
                    let permit = match deadline {
                        Some(d) => tokio::time::timeout_at(d, slots.acquire_owned()).await.ok(),
                        None => Some(slots.acquire_owned().await),
                    };
                    let Some(Ok(_permit)) = permit else {
                        return out;
                    };
                    let order: Vec<usize> = if reverse {
                        (0..n).rev().collect()
                    } else {
                        (0..n).collect()
                    };
                    for i in order {
                        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            break;
                        }
                        let mut outcome =
                            invoke(&plugin, &envs[i], &attachments[i].0, deadline, None).await;
                        outcome.finished_at = started.elapsed();
                        out[i] = outcome;
                    }
                    out
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await.unwrap_or_else(|e| {
                vec![Outcome::failed(format!("task: {e}")); attachments.len()]
            }));
        }
        out
    }

    /// `VERSION`: only the process start-up and the answer.
    pub async fn version(&self) -> Outcome {
        let env = vec![("CNI_COMMAND".to_owned(), "VERSION".to_owned())];
        invoke(&self.path, &env, r#"{"cniVersion":"1.0.0"}"#, None, None).await
    }
}

/// A CNI plugin binary started the way a runtime starts it: only `env` in
/// the environment, `stdin` written and closed, stdout and stderr piped
/// (the tests' single calls; [`Plugin`] runs many at once).
pub fn spawn<'a>(
    program: &Path,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    stdin: &str,
) -> std::io::Result<std::process::Child> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes())?;
    }
    Ok(child)
}

/// [`spawn`], then its output once it exits.
pub fn call<'a>(
    program: &Path,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    stdin: &str,
) -> std::io::Result<std::process::Output> {
    spawn(program, env, stdin)?.wait_with_output()
}

async fn invoke(
    plugin: &Path,
    env: &[(String, String)],
    stdin: &str,
    deadline: Option<tokio::time::Instant>,
    kill_after: Option<Duration>,
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
        Err(e) => return Outcome::failed(format!("spawn: {e}")),
    };
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes()).await;
    }
    // The earlier of the cap and the planned kill ends the wait; dropping
    // the child (kill_on_drop) sends SIGKILL.
    let cap = deadline.map(|d| (d, false));
    let kill = kill_after.map(|k| (tokio::time::Instant::from_std(started) + k, true));
    let end = match (cap, kill) {
        (Some(c), Some(k)) => Some(if k.0 < c.0 { k } else { c }),
        (c, k) => c.or(k),
    };
    let output = match end {
        Some((at, killed)) => match tokio::time::timeout_at(at, child.wait_with_output()).await {
            Ok(o) => o,
            Err(_) => {
                return Outcome {
                    capped: !killed,
                    killed,
                    latency: started.elapsed(),
                    ..Outcome::failed(if killed {
                        "killed (SIGKILL) mid-call"
                    } else {
                        "killed at the time cap"
                    })
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
                ..Outcome::failed(format!("wait: {e}"))
            };
        }
    };
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let ip = doc["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok());
    let ok = output.status.success();
    Outcome {
        ok,
        ip,
        code: (!ok)
            .then(|| doc["code"].as_u64().and_then(|c| u32::try_from(c).ok()))
            .flatten(),
        latency,
        error: (!ok).then(|| {
            doc["msg"]
                .as_str()
                .map_or_else(|| format!("exit {}", output.status), str::to_owned)
        }),
        ..Outcome::default()
    }
}

/// Creates Pod objects `(name, node)` bound to their nodes (no kubelet runs
/// them: they only have to exist, with UIDs, for the plugin and the garbage
/// collectors). `metadata` and `spec` are merged into each (e.g.
/// finalizers, a termination grace period).
pub async fn create_pods(
    client: &Client,
    namespace: &str,
    pods: &[(String, String)],
    metadata: &serde_json::Value,
    spec: &serde_json::Value,
) -> Result<Vec<PodRef>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let slots = Arc::new(Semaphore::new(64));
    let tasks: Vec<_> = pods
        .iter()
        .map(|(name, node)| {
            let mut pod = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"nodeName": node, "automountServiceAccountToken": false,
                         "containers": [{"name": "c", "image": "bench.invalid/none"}]}
            });
            merge(&mut pod["metadata"], metadata);
            merge(&mut pod["spec"], spec);
            let (api, slots, name, node) = (api.clone(), slots.clone(), name.clone(), node.clone());
            tokio::spawn(async move {
                let _permit = slots.acquire_owned().await;
                let pod: Pod = serde_json::from_value(pod)?;
                let created = api.create(&PostParams::default(), &pod).await?;
                Ok::<_, KitError>(PodRef {
                    name,
                    uid: created.uid().unwrap_or_default(),
                    node,
                })
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| KitError::Task(e.to_string()))??);
    }
    Ok(out)
}

fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}
