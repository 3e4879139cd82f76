//! review10: adversarial tests of commit c11bc90 (UIDs kept as 16 bytes,
//! namespaces shared, per-allocation maps as B-trees) and the interned
//! claim range lists of 2a5f974.
//!
//! The unit tests check that `Uid` keeps text equality exactly (no two
//! spellings of one UUID compare equal, every text reads back), and that a
//! claim index entry is of its own pod only under the exact UID. The
//! integration tests run the real controller: claims naming a live pod by
//! another spelling of its UID (case, braces, URN, no hyphens, padding,
//! empty) are refused and take nothing from the pod, through garbage
//! collection rounds; and a deleted claim's release finishes (its
//! reservation deleted exactly by uid + version, the pending-release count
//! back to zero so a full range is refused promptly).

use std::collections::HashSet;
use std::time::Duration;

use hereabouts_api::{
    ClaimRange, IPClaim, NetworkAttachmentDefinition, OverlappingRangeIPReservation,
};
use hereabouts_controller::caches::{ClaimEntry, PodEntry};
use hereabouts_controller::compact::Uid;
use hereabouts_kit::eventually;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use proptest::prelude::*;
use serde_json::json;

mod common;
use common::{pods, pool_allocations, range, ready_addresses, replica, setup};

// === Unit: Uid ===

/// Spellings of one UUID that are not its canonical text.
fn respellings(canonical: &str) -> Vec<String> {
    vec![
        canonical.to_uppercase(),
        canonical.replace('-', ""),
        format!("{{{canonical}}}"),
        format!("urn:uuid:{canonical}"),
        format!(" {canonical}"),
        format!("{canonical} "),
        format!("{canonical}\n"),
        // One digit upper-cased (only when it is a letter).
        {
            let mut s: Vec<char> = canonical.chars().collect();
            if let Some(c) = s.iter_mut().find(|c| c.is_ascii_lowercase()) {
                *c = c.to_ascii_uppercase();
            }
            s.into_iter().collect()
        },
        // Hyphens moved (still 36 characters).
        format!(
            "{}-{}",
            &canonical[..7],
            canonical[7..].replacen('-', "", 1)
        ),
        // A multibyte character in place of the last digit: 36 chars, 37 bytes.
        format!("{}é", &canonical[..35]),
        // 36 bytes with a multibyte character.
        format!("{}é", &canonical[..34]),
    ]
}

fn uuid_text() -> impl Strategy<Value = String> {
    any::<[u8; 16]>().prop_map(|b| {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    })
}

fn any_uid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        uuid_text(),
        uuid_text().prop_flat_map(|u| {
            let variants = respellings(&u);
            (0..variants.len()).prop_map(move |i| variants[i].clone())
        }),
        "[0-9a-fA-F-]{36}",
        ".{0,40}",
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Two UIDs are equal, and `is` holds, exactly when their texts are;
    /// every UID reads back as it came; equal UIDs hash alike.
    #[test]
    fn uid_equality_is_text_equality(a in any_uid_text(), b in any_uid_text()) {
        let (ua, ub) = (Uid::new(&a), Uid::new(&b));
        prop_assert_eq!(ua.to_string(), a.clone());
        prop_assert_eq!(ub.to_string(), b.clone());
        prop_assert_eq!(ua == ub, a == b);
        prop_assert_eq!(ua.is(&b), a == b);
        prop_assert_eq!(ub.is(&a), a == b);
        prop_assert!(ua.is(&a));
        prop_assert_eq!(Uid::new(&ua.to_string()), ua.clone());
        if ua == ub {
            use std::hash::{BuildHasher, RandomState};
            let s = RandomState::new();
            prop_assert_eq!(s.hash_one(&ua), s.hash_one(&ub));
        }
    }

    /// A UUID and every other spelling of it: never equal, never `is`.
    #[test]
    fn no_respelling_of_a_uuid_is_that_uuid(u in uuid_text()) {
        let canonical = Uid::new(&u);
        prop_assert!(matches!(canonical, Uid::Uuid(_)));
        for other in respellings(&u) {
            prop_assert_ne!(&other, &u);
            let respelled = Uid::new(&other);
            prop_assert_ne!(&respelled, &canonical, "{:?}", other);
            prop_assert!(!canonical.is(&other), "{:?}", other);
            prop_assert!(!respelled.is(&u), "{:?}", other);
            prop_assert_eq!(respelled.to_string(), other);
        }
    }
}

fn pod_object(ns: &str, name: &str, uid: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "pause"}]}
    }))
    .expect("pod")
}

fn claim_object(ns: &str, name: &str, pod_ns: &str, pod: &str, pod_uid: &str) -> IPClaim {
    serde_json::from_value(json!({
        "apiVersion": "hereabouts.dev/v1alpha1",
        "kind": "IPClaim",
        "metadata": {"name": name, "namespace": ns, "uid": "0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b3",
                     "resourceVersion": "7"},
        "spec": {
            "network": {"namespace": ns, "name": "net"},
            "ranges": [{"range": "100.64.0.0/28"}],
            "interface": "net1",
            "pod": {"namespace": pod_ns, "name": pod, "uid": pod_uid},
            "containerID": "c",
            "node": "n"
        }
    }))
    .expect("claim")
}

/// Invariant 6 at the index: a claim entry is of its own pod only under
/// the pod's exact UID (and namespace), whatever the spelling.
#[test]
fn a_claim_entry_is_of_its_own_pod_only_under_the_exact_uid() {
    let uid = "5c1f0e2a-9b8d-4c7e-a6f5-0123456789ab";
    let (_, pod) = PodEntry::of(&pod_object("ns", "p", uid, "n"));
    assert_eq!(pod.uid().to_string(), uid);
    let (_, own) = ClaimEntry::of(&claim_object("ns", "c", "ns", "p", uid));
    assert!(own.of_own_pod(pod.uid()));
    assert_eq!(own.pod_uid.to_string(), uid);
    assert_eq!(own.uid.to_string(), "0f8a6b2c-1d3e-4f50-9a7b-c8d9e0f1a2b3");
    for other in respellings(uid).into_iter().chain([String::new()]) {
        let (_, c) = ClaimEntry::of(&claim_object("ns", "c", "ns", "p", &other));
        assert!(!c.of_own_pod(pod.uid()), "{other:?} acts for pod {uid}");
        assert_eq!(c.pod_uid.to_string(), other);
    }
    // Another namespace's pod of that name and UID: never its own.
    let (_, foreign) = ClaimEntry::of(&claim_object("ns", "c", "elsewhere", "p", uid));
    assert!(!foreign.of_own_pod(pod.uid()));
    // A pod with no UID (never from the API server) and a claim with none.
    let mut bare = pod_object("ns", "p", uid, "n");
    bare.metadata.uid = None;
    let (_, bare) = PodEntry::of(&bare);
    let (_, empty) = ClaimEntry::of(&claim_object("ns", "c", "ns", "p", ""));
    assert_eq!(bare.uid().to_string(), "");
    assert!(empty.of_own_pod(bare.uid()), "as before: \"\" == \"\"");
    assert!(!own.of_own_pod(bare.uid()));
}

/// The index's relist (now a B-tree) swaps in whole and hands back what it
/// replaced: a claim deleted in the gap, and one remade under its name (a
/// new UID), are both told apart from the survivors by key and UID, in the
/// compact form.
#[test]
fn a_relist_hands_back_the_view_it_replaced() {
    use kube::runtime::watcher::Event;
    let (index, mut writer) = hereabouts_controller::index::index(ClaimEntry::of);
    let with_uid = |name: &str, uid: &str| {
        let mut c = claim_object(
            "ns",
            name,
            "ns",
            "p",
            "5c1f0e2a-9b8d-4c7e-a6f5-0123456789ab",
        );
        c.metadata.uid = Some(uid.to_owned());
        c
    };
    let a = with_uid("a", "00000000-0000-0000-0000-00000000000a");
    let b = with_uid("b", "00000000-0000-0000-0000-00000000000b");
    let c = with_uid("c", "not-a-uuid-c");
    for o in [&a, &b, &c] {
        assert!(writer.apply(&Event::Apply(o.clone())).is_none());
    }
    assert_eq!(index.read().len(), 3);
    // Relist: a gone, b remade (new UID), c unchanged.
    let b2 = with_uid("b", "00000000-0000-0000-0000-0000000000b2");
    assert!(writer.apply(&Event::Init).is_none());
    assert_eq!(
        index.read().len(),
        3,
        "the old view stays until the relist is done"
    );
    assert!(writer.apply(&Event::InitApply(b2.clone())).is_none());
    assert!(writer.apply(&Event::InitApply(c.clone())).is_none());
    let before = writer.apply(&Event::InitDone).expect("the replaced view");
    let now = index.read();
    let vanished: Vec<(String, String)> = before
        .iter()
        .filter(|(k, e)| now.get(&**k).is_none_or(|n| n.uid != e.uid))
        .map(|(k, e)| (k.to_string(), e.uid.to_string()))
        .collect();
    assert_eq!(
        vanished,
        vec![
            (
                "ns/a".to_owned(),
                "00000000-0000-0000-0000-00000000000a".to_owned()
            ),
            (
                "ns/b".to_owned(),
                "00000000-0000-0000-0000-00000000000b".to_owned()
            ),
        ]
    );
    assert_eq!(now.len(), 2);
    assert_eq!(
        now.get("ns/c").map(|e| e.uid.to_string()).as_deref(),
        Some("not-a-uuid-c")
    );
    drop(now);
    // A deletion of a key the relist did not list, and of one it did.
    assert!(writer.apply(&Event::Delete(a.clone())).is_none());
    assert!(writer.apply(&Event::Delete(b2)).is_none());
    assert_eq!(
        index
            .read()
            .keys()
            .map(|k| k.to_string())
            .collect::<Vec<_>>(),
        vec!["ns/c"]
    );
}

// === Integration: the real controller ===

fn claim(ns: &str, pod: &(String, String), name: &str, ranges: Vec<ClaimRange>) -> IPClaim {
    IPClaim::new(name, common::claim_spec(ns, "blue", "net1", pod, ranges))
}

/// One claim `<pod>-net1` per pod of `pods`, asking `ranges`.
async fn file_claims(
    claims: &Api<IPClaim>,
    ns: &str,
    pods: &[(String, String)],
    ranges: &[ClaimRange],
) {
    for p in pods {
        claims
            .create(
                &PostParams::default(),
                &claim(ns, p, &format!("{}-net1", p.0), ranges.to_vec()),
            )
            .await
            .expect("claim");
    }
}

/// The NAD `blue` in `ns`: hereabouts on `range`.
async fn blue_nad(client: &Client, ns: &str, range: &str) {
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), ns);
    nads.create(
        &PostParams::default(),
        &NetworkAttachmentDefinition::new(
            "blue",
            hereabouts_api::NetworkAttachmentDefinitionSpec {
                config: json!({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan",
                               "master": "eth1",
                               "ipam": {"type": "hereabouts", "range": range}})
                .to_string(),
            },
        ),
    )
    .await
    .expect("NAD");
}

fn ready_condition(claim: &IPClaim) -> Option<(String, String, String)> {
    let status = claim.status.as_ref()?;
    if status.observed_generation != claim.metadata.generation {
        return None;
    }
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn reservation_names(client: &Client, ns: &str) -> Option<HashSet<String>> {
    let api: Api<OverlappingRangeIPReservation> = Api::namespaced(client.clone(), ns);
    Some(
        api.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .map(|r| r.name_any())
            .collect(),
    )
}

/// Claims naming a live pod by another spelling of its UID (or none) are
/// refused PodMismatch, and through aggressive collection rounds the pod
/// keeps its address and its reservation (invariants 5 and 6), while the
/// refused claims, which back nothing, free nothing.
#[tokio::test]
async fn claims_naming_a_pod_by_another_spelling_of_its_uid_take_nothing_from_it() {
    let (kit, ns) = setup("r10-spell").await;
    let replica = replica(
        &ns,
        "a",
        &["--gc-schedule", "* * * * * *", "--gc-grace", "3s"],
    );
    replica.wait_ready().await.expect("controller ready");
    blue_nad(&kit.client, &ns.name, "100.64.9.0/28").await;
    let victim = pods(&kit.client, &ns.name, "victim", 1).await.remove(0);
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let ranges = vec![range("100.64.9.0/28")];
    claims
        .create(
            &PostParams::default(),
            &claim(&ns.name, &victim, "victim-net1", ranges.clone()),
        )
        .await
        .expect("victim claim");
    let address = eventually("victim answered", 30, || async {
        ready_addresses(&claims.get("victim-net1").await.ok()?)
    })
    .await
    .expect("victim served");
    let ip = address[0].split('/').next().expect("an address").to_owned();
    eventually("victim's reservation", 20, || async {
        reservation_names(&kit.client, &ns.name)
            .await?
            .contains(&ip)
            .then_some(())
    })
    .await
    .expect("reservation written");

    let uid = victim.1.clone();
    let mut spellings = respellings(&uid);
    spellings.push(String::new());
    let mut names = Vec::new();
    for (i, spelled) in spellings.iter().enumerate() {
        let name = format!("spelled-{i}");
        let mut c = claim(
            &ns.name,
            &(victim.0.clone(), spelled.clone()),
            &name,
            ranges.clone(),
        );
        // The victim's own sandbox, too: as the plugin would write it.
        c.spec.container_id = format!("container-{uid}");
        claims
            .create(&PostParams::default(), &c)
            .await
            .unwrap_or_else(|e| panic!("create {name} ({spelled:?}): {e}"));
        names.push((name, spelled.clone()));
    }
    for (name, spelled) in &names {
        let answered = eventually(&format!("{name} answered"), 30, || async {
            match claims.get_opt(name).await.ok()? {
                // Collected already: it must not have been served.
                None => Some(None),
                Some(c) => ready_condition(&c).map(Some),
            }
        })
        .await
        .expect("an answer");
        eprintln!("{name} ({spelled:?}): {answered:?}");
        if let Some((status, reason, message)) = answered {
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "PodMismatch"),
                "{spelled:?} for pod uid {uid}: {message}"
            );
        }
    }
    // Several collection rounds past the grace period.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let held = pool_allocations(&kit.client, &ns.name, "100.64.9.0-28").await;
    let podref = format!("{}/{}", ns.name, victim.0);
    assert_eq!(
        held.into_iter().collect::<Vec<_>>(),
        vec![(ip.parse().expect("an address"), podref)],
        "the victim's allocation, alone"
    );
    let now = claims
        .get("victim-net1")
        .await
        .expect("victim's claim stays");
    assert_eq!(ready_addresses(&now), Some(address));
    assert!(
        reservation_names(&kit.client, &ns.name)
            .await
            .expect("list")
            .contains(&ip),
        "the victim's reservation stays"
    );
    // The refused claims, whose pod (by their UID) does not exist, are
    // collected.
    let left = eventually("refused claims collected", 30, || async {
        let list = claims.list(&ListParams::default()).await.ok()?;
        let left: Vec<String> = list.items.iter().map(|c| c.name_any()).collect();
        (left.len() == 1).then_some(left)
    })
    .await
    .expect("the collector removes claims that back no pod");
    assert_eq!(left, vec!["victim-net1".to_owned()]);
}

/// A deleted claim's release finishes: its reservation is deleted (by the
/// uid and version the controller wrote, read back from the compact UID),
/// and the pending-release count it raised is forgotten, so a claim on a
/// full range is refused at once rather than retried for ten minutes.
#[tokio::test]
async fn a_deleted_claims_release_finishes_and_its_reservation_goes() {
    let (kit, ns) = setup("r10-release").await;
    // Collection far away: only the release removes the reservation.
    let replica = replica(&ns, "a", &["--release-cooldown", "30s"]);
    replica.wait_ready().await.expect("controller ready");
    blue_nad(&kit.client, &ns.name, "203.0.113.64/30").await;
    let ranges = vec![range("203.0.113.64/30")];
    let ps = pods(&kit.client, &ns.name, "rel", 4).await;
    let claims: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    file_claims(&claims, &ns.name, &ps[..2], &ranges).await;
    let mut ips = Vec::new();
    for p in &ps[..2] {
        let a = eventually("answered", 30, || async {
            ready_addresses(&claims.get(&format!("{}-net1", p.0)).await.ok()?)
        })
        .await
        .expect("served");
        ips.push(a[0].split('/').next().expect("an address").to_owned());
    }
    eventually("both reservations", 20, || async {
        let names = reservation_names(&kit.client, &ns.name).await?;
        ips.iter().all(|ip| names.contains(ip)).then_some(())
    })
    .await
    .expect("reservations written");
    // Delete the first claim (a DEL): the release deletes its reservation
    // exactly.
    claims
        .delete(&format!("{}-net1", ps[0].0), &DeleteParams::default())
        .await
        .expect("delete");
    let deleted_at = std::time::Instant::now();
    eventually("the released address's reservation deleted", 20, || async {
        let names = reservation_names(&kit.client, &ns.name).await?;
        (!names.contains(&ips[0]) && names.contains(&ips[1])).then_some(())
    })
    .await
    .expect("the release removes its reservation (uid + version preconditions)");
    // Two more pods ask on the /30 (two addresses, one resting): one may
    // be served, the other finds the range full; with the release finished
    // that is a refusal now, not a retry for as long as a release waits.
    file_claims(&claims, &ns.name, &ps[2..], &ranges).await;
    let mut answers = Vec::new();
    for p in &ps[2..] {
        let answer = eventually("later claims answered", 25, || async {
            ready_condition(&claims.get(&format!("{}-net1", p.0)).await.ok()?)
        })
        .await
        .expect("every later claim is answered promptly (a pending release leaked?)");
        eprintln!("{}: {answer:?} after {:?}", p.0, deleted_at.elapsed());
        answers.push(answer);
    }
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == "False").collect();
    assert_eq!(refused.len(), 1, "{answers:?}");
    assert!(
        refused[0].1.contains("Exhaust"),
        "refused as full: {answers:?}"
    );
    let held = pool_allocations(&kit.client, &ns.name, "203.0.113.64-30").await;
    assert_eq!(held.len(), 2, "{held:?}");
}
