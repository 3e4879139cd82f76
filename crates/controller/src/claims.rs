//! The claim reconciler: answers IPClaims.
//!
//! A pending claim (no `Ready` condition for its current generation) is
//! turned into one allocation request per range and handed to the pool
//! book; once every pool has committed, the addresses are published to the
//! claim's status. A deleted claim releases its addresses. Only the leader
//! acts; standbys keep the cache warm and take over on leadership.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::join_all;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use hereabouts_api::{
    ANSWER_BY_ANNOTATION, ClaimedAddress, IPClaim, IPClaimStatus, NetworkAttachmentDefinition,
    POD_NAME_FIELD, Refusal, Refused, claim_name_stem,
};
use hereabouts_core::{
    AllocError, Allocation, Cidr, IpRange, RangeRequest, RequestError, attachment, excerpt,
};

use super::caches::{ClaimEntry, Lookups, PodEntry, claim_key, split_key};
use super::compact::Uid;
use super::context::{Context, Interfaces};
use super::index::{self, Index};
use super::leader::Leadership;
use super::pools::{self, AllocRequest, ReleaseBy, ReleaseReason};
use super::watches;

/// How often releases that could not happen yet are tried again...
const RELEASE_RETRY: Duration = Duration::from_secs(2);
/// ...and for how long (by then the collector has returned what they held).
const RELEASE_PATIENCE: Duration = Duration::from_secs(600);
/// How long one release may take (its read, its pool writes) before it
/// counts as failed and is tried again: a request the API server never
/// answers must not hold it, nor the pod interface it locks.
const RELEASE_BOUND: Duration = Duration::from_secs(20);
/// How long a release keeps claims on full ranges waiting (asked again
/// rather than refused): one that has not happened by then is not about
/// to make room.
const RELEASE_AWAITED: Duration = Duration::from_secs(30);
/// How soon a leader whose Lease renewal is late looks at a claim again.
const LEASE_RECHECK: Duration = Duration::from_secs(1);
/// The first retry of a claim that could not be served for now...
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// ...doubling per attempt up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a claim could not be served for now (it is tried again after a
/// backoff); a refusal for good is no error, it is the claim's answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("checking the claim's pod: {0}")]
    Pod(#[source] kube::Error),
    #[error("checking the IPAMClaim: {0}")]
    IpamClaim(#[source] kube::Error),
    #[error("committing the addresses: {0}")]
    Pool(#[source] pools::Error),
    #[error("publishing the answer: {0}")]
    Publish(#[source] kube::Error),
    #[error("deleting a claim created after its ADD gave up: {0}")]
    Abandoned(#[source] kube::Error),
    /// The answer was not published: this replica's leadership went (or its
    /// renewal is late) after the addresses were committed.
    #[error("not (surely) the leader: the answer is published under leadership")]
    NotLeader,
}

impl Error {
    /// How long the API server asked us to wait, if it did.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Pod(e) | Error::IpamClaim(e) | Error::Publish(e) | Error::Abandoned(e) => {
                super::shared::retry_after(e)
            }
            Error::Pool(e) => e.retry_after(),
            Error::NotLeader => None,
        }
    }
}

/// How soon a replica that is not surely the leader looks at a claim again:
/// a leader whose renewal is late soon (nothing else would bring the claim
/// back once the renewal lands: leadership did not change); a standby when
/// leadership changes, which reconciles every claim.
fn not_leading(leadership: &Leadership) -> Action {
    if leadership.holds_lease() {
        Action::requeue(LEASE_RECHECK)
    } else {
        Action::await_change()
    }
}

/// The delay before retry number `attempt` (1, 2, ...): exponential from
/// [`BACKOFF_BASE`] to [`BACKOFF_MAX`], scaled by `jitter` (a fraction in
/// [0, 1)) into its upper half so that claims failing together do not
/// come back together, and never shorter than the API server's
/// Retry-After.
fn backoff(attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX);
    let jittered = full.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
    retry_after.map_or(jittered, |after| jittered.max(after))
}

/// A fraction in [0, 1) that differs per call (no random number crate:
/// the standard library's randomly keyed hasher is enough for jitter).
fn jitter(key: &str, attempt: u32) -> f64 {
    use std::hash::BuildHasher;
    let hash = std::collections::hash_map::RandomState::new().hash_one((key, attempt));
    // The top 53 bits, exactly representable.
    #[allow(clippy::cast_precision_loss)]
    let fraction = (hash >> 11) as f64 / (1u64 << 53) as f64;
    fraction
}

/// A deleted claim, as much of it as its release reads.
#[derive(Clone, Debug)]
struct Gone {
    namespace: String,
    name: String,
    claim: Box<ClaimEntry>,
}

impl Gone {
    fn of(claim: &IPClaim) -> Self {
        let (key, entry) = ClaimEntry::of(claim);
        Gone::of_entry(&key, entry)
    }

    fn of_entry(key: &str, claim: Box<ClaimEntry>) -> Self {
        let (namespace, name) = split_key(key);
        Gone {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            claim,
        }
    }
}

/// A deleted claim whose addresses are still to be released.
#[derive(Debug)]
struct Unreleased {
    claim: Gone,
    since: tokio::time::Instant,
    in_flight: bool,
    /// Handed over again while in flight (a grant committed after the
    /// deletion's release read the pool): released once more after.
    again: bool,
    /// Since when it counts in `Context::releases_pending` (`None`: no
    /// more, after [`RELEASE_AWAITED`]).
    awaited: Option<tokio::time::Instant>,
}

impl Unreleased {
    fn new(claim: Gone) -> Self {
        let now = tokio::time::Instant::now();
        Unreleased {
            claim,
            since: now,
            in_flight: false,
            again: false,
            awaited: Some(now),
        }
    }
}

/// Whether `claim` still waits for an answer to its current spec.
pub fn is_pending(claim: &IPClaim) -> bool {
    if claim.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &claim.status else {
        return true;
    };
    status.observed_generation != claim.metadata.generation
        || !status.conditions.iter().any(|c| c.type_ == "Ready")
}

/// Trims a watched claim to what the reconcilers read: its identity,
/// generation and timestamps, its spec, and of its status what
/// [`is_pending`] asks (the observed generation and whether a `Ready`
/// condition exists). There is one claim per allocation, and labels, the
/// owner reference and the published addresses were most of each cached
/// claim.
pub fn slim(claim: &mut IPClaim) {
    let meta = &mut claim.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    // Of the annotations, only what [`abandoned`] reads.
    meta.annotations = meta
        .annotations
        .take()
        .and_then(|mut a| a.remove_entry(ANSWER_BY_ANNOTATION))
        .map(|(k, v)| BTreeMap::from([(k, v)]));
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(status) = &mut claim.status {
        status.addresses = Vec::new();
        status.ips = Vec::new();
        status.conditions.retain(|c| c.type_ == "Ready");
        for condition in &mut status.conditions {
            condition.message = String::new();
            condition.reason = String::new();
        }
        status.conditions.shrink_to_fit();
    }
}

/// What the claim reconciler keeps between reconciles.
struct State {
    ctx: Arc<Context>,
    lookups: Lookups,
    /// Failed attempts by claim UID, for the backoff.
    attempts: Mutex<HashMap<String, u32>>,
    /// The [`releaser`]'s inbox.
    gone: mpsc::UnboundedSender<Gone>,
    interfaces: Arc<Interfaces>,
}

impl State {
    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a deleted claim to the [`releaser`], counted before the
    /// reconciler can see anything later.
    fn release(&self, claim: Gone) {
        self.ctx.releases_pending.fetch_add(1, Ordering::SeqCst);
        let _ = self.gone.send(claim);
    }
}

/// Serves claims until the watch stream ends.
///
/// Claims the watch applies drive a `kube_runtime::Controller` (one
/// reconcile per claim at a time, per-claim backoff, everything
/// reconciled again on becoming leader). Deleted claims are no
/// reconcile (the object is gone, and a finalizer would cost every ADD a
/// write and block namespace deletion while no controller runs): their
/// releases are kept and retried by [`releaser`].
///
/// `claims` is the writer of `lookups.claims`, the index of every claim;
/// the Controller reads a store of its own that holds the pending claims
/// only (an answered claim is no reconcile: it waits for a change).
pub async fn run(
    ctx: Arc<Context>,
    events: impl Stream<Item = Result<watcher::Event<IPClaim>, watcher::Error>> + Send + 'static,
    mut claims: index::Writer<IPClaim, Box<ClaimEntry>>,
    lookups: Lookups,
    claims_api: Api<IPClaim>,
) {
    let watched = Arc::new(Watched::default());
    let (gone_tx, gone_rx) = mpsc::unbounded_channel::<Gone>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        lookups,
        attempts: Mutex::default(),
        gone: gone_tx,
        interfaces: ctx.interfaces.clone(),
    });
    // Releases look up the network's policy and the pod.
    let (release_lookups, interfaces) = (state.lookups.clone(), state.interfaces.clone());
    let (all_tx, all_rx) = mpsc::unbounded_channel::<()>();
    let (pending, mut pending_writer) = reflector::store::<IPClaim>();
    let (drive, applied) = {
        let (index, attempts, releases) =
            (state.lookups.claims.clone(), state.clone(), state.clone());
        let gone = move |claim: Gone| releases.release(claim);
        let mut seen = Seen::new(watched.clone());
        watches::applied(
            events,
            move |event| {
                // A relist (after a watch expired) tells of deletions in
                // the gap only by their absence from the new list.
                if let Some(before) = claims.apply(event) {
                    for claim in vanished(before, &index) {
                        gone(claim);
                    }
                }
                seen.event(event);
                if let Some(event) = pending_only(event) {
                    pending_writer.apply_watcher_event(&event);
                }
                if let watcher::Event::Delete(claim) = event {
                    attempts.attempts().remove(&claim.uid().unwrap_or_default());
                    gone(Gone::of(claim));
                }
            },
            "IPClaim",
        )
    };
    let applied = applied.filter(|claim| std::future::ready(claim.as_ref().is_ok_and(is_pending)));
    let controller = Controller::for_stream(applied, pending)
        .reconcile_all_on(watches::receiver_stream(all_rx))
        .run(reconcile, error_policy, state);
    let controller = watches::drain(controller, "IPClaim");
    tokio::select! {
        () = drive => {}
        () = controller => {}
        () = releaser(ctx, release_lookups, interfaces, watched, claims_api, gone_rx, all_tx) => {}
    }
}

/// Answers one claim, if it waits for an answer and this replica leads.
#[tracing::instrument(skip_all, fields(claim = %claim.name_any(), namespace = claim.namespace().unwrap_or_default()))]
async fn reconcile(claim: Arc<IPClaim>, state: Arc<State>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    if !is_pending(&claim) {
        return Ok(Action::await_change());
    }
    if !ctx.leadership.is_leader() {
        return Ok(not_leading(&ctx.leadership));
    }
    let started = std::time::Instant::now();
    let spec = &claim.spec;
    let interface = Interfaces::key(&spec.pod.namespace, &spec.pod.name, &spec.interface);
    let held = state.interfaces.hold(interface).await;
    let answered = answer(&state, &claim).await;
    drop(held);
    ctx.metrics.reconciled("claim", started.elapsed());
    answered?;
    state.attempts().remove(&claim.uid().unwrap_or_default());
    Ok(Action::await_change())
}

/// Backs off a claim that could not be served for now: exponentially per
/// claim, jittered, and never sooner than the API server asked.
fn error_policy(claim: Arc<IPClaim>, error: &Error, state: Arc<State>) -> Action {
    if let Error::NotLeader = error {
        return not_leading(&state.ctx.leadership);
    }
    let uid = claim.uid().unwrap_or_default();
    let attempt = {
        let mut attempts = state.attempts();
        let attempt = attempts.entry(uid.clone()).or_default();
        *attempt = attempt.saturating_add(1);
        *attempt
    };
    let delay = backoff(attempt, jitter(&uid, attempt), error.retry_after());
    tracing::debug!(claim = %claim.name_any(), attempt, ?delay, %error, "retrying later");
    Action::requeue(delay)
}

/// Releases what deleted claims held: those deleted while this replica did
/// not lead (every replica watches; the next leader must not depend on the
/// collector's grace period for them), and those whose release failed
/// (leadership lost mid-way, the pool unwritable). Tried on becoming
/// leader and every [`RELEASE_RETRY`]; dropped after [`RELEASE_PATIENCE`],
/// when the collector has long found what they held. On a leadership
/// change the pool actors are dropped (their state may be stale) before
/// `reconcile_all` asks the reconciler to look at every claim again.
async fn releaser(
    ctx: Arc<Context>,
    lookups: Lookups,
    interfaces: Arc<Interfaces>,
    watched: Arc<Watched>,
    claims_api: Api<IPClaim>,
    mut gone: mpsc::UnboundedReceiver<Gone>,
    reconcile_all: mpsc::UnboundedSender<()>,
) {
    let mut unreleased: HashMap<Uid, Unreleased> = HashMap::new();
    let (released_tx, mut released_rx) = mpsc::unbounded_channel::<(Gone, bool)>();
    let start_release = |u: &mut Unreleased| {
        if u.in_flight || !ctx.leadership.is_leader() {
            return;
        }
        u.in_flight = true;
        let (ctx, claim, released_tx) = (ctx.clone(), u.claim.clone(), released_tx.clone());
        let (lookups, interfaces, watched) = (lookups.clone(), interfaces.clone(), watched.clone());
        tokio::spawn(async move {
            let released = release(ctx, &lookups, &interfaces, &watched, claim.clone());
            let done = tokio::time::timeout(RELEASE_BOUND, released)
                .await
                .unwrap_or(false);
            let _ = released_tx.send((claim, done));
        });
    };
    let forget = |u: &mut Unreleased| {
        if u.awaited.take().is_some() {
            ctx.releases_pending.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let release_all = |unreleased: &mut HashMap<Uid, Unreleased>| {
        let now = tokio::time::Instant::now();
        unreleased.retain(|_, u| {
            if u.awaited
                .is_some_and(|t| now.duration_since(t) >= RELEASE_AWAITED)
            {
                forget(u);
            }
            let patient = now.duration_since(u.since) < RELEASE_PATIENCE;
            if !patient {
                forget(u);
            }
            patient
        });
        unreleased.values_mut().for_each(start_release);
    };
    let mut leadership = ctx.leadership.clone();
    let mut release_retry = tokio::time::interval(RELEASE_RETRY);
    loop {
        tokio::select! {
            claim = gone.recv() => {
                let Some(claim) = claim else { return };
                let entry = match unreleased.entry(claim.claim.uid.clone()) {
                    // Counted once already, and awaited anew.
                    std::collections::hash_map::Entry::Occupied(o) => {
                        let u = o.into_mut();
                        // A grant found after the deletion was handed over.
                        u.claim.claim.answered |= claim.claim.answered;
                        forget(u);
                        u.awaited = Some(tokio::time::Instant::now());
                        u.again |= u.in_flight;
                        u
                    }
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(Unreleased::new(claim)),
                };
                start_release(entry);
            }
            () = leadership.changed() => {
                // Pool state cached under an earlier term may be stale.
                ctx.pools.clear();
                let term = watched.new_term();
                if leadership.holds_lease() {
                    let (watched, claims_api) = (watched.clone(), claims_api.clone());
                    tokio::spawn(async move { watched.read_token(term, &claims_api).await });
                }
                release_all(&mut unreleased);
                let _ = reconcile_all.send(());
            }
            Some((claim, done)) = released_rx.recv() => {
                let key = &claim.claim.uid;
                match unreleased.get_mut(key) {
                    Some(u) if u.again => {
                        u.again = false;
                        u.in_flight = false;
                        start_release(u);
                    }
                    Some(u) if done => {
                        forget(u);
                        unreleased.remove(key);
                    }
                    Some(u) => u.in_flight = false,
                    None => {}
                }
            }
            _ = release_retry.tick() => release_all(&mut unreleased),
        }
    }
}

/// The claims of `before` that `index` no longer holds (by UID: one made
/// again under the same name is another claim).
fn vanished(
    before: BTreeMap<Box<str>, Box<ClaimEntry>>,
    index: &Index<Box<ClaimEntry>>,
) -> Vec<Gone> {
    let now = index.read();
    before
        .into_iter()
        .filter(|(key, c)| now.get(key).is_none_or(|n| n.uid != c.uid))
        .map(|(key, c)| Gone::of_entry(&key, c))
        .collect()
}

/// `event` as the reconciler's store of pending claims takes it: a claim
/// that no longer waits for an answer leaves it (`None`: nothing to apply).
fn pending_only(event: &watcher::Event<IPClaim>) -> Option<watcher::Event<IPClaim>> {
    Some(match event {
        watcher::Event::Apply(claim) if is_pending(claim) => watcher::Event::Apply(claim.clone()),
        watcher::Event::Apply(claim) | watcher::Event::Delete(claim) => {
            watcher::Event::Delete(claim.clone())
        }
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(claim) if is_pending(claim) => {
            watcher::Event::InitApply(claim.clone())
        }
        // Not pending: the relist leaves it out.
        watcher::Event::InitApply(_) => return None,
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

/// When `claim` was created after the ADD that filed it gave up (its
/// [`ANSWER_BY_ANNOTATION`]), the two times. A creation time has whole
/// seconds: one in the second the ADD gave up counts as late (an ADD
/// answered in its last second is the only one this can turn away).
fn abandoned(claim: &IPClaim) -> Option<(Timestamp, Timestamp)> {
    let by: Timestamp = claim
        .annotations()
        .get(ANSWER_BY_ANNOTATION)?
        .parse()
        .ok()?;
    let created = claim.metadata.creation_timestamp.as_ref()?.0;
    let second = Timestamp::from_second(by.as_second()).ok()?;
    (created >= second).then_some((created, by))
}

/// Allocates and publishes; deletes an [`abandoned`] claim instead.
async fn answer(state: &State, claim: &IPClaim) -> Result<(), Error> {
    let (ctx, lookups) = (&state.ctx, &state.lookups);
    if let Some((created, by)) = abandoned(claim) {
        // A create that landed after its ADD failed (and after the DEL that
        // followed found nothing): its sandbox is gone.
        tracing::info!(claim = %claim.name_any(), %created, answer_by = %by, "deleting a claim created after its ADD gave up");
        ctx.metrics.failed("abandoned_claim");
        let api: Api<IPClaim> =
            Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
        // The version read too: a retry that took the claim over since
        // (its own spec and deadline, the same UID) is answered instead.
        return super::shared::delete_exactly(
            &api,
            &claim.name_any(),
            claim.uid(),
            claim.resource_version(),
        )
        .await
        .map(drop)
        .map_err(Error::Abandoned);
    }
    let mut requests = match requests(claim) {
        Ok(r) => r,
        Err(refused) => {
            ctx.metrics.failed("invalid_claim");
            return publish(ctx, claim, Err(refused)).await.map(drop);
        }
    };
    match authorize(ctx, lookups, claim, &requests).await {
        Ok(()) => {}
        Err(Authorization::Unknown(e)) => {
            return Err(Error::Pod(e));
        }
        Err(Authorization::Refused(reason, message)) => {
            return refuse(
                ctx,
                claim,
                "unauthorized_claim",
                Refused::new(reason, message),
            )
            .await;
        }
    }
    // An attachment that references an IPAMClaim asks in its name.
    let persistent = match super::ipamclaims::bind(ctx, lookups, claim, &mut requests).await {
        Ok(bound) => bound,
        Err(super::ipamclaims::Error::Unknown(e)) => {
            return Err(Error::IpamClaim(e));
        }
        Err(super::ipamclaims::Error::Refused(refused)) => {
            return refuse(ctx, claim, "ipamclaim", refused).await;
        }
    };
    let results = join_all(
        requests
            .iter()
            .map(|request| ctx.pools.allocate(request.clone())),
    )
    .await;
    // Asked again rather than refused: what may succeed later, and a range
    // found full while deleted claims still wait for their release (a
    // rollout: every old pod's DEL, then every new pod's ADD, on a range
    // sized to fit): it may not be full in a moment. Refused once nothing
    // waits.
    let releases_wait = ctx.releases_pending.load(Ordering::SeqCst) > 0;
    let retry = |e: &pools::Error| {
        e.is_transient()
            || (releases_wait
                && matches!(
                    e,
                    pools::Error::Alloc(
                        AllocError::Exhausted { .. } | AllocError::ProbeLimit { .. }
                    )
                ))
    };
    if results.iter().any(|r| r.as_ref().is_err_and(retry)) {
        for (request, result) in requests.iter().zip(&results) {
            if let Err(e) = result {
                tracing::debug!(claim = %claim.name_any(), range = %request.range, error = %e, "will retry");
            }
        }
        // The one the API server asked the longest wait for.
        let again = results
            .into_iter()
            .filter_map(Result::err)
            .filter(retry)
            .max_by_key(pools::Error::retry_after);
        return match again {
            Some(e) => Err(Error::Pool(e)),
            None => Ok(()),
        };
    }
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
        // All or nothing: give back what the other ranges granted.
        let refused = refusal(e);
        if let Some(bound) = &persistent {
            super::ipamclaims::record_refusal(ctx, bound, &refused).await;
        }
        for (request, result) in requests.iter().zip(&results) {
            // What an IPAMClaim holds stays its own.
            if result.is_ok() && persistent.is_none() {
                let by = ReleaseBy::Owner {
                    pod_ref: request.owner.pod_ref.to_string(),
                    ifname: request.owner.ifname.to_string(),
                    container_id: Some(request.owner.container_id.to_string()),
                };
                let network_name = request.network_name.as_deref();
                if let Err(e) = ctx
                    .pools
                    .release(
                        request.range.cidr(),
                        network_name,
                        by,
                        ReleaseReason::Manual,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "could not give back a partial grant; the collector will");
                }
            }
        }
        return publish(ctx, claim, Err(refused)).await.map(drop);
    }
    // `requests` follows `spec.ranges` one to one.
    let granted = requests
        .iter()
        .zip(&claim.spec.ranges)
        .zip(results)
        .filter_map(|((request, range), result)| Some((request, range, result.ok()?)))
        .map(|(request, range, grant)| ClaimedAddress {
            address: format!("{}/{}", grant.ip, grant.prefix_len),
            gateway: range.gateway.clone(),
            pool: hereabouts_core::pool_name(request.network_name.as_deref(), request.range.cidr())
                .map(hereabouts_core::PoolName::into_string)
                .unwrap_or_default(),
        })
        .collect::<Vec<_>>();
    if let Some(bound) = &persistent {
        match super::ipamclaims::record(ctx, lookups, bound, claim, &granted).await {
            Ok(()) => {}
            Err(super::ipamclaims::Error::Unknown(e)) => {
                return Err(Error::IpamClaim(e));
            }
            Err(super::ipamclaims::Error::Refused(refused)) => {
                return refuse(ctx, claim, "ipamclaim", refused).await;
            }
        }
    }
    if !publish(ctx, claim, Ok(granted)).await? && persistent.is_none() {
        // Committed, and no one will be told: the claim went (or was made
        // again) before its answer landed. What it was granted goes back
        // as a deleted claim's does (its release may have run already,
        // before the commit, or found the pod unknown to the cache).
        let mut gone = Gone::of(claim);
        gone.claim.answered = true;
        state.release(gone);
    }
    Ok(())
}

/// Refuses `claim` for good: a Warning Event and `Ready=False`.
async fn refuse(
    ctx: &Context,
    claim: &IPClaim,
    metric: &'static str,
    refused: Refused,
) -> Result<(), Error> {
    ctx.metrics.failed(metric);
    tracing::warn!(claim = %claim.name_any(), reason = %refused.reason, message = %refused.message, "claim refused");
    ctx.event(
        &claim.object_ref(&()),
        EventType::Warning,
        refused.reason.as_str(),
        "Allocate",
        refused.message.clone(),
    )
    .await;
    publish(ctx, claim, Err(refused)).await.map(drop)
}

/// One request per range of the claim, with static addresses matched to
/// the range that contains them.
fn requests(claim: &IPClaim) -> Result<Vec<AllocRequest>, Refused> {
    let spec = &claim.spec;
    // Both are copied into the allocation entry in the range's IPPool,
    // which every pod of the range shares: a node credential must not grow
    // it with an interface name no runtime gives. The plugin checks the
    // same rules in its environment (CNI_IFNAME, CNI_CONTAINERID).
    if let Err(why) = attachment::check_ifname(&spec.interface) {
        return Err(Refused::new(
            Refusal::InvalidClaim,
            format!(
                "spec.interface: {} is not valid: {why}",
                excerpt(&spec.interface)
            ),
        ));
    }
    if let Err(why) = attachment::check_container_id(&spec.container_id) {
        return Err(Refused::new(
            Refusal::InvalidClaim,
            format!(
                "spec.containerID: {} is not valid: {why}",
                excerpt(&spec.container_id)
            ),
        ));
    }
    if spec.ranges.is_empty() {
        return Err(Refused::new(
            Refusal::InvalidRange,
            "spec.ranges is empty".to_owned(),
        ));
    }
    // One address per range, at most one static address per range: a
    // claim beyond that is no configuration a plugin writes, and each
    // entry costs parsing and matching.
    // As many as a configuration may declare (`ipRanges` plus `range`).
    let max_ranges = hereabouts_core::config::MAX_RANGES + 1;
    if spec.ranges.len() > max_ranges {
        return Err(Refused::new(
            Refusal::InvalidRange,
            format!(
                "spec.ranges: {} ranges, at most {max_ranges} are accepted",
                spec.ranges.len()
            ),
        ));
    }
    if spec.static_ips.len() > max_ranges {
        return Err(Refused::new(
            Refusal::InvalidStaticAddress,
            format!(
                "spec.staticIPs: {} addresses, at most {max_ranges} (one per range) are accepted",
                spec.static_ips.len()
            ),
        ));
    }
    let owner = Allocation::new(
        spec.container_id.clone(),
        format!("{}/{}", spec.pod.namespace, spec.pod.name),
        spec.interface.clone(),
    );
    let mut out = Vec::with_capacity(spec.ranges.len());
    let network_name = spec.network_name.as_deref().filter(|n| !n.is_empty());
    for (i, r) in spec.ranges.iter().enumerate() {
        let range = r
            .parse(i)
            .map_err(|e| Refused::new(Refusal::InvalidRange, e.to_string()))?;
        // Every shard of the range's pool must be a valid object name.
        let cidr = range.cidr();
        let pool = hereabouts_core::pool_name(network_name, cidr).map_err(|e| {
            Refused::new(
                Refusal::InvalidNetworkName,
                format!("spec.networkName: {e}"),
            )
        })?;
        let last = hereabouts_core::shard_name(
            pool.as_str(),
            hereabouts_core::shard_index(cidr.last_offset()),
        );
        if let Err(why) = hereabouts_core::naming::check_object_name(&last) {
            return Err(Refused::new(
                Refusal::InvalidNetworkName,
                format!(
                    "spec.networkName: {} with spec.ranges[{i}] {cidr} makes IPPool names like {}, and {why}",
                    excerpt(network_name.unwrap_or_default()),
                    excerpt(&last)
                ),
            ));
        }
        out.push(AllocRequest {
            range,
            network_name: network_name.map(str::to_owned),
            overlapping: spec.enable_overlapping_ranges,
            owner: owner.clone(),
            static_ip: None,
        });
    }
    // The static requests, by the rule the plugin matched them with.
    let ranges: Vec<&IpRange> = out.iter().map(|r| &r.range).collect();
    let per_range: Vec<Option<&str>> = spec.ranges.iter().map(|r| r.static_ip.as_deref()).collect();
    let plan =
        hereabouts_core::claim_requests(&ranges, &per_range, &spec.static_ips).map_err(|e| {
            let reason = match e {
                RequestError::OutsideRanges { .. } => Refusal::StaticAddressOutsideRanges,
                _ => Refusal::InvalidStaticAddress,
            };
            Refused::new(reason, e.to_string())
        })?;
    for (request, planned) in out.iter_mut().zip(plan) {
        if let RangeRequest::Static(r) = planned {
            request.static_ip = Some(r.ip);
        }
    }
    Ok(out)
}

/// Why a claim is not served.
enum Authorization {
    /// For good: the condition reason and message.
    Refused(Refusal, String),
    /// Not known yet (the pod could not be read): try again.
    Unknown(kube::Error),
}

/// A claim acts only for its own pod, on the ranges its network declares.
///
/// The pod: in the claim's namespace, alive with the claim's UID and bound
/// to the claim's node (a node's credentials may file claims; they must
/// not name another node's pod, whose address allocation is idempotent per
/// pod and interface and would be handed out, or freed by a DEL). The
/// cache answers first; a miss or a mismatch is read from the API server,
/// as the cache may lag a pod that just started.
///
/// The ranges: see [`check_network`].
async fn authorize(
    ctx: &Context,
    lookups: &Lookups,
    claim: &IPClaim,
    requests: &[AllocRequest],
) -> Result<(), Authorization> {
    let spec = &claim.spec;
    let namespace = claim.namespace().unwrap_or_default();
    if spec.pod.namespace != namespace {
        return Err(Authorization::Refused(
            Refusal::PodNotInNamespace,
            format!(
                "spec.pod.namespace: {} is not the claim's namespace {namespace:?}",
                excerpt(&spec.pod.namespace)
            ),
        ));
    }
    // Asked of the API server by name below: a name no pod can have is
    // answered here, not sent (a huge one fails the request, for ever).
    if let Err(why) = hereabouts_core::naming::check_object_name(&spec.pod.name) {
        return Err(Authorization::Refused(
            Refusal::PodNotFound,
            format!(
                "spec.pod.name: {} is no pod's name: {why}",
                excerpt(&spec.pod.name)
            ),
        ));
    }
    let key = format!("{namespace}/{}", spec.pod.name);
    let matches = |uid: &Uid, node: Option<&str>| uid.is(&spec.pod.uid) && node == Some(&spec.node);
    let cached = lookups
        .pods
        .get(&key)
        .is_some_and(|p| matches(p.uid(), p.node()));
    if !cached {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let pod = pods
            .get_opt(&spec.pod.name)
            .await
            .map_err(Authorization::Unknown)?;
        let Some(pod) = pod else {
            return Err(Authorization::Refused(
                Refusal::PodNotFound,
                format!("spec.pod.name: no pod {key} exists"),
            ));
        };
        let uid = pod.uid().unwrap_or_default();
        if uid != spec.pod.uid {
            return Err(Authorization::Refused(
                Refusal::PodMismatch,
                format!(
                    "spec.pod.uid: {} is not the UID of pod {key} ({uid:?})",
                    excerpt(&spec.pod.uid)
                ),
            ));
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if node.as_deref() != Some(spec.node.as_str()) {
            return Err(Authorization::Refused(
                Refusal::PodMismatch,
                format!(
                    "spec.node: {} is not the node pod {key} is bound to ({})",
                    excerpt(&spec.node),
                    node.map_or_else(|| "none".to_owned(), |n| format!("{n:?}"))
                ),
            ));
        }
    }
    // One attachment per interface of a pod: a second claim of the same
    // pod and interface (another network) would share its allocations'
    // identity, and taking over or releasing its reservations would
    // unprotect the first one's address.
    let name = claim.name_any();
    let other = lookups
        .claims
        .read()
        .iter()
        .find(|(key, c)| {
            let (ns, n) = split_key(key);
            n != name
                && ns == namespace
                && *c.pod_name == *spec.pod.name
                && c.pod_uid.is(&spec.pod.uid)
                && *c.interface == *spec.interface
                && !c.deleting
                && !c.refused
        })
        .map(|(key, _)| split_key(key).1.to_owned());
    if let Some(other) = other {
        return Err(Authorization::Refused(
            Refusal::InterfaceClaimed,
            format!(
                "spec.interface: {:?} of pod {key} is claimed by IPClaim {other} already",
                spec.interface,
            ),
        ));
    }
    check_network(claim, requests, &declared_networks(&lookups.nads))
        .map_err(|r| Authorization::Refused(r.reason, r.message))
}

/// The ranges one IPAM section of a NAD declares.
#[derive(Debug)]
struct Declared {
    /// The CNI network name (the config's `name`, else the NAD's).
    network: String,
    nad: String,
    network_name: Option<String>,
    overlapping: bool,
    /// `None`: the ranges come from the nodes' flat file.
    ranges: Option<Vec<IpRange>>,
}

impl Declared {
    fn cidrs(&self) -> impl Iterator<Item = &hereabouts_core::Cidr> {
        self.ranges.iter().flatten().map(IpRange::cidr)
    }
}

fn declared_networks(nads: &Store<NetworkAttachmentDefinition>) -> Vec<Declared> {
    let mut out = Vec::new();
    for nad in nads.state() {
        let Ok(sections) = hereabouts_core::find_ipam_sections(&nad.spec.config) else {
            continue;
        };
        for section in sections {
            let network = section.name.clone().unwrap_or_else(|| nad.name_any());
            let nad_name = format!("{}/{}", nad.namespace().unwrap_or_default(), nad.name_any());
            match section.ipam_config() {
                Ok(config) => out.push(Declared {
                    network,
                    nad: nad_name,
                    network_name: config.network_name.clone(),
                    overlapping: config.enable_overlapping_ranges,
                    ranges: Some(config.ranges.iter().map(|r| r.range.clone()).collect()),
                }),
                Err(hereabouts_core::ConfigError::NoRange { .. }) => out.push(Declared {
                    network,
                    nad: nad_name,
                    network_name: section
                        .ipam
                        .get("network_name")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    overlapping: section
                        .ipam
                        .get("enable_overlapping_ranges")
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(true),
                    ranges: None,
                }),
                Err(_) => {}
            }
        }
    }
    out
}

/// A claim's ranges must be what its network declares.
///
/// A network some NAD declares (by its CNI network name): the claim's
/// ranges must be among that NAD's, with the same `network_name`; a NAD
/// whose ranges come from the nodes' flat file (which the controller cannot
/// read) trusts the nodes for them. A network no NAD declares (configured
/// in a file on the nodes, e.g. the cluster's default network): its ranges
/// must stay out of every range a NAD declares for the same
/// `network_name`, so a node's credentials cannot take addresses from a
/// declared network's pool by naming a network of its own.
fn check_network(
    claim: &IPClaim,
    requests: &[AllocRequest],
    declared: &[Declared],
) -> Result<(), Refused> {
    let spec = &claim.spec;
    let network_name = spec.network_name.clone().filter(|n| !n.is_empty());
    let cidrs: Vec<hereabouts_core::Cidr> = requests.iter().map(|r| *r.range.cidr()).collect();
    let mine: Vec<&Declared> = declared
        .iter()
        .filter(|d| d.network == spec.network.name)
        .collect();
    if !mine.is_empty() {
        // Each range within one the NAD declares (the nodes' flat file may
        // narrow it, never widen it or drop an exclusion), the overlap
        // check as declared.
        let fits = |d: &&Declared| {
            d.overlapping == spec.enable_overlapping_ranges
                && d.ranges.as_ref().is_none_or(|declared| {
                    d.network_name == network_name
                        && requests
                            .iter()
                            .all(|r| declared.iter().any(|n| r.range.within(n)))
                })
        };
        if mine.iter().any(fits) {
            return Ok(());
        }
        let list: Vec<String> = mine
            .iter()
            .map(|d| {
                let ranges: Vec<String> =
                    d.ranges.iter().flatten().map(ToString::to_string).collect();
                format!(
                    "{} declares {} with network_name {:?} and enable_overlapping_ranges {}",
                    d.nad,
                    ranges.join(", "),
                    d.network_name,
                    d.overlapping
                )
            })
            .collect();
        let asked: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        return Err(Refused::new(
            Refusal::UndeclaredRange,
            format!(
                "spec.ranges: {} with network_name {network_name:?} and enableOverlappingRanges {} are not what network {} declares ({})",
                asked.join(", "),
                spec.enable_overlapping_ranges,
                excerpt(&spec.network.name),
                list.join("; ")
            ),
        ));
    }
    for (i, cidr) in cidrs.iter().enumerate() {
        for d in declared.iter().filter(|d| d.network_name == network_name) {
            if let Some(taken) = d.cidrs().find(|c| c.overlaps(cidr)) {
                return Err(Refused::new(
                    Refusal::UndeclaredNetwork,
                    format!(
                        "spec.ranges[{i}]: {cidr} overlaps {taken}, which {} declares for network {:?}; no NetworkAttachmentDefinition declares network {}",
                        d.nad,
                        d.network,
                        excerpt(&spec.network.name)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The condition reason and message for a refusal.
fn refusal(e: &pools::Error) -> Refused {
    let reason = match e {
        pools::Error::Alloc(AllocError::Exhausted { .. } | AllocError::ProbeLimit { .. }) => {
            Refusal::Exhausted
        }
        pools::Error::Alloc(
            AllocError::Taken { .. }
            | AllocError::ReservedElsewhere { .. }
            | AllocError::OwnerHoldsOther { .. },
        ) => Refusal::StaticAddressTaken,
        pools::Error::Alloc(
            AllocError::OutsideRange { .. } | AllocError::NotAllocatable { .. },
        ) => Refusal::StaticAddressNotAllocatable,
        pools::Error::Naming(_) => Refusal::InvalidNetworkName,
        pools::Error::Api { .. }
        | pools::Error::Contended { .. }
        | pools::Error::NotLeader
        | pools::Error::Stopped { .. } => Refusal::Retrying,
    };
    Refused::new(reason, e.to_string())
}

/// The most bytes of a condition message: what the Kubernetes API allows
/// a `metav1.Condition` message.
const MAX_MESSAGE: usize = 32768;

/// `message`, cut to [`MAX_MESSAGE`] bytes on a character boundary: the
/// last line of defence against a refusal that quotes a huge value (every
/// value a refusal quotes is bounded already), which could never be
/// written, so the claim would be retried for ever and never refused.
fn bounded(mut message: String) -> String {
    const MARK: &str = "... (message cut)";
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - MARK.len();
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(MARK);
    }
    message
}

/// Writes the answer to the claim's status; `Ok(false)`: the claim is
/// gone, or made again under its name, so the answer reached no one.
async fn publish(
    ctx: &Context,
    claim: &IPClaim,
    answer: Result<Vec<ClaimedAddress>, Refused>,
) -> Result<bool, Error> {
    let now = Time(Timestamp::now());
    let generation = claim.metadata.generation;
    let (status, ready) = match answer {
        Ok(ips) => (
            IPClaimStatus {
                addresses: ips.iter().map(|a| a.address.clone()).collect(),
                ips,
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: "Allocated".into(),
                    message: "addresses committed to their pools".into(),
                    last_transition_time: now,
                    observed_generation: generation,
                }],
                observed_generation: generation,
            },
            true,
        ),
        Err(Refused { reason, message }) => (
            IPClaimStatus {
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    reason: reason.as_str().into(),
                    message: bounded(message),
                    last_transition_time: now,
                    observed_generation: generation,
                }],
                observed_generation: generation,
                ..Default::default()
            },
            false,
        ),
    };
    // Answers depend on leadership (the addresses were committed under
    // it); a deposed leader's answer could be older than its successor's.
    if !ctx.leadership.is_leader() {
        return Err(Error::NotLeader);
    }
    let api: Api<IPClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    match write_status(&api, claim, status).await {
        Ok(()) => {
            if ready && let Some(created) = &claim.metadata.creation_timestamp {
                let waited = Timestamp::now().duration_since(created.0);
                if let Ok(waited) = Duration::try_from(waited) {
                    ctx.metrics.claim_answered(waited);
                }
            }
            Ok(true)
        }
        // Gone, or replaced by a claim of another UID (its own answer
        // comes from its own events).
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => {
            tracing::warn!(claim = %claim.name_any(), error = %e, "could not publish claim status");
            Err(Error::Publish(e))
        }
    }
}

/// Replaces the status of the claim as cached (one PUT the API server
/// applies without patching); when the claim changed since, of the claim
/// as it is now, if it is still the same claim.
///
/// Both writes are bound to the claim's UID: claim names repeat (a DEL
/// then a new ADD of the same attachment makes a new claim of the same
/// name, at generation 1 again), and an answer decided for the old claim
/// must never land on the new one. A PUT carrying a UID is refused by the
/// API server for an object of another UID (409); a merge patch is not
/// (the status strategy ignores metadata), so none is sent. A claim
/// replaced under us answers 404 here, like a deleted one.
pub async fn write_status(
    api: &Api<IPClaim>,
    claim: &IPClaim,
    status: IPClaimStatus,
) -> Result<(), kube::Error> {
    let name = claim.name_any();
    let put = |mut object: IPClaim| {
        object.status = Some(status.clone());
        // Absent, not empty: the API server keeps the recorded managers.
        object.metadata.managed_fields = None;
        async move {
            api.replace_status(&object.name_any(), &PostParams::default(), &object)
                .await
                .map(drop)
        }
    };
    if claim.metadata.resource_version.is_some() && claim.uid().is_some() {
        match put(claim.clone()).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            other => return other,
        }
    }
    let current = api.get_opt(&name).await?;
    match current {
        // The same claim (UID) asking the same thing (generation): only its
        // status changed meanwhile. A newer generation gets its own answer;
        // this one must not overwrite it.
        Some(current)
            if current.uid().is_some()
                && current.uid() == claim.uid()
                && current.metadata.generation == claim.metadata.generation =>
        {
            put(current).await
        }
        Some(current) if current.uid().is_some() && current.uid() == claim.uid() => {
            Err(kube::Error::Api(
                kube::core::Status::failure(
                    &format!("IPClaim {name} asks for something else since it was answered"),
                    "Conflict",
                )
                .with_code(409)
                .boxed(),
            ))
        }
        _ => Err(kube::Error::Api(
            kube::core::Status::failure(
                &format!("IPClaim {name} is gone or was made again since it was answered"),
                "NotFound",
            )
            .with_code(404)
            .boxed(),
        )),
    }
}

/// Whether a deleted claim may hold what the pools give its sandbox (pod,
/// interface, container ID), so that its deletion gives that back:
/// - answered: it was granted it;
/// - refused: it holds nothing, and may name another pod (whose addresses
///   its deletion must not free);
/// - not answered (yet, or for its latest spec): its grant may be in the
///   pools unpublished (the status write lost, failed or outrun by the
///   deletion, the leader gone in between); it is given back when the
///   claim acts for its own pod as the cache knows it (by UID). Otherwise
///   the collector decides, when no claim asks for the address any more.
fn may_hold(claim: &ClaimEntry, pod: Option<&PodEntry>) -> bool {
    claim.answered || (!claim.refused && pod.is_some_and(|p| claim.of_own_pod(p.uid())))
}

/// Gives back what a deleted claim's sandbox holds, if the claim
/// [`may_hold`] it. A release names the sandbox exactly (its container
/// ID), so it never takes what a newer sandbox of the pod holds.
///
/// Returns false when a release must be tried again (not leading now, the
/// pool could not be written): the reconciler keeps the claim for that.
#[tracing::instrument(skip_all, fields(claim = %claim.name, namespace = %claim.namespace))]
async fn release(
    ctx: Arc<Context>,
    lookups: &Lookups,
    interfaces: &Interfaces,
    watched: &Watched,
    claim: Gone,
) -> bool {
    let entry = &claim.claim;
    let _held = interfaces
        .hold(Interfaces::key(
            entry.pod_namespace(&claim.namespace),
            &entry.pod_name,
            &entry.interface,
        ))
        .await;
    let pod_namespace = entry.pod_namespace(&claim.namespace);
    let pod_ref = format!("{pod_namespace}/{}", entry.pod_name);
    // The pod of that name as the cache knows it (a successor under the
    // same name tells as much as the pod itself).
    let pod = lookups.pods.get(&pod_ref);
    if !may_hold(entry, pod.as_deref()) {
        tracing::debug!(claim = %claim.name, "deleted claim held nothing");
        return true;
    }
    let successors = match successors(&ctx, lookups, watched, &claim).await {
        Ok(pools) => pools,
        Err(e) => {
            tracing::debug!(claim = %claim.name, error = %e, "could not read its successors; will retry");
            return false;
        }
    };
    let mut done = true;
    let policy =
        super::policy::of_network(&lookups.nads, pod_namespace, &entry.network, ctx.release);
    let reason = super::policy::claim_deleted(policy, pod.as_deref());
    for (i, r) in entry.ranges.iter().enumerate() {
        let Ok(range) = r.parse(i) else {
            tracing::debug!(claim = %claim.name, index = i, "deleted claim had an invalid range");
            continue;
        };
        let cidr = *range.cidr();
        let network_name = entry.network_name();
        if successors
            .iter()
            .any(|(n, c)| n.as_deref() == network_name && c.overlaps(&cidr))
        {
            tracing::debug!(claim = %claim.name, index = i, "a newer claim of the same sandbox asks for this range");
            continue;
        }
        let by = ReleaseBy::Owner {
            pod_ref: pod_ref.clone(),
            ifname: entry.interface.to_string(),
            container_id: Some(entry.container_id.to_string()),
        };
        ctx.pools.learn(&range, network_name);
        match ctx.pools.release(&cidr, network_name, by, reason).await {
            Ok(released) => {
                tracing::debug!(claim = %claim.name, released, "claim deleted");
            }
            Err(e) => {
                tracing::debug!(claim = %claim.name, error = %e, "release failed; will retry");
                done = false;
            }
        }
    }
    done
}

/// Whether the claim cache may stand in for a consistent read of the
/// claims: it may once it has shown a revision at or past a consistent
/// read made after this leadership term began (the term's token). The
/// watch delivers events in revision order without gaps (a gap ends in a
/// relist, which the index swaps in whole), so the cache then holds every
/// claim made before the token: every claim an earlier leader answered.
/// Revisions are compared as the numbers the API server's etcd storage
/// writes (every `resourceVersion` of one resource type is the etcd
/// revision); one that does not parse as a number leaves the cache
/// untrusted, and every release reads the API server.
///
/// Trusted, the cache is searched by the plugin's name stem; the claims
/// named otherwise (by hand, by another client) are kept aside in `odd`,
/// so that the search misses none (a pod's claims, by any name, are what
/// the API server's list by `spec.pod.name` finds).
#[derive(Debug, Default)]
struct Watched {
    /// The highest revision the claim index shows.
    seen: AtomicU64,
    /// The index's keys of the claims [`named_otherwise`].
    odd: Mutex<BTreeSet<Box<str>>>,
    /// Counts leadership changes: a token read under an earlier term is
    /// dropped.
    term: AtomicU64,
    /// This term's token, once read.
    token: Mutex<Option<u64>>,
}

impl Watched {
    /// Forgets the token: a new term (or none) begins.
    fn new_term(&self) -> u64 {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.term.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Reads the token of `term`: the revision of a consistent list of the
    /// claims (one item; etcd counts the rest, once per term).
    async fn read_token(&self, term: u64, claims: &Api<IPClaim>) {
        let listed = claims.list_metadata(&ListParams::default().limit(1)).await;
        let revision = match listed {
            Ok(list) => revision(list.metadata.resource_version.as_deref()),
            Err(e) => {
                tracing::debug!(error = %e, "could not read the claims' revision; releases read the API server");
                None
            }
        };
        self.set_token(term, revision);
    }

    /// Keeps `revision` as the token, if `term` is still the current one.
    fn set_token(&self, term: u64, revision: Option<u64>) {
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if self.term.load(Ordering::SeqCst) == term {
            *token = revision;
        }
    }

    fn trusted(&self) -> bool {
        let token = *self.token.lock().unwrap_or_else(PoisonError::into_inner);
        token.is_some_and(|t| self.seen.load(Ordering::SeqCst) >= t)
    }

    fn odd(&self) -> std::sync::MutexGuard<'_, BTreeSet<Box<str>>> {
        self.odd.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `claim`'s name does not begin with the stem the plugin names a
/// claim of its pod interface by.
fn named_otherwise(claim: &IPClaim) -> bool {
    let stem = claim_name_stem(&claim.spec.pod.name, &claim.spec.interface);
    !claim.name_any().starts_with(&stem)
}

/// Feeds [`Watched`] from the claim watch, after the index took each
/// event in: a relist counts once the index swapped it in.
struct Seen {
    watched: Arc<Watched>,
    /// The highest revision and the odd names of a relist in progress.
    listing: (u64, BTreeSet<Box<str>>),
}

impl Seen {
    fn new(watched: Arc<Watched>) -> Self {
        Seen {
            watched,
            listing: (0, BTreeSet::new()),
        }
    }

    fn event(&mut self, event: &watcher::Event<IPClaim>) {
        let of = |claim: &IPClaim| revision(claim.resource_version().as_deref()).unwrap_or(0);
        let shown = match event {
            watcher::Event::Apply(claim) => {
                let key = claim_key(claim).into_boxed_str();
                if named_otherwise(claim) {
                    self.watched.odd().insert(key);
                } else {
                    self.watched.odd().remove(&key);
                }
                of(claim)
            }
            watcher::Event::Delete(claim) => {
                self.watched.odd().remove(claim_key(claim).as_str());
                of(claim)
            }
            watcher::Event::Init => {
                self.listing = (0, BTreeSet::new());
                return;
            }
            watcher::Event::InitApply(claim) => {
                self.listing.0 = self.listing.0.max(of(claim));
                if named_otherwise(claim) {
                    self.listing.1.insert(claim_key(claim).into_boxed_str());
                }
                return;
            }
            watcher::Event::InitDone => {
                let (shown, odd) = std::mem::take(&mut self.listing);
                *self.watched.odd() = odd;
                shown
            }
        };
        self.watched.seen.fetch_max(shown, Ordering::SeqCst);
    }
}

/// A `resourceVersion` as the etcd revision it is.
fn revision(resource_version: Option<&str>) -> Option<u64> {
    resource_version?.parse().ok()
}

/// A pool a claim asks for: its network name and a range's CIDR.
type Asked = (Option<Box<str>>, Cidr);

/// Whether `c` is another claim (another UID) of the sandbox's interface
/// (pod, interface, container ID) that `gone` was, one that may hold what
/// it asks for: not being deleted and not refused, of any network (the
/// interface made again, or re-plugged on another network).
fn of_same_sandbox(gone: &Gone, c: &ClaimEntry) -> bool {
    let namespace = &gone.namespace;
    c.uid != gone.claim.uid
        && !c.deleting
        && !c.refused
        && c.pod_namespace(namespace) == gone.claim.pod_namespace(namespace)
        && c.pod_name == gone.claim.pod_name
        && c.interface == gone.claim.interface
        && c.container_id == gone.claim.container_id
}

/// The pools `c` asks for (its ranges that parse).
fn asked(c: &ClaimEntry) -> impl Iterator<Item = Asked> + '_ {
    let network_name: Option<Box<str>> = c.network_name().map(Into::into);
    c.ranges
        .iter()
        .enumerate()
        .filter_map(move |(i, r)| Some((network_name.clone(), *r.parse(i).ok()?.cidr())))
}

/// What the cache's claims [`of_same_sandbox`] as `gone` ask for. The
/// plugin names a claim `<pod>-<interface>-<hash>` (cut to 253
/// characters), so the interface's claims are the keys that begin with
/// `namespace/` and its [`claim_name_stem`]; the claims named otherwise
/// are `odd` (the keys [`Watched`] keeps aside).
fn cached_successors(
    claims: &BTreeMap<Box<str>, Box<ClaimEntry>>,
    odd: &BTreeSet<Box<str>>,
    gone: &Gone,
) -> Vec<Asked> {
    let namespace = &gone.namespace;
    let stem = format!(
        "{namespace}/{}",
        claim_name_stem(&gone.claim.pod_name, &gone.claim.interface)
    );
    let by_stem = claims
        .range::<str, _>((
            std::ops::Bound::Included(stem.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(key, _)| key.starts_with(&stem))
        .map(|(_, c)| c);
    let in_namespace = format!("{namespace}/");
    let named_otherwise = odd
        .iter()
        .filter(|key| key.starts_with(&in_namespace))
        .filter_map(|key| claims.get(key));
    by_stem
        .chain(named_otherwise)
        .filter(|c| of_same_sandbox(gone, c))
        .flat_map(|c| asked(c))
        .collect()
}

/// `value` as a field selector's value (`\`, `,` and `=` escaped).
fn field_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The pools that newer claims of the same sandbox's interface (another
/// UID) ask for, and so hold or are about to be given: a pool entry names
/// its owner by (pod, interface, container ID), not by claim, so releasing
/// the deleted claim's entry in such a pool would take the successor's
/// address (an ADD, DEL and ADD again in one sandbox, as Multus' dynamic
/// networks do, or the interface re-plugged on another network; a release
/// repeated by the next leader after the successor was answered). Another
/// pool's entry is released.
///
/// The cache is asked first. It is the answer when its successors ask for
/// every range, or when it is [`Watched::trusted`]: it has shown the
/// claims as they were after this leadership term began, so every
/// successor an earlier leader answered is in it (one this replica
/// answers is in it before the answer, and the interface's lock orders the
/// two). Otherwise (the term's first moments, a watch that went quiet) the
/// API server is read: the pod's claims in the namespace, by a consistent
/// list on the IPClaim's selectable field `spec.pod.name` (an IPClaim CRD
/// older than that field: the namespace's claims, all). That list costs
/// the API server a read of every claim of the namespace, so it is not
/// made per release: 60,000 releases of a 60,000-claim namespace would
/// read 3.6 billion claims.
async fn successors(
    ctx: &Context,
    lookups: &Lookups,
    watched: &Watched,
    gone: &Gone,
) -> Result<Vec<Asked>, kube::Error> {
    let mut pools = cached_successors(&lookups.claims.read(), &watched.odd(), gone);
    let covered =
        asked(&gone.claim).all(|(n, c)| pools.iter().any(|(m, d)| *m == n && d.overlaps(&c)));
    if covered || watched.trusted() {
        return Ok(pools);
    }
    let listed = pod_claims(ctx, &gone.namespace, &gone.claim.pod_name).await?;
    for claim in &listed {
        let (_, entry) = ClaimEntry::of(claim);
        if of_same_sandbox(gone, &entry) {
            pools.extend(asked(&entry));
        }
    }
    Ok(pools)
}

/// The claims in `namespace` of the pod `pod_name`, by a consistent list
/// on the IPClaim's selectable field `spec.pod.name` (an IPClaim CRD older
/// than that field: the namespace's claims, all).
pub(crate) async fn pod_claims(
    ctx: &Context,
    namespace: &str,
    pod_name: &str,
) -> Result<Vec<IPClaim>, kube::Error> {
    let api: Api<IPClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let by_pod =
        ListParams::default().fields(&format!("{POD_NAME_FIELD}={}", field_value(pod_name)));
    match api.list(&by_pod).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(e)) if e.code == 400 => {
            tracing::warn!(error = %e.message, "the IPClaim CRD has no selectable spec.pod.name (apply the current CRDs): listing the namespace's claims");
            Ok(api.list(&ListParams::default()).await?.items)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use hereabouts_api::claim_name;

    use super::*;

    fn claim(name: &str, uid: &str, generation: i64, ready: Option<&str>) -> IPClaim {
        let mut claim = serde_json::json!({
            "apiVersion": "hereabouts.dev/v1alpha1",
            "kind": "IPClaim",
            "metadata": {
                "name": name, "namespace": "ns", "uid": uid,
                "resourceVersion": "7", "generation": generation
            },
            "spec": {
                "network": {"namespace": "ns", "name": "net"},
                "ranges": [{"range": "198.51.100.0/24"}],
                "interface": "net1",
                "pod": {"namespace": "ns", "name": "web-0", "uid": "pod-uid"},
                "containerID": "c1",
                "node": "n1"
            }
        });
        if let Some(status) = ready {
            claim["status"] = serde_json::json!({
                "observedGeneration": 1,
                "conditions": [{
                    "type": "Ready", "status": status, "reason": "Allocated",
                    "message": "", "lastTransitionTime": "2026-12-02T00:00:00Z"
                }]
            });
        }
        serde_json::from_value(claim).expect("a valid claim")
    }

    fn at(version: &str) -> IPClaim {
        let mut c = claim("c", "u", 1, None);
        c.metadata.resource_version = Some(version.to_owned());
        c
    }

    #[test]
    fn the_cache_is_trusted_once_it_shows_the_terms_token() {
        let watched = Arc::new(Watched::default());
        let mut seen = Seen::new(watched.clone());
        seen.event(&watcher::Event::Apply(at("90")));
        assert!(!watched.trusted(), "no token: not trusted");
        let term = watched.new_term();
        watched.set_token(term, Some(100));
        assert!(
            !watched.trusted(),
            "the cache shows 90, the term began at 100"
        );
        // A relist counts once the index swapped it in.
        seen.event(&watcher::Event::Init);
        seen.event(&watcher::Event::InitApply(at("150")));
        assert!(!watched.trusted(), "a relist in progress shows nothing yet");
        seen.event(&watcher::Event::InitDone);
        assert!(watched.trusted());
        // A new term forgets the token, and one read under the old term
        // that lands late is dropped.
        let next = watched.new_term();
        assert!(!watched.trusted());
        watched.set_token(term, Some(100));
        assert!(!watched.trusted(), "a token of the earlier term is dropped");
        watched.set_token(next, None);
        seen.event(&watcher::Event::Delete(at("not-a-number")));
        assert!(!watched.trusted(), "no revision read: not trusted");
        watched.set_token(next, Some(150));
        assert!(watched.trusted());
        assert_eq!(revision(Some("18446744073709551615")), Some(u64::MAX));
        assert_eq!(revision(Some("")), None);
        assert_eq!(revision(None), None);
    }

    fn names(store: &Store<IPClaim>) -> Vec<String> {
        let mut names: Vec<String> = store.state().iter().map(|c| c.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_reconcilers_store_holds_the_pending_claims_only() {
        let (store, mut writer) = reflector::store::<IPClaim>();
        let mut apply = |event: watcher::Event<IPClaim>| {
            if let Some(event) = pending_only(&event) {
                writer.apply_watcher_event(&event);
            }
        };
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(claim("new", "u1", 1, None)));
        apply(watcher::Event::InitApply(claim(
            "served",
            "u2",
            1,
            Some("True"),
        )));
        apply(watcher::Event::InitApply(claim(
            "refused",
            "u3",
            1,
            Some("False"),
        )));
        apply(watcher::Event::InitDone);
        assert_eq!(names(&store), ["new"]);
        // Answered: it leaves; its spec changed since: it waits again.
        apply(watcher::Event::Apply(claim("new", "u1", 1, Some("True"))));
        apply(watcher::Event::Apply(claim(
            "served",
            "u2",
            2,
            Some("True"),
        )));
        assert_eq!(names(&store), ["served"]);
        apply(watcher::Event::Delete(claim(
            "served",
            "u2",
            2,
            Some("True"),
        )));
        assert!(names(&store).is_empty());
    }

    #[test]
    fn a_relist_releases_what_was_deleted_in_the_gap() {
        let (index, mut writer) = index::index(ClaimEntry::of);
        let mut list = |claims: Vec<IPClaim>| {
            let _ = writer.apply(&watcher::Event::Init);
            for c in claims {
                let _ = writer.apply(&watcher::Event::InitApply(c));
            }
            let before = writer
                .apply(&watcher::Event::InitDone)
                .expect("a finished list replaces the view");
            let mut gone: Vec<(String, String, bool)> = vanished(before, &index)
                .into_iter()
                .map(|g| (g.name, g.claim.uid.to_string(), g.claim.answered))
                .collect();
            gone.sort();
            gone
        };
        let first = list(vec![
            claim("a", "u1", 1, Some("True")),
            claim("b", "u2", 1, Some("True")),
            claim("c", "u3", 1, None),
        ]);
        assert!(first.is_empty(), "{first:?}");
        // "b" was deleted and made again (a new UID), "c" deleted.
        let second = list(vec![
            claim("a", "u1", 1, Some("True")),
            claim("b", "u4", 1, None),
        ]);
        assert_eq!(
            second,
            [
                ("b".to_owned(), "u2".to_owned(), true),
                ("c".to_owned(), "u3".to_owned(), false)
            ]
        );
    }

    #[test]
    fn a_claim_entry_acts_for_its_own_namespaces_pod_only() {
        let own = claim("a", "u1", 1, Some("True"));
        let (key, entry) = ClaimEntry::of(&own);
        assert_eq!(key, "ns/a");
        assert!(entry.answered && !entry.refused && !entry.deleting);
        assert!(entry.of_own_pod(&Uid::new("pod-uid")));
        assert!(!entry.of_own_pod(&Uid::new("another-uid")));
        assert_eq!(entry.pod_namespace("ns"), "ns");
        let mut elsewhere = own;
        elsewhere.spec.pod.namespace = "other".into();
        let (_, entry) = ClaimEntry::of(&elsewhere);
        assert!(!entry.of_own_pod(&Uid::new("pod-uid")));
        assert_eq!(entry.pod_namespace("ns"), "other");
    }

    #[test]
    fn a_deleted_claim_gives_back_what_it_may_hold_and_nothing_of_another_pod() {
        let pod = |uid: &str| {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-0", "namespace": "ns", "uid": uid}
            }))
            .expect("pod");
            PodEntry::of(&pod).1
        };
        let (own, other) = (pod("pod-uid"), pod("another-uid"));
        let entry = |ready: Option<&str>, generation: i64| {
            ClaimEntry::of(&claim("a", "u1", generation, ready)).1
        };
        let answered = entry(Some("True"), 1);
        assert!(may_hold(&answered, None), "granted: given back");
        assert!(may_hold(&answered, Some(&other)));
        let refused = entry(Some("False"), 1);
        for pod in [None, Some(&own), Some(&other)] {
            assert!(!may_hold(&refused, pod), "a refused claim holds nothing");
        }
        // Never answered, or not for its latest spec: its grant may be in
        // the pools unpublished.
        for unanswered in [entry(None, 1), entry(Some("True"), 2)] {
            assert!(!unanswered.answered && !unanswered.refused);
            assert!(may_hold(&unanswered, Some(&own)), "its own pod: given back");
            assert!(
                !may_hold(&unanswered, Some(&other)),
                "another pod of that name"
            );
            assert!(!may_hold(&unanswered, None), "no pod: the collector's");
        }
        let mut elsewhere = claim("a", "u1", 1, None);
        elsewhere.spec.pod.namespace = "other".into();
        let elsewhere = ClaimEntry::of(&elsewhere).1;
        assert!(
            !may_hold(&elsewhere, Some(&own)),
            "a claim naming another namespace's pod frees nothing"
        );
    }

    #[tokio::test]
    async fn one_holder_of_a_pod_interface_at_a_time_and_nothing_kept_after() {
        let names = Arc::new(Interfaces::default());
        let first = names.hold("ns/a".to_owned()).await;
        let other = names.hold("ns/b".to_owned()).await;
        let waiting = {
            let names = names.clone();
            tokio::spawn(async move {
                let _held = names.hold("ns/a".to_owned()).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the same interface waits");
        drop(other);
        drop(first);
        waiting.await.expect("held after the first let go");
        // A wait given up (a release's time bound) tidies too.
        let held = names.hold("ns/c".to_owned()).await;
        let given_up =
            tokio::time::timeout(Duration::from_millis(20), names.hold("ns/c".to_owned())).await;
        assert!(given_up.is_err());
        drop(held);
        assert!(
            names.map().is_empty(),
            "no key kept: {:?}",
            names.map().keys()
        );
    }

    #[test]
    fn a_claim_created_after_its_add_gave_up_is_abandoned() {
        let at = |created: &str, by: Option<&str>| {
            let mut c = claim("a", "u1", 1, None);
            c.metadata.creation_timestamp = Some(Time(created.parse().expect("time")));
            c.metadata.annotations =
                by.map(|by| BTreeMap::from([(ANSWER_BY_ANNOTATION.to_owned(), by.to_owned())]));
            c
        };
        let by = Some("2026-12-02T10:00:07.300Z");
        assert!(
            abandoned(&at("2026-12-02T10:00:06Z", by)).is_none(),
            "in time"
        );
        assert!(
            abandoned(&at("2026-12-02T10:00:07Z", by)).is_some(),
            "its last second"
        );
        assert!(abandoned(&at("2026-12-02T10:00:09Z", by)).is_some(), "late");
        for by in [None, Some("soon"), Some("")] {
            assert!(
                abandoned(&at("2026-12-02T10:00:09Z", by)).is_none(),
                "no deadline to miss: {by:?}"
            );
        }
        let mut slimmed = at("2026-12-02T10:00:09Z", by);
        slimmed
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert("other".into(), "x".repeat(1000));
        slim(&mut slimmed);
        assert_eq!(
            slimmed.metadata.annotations.as_ref().map(BTreeMap::len),
            Some(1),
            "the cache keeps the deadline only"
        );
        assert!(abandoned(&slimmed).is_some());
    }

    #[test]
    fn a_successor_is_any_live_claim_of_the_same_sandboxs_interface() {
        let gone = Gone::of(&claim("web-0-net1-blue", "u1", 1, Some("True")));
        let index = |claims: Vec<IPClaim>| {
            claims
                .iter()
                .map(|c| {
                    let (key, entry) = ClaimEntry::of(c);
                    (key.into_boxed_str(), entry)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let pool: Asked = (None, "198.51.100.0/24".parse().expect("cidr"));
        let odd = |claims: &[IPClaim]| {
            claims
                .iter()
                .filter(|c| named_otherwise(c))
                .map(|c| claim_key(c).into_boxed_str())
                .collect::<BTreeSet<_>>()
        };
        let successors =
            |claims: Vec<IPClaim>| cached_successors(&index(claims.clone()), &odd(&claims), &gone);
        let found = |claims: Vec<IPClaim>| !successors(claims).is_empty();
        assert!(!found(vec![]));
        let itself = claim("web-0-net1-blue", "u1", 1, Some("True"));
        assert!(!found(vec![itself]), "not itself");
        let remade = claim("web-0-net1-blue", "u2", 1, None);
        assert_eq!(successors(vec![remade]), vec![pool.clone()], "made again");
        // Named otherwise than the plugin names it: found all the same.
        assert!(found(vec![claim("hand-made", "u4", 1, Some("True"))]));
        // The same interface re-plugged on another network of the pool.
        let replugged = claim("web-0-net1-green", "u3", 1, Some("True"));
        assert!(found(vec![replugged.clone()]));
        // Or on another pool: what it asks for is told.
        let mut elsewhere_pool = replugged.clone();
        elsewhere_pool.spec.ranges = vec![hereabouts_api::ClaimRange {
            range: "203.0.113.0/28".into(),
            ..Default::default()
        }];
        elsewhere_pool.spec.network_name = Some("other".into());
        assert_eq!(
            successors(vec![elsewhere_pool]),
            vec![(
                Some("other".into()),
                "203.0.113.0/28".parse().expect("cidr")
            )]
        );
        let mut refused = replugged.clone();
        refused.status.as_mut().expect("status").conditions[0].status = "False".into();
        assert!(!found(vec![refused]), "refused: holds nothing");
        let mut elsewhere = replugged.clone();
        elsewhere.spec.container_id = "another-sandbox".into();
        assert!(!found(vec![elsewhere]));
        let mut other_interface = replugged.clone();
        other_interface.spec.interface = "net2".into();
        assert!(!found(vec![other_interface]));
        let mut deleting = replugged;
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(!found(vec![deleting]));
    }

    #[test]
    fn a_long_named_pods_claims_are_found_by_their_stem() {
        let pod = format!("{}-0", "w".repeat(245));
        let named = |network: &str, uid: &str| {
            let mut c = claim(&claim_name(&pod, "net1", network), uid, 1, Some("True"));
            c.spec.pod.name.clone_from(&pod);
            c
        };
        let gone = Gone::of(&named("blue", "u1"));
        let (key, entry) = ClaimEntry::of(&named("green", "u2"));
        let claims = BTreeMap::from([(key.into_boxed_str(), entry)]);
        assert_eq!(cached_successors(&claims, &BTreeSet::new(), &gone).len(), 1);
    }

    #[test]
    fn field_selector_values_are_escaped() {
        assert_eq!(field_value("web-0"), "web-0");
        assert_eq!(field_value(r"a,b=c\d"), r"a\,b\=c\\d");
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter_in_the_upper_half() {
        for attempt in 1..40 {
            for jitter in [0.0, 0.3, 0.999] {
                let d = backoff(attempt, jitter, None);
                let full = BACKOFF_BASE
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(BACKOFF_MAX);
                assert!(d >= full / 2 && d <= full, "{attempt} {jitter} {d:?}");
            }
        }
        assert!(backoff(2, 0.5, None) > backoff(1, 0.5, None));
        assert_eq!(
            backoff(100, 0.999_999, None),
            BACKOFF_MAX.mul_f64(0.999_999_5)
        );
        assert!(backoff(u32::MAX, 1.0, None) <= BACKOFF_MAX);
    }

    #[test]
    fn backoff_honours_retry_after() {
        let asked = Duration::from_secs(7);
        assert_eq!(backoff(1, 0.0, Some(asked)), asked);
        assert_eq!(backoff(30, 0.999, Some(asked)), BACKOFF_MAX.mul_f64(0.9995));
    }

    #[test]
    fn condition_messages_are_bounded() {
        assert_eq!(bounded("short".to_owned()), "short");
        let exact = "x".repeat(MAX_MESSAGE);
        assert_eq!(bounded(exact.clone()), exact);
        for filler in ["x", "é", "\u{1F600}"] {
            let huge = filler.repeat(600_000);
            let cut = bounded(huge.clone());
            assert!(cut.len() <= MAX_MESSAGE, "{}", cut.len());
            assert!(cut.ends_with("... (message cut)"));
            assert!(huge.starts_with(cut.trim_end_matches("... (message cut)")));
        }
    }

    #[test]
    fn jitter_is_a_fraction_and_varies() {
        let values: HashSet<u64> = (0..64)
            .map(|i| {
                let j = jitter("uid", i);
                assert!((0.0..1.0).contains(&j));
                j.to_bits()
            })
            .collect();
        assert!(values.len() > 32);
    }
}
