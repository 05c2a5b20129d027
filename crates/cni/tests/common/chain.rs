//! CNI configurations for the chained tests: Debian's `bridge` with `host-local`, then
//! `mesh-cni`, and the `loopback` network a runtime sets up beside.

use std::path::Path;

use cni::runtime::RuntimeConf;
use serde_json::{Value, json};

use super::{HostLink, cni_path, next_index, unique};

pub struct PodNetwork {
    pub list: Value,
    pub loopback: Value,
    /// First three octets of the pod subnet, e.g. `10.241.77.`.
    pub prefix: String,
    pub bridge: HostLink,
}

/// A pod network on a bridge of its own (removed when dropped), addresses kept in `dir`.
pub fn pod_network(dir: &Path, agent_socket: &Path) -> PodNetwork {
    let bridge = unique("mcb");
    let prefix = format!(
        "10.{}.{}.",
        240 + next_index() % 10,
        std::process::id() % 250
    );
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "meshtest",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("{prefix}0/24")}]],
                    "dataDir": dir.join("ipam"),
                },
            },
            {"type": "mesh-cni", "agentSocket": agent_socket, "agentTimeoutMs": 20000},
        ],
    });
    let loopback = json!({
        "cniVersion": "1.0.0",
        "name": "cni-loopback",
        "plugins": [{"type": "loopback"}],
    });
    PodNetwork {
        list,
        loopback,
        prefix,
        bridge: HostLink(bridge),
    }
}

/// What a kubelet passes for pod `namespace/name` in `netns`.
pub fn runtime_conf(container_id: &str, netns: &Path, namespace: &str, name: &str) -> RuntimeConf {
    let mut rt = RuntimeConf::for_pod(container_id, netns, namespace, name);
    rt.cni_path = cni_path();
    rt
}

/// The pod address in an ADD result.
pub fn result_ip(result: &Value) -> String {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    cidr.split('/').next().unwrap_or_default().to_string()
}
