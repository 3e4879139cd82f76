//! Leader election on a `coordination.k8s.io` Lease.
//!
//! Every replica runs [`run`]; exactly one holds the Lease and may write.
//! [`Leadership::is_leader`] is the fence every write path checks right
//! before it sends: it turns false as soon as the last successful renewal is
//! older than the renew deadline, which is shorter than the lease duration,
//! so a replica that cannot renew stops writing before anyone else may
//! take over. Pool writes additionally carry the resourceVersion they were
//! computed from, so even a write already in flight cannot commit over a
//! newer leader's.
//!
//! The Lease record follows client-go's conventions (holderIdentity,
//! leaseDurationSeconds, acquireTime, renewTime, leaseTransitions), so
//! `kubectl get lease` reads as usual. Expiry is judged by the local clock
//! from the moment this replica last saw the record change, never by
//! comparing clocks across machines.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long stops acting as leader.
    pub renew_deadline: Duration,
    /// How often holders renew and candidates retry.
    pub retry_period: Duration,
}

/// How a round of the election ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Our own record renewed: the term goes on.
    Renewed,
    /// Taken over (created, expired or released by another): a new term.
    TookOver,
    NotHeld,
}

/// A cheap, cloneable view of this replica's leadership.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// Flips on transitions only, so watchers are not woken per renewal.
    leading: watch::Receiver<bool>,
    /// When the last renewal succeeded.
    renewed: Arc<Mutex<Option<Instant>>>,
    renew_deadline: Duration,
}

impl Leadership {
    /// True while this replica holds the Lease with a fresh renewal.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
            && self
                .renewed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() < self.renew_deadline)
    }

    /// True while this replica holds the Lease, fresh or not: a leader whose
    /// renewal is late is unsure for a moment (it acts as no leader, and
    /// looks again soon), not a standby.
    pub fn holds_lease(&self) -> bool {
        *self.leading.borrow()
    }

    /// Resolves when this replica gains or loses leadership.
    pub async fn changed(&mut self) {
        // An error means the election task ended; callers then see
        // `is_leader() == false` forever, which is the safe answer.
        if self.leading.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The running election: a [`Leadership`] view plus the handle that
/// releases the Lease on graceful shutdown.
#[derive(Debug)]
pub struct Election {
    leadership: Leadership,
    leading: watch::Sender<bool>,
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Election {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let (leading, rx) = watch::channel(false);
        Self {
            leadership: Leadership {
                leading: rx,
                renewed: Arc::default(),
                renew_deadline: config.renew_deadline,
            },
            leading,
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// `sent`: when the renewal that made us leader was sent. The fence
    /// counts from then, not from when the answer came: a renewal that
    /// spent seconds in flight bought that much less time.
    fn set_leading(&self, leading: bool, sent: Instant) {
        let renewed = &self.leadership.renewed;
        *renewed.lock().unwrap_or_else(PoisonError::into_inner) = leading.then_some(sent);
        self.leading.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
    }

    fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Acquires and renews the Lease until cancelled (drop the future) or
    /// an unrecoverable error. Transient API errors are retried: they only
    /// cost leadership once the renew deadline passes.
    pub async fn run(&self) -> Result<(), Error> {
        let mut observed: Option<(String, Instant)> = None;
        loop {
            let sent = Instant::now();
            match self.try_acquire_or_renew(&mut observed).await {
                Ok(Round::Renewed) => {
                    if !self.is_leading() {
                        tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
                    }
                    self.set_leading(true, sent);
                }
                Ok(Round::TookOver) => {
                    if self.is_leading() {
                        // Another replica may have led since our last
                        // renewal (ours hung meanwhile): what this replica
                        // knew under its earlier term is stale, so the
                        // new term is a change watchers are told of.
                        tracing::warn!(identity = %self.config.identity, "took the lease over while still counting as its holder: a new term");
                        self.set_leading(false, sent);
                    }
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
                    self.set_leading(true, sent);
                }
                Ok(Round::NotHeld) => {
                    if self.is_leading() {
                        tracing::warn!(identity = %self.config.identity, "lost the lease to another replica");
                    }
                    self.set_leading(false, sent);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    if self.is_leading() && !self.leadership.is_leader() {
                        tracing::error!("renew deadline passed: stepping down");
                        self.set_leading(false, sent);
                    }
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Gives the Lease up so a standby takes over at once (rolling updates).
    pub async fn release(&self) {
        if !self.is_leading() {
            return;
        }
        self.set_leading(false, Instant::now());
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the lease"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the lease; it expires by itself")
            }
        }
    }

    /// One round: whether we hold the Lease afterwards, and how.
    async fn try_acquire_or_renew(
        &self,
        observed: &mut Option<(String, Instant)>,
    ) -> Result<Round, Error> {
        let name = &self.config.name;
        let api_error = |source| Error::Api {
            name: name.clone(),
            source,
        };
        let Some(mut lease) = self.api.get_opt(name).await.map_err(api_error)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now(), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Round::TookOver),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::NotHeld),
                Err(e) => Err(api_error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let me = self.config.identity.as_str();
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        // Expiry by the local clock: when did this record last change?
        let changed_at = match observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                *observed = Some((version, Instant::now()));
                Instant::now()
            }
        };
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let expired = holder.is_empty() || changed_at.elapsed() >= duration;
        if holder != me && !expired {
            return Ok(Round::NotHeld);
        }
        let (acquired, transitions) = if holder == me {
            (
                spec.acquire_time.unwrap_or_else(now),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            tracing::info!(previous = %holder, "taking over an expired or released lease");
            (now(), spec.lease_transitions.unwrap_or(0).saturating_add(1))
        };
        lease.spec = Some(self.spec(acquired, transitions));
        // `replace` carries metadata.resourceVersion: if anyone else wrote
        // the Lease since our read, this fails with 409 and we are not leader.
        let held = if holder == me {
            Round::Renewed
        } else {
            Round::TookOver
        };
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::NotHeld),
            Err(e) => Err(api_error(e)),
        }
    }

    fn spec(&self, acquired: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(lease_seconds(self.config.lease_duration)),
            acquire_time: Some(acquired),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// The Lease's `leaseDurationSeconds` for `duration`, rounded up: standbys
/// take over that long after the last renewal they saw, and the holder
/// acts as leader for its renew deadline (shorter than `duration`) after
/// its last renewal, so the record must never say less than `duration`
/// (1.9 s truncated to 1 s would let a standby take over while the holder
/// still acts). At least 1 s.
fn lease_seconds(duration: Duration) -> i32 {
    let whole = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
        .max(1);
    i32::try_from(whole).unwrap_or(i32::MAX)
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_record_is_never_shorter_than_the_lease_duration() {
        for (duration, seconds) in [
            (Duration::from_millis(1900), 2),
            (Duration::from_millis(1001), 2),
            (Duration::from_secs(15), 15),
            (Duration::from_millis(1), 1),
            (Duration::ZERO, 1),
            (Duration::from_secs(3600), 3600),
        ] {
            let written = lease_seconds(duration);
            assert_eq!(written, seconds, "{duration:?}");
            assert!(
                duration <= Duration::from_secs(u64::try_from(written).unwrap_or(0)),
                "{duration:?}"
            );
        }
        // Beyond what the field holds (the flag allows at most 1h): capped.
        assert_eq!(lease_seconds(Duration::MAX), i32::MAX);
    }
}
