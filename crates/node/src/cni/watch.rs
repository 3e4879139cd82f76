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
    /// The latest the API server's clock is known to have read at an
    /// instant on this node's monotonic clock ([`ClaimWatch::clock_sample`]).
    server_clock: Option<(Timestamp, std::time::Instant)>,
}

/// How long a reading of the API server's clock is kept while a later one
/// tells less (a server whose clock was stepped back is believed again
/// after this long).
const CLOCK_KEPT: Duration = Duration::from_secs(900);

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

    /// Learns a lower bound of the API server's clock from one of its
    /// answers (a `Date`, a created claim's creation time: whole seconds,
    /// rounded down), which reached this node at `answered`: the server's
    /// clock read at least `server` then. Of the readings, the one that
    /// bounds the server's clock now the highest is kept (their seconds
    /// rounded down at different moments, the bound comes within a round
    /// trip of the server's clock); one older than [`CLOCK_KEPT`] gives way
    /// to any later one. The node's own clock plays no part: a step of it
    /// changes nothing.
    pub fn clock_sample(&self, server: Timestamp, answered: std::time::Instant) {
        let mut state = self.lock();
        let keep = state.server_clock.is_some_and(|(kept, at)| {
            answered.saturating_duration_since(at) < CLOCK_KEPT
                && Self::project(kept, at, answered).is_some_and(|kept| kept > server)
        });
        if !keep {
            state.server_clock = Some((server, answered));
        }
    }

    /// `server` read at `at`, carried to `then` on the monotonic clock.
    fn project(
        server: Timestamp,
        at: std::time::Instant,
        then: std::time::Instant,
    ) -> Option<Timestamp> {
        let ahead = SignedDuration::try_from(then.saturating_duration_since(at)).ok()?;
        let behind = SignedDuration::try_from(at.saturating_duration_since(then)).ok()?;
        server.checked_add(ahead).ok()?.checked_sub(behind).ok()
    }

    /// A time the API server's clock will have reached at `then` (this
    /// node's monotonic clock): never later than what it will read (a claim
    /// created after `then` has a creation time at or after this second),
    /// earlier by at most a second and a round trip. `None` before the
    /// server's clock was read.
    pub fn server_clock_at(&self, then: std::time::Instant) -> Option<Timestamp> {
        let (server, at) = self.lock().server_clock?;
        Self::project(server, at, then)
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
    fn the_server_clock_is_bounded_from_below_by_its_best_reading() {
        let view = ClaimWatch::default();
        let at = |s: &str| s.parse::<Timestamp>().expect("time");
        let start = std::time::Instant::now();
        let after = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(view.server_clock_at(start), None, "nothing read yet");
        // The server's clock reads 10:00:00.7 at `start`; its answers give
        // whole seconds, rounded down.
        let truth = |ms: u64| {
            at("2026-12-02T10:00:00.7Z")
                .checked_add(SignedDuration::from_millis(i64::try_from(ms).expect("ms")))
                .expect("time")
        };
        // Stamped at 10:00:00.75, answered 50 ms later.
        view.clock_sample(at("2026-12-02T10:00:00Z"), after(100));
        let bound = view.server_clock_at(after(30_000)).expect("read");
        assert!(bound <= truth(30_000), "never late: {bound}");
        assert!(truth(30_000).duration_since(bound) <= SignedDuration::from_secs(1));
        // A reading made slow by a 12 s round trip bounds it lower: kept
        // out.
        view.clock_sample(at("2026-12-02T10:00:02Z"), after(14_000));
        assert_eq!(view.server_clock_at(after(30_000)), Some(bound));
        // A reading at another phase of the second bounds it higher.
        view.clock_sample(at("2026-12-02T10:00:05Z"), after(4_350));
        let better = view.server_clock_at(after(30_000)).expect("read");
        assert!(better > bound && better <= truth(30_000), "{better}");
        assert!(truth(30_000).duration_since(better) <= SignedDuration::from_millis(100));
        // The server's clock stepped back 20 s: a later reading is believed
        // once the best one is old.
        view.clock_sample(at("2026-12-02T10:00:00Z"), after(20_000));
        assert_eq!(view.server_clock_at(after(30_000)), Some(better));
        let late = 5_000 + u64::try_from(CLOCK_KEPT.as_millis()).expect("ms");
        view.clock_sample(at("2026-12-02T10:15:00Z"), after(late));
        assert_eq!(
            view.server_clock_at(after(late + 1_000)),
            Some(at("2026-12-02T10:15:01Z"))
        );
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
