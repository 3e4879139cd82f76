//! The pool book: one actor task per IPPool, the only code that writes
//! pools.
//!
//! An actor owns the [`Ledger`] of its range (where every allocation
//! decision is made, in `hereabouts-core`) and serves allocate and release
//! commands in batches: everything queued while the previous write was in
//! flight is decided by the ledger, then committed with
//! one compare-and-swap write per touched shard (the write carries the
//! resourceVersion the decision was computed from). Only after the write
//! succeeds are the waiting callers answered. A conflict means someone else
//! wrote the pool (a deposed leader's write lands nowhere): the actor
//! reloads from the API server and decides the whole batch again, which is
//! safe because allocation is idempotent per (pod, interface).
//!
//! Large ranges are sharded: offsets `[k * SHARD_SPAN, (k+1) * SHARD_SPAN)`
//! live in the IPPool `<name>-s<k>` (shard 0 is `<name>` itself, the object
//! whereabouts knows), so no object outgrows etcd's limit whatever the
//! range. Allocations found elsewhere (an adopted whereabouts pool holding
//! offsets beyond shard 0) stay where they are until released.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use hereabouts_api::{
    IPPool, IPPoolSpec, IPPoolStatus, MANAGED_BY, POOL_LABEL, SHARD_LABEL, label_value,
};
use hereabouts_core::ledger::{self, FOREIGN_RECHECK, Ledger};
pub use hereabouts_core::ledger::{ReleaseBy, ReleaseReason};
use hereabouts_core::{AllocError, Allocation, IpRange, SHARD_SPAN, shard_index, shard_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::index::Index;
use super::reservations::{self, InFlight};
use super::shared::Shared;

/// Attempts at one batch before its callers get an error (each conflict
/// costs a reload, so this bounds the work a hostile writer can cause).
const MAX_ATTEMPTS: u32 = 20;

/// Reservation removals in flight at once, over all of a pool's release
/// batches.
const UNRESERVE_CONCURRENCY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Alloc(#[from] AllocError),
    #[error("{0}")]
    Naming(#[from] hereabouts_core::NamingError),
    /// The API server refused or failed a read or write of the pool: the
    /// error as the client gave it (status code, Retry-After included),
    /// shared by every caller of the batch it failed.
    #[error("IPPool {pool}: {source}")]
    Api {
        pool: String,
        #[source]
        source: Arc<kube::Error>,
    },
    /// The pool kept changing under the actor (or held what it cannot
    /// have): it gave up on the batch for now.
    #[error("IPPool {pool}: {message}")]
    Contended { pool: String, message: String },
    #[error("this replica is not the leader")]
    NotLeader,
    #[error("pool {pool} stopped")]
    Stopped { pool: String },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Alloc(e) => e.metric_label(),
            Error::Naming(e) => e.metric_label(),
            Error::Api { .. } => "api_error",
            Error::Contended { .. } => "contended",
            Error::NotLeader => "not_leader",
            Error::Stopped { .. } => "stopped",
        }
    }

    /// How long the API server asked callers to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { source, .. } => super::shared::retry_after(source),
            _ => None,
        }
    }

    /// Whether asking again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Api { .. } | Error::Contended { .. } | Error::NotLeader | Error::Stopped { .. }
        )
    }
}

/// What a claim asks of one range.
#[derive(Clone, Debug)]
pub struct AllocRequest {
    pub range: IpRange,
    pub network_name: Option<String>,
    pub overlapping: bool,
    pub owner: Allocation,
    pub static_ip: Option<IpAddr>,
}

impl AllocRequest {
    fn to_ledger(&self) -> ledger::Request {
        ledger::Request {
            range: self.range.clone(),
            owner: self.owner.clone(),
            static_ip: self.static_ip,
            reserve: self.overlapping,
        }
    }
}

/// An address committed to a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

enum Command {
    Allocate(AllocRequest, oneshot::Sender<Result<Grant, Error>>),
    /// An overlapping pool released `ip` and removed its reservation.
    Freed(IpAddr),
    /// A range configuration of the pool, learnt from a claim that
    /// releases (what the status counts against, for an actor that has
    /// allocated nothing yet: a new leader's).
    Learn(IpRange),
    Release(
        ReleaseBy,
        ReleaseReason,
        oneshot::Sender<Result<bool, Error>>,
    ),
}

/// Routes commands to the actor of each pool, starting actors on demand.
#[derive(Debug)]
pub struct PoolBook {
    shared: Arc<Shared>,
    actors: Actors,
    /// Reservations this replica's actors are writing and have not yet
    /// committed a pool write for.
    in_flight: InFlight,
    /// Reservations by name, as last seen.
    reservations: Index<reservations::Written>,
}

/// The running actors by pool name, shared with the actors themselves (a
/// release tells the other pools of its network).
#[derive(Clone, Debug, Default)]
struct Actors(Arc<std::sync::Mutex<HashMap<String, ActorHandle>>>);

#[derive(Debug)]
struct ActorHandle {
    network_name: Option<String>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Actors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActorHandle>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the other pools of `network_name` that `ip` is free of its
    /// reservation, so one that passed it over may hand it out again.
    fn freed(&self, network_name: Option<&str>, from: &str, ip: IpAddr) {
        for (pool, handle) in self.lock().iter() {
            if pool != from && handle.network_name.as_deref() == network_name {
                let _ = handle.commands.send(Command::Freed(ip));
            }
        }
    }
}

impl PoolBook {
    pub fn new(shared: Arc<Shared>, reservations: Index<reservations::Written>) -> Self {
        PoolBook {
            shared,
            actors: Actors::default(),
            in_flight: InFlight::default(),
            reservations,
        }
    }

    fn sender(
        &self,
        pool: &str,
        cidr: &hereabouts_core::Cidr,
        network_name: Option<&str>,
    ) -> mpsc::UnboundedSender<Command> {
        let mut actors = self.actors.lock();
        if let Some(handle) = actors.get(pool).filter(|h| !h.commands.is_closed()) {
            return handle.commands.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = Actor::new(
            self,
            pool.to_owned(),
            *cidr,
            network_name.map(str::to_owned),
        );
        tokio::spawn(actor.run(rx));
        actors.insert(
            pool.to_owned(),
            ActorHandle {
                network_name: network_name.map(str::to_owned),
                commands: tx.clone(),
            },
        );
        tx
    }

    /// Whether an actor of this replica is writing the reservation `name`
    /// now (its pool write has not yet landed).
    pub fn reserving_now(&self, name: &str) -> bool {
        self.in_flight.reserving_now(name)
    }

    /// Commits an address for `request.owner` in the pool of `request.range`.
    pub async fn allocate(&self, request: AllocRequest) -> Result<Grant, Error> {
        let pool = pool_name(&request.range, request.network_name.as_deref())?;
        let (tx, rx) = oneshot::channel();
        let cidr = *request.range.cidr();
        let network_name = request.network_name.clone();
        self.sender(&pool, &cidr, network_name.as_deref())
            .send(Command::Allocate(request, tx))
            .map_err(|_| Error::Stopped { pool: pool.clone() })?;
        rx.await.map_err(|_| Error::Stopped { pool })?
    }

    /// Releases an allocation; `Ok(false)` when there was nothing to release.
    pub async fn release(
        &self,
        cidr: &hereabouts_core::Cidr,
        network_name: Option<&str>,
        by: ReleaseBy,
        reason: ReleaseReason,
    ) -> Result<bool, Error> {
        let pool = hereabouts_core::pool_name(network_name, cidr)?.into_string();
        let (tx, rx) = oneshot::channel();
        self.sender(&pool, cidr, network_name)
            .send(Command::Release(by, reason, tx))
            .map_err(|_| Error::Stopped { pool: pool.clone() })?;
        rx.await.map_err(|_| Error::Stopped { pool })?
    }

    /// Tells the pool of `range` one of its range configurations (a claim
    /// releasing its addresses names it), before its release.
    pub fn learn(&self, range: &IpRange, network_name: Option<&str>) {
        if let Ok(pool) = pool_name(range, network_name) {
            let _ = self
                .sender(&pool, range.cidr(), network_name)
                .send(Command::Learn(range.clone()));
        }
    }

    /// Stops every actor (leadership lost): their state may be stale by the
    /// time this replica leads again, so the next command reloads.
    pub fn clear(&self) {
        self.actors.lock().clear();
    }
}

fn pool_name(range: &IpRange, network_name: Option<&str>) -> Result<String, Error> {
    Ok(hereabouts_core::pool_name(network_name, range.cidr())?.into_string())
}

#[derive(Debug, Default, Clone)]
struct Shard {
    /// The object's name as read (`None` until it exists).
    name: Option<String>,
    /// `None`: the object does not exist (yet).
    resource_version: Option<String>,
    /// Its labels, annotations, owner references and finalizers as read:
    /// kept on every write (an adopted pool's belong to whoever set them).
    kept: ObjectMeta,
    /// Its status as read or last written: a shard's is written again only
    /// when what it says changes.
    status: Option<IPPoolStatus>,
}

struct Actor {
    ctx: Arc<Shared>,
    /// The other actors of this replica, told when a release frees an
    /// address of the network...
    actors: Actors,
    /// ...and the reservations they are writing.
    in_flight: InFlight,
    /// Reservations by name, as last seen: a hint of which addresses
    /// overlapping ranges hold.
    reservation_cache: Index<reservations::Written>,
    api: Api<IPPool>,
    base: String,
    cidr: hereabouts_core::Cidr,
    network_name: Option<String>,
    loaded: bool,
    shards: BTreeMap<u128, Shard>,
    /// Every allocation decision: the truth, holds, foreign marks, shards.
    ledger: Ledger,
    /// The reservations of this pool's allocations as they were written,
    /// so a release deletes its reservation without reading it first.
    reservations: BTreeMap<u128, reservations::Written>,
    /// Released addresses whose reservations are still being removed, each
    /// by a task of its own. The actor goes on meanwhile; a batch handing
    /// out one of those offsets waits for that offset's removal only.
    unreserving: HashMap<u128, JoinHandle<()>>,
    /// Bounds the removals in flight over all of `unreserving`.
    unreserve_slots: Arc<Semaphore>,
    status_dirty: bool,
    exhausted: bool,
}

struct Pending {
    request: AllocRequest,
    reply: oneshot::Sender<Result<Grant, Error>>,
}

struct PendingRelease {
    by: ReleaseBy,
    reason: ReleaseReason,
    reply: oneshot::Sender<Result<bool, Error>>,
}

impl Actor {
    fn new(
        book: &PoolBook,
        base: String,
        cidr: hereabouts_core::Cidr,
        network_name: Option<String>,
    ) -> Self {
        let ctx = book.shared.clone();
        let api = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let ledger = Ledger::new(cidr);
        Actor {
            ctx,
            actors: book.actors.clone(),
            in_flight: book.in_flight.clone(),
            reservation_cache: book.reservations.clone(),
            api,
            base,
            cidr,
            network_name,
            loaded: false,
            shards: BTreeMap::new(),
            ledger,
            reservations: BTreeMap::new(),
            unreserving: HashMap::new(),
            unreserve_slots: Arc::new(Semaphore::new(UNRESERVE_CONCURRENCY)),
            status_dirty: false,
            exhausted: false,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let idle_status_delay = Duration::from_millis(500);
        loop {
            let first = if self.status_dirty {
                match tokio::time::timeout(idle_status_delay, rx.recv()).await {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        self.write_status().await;
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(first) = first else { return };
            let mut allocs = Vec::new();
            let mut releases = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next {
                match cmd {
                    Command::Allocate(request, reply) => allocs.push(Pending { request, reply }),
                    Command::Freed(ip) => {
                        if let Some(offset) = self.cidr.offset_of(ip) {
                            self.ledger.freed(offset);
                        }
                    }
                    Command::Release(by, reason, reply) => {
                        releases.push(PendingRelease { by, reason, reply });
                    }
                    Command::Learn(range) => self.ledger.learn(&range),
                }
                next = rx.try_recv().ok();
            }
            if !allocs.is_empty() || !releases.is_empty() {
                self.serve(allocs, releases).await;
            }
        }
    }

    /// Decides a batch in memory, commits it, answers the callers. After a
    /// conflict the pool is reloaded (dropping the uncommitted decisions)
    /// and the whole batch decided again.
    #[tracing::instrument(skip_all, fields(pool = %self.base, allocations = allocs.len(), releases = releases.len()))]
    async fn serve(&mut self, allocs: Vec<Pending>, releases: Vec<PendingRelease>) {
        let started = Instant::now();
        let batch = allocs.len() + releases.len();
        // Attempts that only learnt of addresses held elsewhere made
        // progress (each learns at least one more, and there are finitely
        // many) and do not use up the budget meant for write conflicts.
        let mut attempt = 0;
        let mut learning = 0u128;
        // Whether the ledger was read from the API server for this batch.
        let mut read_now = false;
        // What the ledger is asked, once for every attempt.
        let asked: Vec<ledger::Request> = allocs.iter().map(|p| p.request.to_ledger()).collect();
        let requests: Vec<&ledger::Request> = asked.iter().collect();
        let releasing: Vec<(ReleaseBy, ReleaseReason)> =
            releases.iter().map(|r| (r.by.clone(), r.reason)).collect();
        let to_release: Vec<(&ReleaseBy, ReleaseReason)> =
            releasing.iter().map(|(by, reason)| (by, *reason)).collect();
        while attempt < MAX_ATTEMPTS && learning <= self.cidr.last_offset() {
            if !self.ctx.leadership.is_leader() {
                fail_all(allocs, releases, || Error::NotLeader);
                return;
            }
            if !self.loaded {
                if let Err(e) = self.load().await {
                    tracing::warn!(pool = %self.base, error = %e, "loading pool failed");
                    let e = Arc::new(e);
                    fail_all(allocs, releases, || self.kube_error(&e));
                    return;
                }
                read_now = true;
            }
            let decided = self
                .ledger
                .decide(&requests, &to_release, std::time::SystemTime::now());
            // The ledger is what this actor last read or wrote; another
            // hand may have written the pool since. A write of this batch
            // would meet a conflict and read again, but an answer that
            // writes nothing (a release that found nothing, an address
            // granted again) would stand on the old read: a leaked entry
            // never collected, an address answered that the pool no
            // longer holds. Such answers come from a fresh read.
            if !read_now && decided.unwitnessed {
                tracing::debug!(pool = %self.base, "an answer rests on no write; reading the pool again");
                self.loaded = false;
                continue;
            }
            self.await_unreserved(decided.reserve.iter().map(|(o, _)| *o))
                .await;
            match self.commit(&decided).await {
                Ok(written) => {
                    self.ctx.metrics.pool_commit(batch, started.elapsed());
                    let released = self.finish(allocs, releases, decided, written);
                    self.unreserve(released);
                    return;
                }
                Err(CommitError::Conflict) => {
                    attempt += 1;
                    self.ctx.metrics.pool_conflict();
                    tracing::debug!(pool = %self.base, attempt, "pool changed under us; reloading");
                }
                Err(CommitError::Reservations(ips)) => {
                    learning += 1;
                    let learnt = self.learn_foreign(&ips);
                    tracing::debug!(pool = %self.base, found = ips.len(), learnt, "addresses reserved by an overlapping range");
                    let until = std::time::SystemTime::now() + FOREIGN_RECHECK;
                    let offsets = ips.iter().filter_map(|ip| self.cidr.offset_of(*ip));
                    self.ledger.mark_foreign(offsets.collect::<Vec<_>>(), until);
                }
                Err(CommitError::NotLeader) => {
                    self.loaded = false;
                    fail_all(allocs, releases, || Error::NotLeader);
                    return;
                }
                Err(CommitError::Api(e)) => {
                    self.loaded = false;
                    tracing::warn!(pool = %self.base, error = %e, "pool write failed");
                    let e = Arc::new(e);
                    fail_all(allocs, releases, || self.kube_error(&e));
                    return;
                }
            }
            self.loaded = false;
        }
        fail_all(allocs, releases, || {
            self.contended("gave up after repeated write conflicts")
        });
    }

    /// After reservations of `found` turned out to be held elsewhere: marks
    /// every other address of this range that the reservation cache says
    /// is reserved and this pool does not hold, so the next attempt passes
    /// over all of them at once (a /24 half held by an overlapping /25
    /// would otherwise learn one address per attempt). The cache is only a
    /// hint: an address it wrongly calls taken waits for the recheck or
    /// for its release to be heard; one it wrongly calls free fails its
    /// reservation like before. Returns how many were marked.
    fn learn_foreign(&mut self, found: &[IpAddr]) -> usize {
        if found.is_empty() {
            return 0;
        }
        let until = std::time::SystemTime::now() + FOREIGN_RECHECK;
        let network_name = self.network_name.as_deref();
        let offsets: Vec<u128> = self
            .reservation_cache
            .read()
            .keys()
            .filter_map(|name| hereabouts_core::reservation_address(network_name, name))
            .filter_map(|ip| self.cidr.offset_of(ip))
            .collect();
        let unreserving = &self.unreserving;
        self.ledger
            .suspect(offsets, until, |o| unreserving.contains_key(&o))
    }

    fn contended(&self, message: &str) -> Error {
        Error::Contended {
            pool: self.base.clone(),
            message: message.to_owned(),
        }
    }

    fn kube_error(&self, e: &Arc<kube::Error>) -> Error {
        Error::Api {
            pool: self.base.clone(),
            source: e.clone(),
        }
    }

    /// Reads every shard of the pool from the API server.
    async fn load(&mut self) -> Result<(), kube::Error> {
        let selector = format!("{POOL_LABEL}={}", label_value(&self.base));
        let mut objects = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        if !objects
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(self.base.as_str()))
        {
            // Shard 0 may be a whereabouts pool without our labels.
            if let Some(base) = self.api.get_opt(&self.base).await? {
                objects.push(base);
            }
        }
        self.shards.clear();
        let last_offset = self.cidr.last_offset();
        let mut odd = 0u128;
        let mut entries = Vec::new();
        for pool in objects {
            let name = pool.metadata.name.clone().unwrap_or_default();
            let Some(index) = ledger::shard_of_name(&self.base, last_offset, &name, &mut odd)
            else {
                continue;
            };
            if hereabouts_core::Cidr::parse_with_host(&pool.spec.range).map(|(_, c)| c)
                != Ok(self.cidr)
            {
                tracing::warn!(pool = %name, found = %pool.spec.range, expected = %self.cidr,
                    "IPPool range differs from what its name says; offsets are read against the name's");
            }
            self.shards.insert(
                index,
                Shard {
                    name: Some(name),
                    resource_version: pool.metadata.resource_version.clone(),
                    kept: ObjectMeta {
                        labels: pool.metadata.labels.clone(),
                        annotations: pool.metadata.annotations.clone(),
                        owner_references: pool.metadata.owner_references.clone(),
                        finalizers: pool.metadata.finalizers.clone(),
                        ..Default::default()
                    },
                    status: pool.status.clone(),
                },
            );
            let allocations = pool
                .spec
                .allocations
                .into_iter()
                .map(|(key, a)| (key, Allocation::new(a.id, a.podref, a.ifname)));
            entries.push((index, allocations));
        }
        for warning in self.ledger.load(entries) {
            let (index, key, what) = match warning {
                ledger::LoadWarning::BadKey { shard, key } => (
                    shard,
                    key,
                    "allocation key is not an offset in the range; ignored",
                ),
                ledger::LoadWarning::Duplicate { shard, key } => (
                    shard,
                    key,
                    "offset allocated in two shards; the first read wins",
                ),
            };
            tracing::warn!(pool = %self.object_name(index), key, "{what}");
        }
        self.loaded = true;
        self.status_dirty = true;
        Ok(())
    }

    /// Writes reservations, then every touched shard with its
    /// resourceVersion precondition.
    /// Returns the reservations of the addresses the batch released, as
    /// this actor wrote them.
    async fn commit(
        &mut self,
        decided: &ledger::Decision,
    ) -> Result<BTreeMap<u128, reservations::Written>, CommitError> {
        if !self.ctx.leadership.is_leader() {
            return Err(CommitError::NotLeader);
        }
        let mut written_now = Vec::new();
        // Held until the pool write is done: till then another pool of
        // this replica must not take these reservations for orphans.
        let mut reserving = None;
        if !decided.reserve.is_empty() {
            // Reservations this batch may replace: those of the addresses it
            // releases, and those an uncommitted attempt of it made.
            let ours: Arc<HashSet<(String, String)>> = Arc::new(
                decided
                    .released
                    .iter()
                    .chain(&decided.reserve)
                    .map(|(_, a)| (a.pod_ref.clone(), a.ifname.clone()))
                    .map(|(p, i)| (p.to_string(), i.to_string()))
                    .collect(),
            );
            reserving = Some(
                self.in_flight.reserving(
                    &self.base,
                    decided
                        .reserve
                        .iter()
                        .filter_map(|(o, _)| self.cidr.ip_at(*o))
                        .filter_map(|ip| {
                            hereabouts_core::reservation_name(self.network_name.as_deref(), ip).ok()
                        })
                        .map(hereabouts_core::ReservationName::into_string),
                ),
            );
            let fences: Arc<reservations::Fences> = Arc::default();
            let results = join_all(decided.reserve.iter().map(|(offset, owner)| {
                let ip = self.cidr.ip_at(*offset);
                let ctx = self.ctx.clone();
                let network_name = self.network_name.clone();
                let owner = owner.clone();
                let ours = ours.clone();
                let writer = reservations::Writer {
                    base: self.base.clone(),
                    shard: self.object_name(self.ledger.shard_of(*offset)),
                    fences: fences.clone(),
                    in_flight: self.in_flight.clone(),
                };
                async move {
                    let Some(ip) = ip else {
                        return Reserved::Skipped;
                    };
                    let ours = |spec: &hereabouts_api::OverlappingRangeIPReservationSpec| {
                        ours.contains(&(spec.podref.clone(), spec.ifname.clone()))
                    };
                    match reservations::reserve(
                        &ctx,
                        network_name.as_deref(),
                        ip,
                        &owner,
                        &writer,
                        ours,
                    )
                    .await
                    {
                        Ok(reservations::Reserved::Held(written)) => {
                            Reserved::Done(*offset, written)
                        }
                        Ok(reservations::Reserved::Elsewhere) => Reserved::Foreign(ip),
                        Ok(reservations::Reserved::Changed) => Reserved::Changed,
                        Err(e) => Reserved::Failed(e),
                    }
                }
            }))
            .await;
            // What the reservations said is only known under leadership:
            // a reservation call that found the Lease stale (a slow
            // renewal) answers "not mine", which must not mark an address
            // foreign for a minute.
            if !self.ctx.leadership.is_leader() {
                return Err(CommitError::NotLeader);
            }
            // Every address an overlapping range holds is learnt in one
            // attempt, not one per attempt.
            let mut foreign = Vec::new();
            let mut changed = false;
            for r in results {
                match r {
                    Reserved::Done(offset, written) => written_now.push((offset, written)),
                    Reserved::Foreign(ip) => foreign.push(ip),
                    Reserved::Changed => changed = true,
                    Reserved::Failed(e) => return Err(CommitError::Api(e)),
                    Reserved::Skipped => {}
                }
            }
            if !foreign.is_empty() {
                return Err(CommitError::Reservations(foreign));
            }
            if changed {
                return Err(CommitError::Conflict);
            }
        }
        if !self.ctx.leadership.is_leader() {
            return Err(CommitError::NotLeader);
        }
        let writes = decided.touched.iter().map(|&index| {
            let object = self.shard_object(index);
            let api = self.api.clone();
            let exists = self
                .shards
                .get(&index)
                .is_some_and(|s| s.resource_version.is_some());
            async move {
                let result = if exists {
                    api.replace(
                        &object.metadata.name.clone().unwrap_or_default(),
                        &PostParams::default(),
                        &object,
                    )
                    .await
                } else {
                    api.create(&PostParams::default(), &object).await
                };
                (index, result)
            }
        });
        let mut conflict = false;
        let mut failure = None;
        for (index, result) in join_all(writes).await {
            match result {
                Ok(written) => {
                    self.shards.entry(index).or_default().resource_version =
                        written.metadata.resource_version;
                }
                // 409: changed since read; 404: deleted (an empty pool
                // pruned) since read. Either way: reload and decide again.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => conflict = true,
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            return Err(CommitError::Api(e));
        }
        if conflict {
            return Err(CommitError::Conflict);
        }
        if !decided.touched.is_empty() {
            self.status_dirty = true;
        }
        // The reservations of released addresses as written, taken out
        // before this batch's own go in: an address released and handed
        // out again in one batch must have its former holder's removed
        // (a taken-over reservation then fails the precondition and is
        // read again), never the new holder's.
        let released = decided
            .released
            .iter()
            .filter_map(|(o, _)| Some((*o, self.reservations.remove(o)?)))
            .collect();
        self.reservations.extend(written_now);
        drop(reserving);
        Ok(released)
    }

    /// The IPPool object of shard `index`: as read, else as named.
    fn object_name(&self, index: u128) -> String {
        self.shards
            .get(&index)
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| shard_name(&self.base, index))
    }

    fn shard_object(&self, index: u128) -> IPPool {
        let shard = self.shards.get(&index).cloned().unwrap_or_default();
        let allocations = self
            .ledger
            .shard_entries(index)
            .into_iter()
            .map(|(key, a)| (key, to_crd(&a)))
            .collect();
        let name = self.object_name(index);
        let mut labels = shard.kept.labels.clone().unwrap_or_default();
        labels.insert(POOL_LABEL.to_owned(), label_value(&self.base));
        if name == shard_name(&self.base, index) {
            labels.insert(SHARD_LABEL.to_owned(), index.to_string());
        }
        // A pool whereabouts made stays whereabouts' to prune; ours say so.
        if shard.resource_version.is_none() {
            labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
        }
        if index != 0 {
            labels.insert(
                "hereabouts.dev/shard-of".to_owned(),
                label_value(&self.base),
            );
        }
        IPPool {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.ctx.namespace.clone()),
                resource_version: shard.resource_version,
                labels: Some(labels),
                ..shard.kept
            },
            spec: IPPoolSpec {
                range: self.cidr.to_string(),
                allocations,
            },
            status: None,
        }
    }

    /// Answers the callers; returns the released addresses and their
    /// former holders, whose reservations go next.
    fn finish(
        &mut self,
        allocs: Vec<Pending>,
        releases: Vec<PendingRelease>,
        decided: ledger::Decision,
        mut written: BTreeMap<u128, reservations::Written>,
    ) -> Vec<(IpAddr, Allocation, Option<reservations::Written>)> {
        let prefix_len = self.cidr.prefix_len();
        let mut allocs: Vec<Option<Pending>> = allocs.into_iter().map(Some).collect();
        let mut exhausted = false;
        for (i, result) in decided.allocs.into_iter().enumerate() {
            let Some(pending) = allocs.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let answer = match result {
                Ok(offset) => match self.cidr.ip_at(offset) {
                    Some(ip) => {
                        self.ctx.metrics.allocated();
                        Ok(Grant { ip, prefix_len })
                    }
                    None => Err(self.contended("allocated offset outside the range")),
                },
                Err(e) => {
                    if matches!(e, AllocError::Exhausted { .. }) {
                        exhausted = true;
                    }
                    self.ctx.metrics.failed(e.metric_label());
                    Err(Error::Alloc(e))
                }
            };
            let _ = pending.reply.send(answer);
        }
        if exhausted != self.exhausted {
            self.exhausted = exhausted;
            self.status_dirty = true;
        }
        let mut releases: Vec<Option<PendingRelease>> = releases.into_iter().map(Some).collect();
        for (i, released) in decided.releases.into_iter().enumerate() {
            let Some(pending) = releases.get_mut(i).and_then(Option::take) else {
                continue;
            };
            if released {
                self.ctx.metrics.released(pending.reason.metric_label());
                if self.exhausted {
                    self.exhausted = false;
                    self.status_dirty = true;
                }
            }
            let _ = pending.reply.send(Ok(released));
        }
        decided
            .released
            .iter()
            .filter_map(|(o, a)| Some((self.cidr.ip_at(*o)?, a.clone(), written.remove(o))))
            .collect()
    }

    /// Starts removing the reservations of addresses this batch released,
    /// in a task of its own: a mass deletion's releases are not held up by
    /// one removal per address.
    ///
    /// They go after the pool write, so a crash in between leaves a
    /// reservation the collector removes, never an allocation without its
    /// reservation. And a later batch that hands one of these addresses out
    /// waits for them first ([`Actor::await_unreserved`]): a released
    /// address is the lowest free one, the next to be handed out, and its
    /// new holder's reservation must not find the old one still there (it
    /// would be taken for an overlapping range's and the address passed
    /// over for a minute: a pod storm right after a mass deletion then ran
    /// out of addresses), nor have it deleted under it.
    fn unreserve(&mut self, released: Vec<(IpAddr, Allocation, Option<reservations::Written>)>) {
        self.unreserving.retain(|_, task| !task.is_finished());
        for (ip, owner, written) in released {
            let Some(offset) = self.cidr.offset_of(ip) else {
                continue;
            };
            let ctx = self.ctx.clone();
            let actors = self.actors.clone();
            let network_name = self.network_name.clone();
            let base = self.base.clone();
            let slots = self.unreserve_slots.clone();
            let task = tokio::spawn(async move {
                let Ok(_slot) = slots.acquire().await else {
                    return;
                };
                let unreserved = reservations::unreserve(
                    &ctx,
                    network_name.as_deref(),
                    ip,
                    &owner,
                    written.as_ref(),
                );
                match unreserved.await {
                    Ok(()) => actors.freed(network_name.as_deref(), &base, ip),
                    Err(e) => {
                        tracing::debug!(%ip, error = %e, "removing reservation failed; the collector retries");
                    }
                }
            });
            // An earlier removal of the same offset is older than this
            // release: this one supersedes it.
            if let Some(earlier) = self.unreserving.insert(offset, task) {
                earlier.abort();
            }
        }
    }

    /// Waits until the reservations of those of `offsets` released
    /// earlier are removed.
    async fn await_unreserved(&mut self, offsets: impl IntoIterator<Item = u128>) {
        if self.unreserving.is_empty() {
            return;
        }
        let offsets: Vec<u128> = offsets.into_iter().collect();
        for offset in offsets {
            let Some(task) = self.unreserving.remove(&offset) else {
                continue;
            };
            if let Err(e) = task.await
                && !e.is_cancelled()
            {
                tracing::warn!(pool = %self.base, error = %e, "reservation removal ended abnormally");
            }
        }
    }

    /// Writes every shard's status: which shard it is, the addresses it
    /// covers, what it holds; shard 0 also the range's totals and the
    /// Exhausted condition. Shard 0 is written on every call, the others
    /// when what they say changed. Tried again on the next idle moment
    /// while this replica cannot write (the lease not renewed in time, a
    /// stale version).
    async fn write_status(&mut self) {
        if !self.ctx.leadership.is_leader() {
            return;
        }
        if !self.loaded && self.load().await.is_err() {
            return;
        }
        self.status_dirty = false;
        // What the configured ranges hand out (the widest, should NADs
        // sharing the pool differ), else the whole CIDR.
        let widest = self
            .ledger
            .ranges()
            .max_by_key(|r| r.usable_count())
            .cloned()
            .or_else(|| IpRange::from_cidr(self.cidr).ok());
        let Some(widest) = widest else {
            return;
        };
        let mut allocated: BTreeMap<u128, u64> = BTreeMap::new();
        for &offset in self.ledger.allocations().keys() {
            *allocated.entry(self.ledger.shard_of(offset)).or_default() += 1;
        }
        // Held: kept for a pod name, or cooling after a release; either
        // way handed to nobody else while anything is free.
        let mut held: BTreeMap<u128, u64> = BTreeMap::new();
        for (_, _, offset, _) in self.ledger.holds().chain(self.ledger.cooldowns()) {
            *held.entry(self.ledger.shard_of(offset)).or_default() += 1;
        }
        let size = widest.usable_count();
        let range_allocated: u64 = allocated.values().sum();
        let range_held: u64 = held.values().sum();
        self.ctx
            .metrics
            .pool_usage(&self.base, size, u128::from(range_allocated));
        let last_shard = shard_index(self.cidr.last_offset());
        let existing: Vec<u128> = self
            .shards
            .iter()
            .filter(|(i, s)| **i <= last_shard && s.resource_version.is_some())
            .map(|(i, _)| *i)
            .collect();
        for index in existing {
            let mut status = shard_status(
                &widest,
                index,
                allocated.get(&index).copied().unwrap_or(0),
                held.get(&index).copied().unwrap_or(0),
            );
            if index == 0 {
                status.range_size = size.to_string();
                status.range_allocated = Some(range_allocated);
                status.range_held = Some(range_held);
                status.range_free = size
                    .saturating_sub(u128::from(range_allocated) + u128::from(range_held))
                    .to_string();
                let mut condition = exhausted_condition(
                    self.exhausted,
                    format!("{range_allocated} of {size} addresses allocated, {range_held} held"),
                );
                // The time the condition last changed, not the write's.
                if let Some(before) = self
                    .shards
                    .get(&0)
                    .and_then(|s| s.status.as_ref())
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition.type_))
                    .filter(|c| c.status == condition.status)
                {
                    condition.last_transition_time = before.last_transition_time.clone();
                }
                status.conditions = vec![condition];
            }
            if self.shards.get(&index).and_then(|s| s.status.as_ref()) == Some(&status) {
                continue;
            }
            let Some(version) = self
                .shards
                .get(&index)
                .and_then(|s| s.resource_version.clone())
            else {
                continue;
            };
            // The resourceVersion makes this a compare-and-swap too, and
            // the answer tells the version our next spec write must carry.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": version},
                "status": status,
            });
            let name = self.object_name(index);
            match self
                .api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    if let Some(shard) = self.shards.get_mut(&index) {
                        shard.resource_version = written.metadata.resource_version;
                        shard.status = Some(status);
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    self.loaded = false;
                    self.status_dirty = true;
                    return;
                }
                Err(e) => {
                    tracing::debug!(pool = %name, error = %e, "pool status write failed");
                }
            }
        }
    }
}

/// What shard `index` of `range` says of itself (shard 0's range totals
/// and condition are added by the caller).
fn shard_status(range: &IpRange, index: u128, allocated: u64, held: u64) -> IPPoolStatus {
    let lo = index.saturating_mul(SHARD_SPAN);
    let hi = lo.saturating_add(SHARD_SPAN - 1);
    let size = range.usable_count_between(lo, hi);
    let first = range.first_usable_between(lo, hi);
    let last = range.last_usable_between(lo, hi);
    let addresses = match (
        first.and_then(|o| range.ip_at(o)),
        last.and_then(|o| range.ip_at(o)),
    ) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => String::new(),
    };
    IPPoolStatus {
        shard: index.to_string(),
        addresses,
        size: size.to_string(),
        allocated,
        held,
        free: size
            .saturating_sub(u128::from(allocated) + u128::from(held))
            .to_string(),
        ..Default::default()
    }
}

fn exhausted_condition(exhausted: bool, message: String) -> Condition {
    Condition {
        type_: "Exhausted".to_owned(),
        status: if exhausted { "True" } else { "False" }.to_owned(),
        reason: if exhausted {
            "NoFreeAddress"
        } else {
            "AddressesAvailable"
        }
        .to_owned(),
        message,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: None,
    }
}

impl Drop for Actor {
    /// An actor stops when leadership is lost (the book is cleared) or its
    /// pool is forgotten: removals it started must not run on under a
    /// newer leader, whose allocations they know nothing of.
    fn drop(&mut self) {
        for task in self.unreserving.values() {
            task.abort();
        }
    }
}

fn to_crd(a: &Allocation) -> hereabouts_api::IPAllocation {
    hereabouts_api::IPAllocation {
        id: a.container_id.to_string(),
        podref: a.pod_ref.to_string(),
        ifname: a.ifname.to_string(),
    }
}

enum CommitError {
    Conflict,
    /// Addresses reserved by overlapping ranges.
    Reservations(Vec<IpAddr>),
    NotLeader,
    Api(kube::Error),
}

/// How one reservation of a batch went.
enum Reserved {
    Done(u128, reservations::Written),
    Foreign(IpAddr),
    /// Changed while read: nothing learnt, decide again.
    Changed,
    Failed(kube::Error),
    Skipped,
}

fn fail_all(allocs: Vec<Pending>, releases: Vec<PendingRelease>, error: impl Fn() -> Error) {
    for p in allocs {
        let _ = p.reply.send(Err(error()));
    }
    for p in releases {
        let _ = p.reply.send(Err(error()));
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A failed pool write keeps the API server's answer: its status code
    /// for whoever inspects the source, and its Retry-After for the claim's
    /// backoff.
    #[test]
    fn an_api_failure_keeps_its_status_and_retry_after() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "code": 429,
            "reason": "TooManyRequests",
            "message": "too many requests",
            "details": {"retryAfterSeconds": 7},
        }))
        .expect("a Status");
        let failed = Error::Api {
            pool: "blue-100.64.0.0-24".into(),
            source: Arc::new(kube::Error::Api(Box::new(status))),
        };
        assert_eq!(failed.retry_after(), Some(Duration::from_secs(7)));
        assert!(failed.is_transient());
        assert_eq!(failed.metric_label(), "api_error");
        let source = failed.source().expect("a source");
        let client_error = source.downcast_ref::<Arc<kube::Error>>().map(AsRef::as_ref);
        let Some(kube::Error::Api(status)) = client_error else {
            panic!("the source is the client's error: {source:?}");
        };
        assert_eq!(status.code, 429);
        assert!(
            failed
                .to_string()
                .starts_with("IPPool blue-100.64.0.0-24: "),
            "{failed}"
        );
    }
}
