//! Leader election with a `coordination.k8s.io/v1` Lease: one replica at a time runs the
//! controllers and status writers; every replica serves xDS, the CA and the webhook.
//!
//! Each replica tries every third of the lease duration:
//! - no Lease: create it, holding it;
//! - held by this replica: renew it (`renewTime`);
//! - held by another: take it over once its record (holder, `renewTime`) has not changed for a
//!   whole lease duration, as measured by this replica's own clock since it first saw that
//!   record (so clock skew between replicas does not matter);
//! - every write carries the `resourceVersion` read, so two replicas racing for an expired
//!   lease cannot both win.
//!
//! A leader that cannot renew for two thirds of the duration steps down before anyone else may
//! take over. On shutdown the leader releases the lease so that another replica takes over at
//! once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// What a replica does next about the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No lease exists: create it.
    Create,
    /// This replica holds it: renew.
    Renew,
    /// The holder let it expire (or released it): take it over.
    TakeOver,
    /// Another replica holds it for at least `remaining`.
    Follow { holder: String, remaining: Duration },
}

/// The lease record a follower last saw change, and when (its own clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

/// Decides the next step from the lease read at `now`; `observed` remembers when the record
/// last changed.
pub fn next_step(
    lease: Option<&LeaseSpec>,
    me: &str,
    observed: &mut Option<Observed>,
    now: Instant,
    default_duration: Duration,
) -> Step {
    let Some(spec) = lease else {
        *observed = None;
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    if holder.as_deref() == Some(me) {
        return Step::Renew;
    }
    let record = (holder.clone(), spec.renew_time.clone());
    let changed = observed
        .as_ref()
        .is_none_or(|o| (o.holder.clone(), o.renew_time.clone()) != record);
    if changed {
        *observed = Some(Observed {
            holder: record.0,
            renew_time: record.1,
            at: now,
        });
    }
    let Some(holder) = holder else {
        return Step::TakeOver;
    };
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_duration, Duration::from_secs);
    let since = observed.as_ref().map_or(now, |o| o.at);
    let expires = since + duration;
    if now >= expires {
        Step::TakeOver
    } else {
        Step::Follow {
            holder,
            remaining: expires - now,
        }
    }
}

/// The lease spec this replica writes for `step` (`Create`, `Renew` or `TakeOver`).
pub fn claim(
    prev: Option<&LeaseSpec>,
    step: &Step,
    me: &str,
    duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let transitions = prev.and_then(|p| p.lease_transitions).unwrap_or(0);
    let (acquire_time, transitions) = match step {
        Step::Renew => (
            prev.and_then(|p| p.acquire_time.clone())
                .or(Some(MicroTime(now))),
            transitions,
        ),
        Step::TakeOver => (Some(MicroTime(now)), transitions + 1),
        Step::Create | Step::Follow { .. } => (Some(MicroTime(now)), transitions),
    };
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// Runs the election for one lease.
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    me: String,
    duration: Duration,
    owner: Option<OwnerReference>,
}

impl LeaderElector {
    /// Campaigns for the Lease `namespace/name` as `me`; a Lease it creates is owned by `owner`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        me: &str,
        duration: Duration,
        owner: Option<OwnerReference>,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            me: me.to_string(),
            duration: duration.max(Duration::from_secs(3)),
            owner,
        }
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// One attempt: returns whether this replica holds the lease afterwards.
    async fn attempt(&self, observed: &mut Option<Observed>) -> Result<bool, LeaderError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?;
        let step = next_step(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.me,
            observed,
            Instant::now(),
            self.duration,
        );
        if let Step::Follow { .. } = step {
            return Ok(false);
        }
        let spec = claim(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &step,
            &self.me,
            self.duration,
            Timestamp::now(),
        );
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        owner_references: self.owner.clone().map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(spec);
                // `resourceVersion` (kept from the read) makes a concurrent write fail.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Releases the lease if this replica holds it.
    async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Campaigns until `stop` turns true, publishing leadership on `leader`; releases the
    /// lease on the way out.
    pub async fn run(self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let retry = self.duration / 3;
        let renew_deadline = self.duration * 2 / 3;
        let mut observed = None;
        let mut last_renewal: Option<Instant> = None;
        loop {
            let held = match self.attempt(&mut observed).await {
                Ok(held) => {
                    if held {
                        last_renewal = Some(Instant::now());
                    }
                    held
                }
                Err(e) => {
                    let keep = *leader.borrow()
                        && last_renewal.is_some_and(|t| t.elapsed() < renew_deadline);
                    tracing::warn!(error = %e, still_leader = keep, "leader election attempt failed");
                    keep
                }
            };
            if held != *leader.borrow() {
                if held {
                    tracing::info!(lease = %self.name, identity = %self.me, "became the leader");
                } else {
                    tracing::info!(lease = %self.name, identity = %self.me, "not the leader");
                }
                leader.send_replace(held);
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if *leader.borrow() {
            leader.send_replace(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "cannot release the leader lease");
            } else {
                tracing::info!(lease = %self.name, "leader lease released");
            }
        }
    }
}

#[cfg(test)]
mod tests;
