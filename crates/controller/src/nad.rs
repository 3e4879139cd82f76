//! The NetworkAttachmentDefinition reconciler: creates the IPPools a NAD's
//! ranges need before any pod asks, and tells the NAD's owner, as a Warning
//! Event on the NAD, what is wrong with a configuration it cannot use. NADs
//! are only read. Pools no NAD wants any more are removed by [`prune`] once
//! they hold no allocation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::Stream;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use hereabouts_api::{
    IPPool, IPPoolSpec, MANAGED_BY, NetworkAttachmentDefinition, POOL_LABEL, SHARD_LABEL,
};
use hereabouts_core::ConfigError;

use super::caches::PoolEntry;
use super::context::Context;
use super::index::Index;
use super::watches;

/// The pools (name, range) a NAD's hereabouts/whereabouts IPAM sections
/// need; NADs with other IPAM types need none.
pub fn wanted_pools(
    nad: &NetworkAttachmentDefinition,
) -> Result<Vec<(String, hereabouts_core::Cidr)>, ConfigError> {
    let mut out = Vec::new();
    for section in hereabouts_core::find_ipam_sections(&nad.spec.config)? {
        let config = match section.ipam_config() {
            Ok(config) => config,
            // The range may come from the nodes' flat file, which the
            // controller cannot read: such pools are made on first use.
            Err(ConfigError::NoRange { .. }) => continue,
            Err(e) => return Err(e),
        };
        for range in config.ranges {
            out.push((range.pool_name.into_string(), *range.range.cidr()));
        }
    }
    Ok(out)
}

/// Why a NAD's pools could not be made for now (tried again after a
/// backoff); a configuration hereabouts cannot use is no error, it is an
/// Event on the NAD.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating IPPool {pool}: {source}")]
    CreatePool {
        pool: String,
        #[source]
        source: kube::Error,
    },
}

/// Serves NADs until the watch ends: a `kube_runtime::Controller` over the
/// shared, reflected NAD watch; only the leader writes, and becoming
/// leader reconciles every NAD again.
pub async fn run(
    ctx: Arc<Context>,
    events: impl Stream<Item = Result<watcher::Event<NetworkAttachmentDefinition>, watcher::Error>>
    + Send
    + 'static,
    store: Store<NetworkAttachmentDefinition>,
) {
    let on_leadership = futures::stream::unfold(ctx.leadership.clone(), |mut l| async move {
        l.changed().await;
        Some(((), l))
    });
    let (drive, applied) = watches::applied(events, |_| {}, "NetworkAttachmentDefinition");
    let controller = Controller::for_stream(applied, store)
        .reconcile_all_on(on_leadership)
        .run(reconcile, error_policy, ctx);
    let controller = watches::drain(controller, "NetworkAttachmentDefinition");
    tokio::select! {
        () = drive => {}
        () = controller => {}
    }
}

fn error_policy(nad: Arc<NetworkAttachmentDefinition>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(nad = %nad.name_any(), %error, "will try again");
    Action::requeue(std::time::Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(nad = %nad.name_any(), namespace = nad.namespace().unwrap_or_default()))]
async fn reconcile(
    nad: Arc<NetworkAttachmentDefinition>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        // A leader whose renewal is late looks again soon; a standby when
        // leadership changes (which reconciles every NAD).
        return Ok(if ctx.leadership.holds_lease() {
            Action::requeue(std::time::Duration::from_secs(1))
        } else {
            Action::await_change()
        });
    }
    let started = std::time::Instant::now();
    let name = format!("{}/{}", nad.namespace().unwrap_or_default(), nad.name_any());
    let result = match wanted_pools(&nad) {
        Ok(pools) => {
            let mut failed = None;
            for (pool, cidr) in pools {
                if let Err(source) = ensure_pool(&ctx, &pool, &cidr).await {
                    failed.get_or_insert(Error::CreatePool { pool, source });
                }
            }
            failed.map_or(Ok(()), Err)
        }
        Err(e) => {
            ctx.metrics.failed("invalid_nad");
            tracing::warn!(nad = %name, error = %e, "invalid IPAM configuration");
            ctx.event(
                &nad.object_ref(&()),
                EventType::Warning,
                "InvalidIPAMConfig",
                "ParseIPAM",
                format!("hereabouts cannot use this network's IPAM configuration: {e}"),
            )
            .await;
            Ok(())
        }
    };
    ctx.metrics.reconciled("nad", started.elapsed());
    result.map(|()| Action::await_change())
}

/// Creates the (empty) pool unless it exists.
async fn ensure_pool(
    ctx: &Context,
    name: &str,
    cidr: &hereabouts_core::Cidr,
) -> Result<(), kube::Error> {
    let api: Api<IPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pool = IPPool {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (POOL_LABEL.to_owned(), hereabouts_api::label_value(name)),
                (SHARD_LABEL.to_owned(), "0".to_owned()),
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            ])),
            ..Default::default()
        },
        spec: IPPoolSpec {
            range: cidr.to_string(),
            allocations: BTreeMap::new(),
        },
        status: None,
    };
    match api.create(&PostParams::default(), &pool).await {
        Ok(_) => {
            tracing::info!(pool = name, range = %cidr, "created pool");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The objects [`prune`] deletes: those hereabouts made, of a range whose
/// every shard is empty and whose base pool no NAD wants.
fn unused_pools(all: &BTreeMap<Box<str>, PoolEntry>, wanted: &HashSet<String>) -> Vec<PoolEntry> {
    let mut unused = Vec::new();
    for pool in all.values() {
        let Some(label) = &pool.pool_label else {
            continue;
        };
        let shards = || {
            all.values()
                .filter(|p| p.pool_label.as_ref() == Some(label))
        };
        // A range is only as empty as all of its shards.
        let range_empty = shards().all(|p| p.entries == 0);
        let base = shards()
            .find(|p| p.shard_label.as_deref() == Some("0"))
            .map(|p| &*p.name);
        if !pool.managed || !range_empty || base.is_some_and(|b| wanted.contains(b)) {
            continue;
        }
        // Empty: nothing but its name and labels to copy.
        unused.push(pool.clone());
    }
    unused
}

/// Deletes the empty pools hereabouts created that no NAD wants any more.
/// The delete carries the pool's resourceVersion, so a pool that got an
/// allocation meanwhile stays.
pub async fn prune(
    ctx: &Context,
    nads: &Store<NetworkAttachmentDefinition>,
    pools: &Index<PoolEntry>,
) {
    let wanted: HashSet<String> = nads
        .state()
        .iter()
        .filter_map(|nad| wanted_pools(nad).ok())
        .flatten()
        .map(|(name, _)| name)
        .collect();
    let unused = unused_pools(&pools.read(), &wanted);
    let api: Api<IPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for pool in unused {
        if !ctx.leadership.is_leader() {
            return;
        }
        let name = &pool.name;
        let exactly = super::shared::delete_exactly(
            &api,
            name,
            pool.uid.as_deref().map(ToOwned::to_owned),
            pool.resource_version.as_deref().map(ToOwned::to_owned),
        );
        match exactly.await {
            Ok(true) => tracing::info!(pool = %name, "deleted an empty pool no NAD uses"),
            Ok(false) => {}
            Err(e) => tracing::warn!(pool = %name, error = %e, "could not delete unused pool"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caches::tests::pool;

    fn entries(pools: &[IPPool]) -> BTreeMap<Box<str>, PoolEntry> {
        pools
            .iter()
            .map(|p| {
                let (key, entry) = PoolEntry::of(p);
                (key.into_boxed_str(), entry)
            })
            .collect()
    }

    fn names(unused: &[PoolEntry]) -> Vec<&str> {
        unused.iter().map(|p| &*p.name).collect()
    }

    #[test]
    fn only_empty_ranges_of_ours_that_no_nad_wants_are_pruned() {
        let ours = |name: &str, range: &str, shard: &str, entries: &[(&str, &str)]| {
            pool(
                name,
                &[
                    (POOL_LABEL, range),
                    (SHARD_LABEL, shard),
                    (MANAGED_BY.0, MANAGED_BY.1),
                ],
                entries,
            )
        };
        let all = entries(&[
            // Empty, every shard: goes.
            ours("a", "a", "0", &[]),
            ours("a-s1", "a", "1", &[]),
            // One shard holds an entry, even one that is no offset: stays.
            ours("b", "b", "0", &[]),
            ours("b-s1", "b", "1", &[("not-an-offset", "x")]),
            // Wanted by a NAD: stays.
            ours("c", "c", "0", &[]),
            // Not ours (whereabouts' own, no labels): stays.
            pool("d", &[], &[]),
        ]);
        let wanted: HashSet<String> = ["c".to_owned()].into();
        assert_eq!(names(&unused_pools(&all, &wanted)), ["a", "a-s1"]);
        let nothing_wanted = HashSet::new();
        assert_eq!(
            names(&unused_pools(&all, &nothing_wanted)),
            ["a", "a-s1", "c"]
        );
    }
}
