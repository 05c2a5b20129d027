//! Names and addresses of a local cluster.
//!
//! Every cluster gets a random 6-hex-digit id. All its network namespaces are named
//! `am<id>-<role>` (at most 15 characters, like interface names) so parallel clusters never
//! collide and leftovers of a crashed run can be found by prefix:
//! `am<id>-u` (underlay router), `am<id>-n<k>` (node k), `am<id>-p<i>` (pod i).
//!
//! Addressing, with `c` derived from the id (namespaces are isolated, so two clusters with the
//! same `c` do not interfere; distinct values only make captures easier to read):
//! - underlay bridge (the router, where istiod listens): `172.18.c.1/24`
//! - node k (1-based): `172.18.c.(10+k)/24`, pod CIDR `10.c.k.0/24`, gateway `10.c.k.1`
//! - service VIPs: `10.c.200.i`

use std::net::Ipv4Addr;

/// Prefix of every network namespace the harness creates.
pub const NETNS_PREFIX: &str = "am";
/// Bridge inside the underlay netns.
pub const UNDERLAY_BRIDGE: &str = "br0";
/// Interface of a node netns that faces the underlay.
pub const NODE_UPLINK: &str = "eth0";
/// Most nodes a cluster can have (addresses and names stay short).
pub const MAX_NODES: usize = 9;

/// The random id of one cluster: 6 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(String);

impl ClusterId {
    pub fn random() -> Self {
        let v: u32 = rand::random::<u32>() & 0x00ff_ffff;
        Self(format!("{v:06x}"))
    }

    /// Accepts exactly 6 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 6
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `c` of the addressing plan, in 1..=250.
    pub fn octet(&self) -> u8 {
        let v = u32::from_str_radix(&self.0, 16).unwrap_or(0);
        (v % 250) as u8 + 1
    }

    /// `am<id>-` : the prefix of this cluster's netns names.
    pub fn netns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}-", self.0)
    }

    pub fn underlay_netns(&self) -> String {
        format!("{}u", self.netns_prefix())
    }

    /// Netns of node `k` (1-based).
    pub fn node_netns(&self, k: usize) -> String {
        format!("{}n{k}", self.netns_prefix())
    }

    /// Netns of the `i`-th pod created in the cluster.
    pub fn pod_netns(&self, i: u32) -> String {
        format!("{}p{i}", self.netns_prefix())
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The cluster id a harness netns name belongs to, if it is one of ours.
pub fn cluster_of_netns(name: &str) -> Option<ClusterId> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (id, role) = rest.split_once('-')?;
    if role.is_empty() {
        return None;
    }
    ClusterId::parse(id)
}

/// Logical node name (what ztunnel gets as `--node-name` and pods as `spec.nodeName`).
pub fn node_name(k: usize) -> String {
    format!("node{k}")
}

/// Interface in the underlay netns that leads to node `k`.
pub fn underlay_veth(k: usize) -> String {
    format!("veth-n{k}")
}

/// The addressing plan of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    pub c: u8,
}

impl AddressPlan {
    pub fn new(id: &ClusterId) -> Self {
        Self { c: id.octet() }
    }

    pub fn underlay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 18, self.c, 1)
    }

    /// Node `k` (1-based) on the underlay.
    pub fn node_ip(&self, k: usize) -> Ipv4Addr {
        Ipv4Addr::new(172, 18, self.c, 10 + k as u8)
    }

    /// Pod CIDR of node `k`, as `10.c.k.0/24`.
    pub fn pod_cidr(&self, k: usize) -> String {
        format!("10.{}.{k}.0/24", self.c)
    }

    /// Gateway of node `k`'s pods (the `cni0` bridge address).
    pub fn pod_gateway(&self, k: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.c, k as u8, 1)
    }

    /// Whether `ip` is in any pod CIDR of this cluster.
    pub fn is_pod_ip(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 10 && o[1] == self.c && (1..=MAX_NODES as u8).contains(&o[2])
    }

    /// The `i`-th (1-based) service VIP.
    pub fn service_vip(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.c, 200, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits_and_round_trip() {
        for _ in 0..100 {
            let id = ClusterId::random();
            for name in [id.underlay_netns(), id.node_netns(9), id.pod_netns(99_999)] {
                assert!(name.len() <= 15, "{name} is longer than 15");
                assert_eq!(cluster_of_netns(&name), Some(id.clone()));
            }
            assert!((1..=250).contains(&id.octet()));
        }
        assert!(underlay_veth(9).len() <= 15);
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for n in [
            "amx",
            "am12345-u",
            "am1234567-u",
            "amABCDEF-u",
            "am123456-",
            "cni-1234",
            "",
        ] {
            assert_eq!(cluster_of_netns(n), None, "{n}");
        }
    }

    #[test]
    fn addresses_follow_the_plan() {
        let plan = AddressPlan { c: 7 };
        assert_eq!(plan.underlay_ip().to_string(), "172.18.7.1");
        assert_eq!(plan.node_ip(2).to_string(), "172.18.7.12");
        assert_eq!(plan.pod_cidr(2), "10.7.2.0/24");
        assert_eq!(plan.pod_gateway(1).to_string(), "10.7.1.1");
        assert!(plan.is_pod_ip("10.7.1.5".parse().unwrap()));
        assert!(!plan.is_pod_ip("10.7.200.1".parse().unwrap()));
        assert!(!plan.is_pod_ip("172.18.7.11".parse().unwrap()));
    }
}
