//! Applies xDS updates (workload discovery and authorization) to the proxy state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mesh_proto::proto::discovery::Resource;
use mesh_proto::proto::{security, type_url, workload};
use mesh_proto::xds::ClientHandler;
use prost::Message;

use super::{Policy, Service, SharedState, StateError, Workload};

/// The xDS client handler: decodes every resource of a response first, then applies all of
/// them at once, so a bad resource NACKs the response and leaves the state untouched.
pub struct StateUpdater {
    state: SharedState,
    trust_domain: String,
    synced: Arc<AtomicBool>,
}

enum Change {
    Workload(Workload),
    Service(Service),
    Policy(Policy),
}

impl StateUpdater {
    pub fn new(state: SharedState, trust_domain: String, synced: Arc<AtomicBool>) -> Self {
        StateUpdater {
            state,
            trust_domain,
            synced,
        }
    }

    fn decode(&self, type_url: &str, r: &Resource) -> Result<Option<Change>, StateError> {
        let Some(any) = &r.resource else {
            return Ok(None);
        };
        let decode_err = |source| StateError::Decode {
            type_url: type_url.to_string(),
            name: r.name.clone(),
            source,
        };
        match type_url {
            type_url::ADDRESS => {
                let addr = workload::Address::decode(any.value.as_slice()).map_err(decode_err)?;
                match addr.r#type {
                    Some(workload::address::Type::Workload(w)) => Ok(Some(Change::Workload(
                        Workload::from_proto(w, &self.trust_domain)?,
                    ))),
                    Some(workload::address::Type::Service(s)) => {
                        Ok(Some(Change::Service(Service::from_proto(s)?)))
                    }
                    None => Err(StateError::Invalid(format!("address {} is empty", r.name))),
                }
            }
            type_url::AUTHORIZATION => {
                let p =
                    security::Authorization::decode(any.value.as_slice()).map_err(decode_err)?;
                Ok(Some(Change::Policy(Policy::from_proto(p)?)))
            }
            other => Err(StateError::Invalid(format!("unexpected type {other}"))),
        }
    }
}

impl ClientHandler for StateUpdater {
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let changes = updated
            .iter()
            .map(|r| self.decode(type_url, r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut st = self.state.write();
        for name in &removed {
            match type_url {
                type_url::AUTHORIZATION => {
                    st.remove_policy(name);
                }
                _ => {
                    if !st.remove_workload(name) {
                        st.remove_service(name);
                    }
                }
            }
        }
        let n = changes.len();
        for c in changes.into_iter().flatten() {
            match c {
                Change::Workload(w) => st.upsert_workload(w),
                Change::Service(s) => st.upsert_service(s),
                Change::Policy(p) => st.upsert_policy(p),
            }
        }
        tracing::debug!(
            type_url,
            updated = n,
            removed = removed.len(),
            "applied xDS update"
        );
        Ok(())
    }

    fn on_connected(&self) {
        self.synced.store(true, Ordering::Release);
    }
}
