//! What a run measured, and how it is written: one JSON file per run (raw
//! latencies included), Markdown tables with every system side by side,
//! hereabouts' ratio to each peer, and the architecture's targets, and a PNG
//! of the latency distributions and the scale curves of every system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::plugin::{Kind, Outcome};
use crate::scenarios::{Settings, ms};

/// Percentiles of a set of latencies.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn of(latencies: impl Iterator<Item = Duration>) -> Self {
        let mut v: Vec<f64> = latencies.map(ms).collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            // Nearest rank.
            let rank = (q * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Stats {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// One batch of plugin calls of one system.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub system: Kind,
    pub scenario: String,
    pub phase: String,
    pub requested: usize,
    pub ok: usize,
    /// The plugin said no (or crashed).
    pub failed: usize,
    /// Still running at the time cap, killed.
    pub capped: usize,
    /// Not started before the time cap.
    pub not_started: usize,
    /// From the first spawn to the last exit (or the cap).
    pub wall_s: f64,
    /// Successful calls per second of wall time.
    pub per_second: f64,
    #[serde(flatten)]
    pub stats: Stats,
    pub cap_s: Option<f64>,
    pub duplicates: Option<usize>,
    pub missing_from_pool: Option<usize>,
    pub pool_allocations: Option<usize>,
    pub leaked_allocations: Option<usize>,
    pub leaked_reservations: Option<usize>,
    /// hereabouts' resting entries when the leaks were counted (held for a
    /// pod that went, or cooling after a release; not leaks while they
    /// last, and not counted in `leaked_allocations`).
    pub resting_allocations: Option<usize>,
    /// How long the pools took to empty after the last DEL returned.
    pub drain_s: Option<f64>,
    /// Re-creation: DEL of all plus ADD of all, back to back.
    pub total_wall_s: Option<f64>,
    pub controller_rss_kib: Option<u64>,
    /// CPU seconds each part of the system spent during the phase.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_s: BTreeMap<String, f64>,
    /// hereabouts-controller counters after the phase (cumulative).
    pub controller_metrics: BTreeMap<String, f64>,
    /// Requests the API server served during the phase, per call, by
    /// "VERB resource" ([`crate::apiserver`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub api_per_call: BTreeMap<String, f64>,
    /// Failure messages (first 120 characters) and how often each came.
    pub errors: BTreeMap<String, usize>,
    /// Successful calls' latencies, in call order.
    pub latencies_ms: Vec<f64>,
}

impl Phase {
    pub fn new(
        kind: Kind,
        scenario: &str,
        phase: &str,
        outcomes: &[Outcome],
        wall: Duration,
    ) -> Self {
        let mut errors = BTreeMap::new();
        for o in outcomes.iter().filter(|o| !o.ok) {
            let message: String = o
                .error
                .as_deref()
                .unwrap_or("?")
                .chars()
                .take(120)
                .collect();
            *errors.entry(message).or_insert(0) += 1;
        }
        let ok = outcomes.iter().filter(|o| o.ok).count();
        let capped = outcomes.iter().filter(|o| o.capped).count();
        let not_started = outcomes.iter().filter(|o| o.not_started).count();
        Phase {
            system: kind,
            scenario: scenario.to_owned(),
            phase: phase.to_owned(),
            requested: outcomes.len(),
            ok,
            failed: outcomes.len() - ok - capped - not_started,
            capped,
            not_started,
            wall_s: wall.as_secs_f64(),
            per_second: ok as f64 / wall.as_secs_f64().max(1e-9),
            stats: Stats::of(outcomes.iter().filter(|o| o.ok).map(|o| o.latency)),
            cap_s: None,
            duplicates: None,
            missing_from_pool: None,
            pool_allocations: None,
            leaked_allocations: None,
            leaked_reservations: None,
            resting_allocations: None,
            drain_s: None,
            total_wall_s: None,
            controller_rss_kib: None,
            cpu_s: BTreeMap::new(),
            controller_metrics: BTreeMap::new(),
            api_per_call: BTreeMap::new(),
            errors,
            latencies_ms: outcomes
                .iter()
                .filter(|o| o.ok)
                .map(|o| ms(o.latency))
                .collect(),
        }
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}/{}: {}/{} ok in {:.2} s ({:.1}/s), p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
            self.scenario,
            self.phase,
            self.ok,
            self.requested,
            self.wall_s,
            self.per_second,
            self.stats.p50_ms,
            self.stats.p95_ms,
            self.stats.p99_ms
        );
        if self.failed + self.capped + self.not_started > 0 {
            s += &format!(
                "; failed {}, killed at cap {}, not started {}",
                self.failed, self.capped, self.not_started
            );
        }
        if let Some(d) = self.duplicates {
            s += &format!("; duplicates {d}");
        }
        if let Some(m) = self.missing_from_pool {
            s += &format!(", not in pool {m}");
        }
        if let (Some(a), Some(r)) = (self.leaked_allocations, self.leaked_reservations) {
            s += &format!("; leaked {a} allocations, {r} reservations");
            if let Some(resting) = self.resting_allocations.filter(|n| *n > 0) {
                s += &format!(" ({resting} resting: held or cooling)");
            }
            if let Some(waited) = self.drain_s {
                s += &format!(" (counted {waited:.1} s after the last DEL)");
            }
        }
        if let Some((e, n)) = self.errors.iter().max_by_key(|(_, n)| **n) {
            s += &format!("; most common error ({n}x): {e}");
        }
        if !self.cpu_s.is_empty() {
            let calls = self.requested.max(1) as f64;
            let parts: Vec<String> = self
                .cpu_s
                .iter()
                .map(|(part, secs)| format!("{part} {:.2}", 1000.0 * secs / calls))
                .collect();
            s += &format!("; CPU ms per call: {}", parts.join(", "));
        }
        s
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ScaleStep {
    pub allocations: usize,
    pub probe_ms: Vec<f64>,
    pub probe_p50_ms: f64,
    pub probe_failures: usize,
    pub largest_object_bytes: usize,
    pub objects: usize,
    pub controller_rss_kib: Option<u64>,
    pub fill_ok: usize,
    pub fill_failed: usize,
    pub fill_wall_s: f64,
    /// How long the probes waited for a quiet control plane after the fill.
    pub quiet_wait_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScaleRun {
    pub system: Kind,
    pub target_allocations: usize,
    pub cap_s: Option<f64>,
    /// Stopped at the time cap before the target.
    pub capped: bool,
    pub steps: Vec<ScaleStep>,
    pub reached: usize,
    pub first_add_ms: f64,
    pub last_add_ms: f64,
    pub last_over_first: f64,
    pub largest_object_bytes: usize,
    pub max_controller_rss_kib: Option<u64>,
    pub fill_per_second: f64,
    pub teardown: Option<Phase>,
}

impl Default for ScaleRun {
    fn default() -> Self {
        ScaleRun {
            system: Kind::Hereabouts,
            target_allocations: 0,
            cap_s: None,
            capped: false,
            steps: Vec::new(),
            reached: 0,
            first_add_ms: f64::NAN,
            last_add_ms: f64::NAN,
            last_over_first: f64::NAN,
            largest_object_bytes: 0,
            max_controller_rss_kib: None,
            fill_per_second: 0.0,
            teardown: None,
        }
    }
}

impl ScaleRun {
    pub fn finish(&mut self) {
        self.reached = self.steps.last().map_or(0, |s| s.allocations);
        self.first_add_ms = self.steps.first().map_or(f64::NAN, |s| s.probe_p50_ms);
        self.last_add_ms = self.steps.last().map_or(f64::NAN, |s| s.probe_p50_ms);
        self.last_over_first = self.last_add_ms / self.first_add_ms;
        self.largest_object_bytes = self
            .steps
            .iter()
            .map(|s| s.largest_object_bytes)
            .max()
            .unwrap_or(0);
        self.max_controller_rss_kib = self.steps.iter().filter_map(|s| s.controller_rss_kib).max();
        let ok: usize = self.steps.iter().map(|s| s.fill_ok).sum();
        let wall: f64 = self.steps.iter().map(|s| s.fill_wall_s).sum();
        self.fill_per_second = ok as f64 / wall.max(1e-9);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    pub objects: usize,
    pub concurrency: usize,
    /// Objects created and then updated, per second of both walls.
    pub allocations_per_second: f64,
    pub create: Phase,
    pub update: Phase,
    /// One IPPool replaced again and again, by how many entries it holds.
    pub pool_writes: Vec<PoolWrite>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolWrite {
    pub entries: usize,
    pub replaces: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub cores: usize,
    pub cpu: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub mem_available_start_kib: u64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub started: String,
    pub finished: String,
    pub mode: String,
    pub settings: Settings,
    pub hereabouts_revision: String,
    /// The kit's whereabouts (`e2e/tools/versions.env`).
    pub whereabouts_version: String,
    /// The newest whereabouts served, run as two peers
    /// (`e2e/tools/peers/versions.env`).
    pub whereabouts_peer_version: String,
    pub binaries: PathBuf,
    pub host: Host,
    pub notes: Vec<String>,
    pub phases: Vec<Phase>,
    pub scale: Vec<ScaleRun>,
    pub floor: Option<Floor>,
    pub controller_rss_end_kib: Option<u64>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn meminfo(key: &str) -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Record {
    pub fn new(settings: &Settings, binaries: &Path) -> Self {
        let root = hereabouts_kit::repo_root();
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
        let pin = |file: &str, key: &str| {
            read(&root.join(file).display().to_string())
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or("?")
                .to_owned()
        };
        let whereabouts_version = pin("e2e/tools/versions.env", "WHEREABOUTS_VERSION=");
        let whereabouts_peer_version =
            pin("e2e/tools/peers/versions.env", "WHEREABOUTS_PEER_VERSION=");
        Record {
            started: now(),
            finished: String::new(),
            mode: settings.mode.clone(),
            settings: settings.clone(),
            hereabouts_revision: format!(
                "{}{}",
                git(&["rev-parse", "--short", "HEAD"]),
                if dirty { " (with uncommitted changes)" } else { "" }
            ),
            whereabouts_version,
            whereabouts_peer_version,
            binaries: binaries.to_owned(),
            host: Host {
                cores: std::thread::available_parallelism().map_or(0, usize::from),
                cpu: read("/proc/cpuinfo")
                    .lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                    .unwrap_or_default(),
                loadavg_start: read("/proc/loadavg").trim().to_owned(),
                loadavg_end: String::new(),
                mem_available_start_kib: meminfo("MemAvailable:"),
            },
            notes: vec![
                format!(
                    "Every plugin is spawned as a process with the CNI environment Multus gives an IPAM plugin (CNI_ARGS with K8S_POD_NAMESPACE/NAME/INFRA_CONTAINER_ID/UID, NODENAME over {} simulated nodes) and the network configuration on stdin; CNI_NETNS is a path that does not exist, which IPAM plugins never enter.",
                    crate::plugin::NODES
                ),
                format!(
                    "'At once' means every call of a phase is submitted together, with at most {} plugin processes alive at a time (every system alike); latency is from a process's spawn to its exit.",
                    settings.inflight
                ),
                format!(
                    "whereabouts phases are capped at {} s: what still runs then is killed and counted ('killed at cap'), what never started is counted too. whereabouts' own ADD limit is 2 minutes.",
                    settings.whereabouts_cap_s
                ),
                "etcd runs with --unsafe-no-fsync (the local kit's setting): absolute numbers flatter every system alike.".to_owned(),
                format!(
                    "hereabouts runs one release controller replica, log level info, and {}; whereabouts' default mode needs none; its node-slice mode runs its node-slice controller (one replica, the kit's admin credentials, NodeSlicePools in the system's namespace, one NetworkAttachmentDefinition per network for it to read).",
                    if settings.agents {
                        "one node agent per simulated node (`hereabouts-install --agent-only`, as its DaemonSet runs on every node), which the plugin asks over a unix socket"
                    } else {
                        "no node agent (`--direct`): each plugin process talks to the API server itself"
                    }
                ),
                "whereabouts' node-slice mode (node_slice_size) ignores range_start/range_end: each node allocates from its own slice's usable addresses (storm: a /25 of the /20 per node, 126 addresses for its 100 pods, 1,260 in all instead of exactly 1,000; scale: a /21 of the /16 per node, 20,460 in all; idle: a /29 of the /24 per node; 32 slices each, so up to 22 other Node objects leave every bench node one), under a Lease per node instead of one per network.".to_owned(),
                "CPU per call, by process: from /proc around each phase; `hereabouts-agents` is all node agents together, `plugins` the plugin processes the harness reaped.".to_owned(),
                "API requests per call: the API server's apiserver_request_total (by verb and resource) read before and after the phase, divided by the phase's calls; it counts every client of the API server during the phase (the plugins, the system's controller, the kit's garbage collector), and a WATCH when it ends.".to_owned(),
            ],
            phases: Vec::new(),
            scale: Vec::new(),
            floor: None,
            controller_rss_end_kib: None,
        }
    }

    pub fn push(&mut self, phases: Vec<Phase>) {
        self.phases.extend(phases);
    }

    pub fn finish(&mut self) {
        self.finished = now();
        self.host.loadavg_end = read("/proc/loadavg").trim().to_owned();
    }

    fn phase(&self, kind: Kind, scenario: &str, phase: &str) -> Option<&Phase> {
        self.phases
            .iter()
            .find(|p| p.system == kind && p.scenario == scenario && p.phase == phase)
    }

    fn scale_of(&self, kind: Kind) -> Option<&ScaleRun> {
        self.scale.iter().find(|s| s.system == kind)
    }

    /// The systems this run measured, hereabouts first.
    fn systems(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| {
                self.phases.iter().any(|p| p.system == *k)
                    || self.scale.iter().any(|s| s.system == *k)
            })
            .collect()
    }
}

/// Writes `<stem>.json`, `<stem>.md` and `<stem>.png` into `dir`.
pub fn write(record: &Record, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // "full, direct plugin" names the file full-direct-plugin-<time>.
    let mode: String = record
        .mode
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let stem = format!(
        "{mode}-{}",
        record.started.replace([':', '-'], "").trim_end_matches('Z')
    );
    let json = dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(record)?)?;
    let md = dir.join(format!("{stem}.md"));
    std::fs::write(&md, markdown(record))?;
    let png = dir.join(format!("{stem}.png"));
    let mut written = vec![json, md];
    match plot(record, &png) {
        Ok(()) => written.push(png),
        Err(e) => eprintln!("[bench] no plot: {e}"),
    }
    Ok(written)
}

// === Markdown ===

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".to_owned(),
    }
}

fn count(v: Option<usize>) -> String {
    v.map_or("–".to_owned(), |v| v.to_string())
}

/// hereabouts' value divided by a peer's.
fn ratio(h: Option<f64>, w: Option<f64>) -> String {
    match (h, w) {
        (Some(h), Some(w)) if h.is_finite() && w.is_finite() && w > 0.0 => {
            let r = h / w;
            if r >= 10.0 {
                format!("{r:.0}×")
            } else {
                format!("{r:.2}×")
            }
        }
        _ => "–".to_owned(),
    }
}

/// A table of every system: a header, then rows of one cell per system.
struct Table<'a> {
    out: &'a mut String,
    systems: &'a [Kind],
}

impl<'a> Table<'a> {
    fn start(out: &'a mut String, systems: &'a [Kind], title: &str) -> Self {
        out.push_str(&format!("\n**{title}**\n\n|"));
        for k in systems {
            out.push_str(&format!(" | {}", k.label()));
        }
        out.push_str(" |\n|---|");
        for _ in systems {
            out.push_str("---:|");
        }
        out.push('\n');
        Table { out, systems }
    }

    /// A row of text cells.
    fn text(&mut self, label: &str, cell: &dyn Fn(Kind) -> String) {
        self.out.push_str(&format!("| {label} |"));
        for k in self.systems {
            self.out.push_str(&format!(" {} |", cell(*k)));
        }
        self.out.push('\n');
    }

    /// A row of numbers; a peer's cell also gives hereabouts' value divided
    /// by the peer's.
    fn numbers(&mut self, label: &str, digits: usize, value: &dyn Fn(Kind) -> Option<f64>) {
        let base = value(Kind::Hereabouts);
        self.text(label, &|k| {
            let v = value(k);
            let shown = num(v, digits);
            if k == Kind::Hereabouts || base.is_none() || v.is_none() {
                shown
            } else {
                format!("{shown} ({})", ratio(base, v))
            }
        });
    }
}

fn phase_rows(out: &mut String, record: &Record, scenario: &str, phase: &str, title: &str) {
    let systems: Vec<Kind> = record
        .systems()
        .into_iter()
        .filter(|k| record.phase(*k, scenario, phase).is_some())
        .collect();
    if systems.is_empty() {
        return;
    }
    let p = |k: Kind| record.phase(k, scenario, phase);
    let f = |k: Kind, get: &dyn Fn(&Phase) -> f64| p(k).map(get);
    let mut t = Table::start(out, &systems, title);
    t.text("calls", &|k| count(p(k).map(|p| p.requested)));
    t.numbers("wall time (s)", 2, &|k| f(k, &|p| p.wall_s));
    if systems
        .iter()
        .any(|k| p(*k).and_then(|p| p.cap_s).is_some())
    {
        t.text("time cap (s)", &|k| num(p(k).and_then(|p| p.cap_s), 0));
    }
    t.numbers("successful calls per second", 1, &|k| {
        f(k, &|p| p.per_second)
    });
    t.numbers("p50 latency (ms)", 1, &|k| f(k, &|p| p.stats.p50_ms));
    t.numbers("p95 latency (ms)", 1, &|k| f(k, &|p| p.stats.p95_ms));
    t.numbers("p99 latency (ms)", 1, &|k| f(k, &|p| p.stats.p99_ms));
    t.text("failures", &|k| {
        p(k).map_or("–".to_owned(), |p| {
            if p.capped + p.not_started > 0 {
                format!(
                    "{} (+{} killed at cap, {} not started)",
                    p.failed, p.capped, p.not_started
                )
            } else {
                p.failed.to_string()
            }
        })
    });
    if systems
        .iter()
        .any(|k| p(*k).and_then(|p| p.duplicates).is_some())
    {
        t.text("duplicate addresses", &|k| {
            count(p(k).and_then(|p| p.duplicates))
        });
        t.text("results not held by the pool", &|k| {
            count(p(k).and_then(|p| p.missing_from_pool))
        });
    }
    if systems
        .iter()
        .any(|k| p(*k).and_then(|p| p.leaked_allocations).is_some())
    {
        t.text("leaked allocations / reservations", &|k| {
            p(k).map_or("–".to_owned(), |p| {
                format!(
                    "{} / {}",
                    count(p.leaked_allocations),
                    count(p.leaked_reservations)
                )
            })
        });
        t.text("resting (held or cooling, not leaked)", &|k| {
            count(p(k).and_then(|p| p.resting_allocations))
        });
        t.text("counted after the last DEL (s)", &|k| {
            num(p(k).and_then(|p| p.drain_s), 1)
        });
    }
    if systems
        .iter()
        .any(|k| p(*k).and_then(|p| p.total_wall_s).is_some())
    {
        t.numbers("DEL all + ADD all, back to back (s)", 2, &|k| {
            p(k).and_then(|p| p.total_wall_s)
        });
    }
    // CPU per call, by process.
    let parts: std::collections::BTreeSet<&String> = systems
        .iter()
        .filter_map(|k| p(*k))
        .flat_map(|p| p.cpu_s.keys())
        .collect();
    for part in parts {
        t.numbers(&format!("CPU ms per call: {part}"), 2, &|k| {
            let p = p(k)?;
            let secs = p.cpu_s.get(part)?;
            Some(1000.0 * secs / p.requested.max(1) as f64)
        });
    }
    // API requests per call, by verb.
    let verbs = |k: Kind| p(k).map(|p| crate::apiserver::by_verb(&p.api_per_call));
    let all_verbs: std::collections::BTreeSet<String> = systems
        .iter()
        .filter_map(|k| verbs(*k))
        .flat_map(|v| v.into_keys())
        .collect();
    if !all_verbs.is_empty() {
        t.numbers("API requests per call", 2, &|k| {
            p(k).filter(|p| !p.api_per_call.is_empty())
                .map(|p| p.api_per_call.values().sum())
        });
        for verb in &all_verbs {
            t.numbers(&format!("API requests per call: {verb}"), 2, &|k| {
                let v = verbs(k)?;
                (!v.is_empty()).then(|| v.get(verb).copied().unwrap_or(0.0))
            });
        }
        out.push_str("\nAPI requests per call by resource (those of 0.05 or more):\n\n");
        for k in &systems {
            let Some(phase) = p(*k).filter(|p| !p.api_per_call.is_empty()) else {
                continue;
            };
            let mut items: Vec<(&String, &f64)> = phase
                .api_per_call
                .iter()
                .filter(|(_, n)| **n >= 0.05)
                .collect();
            items.sort_by(|a, b| b.1.total_cmp(a.1));
            let items: Vec<String> = items
                .iter()
                .map(|(key, n)| format!("{key} {n:.2}"))
                .collect();
            out.push_str(&format!("- {}: {}\n", k.label(), items.join(", ")));
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

pub fn markdown(record: &Record) -> String {
    let systems = record.systems();
    let names: Vec<&str> = systems.iter().map(|k| k.label()).collect();
    let mut out = format!(
        "# {}: {} run, {}\n\n\
         hereabouts {} (release build), whereabouts CNI {} (the kit's) and {} (the newest the Go module proxy \
         serves; default mode and node-slice mode); one local control plane \
         (kube-apiserver and etcd on loopback, etcd with --unsafe-no-fsync); {} cores ({}); \
         load average at start {}, at end {}.\n",
        names.join(" vs "),
        record.mode,
        record.started,
        record.hereabouts_revision,
        record.whereabouts_version,
        record.whereabouts_peer_version,
        record.host.cores,
        record.host.cpu,
        record.host.loadavg_start,
        record.host.loadavg_end,
    );
    let s = &record.settings;
    out.push_str(&format!(
        "\nStorm: {} ADDs over {} nodes on a pool of exactly {} addresses (the node-slice mode: a /25 per node, see the notes); \
         at most {} plugin processes alive at once (every system alike); \
         whereabouts phases capped at {} s. Many networks: {} pods at once, each with {} networks (a /23 each) \
         called one after another as Multus calls them. Scale: a /16 in {} steps of {}.\n",
        s.storm, crate::plugin::NODES, s.storm, s.inflight, s.whereabouts_cap_s, s.multi_pods, s.multi_networks,
        s.scale_steps, s.scale_step
    ));

    // Targets (ARCHITECTURE.md).
    out.push_str("\n## Targets (hereabouts)\n\n| target | measured | |\n|---|---|---|\n");
    let h = |sc: &str, ph: &str| record.phase(Kind::Hereabouts, sc, ph);
    if let Some(storm) = h("storm", "add") {
        let clean = storm.ok == storm.requested
            && storm.duplicates == Some(0)
            && storm.missing_from_pool == Some(0);
        out.push_str(&format!(
            "| storm: {} ADDs in ≤ 3 s, no duplicates, no failures | {:.2} s, {} failures, {} duplicates | {} |\n",
            storm.requested,
            storm.wall_s,
            storm.requested - storm.ok,
            count(storm.duplicates),
            verdict(storm.wall_s <= 3.0 && clean)
        ));
        for peer in [Kind::Whereabouts, Kind::Whereabouts094] {
            if let Some(ws) = record.phase(peer, "storm", "add") {
                let r = storm.per_second / ws.per_second.max(1e-9);
                out.push_str(&format!(
                    "| storm: ≥ 50× the throughput of {} (default mode) | {:.1}/s vs {:.2}/s: {} | {} |\n",
                    peer.label(),
                    storm.per_second,
                    ws.per_second,
                    ratio(Some(storm.per_second), Some(ws.per_second)),
                    verdict(r >= 50.0)
                ));
            }
        }
        if let Some(floor) = &record.floor {
            let share = storm.per_second / floor.create.per_second.max(1e-9);
            out.push_str(&format!(
                "| storm: ≥ 80% of the floor's create rate | {:.1}/s vs {:.0} creates/s: {:.0}% | {} |\n",
                storm.per_second,
                floor.create.per_second,
                100.0 * share,
                verdict(share >= 0.8)
            ));
        }
    }
    if let (Some(del), Some(add), Some(all)) = (
        h("recreation", "del"),
        h("recreation", "add"),
        h("recreation", "del-all"),
    ) {
        let total = add.total_wall_s.unwrap_or(f64::NAN);
        let clean = del.ok == del.requested && add.ok == add.requested && add.duplicates == Some(0);
        let leaks = all.leaked_allocations.unwrap_or(1) + all.leaked_reservations.unwrap_or(1);
        out.push_str(&format!(
            "| re-creation: DEL all + ADD all in ≤ 5 s, no leaks | {total:.2} s, {} failures, {} leaked | {} |\n",
            (del.requested - del.ok) + (add.requested - add.ok),
            leaks,
            verdict(total <= 5.0 && clean && leaks == 0)
        ));
    }
    if let Some(multi) = h("networks", "add") {
        let clean = multi.ok == multi.requested
            && multi.duplicates == Some(0)
            && multi.missing_from_pool == Some(0);
        out.push_str(&format!(
            "| many networks: {} attachments ({} pods × {} networks) in ≤ 10 s | {:.2} s, {} failures, {} duplicates | {} |\n",
            multi.requested,
            s.multi_pods,
            s.multi_networks,
            multi.wall_s,
            multi.requested - multi.ok,
            count(multi.duplicates),
            verdict(multi.wall_s <= 10.0 && clean)
        ));
    }
    if let Some(sc) = record.scale_of(Kind::Hereabouts) {
        out.push_str(&format!(
            "| scale: {} allocations, last ADD within 1.5× of the first | {} allocations; {:.1} ms → {:.1} ms ({:.2}×) | {} |\n",
            sc.target_allocations,
            sc.reached,
            sc.first_add_ms,
            sc.last_add_ms,
            sc.last_over_first,
            verdict(sc.reached >= sc.target_allocations && sc.last_over_first <= 1.5)
        ));
        out.push_str(&format!(
            "| scale: no object over 1 MiB | largest IPPool {:.0} KiB | {} |\n",
            sc.largest_object_bytes as f64 / 1024.0,
            verdict(sc.largest_object_bytes <= 1 << 20)
        ));
        let rss = sc.max_controller_rss_kib.unwrap_or(u64::MAX);
        out.push_str(&format!(
            "| scale: controller RSS ≤ 150 MiB | {:.0} MiB | {} |\n",
            rss as f64 / 1024.0,
            verdict(rss <= 150 * 1024)
        ));
    }
    if let (Some(add), Some(version)) = (h("idle", "add"), h("idle", "version")) {
        out.push_str(&format!(
            "| idle ADD p50 ≤ 5 ms, p99 ≤ 20 ms | p50 {:.1} ms, p99 {:.1} ms | {} |\n| VERSION < 2 ms (p50) | {:.2} ms | {} |\n",
            add.stats.p50_ms,
            add.stats.p99_ms,
            verdict(add.stats.p50_ms <= 5.0 && add.stats.p99_ms <= 20.0),
            version.stats.p50_ms,
            verdict(version.stats.p50_ms < 2.0)
        ));
    }

    out.push_str(
        "\n## Side by side\n\nIn a peer's column, the figure in brackets is hereabouts' value divided by the peer's: \
         above 1 is better for hereabouts for rates, below 1 for times, CPU and requests.\n",
    );
    phase_rows(
        &mut out,
        record,
        "storm",
        "add",
        "1. Storm: ADD all at once",
    );
    phase_rows(
        &mut out,
        record,
        "recreation",
        "del",
        "2a. Re-creation: DEL all at once",
    );
    phase_rows(
        &mut out,
        record,
        "recreation",
        "add",
        "2b. Re-creation: then ADD all (new pods) at once",
    );
    phase_rows(
        &mut out,
        record,
        "recreation",
        "del-all",
        "2c. Then DEL of everything; leaks counted after it",
    );

    phase_rows(
        &mut out,
        record,
        "networks",
        "add",
        "3a. Many networks per pod: every pod at once, its networks one after another",
    );
    phase_rows(
        &mut out,
        record,
        "networks",
        "del-all",
        "3b. Then DEL of every attachment; leaks counted after it",
    );

    let scale_systems: Vec<Kind> = systems
        .iter()
        .copied()
        .filter(|k| record.scale_of(*k).is_some())
        .collect();
    if !scale_systems.is_empty() {
        let sc = |k: Kind| record.scale_of(k);
        let mut t = Table::start(&mut out, &scale_systems, "4. Scale: a /16 filled in steps");
        t.text("allocations reached", &|k| {
            sc(k).map_or("–".to_owned(), |s| {
                if s.capped {
                    format!(
                        "{} (cap {} s)",
                        s.reached, record.settings.whereabouts_cap_s
                    )
                } else {
                    s.reached.to_string()
                }
            })
        });
        t.numbers("fill: allocations per second", 1, &|k| {
            sc(k).map(|s| s.fill_per_second)
        });
        t.numbers("single ADD, empty pool (ms)", 1, &|k| {
            sc(k).map(|s| s.first_add_ms)
        });
        t.numbers("single ADD at the last step reached (ms)", 1, &|k| {
            sc(k).map(|s| s.last_add_ms)
        });
        t.numbers("largest IPPool (KiB)", 0, &|k| {
            sc(k).map(|s| s.largest_object_bytes as f64 / 1024.0)
        });
        t.text(
            "controller RSS, max (MiB)",
            &|k| match sc(k).and_then(|s| s.max_controller_rss_kib) {
                Some(kib) => format!("{:.0}", kib as f64 / 1024.0),
                None => "no controller".to_owned(),
            },
        );
        t.text("leaked allocations / reservations after DEL of all", &|k| {
            sc(k).and_then(|s| s.teardown.as_ref())
                .map_or("–".to_owned(), |t| {
                    format!(
                        "{} / {} (+{} resting), counted {:.0} s after the last DEL (DEL: {} ok, {} failed, {} killed at cap, {} not started)",
                        count(t.leaked_allocations),
                        count(t.leaked_reservations),
                        count(t.resting_allocations),
                        t.drain_s.unwrap_or(0.0),
                        t.ok,
                        t.failed,
                        t.capped,
                        t.not_started
                    )
                })
        });
        // Step by step: ADD latency (and where a peer was) per step.
        out.push_str("\n| step |");
        for k in &scale_systems {
            out.push_str(&format!(
                " {}: allocations, ADD (ms), largest IPPool (KiB), RSS (MiB) |",
                k.label()
            ));
        }
        out.push_str("\n|---:|");
        for _ in &scale_systems {
            out.push_str("---|");
        }
        out.push('\n');
        let steps = scale_systems
            .iter()
            .filter_map(|k| sc(*k))
            .map(|s| s.steps.len())
            .max()
            .unwrap_or(0);
        for i in 0..steps {
            out.push_str(&format!("| {i} |"));
            for k in &scale_systems {
                let cell = sc(*k)
                    .and_then(|s| s.steps.get(i))
                    .map_or("–".to_owned(), |s| {
                        format!(
                            "{}, {}, {}, {}",
                            s.allocations,
                            num(Some(s.probe_p50_ms), 1),
                            num(Some(s.largest_object_bytes as f64 / 1024.0), 0),
                            num(s.controller_rss_kib.map(|r| r as f64 / 1024.0), 0)
                        )
                    });
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    phase_rows(
        &mut out,
        record,
        "idle",
        "add",
        "5a. Idle: ADD one at a time",
    );
    phase_rows(
        &mut out,
        record,
        "idle",
        "del",
        "5b. Idle: DEL one at a time",
    );
    phase_rows(
        &mut out,
        record,
        "idle",
        "version",
        "5c. Idle: VERSION (process start-up)",
    );

    if let Some(floor) = &record.floor {
        out.push_str(&format!(
            "\n**6. Floor: the API server alone**\n\n{} small custom objects (OverlappingRangeIPReservations) created, then each updated once, {} requests in flight, from one client.\n\n\
             | | wall (s) | per second | p50 (ms) | p99 (ms) | failures |\n|---|---:|---:|---:|---:|---:|\n\
             | create | {:.2} | {:.0} | {:.1} | {:.1} | {} |\n| update | {:.2} | {:.0} | {:.1} | {:.1} | {} |\n\n\
             Create + update pairs per second: **{:.0}**, the most allocations per second any IPAM that writes one object and \
             one update per allocation could reach here.",
            floor.objects,
            floor.concurrency,
            floor.create.wall_s,
            floor.create.per_second,
            floor.create.stats.p50_ms,
            floor.create.stats.p99_ms,
            floor.create.requested - floor.create.ok,
            floor.update.wall_s,
            floor.update.per_second,
            floor.update.stats.p50_ms,
            floor.update.stats.p99_ms,
            floor.update.requested - floor.update.ok,
            floor.allocations_per_second,
        ));
        let reached: Vec<String> = systems
            .iter()
            .filter_map(|k| {
                let storm = record.phase(*k, "storm", "add")?;
                Some(format!(
                    "{} {:.0}% ({:.0}% of the create rate)",
                    k.label(),
                    100.0 * storm.per_second / floor.allocations_per_second.max(1e-9),
                    100.0 * storm.per_second / floor.create.per_second.max(1e-9)
                ))
            })
            .collect();
        if reached.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!(" The storms reached: {}.\n", reached.join("; ")));
        }
        if !floor.pool_writes.is_empty() {
            out.push_str(
                "\nOne IPPool replaced again and again, one request at a time, by the entries it holds \
                 (a pool commit rewrites its shards whole: this is the part of an ADD that grows as its shard fills):\n\n\
                 | entries | replaces | p50 (ms) | p95 (ms) |\n|---:|---:|---:|---:|\n",
            );
            for w in &floor.pool_writes {
                out.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1} |\n",
                    w.entries, w.replaces, w.p50_ms, w.p95_ms
                ));
            }
        }
    }
    out.push_str("\n## Notes\n\n");
    for note in &record.notes {
        out.push_str(&format!("- {note}\n"));
    }
    let mut errors = String::new();
    for p in &record.phases {
        for (e, n) in &p.errors {
            errors.push_str(&format!(
                "- {} {}/{}: {n}× {e}\n",
                p.system.label(),
                p.scenario,
                p.phase
            ));
        }
    }
    if !errors.is_empty() {
        out.push_str("\nFailures, by message:\n\n");
        out.push_str(&errors);
    }
    out
}

// === Plot ===

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn plot(record: &Record, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let font = std::fs::read(FONT)
        .map_err(|e| anyhow::anyhow!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;
    let root = BitMapBackend::new(path, (1600, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(50);
    let names: Vec<&str> = record.systems().iter().map(|k| k.label()).collect();
    title.draw(&Text::new(
        format!(
            "{}: {} run, {}",
            names.join(" vs "),
            record.mode,
            record.started
        ),
        (20, 15),
        ("sans-serif", 24).into_font(),
    ))?;
    let panels = body.split_evenly((2, 2));
    let color = |k: Kind| match k {
        Kind::Hereabouts => BLUE,
        Kind::Whereabouts => RED,
        Kind::Whereabouts094 => RGBColor(230, 140, 0),
        Kind::Whereabouts094Slices => RGBColor(0, 150, 60),
    };
    let cdfs: [(&str, &str, &str); 3] = [
        ("storm", "add", "1. Storm: ADD latency, cumulative"),
        (
            "recreation",
            "add",
            "2. Re-creation: ADD latency, cumulative",
        ),
        ("idle", "add", "5. Idle: ADD latency, cumulative"),
    ];
    for (panel, (scenario, phase, caption)) in
        [&panels[0], &panels[1], &panels[3]].into_iter().zip(cdfs)
    {
        let series: Vec<(Kind, Vec<f64>)> = Kind::ALL
            .into_iter()
            .filter_map(|k| {
                let mut v = record.phase(k, scenario, phase)?.latencies_ms.clone();
                v.sort_by(f64::total_cmp);
                (!v.is_empty()).then_some((k, v))
            })
            .collect();
        let (lo, hi) = log_bounds(
            series.iter().map(|(_, v)| v[0]),
            series.iter().map(|(_, v)| v[v.len() - 1]),
        );
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_labels(8)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction of successful calls")
            .draw()?;
        for (kind, v) in &series {
            let n = v.len() as f64;
            chart
                .draw_series(LineSeries::new(
                    v.iter().enumerate().map(|(i, x)| (*x, (i + 1) as f64 / n)),
                    color(*kind).stroke_width(2),
                ))?
                .label(format!("{} ({} ok)", kind.label(), v.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color(*kind).stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    // The scale curve.
    let max_x = record
        .scale
        .iter()
        .flat_map(|s| s.steps.iter().map(|p| p.allocations))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let probes: Vec<f64> = record
        .scale
        .iter()
        .flat_map(|s| s.steps.iter().map(|p| p.probe_p50_ms))
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = log_bounds(probes.iter().copied(), probes.iter().copied());
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "4. Scale: single ADD latency (median) as the /16 fills",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max_x * 1.05, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("allocations in the pool")
        .y_desc("ADD latency (ms, log scale)")
        .draw()?;
    for run in &record.scale {
        let points: Vec<(f64, f64)> = run
            .steps
            .iter()
            .filter(|s| s.probe_p50_ms.is_finite())
            .map(|s| (s.allocations as f64, s.probe_p50_ms))
            .collect();
        let c = color(run.system);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
            .label(format!("{} (reached {})", run.system.label(), run.reached))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The ends of a log-scale axis around the smallest of `lows` and the
/// largest of `highs`, with a margin; a decade around 1 ms when there is
/// nothing to show (plotters never finishes placing the ticks of a log
/// axis with an infinite end).
fn log_bounds(lows: impl Iterator<Item = f64>, highs: impl Iterator<Item = f64>) -> (f64, f64) {
    let lo = lows.fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() {
        lo.max(0.1) * 0.7
    } else {
        1.0
    };
    let hi = highs.fold(1.0, f64::max) * 1.4;
    (lo, hi.max(lo * 10.0))
}
