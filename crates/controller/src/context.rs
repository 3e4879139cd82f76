//! What every reconciler shares: the [`Shared`] writers' base (client,
//! namespace, leadership fence, metrics, events), the pool book and the
//! reservations last seen. It derefs to [`Shared`], so a reconciler reads
//! `ctx.client` and hands `&ctx` to the writers below it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use hereabouts_core::ledger::Policy;

use super::index::Index;
use super::pools::PoolBook;
use super::reservations::Written;
use super::shared::Shared;

#[derive(Debug)]
pub struct Context {
    pub shared: Arc<Shared>,
    pub pools: PoolBook,
    /// How long an address released by a claim's deletion stays reserved
    /// for the same pod name and interface, and how long a released address
    /// rests before it goes to another pod, where the network does not say.
    pub release: Policy,
    /// Reservations by name, as last seen: a hint of which addresses
    /// overlapping ranges hold (the reservation's create is the check).
    pub reservations: Index<Written>,
    /// Deleted claims whose addresses are not given back yet: while there
    /// are any, a range found full may not be (see `claims::answer`).
    pub releases_pending: std::sync::atomic::AtomicUsize,
    /// The pod interfaces being answered, released or collected now.
    pub interfaces: Arc<Interfaces>,
}

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Context {
    /// `release`: the controller's defaults for holds and cooldowns.
    pub fn new(shared: Shared, release: Policy, reservations: Index<Written>) -> Self {
        let shared = Arc::new(shared);
        Context {
            pools: PoolBook::new(shared.clone(), reservations.clone()),
            shared,
            release,
            reservations,
            releases_pending: std::sync::atomic::AtomicUsize::new(0),
            interfaces: Arc::default(),
        }
    }
}

/// One pod interface (`pod namespace/pod name/interface`, what a pool
/// entry is owned by with the container ID) at a time: answering a claim
/// and releasing a deleted claim of the same interface exclude each other,
/// whatever their names (a claim made again, or the interface re-plugged
/// on another network sharing the pool). A release reads whether another
/// claim of the same sandbox holds what the deleted one held
/// (`claims::successors`) and then releases the sandbox's entry; a claim answered
/// from that entry in between would have its address taken from under it,
/// and the address handed out again. The collector holds it too, from its
/// check that an entry is orphaned to its release.
#[derive(Debug, Default)]
pub struct Interfaces(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A pod interface held (see [`Interfaces`]); let go when dropped.
#[derive(Debug)]
pub struct InterfaceHeld<'a> {
    interfaces: &'a Interfaces,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Interfaces {
    /// The key of a pod interface: what `hold` takes.
    pub fn key(pod_namespace: &str, pod_name: &str, interface: &str) -> String {
        format!("{pod_namespace}/{pod_name}/{interface}")
    }

    pub(crate) fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn hold(&self, key: String) -> InterfaceHeld<'_> {
        let lock = self.map().entry(key.clone()).or_default().clone();
        // Made before the wait, so a wait given up still tidies the map.
        let mut held = InterfaceHeld {
            interfaces: self,
            key,
            lock: lock.clone(),
            guard: None,
        };
        held.guard = Some(lock.lock_owned().await);
        held
    }
}

impl Drop for InterfaceHeld<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut map = self.interfaces.map();
        // The map's and this one: no one else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}
