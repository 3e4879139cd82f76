//! The scenarios: how each sets up its networks, what fault strikes when,
//! how the runtime retries, and which invariants are checked after.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hereabouts_api::IPClaim;
use hereabouts_kit::Kit;
use hereabouts_kit::plugin::{Batch, Call, Outcome, PodRef, create_pods};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams};

use crate::bed::{Bed, Ipam, Net, Settings, Shared};
use crate::check::{self, Answer};
use crate::report::{Row, RunRecord};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillLeader,
    PauseLeader,
    RestartApiServer,
    RestartEtcd,
    Brownout,
    KillPlugins,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A storm with `Fault` striking once a fifth of it has answered.
    Storm(Fault),
    ControllersDown,
    /// Pods deleted with no DEL ever (`true`: with their Node).
    Orphans {
        with_node: bool,
    },
    Terminating,
    Recreated,
    Migration,
    Overlapping,
}

#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    kind: Kind,
}

/// Every scenario, most valuable first.
pub fn all() -> Vec<Scenario> {
    use Fault::*;
    [
        ("leader-kill", Kind::Storm(KillLeader)),
        ("leader-pause", Kind::Storm(PauseLeader)),
        ("apiserver-restart", Kind::Storm(RestartApiServer)),
        ("etcd-restart", Kind::Storm(RestartEtcd)),
        ("apiserver-429", Kind::Storm(Brownout)),
        ("plugin-kill", Kind::Storm(KillPlugins)),
        ("controllers-down", Kind::ControllersDown),
        ("force-delete", Kind::Orphans { with_node: false }),
        ("node-delete", Kind::Orphans { with_node: true }),
        ("terminating", Kind::Terminating),
        ("statefulset-readd", Kind::Recreated),
        ("whereabouts-migration", Kind::Migration),
        ("overlapping-ranges", Kind::Overlapping),
    ]
    .into_iter()
    .map(|(name, kind)| Scenario { name, kind })
    .collect()
}

const NETWORK_NAME: &str = "ovl";

fn nets(kind: Kind, settings: &Settings) -> Vec<Net> {
    let base = Ipv4Addr::new(100, 64, 0, 0);
    match kind {
        Kind::Overlapping => {
            // Two ranges of one network_name over the same addresses: only
            // the reservations keep them apart.
            let mut wide = Net::exact("ovl-wide", "100.64.0.0/23", base, settings.storm);
            let mut narrow = Net::exact("ovl-narrow", "100.64.0.0/24", base, settings.storm);
            wide.network_name = Some(NETWORK_NAME.to_owned());
            narrow.network_name = Some(NETWORK_NAME.to_owned());
            vec![wide, narrow]
        }
        _ => vec![Net::exact("faults", "100.64.0.0/24", base, settings.storm)],
    }
}

/// Runs `scenario` `settings.runs` times on one bed.
pub async fn run(scenario: &Scenario, shared: &Shared, settings: &Settings) -> Row {
    let started = Instant::now();
    let mut row = Row {
        scenario: scenario.name,
        ..Row::default()
    };
    let nets = nets(scenario.kind, settings);
    let kit = Kit {
        client: shared.client.clone(),
    };
    eprintln!("[faults] {}: setting up", scenario.name);
    let mut bed = match Bed::new(&kit, shared, settings, scenario.name, &nets).await {
        Ok(b) => b,
        Err(e) => {
            let mut rec = RunRecord::default();
            rec.violation(format!("set-up failed: {e:#}"));
            row.runs.push(rec);
            return row;
        }
    };
    for run in 0..settings.runs {
        eprintln!(
            "[faults] {}: run {}/{} (namespace {})",
            scenario.name,
            run + 1,
            settings.runs,
            bed.ns.name
        );
        let mut rec = RunRecord::default();
        let mut ctx = Ctx {
            bed: &mut bed,
            shared,
            nets: &nets,
            rec: &mut rec,
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (run as u64 + 1)),
            prefix: format!("r{run}"),
        };
        if let Err(e) = one_run(scenario.kind, &mut ctx).await {
            rec.violation(format!("the run could not finish: {e:#}"));
        }
        if let Err(e) = bed.restore_replicas().await {
            rec.violation(format!("replicas did not come back: {e:#}"));
        }
        if !rec.violations.is_empty() {
            let logs: Vec<String> = bed
                .replica_logs()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            eprintln!("[faults]     controller logs: {}", logs.join(" "));
        }
        eprintln!(
            "[faults] {}: run {} done: {} ADDs, {} failed, {} duplicates, {} lost, {} leaks, recovery {:?}",
            scenario.name,
            run + 1,
            rec.adds,
            rec.failed.values().sum::<usize>(),
            rec.duplicates,
            rec.lost,
            rec.leaks,
            rec.recovery
        );
        row.runs.push(rec);
        // Addresses released by DEL stay held for their pod names (or cool
        // down) this long: the next run's new names must not meet them.
        let rest = settings.hold_released.max(settings.release_cooldown);
        tokio::time::sleep(rest + Duration::from_secs(1)).await;
    }
    row.wall = started.elapsed();
    row
}

/// A small deterministic generator: a run's kills and delays repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, below: u64) -> Duration {
        Duration::from_millis(self.next() % below.max(1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One attachment as the runtime tracks it.
#[derive(Clone, Debug)]
struct Att {
    pod: PodRef,
    /// The sandbox: a retry with a new container ID bumps it.
    generation: u32,
    net: usize,
    ipam: Ipam,
    answer: Option<IpAddr>,
    last_error: Option<String>,
    /// Retries keep the container ID (else DEL, then a new sandbox).
    same_id_retry: bool,
    /// The range may really be full for it (its addresses wait for the GC).
    exhausted_ok: bool,
    live: bool,
}

impl Att {
    fn new(pod: PodRef, net: usize, ipam: Ipam) -> Self {
        Att {
            pod,
            generation: 0,
            net,
            ipam,
            answer: None,
            last_error: None,
            same_id_retry: false,
            exhausted_ok: false,
            live: true,
        }
    }

    fn call(&self) -> Call {
        Call::new(&self.pod, self.generation)
    }
}

struct Ctx<'a> {
    bed: &'a mut Bed,
    shared: &'a Shared,
    nets: &'a [Net],
    rec: &'a mut RunRecord,
    rng: Rng,
    prefix: String,
}

impl Ctx<'_> {
    fn network_name(&self) -> Option<&str> {
        self.nets[0].network_name.as_deref()
    }

    fn podref(&self, att: &Att) -> String {
        format!("{}/{}", self.bed.ns.name, att.pod.name)
    }

    /// Runs `command` for the attachments `idx` (grouped by network and
    /// plugin, all groups at once); outcomes in the order of `idx`.
    async fn cni(
        &self,
        command: &str,
        atts: &[Att],
        idx: &[usize],
        kills: &[Option<Duration>],
        done: &Arc<AtomicUsize>,
    ) -> Vec<Outcome> {
        let mut groups: Vec<((usize, Ipam), Vec<usize>)> = Vec::new();
        for (k, &i) in idx.iter().enumerate() {
            let key = (atts[i].net, atts[i].ipam);
            match groups.iter_mut().find(|(g, _)| *g == key) {
                Some((_, members)) => members.push(k),
                None => groups.push((key, vec![k])),
            }
        }
        let runs = groups.iter().map(|((net, ipam), members)| {
            let calls: Vec<Call> = members.iter().map(|&k| atts[idx[k]].call()).collect();
            let batch = Batch {
                inflight: calls.len(),
                kill_after: members
                    .iter()
                    .map(|&k| kills.get(k).copied().flatten())
                    .collect(),
                done: done.clone(),
                ..Batch::default()
            };
            let bed = &*self.bed;
            let net = &self.nets[*net];
            async move { bed.cni(command, net, *ipam, &calls, &batch).await }
        });
        let results = join_all(runs).await;
        let mut out = vec![Outcome::default(); idx.len()];
        for ((_, members), outcomes) in groups.iter().zip(results) {
            for (&k, o) in members.iter().zip(outcomes) {
                out[k] = o;
            }
        }
        out
    }

    /// Takes in ADD outcomes: answers, failures by code, and a violation
    /// for a failed hereabouts ADD whose code is not 11 (try again later).
    fn record_adds(&mut self, atts: &mut [Att], idx: &[usize], outcomes: &[Outcome]) {
        for (&i, o) in idx.iter().zip(outcomes) {
            let att = &mut atts[i];
            if o.killed {
                self.rec.killed += 1;
                att.answer = None;
                att.last_error = o.error.clone();
                continue;
            }
            self.rec.adds += 1;
            if o.ok {
                att.answer = o.ip;
                att.last_error = None;
                if o.ip.is_none() {
                    self.rec
                        .violation(format!("ADD of {} succeeded with no address", att.pod.name));
                }
                continue;
            }
            att.answer = None;
            att.last_error = o.error.clone();
            let label = match (att.ipam, o.code) {
                (Ipam::Whereabouts, c) => {
                    format!("whereabouts {}", c.map_or("none".into(), |c| c.to_string()))
                }
                (Ipam::Hereabouts, Some(c)) => c.to_string(),
                (Ipam::Hereabouts, None) => "none".to_owned(),
            };
            let count = self.rec.failed.entry(label.clone()).or_default();
            *count += 1;
            let first = *count == 1;
            let allowed = att.ipam == Ipam::Whereabouts
                || o.code == Some(11)
                || (att.exhausted_ok && o.code == Some(100));
            if first && !allowed {
                self.rec.violation(format!(
                    "failed ADD with CNI code {label} (transient faults must give 11), first: {} on {}: {}",
                    att.pod.name,
                    self.nets[att.net].name,
                    o.error.as_deref().unwrap_or("no message")
                ));
            }
        }
    }

    /// The storm: ADD for `idx` at once; `strike` runs once a fifth has
    /// answered (or 3 s passed) while the rest are in flight. Returns when
    /// the fault struck.
    async fn storm<F, Fut>(
        &mut self,
        atts: &mut [Att],
        idx: &[usize],
        kills: &[Option<Duration>],
        strike: F,
    ) -> anyhow::Result<Instant>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let done = Arc::new(AtomicUsize::new(0));
        let total = idx.len();
        let adds = self.cni("ADD", atts, idx, kills, &done);
        // Strike once a third of the storm's claims are filed, before the
        // allocator answered them all (or after 5 s, whatever happened).
        let claims: Api<IPClaim> = Api::namespaced(self.bed.client.clone(), &self.bed.ns.name);
        let before = claims.list(&ListParams::default()).await?.items.len();
        let fault = async {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                let filed = claims
                    .list(&ListParams::default())
                    .await
                    .map_or(0, |l| l.items.len().saturating_sub(before));
                if filed >= total.div_ceil(3) || done.load(Ordering::Relaxed) > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let in_flight = total - done.load(Ordering::Relaxed);
            let at = Instant::now();
            eprintln!(
                "[faults]     {:.2} s into the storm, {in_flight} of {total} ADDs in flight",
                started.elapsed().as_secs_f64()
            );
            strike().await.map(|()| at)
        };
        let (outcomes, fault) = tokio::join!(adds, fault);
        self.record_adds(atts, idx, &outcomes);
        fault
    }

    /// The runtime retries every attachment of `idx` with no answer (DEL
    /// and a new sandbox, or the same container ID again) until all are
    /// answered or `recover_s` passed; records the recovery since `since`.
    async fn settle(&mut self, atts: &mut [Att], idx: &[usize], since: Option<Instant>) {
        let deadline = Instant::now() + Duration::from_secs(self.bed.settings.recover_s);
        let mut exhausted_seen = false;
        loop {
            let pending: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| atts[i].live && atts[i].answer.is_none())
                .collect();
            if pending.is_empty() {
                if let Some(since) = since {
                    self.rec.recovery = Some(since.elapsed());
                }
                return;
            }
            let refused = pending.iter().any(|&i| {
                atts[i]
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("Exhausted"))
            });
            if refused && !exhausted_seen {
                exhausted_seen = true;
                self.describe_state("when an ADD was refused as exhausted")
                    .await;
            }
            if Instant::now() >= deadline {
                self.describe_state("when the retries gave up").await;
                let first = &atts[pending[0]];
                self.rec.violation(format!(
                    "{} ADDs still unanswered after {} s of retries (e.g. {}: {})",
                    pending.len(),
                    self.bed.settings.recover_s,
                    first.pod.name,
                    first.last_error.as_deref().unwrap_or("?")
                ));
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let renew: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|&i| !atts[i].same_id_retry)
                .collect();
            let done = Arc::new(AtomicUsize::new(0));
            self.cni("DEL", atts, &renew, &[], &done).await;
            for &i in &renew {
                atts[i].generation += 1;
            }
            let outcomes = self.cni("ADD", atts, &pending, &[], &done).await;
            self.record_adds(atts, &pending, &outcomes);
        }
    }

    /// Records what the API server holds now, as evidence.
    async fn describe_state(&mut self, when: &str) {
        match check::snapshot(&self.bed.client, &self.bed.ns.name, self.network_name()).await {
            Ok(snap) => self.rec.evidence(format!("{when}: {}", snap.describe())),
            Err(e) => self.rec.evidence(format!("{when}: no snapshot: {e:#}")),
        }
    }

    /// Invariants 1 and 2 for the live attachments, against the API server.
    async fn verify(&mut self, atts: &[Att]) -> anyhow::Result<()> {
        let snap =
            check::snapshot(&self.bed.client, &self.bed.ns.name, self.network_name()).await?;
        let answers: Vec<Answer> = atts
            .iter()
            .filter(|a| a.live)
            .filter_map(|a| {
                Some(Answer {
                    podref: self.podref(a),
                    ip: a.answer?,
                })
            })
            .collect();
        for a in &answers {
            if !self.nets.iter().any(|n| n.contains(a.ip)) {
                self.rec
                    .violation(format!("{} answered {} outside its ranges", a.podref, a.ip));
            }
        }
        let f = check::live(&snap, &answers);
        self.rec.duplicates += f.duplicates;
        self.rec.lost += f.lost;
        for d in f.details.iter().take(8) {
            self.rec.violation(d.clone());
        }
        if f.details.len() > 8 {
            self.rec
                .violation(format!("... and {} more", f.details.len() - 8));
        }
        Ok(())
    }

    /// DEL of everything (`kill_some`: a third of the DELs killed mid-call
    /// and retried with the same container ID), every pod removed, then
    /// invariant 3: nothing left once the releases and the GC had time.
    async fn teardown(&mut self, atts: &mut [Att], kill_some: bool) -> anyhow::Result<()> {
        let idx: Vec<usize> = (0..atts.len()).collect();
        let kills: Vec<Option<Duration>> = idx
            .iter()
            .map(|_| {
                (kill_some && self.rng.chance(33))
                    .then(|| Duration::from_millis(30) + self.rng.millis(300))
            })
            .collect();
        let done = Arc::new(AtomicUsize::new(0));
        let mut outcomes = self.cni("DEL", atts, &idx, &kills, &done).await;
        for _ in 0..5 {
            let again: Vec<usize> = idx.iter().copied().filter(|&k| !outcomes[k].ok).collect();
            if again.is_empty() {
                break;
            }
            let killed = again.iter().filter(|&&k| outcomes[k].killed).count();
            let failed: Vec<&Outcome> = again
                .iter()
                .map(|&k| &outcomes[k])
                .filter(|o| !o.killed)
                .collect();
            if let Some(o) = failed.first() {
                self.rec.violation(format!(
                    "{} DELs failed (code {:?}): {}",
                    failed.len(),
                    o.code,
                    o.error.as_deref().unwrap_or("?")
                ));
            }
            if killed > 0 {
                eprintln!("[faults]     {killed} DELs killed mid-call, retried");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let retried = self.cni("DEL", atts, &again, &[], &done).await;
            for (&k, o) in again.iter().zip(retried) {
                outcomes[k] = o;
            }
        }
        for a in atts.iter_mut() {
            a.live = false;
        }
        self.bed.remove_all_pods().await?;
        let quiet = Duration::from_secs(self.bed.settings.drain_s);
        let (allocations, reservations, claims, took, details) = check::drain(
            &self.bed.client,
            &self.bed.ns.name,
            self.network_name(),
            quiet,
        )
        .await?;
        self.rec.leaks += allocations + reservations;
        if allocations + reservations > 0 {
            self.rec.violation(format!(
                "leak: {allocations} allocations and {reservations} reservations ({claims} claims) left {:.0} s after DEL of everything (GC grace {}): {}",
                took.as_secs_f64(),
                self.bed.settings.gc_grace,
                details.join("; ")
            ));
        } else if claims > 0 {
            self.rec.violation(format!(
                "{claims} IPClaims left after DEL of everything and the pods' deletion"
            ));
        }
        Ok(())
    }

    async fn pods(&self, prefix: &str, count: usize) -> anyhow::Result<Vec<PodRef>> {
        let none = serde_json::json!({});
        self.bed
            .pods(&format!("{}-{prefix}", self.prefix), count, &none, &none)
            .await
    }

    /// Appends attachments for `pods` (network and plugin by index) to
    /// `atts`; their indices.
    fn attach(
        atts: &mut Vec<Att>,
        pods: Vec<PodRef>,
        pick: impl Fn(usize) -> (usize, Ipam),
    ) -> Vec<usize> {
        let first = atts.len();
        atts.extend(pods.into_iter().enumerate().map(|(i, p)| {
            let (net, ipam) = pick(i);
            Att::new(p, net, ipam)
        }));
        (first..atts.len()).collect()
    }

    /// A storm with no fault, retried until answered; the recovery counts
    /// from `since` (else from the storm).
    async fn quiet_storm(
        &mut self,
        atts: &mut [Att],
        idx: &[usize],
        since: Option<Instant>,
    ) -> anyhow::Result<()> {
        let at = self.storm(atts, idx, &[], || async { Ok(()) }).await?;
        self.settle(atts, idx, Some(since.unwrap_or(at))).await;
        Ok(())
    }

    /// The invariants while live, then teardown and the leak check.
    async fn finish(&mut self, atts: &mut [Att], kill_dels: bool) -> anyhow::Result<()> {
        self.verify(atts).await?;
        self.teardown(atts, kill_dels).await
    }
}

const HEREABOUTS: fn(usize) -> (usize, Ipam) = |_| (0, Ipam::Hereabouts);

async fn one_run(kind: Kind, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    match kind {
        Kind::Storm(fault) => storm_fault(ctx, fault).await,
        Kind::ControllersDown => controllers_down(ctx).await,
        Kind::Orphans { with_node } => orphans(ctx, with_node).await,
        Kind::Terminating => terminating(ctx).await,
        Kind::Recreated => recreated(ctx).await,
        Kind::Migration => migration(ctx).await,
        Kind::Overlapping => overlapping(ctx).await,
    }
}

/// Lease duration of the replicas (the kit's `--lease-duration 3s`).
const LEASE: Duration = Duration::from_secs(3);

async fn storm_fault(ctx: &mut Ctx<'_>, fault: Fault) -> anyhow::Result<()> {
    let pods = ctx.pods("p", ctx.bed.settings.storm).await?;
    let mut atts = Vec::new();
    let idx = Ctx::attach(&mut atts, pods, HEREABOUTS);
    let mut kills = Vec::new();
    if fault == Fault::KillPlugins {
        for (i, a) in atts.iter_mut().enumerate() {
            a.same_id_retry = i % 2 == 0;
            kills.push(
                ctx.rng
                    .chance(40)
                    .then(|| Duration::from_millis(20) + ctx.rng.millis(800)),
            );
        }
    }
    let leader = ctx.bed.leader().await?;
    let pid = ctx.bed.replicas[leader].process.id();
    let strike = || async move {
        match fault {
            Fault::KillLeader => {
                hereabouts_kit::signal(pid, "KILL");
                eprintln!("[faults]     killed the leader (pid {pid}, SIGKILL)");
            }
            Fault::PauseLeader => {
                hereabouts_kit::signal(pid, "STOP");
                let paused = LEASE + Duration::from_secs(2);
                eprintln!("[faults]     stopped the leader (pid {pid}) for {paused:?}");
                tokio::time::sleep(paused).await;
                hereabouts_kit::signal(pid, "CONT");
            }
            Fault::RestartApiServer => {
                let t = Instant::now();
                hereabouts_kit::restart("apiserver", &[]).await?;
                eprintln!(
                    "[faults]     kube-apiserver restarted in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
            Fault::RestartEtcd => {
                let t = Instant::now();
                hereabouts_kit::restart("etcd", &[]).await?;
                eprintln!(
                    "[faults]     etcd restarted in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
            Fault::Brownout => {
                hereabouts_kit::restart(
                    "apiserver",
                    &[
                        "--max-requests-inflight=1",
                        "--max-mutating-requests-inflight=1",
                    ],
                )
                .await?;
                eprintln!("[faults]     kube-apiserver serving one request at a time (429 beyond)");
                tokio::time::sleep(Duration::from_secs(5)).await;
                hereabouts_kit::restart("apiserver", &[]).await?;
                eprintln!("[faults]     kube-apiserver back to normal limits");
            }
            Fault::KillPlugins => {}
        }
        Ok(())
    };
    let at = ctx.storm(&mut atts, &idx, &kills, strike).await?;
    ctx.settle(&mut atts, &idx, Some(at)).await;
    ctx.finish(&mut atts, fault == Fault::KillPlugins).await
}

/// Every controller down while pods go: some with DEL, some without.
async fn controllers_down(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let pods = ctx.pods("p", ctx.bed.settings.storm).await?;
    let mut atts = Vec::new();
    let idx = Ctx::attach(&mut atts, pods, HEREABOUTS);
    ctx.quiet_storm(&mut atts, &idx, None).await?;
    ctx.verify(&atts).await?;
    for r in &mut ctx.bed.replicas {
        r.process.kill();
    }
    eprintln!("[faults]     every replica killed");
    let n = atts.len();
    let with_del: Vec<usize> = (0..n / 2).collect();
    let without_del: Vec<usize> = (n / 2..n * 3 / 4).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let dels = ctx.cni("DEL", &atts, &with_del, &[], &done).await;
    if let Some(o) = dels.iter().find(|o| !o.ok) {
        ctx.rec.violation(format!(
            "DEL with no controller running failed (code {:?}): {}",
            o.code,
            o.error.as_deref().unwrap_or("?")
        ));
    }
    let gone: Vec<PodRef> = with_del
        .iter()
        .chain(&without_del)
        .map(|&i| atts[i].pod.clone())
        .collect();
    ctx.bed.force_delete(&gone).await?;
    for &i in with_del.iter().chain(&without_del) {
        atts[i].live = false;
    }
    eprintln!(
        "[faults]     {} pods deleted after DEL, {} with no DEL, while no controller ran",
        with_del.len(),
        without_del.len()
    );
    let back = Instant::now();
    ctx.bed.restore_replicas().await?;
    let gone_refs: Vec<String> = gone
        .iter()
        .map(|p| format!("{}/{}", ctx.bed.ns.name, p.name))
        .collect();
    released(ctx, &gone_refs, back).await?;
    ctx.finish(&mut atts, false).await
}

/// Waits until nothing in the pools or reservations names `podrefs`;
/// records the recovery since `since`, or a violation.
async fn released(ctx: &mut Ctx<'_>, podrefs: &[String], since: Instant) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(ctx.bed.settings.recover_s);
    loop {
        let snap = check::snapshot(&ctx.bed.client, &ctx.bed.ns.name, ctx.network_name()).await?;
        // Allocations, and holds that ended but are still there.
        let now = std::time::SystemTime::now();
        let held = snap
            .allocations
            .iter()
            .chain(
                snap.holds
                    .iter()
                    .filter(|(_, until)| *until <= now)
                    .map(|(h, _)| h),
            )
            .filter(|a| podrefs.contains(&a.podref))
            .count();
        let reserved = snap
            .reservations
            .iter()
            .filter(|(_, p, _)| podrefs.contains(p))
            .count();
        if held + reserved == 0 {
            ctx.rec.recovery = Some(since.elapsed());
            eprintln!(
                "[faults]     the gone pods' addresses released after {:.1} s",
                since.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            ctx.rec.violation(format!(
                "leak: {held} allocations and {reserved} reservations of deleted pods still there {} s later",
                ctx.bed.settings.recover_s
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A third of the pods force-deleted (or their Node deleted with them),
/// never a DEL; as many new pods then need those very addresses.
async fn orphans(ctx: &mut Ctx<'_>, with_node: bool) -> anyhow::Result<()> {
    let storm = ctx.bed.settings.storm;
    let doomed_count = storm / 3;
    let doomed_node = if with_node {
        Some(ctx.shared.extra_node("fgone").await?)
    } else {
        None
    };
    let mut pods = Vec::new();
    if let Some(node) = &doomed_node {
        let on_node: Vec<(String, String)> = (0..doomed_count)
            .map(|i| (format!("{}-n-{i}", ctx.prefix), node.clone()))
            .collect();
        let none = serde_json::json!({});
        pods.extend(create_pods(&ctx.bed.client, &ctx.bed.ns.name, &on_node, &none, &none).await?);
        pods.extend(ctx.pods("p", storm - doomed_count).await?);
    } else {
        pods.extend(ctx.pods("p", storm).await?);
    }
    let mut atts = Vec::new();
    let idx = Ctx::attach(&mut atts, pods, HEREABOUTS);
    ctx.quiet_storm(&mut atts, &idx, None).await?;
    ctx.verify(&atts).await?;
    let doomed: Vec<PodRef> = atts[..doomed_count].iter().map(|a| a.pod.clone()).collect();
    let at = Instant::now();
    if let Some(node) = &doomed_node {
        let nodes: Api<Node> = Api::all(ctx.bed.client.clone());
        nodes.delete(node, &DeleteParams::default()).await?;
        eprintln!(
            "[faults]     Node {node} deleted; its {doomed_count} pods go as the pod GC removes them"
        );
    }
    ctx.bed.force_delete(&doomed).await?;
    for a in &mut atts[..doomed_count] {
        a.live = false;
    }
    eprintln!("[faults]     {doomed_count} pods force-deleted, no DEL");
    let fresh = ctx.pods("new", doomed_count).await?;
    let new_idx = Ctx::attach(&mut atts, fresh, HEREABOUTS);
    for &i in &new_idx {
        atts[i].exhausted_ok = true;
    }
    ctx.quiet_storm(&mut atts, &new_idx, Some(at)).await?;
    ctx.finish(&mut atts, false).await
}

/// Pods deleted but Terminating (a finalizer, or a 600 s grace period and
/// no kubelet to confirm) keep their addresses through GC rounds.
async fn terminating(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let storm = ctx.bed.settings.storm;
    let half = storm / 2;
    let finalized = ctx
        .bed
        .pods(
            &format!("{}-fin", ctx.prefix),
            half.div_ceil(2),
            &serde_json::json!({"finalizers": ["faults.hereabouts.dev/hold"]}),
            &serde_json::json!({}),
        )
        .await?;
    let graceful = ctx
        .bed
        .pods(
            &format!("{}-grace", ctx.prefix),
            half / 2,
            &serde_json::json!({}),
            &serde_json::json!({"terminationGracePeriodSeconds": 600}),
        )
        .await?;
    let mut atts = Vec::new();
    let idx = Ctx::attach(
        &mut atts,
        finalized.into_iter().chain(graceful).collect(),
        HEREABOUTS,
    );
    ctx.quiet_storm(&mut atts, &idx, None).await?;
    let api: Api<Pod> = Api::namespaced(ctx.bed.client.clone(), &ctx.bed.ns.name);
    for a in &atts {
        api.delete(&a.pod.name, &DeleteParams::default()).await?;
    }
    // Three GC rounds and more than two grace periods.
    let wait = Duration::from_secs(8);
    eprintln!(
        "[faults]     {} pods Terminating; waiting {wait:?} of GC rounds",
        atts.len()
    );
    tokio::time::sleep(wait).await;
    let still: usize = futures::future::join_all(atts.iter().map(|a| api.get_opt(&a.pod.name)))
        .await
        .into_iter()
        .filter(|p| matches!(p, Ok(Some(_))))
        .count();
    if still != atts.len() {
        anyhow::bail!(
            "only {still} of {} deleted pods stayed Terminating",
            atts.len()
        );
    }
    let fresh = ctx.pods("new", storm - atts.len()).await?;
    let new_idx = Ctx::attach(&mut atts, fresh, HEREABOUTS);
    ctx.quiet_storm(&mut atts, &new_idx, None).await?;
    ctx.finish(&mut atts, false).await
}

/// StatefulSet-style: while a pod's ADD is in flight its sandbox is torn
/// down (DEL), the pod deleted and created again under the same name (new
/// UID) and ADDed with a new container ID.
async fn recreated(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let storm = ctx.bed.settings.storm;
    let pods = ctx.pods("p", storm).await?;
    let mut old: Vec<Att> = pods
        .iter()
        .cloned()
        .map(|p| Att::new(p, 0, Ipam::Hereabouts))
        .collect();
    let delays: Vec<Duration> = (0..storm).map(|_| ctx.rng.millis(600)).collect();
    let idx: Vec<usize> = (0..storm).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let ctx_ref = &*ctx;
    let first_adds = ctx_ref.cni("ADD", &old, &idx, &[], &done);
    let old_ref = &old;
    let delays = &delays;
    let recreate = join_all(idx.iter().map(|&i| {
        let done = done.clone();
        async move {
            tokio::time::sleep(delays[i]).await;
            ctx_ref.cni("DEL", old_ref, &[i], &[], &done).await;
            ctx_ref
                .bed
                .force_delete(std::slice::from_ref(&old_ref[i].pod))
                .await?;
            let api: Api<Pod> = Api::namespaced(ctx_ref.bed.client.clone(), &ctx_ref.bed.ns.name);
            let name = old_ref[i].pod.name.clone();
            hereabouts_kit::eventually("the old pod gone", 30, || async {
                matches!(api.get_opt(&name).await, Ok(None)).then_some(())
            })
            .await?;
            let none = serde_json::json!({});
            let again = create_pods(
                &ctx_ref.bed.client,
                &ctx_ref.bed.ns.name,
                &[(name, old_ref[i].pod.node.clone())],
                &none,
                &none,
            )
            .await?;
            let att = Att::new(again[0].clone(), 0, Ipam::Hereabouts);
            let outcome = ctx_ref
                .cni("ADD", std::slice::from_ref(&att), &[0], &[], &done)
                .await;
            Ok::<_, anyhow::Error>((att, outcome))
        }
    }));
    let (first, again) = tokio::join!(first_adds, recreate);
    // The first ADDs belong to torn-down sandboxes: counted, not live.
    for (a, o) in old.iter_mut().zip(&first) {
        ctx.rec.adds += 1;
        a.live = false;
        if !o.ok {
            *ctx.rec
                .failed
                .entry(format!(
                    "{} (torn down)",
                    o.code.map_or("none".into(), |c| c.to_string())
                ))
                .or_default() += 1;
        }
    }
    let late = first.iter().filter(|o| o.ok).count();
    eprintln!(
        "[faults]     {late} of {storm} first ADDs answered although their sandbox was torn down"
    );
    let mut atts = Vec::new();
    let mut outcomes = Vec::new();
    for r in again {
        let (att, outcome) = r?;
        atts.push(att);
        outcomes.extend(outcome);
    }
    let all: Vec<usize> = (0..atts.len()).collect();
    ctx.record_adds(&mut atts, &all, &outcomes);
    ctx.settle(&mut atts, &all, None).await;
    ctx.finish(&mut atts, false).await
}

/// whereabouts (the real CNI, built by e2e/tools) and hereabouts writing
/// the same pool at once: a migration storm.
async fn migration(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    one_storm(ctx, |i| {
        if i % 3 == 0 {
            (0, Ipam::Whereabouts)
        } else {
            (0, Ipam::Hereabouts)
        }
    })
    .await
}

/// Two ranges of one network_name over the same addresses, half the storm
/// on each.
async fn overlapping(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    one_storm(ctx, |i| (i % 2, Ipam::Hereabouts)).await
}

/// A storm over the networks and plugins `pick` chooses, then the checks.
async fn one_storm(ctx: &mut Ctx<'_>, pick: fn(usize) -> (usize, Ipam)) -> anyhow::Result<()> {
    let pods = ctx.pods("p", ctx.bed.settings.storm).await?;
    let mut atts = Vec::new();
    let idx = Ctx::attach(&mut atts, pods, pick);
    ctx.quiet_storm(&mut atts, &idx, None).await?;
    ctx.finish(&mut atts, false).await
}
