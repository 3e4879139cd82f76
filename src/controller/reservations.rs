//! OverlappingRangeIPReservations: one object per address, named after it
//! (whereabouts' rule), shared by every range of a `network_name`. Creating
//! one is the cross-pool uniqueness check: it fails when an overlapping
//! range holds the address. The pool actors reserve before they commit an
//! allocation and unreserve after they commit a release; the garbage
//! collector removes reservations that no allocation backs.

use std::net::IpAddr;

use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::core::ObjectMeta;

use crate::crd::{MANAGED_BY, OverlappingRangeIPReservation, OverlappingRangeIPReservationSpec};
use crate::ipam::{self, Allocation};

use super::context::Context;

/// A reservation as this controller last wrote or read it: enough to
/// delete exactly that object later without reading it first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    uid: Option<String>,
    resource_version: Option<String>,
}

impl Written {
    pub fn of(object: &OverlappingRangeIPReservation) -> Self {
        Written {
            uid: object.metadata.uid.clone(),
            resource_version: object.metadata.resource_version.clone(),
        }
    }

    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }
}

/// Reserves `ip` for `owner`. `Ok(Some)`: reserved (now, or already for
/// the same pod and interface); `Ok(None)`: another attachment holds it.
///
/// A reservation held by an attachment for which `ours` says yes is taken
/// over (replaced, with its resourceVersion as precondition): the caller
/// knows it to be its own leftover, e.g. of an address it is releasing in
/// the same batch, or of one it gave another request of the batch in an
/// attempt that did not commit. Taking those for an overlapping range's
/// would pass the address over for a minute, and in a storm shift every
/// later request of the batch onto an address reserved for the next one.
pub async fn reserve(
    ctx: &Context,
    network_name: Option<&str>,
    ip: IpAddr,
    owner: &Allocation,
    ours: impl Fn(&OverlappingRangeIPReservationSpec) -> bool,
) -> Result<Option<Written>, kube::Error> {
    let Ok(name) = ipam::reservation_name(network_name, ip) else {
        // A name Kubernetes would refuse cannot be reserved; the pool's
        // own uniqueness still holds.
        return Ok(Some(Written::default()));
    };
    let api: Api<OverlappingRangeIPReservation> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let object = OverlappingRangeIPReservation {
        metadata: ObjectMeta {
            name: Some(name.as_str().to_owned()),
            labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
            ..Default::default()
        },
        spec: OverlappingRangeIPReservationSpec {
            containerid: owner.container_id.clone(),
            podref: owner.pod_ref.clone(),
            ifname: owner.ifname.clone(),
        },
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok(Some(Written::of(&created))),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let Some(mut existing) = api.get_opt(name.as_str()).await? else {
                // Deleted in between: the next attempt creates it.
                return Ok(None);
            };
            if existing.spec.podref == owner.pod_ref && existing.spec.ifname == owner.ifname {
                return Ok(Some(Written::of(&existing)));
            }
            if !ours(&existing.spec) {
                return Ok(None);
            }
            existing.spec = object.spec;
            match api
                .replace(name.as_str(), &PostParams::default(), &existing)
                .await
            {
                Ok(replaced) => Ok(Some(Written::of(&replaced))),
                // Changed or deleted since read: decide again.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes the reservation of `ip` if `owner` still holds it. With `written`
/// (the object as this controller wrote it) that is one conditional
/// DELETE; when the object changed since, or nothing is known, it is read
/// first to see who holds it.
pub async fn unreserve(
    ctx: &Context,
    network_name: Option<&str>,
    ip: IpAddr,
    owner: &Allocation,
    written: Option<&Written>,
) -> Result<(), kube::Error> {
    let Ok(name) = ipam::reservation_name(network_name, ip) else {
        return Ok(());
    };
    let api: Api<OverlappingRangeIPReservation> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(written) = written.filter(|w| w.uid.is_some() && w.resource_version.is_some()) {
        match delete_if_unchanged(&api, name.as_str(), written).await {
            Ok(()) => return Ok(()),
            // Changed since written (taken over): see who holds it now.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let Some(existing) = api.get_opt(name.as_str()).await? else {
        return Ok(());
    };
    if existing.spec.podref != owner.pod_ref || existing.spec.ifname != owner.ifname {
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
            uid: written.uid.clone(),
            resource_version: written.resource_version.clone(),
        }),
        ..Default::default()
    };
    api.delete(name, &params).await.map(|_| ())
}
