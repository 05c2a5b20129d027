//! The xDS handler: workload discovery (`istio.workload.Address`, applied by ztunnel's
//! `StateUpdater` to the same `ProxyState` ztunnel uses) and this waypoint's L7 configuration
//! (`mesh.waypoint.v1.Waypoint`, one named resource). A response that does not decode or
//! validate is refused whole (NACK) and the previous state stays in force.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use mesh_proto::proto::discovery::Resource;
use mesh_proto::proto::type_url;
use mesh_proto::xds::{ClientHandler, Subscription};
use ztunnel::state::SharedState;
use ztunnel::state::xds::StateUpdater;

use crate::config_model::WaypointConfig;

/// What the waypoint subscribes to: every address (wildcard) and its own configuration.
pub fn subscriptions(resource_name: &str) -> Vec<Subscription> {
    vec![
        Subscription::wildcard(type_url::ADDRESS),
        Subscription::named(type_url::WAYPOINT, vec![resource_name.to_string()]),
    ]
}

pub struct Discovery {
    addresses: StateUpdater,
    waypoint: Arc<ArcSwapOption<WaypointConfig>>,
    resource_name: String,
    synced: Arc<AtomicBool>,
}

impl Discovery {
    /// `synced` turns true once the initial state of every subscription has arrived.
    pub fn new(
        state: SharedState,
        trust_domain: String,
        waypoint: Arc<ArcSwapOption<WaypointConfig>>,
        resource_name: String,
        synced: Arc<AtomicBool>,
    ) -> Self {
        Discovery {
            addresses: StateUpdater::new(state, trust_domain, synced.clone()),
            waypoint,
            resource_name,
            synced,
        }
    }

    fn apply_waypoint(&self, updated: Vec<Resource>, removed: Vec<String>) -> Result<(), String> {
        let mut next = None;
        for r in updated {
            if r.name != self.resource_name {
                return Err(format!(
                    "unexpected waypoint resource {:?} (this is {:?})",
                    r.name, self.resource_name
                ));
            }
            let Some(any) = &r.resource else {
                return Err(format!("waypoint resource {} has no body", r.name));
            };
            let cfg = WaypointConfig::decode(&r.name, &any.value).map_err(|e| e.to_string())?;
            next = Some(cfg);
        }
        if let Some(cfg) = next {
            tracing::info!(
                resource = %self.resource_name,
                services = cfg.services.len(),
                routes = cfg.services.iter().map(|s| s.routes.len()).sum::<usize>(),
                policies = cfg.policies.len(),
                "waypoint configuration applied"
            );
            self.waypoint.store(Some(Arc::new(cfg)));
        } else if removed.contains(&self.resource_name) {
            tracing::warn!(resource = %self.resource_name, "waypoint configuration removed; refusing traffic");
            self.waypoint.store(None);
        }
        Ok(())
    }
}

impl ClientHandler for Discovery {
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        match type_url {
            type_url::WAYPOINT => self.apply_waypoint(updated, removed),
            _ => self.addresses.apply(type_url, updated, removed),
        }
    }

    fn on_connected(&self) {
        self.addresses.on_connected();
        self.synced.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::proto::waypoint as pb;
    use parking_lot::RwLock;
    use prost::Message;

    use super::*;

    fn resource(name: &str, w: &pb::Waypoint) -> Resource {
        Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(prost_types::Any {
                type_url: type_url::WAYPOINT.into(),
                value: w.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_bad_configuration_is_refused_and_the_previous_one_kept() {
        let cfg = Arc::new(ArcSwapOption::empty());
        let d = Discovery::new(
            Arc::new(RwLock::new(Default::default())),
            "cluster.local".into(),
            cfg.clone(),
            "ns/wp".into(),
            Arc::new(AtomicBool::new(false)),
        );
        let good = pb::Waypoint {
            name: "wp".into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        d.apply(type_url::WAYPOINT, vec![resource("ns/wp", &good)], vec![])
            .expect("good config");
        assert!(cfg.load().is_some());
        let mut bad = good.clone();
        bad.services.push(pb::BoundService {
            key: "ns/a.ns.svc.cluster.local".into(),
            name: "a".into(),
            namespace: "ns".into(),
            hostname: "a.ns.svc.cluster.local".into(),
            routes: vec![pb::Route {
                name: "ns/r.0".into(),
                matches: vec![pb::RouteMatch {
                    path: Some(pb::PathMatch {
                        kind: Some(pb::path_match::Kind::Regex("(".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let err = d
            .apply(type_url::WAYPOINT, vec![resource("ns/wp", &bad)], vec![])
            .expect_err("bad regex refused");
        assert!(err.contains("invalid regular expression"), "{err}");
        assert_eq!(cfg.load().as_ref().map(|c| c.services.len()), Some(0));
        d.apply(type_url::WAYPOINT, vec![], vec!["ns/wp".into()])
            .expect("removal");
        assert!(cfg.load().is_none());
    }
}
