//! The cluster's underlay: a router netns with a bridge, and one netns per node joined to the
//! bridge by a veth pair, with routes between the nodes' pod CIDRs.

use std::net::Ipv4Addr;

use super::cmd;
use super::names::{self, AddressPlan, ClusterId, NODE_UPLINK, UNDERLAY_BRIDGE};
use super::netns::{self, NetnsError};

/// One node's place on the underlay.
#[derive(Debug, Clone)]
pub struct NodeNet {
    /// 1-based index.
    pub index: usize,
    /// Logical name (`node1`).
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
    pub pod_gateway: Ipv4Addr,
    /// The node's veth end inside the underlay netns (where captures run).
    pub underlay_veth: String,
}

/// The whole underlay.
#[derive(Debug, Clone)]
pub struct Topology {
    pub underlay_netns: String,
    pub underlay_ip: Ipv4Addr,
    pub nodes: Vec<NodeNet>,
}

/// Creates the underlay and `count` nodes. On error, whatever was created stays for the
/// caller's cleanup (which removes everything by the cluster's netns prefix).
pub fn create(id: &ClusterId, plan: AddressPlan, count: usize) -> Result<Topology, NetnsError> {
    let underlay = id.underlay_netns();
    netns::create(&underlay)?;
    netns::sysctl(&underlay, "net.ipv4.ip_forward", "1")?;
    let uip = plan.underlay_ip();
    cmd::ip(&[
        "-n",
        &underlay,
        "link",
        "add",
        UNDERLAY_BRIDGE,
        "type",
        "bridge",
    ])?;
    cmd::ip(&[
        "-n",
        &underlay,
        "addr",
        "add",
        &format!("{uip}/24"),
        "dev",
        UNDERLAY_BRIDGE,
    ])?;
    cmd::ip(&["-n", &underlay, "link", "set", UNDERLAY_BRIDGE, "up"])?;

    let nodes: Vec<NodeNet> = (1..=count)
        .map(|k| NodeNet {
            index: k,
            name: names::node_name(k),
            netns: id.node_netns(k),
            ip: plan.node_ip(k),
            pod_cidr: plan.pod_cidr(k),
            pod_gateway: plan.pod_gateway(k),
            underlay_veth: names::underlay_veth(k),
        })
        .collect();
    for n in &nodes {
        create_node(&underlay, uip, n)?;
    }
    // Pod CIDRs are reached through their node, from the other nodes and from the router.
    for n in &nodes {
        cmd::ip(&[
            "-n",
            &underlay,
            "route",
            "add",
            &n.pod_cidr,
            "via",
            &n.ip.to_string(),
        ])?;
        for other in nodes.iter().filter(|o| o.index != n.index) {
            cmd::ip(&[
                "-n",
                &n.netns,
                "route",
                "add",
                &other.pod_cidr,
                "via",
                &other.ip.to_string(),
                "dev",
                NODE_UPLINK,
            ])?;
        }
    }
    Ok(Topology {
        underlay_netns: underlay,
        underlay_ip: uip,
        nodes,
    })
}

fn create_node(underlay: &str, router: Ipv4Addr, n: &NodeNet) -> Result<(), NetnsError> {
    netns::create(&n.netns)?;
    netns::sysctl(&n.netns, "net.ipv4.ip_forward", "1")?;
    // Both ends are created directly in their namespaces: no name can clash with the host's.
    cmd::ip(&[
        "-n",
        underlay,
        "link",
        "add",
        &n.underlay_veth,
        "type",
        "veth",
        "peer",
        "name",
        NODE_UPLINK,
        "netns",
        &n.netns,
    ])?;
    cmd::ip(&[
        "-n",
        underlay,
        "link",
        "set",
        &n.underlay_veth,
        "master",
        UNDERLAY_BRIDGE,
        "up",
    ])?;
    cmd::ip(&[
        "-n",
        &n.netns,
        "addr",
        "add",
        &format!("{}/24", n.ip),
        "dev",
        NODE_UPLINK,
    ])?;
    cmd::ip(&["-n", &n.netns, "link", "set", NODE_UPLINK, "up"])?;
    cmd::ip(&[
        "-n",
        &n.netns,
        "route",
        "add",
        "default",
        "via",
        &router.to_string(),
    ])?;
    Ok(())
}
