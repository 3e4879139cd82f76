//! The test bed of one scenario: its namespace (pools, reservations, Lease,
//! claims and pods all there), the NADs of its networks, its controller
//! replicas, and the plugins spawned as a runtime spawns them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hereabouts_api::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use hereabouts_kit::plugin::{Batch, Call, Outcome, Plugin, PodRef, create_pods, flat_file};
use hereabouts_kit::{Controller, Kit, TestNamespace, cni_bin_dir, local_dir};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

/// How big and how long: the quick matrix (`make test`) or the full one.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: &'static str,
    pub runs: usize,
    /// ADDs in a storm, and addresses in its (exact-fit) pool.
    pub storm: usize,
    pub replicas: usize,
    /// How long a runtime keeps retrying failed ADDs after a fault.
    pub recover_s: u64,
    /// How long the pools may stay unchanged after the last DEL before what
    /// is left counts as leaked.
    pub drain_s: u64,
    /// The controllers' `--gc-grace`, `--gc-schedule`, `--hold-released`,
    /// `--release-cooldown`.
    pub gc_grace: &'static str,
    pub gc_schedule: &'static str,
    pub hold_released: Duration,
    pub release_cooldown: Duration,
    /// The plugin's `request_timeout`.
    pub request_timeout: &'static str,
}

impl Settings {
    pub fn quick() -> Self {
        Settings {
            mode: "quick",
            runs: 2,
            storm: 30,
            replicas: 2,
            recover_s: 60,
            drain_s: 15,
            gc_grace: "2s",
            gc_schedule: "*/2 * * * * *",
            hold_released: Duration::from_secs(2),
            release_cooldown: Duration::from_secs(2),
            request_timeout: "10s",
        }
    }

    pub fn full() -> Self {
        Settings {
            mode: "full",
            runs: 10,
            storm: 150,
            replicas: 3,
            recover_s: 120,
            drain_s: 30,
            ..Settings::quick()
        }
    }
}

/// What every scenario shares: the client and the simulated nodes (Node
/// objects made by `e2e/node.sh`, removed at the end).
pub struct Shared {
    pub client: Client,
    pub nodes: Vec<String>,
    holder: TestNamespace,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

pub const NODES: usize = 3;

impl Shared {
    pub async fn new(kit: &Kit, _settings: &Settings) -> anyhow::Result<Self> {
        let holder = kit.namespace("faults-nodes").await?;
        let mut nodes = Vec::new();
        for i in 0..NODES {
            nodes.push(
                holder
                    .node(&hereabouts_kit::unique(&format!("fn{i}")))
                    .await?,
            );
        }
        Ok(Shared {
            client: kit.client.clone(),
            nodes,
            holder,
        })
    }

    /// A node of its own for one run (the scenario that deletes it).
    pub async fn extra_node(&self, prefix: &str) -> anyhow::Result<String> {
        Ok(self.holder.node(&hereabouts_kit::unique(prefix)).await?)
    }
}

/// Which IPAM plugin a call goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipam {
    Hereabouts,
    Whereabouts,
}

/// A network of the scenario: a NAD in its namespace.
#[derive(Clone, Debug)]
pub struct Net {
    pub name: String,
    pub range: String,
    /// range_start and range_end: exactly the addresses the storm needs.
    pub first_last: Option<(Ipv4Addr, Ipv4Addr)>,
    pub network_name: Option<String>,
}

impl Net {
    /// `count` addresses from `base`+1 in `range` (an exact fit).
    pub fn exact(name: &str, range: &str, base: Ipv4Addr, count: usize) -> Self {
        let first = u32::from(base) + 1;
        let last = first + u32::try_from(count).unwrap_or(1).saturating_sub(1);
        Net {
            name: name.to_owned(),
            range: range.to_owned(),
            first_last: Some((Ipv4Addr::from(first), Ipv4Addr::from(last))),
            network_name: None,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (Some((first, last)), IpAddr::V4(v4)) = (self.first_last, ip) else {
            return false;
        };
        (first..=last).contains(&v4)
    }
}

/// One scenario's namespace, replicas and plugins.
pub struct Bed {
    pub client: Client,
    pub ns: TestNamespace,
    pub settings: Settings,
    pub nodes: Vec<String>,
    pub replicas: Vec<Controller>,
    started: usize,
    hereabouts: Plugin,
    whereabouts: Plugin,
    flat_file: PathBuf,
    kubeconfig: PathBuf,
}

impl std::fmt::Debug for Bed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bed")
            .field("namespace", &self.ns.name)
            .finish_non_exhaustive()
    }
}

impl Bed {
    /// A namespace for `scenario`, the NADs of `nets`, and the replicas.
    pub async fn new(
        kit: &Kit,
        shared: &Shared,
        settings: &Settings,
        scenario: &str,
        nets: &[Net],
    ) -> anyhow::Result<Self> {
        let ns = kit.namespace(&format!("f-{scenario}")).await?;
        // Controllers and plugins act as a service account (the API
        // server's in-flight limits exempt the kit's admin). Both plugins
        // read its kubeconfig (whose context namespace keeps the pools in
        // this namespace) from the flat file.
        let kubeconfig = ns.service_account(&shared.client, "hereabouts").await?;
        let flat_file = flat_file("faults", &ns.name, &kubeconfig)?;
        let mut bed = Bed {
            client: shared.client.clone(),
            hereabouts: Plugin::new(PathBuf::from(env!("CARGO_BIN_EXE_hereabouts")), &ns.name),
            whereabouts: Plugin::new(cni_bin_dir().join("whereabouts"), &ns.name),
            ns,
            settings: settings.clone(),
            nodes: shared.nodes.clone(),
            replicas: Vec::new(),
            started: 0,
            flat_file,
            kubeconfig,
        };
        let nads: Api<NetworkAttachmentDefinition> =
            Api::namespaced(bed.client.clone(), &bed.ns.name);
        for net in nets {
            let config = bed.config(net, Ipam::Hereabouts);
            nads.create(
                &PostParams::default(),
                &NetworkAttachmentDefinition::new(
                    &net.name,
                    NetworkAttachmentDefinitionSpec { config },
                ),
            )
            .await?;
        }
        for _ in 0..settings.replicas {
            bed.start_replica()?;
        }
        for r in &bed.replicas {
            r.wait_ready().await?;
        }
        bed.leader().await?;
        Ok(bed)
    }

    /// The network configuration a runtime hands the plugin.
    pub fn config(&self, net: &Net, ipam: Ipam) -> String {
        let mut config = serde_json::json!({
            "type": match ipam { Ipam::Hereabouts => "hereabouts", Ipam::Whereabouts => "whereabouts" },
            "range": net.range,
            "configuration_path": self.flat_file,
        });
        if let Some((first, last)) = net.first_last {
            config["range_start"] = first.to_string().into();
            config["range_end"] = last.to_string().into();
        }
        if let Some(n) = &net.network_name {
            config["network_name"] = n.clone().into();
        }
        if ipam == Ipam::Hereabouts {
            config["request_timeout"] = self.settings.request_timeout.into();
        }
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net.name,
            "type": "macvlan",
            "master": "eth1",
            "ipam": config,
        })
        .to_string()
    }

    /// One more replica (a new process; the log gets its own name).
    pub fn start_replica(&mut self) -> anyhow::Result<()> {
        let grace = self.settings.gc_grace;
        let schedule = self.settings.gc_schedule;
        let hold = format!("{}ms", self.settings.hold_released.as_millis());
        let cooldown = format!("{}ms", self.settings.release_cooldown.as_millis());
        let replica = Controller::start_as(
            Path::new(env!("CARGO_BIN_EXE_hereabouts-controller")),
            &self.ns,
            &format!("r{}", self.started),
            &[
                "--gc-grace",
                grace,
                "--gc-schedule",
                schedule,
                "--hold-released",
                &hold,
                "--release-cooldown",
                &cooldown,
            ],
            &self.kubeconfig,
        )?;
        self.started += 1;
        self.replicas.push(replica);
        Ok(())
    }

    /// Brings the replicas back to the configured number and waits until
    /// they serve and one leads.
    pub async fn restore_replicas(&mut self) -> anyhow::Result<()> {
        self.replicas.retain_mut(|r| r.process.running());
        while self.replicas.len() < self.settings.replicas {
            self.start_replica()?;
        }
        for r in &self.replicas {
            r.wait_ready().await?;
        }
        self.leader().await?;
        Ok(())
    }

    /// The index of the leading replica (waits up to 30 s for one).
    pub async fn leader(&mut self) -> anyhow::Result<usize> {
        let client = self.client.clone();
        let ns = self.ns.name.clone();
        let pids: Vec<u32> = self.replicas.iter().map(|r| r.process.id()).collect();
        Ok(hereabouts_kit::eventually("a leading replica", 30, || {
            let (client, ns, pids) = (client.clone(), ns.clone(), pids.clone());
            async move {
                let pid = hereabouts_kit::leader_pid(&client, &ns).await?;
                pids.iter().position(|p| *p == pid)
            }
        })
        .await?)
    }

    /// The leader's log file, for the evidence of a failure.
    pub fn replica_logs(&self) -> Vec<PathBuf> {
        self.replicas
            .iter()
            .map(|r| {
                local_dir()
                    .join("logs")
                    .join(format!("{}.log", r.process.name))
            })
            .collect()
    }

    /// Pod objects `<prefix>-<i>` spread over the nodes.
    pub async fn pods(
        &self,
        prefix: &str,
        count: usize,
        metadata: &serde_json::Value,
        spec: &serde_json::Value,
    ) -> anyhow::Result<Vec<PodRef>> {
        let pods: Vec<(String, String)> = (0..count)
            .map(|i| {
                (
                    format!("{prefix}-{i}"),
                    self.nodes[i % self.nodes.len()].clone(),
                )
            })
            .collect();
        Ok(create_pods(&self.client, &self.ns.name, &pods, metadata, spec).await?)
    }

    /// Runs `command` for `calls` through `ipam`, all at once.
    pub async fn cni(
        &self,
        command: &str,
        net: &Net,
        ipam: Ipam,
        calls: &[Call],
        batch: &Batch,
    ) -> Vec<Outcome> {
        let plugin = match ipam {
            Ipam::Hereabouts => &self.hereabouts,
            Ipam::Whereabouts => &self.whereabouts,
        };
        plugin
            .run_batch(command, &self.config(net, ipam), calls, batch)
            .await
    }

    /// Deletes pods at once, with no grace (what the pod GC and
    /// `kubectl delete --force` do); a pod already gone is fine.
    pub async fn force_delete(&self, pods: &[PodRef]) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns.name);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        for pod in pods {
            match api.delete(&pod.name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes every pod of the namespace (finalizers dropped first) and
    /// waits until they are gone.
    pub async fn remove_all_pods(&self) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns.name);
        for pod in api.list(&ListParams::default()).await? {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        api.delete_collection(&params, &ListParams::default())
            .await?;
        hereabouts_kit::eventually("every pod gone", 60, || async {
            api.list(&ListParams::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(drop)
        })
        .await?;
        Ok(())
    }
}
