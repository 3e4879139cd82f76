//! One watch of this node's IPClaims (all namespaces, by the node label the
//! plugin puts on every claim), shared by every ADD the agent serves: an
//! ADD registers for its claim before it creates it, and the watch hands it
//! each new version. A claim the watch has not shown for a while is read
//! again, so a stalled watch delays an answer but never loses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hereabouts_api::{IPClaim, label_value};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use hereabouts_api::NODE_LABEL;

/// (namespace, name) of a claim.
type Key = (String, String);

/// What the watch saw of a claim.
#[derive(Debug, Clone)]
pub enum Seen {
    Applied(Arc<IPClaim>),
    /// Deleted; the UID of what was deleted.
    Deleted(Option<String>),
}

/// The waiters, by claim.
#[derive(Debug, Default)]
pub struct ClaimWatch {
    waiters: Mutex<HashMap<Key, Vec<mpsc::UnboundedSender<Seen>>>>,
}

/// One ADD's interest in one claim; dropping it stops the deliveries.
#[derive(Debug)]
pub struct Registration {
    watch: Arc<ClaimWatch>,
    key: Key,
    pub events: mpsc::UnboundedReceiver<Seen>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.events.close();
        let mut waiters = self.watch.lock();
        if let Some(list) = waiters.get_mut(&self.key) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                waiters.remove(&self.key);
            }
        }
    }
}

/// How often a waiter reads its claim when the watch has shown nothing.
pub const REREAD: Duration = Duration::from_secs(5);

impl ClaimWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<mpsc::UnboundedSender<Seen>>>> {
        // A waiter that panicked holding the lock left only a list of
        // senders behind: still usable.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers for `namespace/name`: every version the watch sees from
    /// now on is delivered.
    pub fn register(self: &Arc<Self>, namespace: &str, name: &str) -> Registration {
        let (tx, rx) = mpsc::unbounded_channel();
        let key = (namespace.to_owned(), name.to_owned());
        self.lock().entry(key.clone()).or_default().push(tx);
        Registration {
            watch: self.clone(),
            key,
            events: rx,
        }
    }

    /// How many claims have waiters (for tests and logs).
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn deliver(&self, namespace: String, name: String, seen: &Seen) {
        let key = (namespace, name);
        let mut waiters = self.lock();
        if let Some(list) = waiters.get_mut(&key) {
            list.retain(|s| s.send(seen.clone()).is_ok());
            if list.is_empty() {
                waiters.remove(&key);
            }
        }
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
            match event {
                Ok(watcher::Event::Apply(DeserializeGuard(Ok(claim))))
                | Ok(watcher::Event::InitApply(DeserializeGuard(Ok(claim)))) => {
                    let (namespace, name) =
                        (claim.namespace().unwrap_or_default(), claim.name_any());
                    self.deliver(namespace, name, &Seen::Applied(Arc::new(claim)));
                }
                Ok(watcher::Event::Delete(DeserializeGuard(Ok(claim)))) => {
                    let (namespace, name) =
                        (claim.namespace().unwrap_or_default(), claim.name_any());
                    self.deliver(namespace, name, &Seen::Deleted(claim.uid()));
                }
                Ok(
                    watcher::Event::Apply(DeserializeGuard(Err(e)))
                    | watcher::Event::InitApply(DeserializeGuard(Err(e)))
                    | watcher::Event::Delete(DeserializeGuard(Err(e))),
                ) => {
                    tracing::warn!(error = %e, "skipping a malformed IPClaim");
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "watch of this node's IPClaims failed; listing again")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(ns: &str, name: &str, uid: &str) -> IPClaim {
        let mut c: IPClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "hereabouts.dev/v1alpha1",
            "kind": "IPClaim",
            "metadata": {"name": name, "namespace": ns, "uid": uid},
            "spec": {
                "network": {"namespace": ns, "name": "n"},
                "ranges": [],
                "interface": "net1",
                "pod": {"namespace": ns, "name": "p", "uid": "u"},
                "containerID": "c",
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
        watch.deliver(
            "ns".into(),
            "a".into(),
            &Seen::Applied(Arc::new(claim("ns", "a", "1"))),
        );
        assert!(
            matches!(a.events.try_recv(), Ok(Seen::Applied(c)) if c.uid().as_deref() == Some("1"))
        );
        assert!(b.events.try_recv().is_err());
        assert_eq!(watch.waiting(), 2);
        drop(a);
        drop(b);
        assert_eq!(watch.waiting(), 0);
        // Nobody waits: nothing is kept.
        watch.deliver("ns".into(), "a".into(), &Seen::Deleted(None));
        assert_eq!(watch.waiting(), 0);
    }
}
