//! HTTPRoutes and GRPCRoutes attached to the services a waypoint receives traffic for.
//!
//! A route attaches through `parentRefs`: to a Service (group `""` or `core`, in the route's
//! own namespace, a "producer" route) bound to an accepted waypoint, optionally to one of its
//! ports (`port` or `sectionName`); or to the waypoint Gateway itself, which applies it to every
//! service bound to that waypoint (narrowed by the route's `hostnames` when given). Parents that
//! are Gateways of other classes are not the mesh's business and are skipped. Every other
//! parent that cannot be honoured is reported.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use mesh_config::objects::{self as gw, GATEWAY_GROUP, kind};
use mesh_config::{ObjectKey, Snapshot};
use mesh_proto::proto::waypoint as pb;

use super::super::selector;
use super::super::{ModelConfig, service_hostname};
use super::Report;
use super::bind::Bindings;
use super::filter::{Problems, RuleCtx};
use super::gateway::{HBONE_PORT, MESH_LISTENER, WaypointDef, WaypointRef};
use super::rule::{self, Entry, Rank};

/// Routes per bound service, in precedence order, and the route objects each waypoint got.
#[derive(Default)]
pub(crate) struct Attached {
    pub routes: BTreeMap<String, Vec<pb::Route>>,
    pub by_waypoint: BTreeMap<WaypointRef, BTreeSet<String>>,
}

/// One service a route applies to.
struct Target {
    service: String,
    ports: Vec<u32>,
    waypoint: WaypointRef,
}

/// An HTTPRoute or GRPCRoute, seen the same way.
struct RouteObject<'a> {
    key: ObjectKey,
    meta: &'a ObjectMeta,
    parents: &'a [gw::ParentReference],
    hostnames: &'a [String],
    http: Option<&'a [gw::HttpRouteRule]>,
    grpc: Option<&'a [gw::GrpcRouteRule]>,
}

/// Sort key: precedence, then age, then name, then position.
type Order = (
    std::cmp::Reverse<Rank>,
    Option<Time>,
    String,
    String,
    usize,
    usize,
);

pub(crate) struct Attacher<'a, 'r, 'i, 's> {
    pub snapshot: &'a Snapshot,
    pub cfg: &'a ModelConfig,
    pub defs: &'a BTreeMap<WaypointRef, WaypointDef>,
    pub bindings: &'a Bindings,
    /// Per accepted waypoint, the services it receives traffic for.
    pub bound: &'a BTreeMap<WaypointRef, Vec<pb::BoundService>>,
    pub report: &'r mut Report<'i, 's>,
}

impl Attacher<'_, '_, '_, '_> {
    pub fn attach_all(mut self) -> Attached {
        let mut objects = Vec::new();
        for r in self.snapshot.http_routes() {
            objects.push(RouteObject {
                key: key_of(kind::HTTP_ROUTE, &r.metadata),
                meta: &r.metadata,
                parents: &r.spec.parent_refs,
                hostnames: &r.spec.hostnames,
                http: Some(&r.spec.rules),
                grpc: None,
            });
        }
        for r in self.snapshot.grpc_routes() {
            objects.push(RouteObject {
                key: key_of(kind::GRPC_ROUTE, &r.metadata),
                meta: &r.metadata,
                parents: &r.spec.parent_refs,
                hostnames: &r.spec.hostnames,
                http: None,
                grpc: Some(&r.spec.rules),
            });
        }
        let mut ordered: BTreeMap<String, Vec<(Order, pb::Route)>> = BTreeMap::new();
        let mut out = Attached::default();
        for obj in &objects {
            let targets = self.targets(obj);
            if targets.is_empty() {
                continue;
            }
            let waypoints: BTreeSet<WaypointRef> =
                targets.iter().map(|t| t.waypoint.clone()).collect();
            for wp in &waypoints {
                out.by_waypoint
                    .entry(wp.clone())
                    .or_default()
                    .insert(obj.key.to_string());
            }
            let rules = self.compile(obj, &waypoints);
            let name = format!("{}/{}", obj.key.namespace, obj.key.name);
            let mut seen = BTreeSet::new();
            for t in &targets {
                if !seen.insert((t.service.clone(), t.ports.clone())) {
                    continue;
                }
                let list = ordered.entry(t.service.clone()).or_default();
                for (rule_index, entries) in &rules {
                    for e in entries {
                        let mut route = e.route.clone();
                        route.ports = t.ports.clone();
                        let order = (
                            e.rank.order(),
                            obj.meta.creation_timestamp.clone(),
                            name.clone(),
                            obj.key.kind.clone(),
                            *rule_index,
                            e.match_index,
                        );
                        list.push((order, route));
                    }
                }
            }
        }
        for (service, mut list) in ordered {
            list.sort_by(|a, b| a.0.cmp(&b.0));
            out.routes
                .insert(service, list.into_iter().map(|(_, r)| r).collect());
        }
        out
    }

    /// Compiles every rule, reporting problems on the route and in the waypoints' status.
    fn compile(
        &mut self,
        obj: &RouteObject<'_>,
        waypoints: &BTreeSet<WaypointRef>,
    ) -> Vec<(usize, Vec<Entry>)> {
        let ctx = RuleCtx {
            snapshot: self.snapshot,
            cfg: self.cfg,
            namespace: &obj.key.namespace,
            grpc: obj.grpc.is_some(),
        };
        let mut out = Vec::new();
        let count = obj.http.map_or(0, <[_]>::len) + obj.grpc.map_or(0, <[_]>::len);
        for i in 0..count {
            let name = format!("{}/{}.{i}", obj.key.namespace, obj.key.name);
            let mut p = Problems::default();
            let entries = match (obj.http, obj.grpc) {
                (Some(rules), _) => rule::http_rule(&name, &rules[i], &ctx, &mut p),
                (_, Some(rules)) => rule::grpc_rule(&name, &rules[i], &ctx, &mut p),
                _ => Vec::new(),
            };
            if !p.fatal.is_empty() {
                let reason = format!("rule {i} is not programmed: {}", p.fatal.join("; "));
                self.report.waypoints(waypoints, &obj.key, reason);
            }
            for note in p.notes {
                self.report
                    .waypoints(waypoints, &obj.key, format!("rule {i}: {note}"));
            }
            out.push((i, entries));
        }
        out
    }

    /// The services the route applies to, reporting parents that cannot be honoured.
    fn targets(&mut self, obj: &RouteObject<'_>) -> Vec<Target> {
        let mut out = Vec::new();
        for parent in obj.parents {
            let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind_ = parent.kind.as_deref().unwrap_or(kind::GATEWAY);
            let ns = parent.namespace.as_deref().unwrap_or(&obj.key.namespace);
            let result = match (group, kind_) {
                ("" | "core", kind::SERVICE) => self.service_parent(obj, parent, ns),
                (GATEWAY_GROUP, kind::GATEWAY) => self.gateway_parent(obj, parent, ns),
                _ => Err(format!(
                    "parentRef {kind_} {} (group {group:?}) is not supported: routes attach \
                     to a Service or a waypoint Gateway",
                    parent.name
                )),
            };
            match result {
                Ok(targets) => out.extend(targets),
                Err(reason) if reason.is_empty() => {}
                Err(reason) => self.report.issue(&obj.key, reason),
            }
        }
        out
    }

    fn service_parent(
        &mut self,
        obj: &RouteObject<'_>,
        parent: &gw::ParentReference,
        ns: &str,
    ) -> Result<Vec<Target>, String> {
        let what = format!("parentRef Service {ns}/{}", parent.name);
        if ns != obj.key.namespace {
            return Err(format!(
                "{what}: a route for a Service of another namespace (a consumer route) is not \
                 supported; waypoints apply the routes of the Service's own namespace"
            ));
        }
        let Some(mesh_config::Object::Service(svc)) =
            self.snapshot
                .get(&ObjectKey::new(kind::SERVICE, ns, &parent.name))
        else {
            return Err(format!("{what}: the Service does not exist"));
        };
        let service = format!(
            "{ns}/{}",
            service_hostname(&parent.name, ns, &self.cfg.domain_suffix)
        );
        let binding = match self.bindings.services.get(&service) {
            Some(b) if b.accepted => b,
            Some(b) => {
                return Err(format!(
                    "{what}: bound to waypoint {}, which refuses its traffic; route not \
                     applied",
                    b.waypoint
                ));
            }
            None => {
                return Err(format!(
                    "{what}: the Service is not bound to a waypoint (istio.io/use-waypoint), \
                     and ztunnel does not apply L7 routes; route not applied"
                ));
            }
        };
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
        let port = match (&parent.section_name, parent.port) {
            (Some(section), _) => ports
                .into_iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(section.as_str()))
                .map(|p| p.port as u32)
                .ok_or_else(|| format!("{what}: the Service has no port named {section:?}"))
                .map(Some)?,
            (None, Some(port)) => {
                if !ports
                    .into_iter()
                    .flatten()
                    .any(|p| p.port == i32::from(port))
                {
                    return Err(format!("{what}: the Service has no port {port}"));
                }
                Some(u32::from(port))
            }
            (None, None) => None,
        };
        if !obj.hostnames.is_empty() {
            self.report.waypoint(
                &binding.waypoint,
                &obj.key,
                "hostnames are ignored for a route attached to a Service: the Service selects \
                 the traffic",
            );
        }
        Ok(vec![Target {
            service,
            ports: port.into_iter().collect(),
            waypoint: binding.waypoint.clone(),
        }])
    }

    fn gateway_parent(
        &mut self,
        obj: &RouteObject<'_>,
        parent: &gw::ParentReference,
        ns: &str,
    ) -> Result<Vec<Target>, String> {
        let wp = WaypointRef::new(ns, &parent.name);
        let Some(def) = self.defs.get(&wp) else {
            // Not a waypoint: another controller's Gateway, or none at all.
            return Err(String::new());
        };
        let what = format!("parentRef Gateway {wp}");
        if let Some(reason) = &def.rejected {
            return Err(format!("{what}: the waypoint is not accepted ({reason})"));
        }
        if !def.allows(&obj.key.namespace, self.snapshot) {
            return Err(format!(
                "{what}: the waypoint does not allow routes from namespace {}",
                obj.key.namespace
            ));
        }
        if parent
            .section_name
            .as_deref()
            .is_some_and(|s| s != MESH_LISTENER)
            || parent.port.is_some_and(|p| p != HBONE_PORT)
        {
            return Err(format!(
                "{what}: a waypoint has only the listener {MESH_LISTENER:?} on port \
                 {HBONE_PORT}"
            ));
        }
        let services: Vec<&pb::BoundService> = self
            .bound
            .get(&wp)
            .into_iter()
            .flatten()
            .filter(|s| {
                obj.hostnames.is_empty() || obj.hostnames.iter().any(|h| host_matches(h, s))
            })
            .collect();
        if services.is_empty() {
            self.report.waypoint(
                &wp,
                &obj.key,
                format!("{what}: no service bound to the waypoint matches the route"),
            );
        }
        Ok(services
            .into_iter()
            .map(|s| Target {
                service: s.key.clone(),
                ports: Vec::new(),
                waypoint: wp.clone(),
            })
            .collect())
    }
}

/// Whether a route hostname (`reviews`, `reviews.ns`, the full name, or `*.suffix`) names the
/// service.
fn host_matches(h: &str, s: &pb::BoundService) -> bool {
    let h = h.to_ascii_lowercase();
    if let Some(suffix) = h.strip_prefix('*') {
        return s.hostname.ends_with(suffix);
    }
    h == s.hostname || h == s.name || h == format!("{}.{}", s.name, s.namespace)
}

fn key_of(kind_: &str, meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(kind_, selector::namespace(meta), selector::name(meta))
}
