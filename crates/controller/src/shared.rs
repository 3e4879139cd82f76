//! What every writer shares, below the reconcilers: the client, the
//! namespace the pools live in, the leadership fence, metrics, this
//! replica's identity and the event recorder. The pool actors and the
//! reservation writer take this alone; the reconcilers' `Context` adds
//! the pool book and caches on top.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::leader::Leadership;
use super::metrics::Metrics;

pub struct Shared {
    pub client: Client,
    /// Where IPPools, reservations and the Lease live.
    pub namespace: String,
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
    /// This replica's identity (its Lease holder name).
    pub identity: String,
    recorder: Recorder,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("namespace", &self.namespace)
            .field("leader", &self.leadership.is_leader())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        client: Client,
        namespace: String,
        leadership: Leadership,
        metrics: Arc<Metrics>,
        identity: String,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "hereabouts-controller".into(),
                instance: Some(identity.clone()),
            },
        );
        Shared {
            client,
            namespace,
            leadership,
            metrics,
            identity,
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

/// Deletes `name` only while it is still the object `uid` (and, when
/// given, at `resource_version`): `Ok(false)` when it is gone already or
/// is another object or version by now (404, 409), which callers take as
/// done (whoever changed it decides about it).
pub async fn delete_exactly<K>(
    api: &kube::Api<K>,
    name: &str,
    uid: Option<String>,
    resource_version: Option<String>,
) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// How long the API server asked a client to wait before the next try:
/// a 429 (too many requests, or a priority level's queue full) carries
/// Retry-After, which the server also puts in the Status' details.
pub fn retry_after(e: &kube::Error) -> Option<Duration> {
    match e {
        kube::Error::Api(status) if status.code == 429 => Some(Duration::from_secs(
            status
                .details
                .as_ref()
                .map_or(1, |d| u64::from(d.retry_after_seconds.max(1))),
        )),
        _ => None,
    }
}
