//! The scenarios of issue #7, each run for one system at a time.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hereabouts_api::{
    IPAllocation, IPPool, IPPoolSpec, OverlappingRangeIPReservation,
    OverlappingRangeIPReservationSpec,
};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use serde::Serialize;

use crate::apiserver::Requests;
use crate::cpu;
use crate::plugin::{Call, Kind, Network, Outcome, Target, audit};
use crate::report::{Floor, Phase, PoolWrite, ScaleRun, ScaleStep, Stats};

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub mode: String,
    /// ADDs in the storm, and addresses in its pool.
    pub storm: usize,
    /// Plugin processes alive at once (both systems alike).
    pub inflight: usize,
    pub scale_steps: usize,
    pub scale_step: usize,
    /// Single ADDs timed at each scale step.
    pub probes: usize,
    pub idle: usize,
    pub floor: usize,
    /// Replaces of one IPPool timed per size in the floor's pool writes.
    pub pool_writes: usize,
    /// Longest a whereabouts phase may run before what still runs is
    /// killed and counted.
    pub whereabouts_cap_s: u64,
    /// How long the leak count waits for releases that make no progress.
    pub drain_s: u64,
    /// hereabouts' plugin served by one node agent per simulated node.
    pub agents: bool,
    /// `enable_overlapping_ranges` of every network (`--no-overlapping`).
    pub overlapping: bool,
    /// Many networks per pod: pods, and secondary networks each.
    pub multi_pods: usize,
    pub multi_networks: usize,
}

impl Settings {
    pub fn full() -> Self {
        Settings {
            mode: "full".to_owned(),
            storm: 1000,
            inflight: 1000,
            scale_steps: 10,
            scale_step: 6000,
            probes: 5,
            idle: 50,
            floor: 1000,
            pool_writes: 40,
            whereabouts_cap_s: 150,
            drain_s: 30,
            agents: false,
            overlapping: true,
            multi_pods: 128,
            multi_networks: 16,
        }
    }

    pub fn quick() -> Self {
        Settings {
            mode: "quick".to_owned(),
            storm: 100,
            inflight: 100,
            scale_steps: 3,
            scale_step: 300,
            probes: 3,
            idle: 10,
            floor: 200,
            pool_writes: 10,
            whereabouts_cap_s: 10,
            drain_s: 10,
            agents: false,
            overlapping: true,
            multi_pods: 20,
            multi_networks: 4,
        }
    }

    fn cap(&self, kind: Kind) -> Option<Duration> {
        kind.is_whereabouts()
            .then(|| Duration::from_secs(self.whereabouts_cap_s))
    }

    /// Every network a run uses (for the node-slice mode's NADs).
    pub fn networks(&self) -> Vec<Network> {
        let mut all = vec![
            self.storm_network(),
            Self::scale_network(),
            Self::idle_network(),
        ];
        all.extend(self.multi_networks());
        all
    }

    /// The many-networks scenario's networks: `multi-<i>`, a /23 each from
    /// 100.80.0.0 on (up to 32 of them), so 128 pods fit in the node-slice
    /// mode's /28 per node (14 usable addresses for a node's 13 pods; 32
    /// slices, as for the other networks).
    pub fn multi_networks(&self) -> Vec<Network> {
        (0..self.multi_networks.min(32))
            .map(|i| Network {
                name: format!("multi-{i}"),
                range: format!("100.80.{}.0/23", 2 * i),
                start_end: None,
                slice: "/28",
            })
            .collect()
    }

    /// A pool of exactly `storm` addresses: offsets 1..=storm. In
    /// whereabouts' node-slice mode, which ignores `range_start` and
    /// `range_end`, each node gets a /25 of the /20 (126 usable addresses for
    /// its 100 pods; 1,260 over the 10 nodes): the smallest slice that holds
    /// a node's share (32 slices: room for 22 other Node objects).
    pub fn storm_network(&self) -> Network {
        let last = u32::try_from(self.storm).unwrap_or(1000);
        let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0));
        Network {
            name: "storm".to_owned(),
            range: "100.64.0.0/20".to_owned(),
            start_end: Some((
                std::net::Ipv4Addr::from(base + 1).to_string(),
                std::net::Ipv4Addr::from(base + last).to_string(),
            )),
            slice: "/25",
        }
    }

    /// A /16. In the node-slice mode a /21 per node (2,046 usable
    /// addresses, 20,460 over the 10 nodes, far beyond what whereabouts
    /// reaches within its cap): 32 slices, so that up to 22 other Node
    /// objects in the cluster still leave one for each bench node.
    pub fn scale_network() -> Network {
        Network {
            name: "scale".to_owned(),
            range: "100.66.0.0/16".to_owned(),
            start_end: None,
            slice: "/21",
        }
    }

    /// A /24. In the node-slice mode a /29 per node (6 usable addresses for
    /// its 5 ADDs; 32 slices, as for the other networks).
    pub fn idle_network() -> Network {
        Network {
            name: "idle".to_owned(),
            range: "100.65.0.0/24".to_owned(),
            start_end: None,
            slice: "/29",
        }
    }
}

fn say(target: &Target, what: &str) {
    eprintln!("[bench] {:<24} {what}", target.kind.name());
}

fn live(calls: &[Call], outcomes: &[Outcome]) -> Vec<(String, IpAddr)> {
    calls
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.ok)
        .filter_map(|(c, o)| Some((c.pod.name.clone(), o.ip?)))
        .collect()
}

/// 1. Storm: every ADD at once over the simulated nodes, on a pool with
///    exactly as many addresses as ADDs.
pub async fn storm(settings: &Settings, target: &mut Target) -> anyhow::Result<Vec<Phase>> {
    let network = settings.storm_network();
    let pods = target.pods("storm", settings.storm).await?;
    let calls: Vec<Call> = pods.iter().map(|p| Call::new(p, 0)).collect();
    target.storm_calls = calls.clone();
    say(target, &format!("storm: {} ADDs at once", calls.len()));
    let api_before = Requests::read(&target.client).await;
    let cpu_before = cpu::Meter::read(target.controller_pid(), &target.agent_pids());
    let started = Instant::now();
    let outcomes = target
        .run(
            "ADD",
            &network,
            &calls,
            settings.inflight,
            settings.cap(target.kind),
        )
        .await;
    let wall = started.elapsed();
    let mut phase = Phase::new(target.kind, "storm", "add", &outcomes, wall);
    phase.cpu_s =
        cpu::Meter::read(target.controller_pid(), &target.agent_pids()).since(&cpu_before);
    phase.api_per_call = Requests::read(&target.client)
        .await
        .per_call_since(&api_before, outcomes.len());
    phase.cap_s = settings.cap(target.kind).map(|c| c.as_secs_f64());
    let audit = audit(target, &network, &live(&calls, &outcomes)).await?;
    phase.duplicates = Some(audit.duplicates);
    phase.missing_from_pool = Some(audit.missing_from_pool);
    phase.pool_allocations = Some(audit.pool_allocations);
    phase.controller_rss_kib = target.controller_rss_kib();
    phase.controller_metrics = target.controller_metrics().await;
    say(target, &phase.summary());
    say(target, &commits(&phase));
    Ok(vec![phase])
}

/// 2. Re-creation: DEL every storm attachment at once, then ADD as many new
///    pods at once; then DEL everything and count what the pools still hold.
pub async fn recreation(settings: &Settings, target: &mut Target) -> anyhow::Result<Vec<Phase>> {
    let network = settings.storm_network();
    let cap = settings.cap(target.kind);
    let old = target.storm_calls.clone();
    let new_pods = target.pods("again", settings.storm).await?;
    let new: Vec<Call> = new_pods.iter().map(|p| Call::new(p, 0)).collect();

    say(target, &format!("re-creation: {} DELs at once", old.len()));
    let api_before = Requests::read(&target.client).await;
    let cpu_before = cpu::Meter::read(target.controller_pid(), &target.agent_pids());
    let started = Instant::now();
    let dels = target
        .run("DEL", &network, &old, settings.inflight, cap)
        .await;
    let del_wall = started.elapsed();
    let cpu_between = cpu::Meter::read(target.controller_pid(), &target.agent_pids());
    let api_between = Requests::read(&target.client).await;
    say(target, &format!("re-creation: {} ADDs at once", new.len()));
    let add_started = Instant::now();
    let adds = target
        .run("ADD", &network, &new, settings.inflight, cap)
        .await;
    let add_wall = add_started.elapsed();
    let cpu_after = cpu::Meter::read(target.controller_pid(), &target.agent_pids());
    let total = started.elapsed();
    let api_after = Requests::read(&target.client).await;

    let mut del = Phase::new(target.kind, "recreation", "del", &dels, del_wall);
    del.cap_s = cap.map(|c| c.as_secs_f64());
    let mut add = Phase::new(target.kind, "recreation", "add", &adds, add_wall);
    add.cap_s = del.cap_s;
    del.cpu_s = cpu_between.since(&cpu_before);
    add.cpu_s = cpu_after.since(&cpu_between);
    del.api_per_call = api_between.per_call_since(&api_before, dels.len());
    add.api_per_call = api_after.per_call_since(&api_between, adds.len());
    let audit = audit(target, &network, &live(&new, &adds)).await?;
    add.duplicates = Some(audit.duplicates);
    add.missing_from_pool = Some(audit.missing_from_pool);
    add.pool_allocations = Some(audit.pool_allocations);
    add.total_wall_s = Some(total.as_secs_f64());
    add.controller_metrics = target.controller_metrics().await;
    say(target, &del.summary());
    say(target, &add.summary());
    say(target, &commits(&add));

    // Everything goes: the leak count is what the pools and reservations
    // still hold once the releases had time to land.
    say(target, "re-creation: DEL of everything");
    let started = Instant::now();
    let teardown = target
        .run("DEL", &network, &new, settings.inflight, cap)
        .await;
    let mut gone = Phase::new(
        target.kind,
        "recreation",
        "del-all",
        &teardown,
        started.elapsed(),
    );
    gone.cap_s = del.cap_s;
    let (allocations, reservations, drained) = drain(settings, target, &network).await?;
    gone.leaked_allocations = Some(allocations);
    gone.resting_allocations = Some(target.pool_resting(&network).await?);
    gone.leaked_reservations = Some(reservations);
    gone.drain_s = Some(drained.as_secs_f64());
    say(target, &gone.summary());
    Ok(vec![del, add, gone])
}

/// Longest the leak count waits for releases that still make progress.
const DRAIN_CAP: Duration = Duration::from_secs(600);

/// Waits until the pools of `network` and the namespace's reservations are
/// empty, or nothing has left them for `drain_s`, or [`DRAIN_CAP`] passed;
/// returns what is left and the wait. A controller still releasing is
/// waited for (at 60,000 allocations that takes longer than any fixed
/// wait short enough for a system that stopped releasing).
async fn drain(
    settings: &Settings,
    target: &Target,
    network: &Network,
) -> anyhow::Result<(usize, usize, Duration)> {
    let started = Instant::now();
    let mut last = (usize::MAX, usize::MAX);
    let mut progressed = started;
    loop {
        let left = (
            target.pool_allocations(network).await?.len(),
            target.reservations(network).await?,
        );
        if left != last {
            last = left;
            progressed = Instant::now();
        }
        if left == (0, 0)
            || progressed.elapsed() > Duration::from_secs(settings.drain_s)
            || started.elapsed() > DRAIN_CAP
        {
            return Ok((left.0, left.1, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 3. Many networks per pod: every pod at once, each with its networks
///    one after another as Multus calls them (`net1`, `net2`, ...); then
///    the DEL of everything and the leak count of every network.
pub async fn many_networks(settings: &Settings, target: &mut Target) -> anyhow::Result<Vec<Phase>> {
    let networks = settings.multi_networks();
    let cap = settings.cap(target.kind);
    let pods = target.pods("multi", settings.multi_pods).await?;
    let calls: Vec<Call> = pods.iter().map(|p| Call::new(p, 0)).collect();
    say(
        target,
        &format!(
            "many networks: {} pods at once, {} networks each",
            calls.len(),
            networks.len()
        ),
    );
    let api_before = Requests::read(&target.client).await;
    let cpu_before = cpu::Meter::read(target.controller_pid(), &target.agent_pids());
    let started = Instant::now();
    let per_pod = target
        .run_attachments("ADD", &networks, &calls, calls.len(), cap)
        .await;
    let wall = started.elapsed();
    let flat: Vec<Outcome> = per_pod.iter().flatten().cloned().collect();
    let mut add = Phase::new(target.kind, "networks", "add", &flat, wall);
    add.cap_s = cap.map(|c| c.as_secs_f64());
    add.cpu_s = cpu::Meter::read(target.controller_pid(), &target.agent_pids()).since(&cpu_before);
    add.api_per_call = Requests::read(&target.client)
        .await
        .per_call_since(&api_before, flat.len());
    let (mut duplicates, mut missing, mut allocations) = (0, 0, 0);
    for (i, network) in networks.iter().enumerate() {
        let outcomes: Vec<Outcome> = per_pod.iter().map(|o| o[i].clone()).collect();
        let audit = audit(target, network, &live(&calls, &outcomes)).await?;
        duplicates += audit.duplicates;
        missing += audit.missing_from_pool;
        allocations += audit.pool_allocations;
    }
    add.duplicates = Some(duplicates);
    add.missing_from_pool = Some(missing);
    add.pool_allocations = Some(allocations);
    add.controller_rss_kib = target.controller_rss_kib();
    say(target, &add.summary());

    say(target, "many networks: DEL of everything");
    let started = Instant::now();
    let dels = target
        .run_attachments("DEL", &networks, &calls, calls.len(), cap)
        .await;
    let flat: Vec<Outcome> = dels.into_iter().flatten().collect();
    let mut gone = Phase::new(target.kind, "networks", "del-all", &flat, started.elapsed());
    gone.cap_s = add.cap_s;
    let (mut leaked, mut resting, mut reservations, mut drained) = (0, 0, 0, Duration::ZERO);
    for network in &networks {
        let (a, r, d) = drain(settings, target, network).await?;
        leaked += a;
        reservations += r;
        drained += d;
        resting += target.pool_resting(network).await?;
    }
    gone.leaked_allocations = Some(leaked);
    gone.resting_allocations = Some(resting);
    gone.leaked_reservations = Some(reservations);
    gone.drain_s = Some(drained.as_secs_f64());
    say(target, &gone.summary());
    Ok(vec![add, gone])
}

/// 4. Scale: a /16 filled in steps; one ADD timed at each step (the median
///    of a few), the largest IPPool and the controller's RSS.
pub async fn scale(settings: &Settings, target: &mut Target) -> anyhow::Result<ScaleRun> {
    let network = Settings::scale_network();
    let cap = settings.cap(target.kind);
    let fill_started = Instant::now();
    let mut run = ScaleRun {
        system: target.kind,
        target_allocations: settings.scale_steps * settings.scale_step,
        cap_s: cap.map(|c| c.as_secs_f64()),
        ..ScaleRun::default()
    };
    let mut everyone: Vec<Call> = Vec::new();
    // Time spent waiting for a quiet control plane does not count
    // against the cap.
    let mut quiet_total = Duration::ZERO;
    for step in 0..=settings.scale_steps {
        let mut fill = Vec::new();
        let mut fill_wall = Duration::ZERO;
        if step > 0 {
            let filling = fill_started.elapsed().saturating_sub(quiet_total);
            let left = cap.map(|c| c.saturating_sub(filling));
            if left.is_some_and(|l| l.is_zero()) {
                run.capped = true;
                break;
            }
            let pods = target
                .pods(&format!("fill{step}"), settings.scale_step)
                .await?;
            let calls: Vec<Call> = pods.iter().map(|p| Call::new(p, 0)).collect();
            say(target, &format!("scale: step {step}: {} ADDs", calls.len()));
            let started = Instant::now();
            fill = target
                .run("ADD", &network, &calls, settings.inflight, left)
                .await;
            fill_wall = started.elapsed();
            everyone.extend(calls);
            if fill.iter().any(|o| o.capped || o.not_started) {
                run.capped = true;
            }
        }
        let probe_pods = target
            .pods(&format!("probe{step}"), settings.probes)
            .await?;
        // Every step is probed as step 0 is, on a control plane that has
        // taken the fill in: the probes measure an ADD beside that many
        // allocations, not the tail of the fill's burst.
        let (quiet_wait, _) = cpu::quiet().await;
        quiet_total += quiet_wait;
        let mut probes = Vec::new();
        for pod in &probe_pods {
            let call = Call::new(pod, 0);
            let outcome = target
                .run(
                    "ADD",
                    &network,
                    std::slice::from_ref(&call),
                    1,
                    Some(Duration::from_secs(30)),
                )
                .await;
            everyone.push(call);
            probes.extend(outcome);
        }
        let allocations = target.pool_allocations(&network).await?.len();
        let (largest, objects) = target.largest_pool_bytes(&network).await?;
        let probe_stats = Stats::of(probes.iter().filter(|o| o.ok).map(|o| o.latency));
        let step_record = ScaleStep {
            allocations,
            probe_ms: probes
                .iter()
                .filter(|o| o.ok)
                .map(|o| ms(o.latency))
                .collect(),
            probe_p50_ms: probe_stats.p50_ms,
            probe_failures: probes.iter().filter(|o| !o.ok).count(),
            largest_object_bytes: largest,
            objects,
            controller_rss_kib: target.controller_rss_kib(),
            fill_ok: fill.iter().filter(|o| o.ok).count(),
            fill_failed: fill.iter().filter(|o| !o.ok).count(),
            fill_wall_s: fill_wall.as_secs_f64(),
            quiet_wait_s: quiet_wait.as_secs_f64(),
        };
        say(
            target,
            &format!(
                "scale: {allocations} allocations, ADD p50 {:.1} ms (probed {:.1} s after the fill, once the control plane was quiet), largest IPPool {} KiB in {objects}, RSS {:?} KiB",
                step_record.probe_p50_ms,
                step_record.quiet_wait_s,
                largest / 1024,
                step_record.controller_rss_kib
            ),
        );
        run.steps.push(step_record);
        if run.capped {
            break;
        }
    }
    run.finish();
    say(
        target,
        &format!("scale: DEL of {} attachments", everyone.len()),
    );
    let started = Instant::now();
    let dels = target
        .run("DEL", &network, &everyone, settings.inflight, cap)
        .await;
    let mut teardown = Phase::new(target.kind, "scale", "del-all", &dels, started.elapsed());
    teardown.cap_s = cap.map(|c| c.as_secs_f64());
    let (allocations, reservations, drained) = drain(settings, target, &network).await?;
    teardown.leaked_allocations = Some(allocations);
    teardown.resting_allocations = Some(target.pool_resting(&network).await?);
    teardown.leaked_reservations = Some(reservations);
    teardown.drain_s = Some(drained.as_secs_f64());
    teardown.latencies_ms.clear();
    say(target, &teardown.summary());
    run.teardown = Some(teardown);
    Ok(run)
}

/// 5. Idle: ADDs one at a time, then DELs one at a time, then VERSION.
pub async fn idle(settings: &Settings, target: &mut Target) -> anyhow::Result<Vec<Phase>> {
    let network = Settings::idle_network();
    let pods = target.pods("idle", settings.idle).await?;
    let calls: Vec<Call> = pods.iter().map(|p| Call::new(p, 0)).collect();
    say(target, &format!("idle: {} ADDs one at a time", calls.len()));
    let mut adds = Vec::new();
    let api_before = Requests::read(&target.client).await;
    let started = Instant::now();
    for call in &calls {
        adds.extend(
            target
                .run("ADD", &network, std::slice::from_ref(call), 1, None)
                .await,
        );
    }
    let mut add = Phase::new(target.kind, "idle", "add", &adds, started.elapsed());
    add.api_per_call = Requests::read(&target.client)
        .await
        .per_call_since(&api_before, adds.len());
    let audit = audit(target, &network, &live(&calls, &adds)).await?;
    add.duplicates = Some(audit.duplicates);
    add.missing_from_pool = Some(audit.missing_from_pool);
    let mut dels = Vec::new();
    let started = Instant::now();
    for call in &calls {
        dels.extend(
            target
                .run("DEL", &network, std::slice::from_ref(call), 1, None)
                .await,
        );
    }
    let mut del = Phase::new(target.kind, "idle", "del", &dels, started.elapsed());
    let (allocations, reservations, drained) = drain(settings, target, &network).await?;
    del.leaked_allocations = Some(allocations);
    del.resting_allocations = Some(target.pool_resting(&network).await?);
    del.leaked_reservations = Some(reservations);
    del.drain_s = Some(drained.as_secs_f64());
    let mut versions = Vec::new();
    let started = Instant::now();
    for _ in 0..settings.idle {
        versions.push(target.version().await);
    }
    let version = Phase::new(target.kind, "idle", "version", &versions, started.elapsed());
    for p in [&add, &del, &version] {
        say(target, &p.summary());
    }
    Ok(vec![add, del, version])
}

/// 6. Floor: the API server alone creating and then updating small custom
///    objects, as many as the storm has ADDs, with the same concurrency,
///    from one client: what any IPAM that writes one object per allocation
///    and answers with one update can at best approach.
pub async fn floor(settings: &Settings, client: &Client, namespace: &str) -> anyhow::Result<Floor> {
    eprintln!(
        "[bench] floor: {} creates then {} updates, {} at a time",
        settings.floor, settings.floor, settings.inflight
    );
    let api: Api<OverlappingRangeIPReservation> = Api::namespaced(client.clone(), namespace);
    let object = |i: usize| OverlappingRangeIPReservation {
        metadata: ObjectMeta {
            name: Some(format!("floor-{i}")),
            ..Default::default()
        },
        spec: OverlappingRangeIPReservationSpec {
            containerid: format!("{i:064x}"),
            podref: format!("{namespace}/pod-{i}"),
            ifname: "net1".to_owned(),
        },
    };
    let timed = |fut: std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>| async move {
        let started = Instant::now();
        let ok = fut.await;
        Outcome {
            ok,
            latency: started.elapsed(),
            ..Outcome::default()
        }
    };
    let started = Instant::now();
    let creates: Vec<Outcome> = futures::stream::iter(0..settings.floor)
        .map(|i| {
            let api = api.clone();
            let o = object(i);
            timed(Box::pin(async move {
                api.create(&PostParams::default(), &o).await.is_ok()
            }))
        })
        .buffer_unordered(settings.inflight)
        .collect()
        .await;
    let create = Phase::new(
        Kind::Hereabouts,
        "floor",
        "create",
        &creates,
        started.elapsed(),
    );
    let started = Instant::now();
    let updates: Vec<Outcome> = futures::stream::iter(0..settings.floor)
        .map(|i| {
            let api = api.clone();
            timed(Box::pin(async move {
                let patch = serde_json::json!({"spec": {"ifname": "net2"}});
                api.patch(
                    &format!("floor-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .is_ok()
            }))
        })
        .buffer_unordered(settings.inflight)
        .collect()
        .await;
    let update = Phase::new(
        Kind::Hereabouts,
        "floor",
        "update",
        &updates,
        started.elapsed(),
    );
    let both = create.wall_s + update.wall_s;
    let pool_writes = pool_writes(settings, client, namespace).await?;
    let floor = Floor {
        objects: settings.floor,
        concurrency: settings.inflight,
        allocations_per_second: if both > 0.0 {
            settings.floor as f64 / both
        } else {
            0.0
        },
        create,
        update,
        pool_writes,
    };
    eprintln!(
        "[bench] floor: create {}, update {}: {:.0} create+update pairs/s",
        floor.create.summary(),
        floor.update.summary(),
        floor.allocations_per_second
    );
    Ok(floor)
}

/// Entry counts of the IPPools whose replace the floor times: one entry,
/// then an eighth, a quarter, half and all of a shard's 128 offsets.
const POOL_WRITE_ENTRIES: [usize; 5] = [1, 16, 32, 64, 128];

/// What one replace of an IPPool costs the API server as the object holds
/// more entries: every pool commit rewrites its shards whole, so this is
/// the part of an ADD's latency that grows as a shard fills (the scale
/// scenario's first probe writes a shard of a few entries, the later ones a
/// full one). One object per size, replaced one request at a time, each
/// replace changing one entry.
async fn pool_writes(
    settings: &Settings,
    client: &Client,
    namespace: &str,
) -> anyhow::Result<Vec<PoolWrite>> {
    let api: Api<IPPool> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    for entries in POOL_WRITE_ENTRIES {
        let allocations = (0..entries)
            .map(|i| {
                let entry = IPAllocation {
                    id: format!("{i:064x}"),
                    podref: format!("{namespace}/pod-{i}"),
                    ifname: "net1".to_owned(),
                };
                ((i + 1).to_string(), entry)
            })
            .collect();
        let mut pool = IPPool::new(
            &format!("floor-pool-{entries}"),
            IPPoolSpec {
                range: "100.67.0.0/24".to_owned(),
                allocations,
            },
        );
        pool = api.create(&PostParams::default(), &pool).await?;
        let mut latencies = Vec::new();
        for round in 0..settings.pool_writes {
            if let Some(first) = pool.spec.allocations.values_mut().next() {
                first.ifname = format!("net{}", round % 2 + 1);
            }
            let started = Instant::now();
            pool = api
                .replace(
                    &pool.metadata.name.clone().unwrap_or_default(),
                    &PostParams::default(),
                    &pool,
                )
                .await?;
            latencies.push(started.elapsed());
        }
        let stats = Stats::of(latencies.into_iter());
        out.push(PoolWrite {
            entries,
            replaces: settings.pool_writes,
            p50_ms: stats.p50_ms,
            p95_ms: stats.p95_ms,
        });
    }
    eprintln!(
        "[bench] floor: IPPool replace p50 by entries: {}",
        out.iter()
            .map(|w| format!("{}: {:.1} ms", w.entries, w.p50_ms))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// The controller's pool commits so far, in a line (empty for whereabouts).
fn commits(phase: &Phase) -> String {
    let m = &phase.controller_metrics;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let n = get("pool_commit_batch_size_count");
    if n == 0.0 {
        return String::new();
    }
    format!(
        "controller so far: {n} pool commits, mean batch {:.1}, mean commit {:.0} ms",
        get("pool_commit_batch_size_sum") / n,
        1000.0 * get("pool_commit_duration_seconds_sum") / n.max(1.0)
    )
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
