//! What every reconciler shares: the client, the namespace the pools live
//! in, the leadership fence, the pool book, metrics and the event recorder.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::index::Index;
use super::leader::Leadership;
use super::metrics::Metrics;
use super::pools::PoolBook;
use super::reservations::Written;

pub struct Context {
    pub client: Client,
    /// Where IPPools, reservations and the Lease live.
    pub namespace: String,
    pub leadership: Leadership,
    pub pools: PoolBook,
    pub metrics: Arc<Metrics>,
    /// How long an address released by a claim's deletion stays reserved
    /// for the same pod name and interface.
    pub hold_released: Duration,
    /// This replica's identity (its Lease holder name).
    pub identity: String,
    /// Reservations by name, as last seen: a hint of which addresses
    /// overlapping ranges hold (the reservation's create is the check).
    pub reservations: Index<Written>,
    recorder: Recorder,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("leader", &self.leadership.is_leader())
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        namespace: String,
        leadership: Leadership,
        metrics: Arc<Metrics>,
        hold_released: Duration,
        instance: String,
        reservations: Index<Written>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "hereabouts-controller".into(),
                instance: Some(instance.clone()),
            },
        );
        Context {
            client,
            namespace,
            leadership,
            pools: PoolBook::default(),
            metrics,
            hold_released,
            identity: instance,
            reservations,
            recorder,
        }
    }

    /// Publishes an Event about `regarding`; failures are logged, never
    /// fatal (events are advice, not state).
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::debug!(error = %e, reason, "could not publish event");
        }
    }
}
