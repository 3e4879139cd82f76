//! `hereabouts-controller`: the leader-elected operator.
//!
//! Every replica watches IPPools, reservations, IPClaims, NADs, IPAMClaims
//! and pods into caches (reflector stores, and for the kinds with one
//! object per allocation, trimmed objects or compact [`index`]es); only the Lease
//! holder acts on them. The reconcilers:
//! - [`claims`]: answers IPClaims through the [`pools`] book, which batches
//!   requests per pool and commits them with compare-and-swap writes;
//! - [`nad`]: creates the pools NADs need, reports bad configurations;
//! - [`gc`]: returns what force-deleted pods, crashed nodes and lost DELs
//!   leave behind, and removes unused empty pools;
//! - [`reservations`]: OverlappingRangeIPReservations, written by the pool
//!   actors, cleaned by the collector;
//! - [`ipamclaims`]: addresses owned by KubeVirt's IPAMClaims rather than
//!   pods; deleting an IPAMClaim releases them.

pub mod caches;
pub mod claims;
pub mod compact;
pub mod context;
pub mod gc;
mod http;
pub mod index;
pub mod ipamclaims;
pub mod leader;
pub mod metrics;
pub mod nad;
pub mod policy;
pub mod pools;
pub mod reservations;
pub mod shared;
mod watches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use hereabouts_api::{
    IPAMClaim, IPClaim, IPPool, NetworkAttachmentDefinition, OverlappingRangeIPReservation,
};

use context::Context;
use leader::{Election, LeaseConfig};
use metrics::Metrics;
use shared::Shared;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: {0}")]
    Leader(#[from] leader::Error),
    #[error("HTTP server on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} stopped unexpectedly")]
    TaskEnded(&'static str),
}

/// Everything the controller is told at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of IPPools, reservations and the Lease.
    pub namespace: String,
    /// Only serve claims and NADs of this namespace (all when `None`).
    pub watch_namespace: Option<String>,
    pub http_addr: SocketAddr,
    pub lease: LeaseConfig,
    pub gc: gc::GcConfig,
    /// How long an address freed by a claim's deletion stays reserved for
    /// the same pod name and interface.
    pub hold_released: Duration,
    /// How long a released address rests before it goes to another pod
    /// (networks may say otherwise).
    pub release_cooldown: Duration,
}

/// The controller's two connections to the API server, from one
/// configuration.
#[derive(Clone)]
pub struct Clients {
    /// Every watch, read and write of the reconcilers, with at most
    /// `api_concurrency` requests in flight; the rest wait their turn.
    /// kube's client speaks HTTP/1.1, one connection per request in
    /// flight, and a storm's writes were a thousand connections kept open
    /// afterwards (`make bench`, heaptrack at 12,015 allocations: their
    /// buffers and TLS state were 41 of the heap's 77 MiB). Two cores of
    /// API server are busy long before 64 requests are in flight.
    pub api: Client,
    /// The Lease alone, unbounded: a renewal never queues behind a
    /// storm's writes.
    pub lease: Client,
}

/// How long a request of [`Clients::api`] may hold its place before its
/// answer begins. The API server answers every request that is not a
/// watch's stream within its own one-minute request timeout (504 after
/// it), and a watch's answer begins at once; what is still silent after
/// this rode a connection that died (a network cut, a server killed), and
/// without it would keep its place for the client's read timeout, about
/// five minutes, stalling every request queued behind it. Its outcome is
/// unknown either way, as for any request whose connection dies: the
/// callers re-read before they decide again.
const API_SILENCE: Duration = Duration::from_secs(70);

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    pub fn new(config: kube::Config, api_concurrency: usize) -> Result<Clients, kube::Error> {
        let lease = Client::try_from(config.clone())?;
        // The last layer added is the outermost: a request waits for its
        // place, then the silence limit runs.
        let api = kube::client::ClientBuilder::try_from(config)?
            .with_layer(&tower::timeout::TimeoutLayer::new(API_SILENCE))
            .with_layer(&tower::limit::ConcurrencyLimitLayer::new(api_concurrency))
            .build();
        Ok(Clients { api, lease })
    }
}

/// `events`, telling through the receiver when its first list is in the
/// store.
fn listed<K, S>(
    events: S,
) -> (
    tokio::sync::watch::Receiver<bool>,
    impl Stream<Item = S::Item>,
)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let (tx, rx) = tokio::sync::watch::channel(false);
    let events = events.inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            tx.send_replace(true);
        }
    });
    (rx, events)
}

/// Resolves once `listed` says so (or its watch is gone).
async fn until_listed(mut listed: tokio::sync::watch::Receiver<bool>) {
    while !*listed.borrow_and_update() {
        if listed.changed().await.is_err() {
            return;
        }
    }
}

/// Managed fields are for writers' bookkeeping; nothing here reads them,
/// and as JSON trees they are the bulk of a cached object (`make bench`:
/// the controller grew by about 23 KiB per allocation with them in the
/// claims, pods and reservations).
fn strip<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until a shutdown signal (then releases the Lease)
/// or until a vital task dies (then returns its error: running leaderless
/// or blind is worse than restarting).
pub async fn run(
    clients: Clients,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tracing::info!(identity = %settings.lease.identity, lease = %settings.lease.name,
        namespace = %settings.namespace, "starting hereabouts-controller");
    let metrics = Arc::new(Metrics::new());
    let election = Arc::new(Election::new(clients.lease, settings.lease.clone()));
    let client = clients.api;
    // One reservation and one pod per allocation: these two are kept as
    // compact indexes of the few fields the collector reads.
    let (reservations, reservations_writer) = index::index(|r: &OverlappingRangeIPReservation| {
        (r.name_any(), reservations::Written::of(r))
    });
    let ctx = Arc::new(Context::new(
        Shared::new(
            client.clone(),
            settings.namespace.clone(),
            election.leadership(),
            metrics.clone(),
            settings.lease.identity.clone(),
        ),
        hereabouts_core::ledger::Policy {
            hold: settings.hold_released,
            cooldown: settings.release_cooldown,
        },
        reservations.clone(),
    ));
    let watched = settings.watch_namespace.as_deref();
    let config = || watcher::Config::default();

    let (pools, pools_writer) = index::index(caches::PoolEntry::of);
    let pool_events = index::indexed(
        pools_writer,
        watcher(
            Api::<IPPool>::namespaced(client.clone(), &settings.namespace),
            config(),
        ),
    )
    .default_backoff();
    let reservation_events = index::indexed(
        reservations_writer,
        watcher(
            Api::<OverlappingRangeIPReservation>::namespaced(client.clone(), &settings.namespace),
            config(),
        ),
    )
    .default_backoff();
    let (pods, pods_writer) = index::index(caches::PodEntry::boxed);
    let pods_deleted = Arc::new(Notify::new());
    let pod_events = {
        let pods_deleted = pods_deleted.clone();
        index::indexed(
            pods_writer,
            watcher(scoped::<Pod>(&client, watched), config()),
        )
        .default_backoff()
        .inspect(move |e| {
            if matches!(e, Ok(watcher::Event::Delete(_))) {
                pods_deleted.notify_one();
            }
        })
    };
    // Claims: one per allocation, so kept as a compact index; the claim
    // reconciler keeps a store of its own of the pending ones.
    let (claims, claims_writer) = index::index(caches::ClaimEntry::of);
    let claim_events = watcher(scoped::<IPClaim>(&client, watched), config())
        .modify(claims::slim)
        .default_backoff();
    // The NAD store is read by a Controller, which waits for it to be
    // ready; a store's readiness wakes one waiter only (kube-runtime 5), so
    // readiness here is told by the watch instead.
    let (nads, nads_writer) = reflector::store();
    let (nads_listed, nad_events) = listed(
        reflector(
            nads_writer,
            watcher(
                scoped::<NetworkAttachmentDefinition>(&client, watched),
                config(),
            )
            .modify(strip),
        )
        .default_backoff(),
    );

    // Not part of readiness: a cluster without the IPAMClaim CRD still
    // serves every other network (the collector asks the API server before
    // it frees an IPAMClaim's address).
    let (ipamclaims, ipamclaims_writer) = reflector::store();
    let ipamclaim_events = reflector(
        ipamclaims_writer,
        watcher(scoped::<IPAMClaim>(&client, watched), config()).modify(strip),
    )
    .default_backoff();

    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = crate::http::serve(settings.http_addr, metrics.clone(), ready.clone());
    let http = tokio::spawn(http);

    let mut background = tokio::task::JoinSet::new();
    background.spawn(async move {
        pool_events.map(|_| ()).for_each(|()| async {}).await;
        "IPPool watch"
    });
    background.spawn(async move {
        reservation_events.map(|_| ()).for_each(|()| async {}).await;
        "reservation watch"
    });
    background.spawn(async move {
        pod_events.map(|_| ()).for_each(|()| async {}).await;
        "pod watch"
    });

    {
        let stores_ready = (
            pools.clone(),
            reservations.clone(),
            pods.clone(),
            claims.clone(),
        );
        let ready = ready.clone();
        background.spawn(async move {
            let (p, r, po, c) = stores_ready;
            let n = nads_listed;
            let synced = |what: &'static str| tracing::debug!(cache = what, "cache synced");
            let _ = tokio::join!(
                p.wait_until_ready().inspect(|()| synced("IPPools")),
                r.wait_until_ready().inspect(|_| synced("reservations")),
                po.wait_until_ready().inspect(|_| synced("pods")),
                c.wait_until_ready().inspect(|()| synced("IPClaims")),
                until_listed(n).inspect(|()| synced("NADs"))
            );
            ready.store(true, std::sync::atomic::Ordering::Release);
            tracing::info!("caches synced: ready");
            std::future::pending::<()>().await;
            "readiness"
        });
    }
    {
        let ctx = ctx.clone();
        let lookups = caches::Lookups {
            pods: pods.clone(),
            nads: nads.clone(),
            claims: claims.clone(),
            ipamclaims: ipamclaims.clone(),
        };
        let claims_api = scoped::<IPClaim>(&client, watched);
        background.spawn(async move {
            claims::run(ctx, claim_events, claims_writer, lookups, claims_api).await;
            "claim reconciler"
        });
    }
    {
        let (ctx, pools, pods) = (ctx.clone(), pools.clone(), pods.clone());
        background.spawn(async move {
            ipamclaims::run(ctx, ipamclaim_events, pools, pods).await;
            "IPAMClaim reconciler"
        });
    }
    {
        let (ctx, nads) = (ctx.clone(), nads.clone());
        background.spawn(async move {
            nad::run(ctx, nad_events, nads).await;
            "NAD reconciler"
        });
    }
    {
        let ctx = ctx.clone();
        let caches = gc::Caches {
            pools,
            claims,
            reservations,
            pods,
            nads,
            ipamclaims,
        };
        let gc_config = settings.gc.clone();
        let scope = settings.watch_namespace.clone();
        let ready = ready.clone();
        background.spawn(async move {
            while !ready.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            gc::run(ctx, gc_config, caches, scope, pods_deleted).await;
            "garbage collector"
        });
    }
    {
        let mut leadership = election.leadership();
        let metrics = metrics.clone();
        background.spawn(async move {
            loop {
                metrics.set_leader(leadership.is_leader());
                leadership.changed().await;
            }
        });
    }

    let election_task = {
        let election = election.clone();
        async move { election.run().await }
    };
    let outcome = tokio::select! {
        result = election_task => match result {
            Ok(()) => Err(Error::TaskEnded("leader election")),
            Err(e) => Err(Error::Leader(e)),
        },
        Some(done) = background.join_next() => Err(Error::TaskEnded(done.unwrap_or("a background task"))),
        result = http => match result {
            Ok(Err(e)) => Err(e),
            _ => Err(Error::TaskEnded("HTTP server")),
        },
        () = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    election.release().await;
    background.abort_all();
    outcome
}
