//! IPAMClaims: addresses that belong to a claim (a KubeVirt VM), not to a
//! pod.
//!
//! Multus (v4.2.3) does not pass a network-selection element's
//! `ipam-claim-reference` to the delegate, so the reference is read here,
//! from the pod's `k8s.v1.cni.cncf.io/networks` annotation in the pod
//! cache: the element whose interface is the IPClaim's. The IPClaim keeps
//! acting for its own pod (checked before this, as for every claim); this
//! module only decides whose the address is:
//!
//! - [`bind`]: when the NAD opts in (`allowPersistentIPs`) and the IPAMClaim
//!   exists in the pod's namespace for the same network, every range's
//!   request is made in the IPAMClaim's name (its podref and container ID,
//!   the same for every pod referencing it) and, once the claim has
//!   addresses, for exactly those (a static request for others is refused);
//! - [`record`]: after the pool write, `status.ips`, `status.ownerPod` and
//!   the `IPAllocated` condition;
//! - [`run`]: deleting an IPAMClaim releases its addresses, once no pod
//!   that references it exists (a Terminating virt-launcher pod still runs
//!   with them; the collector frees them after it goes). A pod's DEL
//!   deletes only its IPClaim, whose release finds nothing under the pod's
//!   name: the address stays.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use hereabouts_api::{
    ClaimReference, ClaimedAddress, IP_ALLOCATED, IPAMClaim, IPAMClaimStatus, IPClaim,
    NetworkAttachmentDefinition, OwnerPod, Refusal, Refused, allows_persistent_ips,
    claim_references, owner_container_id, owner_podref,
};
use hereabouts_core::{Allocation, network_name_of};

use super::caches::{Lookups, PodEntry, PoolEntry};
use super::context::Context;
use super::index::Index;
use super::pools::{AllocRequest, ReleaseBy, ReleaseReason};

/// Why an IPClaim that references an IPAMClaim is not served (now).
#[derive(Debug)]
pub enum Error {
    /// For good: the condition reason and a message naming the field.
    Refused(Refused),
    /// The API server could not be asked: try again.
    Unknown(kube::Error),
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        Error::Refused(refused)
    }
}

fn refused(reason: Refusal, message: String) -> Error {
    Error::Refused(Refused::new(reason, message))
}

/// An IPClaim served in an IPAMClaim's name.
#[derive(Clone, Debug)]
pub struct Bound {
    pub ipamclaim: IPAMClaim,
    pub reference: ClaimReference,
}

/// The owner every request of an IPAMClaim is made as.
pub fn owner(ipamclaim: &IPAMClaim) -> Allocation {
    Allocation::new(
        owner_container_id(&ipamclaim.uid().unwrap_or_default()),
        owner_podref(
            &ipamclaim.namespace().unwrap_or_default(),
            &ipamclaim.name_any(),
        ),
        ipamclaim.spec.interface.clone(),
    )
}

/// Whether `claim`'s attachment references an IPAMClaim that its NAD lets
/// it use, and if so, `requests` rewritten in that IPAMClaim's name.
/// `Ok(None)`: the attachment is the pod's as usual (no reference, or a
/// NAD without `allowPersistentIPs`, which is told in a Warning Event).
pub async fn bind(
    ctx: &Context,
    lookups: &Lookups,
    claim: &IPClaim,
    requests: &mut [AllocRequest],
) -> Result<Option<Bound>, Error> {
    let spec = &claim.spec;
    let namespace = claim.namespace().unwrap_or_default();
    let references = match lookups
        .pods
        .get(&format!("{namespace}/{}", spec.pod.name))
        .filter(|p| p.uid().is(&spec.pod.uid))
    {
        Some(entry) => entry.claim_references().to_vec(),
        // No NAD of this network opts in: nothing to read (a pod storm
        // that outruns the pod cache costs no extra GET).
        None if !opted_in(&lookups.nads, &spec.network.name) => return Ok(None),
        None => {
            // The cache lags a pod that just started: read it.
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let pod = pods.get(&spec.pod.name).await.map_err(Error::Unknown)?;
            pod.annotations()
                .get(hereabouts_api::NETWORKS_ANNOTATION)
                .map(|a| claim_references(a, &namespace))
                .unwrap_or_default()
        }
    };
    let Some(reference) = references
        .into_iter()
        .find(|r| r.interface == spec.interface)
    else {
        return Ok(None);
    };
    let nad = nad(ctx, lookups, &reference).await?;
    let field = format!(
        "{}[{}]",
        hereabouts_api::NETWORKS_ANNOTATION,
        reference.index
    );
    let nad_network = nad_network(&nad);
    if nad_network != spec.network.name {
        return Err(refused(
            Refusal::IPAMClaimMismatch,
            format!(
                "{field}: interface {:?} selects NetworkAttachmentDefinition {}/{}, whose network is {nad_network:?}, not {:?}",
                spec.interface, reference.nad_namespace, reference.nad_name, spec.network.name
            ),
        ));
    }
    if !allows_persistent_ips(&nad.spec.config) {
        let message = format!(
            "{field}.ipam-claim-reference: {:?} ignored: NetworkAttachmentDefinition {}/{} does not say \"allowPersistentIPs\": true; the address is the pod's",
            reference.claim, reference.nad_namespace, reference.nad_name
        );
        tracing::info!(claim = %claim.name_any(), %message);
        ctx.event(
            &claim.object_ref(&()),
            EventType::Warning,
            "IPAMClaimIgnored",
            "Allocate",
            message,
        )
        .await;
        return Ok(None);
    }
    if let Err(why) = hereabouts_core::naming::check_object_name(&reference.claim) {
        return Err(refused(
            Refusal::InvalidIPAMClaimReference,
            format!(
                "{field}.ipam-claim-reference: {:?} is not an object name: {why}",
                reference.claim
            ),
        ));
    }
    let ipamclaim = ipamclaim(ctx, lookups, &namespace, &reference.claim)
        .await?
        .ok_or_else(|| {
            refused(
                Refusal::IPAMClaimNotFound,
                format!(
                    "{field}.ipam-claim-reference: no IPAMClaim {namespace}/{} exists",
                    reference.claim
                ),
            )
        })?;
    decide(claim, &ipamclaim, requests)?;
    Ok(Some(Bound {
        ipamclaim,
        reference,
    }))
}

/// Whether some cached NAD of `network` says `allowPersistentIPs`.
fn opted_in(nads: &Store<NetworkAttachmentDefinition>, network: &str) -> bool {
    nads.state()
        .iter()
        .any(|nad| allows_persistent_ips(&nad.spec.config) && nad_network(nad) == network)
}

/// The CNI network a NAD declares: its configuration's `name`, else its
/// own name (as the claim reconciler counts networks).
fn nad_network(nad: &NetworkAttachmentDefinition) -> String {
    serde_json::from_str::<serde_json::Value>(&nad.spec.config)
        .ok()
        .and_then(|c| c.get("name")?.as_str().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| nad.name_any())
}

async fn nad(
    ctx: &Context,
    lookups: &Lookups,
    reference: &ClaimReference,
) -> Result<NetworkAttachmentDefinition, Error> {
    let key = ObjectRef::new(&reference.nad_name).within(&reference.nad_namespace);
    if let Some(nad) = lookups.nads.get(&key) {
        return Ok((*nad).clone());
    }
    let api: Api<NetworkAttachmentDefinition> =
        Api::namespaced(ctx.client.clone(), &reference.nad_namespace);
    api.get_opt(&reference.nad_name)
        .await
        .map_err(Error::Unknown)?
        .ok_or_else(|| {
            refused(
                Refusal::NetworkNotFound,
                format!(
                    "{}[{}].name: no NetworkAttachmentDefinition {}/{} exists",
                    hereabouts_api::NETWORKS_ANNOTATION,
                    reference.index,
                    reference.nad_namespace,
                    reference.nad_name
                ),
            )
        })
}

/// The IPAMClaim from the cache, else from the API server (the cache may
/// lag one created just before its pod); `None` when it does not exist.
async fn ipamclaim(
    ctx: &Context,
    lookups: &Lookups,
    namespace: &str,
    name: &str,
) -> Result<Option<IPAMClaim>, Error> {
    if let Some(cached) = lookups
        .ipamclaims
        .get(&ObjectRef::new(name).within(namespace))
    {
        return Ok(Some((*cached).clone()));
    }
    let api: Api<IPAMClaim> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name).await.map_err(Error::Unknown)
}

/// Checks `claim` against the IPAMClaim it references and rewrites its
/// requests in the IPAMClaim's name, for exactly the IPAMClaim's
/// addresses once it has some (pure: what [`bind`] decides).
pub fn decide(
    claim: &IPClaim,
    ipamclaim: &IPAMClaim,
    requests: &mut [AllocRequest],
) -> Result<(), Refused> {
    let spec = &claim.spec;
    let key = format!(
        "{}/{}",
        ipamclaim.namespace().unwrap_or_default(),
        ipamclaim.name_any()
    );
    if ipamclaim.metadata.deletion_timestamp.is_some() {
        return Err(Refused::new(
            Refusal::IPAMClaimNotFound,
            format!("IPAMClaim {key} is being deleted"),
        ));
    }
    if ipamclaim.spec.network != spec.network.name {
        return Err(Refused::new(
            Refusal::IPAMClaimMismatch,
            format!(
                "IPAMClaim {key} spec.network: {:?} is not the attachment's network {:?}",
                ipamclaim.spec.network, spec.network.name
            ),
        ));
    }
    if !ipamclaim.spec.interface.is_empty() && ipamclaim.spec.interface != spec.interface {
        return Err(Refused::new(
            Refusal::IPAMClaimMismatch,
            format!(
                "IPAMClaim {key} spec.interface: {:?} is not the attachment's interface {:?}",
                ipamclaim.spec.interface, spec.interface
            ),
        ));
    }
    let mut held: Vec<(usize, IpAddr)> = Vec::new();
    for (i, value) in ipamclaim
        .status
        .iter()
        .flat_map(|s| s.ips.iter())
        .enumerate()
    {
        let ip = hereabouts_core::Cidr::parse_with_host(value)
            .map(|(ip, _)| ip)
            .ok()
            .or_else(|| hereabouts_core::parse_ip(value))
            .ok_or_else(|| {
                Refused::new(
                    Refusal::InvalidIPAMClaimStatus,
                    format!("IPAMClaim {key} status.ips[{i}]: {value:?} is not an address"),
                )
            })?;
        held.push((i, ip));
    }
    if let Some((i, ip)) = held
        .iter()
        .find(|(_, ip)| !requests.iter().any(|r| r.range.cidr().contains(*ip)))
    {
        return Err(Refused::new(
            Refusal::IPAMClaimMismatch,
            format!(
                "IPAMClaim {key} status.ips[{i}]: {ip} is in none of network {:?}'s ranges",
                spec.network.name
            ),
        ));
    }
    let owner = owner(ipamclaim);
    for (r, request) in requests.iter_mut().enumerate() {
        let mine = held
            .iter()
            .find(|(_, ip)| request.range.cidr().contains(*ip))
            .map(|(_, ip)| *ip);
        match (mine, request.static_ip) {
            (Some(held), Some(asked)) if held != asked => {
                return Err(Refused::new(
                    Refusal::StaticAddressConflict,
                    format!(
                        "spec.ranges[{r}].staticIP: {asked} conflicts with IPAMClaim {key}, which holds {held}"
                    ),
                ));
            }
            (Some(held), _) => request.static_ip = Some(held),
            (None, _) => {}
        }
        request.owner = owner.clone();
    }
    Ok(())
}

/// The IPAMClaim's status after `pod` got `ips` (pure): the addresses, the
/// owner (kept while it still lives, e.g. the source pod during a live
/// migration), and `IPAllocated` True. `None` when it says so already.
pub fn allocated_status(
    current: Option<&IPAMClaimStatus>,
    ips: &[String],
    pod: &str,
    owner_lives: impl Fn(&str) -> bool,
    now: Time,
) -> Option<IPAMClaimStatus> {
    let mut status = current.cloned().unwrap_or_default();
    let owner = match &status.owner_pod {
        Some(o) if !o.name.is_empty() && o.name != pod && owner_lives(&o.name) => o.name.clone(),
        _ => pod.to_owned(),
    };
    let condition = Condition {
        type_: IP_ALLOCATED.into(),
        status: "True".into(),
        reason: "SuccessfulAllocation".into(),
        message: format!("{} committed; owner pod {owner}", ips.join(", ")),
        last_transition_time: now,
        observed_generation: None,
    };
    let unchanged = status.ips == ips
        && status.owner_pod.as_ref().map(|o| o.name.as_str()) == Some(owner.as_str())
        && status.conditions.iter().any(|c| {
            c.type_ == IP_ALLOCATED && c.status == "True" && c.message == condition.message
        });
    if unchanged {
        return None;
    }
    status.ips = ips.to_vec();
    status.owner_pod = Some(OwnerPod { name: owner });
    set_condition(&mut status.conditions, condition);
    Some(status)
}

/// The IPAMClaim's status after its addresses could not be granted (pure).
pub fn refused_status(
    current: Option<&IPAMClaimStatus>,
    refused: &Refused,
    now: Time,
) -> Option<IPAMClaimStatus> {
    let mut status = current.cloned().unwrap_or_default();
    let reason = match refused.reason {
        Refusal::StaticAddressTaken => "IPAlreadyExists",
        other => other.as_str(),
    };
    let message = refused.message.as_str();
    if status
        .conditions
        .iter()
        .any(|c| c.type_ == IP_ALLOCATED && c.reason == reason && c.message == message)
    {
        return None;
    }
    set_condition(
        &mut status.conditions,
        Condition {
            type_: IP_ALLOCATED.into(),
            status: "False".into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: None,
        },
    );
    Some(status)
}

/// Replaces the condition of the same type, keeping its transition time
/// when its status stays.
fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        if old.status == condition.status {
            condition.last_transition_time = old.last_transition_time.clone();
        }
        *old = condition;
    } else {
        conditions.push(condition);
    }
}

/// After the pool write: records the addresses on the IPAMClaim (before
/// the pod's IPClaim is answered, so whoever sees the pod's address sees
/// the claim's). An IPAMClaim deleted meanwhile refuses the IPClaim; what
/// was committed is released by the deletion (or the collector).
pub async fn record(
    ctx: &Context,
    lookups: &Lookups,
    bound: &Bound,
    claim: &IPClaim,
    granted: &[ClaimedAddress],
) -> Result<(), Error> {
    let ips: Vec<String> = granted.iter().map(|a| a.address.clone()).collect();
    let namespace = claim.namespace().unwrap_or_default();
    let owner_lives = |name: &str| lookups.pods.get(&format!("{namespace}/{name}")).is_some();
    let pod = claim.spec.pod.name.clone();
    write(ctx, &bound.ipamclaim, |status| {
        allocated_status(
            status,
            &ips,
            &pod,
            owner_lives,
            Time(k8s_openapi::jiff::Timestamp::now()),
        )
    })
    .await
}

/// Records on the IPAMClaim why its addresses could not be granted.
pub async fn record_refusal(ctx: &Context, bound: &Bound, refused: &Refused) {
    let result = write(ctx, &bound.ipamclaim, |status| {
        refused_status(status, refused, Time(k8s_openapi::jiff::Timestamp::now()))
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(ipamclaim = %bound.ipamclaim.name_any(), error = ?e, "could not record the refusal");
    }
}

/// Writes the status `next` makes of the IPAMClaim's current one: a PUT
/// with the version read (two pods of a live migration may answer at
/// once), read again on a conflict. Fenced on the Lease.
async fn write(
    ctx: &Context,
    ipamclaim: &IPAMClaim,
    next: impl Fn(Option<&IPAMClaimStatus>) -> Option<IPAMClaimStatus>,
) -> Result<(), Error> {
    let namespace = ipamclaim.namespace().unwrap_or_default();
    let name = ipamclaim.name_any();
    let api: Api<IPAMClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let gone = || {
        refused(
            Refusal::IPAMClaimNotFound,
            format!("IPAMClaim {namespace}/{name} was deleted while its addresses were granted"),
        )
    };
    let mut current = ipamclaim.clone();
    for _ in 0..5 {
        let Some(status) = next(current.status.as_ref()) else {
            return Ok(());
        };
        if !ctx.leadership.is_leader() {
            return Err(Error::Unknown(not_leader()));
        }
        let mut object = current.clone();
        object.status = Some(status);
        object.metadata.managed_fields = None;
        match api
            .replace_status(&name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => return Err(gone()),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                current = api
                    .get_opt(&name)
                    .await
                    .map_err(Error::Unknown)?
                    .filter(|c| c.uid() == ipamclaim.uid())
                    .ok_or_else(gone)?;
            }
            Err(e) => return Err(Error::Unknown(e)),
        }
    }
    Err(Error::Unknown(not_leader()))
}

fn not_leader() -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure("not leading, or the IPAMClaim keeps changing", "Conflict")
            .with_code(409)
            .boxed(),
    )
}

/// Watches IPAMClaims and releases the addresses of each one deleted. A
/// deletion this replica could not act on (not leading, the pool
/// unwritable) is left to the collector, which frees an address whose
/// IPAMClaim is gone after its grace period.
pub async fn run(
    ctx: Arc<Context>,
    events: impl Stream<Item = Result<watcher::Event<IPAMClaim>, watcher::Error>>,
    pools: Index<PoolEntry>,
    pods: Index<Box<PodEntry>>,
) {
    let mut events = std::pin::pin!(events);
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Delete(ipamclaim)) => {
                failing = false;
                let (namespace, name) = (
                    ipamclaim.namespace().unwrap_or_default(),
                    ipamclaim.name_any(),
                );
                if referenced(&pods.read()).contains(&(namespace.clone(), name.clone())) {
                    tracing::info!(ipamclaim = %ipamclaim.name_any(), "IPAMClaim deleted while pods reference it: its address goes after they do");
                    continue;
                }
                let (ctx, pools) = (ctx.clone(), pools.clone());
                tokio::spawn(async move {
                    // The cache may lag: ask the API server before acting.
                    match referenced_now(&ctx, &namespace, &name).await {
                        Ok(false) => release(&ctx, &pools, &ipamclaim).await,
                        Ok(true) => {
                            tracing::info!(ipamclaim = %name, "IPAMClaim deleted while pods reference it: its address goes after they do");
                        }
                        Err(e) => {
                            tracing::warn!(ipamclaim = %name, error = %e, "cannot check the pods of a deleted IPAMClaim; the collector will");
                        }
                    }
                });
            }
            Ok(_) => failing = false,
            Err(e) => {
                // Without the CRD installed this repeats (with backoff):
                // say it once.
                if failing {
                    tracing::debug!(error = %e, "IPAMClaim watch error; retrying");
                } else {
                    tracing::warn!(error = %e, "IPAMClaim watch error (is the IPAMClaim CRD installed?); retrying");
                }
                failing = true;
            }
        }
    }
}

/// Releases what `ipamclaim` holds in every pool (exactly its entries: its
/// podref and its UID's container ID, so a claim made again under the
/// same name that took the address over keeps it).
#[tracing::instrument(skip_all, fields(ipamclaim = %ipamclaim.name_any(), namespace = ipamclaim.namespace().unwrap_or_default()))]
async fn release(ctx: &Arc<Context>, pools: &Index<PoolEntry>, ipamclaim: &IPAMClaim) {
    if !ctx.leadership.is_leader() {
        return;
    }
    let owner = owner(ipamclaim);
    let mut targets: HashMap<String, hereabouts_core::Cidr> = HashMap::new();
    for pool in pools.read().values() {
        let holds = pool
            .allocations
            .iter()
            .any(|a| *a.podref == *owner.pod_ref && a.id.is(&owner.container_id));
        if !holds {
            continue;
        }
        if let Ok((_, cidr)) = hereabouts_core::Cidr::parse_with_host(&pool.range) {
            targets.insert(pool.base.to_string(), cidr);
        }
    }
    for (base, cidr) in targets {
        let network_name = network_name_of(&base, &cidr);
        let by = ReleaseBy::Owner {
            pod_ref: owner.pod_ref.to_string(),
            ifname: owner.ifname.to_string(),
            container_id: Some(owner.container_id.to_string()),
        };
        match ctx
            .pools
            .release(
                &cidr,
                network_name.as_deref(),
                by,
                ReleaseReason::IpamClaimDeleted {
                    cooldown: ctx.release.cooldown,
                },
            )
            .await
        {
            Ok(released) => {
                tracing::info!(ipamclaim = %ipamclaim.name_any(), pool = %base, released, "IPAMClaim deleted: its address released");
            }
            Err(e) => {
                tracing::warn!(ipamclaim = %ipamclaim.name_any(), pool = %base, error = %e, "could not release a deleted IPAMClaim's address; the collector will");
            }
        }
    }
}

/// Whether a pod of `namespace` references the IPAMClaim `name`, as the
/// API server says now (not the pod cache, which may lag: a pod just
/// created with the reference must keep the address it was answered).
pub async fn referenced_now(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = api.list(&kube::api::ListParams::default()).await?;
    Ok(pods.items.iter().any(|pod| {
        let (_, entry) = PodEntry::of(pod);
        entry.claim_references().iter().any(|r| r.claim == name)
    }))
}

/// The IPAMClaims (namespace, name) that existing pods (the pod index's
/// entries, by `namespace/name`) reference.
pub fn referenced(pods: &BTreeMap<Box<str>, Box<PodEntry>>) -> HashSet<(String, String)> {
    pods.iter()
        .filter(|(_, p)| !p.claim_references().is_empty())
        .flat_map(|(key, p)| {
            let namespace = key.split_once('/').map_or("", |(ns, _)| ns).to_owned();
            p.claim_references()
                .iter()
                .map(move |r| (namespace.clone(), r.claim.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hereabouts_api::{ClaimRange, IPAMClaimSpec, IPClaimSpec, NetworkRef, PodRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ipclaim(network: &str, interface: &str, static_ips: &[&str]) -> IPClaim {
        let mut claim = IPClaim::new(
            "virt-launcher-vm1-net1",
            IPClaimSpec {
                network: NetworkRef {
                    namespace: "vms".into(),
                    name: network.into(),
                },
                ranges: vec![
                    ClaimRange {
                        range: "198.51.100.0/24".into(),
                        ..Default::default()
                    },
                    ClaimRange {
                        range: "2001:db8::/64".into(),
                        ..Default::default()
                    },
                ],
                network_name: None,
                enable_overlapping_ranges: true,
                interface: interface.into(),
                pod: PodRef {
                    namespace: "vms".into(),
                    name: "virt-launcher-vm1".into(),
                    uid: "pod-uid".into(),
                },
                container_id: "c1".into(),
                node: "n1".into(),
                static_ips: static_ips.iter().map(|s| (*s).to_owned()).collect(),
            },
        );
        claim.metadata.namespace = Some("vms".into());
        claim
    }

    fn requests(claim: &IPClaim) -> Vec<AllocRequest> {
        let ranges: Vec<hereabouts_core::IpRange> = (claim.spec.ranges.iter().enumerate())
            .map(|(i, r)| r.parse(i).expect("range"))
            .collect();
        let per_range: Vec<Option<&str>> = (claim.spec.ranges.iter())
            .map(|r| r.static_ip.as_deref())
            .collect();
        let plan = hereabouts_core::claim_requests(
            &ranges.iter().collect::<Vec<_>>(),
            &per_range,
            &claim.spec.static_ips,
        )
        .expect("static requests");
        ranges
            .into_iter()
            .zip(plan)
            .map(|(range, planned)| AllocRequest {
                range,
                network_name: None,
                overlapping: true,
                owner: Allocation::new("c1", "vms/virt-launcher-vm1", "net1"),
                static_ip: match planned {
                    hereabouts_core::RangeRequest::Static(r) => Some(r.ip),
                    hereabouts_core::RangeRequest::Dynamic => None,
                },
            })
            .collect()
    }

    fn ipamclaim(network: &str, interface: &str, ips: &[&str]) -> IPAMClaim {
        IPAMClaim {
            metadata: ObjectMeta {
                name: Some("vm1.tenant".into()),
                namespace: Some("vms".into()),
                uid: Some("claim-uid".into()),
                ..Default::default()
            },
            spec: IPAMClaimSpec {
                network: network.into(),
                interface: interface.into(),
            },
            status: (!ips.is_empty()).then(|| IPAMClaimStatus {
                ips: ips.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_new_claim_asks_in_the_claims_name_for_any_address() {
        let claim = ipclaim("tenant", "net1", &[]);
        let mut reqs = requests(&claim);
        decide(&claim, &ipamclaim("tenant", "", &[]), &mut reqs).expect("bound");
        for r in &reqs {
            assert_eq!(&*r.owner.pod_ref, "vms/ipamclaim:vm1.tenant");
            assert_eq!(&*r.owner.container_id, "ipamclaim-claim-uid");
            assert_eq!(&*r.owner.ifname, "");
            assert_eq!(r.static_ip, None);
        }
    }

    #[test]
    fn a_claim_with_addresses_asks_for_exactly_those() {
        let claim = ipclaim("tenant", "net1", &[]);
        let mut reqs = requests(&claim);
        let held = ipamclaim("tenant", "net1", &["2001:db8::7/64", "198.51.100.9/24"]);
        decide(&claim, &held, &mut reqs).expect("bound");
        let asked: Vec<String> = reqs
            .iter()
            .map(|r| r.static_ip.expect("static").to_string())
            .collect();
        assert_eq!(asked, ["198.51.100.9", "2001:db8::7"]);
        assert!(reqs.iter().all(|r| &*r.owner.ifname == "net1"));
    }

    #[test]
    fn a_static_request_must_be_the_claims_address() {
        let same = ipclaim("tenant", "net1", &["198.51.100.9"]);
        let held = ipamclaim("tenant", "", &["198.51.100.9/24"]);
        decide(&same, &held, &mut requests(&same)).expect("the same address is fine");
        let other = ipclaim("tenant", "net1", &["198.51.100.10"]);
        let Refused { reason, message } =
            decide(&other, &held, &mut requests(&other)).expect_err("conflict");
        assert_eq!(reason, Refusal::StaticAddressConflict);
        assert!(
            message.contains("198.51.100.10")
                && message.contains("198.51.100.9")
                && message.contains("vms/vm1.tenant"),
            "{message}"
        );
        // A first allocation may ask for a static address.
        let first = ipclaim("tenant", "net1", &["198.51.100.10"]);
        let mut reqs = requests(&first);
        decide(&first, &ipamclaim("tenant", "", &[]), &mut reqs).expect("bound");
        assert_eq!(
            reqs[0].static_ip.map(|ip| ip.to_string()).as_deref(),
            Some("198.51.100.10")
        );
    }

    #[test]
    fn mismatches_are_refused_naming_the_field() {
        let claim = ipclaim("tenant", "net1", &[]);
        let cases = [
            (ipamclaim("other", "", &[]), "spec.network"),
            (ipamclaim("tenant", "net2", &[]), "spec.interface"),
            (
                ipamclaim("tenant", "", &["203.0.113.1/24"]),
                "status.ips[0]",
            ),
            (ipamclaim("tenant", "", &["bogus"]), "status.ips[0]"),
        ];
        for (held, field) in cases {
            let mut reqs = requests(&claim);
            let Refused { message, .. } = decide(&claim, &held, &mut reqs).expect_err(field);
            assert!(message.contains(field), "{field}: {message}");
            assert!(
                reqs.iter()
                    .all(|r| &*r.owner.pod_ref == "vms/virt-launcher-vm1"),
                "nothing rewritten on refusal"
            );
        }
        let mut deleting = ipamclaim("tenant", "", &[]);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let Refused { reason, .. } =
            decide(&claim, &deleting, &mut requests(&claim)).expect_err("deleting");
        assert_eq!(reason, Refusal::IPAMClaimNotFound);
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    #[test]
    fn the_first_pod_owns_and_a_migration_target_does_not_take_over() {
        let ips = vec!["198.51.100.1/24".to_owned()];
        let first = allocated_status(None, &ips, "source", |_| false, now()).expect("written");
        assert_eq!(first.ips, ips);
        assert_eq!(
            first.owner_pod.as_ref().map(|o| o.name.as_str()),
            Some("source")
        );
        let c = &first.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("IPAllocated", "True", "SuccessfulAllocation")
        );
        // The source pod still lives: the target's ADD changes nothing.
        assert_eq!(
            allocated_status(Some(&first), &ips, "target", |p| p == "source", now()),
            None
        );
        // The source is gone: the next pod becomes the owner.
        let moved =
            allocated_status(Some(&first), &ips, "target", |_| false, now()).expect("written");
        assert_eq!(moved.owner_pod.map(|o| o.name).as_deref(), Some("target"));
        assert_eq!(moved.conditions.len(), 1);
    }

    #[test]
    fn references_are_read_from_the_pods_annotation() {
        let pod = |name: &str, annotation: Option<&str>| {
            let mut pod = Pod::default();
            pod.metadata.name = Some(name.into());
            pod.metadata.namespace = Some("vms".into());
            pod.metadata.annotations = annotation.map(|a| {
                std::iter::once((hereabouts_api::NETWORKS_ANNOTATION.to_owned(), a.to_owned()))
                    .collect()
            });
            let (key, entry) = PodEntry::boxed(&pod);
            (key.into_boxed_str(), entry)
        };
        let pods: BTreeMap<Box<str>, Box<PodEntry>> = [
            pod(
                "virt-launcher-vm1-a",
                Some(r#"[{"name":"tenant","ipam-claim-reference":"vm1.tenant"}]"#),
            ),
            pod("web", Some("vms/tenant")),
            pod("bare", None),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            referenced(&pods),
            HashSet::from([("vms".to_owned(), "vm1.tenant".to_owned())])
        );
        let entry = &pods["vms/virt-launcher-vm1-a"];
        assert_eq!(entry.claim_references()[0].interface, "net1");
        assert!(pods["vms/web"].claim_references().is_empty());
    }

    #[test]
    fn a_refusal_is_recorded_once_with_upstreams_reason() {
        let taken = Refused::new(Refusal::StaticAddressTaken, "taken");
        let status = refused_status(None, &taken, now()).expect("written");
        assert_eq!(status.conditions[0].reason, "IPAlreadyExists");
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(refused_status(Some(&status), &taken, now()), None);
    }
}
