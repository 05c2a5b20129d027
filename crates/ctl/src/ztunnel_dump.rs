//! The shape of ztunnel's admin `/config_dump` (port 15000), read leniently: fields this version
//! does not know are kept in the raw document and ignored by the tables.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("the ztunnel config dump is not in the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
}

/// A parsed dump and the document it came from (printed as is for `-o json|yaml`).
#[derive(Clone, Debug)]
pub struct ZtunnelDump {
    pub raw: Value,
    pub parsed: ConfigDump,
}

impl ZtunnelDump {
    pub fn from_value(raw: Value) -> Result<Self, DumpError> {
        let parsed = serde_json::from_value(raw.clone())?;
        Ok(ZtunnelDump { raw, parsed })
    }

    /// The node the ztunnel runs on (`config.node_name`).
    pub fn node(&self) -> Option<&str> {
        self.raw
            .get("config")
            .and_then(|c| c.get("node_name"))
            .and_then(Value::as_str)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConfigDump {
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub certificates: Vec<Certificate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Workload {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub identity: String,
    /// `HBONE` or `NONE`.
    #[serde(default)]
    pub tunnel: String,
    #[serde(default)]
    pub workload_name: String,
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Service key (`namespace/hostname`) → (service port, target port) pairs.
    #[serde(default)]
    pub services: BTreeMap<String, Vec<(u16, u16)>>,
    #[serde(default)]
    pub waypoint: Option<Value>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub vips: Vec<String>,
    #[serde(default)]
    pub ports: Vec<(u16, u16)>,
    #[serde(default)]
    pub waypoint: Option<Value>,
}

impl Service {
    /// The key workloads use to name the services they back.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub dry_run: bool,
    /// Alternatives of rules of matches.
    #[serde(default)]
    pub groups: Vec<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub identity: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Certificate {
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub serial: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub not_before: Option<u64>,
    #[serde(default)]
    pub not_after: Option<u64>,
    /// Seconds left when the dump was taken (negative once expired).
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A waypoint reference as a short text: the waypoint's name when its hostname is
/// `<name>.<namespace>.svc.<domain>`, else the hostname, or `ip:port` for address references.
pub fn waypoint_label(w: Option<&Value>) -> String {
    let Some(w) = w else {
        return "None".into();
    };
    if let Some(s) = w.get("Service") {
        let ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
        let host = s.get("hostname").and_then(Value::as_str).unwrap_or("");
        let short = host
            .split_once('.')
            .filter(|(_, rest)| rest.starts_with(&format!("{ns}.svc")))
            .map(|(name, _)| name);
        return match short {
            Some(name) if !ns.is_empty() => format!("{ns}/{name}"),
            _ => host.to_string(),
        };
    }
    if let Some(a) = w.get("Address") {
        let ip = a.get("ip").and_then(Value::as_str).unwrap_or("?");
        let port = a.get("port").and_then(Value::as_u64).unwrap_or(15008);
        return format!("{ip}:{port}");
    }
    w.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_and_missing_fields_are_tolerated() {
        let dump = ZtunnelDump::from_value(json!({
            "config": {"node_name": "node1"},
            "workloads": [{"uid": "u", "name": "p", "namespace": "ns", "extra": 1,
                           "services": {"ns/s.ns.svc.cluster.local": [[80, 8080]]}}],
            "future_section": []
        }))
        .expect("parses");
        assert_eq!(dump.node(), Some("node1"));
        assert_eq!(dump.parsed.workloads[0].name, "p");
        assert!(dump.parsed.workloads[0].healthy);
        assert_eq!(
            dump.parsed.workloads[0].services["ns/s.ns.svc.cluster.local"],
            vec![(80, 8080)]
        );
        assert!(dump.parsed.certificates.is_empty());
    }

    #[test]
    fn waypoint_labels() {
        assert_eq!(waypoint_label(None), "None");
        let svc = json!({"Service": {"namespace": "demo",
            "hostname": "waypoint.demo.svc.cluster.local", "port": 15008}});
        assert_eq!(waypoint_label(Some(&svc)), "demo/waypoint");
        let other = json!({"Service": {"namespace": "demo", "hostname": "wp.example.com"}});
        assert_eq!(waypoint_label(Some(&other)), "wp.example.com");
        let addr = json!({"Address": {"ip": "10.0.0.1", "port": 15008}});
        assert_eq!(waypoint_label(Some(&addr)), "10.0.0.1:15008");
    }
}
