//! `release`: returns one address by hand, for what the garbage collector
//! will not touch (e.g. a pod that exists but no longer uses the address).
//!
//! The allocation entry is removed with a compare-and-swap write: the
//! IPPool is replaced carrying the resourceVersion it was read at, and only
//! if the entry still names the same container; a conflict re-reads and
//! tries again. The controller's own next write to that pool then
//! conflicts and reloads, so nothing it caches can bring the entry back.
//! Then the address's OverlappingRangeIPReservation goes (only if unchanged
//! since read), and the IPClaims answered with it (the controller would
//! otherwise keep telling their pods they hold it).

use std::net::IpAddr;

use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde::Serialize;

use hereabouts_api::{IPClaim, IPPool, OverlappingRangeIPReservation};
use hereabouts_core;

use super::Error;
use super::inventory::Inventory;
use super::query::address_ip;

/// Writes tried before giving up on a pool that keeps changing.
const MAX_ATTEMPTS: u32 = 10;

/// An object to delete only as it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exact {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a release will do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub ip: IpAddr,
    /// Where the pools and reservations are.
    pub namespace: String,
    /// The range, and the IPPool object (shard) whose entry goes.
    pub pool: String,
    pub object: String,
    pub key: String,
    pub pod: String,
    pub interface: String,
    pub container_id: String,
    pub pod_exists: bool,
    pub reservation: Option<Exact>,
    pub claims: Vec<Exact>,
}

/// What a release did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// False when the entry was already gone.
    pub released: bool,
    pub reservation_deleted: bool,
    /// `namespace/name`
    pub claims_deleted: Vec<String>,
}

/// Finds the one allocation of `ip` (in `pool` when given) and what goes
/// with it.
pub fn plan(inv: &Inventory, ip: IpAddr, pool: Option<&str>) -> Result<Plan, Error> {
    let everywhere: Vec<_> = inv
        .pools
        .iter()
        .flat_map(|p| p.holding(ip).map(move |h| (p, h)))
        .collect();
    if everywhere.is_empty() {
        return Err(Error::NotAllocated {
            ip,
            namespace: inv.namespace.clone(),
        });
    }
    let listed = |list: &[(&super::inventory::Pool, &super::inventory::Held)]| {
        list.iter()
            .map(|(p, h)| format!("{} ({})", p.name, h.object))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen: Vec<_> = match pool {
        Some(name) => everywhere
            .iter()
            .filter(|(p, _)| p.name == name)
            .copied()
            .collect(),
        None => everywhere.clone(),
    };
    let (range, held) = match chosen.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::NotInPool {
                ip,
                pool: pool.unwrap_or_default().to_owned(),
                found: listed(&everywhere),
            });
        }
        several => {
            return Err(Error::Ambiguous {
                ip,
                pools: listed(several),
            });
        }
    };
    let a = &held.allocation;
    let reservation = hereabouts_core::reservation_name(range.network_name.as_deref(), ip)
        .ok()
        .and_then(|name| {
            inv.reservations.iter().find(|r| {
                r.metadata.name.as_deref() == Some(name.as_str())
                    && r.spec.podref == a.podref
                    && (r.spec.ifname.is_empty() || r.spec.ifname == a.ifname)
            })
        })
        .map(|r| exact(&inv.namespace, &r.metadata));
    let claims =
        inv.claims
            .iter()
            .filter(|c| {
                format!("{}/{}", c.spec.pod.namespace, c.spec.pod.name) == a.podref
                    && c.spec.interface == a.ifname
                    && c.status.iter().flat_map(|s| s.ips.iter()).any(|addr| {
                        addr.pool == range.name && address_ip(&addr.address) == Some(ip)
                    })
            })
            .map(|c| {
                exact(
                    c.metadata.namespace.as_deref().unwrap_or_default(),
                    &c.metadata,
                )
            })
            .collect();
    Ok(Plan {
        ip,
        namespace: inv.namespace.clone(),
        pool: range.name.clone(),
        object: held.object.clone(),
        key: held.key.clone(),
        pod: a.podref.clone(),
        interface: a.ifname.clone(),
        container_id: a.id.clone(),
        pod_exists: inv.pod_exists(&a.podref),
        reservation,
        claims,
    })
}

fn exact(namespace: &str, meta: &kube::core::ObjectMeta) -> Exact {
    Exact {
        namespace: namespace.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

/// Carries out `plan`. Refuses while the pod exists unless `force`.
pub async fn execute(client: &kube::Client, plan: &Plan, force: bool) -> Result<Outcome, Error> {
    if plan.pod_exists && !force {
        return Err(Error::PodAlive {
            ip: plan.ip,
            pod: plan.pod.clone(),
        });
    }
    let mut outcome = Outcome {
        released: remove_entry(client, plan).await?,
        ..Default::default()
    };
    if let Some(r) = &plan.reservation {
        let api: Api<OverlappingRangeIPReservation> =
            Api::namespaced(client.clone(), &plan.namespace);
        outcome.reservation_deleted =
            delete_exact(&api, r, "OverlappingRangeIPReservation").await?;
    }
    for c in &plan.claims {
        let api: Api<IPClaim> = Api::namespaced(client.clone(), &c.namespace);
        let claim = Exact {
            // The controller writes the claim's status meanwhile: only
            // its identity must match.
            resource_version: None,
            ..c.clone()
        };
        if delete_exact(&api, &claim, "IPClaim").await? {
            outcome
                .claims_deleted
                .push(format!("{}/{}", c.namespace, c.name));
        }
    }
    Ok(outcome)
}

/// The compare-and-swap: true when this call removed the entry, false when
/// it was already gone.
async fn remove_entry(client: &kube::Client, plan: &Plan) -> Result<bool, Error> {
    let namespace = &plan.namespace;
    let api: Api<IPPool> = Api::namespaced(client.clone(), namespace);
    for _ in 0..MAX_ATTEMPTS {
        let Some(mut pool) = api.get_opt(&plan.object).await.map_err(Error::api(format!(
            "reading IPPool {namespace}/{}",
            plan.object
        )))?
        else {
            return Ok(false);
        };
        match pool.spec.allocations.get(&plan.key) {
            None => return Ok(false),
            Some(a) if a.id != plan.container_id || a.podref != plan.pod => {
                return Err(Error::Changed {
                    ip: plan.ip,
                    object: plan.object.clone(),
                    holder: format!("{} {} (container {})", a.podref, a.ifname, a.id),
                });
            }
            Some(_) => {}
        }
        pool.spec.allocations.remove(&plan.key);
        // `pool.metadata.resourceVersion` is the version just read: the
        // write fails with 409 if anyone wrote since.
        match api
            .replace(&plan.object, &PostParams::default(), &pool)
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => {
                return Err(Error::Api {
                    what: format!("writing IPPool {namespace}/{}", plan.object),
                    source: e,
                });
            }
        }
    }
    Err(Error::Conflicts {
        object: plan.object.clone(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Deletes `object` if it is still the one read; true when deleted.
async fn delete_exact<K>(api: &Api<K>, object: &Exact, kind: &str) -> Result<bool, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid.clone(),
            resource_version: object.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&object.name, &params).await {
        Ok(_) => Ok(true),
        // Gone already, or changed hands since read: not ours to delete.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(Error::Api {
            what: format!("deleting {kind} {}/{}", object.namespace, object.name),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::inventory::fixtures::*;
    use super::super::inventory::merge;
    use super::*;

    fn inventory() -> Inventory {
        Inventory {
            namespace: "pools".to_owned(),
            pools: merge(vec![
                pool(
                    "blue-10.0.0.0-24",
                    "10.0.0.0/24",
                    None,
                    &[("5", allocation("c5", "ns/web", "net1"))],
                ),
                pool(
                    "red-10.0.0.0-24",
                    "10.0.0.0/24",
                    None,
                    &[("5", allocation("c6", "ns/db", "net1"))],
                ),
            ]),
            reservations: vec![
                reservation("blue-10.0.0.5", "ns/web", "net1"),
                reservation("red-10.0.0.5", "ns/someone-else", "net1"),
            ],
            claims: vec![
                claim(
                    "web-net1",
                    "ns/web",
                    "net1",
                    "10.0.0.5/24",
                    "blue-10.0.0.0-24",
                ),
                claim(
                    "web-net2",
                    "ns/web",
                    "net2",
                    "10.0.0.5/24",
                    "green-10.0.0.0-24",
                ),
            ],
            pods: HashSet::from(["ns/web".to_owned()]),
            malformed: Vec::new(),
        }
    }

    #[test]
    fn plans_the_entry_its_reservation_and_claims() {
        let inv = inventory();
        let ip = "10.0.0.5".parse().expect("ip");
        let plan = plan(&inv, ip, Some("blue-10.0.0.0-24")).expect("plan");
        assert_eq!(plan.object, "blue-10.0.0.0-24");
        assert_eq!(plan.key, "5");
        assert_eq!(plan.pod, "ns/web");
        assert!(plan.pod_exists);
        assert_eq!(
            plan.reservation.as_ref().map(|r| r.name.as_str()),
            Some("blue-10.0.0.5")
        );
        let claims: Vec<&str> = plan.claims.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(claims, ["web-net1"]);

        // A reservation held for someone else is left alone.
        let red = super::plan(&inv, ip, Some("red-10.0.0.0-24")).expect("plan");
        assert_eq!(red.reservation, None);
        assert!(red.claims.is_empty() && !red.pod_exists);
    }

    #[test]
    fn refusals_say_what_to_do() {
        let inv = inventory();
        let ip = "10.0.0.5".parse().expect("ip");
        let e = plan(&inv, ip, None).expect_err("ambiguous").to_string();
        assert!(
            e.contains("blue-10.0.0.0-24 (blue-10.0.0.0-24), red-10.0.0.0-24")
                && e.contains("--pool"),
            "{e}"
        );
        let e = plan(&inv, ip, Some("green"))
            .expect_err("not there")
            .to_string();
        assert!(
            e.starts_with("--pool green: 10.0.0.5 is not allocated there"),
            "{e}"
        );
        let e = plan(&inv, "10.0.0.6".parse().expect("ip"), None)
            .expect_err("free")
            .to_string();
        assert_eq!(
            e,
            "10.0.0.6 is not allocated in any IPPool of namespace pools"
        );
    }
}
