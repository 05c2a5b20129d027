//! The ambient model of pods and services.

mod common;

use common::{model, namespace, pod};
use mesh_proto::proto::workload::{
    IpFamilies, NetworkMode, Port, TunnelProtocol, WorkloadStatus, WorkloadType,
};

fn tunnel(m: &istiod::model::Model, uid: &str) -> TunnelProtocol {
    let w = m
        .workload(uid)
        .unwrap_or_else(|| panic!("no workload {uid}"));
    TunnelProtocol::try_from(w.tunnel_protocol).expect("known tunnel protocol")
}

#[test]
fn enrolment_follows_namespace_and_pod_labels() {
    let m = model(&format!(
        "{}{}{}{}{}{}",
        namespace("mesh", true),
        namespace("plain", false),
        pod("mesh", "a", "{app: a}", "n1", "10.0.0.1"),
        pod(
            "mesh",
            "opt-out",
            "{istio.io/dataplane-mode: none}",
            "n1",
            "10.0.0.2"
        ),
        pod("plain", "b", "{}", "n1", "10.0.0.3"),
        pod(
            "plain",
            "opt-in",
            "{istio.io/dataplane-mode: ambient}",
            "n2",
            "10.0.0.4"
        ),
    ));
    assert_eq!(tunnel(&m, "mesh/a"), TunnelProtocol::Hbone);
    assert_eq!(tunnel(&m, "mesh/opt-out"), TunnelProtocol::None);
    assert_eq!(tunnel(&m, "plain/b"), TunnelProtocol::None);
    assert_eq!(tunnel(&m, "plain/opt-in"), TunnelProtocol::Hbone);
    // Every pod with an IP is a workload, enrolled or not.
    assert_eq!(m.workloads.len(), 4);
}

#[test]
fn workload_fields_come_from_the_pod() {
    let m = model(&format!(
        "{}{}",
        namespace("shop", true),
        pod(
            "shop",
            "cart-0",
            "{app.kubernetes.io/name: cart, version: v2}",
            "node-a",
            "10.1.0.7"
        ),
    ));
    let w = m.workload("shop/cart-0").expect("workload");
    assert_eq!(w.addresses, vec![vec![10, 1, 0, 7]]);
    assert_eq!(w.name, "cart-0");
    assert_eq!(w.namespace, "shop");
    assert_eq!(w.node, "node-a");
    assert_eq!(w.service_account, "cart-0-sa");
    assert_eq!(w.trust_domain, "cluster.local");
    assert_eq!(w.canonical_name, "cart");
    assert_eq!(w.canonical_revision, "v2");
    assert_eq!(w.workload_name, "cart-0");
    assert_eq!(w.workload_type, WorkloadType::Pod as i32);
    assert_eq!(w.status, WorkloadStatus::Healthy as i32);
    assert_eq!(w.network_mode, NetworkMode::Standard as i32);
}

#[test]
fn defaults_unready_pods_and_pods_without_ip() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: ns1, uid: 5f0c-uid}
spec: {containers: [{name: c, image: i}]}
status:
  podIPs: [{ip: "fd00::5"}]
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: ns1}
spec: {containers: [{name: c, image: i}]}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: ns1}
spec: {containers: [{name: c, image: i}]}
status: {phase: Succeeded, podIP: 10.0.0.9}
"#;
    let m = model(yaml);
    assert_eq!(
        m.workloads.len(),
        1,
        "only the pod with an IP that still runs"
    );
    let w = m
        .workload("5f0c-uid")
        .expect("resource name is metadata.uid when set");
    assert_eq!(w.service_account, "default");
    assert_eq!(w.canonical_name, "bare");
    assert_eq!(w.status, WorkloadStatus::Unhealthy as i32);
    assert_eq!(w.addresses[0].len(), 16);
    assert_eq!(tunnel(&m, "5f0c-uid"), TunnelProtocol::None);
}

#[test]
fn host_network_pods_are_not_enrolled() {
    let yaml = format!(
        "{}{}",
        namespace("mesh", true),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: h, namespace: mesh}\n\
         spec: {hostNetwork: true, containers: [{name: c, image: i}]}\nstatus: {podIP: 192.168.1.2}\n"
    );
    let m = model(&yaml);
    assert_eq!(tunnel(&m, "mesh/h"), TunnelProtocol::None);
    let w = m.workload("mesh/h").expect("workload");
    assert_eq!(w.network_mode, NetworkMode::HostNetwork as i32);
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: grpc, port: 9000, targetPort: 9090}
  - {name: plain, port: 7000}
  - {name: missing, port: 81, targetPort: nope}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: shop}
spec:
  clusterIPs: [10.96.0.11, "fd00::11"]
  selector: {app: web}
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: no-selector, namespace: shop}
spec: {clusterIP: 10.96.0.12, ports: [{port: 80}]}
---
"#;

#[test]
fn services_have_vips_ports_and_hostnames() {
    let m = model(&format!("{}{SERVICES}", namespace("shop", true)));
    let names: Vec<String> = m
        .services
        .iter()
        .map(istiod::model::service_resource_name)
        .collect();
    assert_eq!(
        names,
        [
            "shop/dual.shop.svc.cluster.local",
            "shop/no-selector.shop.svc.cluster.local",
            "shop/web.shop.svc.cluster.local",
        ],
        "headless services have no VIP and are not served"
    );
    let web = m.service("shop/web.shop.svc.cluster.local").expect("web");
    assert_eq!(web.name, "web");
    assert_eq!(web.namespace, "shop");
    assert_eq!(web.hostname, "web.shop.svc.cluster.local");
    assert_eq!(web.addresses.len(), 1);
    assert_eq!(web.addresses[0].address, vec![10, 96, 0, 10]);
    assert_eq!(web.ip_families, IpFamilies::Ipv4Only as i32);
    let ports: Vec<(u32, u32)> = web
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    // Named target ports are only known per workload (0 here); UDP ports are not served.
    assert_eq!(ports, [(80, 0), (9000, 9090), (7000, 7000), (81, 0)]);
    let dual = m.service("shop/dual.shop.svc.cluster.local").expect("dual");
    assert_eq!(dual.addresses.len(), 2);
    assert_eq!(dual.addresses[1].address.len(), 16);
    assert_eq!(dual.ip_families, IpFamilies::Dual as i32);
}

#[test]
fn endpoints_are_pods_matched_by_selector_with_resolved_target_ports() {
    let m = model(&format!(
        "{}{}{}{}{}{SERVICES}",
        namespace("shop", true),
        namespace("other", true),
        pod("shop", "web-1", "{app: web}", "n1", "10.0.0.1"),
        pod("shop", "db-1", "{app: db}", "n1", "10.0.0.2"),
        pod("other", "web-x", "{app: web}", "n1", "10.0.0.3"),
    ));
    let endpoints: Vec<&str> = m
        .endpoints("shop/web.shop.svc.cluster.local")
        .iter()
        .map(|w| w.uid.as_str())
        .collect();
    assert_eq!(
        endpoints,
        ["shop/web-1"],
        "same namespace and matching labels only"
    );
    assert!(
        m.endpoints("shop/no-selector.shop.svc.cluster.local")
            .is_empty()
    );

    let w = m.workload("shop/web-1").expect("workload");
    let mut keys: Vec<&String> = w.services.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "shop/dual.shop.svc.cluster.local",
            "shop/web.shop.svc.cluster.local"
        ]
    );
    let ports = &w.services["shop/web.shop.svc.cluster.local"].ports;
    assert_eq!(
        ports,
        &vec![
            Port {
                service_port: 80,
                target_port: 8080
            },
            Port {
                service_port: 9000,
                target_port: 9090
            },
            Port {
                service_port: 7000,
                target_port: 7000
            },
        ],
        "named targetPort resolved against container ports; unknown names dropped"
    );
}
