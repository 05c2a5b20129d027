//! Waypoints in local mode, deployed the way Kubernetes' waypoint controller would: a Gateway of
//! class `istio-waypoint` (listener `mesh`/15008/`HBONE`, label `istio.io/waypoint-for`), a pod
//! labelled `gateway.networking.k8s.io/gateway-name: <name>` and `istio.io/dataplane-mode: none`
//! (attached through the node's CNI plugins like every pod, and never captured) with service
//! account `<name>`, a Service `<name>` selecting it (ports 15008 `mesh`, 15020, 15021), and the
//! `waypoint` binary running inside the pod's netns. The waypoint authenticates to istiod with
//! its node's token: in local mode the CA gives a node token the identities of the pods
//! scheduled on that node, and the waypoint pod is one of them.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use super::super::components::{self, WaypointLaunch};
use super::super::error::HarnessError;
use super::super::manifests;
use super::super::metrics::Metrics;
use super::super::netns;
use super::super::poll;
use super::super::prereq;
use super::super::process::{Proc, tail_file};
use super::super::{DATAPLANE_MODE, GATEWAY_NAME_LABEL};
use super::mesh::probe;
use super::{Cluster, Node, Pod, PodSpec, Service, ServiceSpec};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The binary the harness runs in a waypoint's pod.
pub const WAYPOINT_BINARY: &str = "waypoint";
/// The metric family the waypoint counts requests in.
pub const REQUESTS: &str = "istio_requests_total";
/// Values of `istio.io/waypoint-for`.
pub const WAYPOINT_FOR_VALUES: &[&str] = &["service", "workload", "all", "none"];

/// A waypoint to deploy.
#[derive(Debug, Clone)]
pub struct WaypointSpec {
    /// Name of the Gateway, of its Service and of its service account.
    pub name: String,
    pub namespace: String,
    /// Node of the waypoint's pod (`node1`, ...).
    pub node: String,
    /// `istio.io/waypoint-for`: `service`, `workload`, `all` or `none`.
    pub for_: String,
}

impl WaypointSpec {
    /// A waypoint for services, on `node1`.
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            node: "node1".into(),
            for_: "service".into(),
        }
    }

    pub fn on(mut self, node: &Node) -> Self {
        self.node = node.name.clone();
        self
    }

    pub fn node(mut self, name: &str) -> Self {
        self.node = name.into();
        self
    }

    pub fn for_(mut self, traffic: &str) -> Self {
        self.for_ = traffic.into();
        self
    }
}

/// A deployed waypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    pub name: String,
    pub namespace: String,
    pub for_: String,
    pub service_account: String,
    /// The waypoint's pod (its netns runs the `waypoint` binary).
    pub pod: Pod,
    /// The waypoint's Service, through which ztunnels find it.
    pub service: Service,
    /// The waypoint's log file, in the cluster's work dir.
    pub log: PathBuf,
}

impl Waypoint {
    /// `namespace/name`, also the name of its `mesh.waypoint.v1.Waypoint` xDS resource.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn hostname(&self) -> String {
        self.service.hostname()
    }
}

#[derive(Debug)]
pub(super) struct WaypointRecord {
    pub waypoint: Waypoint,
    pub proc: Option<Proc>,
}

fn pod_name(name: &str) -> String {
    format!("{name}-0")
}

impl Cluster {
    fn waypoint_launch(&self, wp: &Waypoint) -> Result<WaypointLaunch, HarnessError> {
        let node = self.node(&wp.pod.node)?;
        Ok(WaypointLaunch {
            name: wp.name.clone(),
            namespace: wp.namespace.clone(),
            service_account: wp.service_account.clone(),
            trust_domain: self.trust_domain.clone(),
            istiod_ip: self.underlay_ip,
            root_cert: self.istiod_files.root_cert(),
            token_file: node.files.token_file.clone(),
            log_level: self.log_level.clone(),
        })
    }

    /// Deploys a waypoint (Gateway, Service, pod) and starts the `waypoint` binary in its pod;
    /// returns once it answers ready on 15021 (it has synced with istiod and has its
    /// configuration). Fails with the waypoint's log and istiod's view of the waypoint when it
    /// does not get there within the cluster's ready timeout.
    pub fn add_waypoint(&self, spec: WaypointSpec) -> Result<Waypoint, HarnessError> {
        self.require_mesh()?;
        if !WAYPOINT_FOR_VALUES.contains(&spec.for_.as_str()) {
            return Err(HarnessError::Invalid(format!(
                "istio.io/waypoint-for {:?} is not one of {WAYPOINT_FOR_VALUES:?}",
                spec.for_
            )));
        }
        let bin = prereq::require_binary(&self.bin_dir, WAYPOINT_BINARY)?;
        let node = self.node(&spec.node)?.clone();
        let key = (spec.namespace.clone(), spec.name.clone());
        if self.state().waypoints.contains_key(&key) {
            return Err(HarnessError::Invalid(format!(
                "waypoint {}/{} exists already",
                spec.namespace, spec.name
            )));
        }
        // The command line is checked first, so that a flag mismatch is reported by name
        // before anything is created.
        let probe_launch = WaypointLaunch {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            service_account: spec.name.clone(),
            trust_domain: self.trust_domain.clone(),
            istiod_ip: self.underlay_ip,
            root_cert: self.istiod_files.root_cert(),
            token_file: node.files.token_file.clone(),
            log_level: self.log_level.clone(),
        };
        let args = components::waypoint_args(&probe_launch);
        let unknown = components::unknown_flags(&bin, &args);
        if !unknown.is_empty() {
            return Err(HarnessError::Component {
                component: "waypoint command line".into(),
                reason: format!(
                    "{} does not accept {} (the harness starts it as `waypoint {}`; see e2e/src/harness/components.rs)",
                    bin.display(),
                    unknown.join(", "),
                    args.join(" ")
                ),
                log_tail: "(not started)".into(),
            });
        }
        tracing::info!(waypoint = %format!("{}/{}", spec.namespace, spec.name), node = %node.name, for_ = %spec.for_, "deploying waypoint");
        self.ensure_namespace(&spec.namespace)?;
        self.config.write_object(
            &manifests::object_file("Gateway", &spec.namespace, &spec.name),
            &manifests::waypoint_gateway(&spec.name, &spec.namespace, &spec.for_),
        )?;
        let service = self.add_service(
            ServiceSpec::new(&spec.name, &spec.namespace)
                .select(GATEWAY_NAME_LABEL, &spec.name)
                .named_port(
                    "mesh",
                    components::WAYPOINT_HBONE_PORT,
                    components::WAYPOINT_HBONE_PORT,
                )
                .named_port(
                    "metrics",
                    components::WAYPOINT_METRICS_PORT,
                    components::WAYPOINT_METRICS_PORT,
                )
                .named_port(
                    "status-port",
                    components::WAYPOINT_READINESS_PORT,
                    components::WAYPOINT_READINESS_PORT,
                ),
        )?;
        let pod = self.add_pod(
            PodSpec::new(&pod_name(&spec.name), &spec.namespace)
                .on(&node)
                .service_account(&spec.name)
                .label(GATEWAY_NAME_LABEL, &spec.name)
                .label(DATAPLANE_MODE, "none")
                .port(components::WAYPOINT_HBONE_PORT)
                .port(components::WAYPOINT_METRICS_PORT)
                .port(components::WAYPOINT_READINESS_PORT),
        )?;
        let waypoint = Waypoint {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            for_: spec.for_.clone(),
            service_account: spec.name.clone(),
            pod,
            service,
            log: self
                .work
                .join("waypoints")
                .join(format!("{}-{}.log", spec.namespace, spec.name)),
        };
        self.state().waypoints.insert(
            key,
            WaypointRecord {
                waypoint: waypoint.clone(),
                proc: None,
            },
        );
        self.start_waypoint(&waypoint)?;
        self.wait_waypoint_ready(&waypoint, self.ready_timeout)?;
        Ok(waypoint)
    }

    /// Starts the `waypoint` binary of a deployed waypoint (after [`Cluster::stop_waypoint`]).
    pub fn start_waypoint(&self, wp: &Waypoint) -> Result<(), HarnessError> {
        let launch = self.waypoint_launch(wp)?;
        let mut st = self.state();
        let rec = st
            .waypoints
            .get_mut(&(wp.namespace.clone(), wp.name.clone()))
            .ok_or_else(|| HarnessError::Unknown {
                kind: "waypoint",
                name: wp.key(),
            })?;
        if rec.proc.as_mut().is_some_and(Proc::is_running) {
            return Err(HarnessError::Invalid(format!(
                "waypoint {} is running already",
                wp.key()
            )));
        }
        let proc = Proc::spawn(
            &format!("waypoint {}", wp.key()),
            &wp.pod.netns,
            &self.bin_dir.join(WAYPOINT_BINARY),
            &components::waypoint_args(&launch),
            &[
                ("POD_NAME".into(), wp.pod.name.clone()),
                ("POD_NAMESPACE".into(), wp.namespace.clone()),
            ],
            &wp.log,
        )?;
        tracing::info!(waypoint = %wp.key(), pid = proc.pid(), "waypoint started");
        rec.proc = Some(proc);
        Ok(())
    }

    /// Stops a waypoint's binary (SIGTERM: graceful drain; SIGKILL after 10 s); its Gateway,
    /// Service and pod stay, so traffic bound to it fails closed until it is started again.
    pub fn stop_waypoint(&self, wp: &Waypoint) -> Result<Option<ExitStatus>, HarnessError> {
        let proc = self
            .state()
            .waypoints
            .get_mut(&(wp.namespace.clone(), wp.name.clone()))
            .and_then(|r| r.proc.take());
        Ok(proc.and_then(|mut p| p.stop(Duration::from_secs(10))))
    }

    /// Stops, starts and waits for the waypoint to be ready again.
    pub fn restart_waypoint(&self, wp: &Waypoint) -> Result<(), HarnessError> {
        self.stop_waypoint(wp)?;
        self.start_waypoint(wp)?;
        self.wait_waypoint_ready(wp, self.ready_timeout)
    }

    /// Removes a waypoint as `kubectl delete gateway` would: the binary stopped, the pod, the
    /// Service and the Gateway deleted. Bindings naming it then fail closed.
    pub fn delete_waypoint(&self, wp: &Waypoint) -> Result<(), HarnessError> {
        self.stop_waypoint(wp)?;
        self.state()
            .waypoints
            .remove(&(wp.namespace.clone(), wp.name.clone()));
        self.delete_pod(&wp.pod)?;
        self.delete_service(&wp.service)?;
        self.config
            .remove(&manifests::object_file("Gateway", &wp.namespace, &wp.name))?;
        Ok(())
    }

    /// Every deployed waypoint.
    pub fn waypoints(&self) -> Vec<Waypoint> {
        self.state()
            .waypoints
            .values()
            .map(|r| r.waypoint.clone())
            .collect()
    }

    /// `Ok` when the waypoint answers 200 on `/healthz/ready` (inside its pod netns).
    pub fn waypoint_ready(&self, wp: &Waypoint) -> Result<(), String> {
        probe(&wp.pod.netns, &components::waypoint_ready_url())
    }

    fn waypoint_exit(&self, wp: &Waypoint) -> Option<String> {
        let mut st = self.state();
        let rec = st
            .waypoints
            .get_mut(&(wp.namespace.clone(), wp.name.clone()))?;
        match rec.proc.as_mut() {
            None => Some("it is not running (stopped)".into()),
            Some(p) => p.exit_status().map(|s| format!("it exited ({s})")),
        }
    }

    /// Waits until the waypoint is ready; fails at once if its process exits.
    pub fn wait_waypoint_ready(
        &self,
        wp: &Waypoint,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let res = poll::eventually(
            &format!("waypoint {} to be ready", wp.key()),
            timeout,
            || {
                if let Some(exited) = self.waypoint_exit(wp) {
                    return Ok(Err(exited));
                }
                self.waypoint_ready(wp).map(Ok)
            },
        );
        let reason = match res {
            Ok(Ok(())) => {
                tracing::info!(waypoint = %wp.key(), "waypoint ready");
                return Ok(());
            }
            Ok(Err(exited)) => exited,
            Err(e) => e.to_string(),
        };
        Err(self.waypoint_failure(wp, reason))
    }

    /// A waypoint failure with its log tail and istiod's status of the waypoint.
    fn waypoint_failure(&self, wp: &Waypoint, reason: String) -> HarnessError {
        HarnessError::Component {
            component: format!("waypoint {}", wp.key()),
            reason,
            log_tail: format!(
                "{}\n--- istiod's status of waypoint {} (/debug/waypoints) ---\n{}",
                tail_file(&wp.log, 40),
                wp.key(),
                self.describe_waypoint_status(&wp.namespace, &wp.name)
            ),
        }
    }

    /// Scrapes the waypoint's metrics (`GET 127.0.0.1:15020/metrics` inside its pod netns).
    pub fn waypoint_metrics(&self, wp: &Waypoint) -> Result<Metrics, HarnessError> {
        let resp = netns::http_get(
            &wp.pod.netns,
            &components::waypoint_metrics_url(),
            HTTP_TIMEOUT,
        )?;
        if !resp.is_success() {
            return Err(HarnessError::BadStatus {
                what: format!("waypoint {} metrics", wp.key()),
                status: resp.status,
                body: resp.text(),
            });
        }
        Ok(Metrics::parse(&resp.text())?)
    }

    /// `istio_requests_total{reporter="waypoint", <filter>}` of the waypoint.
    pub fn waypoint_requests(
        &self,
        wp: &Waypoint,
        filter: &[(&str, &str)],
    ) -> Result<f64, HarnessError> {
        let mut f = vec![("reporter", "waypoint")];
        f.extend_from_slice(filter);
        Ok(self.waypoint_metrics(wp)?.sum(REQUESTS, &f))
    }

    /// The waypoint's request series, for error messages.
    pub fn describe_waypoint_requests(&self, wp: &Waypoint) -> String {
        match self.waypoint_metrics(wp) {
            Ok(m) => m.describe(
                REQUESTS,
                &[
                    "reporter",
                    "source_principal",
                    "destination_service_name",
                    "destination_workload",
                    "response_code",
                    "response_flags",
                ],
            ),
            Err(e) => format!("  (cannot scrape waypoint {}: {e})", wp.key()),
        }
    }

    /// The waypoint's admin `config_dump` (`GET 127.0.0.1:15000/config_dump` in its pod netns):
    /// its flags, its L7 configuration (`waypoint`: bound services with their routes, policies)
    /// and the workloads it knows.
    pub fn waypoint_config_dump(&self, wp: &Waypoint) -> Result<Value, HarnessError> {
        let resp = netns::http_get(
            &wp.pod.netns,
            &components::waypoint_config_dump_url(),
            HTTP_TIMEOUT,
        )?;
        let what = format!("waypoint {} config_dump", wp.key());
        if !resp.is_success() {
            return Err(HarnessError::BadStatus {
                what,
                status: resp.status,
                body: resp.text(),
            });
        }
        serde_json::from_slice(&resp.body).map_err(|e| HarnessError::Json {
            what,
            reason: e.to_string(),
        })
    }

    /// istiod's status of every waypoint (`GET /debug/waypoints` on 15014): conditions
    /// (`Accepted`, `Programmed`), bound services and workloads, routes, policies, issues.
    pub fn istiod_waypoints(&self) -> Result<Value, HarnessError> {
        let resp = netns::http_get(
            &self.underlay_netns,
            &components::istiod_waypoints_url(self.underlay_ip),
            HTTP_TIMEOUT,
        )?;
        if !resp.is_success() {
            return Err(HarnessError::BadStatus {
                what: "istiod /debug/waypoints".into(),
                status: resp.status,
                body: resp.text(),
            });
        }
        serde_json::from_slice(&resp.body).map_err(|e| HarnessError::Json {
            what: "istiod /debug/waypoints".into(),
            reason: e.to_string(),
        })
    }

    /// istiod's status of waypoint `namespace/name` (also of one named by `istio.io/use-waypoint`
    /// without a Gateway); `None` when istiod does not list it.
    pub fn istiod_waypoint_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, HarnessError> {
        let all = self.istiod_waypoints()?;
        Ok(all.as_array().and_then(|list| {
            list.iter()
                .find(|w| w["namespace"] == namespace && w["name"] == name)
                .cloned()
        }))
    }

    fn describe_waypoint_status(&self, namespace: &str, name: &str) -> String {
        match self.istiod_waypoint_status(namespace, name) {
            Ok(Some(v)) => serde_json::to_string_pretty(&v).unwrap_or_else(|e| e.to_string()),
            Ok(None) => "(not listed)".into(),
            Err(e) => format!("(cannot read: {e})"),
        }
    }

    /// Polls the waypoint's L7 configuration (the `waypoint` part of its config_dump) until
    /// `check` accepts it; on timeout the error carries istiod's status of the waypoint (its
    /// issues say why a route or policy was not programmed).
    pub fn wait_waypoint_config(
        &self,
        wp: &Waypoint,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Value) -> Result<(), String>,
    ) -> Result<Value, HarnessError> {
        let res = poll::eventually(
            &format!("waypoint {} to have {what}", wp.key()),
            timeout,
            || {
                if let Some(exited) = self.waypoint_exit(wp) {
                    return Ok(Err(exited));
                }
                let dump = self.waypoint_config_dump(wp).map_err(|e| e.to_string())?;
                let config = dump.get("waypoint").cloned().unwrap_or(Value::Null);
                check(&config).map(|()| Ok(config))
            },
        );
        match res {
            Ok(Ok(config)) => Ok(config),
            Ok(Err(exited)) => Err(self.waypoint_failure(wp, exited)),
            Err(e) => Err(self.waypoint_failure(wp, e.to_string())),
        }
    }

    /// Waits until `svc` is bound to the waypoint and carries the rules of route `route`
    /// (`namespace/name` of an HTTPRoute or GRPCRoute).
    pub fn wait_waypoint_route(
        &self,
        wp: &Waypoint,
        svc: &Service,
        route: &str,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let prefix = format!("{route}.");
        self.wait_waypoint_config(
            wp,
            &format!("route {route} on service {}", svc.hostname()),
            timeout,
            |config| {
                let service = bound_service(config, svc)?;
                let names = route_names(service);
                if names.iter().any(|n| n.starts_with(&prefix)) {
                    Ok(())
                } else {
                    Err(format!("routes of {}: {names:?}", svc.hostname()))
                }
            },
        )?;
        Ok(())
    }

    /// Waits until `svc` is one of the services the waypoint receives traffic for.
    pub fn wait_waypoint_bound(
        &self,
        wp: &Waypoint,
        svc: &Service,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        self.wait_waypoint_config(
            wp,
            &format!("service {} bound", svc.hostname()),
            timeout,
            |config| bound_service(config, svc).map(|_| ()),
        )?;
        Ok(())
    }

    /// Waits until the waypoint enforces AuthorizationPolicy `policy` (`namespace/name`).
    pub fn wait_waypoint_policy(
        &self,
        wp: &Waypoint,
        policy: &str,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        self.wait_waypoint_config(wp, &format!("policy {policy}"), timeout, |config| {
            let names: Vec<&str> = config["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            if names.contains(&policy) {
                Ok(())
            } else {
                Err(format!("policies: {names:?}"))
            }
        })?;
        Ok(())
    }

    /// Paths of the waypoints' logs, labelled.
    pub fn waypoint_logs(&self) -> Vec<(String, PathBuf)> {
        self.state()
            .waypoints
            .values()
            .map(|r| {
                (
                    format!("waypoint {}", r.waypoint.key()),
                    r.waypoint.log.clone(),
                )
            })
            .collect()
    }
}

/// The bound service `svc` in a waypoint configuration.
fn bound_service<'a>(config: &'a Value, svc: &Service) -> Result<&'a Value, String> {
    let services = config["services"].as_array();
    services
        .into_iter()
        .flatten()
        .find(|s| s["name"] == svc.name.as_str() && s["namespace"] == svc.namespace.as_str())
        .ok_or_else(|| {
            let keys: Vec<&str> = services
                .into_iter()
                .flatten()
                .filter_map(|s| s["key"].as_str())
                .collect();
            format!(
                "{} is not bound to the waypoint (bound: {keys:?})",
                svc.hostname()
            )
        })
}

fn route_names(service: &Value) -> Vec<String> {
    service["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;

    use super::*;

    fn svc(name: &str) -> Service {
        Service {
            name: name.into(),
            namespace: "demo".into(),
            vip: Ipv4Addr::new(10, 3, 200, 1),
            ports: vec![(80, 8080)],
        }
    }

    #[test]
    fn finds_bound_services_and_their_routes() {
        let config = json!({
            "services": [
                { "key": "demo/echo.demo.svc.cluster.local", "name": "echo", "namespace": "demo",
                  "routes": [{ "name": "demo/split.0" }, { "name": "demo/split.1" }] },
            ],
            "policies": [],
        });
        let echo = bound_service(&config, &svc("echo")).unwrap();
        assert_eq!(route_names(echo), vec!["demo/split.0", "demo/split.1"]);
        let err = bound_service(&config, &svc("other")).unwrap_err();
        assert!(
            err.contains("other.demo.svc.cluster.local") && err.contains("demo/echo.demo"),
            "{err}"
        );
        assert!(bound_service(&Value::Null, &svc("echo")).is_err());
    }

    #[test]
    fn spec_defaults_to_a_service_waypoint_on_node1() {
        let s = WaypointSpec::new("waypoint", "demo");
        assert_eq!((s.node.as_str(), s.for_.as_str()), ("node1", "service"));
        let s = s.node("node2").for_("all");
        assert_eq!((s.node.as_str(), s.for_.as_str()), ("node2", "all"));
        assert_eq!(pod_name("waypoint"), "waypoint-0");
    }
}
