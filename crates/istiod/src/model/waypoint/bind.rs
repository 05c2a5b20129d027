//! Which services and workloads use which waypoint: `istio.io/use-waypoint` (and
//! `istio.io/use-waypoint-namespace`) on the Service or Pod, else on its Namespace; `none` opts
//! out. The Gateway's `istio.io/waypoint-for` decides whether services, workloads or both are
//! bound. A waypoint's own Service and pods are never bound.
//!
//! A binding that cannot be honoured (the Gateway does not exist, is not an accepted waypoint,
//! or does not allow the object's namespace) still sends the traffic to the waypoint's address:
//! ztunnel or the waypoint then refuses it, so L7 policy is never skipped silently. With no
//! Gateway to read `waypoint-for` from, services are bound, and workloads only when the Pod
//! itself carries the label.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_config::objects::kind;
use mesh_config::{GATEWAY_NAME_LABEL, ObjectKey, Snapshot};

use super::super::selector;
use super::super::{ModelConfig, service_hostname};
use super::Report;
use super::gateway::{WaypointDef, WaypointRef};

/// A service's or workload's waypoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    pub waypoint: WaypointRef,
    /// Whether the waypoint takes the traffic; when not, the traffic is refused.
    pub accepted: bool,
}

#[derive(Default)]
pub(crate) struct Bindings {
    /// By service resource name (`namespace/hostname`).
    pub services: BTreeMap<String, Binding>,
    /// By workload uid.
    pub workloads: BTreeMap<String, Binding>,
    /// Per waypoint: objects bound to it whose traffic it refuses, with why.
    pub refused: BTreeMap<WaypointRef, Vec<String>>,
    /// Waypoints named by a label that have no Gateway.
    pub missing: BTreeSet<WaypointRef>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Service,
    Workload,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Service => "service",
            Target::Workload => "workload",
        }
    }
}

/// What an object's labels ask for.
enum Ask {
    OptOut,
    Use(WaypointRef),
}

fn ask(meta: &ObjectMeta, own_namespace: &str) -> Option<Ask> {
    match mesh_config::use_waypoint(meta)? {
        None => Some(Ask::OptOut),
        Some(name) => {
            let ns = mesh_config::use_waypoint_namespace(meta).unwrap_or(own_namespace);
            Some(Ask::Use(WaypointRef::new(ns, name)))
        }
    }
}

struct Resolver<'a, 'r, 'i, 's> {
    snapshot: &'a Snapshot,
    cfg: &'a ModelConfig,
    defs: &'a BTreeMap<WaypointRef, WaypointDef>,
    report: &'r mut Report<'i, 's>,
    out: Bindings,
    reported: BTreeSet<(ObjectKey, WaypointRef)>,
}

/// Resolves the bindings of the services in `service_keys` (those the model serves) and of
/// every pod.
pub(crate) fn resolve(
    snapshot: &Snapshot,
    cfg: &ModelConfig,
    defs: &BTreeMap<WaypointRef, WaypointDef>,
    service_keys: &BTreeSet<String>,
    report: &mut Report<'_, '_>,
) -> Bindings {
    let mut r = Resolver {
        snapshot,
        cfg,
        defs,
        report,
        out: Bindings::default(),
        reported: BTreeSet::new(),
    };
    for svc in snapshot.services() {
        let ns = selector::namespace(&svc.metadata);
        let name = selector::name(&svc.metadata);
        let key = format!("{ns}/{}", service_hostname(name, ns, &cfg.domain_suffix));
        if !service_keys.contains(&key) {
            continue;
        }
        let obj = ObjectKey::new(kind::SERVICE, ns, name);
        let is_waypoint = defs.contains_key(&WaypointRef::new(ns, name))
            || selector::labels(&svc.metadata).is_some_and(|l| l.contains_key(GATEWAY_NAME_LABEL));
        if let Some(binding) = r.object(Target::Service, &svc.metadata, ns, &obj, is_waypoint) {
            r.out.services.insert(key, binding);
        }
    }
    for pod in snapshot.pods() {
        let ns = selector::namespace(&pod.metadata);
        let obj = ObjectKey::new(kind::POD, ns, selector::name(&pod.metadata));
        let is_waypoint = mesh_config::pod_gateway_name(pod).is_some();
        if let Some(binding) = r.object(Target::Workload, &pod.metadata, ns, &obj, is_waypoint) {
            r.out.workloads.insert(mesh_config::pod_uid(pod), binding);
        }
    }
    r.out
}

impl Resolver<'_, '_, '_, '_> {
    /// The binding of one Service or Pod: its own label, else its namespace's.
    fn object(
        &mut self,
        target: Target,
        meta: &ObjectMeta,
        ns: &str,
        obj: &ObjectKey,
        is_waypoint: bool,
    ) -> Option<Binding> {
        let own = ask(meta, ns);
        if is_waypoint {
            if matches!(own, Some(Ask::Use(_))) {
                self.report.issue(
                    obj,
                    "istio.io/use-waypoint is ignored: a waypoint's own Service and pods are \
                     never bound to a waypoint",
                );
            }
            return None;
        }
        let (wp, referrer, explicit) = match own {
            Some(Ask::OptOut) => return None,
            Some(Ask::Use(wp)) => (wp, obj.clone(), true),
            None => {
                let namespace = self.snapshot.namespace(ns)?;
                match ask(&namespace.metadata, ns)? {
                    Ask::OptOut => return None,
                    Ask::Use(wp) => (wp, ObjectKey::new(kind::NAMESPACE, "", ns), false),
                }
            }
        };
        self.decide(target, wp, &referrer, explicit, obj, ns)
    }

    fn decide(
        &mut self,
        target: Target,
        wp: WaypointRef,
        referrer: &ObjectKey,
        explicit: bool,
        obj: &ObjectKey,
        ns: &str,
    ) -> Option<Binding> {
        let host = wp.hostname(self.cfg);
        let Some(def) = self.defs.get(&wp) else {
            if target == Target::Workload && !explicit {
                return None;
            }
            self.once(
                referrer,
                &wp,
                format!(
                    "istio.io/use-waypoint names waypoint {wp}, which does not exist (no Gateway \
                     of class istio-waypoint); traffic is sent to {host} and refused until it \
                     exists"
                ),
            );
            self.refuse(&wp, obj, "the waypoint does not exist");
            self.out.missing.insert(wp.clone());
            return Some(Binding {
                waypoint: wp,
                accepted: false,
            });
        };
        let covered = match target {
            Target::Service => def.waypoint_for.services(),
            Target::Workload => def.waypoint_for.workloads(),
        };
        if !covered {
            if explicit {
                self.report.issue(
                    obj,
                    format!(
                        "not bound: waypoint {wp} takes {} traffic (istio.io/waypoint-for), not \
                         {} traffic",
                        def.waypoint_for.as_str(),
                        target.as_str()
                    ),
                );
            }
            return None;
        }
        let refusal = if let Some(reason) = &def.rejected {
            Some(format!("the waypoint is not accepted ({reason})"))
        } else if !def.allows(ns, self.snapshot) {
            Some(format!(
                "the waypoint does not allow namespace {ns} (its {:?} listener's \
                 allowedRoutes.namespaces)",
                super::gateway::MESH_LISTENER
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.once(
                referrer,
                &wp,
                format!("bound to waypoint {wp}, but {why}: its traffic is refused"),
            );
            self.refuse(&wp, obj, &why);
            return Some(Binding {
                waypoint: wp,
                accepted: false,
            });
        }
        Some(Binding {
            waypoint: wp,
            accepted: true,
        })
    }

    /// Reports `reason` on `referrer` once per waypoint (a namespace label binds many objects).
    fn once(&mut self, referrer: &ObjectKey, wp: &WaypointRef, reason: String) {
        if self.reported.insert((referrer.clone(), wp.clone())) {
            self.report.waypoint(wp, referrer, reason);
        }
    }

    fn refuse(&mut self, wp: &WaypointRef, obj: &ObjectKey, why: &str) {
        self.out
            .refused
            .entry(wp.clone())
            .or_default()
            .push(format!("{obj}: {why}"));
    }
}
