//! The NetworkAttachmentDefinition reconciler: creates the IPPools a NAD's
//! ranges need before any pod asks, and tells the NAD's owner, as a Warning
//! Event on the NAD, what is wrong with a configuration it cannot use. NADs
//! are only read. Pools no NAD wants any more are removed by [`prune`] once
//! they hold no allocation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::core::ObjectMeta;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use hereabouts_api::{
    IPPool, IPPoolSpec, MANAGED_BY, NetworkAttachmentDefinition, POOL_LABEL, SHARD_LABEL,
};
use hereabouts_core::ConfigError;

use super::context::Context;

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

/// Serves NAD events until the watch ends.
pub async fn run(
    ctx: Arc<Context>,
    events: impl Stream<Item = Result<watcher::Event<NetworkAttachmentDefinition>, watcher::Error>>,
    store: Store<NetworkAttachmentDefinition>,
) {
    let mut events = std::pin::pin!(events);
    let mut leadership = ctx.leadership.clone();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(nad) | watcher::Event::InitApply(nad))) => {
                    if ctx.leadership.is_leader() {
                        reconcile(&ctx, &nad).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "NetworkAttachmentDefinition watch error; retrying"),
                None => return,
            },
            () = leadership.changed() => {
                if ctx.leadership.is_leader() {
                    for nad in store.state() {
                        reconcile(&ctx, &nad).await;
                    }
                }
            }
        }
    }
}

async fn reconcile(ctx: &Context, nad: &NetworkAttachmentDefinition) {
    let started = std::time::Instant::now();
    let name = format!("{}/{}", nad.namespace().unwrap_or_default(), nad.name_any());
    match wanted_pools(nad) {
        Ok(pools) => {
            for (pool, cidr) in pools {
                if let Err(e) = ensure_pool(ctx, &pool, &cidr).await {
                    tracing::warn!(nad = %name, pool, error = %e, "could not create pool");
                }
            }
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
        }
    }
    ctx.metrics.reconciled("nad", started.elapsed());
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

/// Deletes the empty pools hereabouts created that no NAD wants any more.
/// The delete carries the pool's resourceVersion, so a pool that got an
/// allocation meanwhile stays.
pub async fn prune(
    ctx: &Context,
    nads: &Store<NetworkAttachmentDefinition>,
    pools: &Store<IPPool>,
) {
    let wanted: HashSet<String> = nads
        .state()
        .iter()
        .filter_map(|nad| wanted_pools(nad).ok())
        .flatten()
        .map(|(name, _)| name)
        .collect();
    let all = pools.state();
    let api: Api<IPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for pool in &all {
        let managed = pool.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1);
        let Some(label) = pool.labels().get(POOL_LABEL) else {
            continue;
        };
        // A range is only as empty as all of its shards.
        let range_empty = all
            .iter()
            .filter(|p| p.labels().get(POOL_LABEL) == Some(label))
            .all(|p| p.spec.allocations.is_empty());
        let base = all
            .iter()
            .find(|p| {
                p.labels().get(POOL_LABEL) == Some(label)
                    && p.labels().get(SHARD_LABEL).map(String::as_str) == Some("0")
            })
            .map(|p| p.name_any());
        if !managed || !range_empty || base.as_ref().is_some_and(|b| wanted.contains(b)) {
            continue;
        }
        if !ctx.leadership.is_leader() {
            return;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pool.uid(),
                resource_version: pool.resource_version(),
            }),
            ..Default::default()
        };
        match api.delete(&pool.name_any(), &params).await {
            Ok(_) => tracing::info!(pool = %pool.name_any(), "deleted an empty pool no NAD uses"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pool = %pool.name_any(), error = %e, "could not delete unused pool")
            }
        }
    }
}
