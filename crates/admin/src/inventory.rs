//! One read of what the admin commands look at, and the pools seen as
//! ranges: a range too large for one object is sharded into IPPools
//! `<name>`, `<name>-s1`, ... (labels `hereabouts.dev/pool` and
//! `hereabouts.dev/shard`); here they are merged back into one [`Pool`].
//! Objects that do not parse are kept aside as [`Malformed`] rather than
//! failing the whole read: an audit must survive the very thing it audits.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use hereabouts_api::{
    IPAllocation, IPClaim, IPPool, IPPoolStatus, OverlappingRangeIPReservation, base_name,
};
use hereabouts_core::{Cidr, IpRange, network_name_of, parse_allocation_key};

use super::Error;

/// Objects per list request.
const PAGE: u32 = 500;

/// An object that is not what its kind's schema says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Malformed {
    pub kind: &'static str,
    /// `namespace/name`
    pub name: String,
    pub error: String,
}

/// One allocation entry, where it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub ip: IpAddr,
    /// The IPPool object (shard) whose `spec.allocations` holds it.
    pub object: String,
    /// Its key there: the decimal offset from the network address.
    pub key: String,
    pub allocation: IPAllocation,
}

/// One range: the IPPool named after it and its shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// The name whereabouts derives from the range (shard 0's name).
    pub name: String,
    pub range: String,
    /// `None` when `spec.range` is not a CIDR.
    pub cidr: Option<Cidr>,
    pub network_name: Option<String>,
    /// The IPPool objects, shard 0 first.
    pub objects: Vec<String>,
    /// The controller's status on shard 0.
    pub status: Option<IPPoolStatus>,
    /// By address.
    pub allocations: Vec<Held>,
    /// `(object, key)` of entries whose key is no offset in the range.
    pub bad_keys: Vec<(String, String)>,
}

impl Pool {
    /// Addresses the range hands out: the controller's `status.rangeSize`
    /// (the configured range, exclusions applied) when present, else the
    /// CIDR's usable addresses.
    pub fn size(&self) -> Option<u128> {
        self.status
            .as_ref()
            .and_then(|s| s.range_size.parse().ok())
            .or_else(|| Some(IpRange::from_cidr(self.cidr?).ok()?.usable_count()))
    }

    /// Whether the controller last found no free address.
    pub fn exhausted_condition(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Exhausted" && c.status == "True")
        })
    }

    pub fn holding(&self, ip: IpAddr) -> impl Iterator<Item = &Held> + '_ {
        self.allocations.iter().filter(move |h| h.ip == ip)
    }
}

/// Groups IPPool objects into ranges, sorted by name.
pub fn merge(objects: Vec<IPPool>) -> Vec<Pool> {
    let mut groups: BTreeMap<String, Vec<IPPool>> = BTreeMap::new();
    for object in objects {
        groups.entry(base_name(&object)).or_default().push(object);
    }
    groups
        .into_iter()
        .map(|(name, mut objects)| {
            objects.sort_by_key(|o| (o.name_any() != name, o.name_any()));
            let range = objects
                .first()
                .map(|o| o.spec.range.clone())
                .unwrap_or_default();
            let cidr = Cidr::parse_with_host(&range).ok().map(|(_, c)| c);
            let network_name = cidr.as_ref().and_then(|c| network_name_of(&name, c));
            let status = objects
                .iter()
                .find(|o| o.name_any() == name)
                .and_then(|o| o.status.clone());
            let mut allocations = Vec::new();
            let mut bad_keys = Vec::new();
            for object in &objects {
                let object_name = object.name_any();
                for (key, allocation) in &object.spec.allocations {
                    let ip = parse_allocation_key(key)
                        .zip(cidr)
                        .and_then(|(offset, cidr)| cidr.ip_at(offset));
                    match ip {
                        Some(ip) => allocations.push(Held {
                            ip,
                            object: object_name.clone(),
                            key: key.clone(),
                            allocation: allocation.clone(),
                        }),
                        None => bad_keys.push((object_name.clone(), key.clone())),
                    }
                }
            }
            allocations.sort_by(|a, b| (a.ip, &a.object).cmp(&(b.ip, &b.object)));
            Pool {
                objects: objects.iter().map(ResourceExt::name_any).collect(),
                name,
                range,
                cidr,
                network_name,
                status,
                allocations,
                bad_keys,
            }
        })
        .collect()
}

/// Everything `who`, `check` and `release` look at.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// Where the pools and reservations are.
    pub namespace: String,
    pub pools: Vec<Pool>,
    pub reservations: Vec<OverlappingRangeIPReservation>,
    pub claims: Vec<IPClaim>,
    /// `namespace/name` of every pod that exists; terminating pods count,
    /// they hold their addresses until their DEL. And the podref
    /// (`namespace/ipamclaim:name`) of every IPAMClaim that exists: those
    /// hold their addresses until they are deleted.
    pub pods: HashSet<String>,
    pub malformed: Vec<Malformed>,
}

impl Inventory {
    /// Reads pools and reservations of `namespace`, claims of
    /// `claim_namespace` (all namespaces when `None`) and the names of all
    /// pods.
    pub async fn load(
        client: &kube::Client,
        namespace: &str,
        claim_namespace: Option<&str>,
    ) -> Result<Self, Error> {
        let (pools, mut malformed) = load_pools(client, namespace).await?;
        let (reservations, bad) = list_lenient::<OverlappingRangeIPReservation>(
            Api::namespaced(client.clone(), namespace),
            "OverlappingRangeIPReservation",
        )
        .await?;
        malformed.extend(bad);
        let claims_api = match claim_namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (claims, bad) = list_lenient::<IPClaim>(claims_api, "IPClaim").await?;
        malformed.extend(bad);
        let mut pods = pod_names(client).await?;
        pods.extend(ipamclaim_owners(client).await?);
        Ok(Inventory {
            namespace: namespace.to_owned(),
            pools,
            reservations,
            claims,
            pods,
            malformed,
        })
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn pod_exists(&self, pod_ref: &str) -> bool {
        self.pods.contains(pod_ref)
    }
}

/// The pools of `namespace`, merged per range, and the IPPool objects that
/// do not parse.
pub async fn load_pools(
    client: &kube::Client,
    namespace: &str,
) -> Result<(Vec<Pool>, Vec<Malformed>), Error> {
    let (objects, malformed) =
        list_lenient::<IPPool>(Api::namespaced(client.clone(), namespace), "IPPool").await?;
    Ok((merge(objects), malformed))
}

async fn pod_names(client: &kube::Client) -> Result<HashSet<String>, Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut names = HashSet::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(Error::api("listing pods"))?;
        names.extend(
            page.items
                .iter()
                .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(names),
        }
    }
}

/// The podref of every IPAMClaim (none when the CRD is not installed).
async fn ipamclaim_owners(client: &kube::Client) -> Result<Vec<String>, Error> {
    let api: Api<hereabouts_api::IPAMClaim> = Api::all(client.clone());
    let mut owners = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = match api.list_metadata(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(owners),
            Err(e) => return Err(Error::api("listing IPAMClaims")(e)),
        };
        owners.extend(page.items.iter().map(|c| {
            hereabouts_api::owner_podref(&c.namespace().unwrap_or_default(), &c.name_any())
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(owners),
        }
    }
}

/// Lists every object of `api`, keeping the ones that do not parse aside.
async fn list_lenient<K>(
    api: Api<DeserializeGuard<K>>,
    kind: &'static str,
) -> Result<(Vec<K>, Vec<Malformed>), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(Error::api(format!("listing {kind}s")))?;
        for DeserializeGuard(item) in page.items {
            match item {
                Ok(object) => good.push(object),
                Err(invalid) => bad.push(Malformed {
                    kind,
                    name: format!(
                        "{}/{}",
                        invalid.metadata.namespace.unwrap_or_default(),
                        invalid.metadata.name.unwrap_or_default()
                    ),
                    error: invalid.error,
                }),
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok((good, bad)),
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Small builders for the pure tests of the admin commands.

    use std::collections::BTreeMap;

    use kube::core::ObjectMeta;

    use hereabouts_api::{
        ClaimRange, ClaimedAddress, IPAllocation, IPClaim, IPClaimSpec, IPClaimStatus, IPPool,
        IPPoolSpec, NetworkRef, OverlappingRangeIPReservation, OverlappingRangeIPReservationSpec,
        PodRef,
    };

    pub fn allocation(container: &str, pod: &str, ifname: &str) -> IPAllocation {
        IPAllocation {
            id: container.to_owned(),
            podref: pod.to_owned(),
            ifname: ifname.to_owned(),
        }
    }

    /// An IPPool object; `shard` labels it as shard `k` of `base`.
    pub fn pool(
        name: &str,
        range: &str,
        shard: Option<(&str, u32)>,
        allocations: &[(&str, IPAllocation)],
    ) -> IPPool {
        let labels = shard.map(|(base, k)| {
            BTreeMap::from([
                ("hereabouts.dev/pool".to_owned(), base.to_owned()),
                ("hereabouts.dev/shard".to_owned(), k.to_string()),
            ])
        });
        IPPool {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("pools".to_owned()),
                labels,
                ..Default::default()
            },
            spec: IPPoolSpec {
                range: range.to_owned(),
                allocations: allocations
                    .iter()
                    .map(|(k, a)| ((*k).to_owned(), a.clone()))
                    .collect(),
            },
            status: None,
        }
    }

    pub fn reservation(name: &str, pod: &str, ifname: &str) -> OverlappingRangeIPReservation {
        OverlappingRangeIPReservation {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("pools".to_owned()),
                ..Default::default()
            },
            spec: OverlappingRangeIPReservationSpec {
                containerid: String::new(),
                podref: pod.to_owned(),
                ifname: ifname.to_owned(),
            },
        }
    }

    /// A claim of `pod` (`ns/name`) answered with `address` from `pool`.
    pub fn claim(name: &str, pod: &str, ifname: &str, address: &str, pool: &str) -> IPClaim {
        let (namespace, pod_name) = pod.split_once('/').expect("ns/name");
        IPClaim {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: IPClaimSpec {
                network: NetworkRef {
                    namespace: namespace.to_owned(),
                    name: "lan".to_owned(),
                },
                ranges: vec![ClaimRange::default()],
                network_name: None,
                enable_overlapping_ranges: true,
                interface: ifname.to_owned(),
                pod: PodRef {
                    namespace: namespace.to_owned(),
                    name: pod_name.to_owned(),
                    uid: "pod-uid".to_owned(),
                },
                container_id: "c".to_owned(),
                node: "node-a".to_owned(),
                static_ips: Vec::new(),
            },
            status: Some(IPClaimStatus {
                addresses: vec![address.to_owned()],
                ips: vec![ClaimedAddress {
                    address: address.to_owned(),
                    gateway: None,
                    pool: pool.to_owned(),
                }],
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn shards_merge_into_their_range() {
        let a = allocation("c1", "ns/a", "net1");
        let b = allocation("c2", "ns/b", "net1");
        let merged = merge(vec![
            pool(
                "big-10.0.0.0-16-s1",
                "10.0.0.0/16",
                Some(("big-10.0.0.0-16", 1)),
                &[("2049", b.clone())],
            ),
            pool(
                "big-10.0.0.0-16",
                "10.0.0.0/16",
                Some(("big-10.0.0.0-16", 0)),
                &[("5", a.clone()), ("x", a.clone())],
            ),
            pool("10.1.0.0-24", "10.1.0.0/24", None, &[]),
        ]);
        assert_eq!(merged.len(), 2);
        let big = &merged[1];
        assert_eq!(big.name, "big-10.0.0.0-16");
        assert_eq!(big.network_name.as_deref(), Some("big"));
        assert_eq!(big.objects, ["big-10.0.0.0-16", "big-10.0.0.0-16-s1"]);
        let ips: Vec<String> = big.allocations.iter().map(|h| h.ip.to_string()).collect();
        assert_eq!(ips, ["10.0.0.5", "10.0.8.1"]);
        assert_eq!(big.allocations[1].object, "big-10.0.0.0-16-s1");
        assert_eq!(
            big.bad_keys,
            [("big-10.0.0.0-16".to_owned(), "x".to_owned())]
        );
        assert_eq!(big.size(), Some(65_534));
        assert_eq!(merged[0].network_name, None);
        assert_eq!(merged[0].size(), Some(254));
    }

    #[test]
    fn a_pool_that_is_no_cidr_keeps_its_entries_as_bad_keys() {
        let merged = merge(vec![pool(
            "broken",
            "not-a-cidr",
            None,
            &[("1", allocation("c", "ns/p", "net1"))],
        )]);
        assert_eq!(merged[0].cidr, None);
        assert_eq!(merged[0].size(), None);
        assert_eq!(merged[0].bad_keys.len(), 1);
    }
}
