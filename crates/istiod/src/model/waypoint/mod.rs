//! Waypoints: which Gateways are waypoints, which services and workloads use them, and the L7
//! configuration each one receives (`mesh.waypoint.v1.Waypoint`, one resource per waypoint named
//! `<namespace>/<gateway>`).
//!
//! What ztunnel gets: `Service.waypoint` / `Workload.waypoint` set to the waypoint's Service
//! (`<gateway>.<namespace>.svc.<suffix>`, HBONE port 15008), and the waypoint pods' workloads
//! with tunnel protocol HBONE (they are never enrolled themselves, see
//! [`mesh_config::pod_enrolled`]). What the waypoint gets: its bound services with their ports,
//! circuit breaking and routes (HTTPRoute, GRPCRoute) in precedence order, and its L7
//! authorization policies (AuthorizationPolicy with targetRefs). What `/debug/waypoints` shows:
//! a [`WaypointStatus`] per waypoint. Everything that cannot be honoured is reported as a model
//! issue and in the waypoint's status.

mod authz;
mod bind;
mod bound;
mod filter;
mod gateway;
mod route;
mod rule;
mod status;
mod validate;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service as K8sService;
use mesh_config::objects::kind;
use mesh_config::{ObjectKey, Snapshot};
use mesh_proto::proto::waypoint as pb;
use mesh_proto::proto::workload::{
    GatewayAddress, NamespacedHostname, Service, TunnelProtocol, Workload, WorkloadStatus,
    gateway_address,
};

use super::{Issues, ModelConfig, selector, service_hostname, service_resource_name};
use bind::Bindings;
use gateway::{WaypointDef, WaypointRef};

pub use bound::{
    CIRCUIT_BREAKER_ANNOTATIONS, CONSECUTIVE_5XX, EJECTION_MS, MAX_CONNECTIONS,
    MAX_PENDING_REQUESTS, MAX_REQUESTS,
};
pub use filter::DEFAULT_RETRY_ATTEMPTS;
pub use gateway::{HBONE_PORT, HBONE_PROTOCOL, MESH_LISTENER};
pub use status::{Condition, StatusAddress, WaypointAddress, WaypointStatus};

/// xDS resource name of a waypoint: `namespace/name`.
pub fn waypoint_resource_name(w: &pb::Waypoint) -> String {
    format!("{}/{}", w.namespace, w.name)
}

/// Reports issues, also into the status of the waypoints they concern.
pub(crate) struct Report<'r, 'a> {
    issues: &'r mut Issues<'a>,
    per_waypoint: BTreeMap<WaypointRef, Vec<String>>,
}

impl Report<'_, '_> {
    pub(crate) fn issue(&mut self, key: &ObjectKey, reason: impl Into<String>) {
        self.issues.push(key, reason);
    }

    pub(crate) fn waypoint(
        &mut self,
        wp: &WaypointRef,
        key: &ObjectKey,
        reason: impl Into<String>,
    ) {
        self.waypoints([wp], key, reason);
    }

    pub(crate) fn waypoints<'w>(
        &mut self,
        wps: impl IntoIterator<Item = &'w WaypointRef>,
        key: &ObjectKey,
        reason: impl Into<String>,
    ) {
        let reason = reason.into();
        for wp in wps {
            self.per_waypoint
                .entry(wp.clone())
                .or_default()
                .push(format!("{key}: {reason}"));
        }
        self.issues.push(key, reason);
    }
}

/// What the waypoint part of the model produces.
pub(crate) struct Output {
    /// One per accepted waypoint, sorted by resource name.
    pub waypoints: Vec<pb::Waypoint>,
    pub status: Vec<WaypointStatus>,
}

/// Binds `services` and `workloads` to their waypoints and compiles each waypoint's
/// configuration. `targeted` lists the AuthorizationPolicies that have targetRefs.
pub(crate) fn build(
    snapshot: &Snapshot,
    cfg: &ModelConfig,
    services: &mut [Service],
    workloads: &mut [Workload],
    targeted: &[ObjectKey],
    issues: &mut Issues<'_>,
) -> Output {
    let mut report = Report {
        issues,
        per_waypoint: BTreeMap::new(),
    };
    let defs: BTreeMap<WaypointRef, WaypointDef> = gateway::discover(snapshot, &mut report)
        .into_iter()
        .map(|d| (d.wp.clone(), d))
        .collect();
    let service_keys: BTreeSet<String> = services.iter().map(service_resource_name).collect();
    let bindings = bind::resolve(snapshot, cfg, &defs, &service_keys, &mut report);
    apply_addresses(snapshot, cfg, &defs, &bindings, services, workloads);

    let k8s: BTreeMap<String, (&K8sService, ObjectKey)> = snapshot
        .services()
        .map(|s| {
            let (ns, name) = (
                selector::namespace(&s.metadata),
                selector::name(&s.metadata),
            );
            let key = format!("{ns}/{}", service_hostname(name, ns, &cfg.domain_suffix));
            (key, (s, ObjectKey::new(kind::SERVICE, ns, name)))
        })
        .collect();
    let mut bound: BTreeMap<WaypointRef, Vec<pb::BoundService>> = defs
        .values()
        .filter(|d| d.accepted())
        .map(|d| (d.wp.clone(), Vec::new()))
        .collect();
    for s in services.iter() {
        let key = service_resource_name(s);
        let (Some(b), Some((svc, obj))) = (bindings.services.get(&key), k8s.get(&key)) else {
            continue;
        };
        if let (true, Some(list)) = (b.accepted, bound.get_mut(&b.waypoint)) {
            list.push(bound::bound_service(s, svc, obj, &mut report));
        }
    }
    for (key, (svc, obj)) in &k8s {
        let through_waypoint = bindings.services.get(key).is_some_and(|b| b.accepted);
        if bound::has_circuit_breaker(svc) && !through_waypoint {
            report.issue(
                obj,
                "circuit-breaking annotations (mesh.io/*) take effect only through a waypoint, \
                 and the Service is not bound to one; ignored",
            );
        }
    }

    let mut attached = route::Attacher {
        snapshot,
        cfg,
        defs: &defs,
        bindings: &bindings,
        bound: &bound,
        report: &mut report,
    }
    .attach_all();
    for s in bound.values_mut().flatten() {
        s.routes = attached.routes.remove(&s.key).unwrap_or_default();
    }
    let mut policies = authz::compile_all(snapshot, cfg, &defs, &bindings, targeted, &mut report);

    let waypoints: Vec<pb::Waypoint> = bound
        .iter()
        .map(|(wp, services)| pb::Waypoint {
            name: wp.name.clone(),
            namespace: wp.namespace.clone(),
            services: services.clone(),
            policies: policies.remove(wp).unwrap_or_default(),
        })
        .collect();

    let book = StatusBook {
        cfg,
        bindings: &bindings,
        service_keys: &service_keys,
        workloads,
        attached: &attached.by_waypoint,
        waypoints: &waypoints,
        per_waypoint: &report.per_waypoint,
    };
    let mut status: Vec<WaypointStatus> = defs
        .values()
        .map(|d| book.status(&d.wp, Some(d)))
        .chain(bindings.missing.iter().map(|wp| book.status(wp, None)))
        .collect();
    status.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Output { waypoints, status }
}

/// The address ztunnel sends a waypoint's traffic to.
pub(crate) fn gateway_address(wp: &WaypointRef, cfg: &ModelConfig) -> GatewayAddress {
    GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: wp.namespace.clone(),
            hostname: wp.hostname(cfg),
        })),
        hbone_mtls_port: u32::from(HBONE_PORT),
    }
}

/// Sets the waypoint of bound services and workloads, and HBONE on waypoint pods.
fn apply_addresses(
    snapshot: &Snapshot,
    cfg: &ModelConfig,
    defs: &BTreeMap<WaypointRef, WaypointDef>,
    bindings: &Bindings,
    services: &mut [Service],
    workloads: &mut [Workload],
) {
    for s in services.iter_mut() {
        if let Some(b) = bindings.services.get(&service_resource_name(s)) {
            s.waypoint = Some(gateway_address(&b.waypoint, cfg));
        }
    }
    let waypoint_pods: BTreeSet<String> = snapshot
        .pods()
        .filter(|p| {
            mesh_config::pod_gateway_name(p).is_some_and(|gw| {
                defs.contains_key(&WaypointRef::new(selector::namespace(&p.metadata), gw))
            })
        })
        .map(mesh_config::pod_uid)
        .collect();
    for w in workloads.iter_mut() {
        if let Some(b) = bindings.workloads.get(&w.uid) {
            w.waypoint = Some(gateway_address(&b.waypoint, cfg));
        }
        if waypoint_pods.contains(&w.uid) {
            w.tunnel_protocol = TunnelProtocol::Hbone as i32;
        }
    }
}

/// What the status of each waypoint is assembled from.
struct StatusBook<'a> {
    cfg: &'a ModelConfig,
    bindings: &'a Bindings,
    service_keys: &'a BTreeSet<String>,
    workloads: &'a [Workload],
    attached: &'a BTreeMap<WaypointRef, BTreeSet<String>>,
    waypoints: &'a [pb::Waypoint],
    per_waypoint: &'a BTreeMap<WaypointRef, Vec<String>>,
}

impl StatusBook<'_> {
    fn status(&self, wp: &WaypointRef, def: Option<&WaypointDef>) -> WaypointStatus {
        let service_key = wp.service_key(self.cfg);
        let hostname = wp.hostname(self.cfg);
        let service_found = self.service_keys.contains(&service_key);
        let ready_endpoints = self
            .workloads
            .iter()
            .filter(|w| {
                w.services.contains_key(&service_key) && w.status == WorkloadStatus::Healthy as i32
            })
            .count();
        let accepted = match def {
            None => Condition::new(
                "Accepted",
                false,
                "GatewayNotFound",
                format!(
                    "istio.io/use-waypoint names {wp}, but there is no Gateway {wp} of class \
                     istio-waypoint; traffic bound to it is refused"
                ),
            ),
            Some(WaypointDef {
                rejected: Some(reason),
                ..
            }) => Condition::new("Accepted", false, "ListenersNotValid", reason.clone()),
            Some(_) => Condition::new("Accepted", true, "Accepted", ""),
        };
        let programmed = if !accepted.is_true() {
            Condition::new(
                "Programmed",
                false,
                "Invalid",
                "the waypoint is not accepted",
            )
        } else if !service_found {
            Condition::new(
                "Programmed",
                false,
                "AddressNotAssigned",
                format!(
                    "no Service {} with a cluster IP in namespace {}: ztunnels cannot reach \
                     the waypoint at {hostname}",
                    wp.name, wp.namespace
                ),
            )
        } else if ready_endpoints == 0 {
            Condition::new(
                "Programmed",
                false,
                "NoResources",
                format!("no healthy waypoint pod behind {hostname}"),
            )
        } else {
            Condition::new(
                "Programmed",
                true,
                "Programmed",
                format!("{ready_endpoints} healthy waypoint pod(s) behind {hostname}"),
            )
        };
        let bound = |map: &BTreeMap<String, bind::Binding>| -> Vec<String> {
            map.iter()
                .filter(|(_, b)| b.accepted && b.waypoint == *wp)
                .map(|(k, _)| k.clone())
                .collect()
        };
        let resource = self
            .waypoints
            .iter()
            .find(|w| w.namespace == wp.namespace && w.name == wp.name);
        WaypointStatus {
            namespace: wp.namespace.clone(),
            name: wp.name.clone(),
            resource: resource.map(waypoint_resource_name),
            waypoint_for: def
                .map_or("unknown", |d| d.waypoint_for.as_str())
                .to_string(),
            addresses: if service_found {
                vec![StatusAddress {
                    type_: "Hostname".into(),
                    value: hostname.clone(),
                }]
            } else {
                Vec::new()
            },
            address: WaypointAddress {
                hostname,
                hbone_port: u32::from(HBONE_PORT),
                service_found,
                ready_endpoints,
            },
            conditions: vec![accepted, programmed],
            bound_services: bound(&self.bindings.services),
            bound_workloads: bound(&self.bindings.workloads),
            refused: self.bindings.refused.get(wp).cloned().unwrap_or_default(),
            routes: self
                .attached
                .get(wp)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
            policies: resource
                .map(|w| w.policies.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default(),
            issues: self.per_waypoint.get(wp).cloned().unwrap_or_default(),
        }
    }
}
