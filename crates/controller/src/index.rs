//! Compact caches for the kinds the controller watches by the thousand
//! (pods and reservations: one per allocation). A reflector store keeps
//! every object whole, with its full `ObjectMeta` and a key of four
//! strings; an [`Index`] keeps only the few fields a reconciler reads,
//! under one string key. Fed by a watcher like a store, with the same
//! relist rule: a relist is buffered and swapped in whole, so what was
//! deleted during the gap disappears.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::watch;

/// The entries of one kind, by key; cloned handles share them.
#[derive(Debug)]
pub struct Index<V> {
    entries: Arc<RwLock<BTreeMap<Box<str>, V>>>,
    ready: watch::Receiver<bool>,
}

impl<V> Clone for Index<V> {
    fn clone(&self) -> Self {
        Index {
            entries: self.entries.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<V> Index<V> {
    /// A read view; hold it only briefly (never across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Box<str>, V>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the first listing is complete.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        // An error means the writer is gone, and with it the watch: the
        // task that drove it reports that.
        let _ = ready.wait_for(|r| *r).await;
    }
}

impl<V: Clone> Index<V> {
    pub fn get(&self, key: &str) -> Option<V> {
        self.read().get(key).cloned()
    }
}

/// What an object contributes to an index: its key and entry.
type Project<K, V> = fn(&K) -> (String, V);

/// Applies watch events to an [`Index`].
#[derive(Debug)]
pub struct Writer<K, V> {
    entries: Arc<RwLock<BTreeMap<Box<str>, V>>>,
    ready: watch::Sender<bool>,
    /// Entries of a relist in progress.
    buffer: BTreeMap<Box<str>, V>,
    project: Project<K, V>,
}

/// An empty index and the writer that fills it from watch events.
pub fn index<K, V>(project: Project<K, V>) -> (Index<V>, Writer<K, V>) {
    let entries = Arc::new(RwLock::new(BTreeMap::new()));
    let (ready_tx, ready) = watch::channel(false);
    (
        Index {
            entries: entries.clone(),
            ready,
        },
        Writer {
            entries,
            ready: ready_tx,
            buffer: BTreeMap::new(),
            project,
        },
    )
}

impl<K, V> Writer<K, V> {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Box<str>, V>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `event`; a completed relist returns the view it replaced
    /// (what vanished while the watch was down is in there only).
    pub fn apply(&mut self, event: &watcher::Event<K>) -> Option<BTreeMap<Box<str>, V>> {
        match event {
            watcher::Event::Apply(object) => {
                let (key, value) = (self.project)(object);
                self.write().insert(key.into_boxed_str(), value);
            }
            watcher::Event::Delete(object) => {
                let (key, _) = (self.project)(object);
                self.write().remove(key.as_str());
            }
            watcher::Event::Init => self.buffer = BTreeMap::new(),
            watcher::Event::InitApply(object) => {
                let (key, value) = (self.project)(object);
                self.buffer.insert(key.into_boxed_str(), value);
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut self.buffer);
                let replaced = std::mem::replace(&mut *self.write(), listed);
                self.ready.send_replace(true);
                return Some(replaced);
            }
        }
        None
    }
}

/// Passes a watch stream through, keeping `writer`'s index current (the
/// index counterpart of `kube::runtime::reflector`).
pub fn indexed<K, V, S>(
    mut writer: Writer<K, V>,
    stream: S,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    stream.inspect(move |event| {
        if let Ok(event) = event {
            let _ = writer.apply(event);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(object: &(&'static str, u32)) -> (String, u32) {
        (object.0.to_owned(), object.1)
    }

    #[test]
    fn a_relist_replaces_everything_at_once() {
        let (index, mut writer) = index(project);
        let _ = writer.apply(&watcher::Event::Init);
        let _ = writer.apply(&watcher::Event::InitApply(("a", 1)));
        writer.apply(&watcher::Event::InitApply(("b", 2)));
        assert!(
            index.read().is_empty(),
            "nothing shows before the list is done"
        );
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(index.get("a"), Some(1));
        writer.apply(&watcher::Event::Apply(("a", 3)));
        writer.apply(&watcher::Event::Delete(("b", 2)));
        assert_eq!(index.get("a"), Some(3));
        assert_eq!(index.get("b"), None);
        // "a" vanished while the watch was down: the relist drops it.
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(("c", 4)));
        assert_eq!(index.get("a"), Some(3), "the old view stays until done");
        let replaced = writer.apply(&watcher::Event::InitDone);
        assert_eq!(
            replaced.and_then(|old| old.get("a").copied()),
            Some(3),
            "the relist hands back the view it replaced"
        );
        assert_eq!(index.get("a"), None);
        assert_eq!(index.get("c"), Some(4));
    }

    #[tokio::test]
    async fn ready_after_the_first_list() {
        let (index, mut writer) = index(project);
        assert!(!*index.ready.borrow());
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitDone);
        index.wait_until_ready().await;
    }
}
