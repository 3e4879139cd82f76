//! One watch of this node's IPClaims (all namespaces, by the node label the
//! plugin puts on every claim), shared by every verb the agent serves:
//! - an ADD registers for its claim before it creates it, and the watch
//!   hands it each new version. While the watch is live (it showed something
//!   within [`REREAD`]) an ADD waits on it; a watch silent for that long
//!   makes the ADD read its claim again, so a stalled watch delays an answer
//!   but never loses it;
//! - a DEL looks up what the watch last saw of its claim ([`Known`]) and
//!   deletes exactly that version, with no read first; the API server's
//!   preconditions refuse a stale version, and the DEL then reads.
//!
//! After a relist (the watch's history expired), claims the new list lacks
//! (or lists with another UID) were deleted meanwhile: their waiters hear
//! so, and they leave the cache. Every waiter then reads its claim once: a
//! claim made and deleted within the gap was never seen at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hereabouts_api::{IPClaim, label_value};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use hereabouts_api::NODE_LABEL;

/// (namespace, name) of a claim.
type Key = (String, String);

/// What the watch saw of a claim.
#[derive(Debug, Clone)]
pub enum Seen {
    Applied(Arc<IPClaim>),
    /// Deleted; the UID of what was deleted.
    Deleted(Option<String>),
    /// The watch listed everything again after a gap: what happened to the
    /// claim in the gap may not have been delivered (read it).
    Relisted,
}

/// What a DEL needs of the version of a claim the watch saw last: whose
/// sandbox it is, and the UID and version to delete exactly it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub uid: String,
    pub resource_version: String,
    pub container_id: String,
}

impl Known {
    fn of(claim: &IPClaim) -> Option<Known> {
        Some(Known {
            uid: claim.uid()?,
            resource_version: claim.resource_version()?,
            container_id: claim.spec.container_id.clone(),
        })
    }
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<Key, Vec<mpsc::UnboundedSender<Seen>>>,
    known: HashMap<Key, Known>,
    /// The claims a relist in progress has shown so far.
    relisting: Option<HashMap<Key, Known>>,
    /// When the watch last showed anything (`None`: not since it started,
    /// or since it failed).
    last_seen: Option<Instant>,
    /// The API server's clock less this node's, as its last answer told
    /// ([`ClaimWatch::clock_sample`]).
    server_ahead: Option<SignedDuration>,
}

/// The waiters and the cache, by claim.
#[derive(Debug, Default)]
pub struct ClaimWatch {
    state: Mutex<State>,
}

/// One ADD's interest in one claim; dropping it stops the deliveries.
#[derive(Debug)]
pub struct Registration {
    watch: Arc<ClaimWatch>,
    key: Key,
    pub events: mpsc::UnboundedReceiver<Seen>,
}

impl Registration {
    /// Whether the watch showed anything within `within`: then it is live,
    /// and this claim's next version will come through it.
    pub fn watch_is_live(&self, within: Duration) -> bool {
        self.watch
            .lock()
            .last_seen
            .is_some_and(|at| at.elapsed() < within)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.events.close();
        let mut state = self.watch.lock();
        if let Some(list) = state.waiters.get_mut(&self.key) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                state.waiters.remove(&self.key);
            }
        }
    }
}

/// How long the watch may show nothing at all before a waiter reads its
/// claim itself.
pub const REREAD: Duration = Duration::from_secs(5);

impl ClaimWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A waiter that panicked holding the lock left only senders and
        // cached versions behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns how far the API server's clock is ahead of this node's from
    /// one of its answers (a `Date`, a created claim's creation time): the
    /// server stamped `created` (whole seconds, rounded down) between
    /// `sent` and `answered` on this node's clock; the middle of what that
    /// allows.
    pub fn clock_sample(&self, created: Timestamp, sent: Timestamp, answered: Timestamp) {
        let earliest = created.duration_since(answered);
        let latest = created
            .duration_since(sent)
            .saturating_add(SignedDuration::from_secs(1));
        let middle = earliest.saturating_add(latest) / 2;
        self.lock().server_ahead = Some(middle);
    }

    /// `local` on the API server's clock, once a created claim told how
    /// the two clocks differ (`None` before).
    pub fn on_server_clock(&self, local: Timestamp) -> Option<Timestamp> {
        let ahead = self.lock().server_ahead?;
        local.checked_add(ahead).ok()
    }

    /// Registers for `namespace/name`: every version the watch sees from
    /// now on is delivered.
    pub fn register(self: &Arc<Self>, namespace: &str, name: &str) -> Registration {
        let (tx, rx) = mpsc::unbounded_channel();
        let key = (namespace.to_owned(), name.to_owned());
        self.lock().waiters.entry(key.clone()).or_default().push(tx);
        Registration {
            watch: self.clone(),
            key,
            events: rx,
        }
    }

    /// How many claims have waiters (for tests and logs).
    pub fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }

    /// What the watch last saw of `namespace/name`, if it saw it (it may
    /// have changed since: delete it with its UID and version as
    /// preconditions).
    pub fn known(&self, namespace: &str, name: &str) -> Option<Known> {
        self.lock()
            .known
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Takes in one event of the watch: the cache follows it and the
    /// claim's waiters get it.
    pub fn observe(&self, event: watcher::Event<IPClaim>) {
        let mut state = self.lock();
        state.last_seen = Some(Instant::now());
        match event {
            watcher::Event::Apply(claim) => {
                let key = key_of(&claim);
                match Known::of(&claim) {
                    Some(known) => state.known.insert(key.clone(), known),
                    None => state.known.remove(&key),
                };
                deliver(&mut state, &key, &Seen::Applied(Arc::new(claim)));
            }
            watcher::Event::Delete(claim) => {
                let key = key_of(&claim);
                state.known.remove(&key);
                deliver(&mut state, &key, &Seen::Deleted(claim.uid()));
            }
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(claim) => {
                let key = key_of(&claim);
                if let (Some(listed), Some(known)) = (state.relisting.as_mut(), Known::of(&claim)) {
                    listed.insert(key.clone(), known);
                }
                deliver(&mut state, &key, &Seen::Applied(Arc::new(claim)));
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    let before = std::mem::replace(&mut state.known, listed);
                    // Gone, or made again under its name (another UID).
                    for (key, known) in before {
                        if state.known.get(&key).is_none_or(|now| now.uid != known.uid) {
                            deliver(&mut state, &key, &Seen::Deleted(Some(known.uid)));
                        }
                    }
                }
                let waited: Vec<Key> = state.waiters.keys().cloned().collect();
                for key in waited {
                    deliver(&mut state, &key, &Seen::Relisted);
                }
            }
        }
    }

    /// The watch failed: it is not live until it shows something again.
    fn failed(&self) {
        self.lock().last_seen = None;
    }

    /// Watches `node`'s claims until the stream ends (never, but for the
    /// process ending): the watcher lists again after an error, with
    /// backoff, and a malformed claim is skipped, not fatal.
    pub async fn run(self: Arc<Self>, client: Client, node: String) {
        let api: Api<DeserializeGuard<IPClaim>> = Api::all(client);
        let config =
            watcher::Config::default().labels(&format!("{NODE_LABEL}={}", label_value(&node)));
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "watch of this node's IPClaims failed; listing again");
                    self.failed();
                    continue;
                }
            };
            let parsed = match event {
                watcher::Event::Apply(DeserializeGuard(Ok(c))) => watcher::Event::Apply(c),
                watcher::Event::InitApply(DeserializeGuard(Ok(c))) => watcher::Event::InitApply(c),
                watcher::Event::Delete(DeserializeGuard(Ok(c))) => watcher::Event::Delete(c),
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitDone => watcher::Event::InitDone,
                watcher::Event::Apply(DeserializeGuard(Err(e)))
                | watcher::Event::InitApply(DeserializeGuard(Err(e)))
                | watcher::Event::Delete(DeserializeGuard(Err(e))) => {
                    tracing::warn!(error = %e, "skipping a malformed IPClaim");
                    continue;
                }
            };
            self.observe(parsed);
        }
    }
}

fn key_of(claim: &IPClaim) -> Key {
    (claim.namespace().unwrap_or_default(), claim.name_any())
}

/// Hands `seen` to the waiters of `key`, dropping those gone.
fn deliver(state: &mut State, key: &Key, seen: &Seen) {
    if let Some(list) = state.waiters.get_mut(key) {
        list.retain(|s| s.send(seen.clone()).is_ok());
        if list.is_empty() {
            state.waiters.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_clock_is_learned_within_what_its_whole_seconds_allow() {
        let view = ClaimWatch::default();
        let at = |s: &str| s.parse::<Timestamp>().expect("time");
        assert_eq!(view.on_server_clock(at("2026-12-02T10:00:00Z")), None);
        // This node is 60.4 s behind; the server stamped 10:01:00.5 as
        // 10:01:00, between the node's 10:00:00.0 and 10:00:00.2.
        view.clock_sample(
            at("2026-12-02T10:01:00Z"),
            at("2026-12-02T10:00:00.0Z"),
            at("2026-12-02T10:00:00.2Z"),
        );
        let server = view
            .on_server_clock(at("2026-12-02T10:00:35Z"))
            .expect("learned");
        let error = server.duration_since(at("2026-12-02T10:01:35.4Z")).abs();
        assert!(
            error <= SignedDuration::from_millis(600),
            "{server} ({error})"
        );
        // A node ahead of the server, learned again.
        view.clock_sample(
            at("2026-12-02T10:00:00Z"),
            at("2026-12-02T10:00:30.0Z"),
            at("2026-12-02T10:00:30.1Z"),
        );
        let server = view
            .on_server_clock(at("2026-12-02T10:00:40Z"))
            .expect("learned");
        assert!(server < at("2026-12-02T10:00:11Z") && server > at("2026-12-02T10:00:09Z"));
    }

    fn claim(ns: &str, name: &str, uid: &str, version: &str, container: &str) -> IPClaim {
        let mut c: IPClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "hereabouts.dev/v1alpha1",
            "kind": "IPClaim",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": version},
            "spec": {
                "network": {"namespace": ns, "name": "n"},
                "ranges": [],
                "interface": "net1",
                "pod": {"namespace": ns, "name": "p", "uid": "u"},
                "containerID": container,
                "node": "node-a"
            }
        }))
        .expect("claim");
        c.metadata.uid = Some(uid.to_owned());
        c
    }

    #[test]
    fn deliveries_reach_only_the_claims_waiters_and_stop_when_dropped() {
        let watch = Arc::new(ClaimWatch::default());
        let mut a = watch.register("ns", "a");
        let mut b = watch.register("ns", "b");
        watch.observe(watcher::Event::Apply(claim("ns", "a", "1", "10", "c1")));
        assert!(
            matches!(a.events.try_recv(), Ok(Seen::Applied(c)) if c.uid().as_deref() == Some("1"))
        );
        assert!(b.events.try_recv().is_err());
        assert_eq!(watch.waiting(), 2);
        drop(a);
        drop(b);
        assert_eq!(watch.waiting(), 0);
        // Nobody waits: no waiter is kept, but the cache follows.
        watch.observe(watcher::Event::Delete(claim("ns", "a", "1", "11", "c1")));
        assert_eq!(watch.waiting(), 0);
        assert_eq!(watch.known("ns", "a"), None);
    }

    #[test]
    fn the_cache_holds_the_last_version_seen_of_each_claim() {
        let watch = ClaimWatch::default();
        assert_eq!(watch.known("ns", "a"), None);
        watch.observe(watcher::Event::Apply(claim("ns", "a", "1", "10", "c1")));
        watch.observe(watcher::Event::Apply(claim("ns", "a", "1", "12", "c2")));
        assert_eq!(
            watch.known("ns", "a"),
            Some(Known {
                uid: "1".into(),
                resource_version: "12".into(),
                container_id: "c2".into()
            })
        );
        assert_eq!(watch.known("other", "a"), None, "by namespace too");
        watch.observe(watcher::Event::Delete(claim("ns", "a", "1", "13", "c2")));
        assert_eq!(watch.known("ns", "a"), None);
    }

    #[test]
    fn a_relist_forgets_claims_deleted_meanwhile_and_tells_their_waiters() {
        let watch = Arc::new(ClaimWatch::default());
        watch.observe(watcher::Event::Apply(claim("ns", "kept", "1", "10", "c1")));
        watch.observe(watcher::Event::Apply(claim("ns", "gone", "2", "11", "c2")));
        let mut gone = watch.register("ns", "gone");
        let mut kept = watch.register("ns", "kept");
        watch.observe(watcher::Event::Init);
        watch.observe(watcher::Event::InitApply(claim(
            "ns", "kept", "1", "20", "c1",
        )));
        // Until the list is whole, the cache answers as before.
        assert!(watch.known("ns", "gone").is_some());
        assert!(
            matches!(kept.events.try_recv(), Ok(Seen::Applied(c)) if c.resource_version().as_deref() == Some("20"))
        );
        watch.observe(watcher::Event::InitDone);
        assert_eq!(watch.known("ns", "gone"), None);
        assert_eq!(
            watch.known("ns", "kept").map(|k| k.resource_version),
            Some("20".to_owned())
        );
        assert!(matches!(gone.events.try_recv(), Ok(Seen::Deleted(Some(uid))) if uid == "2"));
        // Every waiter reads its claim once after a relist: not a deletion.
        assert!(matches!(gone.events.try_recv(), Ok(Seen::Relisted)));
        assert!(matches!(kept.events.try_recv(), Ok(Seen::Relisted)));
        assert!(kept.events.try_recv().is_err(), "still there: no deletion");
    }

    #[test]
    fn the_watch_is_live_while_it_shows_something() {
        let watch = Arc::new(ClaimWatch::default());
        let waiting = watch.register("ns", "a");
        assert!(!waiting.watch_is_live(REREAD), "nothing seen yet");
        watch.observe(watcher::Event::Apply(claim("ns", "other", "1", "10", "c1")));
        assert!(
            waiting.watch_is_live(REREAD),
            "another claim's event counts"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !waiting.watch_is_live(Duration::from_millis(10)),
            "silent for the whole period"
        );
        watch.observe(watcher::Event::Init);
        assert!(waiting.watch_is_live(REREAD));
        watch.failed();
        assert!(!waiting.watch_is_live(REREAD), "failed");
    }
}
