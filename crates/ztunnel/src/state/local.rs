//! Static local mode: workloads and services read from a YAML file instead of xDS, for tests
//! and for running ztunnel without a control plane.
//!
//! ```yaml
//! workloads:
//!   - uid: demo/client
//!     name: client
//!     namespace: demo
//!     serviceAccount: client
//!     node: node1
//!     ips: [10.1.0.2]
//!     protocol: HBONE          # or NONE
//!     services:
//!       demo/echo.demo.svc.cluster.local: [{servicePort: 80, targetPort: 8080}]
//! services:
//!   - name: echo
//!     namespace: demo
//!     hostname: echo.demo.svc.cluster.local
//!     vips: [10.96.0.10]
//!     ports: [{servicePort: 80, targetPort: 8080}]
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use identity::Identity;
use serde::Deserialize;

use super::{ProxyState, Service, StateError, Tunnel, Workload};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalConfig {
    #[serde(default)]
    pub workloads: Vec<LocalWorkload>,
    #[serde(default)]
    pub services: Vec<LocalService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalWorkload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub node: String,
    pub ips: Vec<IpAddr>,
    #[serde(default = "hbone")]
    pub protocol: String,
    #[serde(default)]
    pub services: BTreeMap<String, Vec<LocalPort>>,
}

fn hbone() -> String {
    "HBONE".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalPort {
    pub service_port: u16,
    #[serde(default)]
    pub target_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalService {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<LocalPort>,
}

fn ports(ps: &[LocalPort]) -> Vec<(u16, u16)> {
    ps.iter()
        .map(|p| {
            (
                p.service_port,
                if p.target_port == 0 {
                    p.service_port
                } else {
                    p.target_port
                },
            )
        })
        .collect()
}

impl LocalConfig {
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StateError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| StateError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills `state` with the file's workloads and services.
    pub fn apply(self, state: &mut ProxyState, trust_domain: &str) -> Result<(), StateError> {
        for w in self.workloads {
            let tunnel = match w.protocol.to_ascii_uppercase().as_str() {
                "HBONE" => Tunnel::Hbone,
                "NONE" => Tunnel::None,
                other => {
                    return Err(StateError::Invalid(format!(
                        "workload {}: unknown protocol {other:?}",
                        w.uid
                    )));
                }
            };
            let sa = w.service_account.unwrap_or_else(|| "default".into());
            state.upsert_workload(Workload {
                identity: Identity::new(trust_domain, w.namespace.clone(), sa),
                uid: w.uid,
                workload_name: w.name.clone(),
                name: w.name,
                namespace: w.namespace,
                ips: w.ips,
                node: w.node,
                tunnel,
                canonical_name: String::new(),
                canonical_revision: String::new(),
                cluster_id: String::new(),
                healthy: true,
                services: w
                    .services
                    .iter()
                    .map(|(k, p)| (k.clone(), ports(p)))
                    .collect(),
                authorization_policies: Vec::new(),
                waypoint: None,
            });
        }
        for s in self.services {
            state.upsert_service(Service {
                ports: ports(&s.ports),
                name: s.name,
                namespace: s.namespace,
                hostname: s.hostname,
                vips: s.vips,
                waypoint: None,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let cfg = LocalConfig::parse(
            "workloads:\n  - uid: demo/echo\n    name: echo\n    namespace: demo\n    ips: [10.1.0.5]\n    services:\n      demo/echo.demo.svc.cluster.local: [{servicePort: 80, targetPort: 8080}]\nservices:\n  - name: echo\n    namespace: demo\n    hostname: echo.demo.svc.cluster.local\n    vips: [10.96.0.10]\n    ports: [{servicePort: 80, targetPort: 8080}]\n",
        )
        .unwrap();
        let mut st = ProxyState::default();
        cfg.apply(&mut st, "cluster.local").unwrap();
        let up = st.resolve("10.96.0.10:80".parse().unwrap(), |_| 0).unwrap();
        assert_eq!(up.target.to_string(), "10.1.0.5:8080");
        assert_eq!(
            up.workload.identity.to_string(),
            "spiffe://cluster.local/ns/demo/sa/default"
        );
    }

    #[test]
    fn unknown_fields_and_protocols_are_errors() {
        let err = LocalConfig::parse("workloads: []\nbogus: 1\n").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let cfg = LocalConfig::parse(
            "workloads:\n  - {uid: a, name: a, namespace: n, ips: [10.0.0.1], protocol: QUIC}\n",
        )
        .unwrap();
        let err = cfg
            .apply(&mut ProxyState::default(), "cluster.local")
            .unwrap_err();
        assert!(err.to_string().contains("QUIC"), "{err}");
    }
}
