//! The invariants, checked against what the API server holds (never the
//! controller's memory): every IPPool (all shards) and every
//! OverlappingRangeIPReservation of the scenario's namespace, whose
//! networks share one network_name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use hereabouts_api::{IPClaim, IPPool, OverlappingRangeIPReservation};
use hereabouts_core::Cidr;
use hereabouts_core::ledger::resting_until;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// An address a pool commits to an attachment.
#[derive(Clone, Debug)]
pub struct Held {
    pub ip: IpAddr,
    pub podref: String,
    pub ifname: String,
    pub pool: String,
}

/// What the API server holds for the namespace.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub allocations: Vec<Held>,
    /// Addresses held for a pod name whose claim went, or cooling down
    /// after a release (pool entries marked with their end): no
    /// attachment's, no leak until they end.
    pub holds: Vec<(Held, SystemTime)>,
    /// (address, podref, object name)
    pub reservations: Vec<(IpAddr, String, String)>,
    pub claims: usize,
}

pub async fn snapshot(
    client: &Client,
    ns: &str,
    network_name: Option<&str>,
) -> anyhow::Result<Snapshot> {
    let pools: Api<IPPool> = Api::namespaced(client.clone(), ns);
    let mut allocations = Vec::new();
    let mut holds = Vec::new();
    for pool in pools.list(&ListParams::default()).await? {
        let cidr: Cidr = pool.spec.range.parse()?;
        for (offset, a) in &pool.spec.allocations {
            let ip = offset
                .parse::<u128>()
                .ok()
                .and_then(|o| cidr.ip_at(o))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "IPPool {} holds offset {offset:?}, not an address of {}",
                        pool.name_any(),
                        pool.spec.range
                    )
                })?;
            let held = Held {
                ip,
                podref: a.podref.clone(),
                ifname: a.ifname.clone(),
                pool: pool.name_any(),
            };
            match resting_until(&a.id) {
                Some(until) => holds.push((held, until)),
                None => allocations.push(held),
            }
        }
    }
    let api: Api<OverlappingRangeIPReservation> = Api::namespaced(client.clone(), ns);
    let mut reservations = Vec::new();
    for r in api.list(&ListParams::default()).await? {
        let name = r.name_any();
        let bare = network_name
            .and_then(|n| name.strip_prefix(&format!("{n}-")))
            .unwrap_or(&name);
        let ip = bare
            .parse::<IpAddr>()
            .or_else(|_| bare.replace('-', ":").parse::<IpAddr>())
            .map_err(|_| anyhow::anyhow!("reservation {name} names no address"))?;
        reservations.push((ip, r.spec.podref.clone(), name));
    }
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    let claims = claims.list(&ListParams::default()).await?.items.len();
    Ok(Snapshot {
        allocations,
        holds,
        reservations,
        claims,
    })
}

impl Snapshot {
    /// What the API server holds, in a line: the evidence beside a failure.
    pub fn describe(&self) -> String {
        let backed: BTreeSet<IpAddr> = self.allocations.iter().map(|a| a.ip).collect();
        let unbacked: Vec<String> = self
            .reservations
            .iter()
            .filter(|(ip, _, _)| !backed.contains(ip))
            .map(|(ip, podref, _)| format!("{ip} for {podref}"))
            .collect();
        format!(
            "the API server holds {} allocations, {} holds, {} reservations ({} with no allocation{}{}), {} IPClaims",
            self.allocations.len(),
            self.holds.len(),
            self.reservations.len(),
            unbacked.len(),
            if unbacked.is_empty() { "" } else { ": " },
            unbacked
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            self.claims
        )
    }
}

/// A live attachment as the runtime knows it: the pod (`ns/name`) and the
/// address its last successful ADD answered.
#[derive(Clone, Debug)]
pub struct Answer {
    pub podref: String,
    pub ip: IpAddr,
}

/// What broke, counted and described.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    pub duplicates: usize,
    /// Answered ADDs whose address the pools do not hold for that pod.
    pub lost: usize,
    pub details: Vec<String>,
}

/// Invariant 1 and 2 over `snap` and the live attachments' answers.
pub fn live(snap: &Snapshot, answers: &[Answer]) -> Findings {
    let mut f = Findings::default();
    // Pools: one holder per address across every pool of the network.
    let mut holders: BTreeMap<IpAddr, BTreeSet<(String, String)>> = BTreeMap::new();
    for a in &snap.allocations {
        holders
            .entry(a.ip)
            .or_default()
            .insert((a.podref.clone(), a.ifname.clone()));
    }
    for (ip, h) in &holders {
        if h.len() > 1 {
            f.duplicates += h.len() - 1;
            f.details
                .push(format!("duplicate: {ip} held in the pools by {h:?}"));
        }
    }
    // Reservations: one per address, naming the pool's holder.
    let mut reserved: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for (ip, podref, _) in &snap.reservations {
        reserved.entry(*ip).or_default().push(podref);
    }
    for (ip, podrefs) in &reserved {
        let pool_holders: BTreeSet<&str> = holders
            .get(ip)
            .map(|h| h.iter().map(|(p, _)| p.as_str()).collect())
            .unwrap_or_default();
        for p in podrefs {
            if !pool_holders.is_empty() && !pool_holders.contains(p) {
                f.duplicates += 1;
                f.details.push(format!(
                    "duplicate: {ip} reserved for {p} while the pool holds it for {pool_holders:?}"
                ));
            }
        }
    }
    // Answers: two live attachments never got one address.
    let mut answered: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for a in answers {
        answered.entry(a.ip).or_default().insert(&a.podref);
    }
    for (ip, pods) in &answered {
        if pods.len() > 1 {
            f.duplicates += pods.len() - 1;
            f.details
                .push(format!("duplicate: {ip} answered to live {pods:?}"));
        }
    }
    // Every answered ADD is held in its pool for that pod and interface.
    for a in answers {
        let held = holders.get(&a.ip).is_some_and(|h| {
            h.iter()
                .any(|(p, ifname)| *p == a.podref && ifname == "net1")
        });
        if !held {
            f.lost += 1;
            f.details.push(format!(
                "lost: {} was answered {} but the pools hold it for {:?}",
                a.podref,
                a.ip,
                holders.get(&a.ip)
            ));
        }
    }
    f
}

/// Waits until the namespace holds no allocation and no reservation, or
/// nothing has changed for `quiet`; returns (allocations, reservations,
/// claims) left, how long it took, and the leftovers described.
pub async fn drain(
    client: &Client,
    ns: &str,
    network_name: Option<&str>,
    quiet: Duration,
) -> anyhow::Result<(usize, usize, usize, Duration, Vec<String>)> {
    let started = Instant::now();
    let mut last = ((usize::MAX, usize::MAX, usize::MAX), usize::MAX);
    let mut progressed = Instant::now();
    loop {
        let snap = snapshot(client, ns, network_name).await?;
        // A hold that ended and is still there is a leak; one that lasts
        // is not (yet), but the drain waits for it to end and go.
        let now = SystemTime::now();
        let ended: Vec<&Held> = snap
            .holds
            .iter()
            .filter(|(_, until)| *until <= now)
            .map(|(h, _)| h)
            .collect();
        let left = (
            snap.allocations.len() + ended.len(),
            snap.reservations.len(),
            snap.claims,
        );
        let progress = (left, snap.holds.len());
        if progress != last {
            last = progress;
            progressed = Instant::now();
        }
        if progress == ((0, 0, 0), 0) || progressed.elapsed() > quiet {
            let mut details: Vec<String> = snap
                .allocations
                .iter()
                .chain(ended.iter().copied())
                .take(5)
                .map(|a| format!("leak: {} still held for {} in {}", a.ip, a.podref, a.pool))
                .collect();
            details.extend(
                snap.reservations
                    .iter()
                    .take(5)
                    .map(|(ip, p, n)| format!("leak: reservation {n} ({ip}) for {p} left")),
            );
            return Ok((left.0, left.1, left.2, started.elapsed(), details));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
