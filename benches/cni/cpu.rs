//! CPU time each part of the system spent during a phase: the API server,
//! etcd, the controller manager, the system's controller (hereabouts', or
//! whereabouts' node-slice controller), hereabouts' node agents (all of
//! them together), and the plugin processes (this harness's reaped
//! children). Read from /proc, in the kernel's fixed 100 ticks per second.

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use hereabouts_kit::local_dir;

const TICKS_PER_SECOND: f64 = 100.0;

/// The control plane's processes, by the names of the kit's pid files.
const CONTROL_PLANE: [&str; 3] = ["kube-apiserver", "etcd", "kube-controller-manager"];

/// CPU ticks of each part at one moment.
pub struct Meter(BTreeMap<&'static str, u64>);

impl Meter {
    /// Reads the control plane's processes (from the kit's pid files), the
    /// controller `controller` (name, pid) if there is one, the node agents
    /// `agents` (pids) if there are any, and the reaped children.
    pub fn read(controller: Option<(&'static str, u32)>, agents: &[u32]) -> Self {
        let mut ticks = BTreeMap::new();
        for name in CONTROL_PLANE {
            let pid =
                std::fs::read_to_string(local_dir().join("cluster").join(format!("{name}.pid")));
            if let Some(t) = pid.ok().and_then(|p| own_ticks(p.trim())) {
                ticks.insert(name, t);
            }
        }
        if let Some((name, t)) =
            controller.and_then(|(name, p)| Some((name, own_ticks(&p.to_string())?)))
        {
            ticks.insert(name, t);
        }
        if !agents.is_empty() {
            let t = agents
                .iter()
                .filter_map(|p| own_ticks(&p.to_string()))
                .sum();
            ticks.insert("hereabouts-agents", t);
        }
        if let Some(t) = stat("self").map(|f| field(&f, 16) + field(&f, 17)) {
            ticks.insert("plugins", t);
        }
        Meter(ticks)
    }

    /// Seconds spent by each part since `before`.
    pub fn since(&self, before: &Meter) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter_map(|(name, t)| {
                let b = before.0.get(name)?;
                Some((
                    (*name).to_owned(),
                    t.saturating_sub(*b) as f64 / TICKS_PER_SECOND,
                ))
            })
            .collect()
    }
}

fn own_ticks(pid: &str) -> Option<u64> {
    stat(pid).map(|f| field(&f, 14) + field(&f, 15))
}

/// The fields of /proc/<pid>/stat after the command name.
fn stat(pid: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field `n` as numbered in proc(5) (the first after the name is 3).
fn field(fields: &[String], n: usize) -> u64 {
    fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The control plane counts as quiet below this share of one core.
pub const QUIET_BELOW: f64 = 0.15;
/// The window over which that share is measured.
pub const QUIET_WINDOW: Duration = Duration::from_secs(3);
/// The longest the harness waits for quiet.
pub const QUIET_CAP: Duration = Duration::from_secs(180);

/// Waits until the control plane's processes together use less than
/// [`QUIET_BELOW`] of one core over a [`QUIET_WINDOW`], or [`QUIET_CAP`]
/// passed. Returns how long it waited and the last window's share.
pub async fn quiet() -> (Duration, f64) {
    let start = Instant::now();
    loop {
        let before = Meter::read(None, &[]);
        tokio::time::sleep(QUIET_WINDOW).await;
        let spent = Meter::read(None, &[]).since(&before);
        let busy = CONTROL_PLANE
            .iter()
            .filter_map(|name| spent.get(*name))
            .sum::<f64>()
            / QUIET_WINDOW.as_secs_f64();
        if busy < QUIET_BELOW || start.elapsed() >= QUIET_CAP {
            return (start.elapsed(), busy);
        }
    }
}
