//! OverlappingRangeIPReservations: one object per address, named after it
//! (whereabouts' rule), shared by every range of a `network_name`. Creating
//! one is the cross-pool uniqueness check: it fails when an overlapping
//! range holds the address. The pool actors reserve before they commit an
//! allocation and unreserve after they commit a release; the garbage
//! collector removes reservations that no allocation backs.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::core::ObjectMeta;

use hereabouts_api::{
    IPPool, MANAGED_BY, OverlappingRangeIPReservation, OverlappingRangeIPReservationSpec,
};
use hereabouts_core::Allocation;

use super::compact::{self, Uid};
use super::shared::Shared;

/// A reservation as this controller last wrote or read it: enough to
/// delete exactly that object later without reading it first. One per
/// allocation in two maps: the UID as its bytes, the namespace shared, the
/// version a boxed string (a third smaller than a `String`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Written {
    uid: Option<Uid>,
    resource_version: Option<Box<str>>,
    /// The namespace of the pod it names (its `podref`).
    pod_namespace: Option<Arc<str>>,
}

impl Written {
    pub fn of(object: &OverlappingRangeIPReservation) -> Self {
        Written {
            uid: object.metadata.uid.as_deref().map(Uid::new),
            resource_version: object.metadata.resource_version.as_deref().map(Into::into),
            pod_namespace: object
                .spec
                .podref
                .split_once('/')
                .map(|(ns, _)| compact::namespace(ns)),
        }
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.pod_namespace.as_deref()
    }
}

/// Reservations this replica's pool actors are writing and have not yet
/// committed a pool write for, by name, with the pools writing them:
/// found by another actor, they are an overlapping range's, not orphans of
/// an earlier leader.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks reservation names as being written by `pool`'s actor until
    /// the returned guard is dropped.
    pub fn reserving(&self, pool: &str, names: impl Iterator<Item = String>) -> Reserving {
        let names: Vec<String> = names.collect();
        let mut book = self.lock();
        for name in &names {
            book.entry(name.clone()).or_default().push(pool.to_owned());
        }
        Reserving {
            pool: pool.to_owned(),
            names,
            in_flight: self.clone(),
        }
    }

    /// Whether an actor of this replica is writing the reservation `name`
    /// now.
    pub fn reserving_now(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Whether an actor of this replica other than `pool`'s is writing the
    /// reservation `name` now.
    fn reserved_in_flight(&self, name: &str, pool: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|writers| writers.iter().any(|w| w != pool))
    }
}

/// Holds names in [`InFlight`] until dropped.
#[derive(Debug)]
pub struct Reserving {
    pool: String,
    names: Vec<String>,
    in_flight: InFlight,
}

impl Drop for Reserving {
    fn drop(&mut self) {
        let mut book = self.in_flight.lock();
        for name in &self.names {
            if let Some(writers) = book.get_mut(name) {
                if let Some(i) = writers.iter().position(|w| *w == self.pool) {
                    writers.swap_remove(i);
                }
                if writers.is_empty() {
                    book.remove(name);
                }
            }
        }
    }
}

/// Annotation a take-over writes, so the object's version changes even
/// when its spec does not.
pub const TAKEN_OVER: &str = "hereabouts.dev/taken-over";
/// Annotation naming the IPPool object (shard) the reservation was
/// written for: where its allocation is, or was about to be, committed.
pub const WRITTEN_FOR: &str = "hereabouts.dev/pool";
/// Annotation on a pool shard written only to make older writes of it
/// fail (see [`orphaned`]).
pub const FENCED: &str = "hereabouts.dev/fenced";

/// Who took a reservation over, and when (unique per take-over).
fn takeover_token(ctx: &Shared) -> String {
    format!(
        "{}@{}",
        ctx.identity,
        k8s_openapi::jiff::Timestamp::now().as_nanosecond()
    )
}

/// How a reservation went.
#[derive(Debug)]
pub enum Reserved {
    /// Reserved for the owner (now, or taken over), as written.
    Held(Written),
    /// Another attachment holds it: the address is an overlapping range's.
    Elsewhere,
    /// It changed while we looked (or our leadership went stale): nothing
    /// is known; decide again.
    Changed,
}

/// Reserves `ip` for `owner`.
///
/// A reservation held by an attachment for which `ours` says yes is taken
/// over (replaced, with its resourceVersion as precondition): the caller
/// knows it to be its own leftover, e.g. of an address it is releasing in
/// the same batch, or of one it gave another request of the batch in an
/// attempt that did not commit. Taking those for an overlapping range's
/// would pass the address over for a minute, and in a storm shift every
/// later request of the batch onto an address reserved for the next one.
///
/// A reservation this controller wrote for an allocation that was never
/// committed (its leader died or was deposed between the reservation and
/// the pool write, or the release that should have removed it was lost)
/// is resolved here, when it is in the way, not on the collector's
/// schedule: see [`orphaned`].
pub async fn reserve(
    ctx: &Shared,
    network_name: Option<&str>,
    ip: IpAddr,
    owner: &Allocation,
    writer: &Writer,
    ours: impl Fn(&OverlappingRangeIPReservationSpec) -> bool,
) -> Result<Reserved, kube::Error> {
    let Ok(name) = hereabouts_core::reservation_name(network_name, ip) else {
        // A name Kubernetes would refuse cannot be reserved; the pool's
        // own uniqueness still holds.
        return Ok(Reserved::Held(Written::default()));
    };
    let api: Api<OverlappingRangeIPReservation> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let object = OverlappingRangeIPReservation {
        metadata: ObjectMeta {
            name: Some(name.as_str().to_owned()),
            labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
            annotations: Some([(WRITTEN_FOR.to_owned(), writer.shard.clone())].into()),
            ..Default::default()
        },
        spec: OverlappingRangeIPReservationSpec {
            containerid: owner.container_id.to_string(),
            podref: owner.pod_ref.to_string(),
            ifname: owner.ifname.to_string(),
        },
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok(Reserved::Held(Written::of(&created))),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let Some(mut existing) = api.get_opt(name.as_str()).await? else {
                // Removed in between (a release finishing): try once more.
                return match api.create(&PostParams::default(), &object).await {
                    Ok(created) => Ok(Reserved::Held(Written::of(&created))),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Reserved::Changed),
                    Err(e) => Err(e),
                };
            };
            // Ours (its owner, or a leftover of this batch) only if written
            // for this pool, or before pools were recorded (whereabouts, an
            // older hereabouts): another pool's reservation of the same
            // owner protects that pool's address.
            let this_pool = existing
                .annotations()
                .get(WRITTEN_FOR)
                .is_none_or(|shard| writer.owns(shard));
            let same_owner =
                *existing.spec.podref == *owner.pod_ref && *existing.spec.ifname == *owner.ifname;
            // Whether it is held elsewhere is only known under leadership
            // (an orphan check that found the Lease stale must not mark the
            // address foreign for a minute): unsure means decide again.
            if !ctx.leadership.is_leader() {
                return Ok(Reserved::Changed);
            }
            if !(this_pool && (same_owner || ours(&existing.spec))) {
                match orphaned(ctx, &existing, name.as_str(), ip, writer).await? {
                    Orphan::Yes => {}
                    Orphan::No => return Ok(Reserved::Elsewhere),
                    Orphan::Unsure => return Ok(Reserved::Changed),
                }
            }
            if !ctx.leadership.is_leader() {
                return Ok(Reserved::Changed);
            }
            // Taken over, even from the same owner: the object must change,
            // so anyone still holding it as it was (a release of an earlier
            // attempt or term, the collector's cache) fails the uid and
            // version precondition of its delete instead of removing the
            // reservation this allocation now relies on.
            existing.spec = object.spec;
            let annotations = existing.annotations_mut();
            annotations.insert(TAKEN_OVER.to_owned(), takeover_token(ctx));
            annotations.insert(WRITTEN_FOR.to_owned(), writer.shard.clone());
            match api
                .replace(name.as_str(), &PostParams::default(), &existing)
                .await
            {
                Ok(replaced) => Ok(Reserved::Held(Written::of(&replaced))),
                // Changed or deleted since read: decide again.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(Reserved::Changed),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Which pool (base and shard object) a reservation is written for, and
/// the fences of the commit attempt writing it.
#[derive(Clone, Debug)]
pub struct Writer {
    pub base: String,
    pub shard: String,
    pub fences: Arc<Fences>,
    /// What the replica's other pool actors are reserving now.
    pub in_flight: InFlight,
}

impl Writer {
    /// Whether the IPPool object `name` is a shard of this writer's pool.
    fn owns(&self, name: &str) -> bool {
        name == self.base
            || name
                .strip_prefix(&self.base)
                .and_then(|rest| rest.strip_prefix("-s"))
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// Pool shards of other pools fenced during one commit attempt: by shard
/// name, the offsets it held when fenced, or `None` when the fence failed
/// (someone wrote it in between: decide again later). One fence per shard
/// serves every orphan found in it.
pub type Fences =
    tokio::sync::Mutex<HashMap<String, Option<(HashSet<u128>, hereabouts_core::Cidr)>>>;

/// Whether `existing`, found in the way of an allocation, is an orphan
/// this replica may take over: written by hereabouts (whereabouts' own are
/// left to the collector) for a pool shard that does not hold its address,
/// and not being written by another pool actor of this replica right now.
///
/// Written for a shard of the caller's own pool: the caller's pool write,
/// which carries the version the caller decided from (without the address),
/// is the fence: a pending write of the dead writer and ours cannot both
/// commit. Written for another pool's shard: its writer may still be alive
/// (a deposed leader that has not noticed, about to write that shard with
/// the version it read before it stalled), so the shard is first written
/// back unchanged but for an annotation, with the version just read as
/// precondition: once that succeeds, any write prepared against an older
/// version fails, and the shard as read (without the address) stays true.
async fn orphaned(
    ctx: &Shared,
    existing: &OverlappingRangeIPReservation,
    name: &str,
    ip: IpAddr,
    writer: &Writer,
) -> Result<Orphan, kube::Error> {
    if existing.labels().get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1) {
        return Ok(Orphan::No);
    }
    let Some(shard_name) = existing.annotations().get(WRITTEN_FOR) else {
        return Ok(Orphan::No);
    };
    if writer.in_flight.reserved_in_flight(name, &writer.base) {
        return Ok(Orphan::No);
    }
    if !ctx.leadership.is_leader() {
        return Ok(Orphan::Unsure);
    }
    if writer.owns(shard_name) {
        tracing::info!(reservation = name, pool = %shard_name, "taking over a reservation our pool does not back");
        return Ok(Orphan::Yes);
    }
    let mut fences = writer.fences.lock().await;
    if !fences.contains_key(shard_name) {
        let fenced = fence(ctx, shard_name).await?;
        // Not fenced because the Lease looked stale: nothing learnt, and
        // nothing kept for the batch's other reservations either.
        if fenced.is_none() && !ctx.leadership.is_leader() {
            return Ok(Orphan::Unsure);
        }
        fences.insert(shard_name.clone(), fenced);
    }
    // A fence that failed (the shard written in between, its writer
    // alive): passed over like any held elsewhere, and tried again later.
    let Some((held, cidr)) = fences.get(shard_name).and_then(Option::as_ref) else {
        return Ok(Orphan::No);
    };
    if cidr.offset_of(ip).is_some_and(|o| !held.contains(&o)) {
        tracing::info!(reservation = name, pool = %shard_name, "taking over a reservation no allocation backs");
        return Ok(Orphan::Yes);
    }
    Ok(Orphan::No)
}

/// Whether a reservation in the way is an orphan this replica may take over.
enum Orphan {
    Yes,
    /// Held elsewhere: the address is passed over.
    No,
    /// Not known now (leadership unsure, also when a fence found it so):
    /// decide again.
    Unsure,
}

/// Reads the pool shard `name` and writes it back with a new annotation
/// (precondition: the version read); the offsets it held and its CIDR when
/// that succeeded.
async fn fence(
    ctx: &Shared,
    name: &str,
) -> Result<Option<(HashSet<u128>, hereabouts_core::Cidr)>, kube::Error> {
    let pools: Api<IPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // A shard not made yet cannot be fenced by a write: leave it.
    let Some(mut shard) = pools.get_opt(name).await? else {
        return Ok(None);
    };
    let Ok((_, cidr)) = hereabouts_core::Cidr::parse_with_host(&shard.spec.range) else {
        return Ok(None);
    };
    let held = shard
        .spec
        .allocations
        .keys()
        .filter_map(|k| hereabouts_core::parse_allocation_key(k))
        .collect();
    if !ctx.leadership.is_leader() {
        return Ok(None);
    }
    shard
        .annotations_mut()
        .insert(FENCED.to_owned(), takeover_token(ctx));
    match pools.replace(name, &PostParams::default(), &shard).await {
        Ok(_) => Ok(Some((held, cidr))),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the reservation of `ip` if `owner` still holds it, and only
/// while this replica leads (a release batch's removals outlive the batch;
/// a deposed leader's must not run on).
///
/// With `written` (the object as this controller wrote it) that is one
/// conditional DELETE, and an object changed since is left alone: it was
/// taken over, perhaps by the same pod and interface again, and the
/// collector removes it if nothing backs it. With nothing known, it is
/// read first and removed only if it still names the same container (or
/// none: whereabouts writes none).
pub async fn unreserve(
    ctx: &Shared,
    network_name: Option<&str>,
    ip: IpAddr,
    owner: &Allocation,
    written: Option<&Written>,
) -> Result<(), kube::Error> {
    let Ok(name) = hereabouts_core::reservation_name(network_name, ip) else {
        return Ok(());
    };
    if !ctx.leadership.is_leader() {
        return Ok(());
    }
    let api: Api<OverlappingRangeIPReservation> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(written) = written.filter(|w| w.uid.is_some() && w.resource_version.is_some()) {
        return delete_exact(&api, name.as_str(), written).await;
    }
    let Some(existing) = api.get_opt(name.as_str()).await? else {
        return Ok(());
    };
    // whereabouts writes no container ID into its reservations; ours
    // always carry one, and another container's is a newer holder's.
    let container_matches =
        existing.spec.containerid.is_empty() || *existing.spec.containerid == *owner.container_id;
    if *existing.spec.podref != *owner.pod_ref
        || *existing.spec.ifname != *owner.ifname
        || !container_matches
        || !ctx.leadership.is_leader()
    {
        return Ok(());
    }
    delete_exact(&api, name.as_str(), &Written::of(&existing)).await
}

/// Deletes the reservation `name` only if it is still exactly `written`
/// (uid and version); gone or changed since counts as done.
pub async fn delete_exact(
    api: &Api<OverlappingRangeIPReservation>,
    name: &str,
    written: &Written,
) -> Result<(), kube::Error> {
    match delete_if_unchanged(api, name, written).await {
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        other => other,
    }
}

async fn delete_if_unchanged(
    api: &Api<OverlappingRangeIPReservation>,
    name: &str,
    written: &Written,
) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: written.uid.as_ref().map(ToString::to_string),
            resource_version: written.resource_version.as_deref().map(str::to_owned),
        }),
        ..Default::default()
    };
    api.delete(name, &params).await.map(|_| ())
}
