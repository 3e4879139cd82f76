//! What every reconciler shares: the [`Shared`] writers' base (client,
//! namespace, leadership fence, metrics, events), the pool book and the
//! reservations last seen. It derefs to [`Shared`], so a reconciler reads
//! `ctx.client` and hands `&ctx` to the writers below it.

use std::sync::Arc;

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
        }
    }
}
