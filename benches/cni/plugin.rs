//! One system under test (hereabouts or one of its peers: whereabouts
//! v0.9.3, whereabouts v0.9.4 in its default mode and in its node-slice
//! mode) in its own namespace, and its IPAM plugin spawned the way a runtime
//! spawns it ([`hereabouts_kit::plugin`]: NETNS is a path that does not
//! exist, which an IPAM plugin never enters, checked for every plugin).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hereabouts_api::{IPPool, OverlappingRangeIPReservation};
pub use hereabouts_kit::plugin::{Call, Outcome, PodRef};
use hereabouts_kit::plugin::{Plugin, create_pods, flat_file};
use hereabouts_kit::{Process, TestNamespace, cni_bin_dir, free_port};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

pub const NODES: usize = 10;

/// The systems a run can compare, in the order the report shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Kind {
    #[serde(rename = "hereabouts")]
    Hereabouts,
    /// whereabouts v0.9.3 (`e2e/tools/versions.env`), the kit's own.
    #[serde(rename = "whereabouts")]
    Whereabouts,
    /// The newest whereabouts the Go module proxy serves
    /// (`e2e/tools/peers/versions.env`), default mode.
    #[serde(rename = "whereabouts-0.9.4")]
    Whereabouts094,
    /// The same release in its fast mode: `node_slice_size`, with its
    /// node-slice controller handing each node a slice of the range.
    #[serde(rename = "whereabouts-0.9.4-slices")]
    Whereabouts094Slices,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Hereabouts,
        Kind::Whereabouts,
        Kind::Whereabouts094,
        Kind::Whereabouts094Slices,
    ];

    /// The name `--systems=` takes and the JSON records.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hereabouts => "hereabouts",
            Kind::Whereabouts => "whereabouts",
            Kind::Whereabouts094 => "whereabouts-0.9.4",
            Kind::Whereabouts094Slices => "whereabouts-0.9.4-slices",
        }
    }

    /// The name the tables and the plot show.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Hereabouts => "hereabouts",
            Kind::Whereabouts => "whereabouts 0.9.3",
            Kind::Whereabouts094 => "whereabouts 0.9.4",
            Kind::Whereabouts094Slices => "whereabouts 0.9.4 node slices",
        }
    }

    /// The prefix of the system's namespace.
    pub fn namespace_prefix(self) -> &'static str {
        match self {
            Kind::Hereabouts => "bench-here",
            Kind::Whereabouts => "bench-where",
            Kind::Whereabouts094 => "bench-wa094",
            Kind::Whereabouts094Slices => "bench-wa094s",
        }
    }

    /// A whereabouts release: capped phases, no hereabouts controller.
    pub fn is_whereabouts(self) -> bool {
        self != Kind::Hereabouts
    }

    /// Needs the peers of `e2e/tools/peers` built.
    pub fn is_extra_peer(self) -> bool {
        matches!(self, Kind::Whereabouts094 | Kind::Whereabouts094Slices)
    }
}

/// The binaries of `e2e/tools/peers/build.sh` (its printed folder).
pub const PEER_PLUGIN: &str = "whereabouts-v0.9.4";
pub const PEER_SLICE_CONTROLLER: &str = "whereabouts-v0.9.4-node-slice-controller";
pub const PEER_SLICE_CRD: &str = "whereabouts-v0.9.4-nodeslicepools-crd.yaml";

/// A system under test: its namespace, configuration and binaries.
pub struct Target {
    pub kind: Kind,
    pub ns: TestNamespace,
    pub client: Client,
    plugin: Plugin,
    flat_file: PathBuf,
    pub controller: Option<Process>,
    pub controller_port: u16,
    /// One node agent per simulated node (unless `--direct`), killed when dropped.
    pub agents: Vec<Process>,
    /// The storm's attachments, for the re-creation to delete.
    pub storm_calls: Vec<Call>,
    /// `enable_overlapping_ranges` in every network's configuration
    /// (`--no-overlapping` sets it false: no OverlappingRangeIPReservation
    /// per address, for any system).
    pub overlapping: bool,
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
    /// Sets up `kind` in `ns`: the flat configuration file every plugin
    /// reads its kubeconfig from (whereabouts refuses to run without one);
    /// for hereabouts a release controller scoped to the namespace, for
    /// whereabouts' node-slice mode its node-slice controller, told to keep
    /// its NodeSlicePools in the namespace. `peers` is the folder
    /// `e2e/tools/peers/build.sh` printed (the v0.9.4 binaries).
    pub async fn new(
        kind: Kind,
        ns: TestNamespace,
        client: Client,
        bin_dir: &Path,
        peers: Option<&Path>,
        with_agents: bool,
    ) -> anyhow::Result<Self> {
        let flat_file = flat_file("bench", &ns.name, &ns.kubeconfig()?)?;
        let admin_kubeconfig = hereabouts_kit::kubeconfig_path().display().to_string();
        let peer = |name: &str| -> anyhow::Result<PathBuf> {
            let dir = peers.ok_or_else(|| {
                anyhow::anyhow!("{} needs e2e/tools/peers/build.sh's binaries", kind.name())
            })?;
            Ok(dir.join(name))
        };
        let (plugin, controller, controller_port) = match kind {
            Kind::Whereabouts => (cni_bin_dir().join("whereabouts"), None, 0),
            Kind::Whereabouts094 => (peer(PEER_PLUGIN)?, None, 0),
            Kind::Whereabouts094Slices => {
                // Its manifest (doc/crds/node-slice-controller.yaml) runs it
                // with WHEREABOUTS_NAMESPACE from the downward API and an
                // in-cluster account; here the kit's admin kubeconfig, so
                // no RBAC is in the way.
                let process = Process::spawn(
                    &format!("{}-node-slice-controller", ns.name),
                    &peer(PEER_SLICE_CONTROLLER)?,
                    &["--kubeconfig".to_owned(), admin_kubeconfig.clone()],
                    &[("WHEREABOUTS_NAMESPACE", ns.name.clone())],
                )?;
                (peer(PEER_PLUGIN)?, Some(process), 0)
            }
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
                        ("KUBECONFIG", admin_kubeconfig.clone()),
                        ("RUST_LOG", log_filter()),
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
        let mut plugin = Plugin::new(plugin, &ns.name);
        let mut agents = Vec::new();
        if with_agents && kind == Kind::Hereabouts {
            let dir = hereabouts_kit::local_dir()
                .join("bench")
                .join("agents")
                .join(&ns.name);
            std::fs::create_dir_all(&dir)?;
            let kubeconfig = ns.kubeconfig()?.display().to_string();
            for node in 0..NODES {
                let node = format!("bench-node-{node}");
                let socket = dir.join(format!("{node}.sock"));
                let args: Vec<String> = [
                    "--agent-only",
                    "--agent-socket",
                    &socket.display().to_string(),
                    "--kubeconfig",
                    &kubeconfig,
                    "--namespace",
                    &ns.name,
                    "--node-name",
                    &node,
                ]
                .iter()
                .map(ToString::to_string)
                .collect();
                agents.push(Process::spawn(
                    &format!("{}-agent-{node}", ns.name),
                    &bin_dir.join("hereabouts-install"),
                    &args,
                    &[("RUST_LOG", log_filter())],
                )?);
                hereabouts_kit::eventually("agent socket", 30, || async {
                    std::os::unix::net::UnixStream::connect(&socket)
                        .is_ok()
                        .then_some(())
                })
                .await?;
            }
            plugin.agents = Some(dir);
        }
        let target = Target {
            kind,
            plugin,
            ns,
            client,
            flat_file,
            controller,
            controller_port,
            agents,
            storm_calls: Vec::new(),
            overlapping: true,
        };
        if target.kind == Kind::Hereabouts {
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

    /// The node agents' pids (hereabouts with agents; none otherwise).
    pub fn agent_pids(&self) -> Vec<u32> {
        self.agents.iter().map(Process::id).collect()
    }

    /// The controller's name and process id, while it runs.
    pub fn controller_pid(&self) -> Option<(&'static str, u32)> {
        let name = match self.kind {
            Kind::Hereabouts => "hereabouts-controller",
            _ => "node-slice-controller",
        };
        self.controller.as_ref().map(|p| (name, p.id()))
    }

    /// For the node-slice mode: a NetworkAttachmentDefinition of each
    /// network in the namespace (what the node-slice controller reads), then
    /// a wait until its NodeSlicePool gives every simulated node a slice.
    /// Nothing for the other systems.
    pub async fn prepare(&self, networks: &[Network]) -> anyhow::Result<()> {
        if self.kind != Kind::Whereabouts094Slices {
            return Ok(());
        }
        let nads: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns.name, &nad_resource());
        let pools: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns.name, &slice_pool_resource());
        for network in networks {
            let nad: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": network.name},
                "spec": {"config": self.config(network)},
            }))?;
            nads.create(&PostParams::default(), &nad).await?;
        }
        for network in networks {
            let wanted: Vec<String> = (0..NODES).map(|n| format!("bench-node-{n}")).collect();
            let assigned = hereabouts_kit::eventually(
                &format!(
                    "NodeSlicePool {}/{} with a slice for each bench node",
                    self.ns.name, network.name
                ),
                60,
                || async {
                    let pool = pools.get_opt(&network.name).await.ok()??;
                    let nodes: Vec<String> = pool.data["status"]["allocations"]
                        .as_array()?
                        .iter()
                        .filter_map(|a| a["nodeName"].as_str().map(str::to_owned))
                        .collect();
                    wanted.iter().all(|w| nodes.contains(w)).then_some(nodes)
                },
            )
            .await;
            if assigned.is_err() {
                anyhow::bail!(
                    "whereabouts' node-slice controller gave not every one of the {NODES} bench nodes a slice of {} (node_slice_size {}) within 60 s: its log is .local/logs/{}-node-slice-controller.log; it hands out one slice per Node object of the cluster, so a cluster with more Nodes than slices leaves some without, and it syncs no NAD while another whereabouts NAD of the cluster has the same network_name and another range",
                    network.range,
                    network.slice,
                    self.ns.name
                );
            }
        }
        Ok(())
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

    /// The `network_name` this system's configuration of `network` has.
    /// Only the node-slice mode names its networks: its node-slice
    /// controller compares every pair of whereabouts NADs of the cluster
    /// with the same `network_name` (unset is one name too) and refuses to
    /// sync any of them when their ranges differ, so the runs' three
    /// networks need names.
    fn network_name<'a>(&self, network: &'a Network) -> Option<&'a str> {
        (self.kind == Kind::Whereabouts094Slices).then_some(network.name.as_str())
    }

    /// The network configuration (the same for every system but `type`,
    /// and `node_slice_size` for the node-slice mode; with
    /// `enable_overlapping_ranges: false` for all under `--no-overlapping`).
    pub fn config(&self, network: &Network) -> String {
        let mut ipam = serde_json::json!({
            "type": if self.kind.is_whereabouts() { "whereabouts" } else { "hereabouts" },
            "range": network.range,
            "configuration_path": self.flat_file,
        });
        if let Some((start, end)) = &network.start_end {
            ipam["range_start"] = start.clone().into();
            ipam["range_end"] = end.clone().into();
        }
        if self.kind == Kind::Whereabouts094Slices {
            ipam["node_slice_size"] = network.slice.into();
        }
        if !self.overlapping {
            ipam["enable_overlapping_ranges"] = false.into();
        }
        if let Some(name) = self.network_name(network) {
            ipam["network_name"] = name.into();
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

    /// Runs `command` for every pod over `networks` (interfaces `net1`,
    /// `net2`, ...), each pod's calls one after another as Multus makes
    /// them; outcomes per pod, in `networks`' order.
    pub async fn run_attachments(
        &self,
        command: &str,
        networks: &[Network],
        calls: &[Call],
        inflight: usize,
        cap: Option<Duration>,
    ) -> Vec<Vec<Outcome>> {
        let attachments: Vec<(String, String)> = networks
            .iter()
            .enumerate()
            .map(|(i, n)| (self.config(n), format!("net{}", i + 1)))
            .collect();
        self.plugin
            .run_attachments(command, &attachments, calls, inflight, cap)
            .await
    }

    /// `VERSION`: only the process start-up and the answer.
    pub async fn version(&self) -> Outcome {
        self.plugin.version().await
    }

    /// Every allocation of `network`'s pools in this namespace (all shards,
    /// and whereabouts' per-node pools of the node-slice mode, whose range
    /// is the node's slice), as (address, podref). hereabouts' resting
    /// entries (an address held for a pod that went, or cooling after a
    /// release) belong to no attachment and are left out:
    /// [`Target::pool_resting`] counts them.
    pub async fn pool_allocations(
        &self,
        network: &Network,
    ) -> anyhow::Result<Vec<(IpAddr, String)>> {
        let pools: Api<IPPool> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut out = Vec::new();
        for pool in pools.list(&ListParams::default()).await? {
            let Some(cidr) = within(network, &pool.spec.range) else {
                continue;
            };
            for (key, a) in &pool.spec.allocations {
                if hereabouts_core::ledger::resting_until(&a.id).is_some() {
                    continue;
                }
                if let Some(ip) = key.parse::<u128>().ok().and_then(|o| cidr.ip_at(o)) {
                    out.push((ip, a.podref.clone()));
                }
            }
        }
        Ok(out)
    }

    /// hereabouts' resting entries in `network`'s pools: addresses held for
    /// a pod that went or cooling after a release, each until a time it
    /// names (no leak while it lasts; gone once it ended).
    pub async fn pool_resting(&self, network: &Network) -> anyhow::Result<usize> {
        let pools: Api<IPPool> = Api::namespaced(self.client.clone(), &self.ns.name);
        Ok(pools
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| within(network, &p.spec.range).is_some())
            .flat_map(|p| p.spec.allocations.values())
            .filter(|a| hereabouts_core::ledger::resting_until(&a.id).is_some())
            .count())
    }

    /// OverlappingRangeIPReservations of `network`'s addresses (named after
    /// the address, after `<network_name>-` for a named network: the same
    /// rule for every system).
    pub async fn reservations(&self, network: &Network) -> anyhow::Result<usize> {
        let cidr: hereabouts_core::Cidr = network.range.parse()?;
        let api: Api<OverlappingRangeIPReservation> =
            Api::namespaced(self.client.clone(), &self.ns.name);
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(|r| {
                hereabouts_core::reservation_address(self.network_name(network), &r.name_any())
            })
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
        for pool in list.items.iter().filter(|p| {
            p.data["spec"]["range"]
                .as_str()
                .is_some_and(|r| within(network, r).is_some())
        }) {
            largest = largest.max(serde_json::to_vec(pool)?.len());
            objects += 1;
        }
        Ok((largest, objects))
    }
}

/// A pool's range as a CIDR, when it is `network`'s range or a part of it
/// (a node's slice).
fn within(network: &Network, range: &str) -> Option<hereabouts_core::Cidr> {
    let outer: hereabouts_core::Cidr = network.range.parse().ok()?;
    let inner: hereabouts_core::Cidr = range.parse().ok()?;
    (inner.prefix_len() >= outer.prefix_len() && outer.contains(inner.network())).then_some(inner)
}

fn nad_resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "k8s.cni.cncf.io/v1".to_owned(),
        kind: "NetworkAttachmentDefinition".to_owned(),
        plural: "network-attachment-definitions".to_owned(),
    }
}

fn slice_pool_resource() -> ApiResource {
    ApiResource {
        group: "whereabouts.cni.cncf.io".to_owned(),
        version: "v1alpha1".to_owned(),
        api_version: "whereabouts.cni.cncf.io/v1alpha1".to_owned(),
        kind: "NodeSlicePool".to_owned(),
        plural: "nodeslicepools".to_owned(),
    }
}

/// Node objects for the simulated nodes (`bench-node-N`), created if
/// missing: whereabouts' node-slice controller gives a slice to each Node
/// object, and every system gets the same nodes. No kubelet runs them (the
/// kit's controller manager runs no node lifecycle or pod GC controller,
/// so nothing evicts the pods bound to them).
pub async fn ensure_nodes(client: &Client) -> anyhow::Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for n in 0..NODES {
        let node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("bench-node-{n}"), "labels": {"hereabouts.dev/bench": "true"}}
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Applies the NodeSlicePool CRD of the whereabouts release the peers were
/// built from (copied by `e2e/tools/peers/build.sh`) and waits until it is
/// served.
pub async fn install_slice_crd(client: &Client, peers: &Path) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let path = peers.join(PEER_SLICE_CRD);
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("hereabouts-bench").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let established = kube::runtime::wait::conditions::is_crd_established();
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(api, &name, established),
    )
    .await
    .map_err(|_| anyhow::anyhow!("CRD {name} not established within 30 s"))??;
    Ok(())
}

/// A network (the NAD's `ipam` ranges) every system is given.
#[derive(Clone, Debug, Serialize)]
pub struct Network {
    pub name: String,
    pub range: String,
    pub start_end: Option<(String, String)>,
    /// `node_slice_size` for whereabouts' node-slice mode (which then
    /// ignores `range_start`/`range_end`: each node's pool is its slice's
    /// usable addresses).
    pub slice: &'static str,
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

/// The controller's and the agents' log filter: info, or
/// `HB_BENCH_RUST_LOG` (e.g. `debug`, to time one ADD from their logs).
fn log_filter() -> String {
    std::env::var("HB_BENCH_RUST_LOG").unwrap_or_else(|_| "info".to_owned())
}
