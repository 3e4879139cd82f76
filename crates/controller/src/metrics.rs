//! Prometheus metrics of the controller. Labels are bounded: reasons are
//! `metric_label()`s, reconcilers and kinds are fixed names; the only
//! object name used as a label is the pool's, since pools are few and
//! chosen by the admin (one per configured range), never per pod.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Label = [(&'static str, &'static str); 1];
type PoolLabel = [(&'static str, String); 1];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    allocations: Counter,
    releases: Family<Label, Counter>,
    failures: Family<Label, Counter>,
    pool_size: Family<PoolLabel, Gauge<f64, AtomicU64>>,
    pool_allocated: Family<PoolLabel, Gauge>,
    claim_latency: Histogram,
    reconcile_duration: Family<Label, Histogram>,
    commit_batch: Histogram,
    commit_duration: Histogram,
    conflicts: Counter,
    leader: Gauge,
    gc_reclaimed: Family<Label, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hereabouts");
        let allocations = Counter::default();
        registry.register(
            "allocations",
            "Addresses committed to pools",
            allocations.clone(),
        );
        let releases = Family::<Label, Counter>::default();
        registry.register(
            "releases",
            "Addresses released, by reason",
            releases.clone(),
        );
        let failures = Family::<Label, Counter>::default();
        registry.register(
            "allocation_failures",
            "Requests refused or failed, by reason",
            failures.clone(),
        );
        let pool_size = Family::<PoolLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pool_size",
            "Addresses a pool can hand out",
            pool_size.clone(),
        );
        let pool_allocated = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "pool_allocated",
            "Addresses a pool holds",
            pool_allocated.clone(),
        );
        let claim_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "claim_latency_seconds",
            "From an IPClaim's creation to its addresses being published",
            claim_latency.clone(),
        );
        let reconcile_duration = Family::<Label, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent per reconcile, by reconciler",
            reconcile_duration.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "pool_commit_batch_size",
            "Requests decided per pool write",
            commit_batch.clone(),
        );
        let commit_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "pool_commit_duration_seconds",
            "Time to decide and write one batch",
            commit_duration.clone(),
        );
        let conflicts = Counter::default();
        registry.register(
            "pool_write_conflicts",
            "Pool writes refused because the pool changed",
            conflicts.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        let gc_reclaimed = Family::<Label, Counter>::default();
        registry.register(
            "gc_reclaimed",
            "Objects the garbage collector reclaimed, by kind",
            gc_reclaimed.clone(),
        );
        Metrics {
            registry,
            allocations,
            releases,
            failures,
            pool_size,
            pool_allocated,
            claim_latency,
            reconcile_duration,
            commit_batch,
            commit_duration,
            conflicts,
            leader,
            gc_reclaimed,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn allocated(&self) {
        self.allocations.inc();
    }

    pub fn released(&self, reason: &'static str) {
        self.releases.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn pool_usage(&self, pool: &str, size: u128, allocated: u128) {
        let label = [("pool", pool.to_owned())];
        // A gauge of f64: an IPv6 range's size exceeds every integer gauge.
        #[allow(clippy::cast_precision_loss)]
        self.pool_size.get_or_create(&label).set(size as f64);
        self.pool_allocated
            .get_or_create(&label)
            .set(i64::try_from(allocated).unwrap_or(i64::MAX));
    }

    pub fn claim_answered(&self, latency: Duration) {
        self.claim_latency.observe(latency.as_secs_f64());
    }

    pub fn reconciled(&self, reconciler: &'static str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&[("reconciler", reconciler)])
            .observe(took.as_secs_f64());
    }

    pub fn pool_commit(&self, batch: usize, took: Duration) {
        #[allow(clippy::cast_precision_loss)]
        self.commit_batch.observe(batch as f64);
        self.commit_duration.observe(took.as_secs_f64());
    }

    pub fn pool_conflict(&self) {
        self.conflicts.inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn reclaimed(&self, kind: &'static str) {
        self.gc_reclaimed.get_or_create(&[("kind", kind)]).inc();
    }
}
