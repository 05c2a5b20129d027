//! Projection of the ambient model into the xDS resource store, and the debounced loop that
//! recomputes it when the configuration changes.
//!
//! Each projection replaces the whole set of each type in the store; the store compares bytes,
//! so only resources that really changed are pushed.

use std::sync::Arc;
use std::time::Duration;

use mesh_config::Snapshot;
use mesh_proto::proto::security::Authorization;
use mesh_proto::proto::type_url;
use mesh_proto::proto::waypoint::Waypoint;
use mesh_proto::proto::workload::{Address, Service, Workload, address};
use mesh_proto::xds::ResourceStore;
use prost::Message;
use prost_types::Any;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::model::{
    Model, ModelConfig, authorization_resource_name, service_resource_name, waypoint_resource_name,
};
use crate::status::{ControlPlaneStatus, IssueView, Projected};

/// How configuration changes are coalesced before the model is recomputed.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// Recompute once no change arrived for this long.
    pub quiet: Duration,
    /// ... or at the latest this long after the first change of a burst.
    pub max: Duration,
}

/// Turns snapshots into xDS resources.
#[derive(Clone)]
pub struct Projector {
    store: ResourceStore,
    model: ModelConfig,
    status: Arc<ControlPlaneStatus>,
    metrics: Arc<Metrics>,
}

impl Projector {
    pub fn new(
        store: ResourceStore,
        model: ModelConfig,
        status: Arc<ControlPlaneStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Projector {
            store,
            model,
            status,
            metrics,
        }
    }

    /// Computes the model of `snapshot` and replaces the store's resources with it.
    pub fn project(&self, snapshot: &Snapshot) -> Model {
        let model = Model::build(snapshot, &self.model);
        let addresses: Vec<(String, Any)> = model
            .workloads
            .iter()
            .map(|w| (w.uid.clone(), workload_any(w)))
            .chain(
                model
                    .services
                    .iter()
                    .map(|s| (service_resource_name(s), service_any(s))),
            )
            .collect();
        let authorizations: Vec<(String, Any)> = model
            .authorizations
            .iter()
            .map(|a| (authorization_resource_name(a), authorization_any(a)))
            .collect();
        let waypoints: Vec<(String, Any)> = model
            .waypoints
            .iter()
            .map(|w| (waypoint_resource_name(w), waypoint_any(w)))
            .collect();
        let mut version = self.store.version();
        for (type_url, resources) in [
            (type_url::ADDRESS, addresses),
            (type_url::AUTHORIZATION, authorizations),
            (type_url::WAYPOINT, waypoints),
        ] {
            let next = self.store.replace_all(type_url, resources);
            if next != version {
                self.metrics
                    .xds_pushes
                    .get_or_create(&Metrics::type_label(type_url))
                    .inc();
            }
            version = next;
        }

        let issues: Vec<IssueView> = snapshot
            .issues
            .iter()
            .map(IssueView::from)
            .chain(model.issues.iter().map(IssueView::from))
            .collect();
        self.metrics.config_issues.set(issues.len() as i64);
        let projected = Projected {
            generation: snapshot.generation,
            workloads: model.workloads.len(),
            services: model.services.len(),
            authorizations: model.authorizations.len(),
            waypoints: model.waypoints.len(),
            store_version: version,
        };
        tracing::info!(
            generation = projected.generation,
            workloads = projected.workloads,
            services = projected.services,
            authorizations = projected.authorizations,
            waypoints = projected.waypoints,
            version,
            issues = issues.len(),
            "configuration projected"
        );
        for issue in self
            .status
            .record(projected, issues, model.waypoint_status.clone())
        {
            tracing::warn!(
                file = issue.file.as_deref().unwrap_or("-"),
                object = issue.object.as_deref().unwrap_or("-"),
                reason = %issue.reason,
                "configuration issue"
            );
        }
        model
    }

    /// Projects the current snapshot (unless it was just projected), then every change,
    /// coalescing bursts per `debounce`. Returns when the source goes away.
    pub async fn run(self, mut rx: watch::Receiver<Arc<Snapshot>>, debounce: Debounce) {
        let snap = rx.borrow_and_update().clone();
        if !self.status.is_ready() || self.status.projected().generation != snap.generation {
            self.project(&snap);
        }
        while rx.changed().await.is_ok() {
            let deadline = tokio::time::Instant::now() + debounce.max;
            loop {
                let wait = debounce
                    .quiet
                    .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                match tokio::time::timeout(wait, rx.changed()).await {
                    Ok(Ok(())) if tokio::time::Instant::now() < deadline => continue,
                    _ => break,
                }
            }
            let snap = rx.borrow_and_update().clone();
            self.project(&snap);
        }
    }
}

fn any(type_url: &str, value: Vec<u8>) -> Any {
    Any {
        type_url: type_url.to_string(),
        value,
    }
}

/// An `Address` holding a workload. Generated maps are ordered (`BTreeMap`), so equal
/// workloads always encode to equal bytes.
pub fn workload_any(w: &Workload) -> Any {
    let addr = Address {
        r#type: Some(address::Type::Workload(w.clone())),
    };
    any(type_url::ADDRESS, addr.encode_to_vec())
}

/// An `Address` holding a service.
pub fn service_any(s: &Service) -> Any {
    let addr = Address {
        r#type: Some(address::Type::Service(s.clone())),
    };
    any(type_url::ADDRESS, addr.encode_to_vec())
}

pub fn authorization_any(a: &Authorization) -> Any {
    any(type_url::AUTHORIZATION, a.encode_to_vec())
}

/// A waypoint's L7 configuration. Its lists are built in a fixed order (sorted services,
/// routes in precedence order, sorted policies), so equal configurations encode equally.
pub fn waypoint_any(w: &Waypoint) -> Any {
    any(type_url::WAYPOINT, w.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::proto::workload::{Port, PortList};

    #[test]
    fn workload_encoding_is_deterministic_and_decodes_back() {
        let mut w = Workload {
            uid: "ns/a".into(),
            name: "a".into(),
            addresses: vec![vec![10, 0, 0, 1]],
            ..Default::default()
        };
        for i in 0..20 {
            w.services.insert(
                format!("ns/svc{i}.ns.svc.cluster.local"),
                PortList {
                    ports: vec![Port {
                        service_port: 80,
                        target_port: 8000 + i,
                    }],
                },
            );
        }
        let first = workload_any(&w);
        for _ in 0..5 {
            // A fresh map (fresh random iteration order) with the same content.
            let mut again = w.clone();
            again.services = w.services.clone().into_iter().collect();
            assert_eq!(workload_any(&again).value, first.value);
        }
        let decoded = Address::decode(first.value.as_slice()).expect("valid Address");
        assert_eq!(decoded.r#type, Some(address::Type::Workload(w)));
    }
}
