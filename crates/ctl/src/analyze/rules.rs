//! The semantic rules: how objects relate (policies to waypoints, labels to Gateways, routes to
//! Services, mTLS modes to the namespaces outside the mesh).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_config::objects::{
    AuthorizationPolicy, AuthorizationPolicySpec, Gateway, MtlsMode, ParentReference,
    PolicyTargetReference, WAYPOINT_GATEWAY_CLASS,
};
use mesh_config::{
    Object, ObjectKey, Snapshot, namespace_enrolled, pod_enrolled, pod_host_network,
};

use super::{Finding, Options, Severity};
use crate::waypoint_gateway::{
    TrafficType, has_hbone_listener, is_waypoint, traffic_type, waypoint_ref,
};

pub const L7_POLICY_WITHOUT_WAYPOINT: &str = "MESH0003";
pub const WAYPOINT_NOT_FOUND: &str = "MESH0004";
pub const ROUTE_WITHOUT_WAYPOINT: &str = "MESH0005";
pub const STRICT_CUTS_OFF_CLIENTS: &str = "MESH0006";
pub const WAYPOINT_TRAFFIC_MISMATCH: &str = "MESH0007";
pub const WAYPOINT_WITHOUT_HBONE: &str = "MESH0008";

/// Namespaces of the platform itself, never expected in the mesh.
const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Runs every rule.
pub fn run(snap: &Snapshot, opts: &Options) -> Vec<Finding> {
    let model = Model::new(snap);
    let mut out = Vec::new();
    model.waypoint_listeners(&mut out);
    model.use_waypoint_labels(&mut out);
    model.l7_policies(&mut out);
    model.routes(&mut out);
    model.strict_mtls(opts, &mut out);
    out
}

/// A waypoint binding through `istio.io/use-waypoint`.
enum Binding {
    Absent,
    OptOut,
    Named { ns: String, name: String },
}

struct Model<'a> {
    snap: &'a Snapshot,
    gateways: BTreeMap<(String, String), &'a Gateway>,
    services: BTreeMap<(String, String), &'a Service>,
}

fn ns_name(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn finding(
    code: &'static str,
    severity: Severity,
    key: &ObjectKey,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        code,
        severity,
        object: key.to_string(),
        file: None,
        line: None,
        message,
        fix,
        namespace: Some(if key.namespace.is_empty() {
            key.name.clone()
        } else {
            key.namespace.clone()
        }),
    }
}

impl<'a> Model<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        Model {
            snap,
            gateways: snap.gateways().map(|g| (ns_name(&g.metadata), g)).collect(),
            services: snap.services().map(|s| (ns_name(&s.metadata), s)).collect(),
        }
    }

    /// The waypoint `ns/name`, or why there is none.
    fn waypoint(&self, ns: &str, name: &str) -> Result<&'a Gateway, String> {
        match self.gateways.get(&(ns.to_string(), name.to_string())) {
            None => Err(format!("Gateway {ns}/{name} does not exist")),
            Some(gw) if !is_waypoint(gw) => Err(format!(
                "Gateway {ns}/{name} is not a waypoint (gatewayClassName {:?}, not \
                 {WAYPOINT_GATEWAY_CLASS:?})",
                gw.spec.gateway_class_name
            )),
            Some(gw) => Ok(gw),
        }
    }

    /// The Service's waypoint: its own label, else its namespace's.
    fn service_binding(&self, svc: &Service) -> Binding {
        let obj = Object::from(Service {
            metadata: svc.metadata.clone(),
            ..Default::default()
        });
        let from_ns = || {
            let ns = svc.metadata.namespace.as_deref()?;
            let ns = self.snap.namespace(ns)?;
            waypoint_ref(&Object::from(ns.clone()))
        };
        match waypoint_ref(&obj).or_else(from_ns) {
            None => Binding::Absent,
            Some(None) => Binding::OptOut,
            Some(Some((ns, name))) => Binding::Named { ns, name },
        }
    }

    /// Why traffic to the Service does not go through a waypoint, if it does not.
    fn service_without_waypoint(&self, ns: &str, name: &str) -> Option<String> {
        let Some(svc) = self.services.get(&(ns.to_string(), name.to_string())) else {
            return Some(format!("Service {ns}/{name} does not exist"));
        };
        match self.service_binding(svc) {
            Binding::Absent => Some(format!(
                "Service {ns}/{name} has no waypoint (no istio.io/use-waypoint on it or on its \
                 namespace)"
            )),
            Binding::OptOut => Some(format!(
                "Service {ns}/{name} opts out of waypoints (istio.io/use-waypoint: none)"
            )),
            Binding::Named {
                ns: wns,
                name: wname,
            } => match self.waypoint(&wns, &wname) {
                Err(e) => Some(format!("the waypoint of Service {ns}/{name}: {e}")),
                Ok(gw) if !traffic_type(gw).serves_services() => Some(format!(
                    "the waypoint {wns}/{wname} of Service {ns}/{name} does not handle service \
                     traffic (istio.io/waypoint-for={})",
                    traffic_type(gw).as_str()
                )),
                Ok(_) => None,
            },
        }
    }

    // MESH0008
    fn waypoint_listeners(&self, out: &mut Vec<Finding>) {
        for gw in self.gateways.values() {
            if is_waypoint(gw) && !has_hbone_listener(gw) {
                let (ns, name) = ns_name(&gw.metadata);
                out.push(finding(
                    WAYPOINT_WITHOUT_HBONE,
                    Severity::Error,
                    &ObjectKey::new("Gateway", ns, name),
                    "this istio-waypoint Gateway has no listener on port 15008 with protocol \
                     HBONE, which is how ztunnels send it traffic"
                        .into(),
                    "add the listener {name: mesh, port: 15008, protocol: HBONE} (meshctl \
                     waypoint generate prints a complete waypoint)"
                        .into(),
                ));
            }
        }
    }

    // MESH0004, MESH0007
    fn use_waypoint_labels(&self, out: &mut Vec<Finding>) {
        for (key, obj) in &self.snap.objects {
            if !matches!(
                obj,
                Object::Namespace(_) | Object::Service(_) | Object::Pod(_)
            ) {
                continue;
            }
            let Some(Some((ns, name))) = waypoint_ref(obj) else {
                continue;
            };
            let affected = match obj {
                Object::Namespace(_) => "traffic to the namespace's services",
                Object::Service(_) => "traffic to this Service",
                _ => "traffic to this pod",
            };
            match self.waypoint(&ns, &name) {
                Err(reason) => out.push(finding(
                    WAYPOINT_NOT_FOUND,
                    Severity::Error,
                    key,
                    format!(
                        "istio.io/use-waypoint={name} names a waypoint that is not there: \
                         {reason}; {affected} fails closed until it exists"
                    ),
                    format!(
                        "create it (meshctl waypoint apply -n {ns} --name {name}) or correct the \
                         label"
                    ),
                )),
                Ok(gw) => {
                    let traffic = traffic_type(gw);
                    let serves = match obj {
                        Object::Namespace(_) => traffic != TrafficType::None,
                        Object::Service(_) => traffic.serves_services(),
                        _ => traffic.serves_workloads(),
                    };
                    if !serves {
                        let wanted = match obj {
                            Object::Pod(_) => "workload",
                            _ => "service",
                        };
                        out.push(finding(
                            WAYPOINT_TRAFFIC_MISMATCH,
                            Severity::Warning,
                            key,
                            format!(
                                "istio.io/use-waypoint={name} names waypoint {ns}/{name}, which \
                                 handles {} traffic (istio.io/waypoint-for={}): {affected} does \
                                 not go through it",
                                traffic.as_str(),
                                traffic.as_str()
                            ),
                            format!(
                                "label the Gateway istio.io/waypoint-for={wanted} (or all), or \
                                 bind a waypoint that handles {wanted} traffic"
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// The waypoint name to suggest for a namespace: the one it uses, else `waypoint`.
    fn suggested_waypoint(&self, ns: &str) -> String {
        self.snap
            .namespace(ns)
            .and_then(|n| waypoint_ref(&Object::from(n.clone())))
            .flatten()
            .map(|(_, name)| name)
            .unwrap_or_else(|| crate::waypoint_gateway::DEFAULT_WAYPOINT_NAME.into())
    }

    /// Why a policy target is not a waypoint, if it is not.
    fn target_not_waypoint(&self, policy_ns: &str, t: &PolicyTargetReference) -> Option<String> {
        let ns = t.namespace.as_deref().unwrap_or(policy_ns);
        match t.kind.as_str() {
            "Gateway" => self.waypoint(ns, &t.name).err(),
            "Service" => self.service_without_waypoint(ns, &t.name),
            "GatewayClass" if t.name == WAYPOINT_GATEWAY_CLASS => None,
            "GatewayClass" => Some(format!(
                "GatewayClass {} is not {WAYPOINT_GATEWAY_CLASS}",
                t.name
            )),
            // ServiceEntry and others: not evaluated here.
            _ => None,
        }
    }

    // MESH0003
    fn l7_policies(&self, out: &mut Vec<Finding>) {
        for ap in self.snap.authorization_policies() {
            let fields = l7_fields(&ap.spec);
            if fields.is_empty() {
                continue;
            }
            let (ns, name) = ns_name(&ap.metadata);
            let key = ObjectKey::new("AuthorizationPolicy", &ns, &name);
            let targets: Vec<&PolicyTargetReference> = ap.spec.all_target_refs().collect();
            let fields = fields.join(", ");
            if targets.is_empty() {
                let scope = scope_text(ap);
                let wp = self.suggested_waypoint(&ns);
                out.push(finding(
                    L7_POLICY_WITHOUT_WAYPOINT,
                    Severity::Error,
                    &key,
                    format!(
                        "it matches on HTTP attributes ({fields}) but has no targetRefs, so \
                         ztunnel enforces it ({scope}); ztunnel sees TCP connections only, so \
                         those attributes never match and the policy does not do what it says"
                    ),
                    format!(
                        "attach it to a waypoint: targetRefs: [{{kind: Gateway, group: \
                         gateway.networking.k8s.io, name: {wp}}}] (meshctl waypoint apply -n \
                         {ns} --name {wp} --enroll-namespace creates one), or drop the HTTP \
                         attributes"
                    ),
                ));
                continue;
            }
            let reasons: Vec<String> = targets
                .iter()
                .map(|t| self.target_not_waypoint(&ns, t))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
            if !reasons.is_empty() {
                out.push(finding(
                    L7_POLICY_WITHOUT_WAYPOINT,
                    Severity::Error,
                    &key,
                    format!(
                        "it matches on HTTP attributes ({fields}) but none of its targetRefs \
                         reaches a waypoint: {}",
                        reasons.join("; ")
                    ),
                    "point targetRefs at an istio-waypoint Gateway, or at a Service bound to \
                     one (istio.io/use-waypoint)"
                        .into(),
                ));
            }
        }
    }

    // MESH0005
    fn routes(&self, out: &mut Vec<Finding>) {
        let http = self
            .snap
            .http_routes()
            .map(|r| ("HTTPRoute", &r.metadata, &r.spec.parent_refs));
        let grpc = self
            .snap
            .grpc_routes()
            .map(|r| ("GRPCRoute", &r.metadata, &r.spec.parent_refs));
        for (kind, meta, parents) in http.chain(grpc) {
            let (ns, name) = ns_name(meta);
            let key = ObjectKey::new(kind, &ns, &name);
            for p in parents.iter().filter(|p| is_service_parent(p)) {
                let svc_ns = p.namespace.as_deref().unwrap_or(&ns);
                if let Some(reason) = self.service_without_waypoint(svc_ns, &p.name) {
                    out.push(finding(
                        ROUTE_WITHOUT_WAYPOINT,
                        Severity::Warning,
                        &key,
                        format!(
                            "parentRef Service {svc_ns}/{}: {reason}; in ambient only a \
                             waypoint applies {kind} rules, so this route has no effect",
                            p.name
                        ),
                        format!(
                            "give the Service a waypoint: meshctl waypoint apply -n {svc_ns} \
                             --enroll-namespace (or label the Service \
                             istio.io/use-waypoint=<waypoint>)"
                        ),
                    ));
                }
            }
        }
    }

    /// Namespaces (other than the system ones) whose pods are outside the mesh.
    fn outside_namespaces(&self, opts: &Options) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self
            .snap
            .namespaces()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        names.extend(
            self.snap
                .pods()
                .filter_map(|p| p.metadata.namespace.clone()),
        );
        names
            .into_iter()
            .filter(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()) && *n != opts.root_namespace)
            .filter(|n| {
                let ns = self.snap.namespace(n);
                let pods: Vec<_> = self
                    .snap
                    .pods()
                    .filter(|p| p.metadata.namespace.as_deref() == Some(n.as_str()))
                    .filter(|p| !pod_host_network(p))
                    .collect();
                if pods.is_empty() {
                    !ns.is_some_and(namespace_enrolled)
                } else {
                    pods.iter().any(|p| !pod_enrolled(p, ns))
                }
            })
            .collect()
    }

    // MESH0006
    fn strict_mtls(&self, opts: &Options, out: &mut Vec<Finding>) {
        let outside = self.outside_namespaces(opts);
        for pa in self.snap.peer_authentications() {
            let strict = pa.spec.mode() == MtlsMode::Strict
                || pa
                    .spec
                    .port_level_mtls
                    .values()
                    .any(|m| m.mode == MtlsMode::Strict);
            if !strict {
                continue;
            }
            let (ns, name) = ns_name(&pa.metadata);
            let mesh_wide = ns == opts.root_namespace && pa.spec.selector.is_none();
            let others: Vec<&str> = outside
                .iter()
                .map(String::as_str)
                .filter(|o| mesh_wide || *o != ns)
                .collect();
            if others.is_empty() {
                continue;
            }
            let scope = if mesh_wide {
                "the whole mesh".to_string()
            } else if pa.spec.selector.is_some() {
                format!("the selected workloads of namespace {ns}")
            } else {
                format!("namespace {ns}")
            };
            out.push(finding(
                STRICT_CUTS_OFF_CLIENTS,
                Severity::Warning,
                &ObjectKey::new("PeerAuthentication", &ns, &name),
                format!(
                    "STRICT mTLS for {scope} refuses plaintext, and the pods of namespaces \
                     outside the mesh ({}) connect in plaintext: their calls to these workloads \
                     will be refused",
                    others.join(", ")
                ),
                "enroll those namespaces first (meshctl dataplane enroll <namespace>), or keep \
                 PERMISSIVE until every client is in the mesh"
                    .into(),
            ));
        }
    }
}

fn is_service_parent(p: &ParentReference) -> bool {
    p.kind.as_deref() == Some("Service")
        && matches!(p.group.as_deref(), None | Some("") | Some("core"))
}

fn scope_text(ap: &AuthorizationPolicy) -> String {
    match &ap.spec.selector {
        Some(sel) if !sel.match_labels.is_empty() => format!(
            "selector {}",
            sel.match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => "namespace-wide".into(),
    }
}

/// The HTTP-only attributes a policy uses.
pub fn l7_fields(spec: &AuthorizationPolicySpec) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |present: bool, name: &str| {
        if present && !out.iter().any(|x| x == name) {
            out.push(name.to_string());
        }
    };
    for rule in &spec.rules {
        for to in &rule.to {
            let op = &to.operation;
            add(!op.methods.is_empty(), "methods");
            add(!op.not_methods.is_empty(), "notMethods");
            add(!op.paths.is_empty(), "paths");
            add(!op.not_paths.is_empty(), "notPaths");
            add(!op.hosts.is_empty(), "hosts");
            add(!op.not_hosts.is_empty(), "notHosts");
        }
        for from in &rule.from {
            add(
                !from.source.request_principals.is_empty(),
                "requestPrincipals",
            );
            add(
                !from.source.not_request_principals.is_empty(),
                "notRequestPrincipals",
            );
        }
        for cond in &rule.when {
            if cond.key.starts_with("request.") {
                let name = if cond.key.starts_with("request.headers") {
                    "when request.headers"
                } else {
                    "when request.*"
                };
                add(true, name);
            }
        }
    }
    out
}
