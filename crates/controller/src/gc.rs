//! The garbage collector: returns what pods no longer hold.
//!
//! It runs on a cron schedule and soon after pods are deleted. Each pass
//! looks at every allocation of every pool, every claim and every
//! reservation, and releases only what it has found orphaned twice, at
//! least the grace period apart (Calico's rule).
//!
//! What counts as orphaned:
//! - a claim, when its pod (by UID) is gone;
//! - an allocation, when the claims of its (pod, interface) no longer ask
//!   for its pool; or, with no claim for it (an allocation adopted from
//!   whereabouts), when its pod (by name) is gone or no longer lists the
//!   address in its network-status;
//! - a reservation, when no allocation holds its address;
//! - a hold (a pool entry keeping an address for a pod name whose claim
//!   went, see `hereabouts_core::ledger`) or a cooldown (a released
//!   address resting), when its time is up;
//! - an IPAMClaim's allocation, when the IPAMClaim is gone (checked against
//!   the API server before the release: never while it exists).
//!
//! A pod object that still exists keeps its addresses, Terminating
//! included: a pod deleted with a long grace period, held by a finalizer
//! or stuck on a partitioned node still runs with them.
//!
//! A controller scoped to some namespaces (`--watch-namespace`) sees only
//! their pods, claims and NADs, so it collects only allocations and
//! reservations whose pod lives in them; everything else in the shared
//! pools is left alone, and pools are not pruned (NADs elsewhere may want
//! them).
//!
//! Releases go through the pool actors with the exact container ID seen,
//! so an address that changed hands in between is left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::Notify;
use tokio::time::Instant;

use hereabouts_api::{ClaimRange, IPAMClaim, IPClaim, IPPool, NetworkAttachmentDefinition};
use hereabouts_core::ledger::{resting_until, rests};
use hereabouts_core::{network_name_of, possible_network_names};

use super::caches::{ClaimEntry, PodEntry, PoolEntry, split_key};
use super::compact::Uid;
use super::context::{Context, Interfaces};
use super::index::Index;
use super::pools::{ReleaseBy, ReleaseReason};
use super::reservations;

#[derive(Clone, Debug)]
pub struct GcConfig {
    pub schedule: croner::Cron,
    pub grace: Duration,
}

/// The caches a pass reads.
#[derive(Clone, Debug)]
pub struct Caches {
    /// IPPool objects by name.
    pub pools: Index<PoolEntry>,
    /// Every claim by `namespace/name`.
    pub claims: Index<Box<ClaimEntry>>,
    /// Reservations by name, as last seen.
    pub reservations: Index<reservations::Written>,
    /// Pods by `namespace/name`.
    pub pods: Index<Box<PodEntry>>,
    pub nads: Store<NetworkAttachmentDefinition>,
    pub ipamclaims: Store<IPAMClaim>,
}

/// Something found orphaned, identified precisely enough that a release
/// cannot hit a successor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Suspect {
    Allocation {
        /// The range's base pool, and the object that holds the entry
        /// (the base itself or one of its shards: the base may be gone).
        pool: String,
        object: String,
        ip: IpAddr,
        container_id: String,
        podref: String,
        ifname: String,
    },
    /// The claim exactly as seen (uid and version): one re-pointed at a
    /// new pod since (an ADD of a pod re-created under the same name) has
    /// another version, and a deletion of what was seen fails.
    Claim {
        namespace: String,
        name: String,
        uid: String,
        resource_version: String,
        pod: String,
        pod_uid: String,
    },
    /// The reservation exactly as seen (uid and version): changed since,
    /// it is another suspect, and a deletion of what was seen fails.
    Reservation {
        name: String,
        written: reservations::Written,
    },
}

/// Runs passes forever: on the schedule, after `pods_deleted` fires, and
/// when a suspect's grace period is over.
pub async fn run(
    ctx: Arc<Context>,
    config: GcConfig,
    caches: Caches,
    scope: Option<String>,
    pods_deleted: Arc<Notify>,
) {
    let mut collector = Collector {
        ctx,
        config,
        caches,
        scope,
        first_seen: HashMap::new(),
    };
    loop {
        let now = k8s_openapi::jiff::Zoned::now();
        let until_cron = collector
            .config
            .schedule
            .find_next_occurrence(&now, false)
            .ok()
            .and_then(|next| {
                Duration::try_from(next.timestamp().duration_since(now.timestamp())).ok()
            })
            .unwrap_or(Duration::from_secs(300));
        let until_recheck = collector
            .first_seen
            .values()
            .map(|seen| (*seen + collector.config.grace).saturating_duration_since(Instant::now()))
            .min()
            .map(|d| d + Duration::from_millis(100));
        let wait = until_recheck.map_or(until_cron, |r| r.min(until_cron));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = pods_deleted.notified() => {
                // Let a burst of deletions settle into one pass.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if collector.ctx.leadership.is_leader() {
            let started = std::time::Instant::now();
            collector.pass().await;
            collector.ctx.metrics.reconciled("gc", started.elapsed());
        } else {
            collector.first_seen.clear();
        }
    }
}

struct Collector {
    ctx: Arc<Context>,
    config: GcConfig,
    caches: Caches,
    /// The only namespace whose pods and claims this controller sees.
    scope: Option<String>,
    first_seen: HashMap<Suspect, Instant>,
}

impl Collector {
    #[tracing::instrument(skip_all)]
    async fn pass(&mut self) {
        let suspects = self.suspects();
        // Forget what is no longer suspect; act on what stayed suspect for
        // the whole grace period.
        self.first_seen.retain(|s, _| suspects.contains(s));
        // Due: seen in an earlier pass too (twice, whatever the grace,
        // even zero), the grace period apart.
        let now = Instant::now();
        let mut due = Vec::new();
        for suspect in suspects {
            match self.first_seen.get(&suspect) {
                Some(seen) if now.duration_since(*seen) >= self.config.grace => due.push(suspect),
                Some(_) => {}
                None => {
                    self.first_seen.insert(suspect, now);
                }
            }
        }
        let mut fresh = Fresh::default();
        for suspect in due {
            if self.reclaim(&suspect, &mut fresh).await {
                self.first_seen.remove(&suspect);
            }
        }
        if self.scope.is_none() {
            super::nad::prune(&self.ctx, &self.caches.nads, &self.caches.pools).await;
        }
    }

    /// Everything orphaned now, as the caches say.
    fn suspects(&self) -> HashSet<Suspect> {
        let pods = self.caches.pods.read();
        let claims = self.caches.claims.read();
        // The claims of live pods, by (pod namespace, pod name, interface),
        // sorted: borrowed from the index, one pair per claim (a map of
        // owned keys and pool name sets cost several allocations per claim
        // on every pass).
        let mut asked: Vec<(Attachment<'_>, &ClaimEntry)> = Vec::new();
        let mut suspects: HashSet<Suspect> = HashSet::new();
        for (key, claim) in claims.iter() {
            let (namespace, name) = split_key(key);
            let pod_ref = format!("{}/{}", claim.pod_namespace(namespace), claim.pod_name);
            // Its own pod: that name, in the claim's namespace, with that
            // UID (a claim naming another pod's name or UID backs nothing).
            let pod = pods.get(pod_ref.as_str());
            let own_pod_lives = pod.is_some_and(|p| claim.of_own_pod(p.uid()));
            if own_pod_lives && claim.refused {
                // Refused: asks for nothing, and stays while its pod does.
            } else if own_pod_lives {
                let attachment = (
                    claim.pod_namespace(namespace),
                    &*claim.pod_name,
                    &*claim.interface,
                );
                asked.push((attachment, &**claim));
            } else if !claim.deleting {
                suspects.insert(Suspect::Claim {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid: claim.uid.to_string(),
                    resource_version: claim.resource_version.to_string(),
                    pod: pod_ref,
                    pod_uid: claim.pod_uid.to_string(),
                });
            }
        }
        let in_scope = |podref: &str| {
            self.scope.as_deref().is_none_or(|ns| {
                podref
                    .split_once('/')
                    .is_some_and(|(pod_ns, _)| pod_ns == ns)
            })
        };
        asked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let declared = declared_network_names(&self.caches.nads);
        let ipamclaims_referenced = super::ipamclaims::referenced(&pods);
        let mut reserved_names: HashSet<String> = HashSet::new();
        let pools = self.caches.pools.read();
        let doubled = doubled_offsets(&pools);
        for pool in pools.values() {
            let Ok((_, cidr)) = hereabouts_core::Cidr::parse_with_host(&pool.range) else {
                continue;
            };
            let base = pool.base.to_string();
            reserved_names.extend(reservation_names(pool, &declared));
            for a in &pool.allocations {
                let Some(ip) = cidr.ip_at(a.offset) else {
                    continue;
                };
                if doubled.contains(&(&*pool.base, a.offset)) {
                    // Two entries of the range for one address (keys such
                    // as "05" and "5", made by hand): the pool actor keeps
                    // one of them, and a release of either could drop the
                    // other, a live one. Left to the admin.
                    continue;
                }
                if !in_scope(&a.podref) {
                    continue;
                }
                let id = a.id.to_string();
                let live = if let Some(until) = resting_until(&id) {
                    // A hold (an address kept for a pod name whose claim
                    // went) or a cooldown (an address resting after its
                    // release) is no leak while it lasts; once ended it
                    // goes, by its marker (no second cooldown), as does one
                    // further away than any the ledger writes.
                    rests(until, std::time::SystemTime::now())
                } else if let Some((ns, name)) = hereabouts_api::claim_of_podref(&a.podref) {
                    // An IPAMClaim's address lives while the claim does,
                    // whichever pods come and go, and while a pod that
                    // references it exists (Terminating included).
                    self.caches
                        .ipamclaims
                        .get(&ObjectRef::new(name).within(ns))
                        .is_some()
                        || ipamclaims_referenced.contains(&(ns.to_owned(), name.to_owned()))
                } else {
                    let mut asking = claims_of(&asked, &a.podref, &a.ifname).peekable();
                    if asking.peek().is_some() {
                        // Claims are the record of hereabouts' attachments:
                        // the address lives while one of them asks for its
                        // pool.
                        asking.any(|c| claim_pools(c.network_name(), &c.ranges).contains(&base))
                    } else {
                        // No claim (an adopted whereabouts allocation): the
                        // pod object, Terminating or not, and what Multus
                        // recorded.
                        pods.get(&*a.podref).is_some_and(|p| p.lists(ip))
                    }
                };
                if !live {
                    suspects.insert(Suspect::Allocation {
                        pool: base.clone(),
                        object: pool.name.to_string(),
                        ip,
                        container_id: id,
                        podref: a.podref.to_string(),
                        ifname: a.ifname.to_string(),
                    });
                }
            }
        }
        // A scoped controller cannot know every network's pools (their NADs
        // may live where it does not look): it deletes only reservations of
        // pods in its namespace.
        let reservations = self.caches.reservations.read();
        let in_scope = |w: &reservations::Written| {
            self.scope
                .as_deref()
                .is_none_or(|ns| w.pod_namespace() == Some(ns))
        };
        for (name, reservation) in reservations.iter().filter(|(_, w)| in_scope(w)) {
            if !reserved_names.contains(&**name) {
                suspects.insert(Suspect::Reservation {
                    name: name.to_string(),
                    written: reservation.clone(),
                });
            }
        }
        suspects
    }

    /// Whether the API server itself (not the caches) says the suspect is
    /// still orphaned; `Err` when it could not be asked.
    async fn confirmed(&self, suspect: &Suspect, fresh: &mut Fresh) -> Result<bool, kube::Error> {
        let ctx = &self.ctx;
        match suspect {
            Suspect::Allocation { container_id, .. } if resting_until(container_id).is_some() => {
                Ok(true)
            }
            Suspect::Allocation { podref, .. }
                if hereabouts_api::claim_of_podref(podref).is_some() =>
            {
                // An IPAMClaim's address goes only when the API server, not
                // just the cache (which may lag, or lack the CRD's watch),
                // says the claim is gone.
                let (ns, name) = hereabouts_api::claim_of_podref(podref).unwrap_or_default();
                let api: Api<IPAMClaim> = Api::namespaced(ctx.client.clone(), ns);
                Ok(api.get_opt(name).await?.is_none()
                    && !super::ipamclaims::referenced_now(ctx, ns, name).await?)
            }
            Suspect::Allocation {
                pool,
                ip,
                podref,
                ifname,
                ..
            } => {
                let Some(pod) = fresh.pod(ctx, podref).await?.cloned() else {
                    return Ok(true);
                };
                let namespace = pod.namespace().unwrap_or_default();
                let uid = Uid::new(&pod.uid().unwrap_or_default());
                // Read now, under the interface's lock (`reclaim`), not
                // once per pass: a claim answered from this very entry
                // since the pass began must be seen.
                let claims = super::claims::pod_claims(ctx, &namespace, &pod.name_any()).await?;
                // The same rule as `suspects`, on what the API server says
                // (each claim read as the cache's index reads it).
                let mine: Vec<Box<ClaimEntry>> = claims
                    .iter()
                    .map(ClaimEntry::of)
                    .filter(|(key, c)| {
                        format!("{}/{}", c.pod_namespace(split_key(key).0), c.pod_name) == *podref
                            && *c.interface == **ifname
                            && c.of_own_pod(&uid)
                            && !c.refused
                    })
                    .map(|(_, c)| c)
                    .collect();
                if mine.is_empty() {
                    let (_, entry) = PodEntry::of(&pod);
                    Ok(!entry.lists(*ip))
                } else {
                    Ok(!mine
                        .iter()
                        .any(|c| claim_pools(c.network_name(), &c.ranges).contains(pool)))
                }
            }
            Suspect::Claim { pod, pod_uid, .. } => Ok(fresh
                .pod(ctx, pod)
                .await?
                .is_none_or(|p| p.uid().as_deref() != Some(pod_uid.as_str()))),
            Suspect::Reservation { name, .. } => {
                // A reservation a commit of this replica is writing now is
                // backed by the pool write that follows.
                if ctx.pools.reserving_now(name) {
                    return Ok(false);
                }
                let declared = declared_network_names(&self.caches.nads);
                Ok(!fresh.reserved(ctx, &declared).await?.contains(name))
            }
        }
    }

    /// Releases one orphan; true when done (or nothing left to do).
    async fn reclaim(&self, suspect: &Suspect, fresh: &mut Fresh) -> bool {
        let ctx = &self.ctx;
        // Every deletion below is fenced on the lease, one by one: a pass
        // can outlast leadership.
        if !ctx.leadership.is_leader() {
            return false;
        }
        // A pod's entry is checked and released while its interface is
        // held, as the claim reconciler holds it to answer: a claim
        // answered from the entry after the check would otherwise lose
        // its address to the release.
        let _held = match suspect {
            Suspect::Allocation {
                podref,
                ifname,
                container_id,
                ..
            } if resting_until(container_id).is_none()
                && hereabouts_api::claim_of_podref(podref).is_none() =>
            {
                let (namespace, name) = podref.split_once('/').unwrap_or(("", podref));
                Some(
                    ctx.interfaces
                        .hold(Interfaces::key(namespace, name, ifname))
                        .await,
                )
            }
            _ => None,
        };
        match self.confirmed(suspect, fresh).await {
            Ok(true) => {}
            // Not orphaned after all: forget it (the caches will say so
            // too, or it is found again and confirmed again).
            Ok(false) => return true,
            Err(e) => {
                tracing::debug!(?suspect, error = %e, "cannot confirm an orphan; next pass retries");
                return false;
            }
        }
        if !ctx.leadership.is_leader() {
            return false;
        }
        match suspect {
            Suspect::Allocation {
                pool,
                object,
                ip,
                container_id,
                ..
            } => {
                // The object that held the entry (the range's base may be
                // gone: pruned, or deleted by hand, with a shard left).
                let Some((object, range)) = self
                    .caches
                    .pools
                    .read()
                    .get(object.as_str())
                    .map(|p| (p.object_ref(&ctx.namespace), p.range.clone()))
                else {
                    return true;
                };
                let Ok((_, cidr)) = hereabouts_core::Cidr::parse_with_host(&range) else {
                    return true;
                };
                let network_name = network_name_of(pool, &cidr);
                let by = ReleaseBy::Exact {
                    ip: *ip,
                    container_id: container_id.clone(),
                };
                match ctx
                    .pools
                    .release(
                        &cidr,
                        network_name.as_deref(),
                        by,
                        ReleaseReason::Collected {
                            cooldown: ctx.release.cooldown,
                        },
                    )
                    .await
                {
                    Ok(released) => {
                        if released {
                            ctx.metrics.reclaimed("allocation");
                            tracing::info!(pool, %ip, container_id, "reclaimed a leaked address");
                            ctx.event(
                                &object,
                                EventType::Normal,
                                "AddressReclaimed",
                                "GarbageCollect",
                                format!("released {ip}: its pod is gone or no longer holds it"),
                            )
                            .await;
                        }
                        true
                    }
                    Err(e) => {
                        tracing::warn!(pool, %ip, error = %e, "could not reclaim; next pass retries");
                        false
                    }
                }
            }
            Suspect::Claim {
                namespace,
                name,
                uid,
                resource_version,
                ..
            } => {
                let api: Api<IPClaim> = Api::namespaced(ctx.client.clone(), namespace);
                let exactly = super::shared::delete_exactly(
                    &api,
                    name,
                    Some(uid.clone()),
                    Some(resource_version.clone()),
                );
                match exactly.await {
                    Ok(true) => {
                        ctx.metrics.reclaimed("claim");
                        tracing::info!(namespace, name, "deleted a claim whose pod is gone");
                        true
                    }
                    Ok(false) => true,
                    Err(e) => {
                        tracing::warn!(namespace, name, error = %e, "could not delete orphaned claim");
                        false
                    }
                }
            }
            Suspect::Reservation { name, written } => {
                // The version seen when it was found orphaned, twice: one
                // taken over since (by an allocation that needs it) has
                // another, and the precondition spares it.
                let api = Api::namespaced(ctx.client.clone(), &ctx.namespace);
                match reservations::delete_exact(&api, name, written).await {
                    Ok(()) => {
                        ctx.metrics.reclaimed("reservation");
                        tracing::info!(name, "deleted a reservation no allocation backs");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(name, error = %e, "could not delete orphaned reservation");
                        false
                    }
                }
            }
        }
    }
}

/// The names of the reservations that back `pool`'s allocations. Pools
/// hereabouts created are named exactly; whereabouts' (an adopted pool may
/// carry our shard labels since) may be node-slice pools, whose names
/// leave the network name ambiguous: every reading counts.
fn reservation_names(pool: &PoolEntry, declared: &HashSet<String>) -> Vec<String> {
    let Ok((_, cidr)) = hereabouts_core::Cidr::parse_with_host(&pool.range) else {
        return Vec::new();
    };
    let base = &*pool.base;
    let network_names = if pool.managed {
        vec![network_name_of(base, &cidr)]
    } else {
        possible_network_names(base, &cidr, declared)
    };
    let mut names = Vec::new();
    for a in &pool.allocations {
        let Some(ip) = cidr.ip_at(a.offset) else {
            continue;
        };
        for network_name in &network_names {
            if let Ok(name) = hereabouts_core::reservation_name(network_name.as_deref(), ip) {
                names.push(name.into_string());
            }
        }
    }
    names
}

/// What a pass read from the API server itself before acting: the caches
/// decide who is suspect, but a cache can lag (a stalled watch, a commit
/// not yet seen), so nothing is released on their word alone.
#[derive(Default)]
struct Fresh {
    /// Pods by `namespace/name` (`None`: gone).
    pods: HashMap<String, Option<Pod>>,
    /// The reservation names today's pools back.
    reserved: Option<HashSet<String>>,
}

impl Fresh {
    async fn pod(&mut self, ctx: &Context, podref: &str) -> Result<Option<&Pod>, kube::Error> {
        if !self.pods.contains_key(podref) {
            let (namespace, name) = podref.split_once('/').unwrap_or(("", podref));
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            let pod = api.get_opt(name).await?;
            self.pods.insert(podref.to_owned(), pod);
        }
        Ok(self.pods.get(podref).and_then(Option::as_ref))
    }

    async fn reserved(
        &mut self,
        ctx: &Context,
        declared: &HashSet<String>,
    ) -> Result<&HashSet<String>, kube::Error> {
        if self.reserved.is_none() {
            let api: Api<IPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let pools = api.list(&kube::api::ListParams::default()).await?;
            self.reserved = Some(
                pools
                    .items
                    .iter()
                    .flat_map(|p| reservation_names(&PoolEntry::of(p).1, declared))
                    .collect(),
            );
        }
        Ok(self.reserved.get_or_insert_default())
    }
}

/// The (base pool, offset) pairs that more than one entry of a range
/// holds. Only an entry out of place (a key not written as its offset, or
/// in another shard than its offset's) can share its offset, so the range
/// is counted only where there is one (on a pass over 60,000 entries,
/// usually nowhere).
fn doubled_offsets(pools: &BTreeMap<Box<str>, PoolEntry>) -> HashSet<(&str, u128)> {
    let out_of_place: HashSet<(&str, u128)> = pools
        .values()
        .flat_map(|p| {
            p.allocations
                .iter()
                .filter(|a| !a.in_place)
                .map(|a| (&*p.base, a.offset))
        })
        .collect();
    if out_of_place.is_empty() {
        return HashSet::new();
    }
    let mut seen: HashMap<(&str, u128), usize> = HashMap::new();
    for p in pools.values() {
        for a in &p.allocations {
            let at = (&*p.base, a.offset);
            if out_of_place.contains(&at) {
                *seen.entry(at).or_default() += 1;
            }
        }
    }
    let doubled: HashSet<(&str, u128)> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(at, _)| at)
        .collect();
    for (pool, offset) in &doubled {
        tracing::warn!(
            pool,
            offset,
            "two entries of the range hold one address: the collector leaves both"
        );
    }
    doubled
}

/// (pod namespace, pod name, interface).
type Attachment<'a> = (&'a str, &'a str, &'a str);

/// The claims of `asked` (sorted by attachment) for the pod `podref`
/// (`namespace/name`) and `ifname`.
fn claims_of<'a>(
    asked: &'a [(Attachment<'a>, &'a ClaimEntry)],
    podref: &'a str,
    ifname: &'a str,
) -> impl Iterator<Item = &'a ClaimEntry> {
    let wanted = podref
        .split_once('/')
        .map(|(namespace, name)| (namespace, name, ifname));
    let start = wanted.map_or(asked.len(), |w| asked.partition_point(|(a, _)| *a < w));
    asked[start..]
        .iter()
        .take_while(move |(a, _)| Some(*a) == wanted)
        .map(|(_, claim)| *claim)
}

/// The base pool names a claim's ranges live in.
fn claim_pools(network_name: Option<&str>, ranges: &[ClaimRange]) -> Vec<String> {
    ranges
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let range = r.parse(i).ok()?;
            Some(
                hereabouts_core::pool_name(network_name, range.cidr())
                    .ok()?
                    .into_string(),
            )
        })
        .collect()
}

/// The `network_name`s NADs declare.
fn declared_network_names(nads: &Store<NetworkAttachmentDefinition>) -> HashSet<String> {
    nads.state()
        .iter()
        .filter_map(|nad| hereabouts_core::find_ipam_sections(&nad.spec.config).ok())
        .flatten()
        .filter_map(|section| {
            section
                .ipam
                .get("network_name")?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_entries_for_one_address_are_found_only_where_one_is_out_of_place() {
        use crate::caches::tests::pool;
        let index = |pools: &[hereabouts_api::IPPool]| {
            pools
                .iter()
                .map(|p| {
                    let (key, entry) = PoolEntry::of(p);
                    (key.into_boxed_str(), entry)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let canonical = index(&[pool("a", &[], &[("5", "x"), ("6", "y")])]);
        assert!(doubled_offsets(&canonical).is_empty());
        let doubled = index(&[pool("a", &[], &[("05", "x"), ("5", "y"), ("+7", "z")])]);
        assert_eq!(doubled_offsets(&doubled), HashSet::from([("a", 5)]));
    }

    fn claim(pod: &str, interface: &str, network: &str) -> Box<ClaimEntry> {
        let claim: hereabouts_api::IPClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "hereabouts.dev/v1alpha1",
            "kind": "IPClaim",
            "metadata": {"name": format!("{pod}-{interface}"), "namespace": "ns", "uid": "u"},
            "spec": {
                "network": {"namespace": "ns", "name": network},
                "ranges": [{"range": "100.64.0.0/24"}],
                "interface": interface,
                "pod": {"namespace": "ns", "name": pod, "uid": "pu"},
                "containerID": "c",
                "node": "n"
            }
        }))
        .expect("claim");
        ClaimEntry::of(&claim).1
    }

    #[test]
    fn the_claims_of_an_attachment_are_found_by_its_pool_entry() {
        let claims = [
            claim("b", "net1", "x"),
            claim("a", "net2", "x"),
            claim("a", "net1", "x"),
            claim("a", "net1", "y"),
        ];
        let mut asked: Vec<(Attachment<'_>, &ClaimEntry)> = claims
            .iter()
            .map(|c| (("ns", &*c.pod_name, &*c.interface), &**c))
            .collect();
        asked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let networks = |podref, ifname| -> Vec<String> {
            claims_of(&asked, podref, ifname)
                .map(|c| c.network.to_string())
                .collect()
        };
        let mut both = networks("ns/a", "net1");
        both.sort();
        assert_eq!(both, ["x", "y"]);
        assert_eq!(networks("ns/a", "net2"), ["x"]);
        assert_eq!(networks("ns/b", "net1"), ["x"]);
        assert!(networks("ns/b", "net2").is_empty());
        assert!(networks("other/a", "net1").is_empty());
        assert!(networks("a", "net1").is_empty(), "no namespace");
        assert!(networks("ns/a/net1", "net1").is_empty());
        assert!(networks("ns/c", "net1").is_empty(), "past the last");
    }
}
