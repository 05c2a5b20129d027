//! The L7 path of the benchmark: a waypoint deployed the way the netns harness runs one (a
//! Gateway of class `istio-waypoint`, its Service, a pod running the `waypoint` binary), and a
//! Service of the server bound to it with `istio.io/use-waypoint`. Traffic to that Service's VIP
//! goes client ztunnel → waypoint → server ztunnel.
//!
//! Every step that can fail says why, and the benchmark then reports the L7 path as
//! "waypoint not available: <why>" instead of measuring something else.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::harness::components;
use crate::harness::metrics::Metrics;
use crate::harness::process::tail_file;
use crate::harness::{Cluster, Pod, PodSpec, eventually, netns};

use super::fortio;
use super::procstat;

/// Name of the Gateway, its Service and its service account.
pub const NAME: &str = "waypoint";
/// The label a Gateway's proxy pods carry (such pods are never enrolled).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Name of the Service bound to the waypoint.
pub const BOUND_SERVICE: &str = "l7";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The last two VIPs of the cluster's plan, far from the ones `Cluster::add_service` hands out.
const WAYPOINT_VIP_INDEX: u8 = 250;
const BOUND_VIP_INDEX: u8 = 249;

/// A running waypoint with a Service bound to it.
#[derive(Debug, Clone)]
pub struct Waypoint {
    pub pod: Pod,
    pub pid: u32,
    /// VIP of the bound Service (port [`fortio::HTTP_PORT`]).
    pub service_vip: Ipv4Addr,
}

fn gateway_yaml(ns: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {NAME}
  namespace: {ns}
  labels:
    istio.io/waypoint-for: service
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
"
    )
}

fn waypoint_service_yaml(ns: &str, vip: Ipv4Addr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {NAME}
  namespace: {ns}
spec:
  type: ClusterIP
  clusterIP: {vip}
  clusterIPs: [\"{vip}\"]
  selector:
    gateway.networking.k8s.io/gateway-name: {NAME}
  ports:
  - name: mesh
    port: 15008
    targetPort: 15008
    protocol: TCP
"
    )
}

fn bound_service_yaml(ns: &str, vip: Ipv4Addr, app: &str) -> String {
    let port = fortio::HTTP_PORT;
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {BOUND_SERVICE}
  namespace: {ns}
  labels:
    istio.io/use-waypoint: {NAME}
spec:
  type: ClusterIP
  clusterIP: {vip}
  clusterIPs: [\"{vip}\"]
  selector:
    app: {app}
  ports:
  - name: http
    port: {port}
    targetPort: {port}
    protocol: TCP
    appProtocol: http
"
    )
}

/// The waypoint's command line.
fn args(c: &Cluster, ns: &str, token_file: &std::path::Path) -> Vec<String> {
    let root = c.work_dir().join("istiod/ca/root-cert.pem");
    [
        "--name",
        NAME,
        "--namespace",
        ns,
        "--service-account",
        NAME,
        "--trust-domain",
        c.trust_domain(),
        "--xds-address",
        &format!(
            "https://{}:{}",
            c.underlay_ip(),
            components::ISTIOD_XDS_TLS_PORT
        ),
        "--ca-root-file",
        &root.display().to_string(),
        "--token-file",
        &token_file.display().to_string(),
        "--log-format",
        "plain",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Requests through the waypoint, as its metrics count them.
fn waypoint_requests(pod: &Pod) -> Result<f64, String> {
    let resp = netns::http_get(&pod.netns, "http://127.0.0.1:15020/metrics", HTTP_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let m = Metrics::parse(&resp.text()).map_err(|e| e.to_string())?;
    Ok(m.sum("istio_requests_total", &[("reporter", "waypoint")]))
}

/// Deploys a waypoint in namespace `ns` on the client's node, binds a Service selecting the pods
/// labelled `app=<app>` to it, and checks that a request from `client` to the bound Service goes through it. `Err` says why
/// the L7 path is not available.
pub fn deploy(c: &Cluster, ns: &str, app: &str, client: &Pod) -> Result<Waypoint, String> {
    let bin = c.bin_dir().join("waypoint");
    if !bin.exists() {
        return Err(format!(
            "no waypoint binary in {} (crates/waypoint not built)",
            c.bin_dir().display()
        ));
    }
    let node = c.node(&client.node).map_err(|e| e.to_string())?.clone();
    let args = args(c, ns, &node.files.token_file);
    let unknown = components::unknown_flags(&bin, &args);
    if !unknown.is_empty() {
        return Err(format!(
            "the waypoint binary does not accept {}",
            unknown.join(", ")
        ));
    }
    let plan = c.plan();
    let svc_vip = plan.service_vip(BOUND_VIP_INDEX);
    let steps = || -> Result<Pod, crate::harness::HarnessError> {
        c.apply_yaml(&format!("gateway-{ns}-{NAME}"), &gateway_yaml(ns))?;
        c.apply_yaml(
            &format!("service-{ns}-{NAME}"),
            &waypoint_service_yaml(ns, plan.service_vip(WAYPOINT_VIP_INDEX)),
        )?;
        let pod = c.add_pod(
            PodSpec::new(NAME, ns)
                .on(&node)
                .service_account(NAME)
                .label(GATEWAY_NAME_LABEL, NAME)
                .port(15008),
        )?;
        c.apply_yaml(
            &format!("service-{ns}-{BOUND_SERVICE}"),
            &bound_service_yaml(ns, svc_vip, app),
        )?;
        Ok(pod)
    };
    let pod = steps().map_err(|e| format!("cannot create the waypoint's objects: {e}"))?;
    let mut argv = vec![bin.display().to_string()];
    argv.extend(args);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let app_handle = c
        .spawn(&pod, "waypoint", &refs)
        .map_err(|e| format!("cannot start the waypoint: {e}"))?;
    let ready = eventually("the waypoint to be ready", READY_TIMEOUT, || {
        // The process itself, not a /proc scan by name (which misses it before `ip netns
        // exec` has run the binary).
        if let Some(status) = c.app_exit_status(&app_handle) {
            return Ok(Err(format!(
                "the waypoint exited ({status}):\n{}",
                tail_file(&app_handle.log, 15)
            )));
        }
        match netns::http_get(
            &pod.netns,
            "http://127.0.0.1:15021/healthz/ready",
            HTTP_TIMEOUT,
        ) {
            Ok(r) if r.is_success() => Ok(Ok(())),
            Ok(r) => Err(format!("HTTP {}: {}", r.status, r.text().trim())),
            Err(e) => Err(e.to_string()),
        }
    });
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(exited)) => return Err(exited),
        Err(e) => {
            return Err(format!("{e}\n{}", tail_file(&app_handle.log, 15)));
        }
    }
    let before = waypoint_requests(&pod).unwrap_or(0.0);
    let url = format!("http://{svc_vip}:{}/", fortio::HTTP_PORT);
    let through = eventually("a request through the waypoint", READY_TIMEOUT, || {
        let (status, _) = c.http_get(client, &url).map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("GET {url} answered {status}"));
        }
        let now = waypoint_requests(&pod)?;
        if now > before {
            Ok(())
        } else {
            Err(format!(
                "GET {url} answered 200 but the waypoint counted no request (istio_requests_total{{reporter=\"waypoint\"}} = {now})"
            ))
        }
    });
    if let Err(e) = through {
        return Err(format!("{e}\n{}", tail_file(&app_handle.log, 15)));
    }
    let pid = procstat::find_in_netns(&pod.netns, "waypoint")
        .first()
        .copied()
        .ok_or_else(|| "the waypoint process is gone".to_string())?;
    Ok(Waypoint {
        pod,
        pid,
        service_vip: svc_vip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_bind_the_service_to_the_waypoint() {
        let gw: serde_json::Value = serde_saphyr::from_str(&gateway_yaml("ns1")).unwrap();
        assert_eq!(gw["spec"]["gatewayClassName"], "istio-waypoint");
        assert_eq!(gw["spec"]["listeners"][0]["protocol"], "HBONE");
        assert_eq!(gw["spec"]["listeners"][0]["port"], 15008);
        let vip = Ipv4Addr::new(10, 9, 200, 249);
        let svc: serde_json::Value =
            serde_saphyr::from_str(&bound_service_yaml("ns1", vip, "server")).unwrap();
        assert_eq!(svc["metadata"]["labels"]["istio.io/use-waypoint"], NAME);
        assert_eq!(svc["spec"]["clusterIP"], "10.9.200.249");
        assert_eq!(svc["spec"]["ports"][0]["appProtocol"], "http");
        let wsvc: serde_json::Value =
            serde_saphyr::from_str(&waypoint_service_yaml("ns1", vip)).unwrap();
        assert_eq!(
            wsvc["spec"]["selector"]["gateway.networking.k8s.io/gateway-name"],
            NAME
        );
    }
}
