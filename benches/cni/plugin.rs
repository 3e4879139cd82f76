//! One system under test (hereabouts or the whereabouts peer) in its own
//! namespace, and its IPAM plugin spawned the way a runtime spawns it
//! ([`hereabouts_kit::plugin`]: NETNS is a path that does not exist, which
//! an IPAM plugin never enters, checked for both plugins).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hereabouts_api::{IPPool, OverlappingRangeIPReservation};
pub use hereabouts_kit::plugin::{Call, Outcome, PodRef};
use hereabouts_kit::plugin::{Plugin, create_pods, flat_file};
use hereabouts_kit::{Process, TestNamespace, cni_bin_dir, free_port};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

pub const NODES: usize = 10;

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

/// A system under test: its namespace, configuration and binaries.
pub struct Target {
    pub kind: Kind,
    pub ns: TestNamespace,
    pub client: Client,
    plugin: Plugin,
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
        let flat_file = flat_file("bench", &ns.name, &ns.kubeconfig()?)?;
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
            plugin: Plugin::new(plugin, &ns.name),
            ns,
            client,
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
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let pods: Vec<(String, String)> = (0..count)
            .map(|i| (format!("{prefix}-{i}"), format!("bench-node-{}", i % NODES)))
            .collect();
        let none = serde_json::json!({});
        Ok(create_pods(&self.client, &self.ns.name, &pods, &none, &none).await?)
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
        self.plugin
            .run(command, &self.config(network), calls, inflight, cap)
            .await
    }

    /// `VERSION`: only the process start-up and the answer.
    pub async fn version(&self) -> Outcome {
        self.plugin.version().await
    }

    /// Every allocation of `network`'s pools in this namespace (all shards),
    /// as (address, podref).
    pub async fn pool_allocations(
        &self,
        network: &Network,
    ) -> anyhow::Result<Vec<(IpAddr, String)>> {
        let cidr: hereabouts_core::Cidr = network.range.parse()?;
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
        let cidr: hereabouts_core::Cidr = network.range.parse()?;
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
