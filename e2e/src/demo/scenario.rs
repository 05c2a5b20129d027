//! The demo's steps.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::{DemoError, DemoOptions, Narrator};
use crate::harness::capture::{Capture, Captured};
use crate::harness::components::ZTUNNEL_POD_PORTS;
use crate::harness::pcap::looks_like_tls;
use crate::harness::{
    AMBIENT, Cluster, DATAPLANE_MODE, HarnessError, PodSpec, cleanup, cleanup_stale, netns,
};

pub(super) const NS: &str = "demo";
const TCP_PORT: u16 = 9000;
pub(super) const HTTP_PORT: u16 = 8080;
const HBONE_PORT: u16 = 15008;
pub(super) const WAIT: Duration = Duration::from_secs(60);

pub(super) fn h<T>(step: &str, r: Result<T, HarnessError>) -> Result<T, DemoError> {
    r.map_err(|source| DemoError::Harness {
        step: step.to_string(),
        source,
    })
}

pub(super) fn expect(
    step: &str,
    cond: bool,
    reason: impl FnOnce() -> String,
) -> Result<(), DemoError> {
    if cond {
        Ok(())
    } else {
        Err(DemoError::Unexpected {
            step: step.to_string(),
            reason: reason(),
        })
    }
}

/// Runs the whole demo; on failure the components' log tails are printed to stderr.
pub fn run(opts: &DemoOptions) -> Result<(), DemoError> {
    let mut n = Narrator::new();
    n.step("Preparing the machine");
    n.doing("removing what earlier, interrupted runs left behind");
    let stale = cleanup_stale();
    n.saw(&format!("{} stale cluster(s) removed", stale.len()));

    let step_create = n.step("Creating a local cluster of two nodes");
    n.doing("network namespaces: an underlay router with a bridge, two nodes joined to it by veth pairs");
    n.doing("starting istiod on the underlay, and a cni-agent and a ztunnel on each node");
    let mut b = Cluster::builder().nodes(2).keep_work_dir(opts.keep);
    if let Some(d) = &opts.bin_dir {
        b = b.bin_dir(d);
    }
    if let Some(e) = &opts.echo_bin {
        b = b.echo_bin(e);
    }
    let cluster = h(&step_create, b.build())?;
    let result = steps(&mut n, &cluster, &step_create);
    if let Err(e) = &result {
        eprintln!("\nDEMO FAILED: {e}\n\n{}", cluster.diagnostics());
    }
    let id = cluster.id().clone();
    let step = n.step("Tearing down");
    n.doing("stopping every process and deleting the namespaces and directories of the cluster");
    drop(cluster);
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|ns| ns.starts_with(&id.netns_prefix()))
        .collect();
    expect(
        &step,
        left.is_empty() && !cleanup::run_dir(&id).exists(),
        || format!("left behind: {left:?}"),
    )?;
    n.ok("nothing left behind");
    result
}

fn steps(n: &mut Narrator, c: &Cluster, step: &str) -> Result<(), DemoError> {
    n.saw(&format!(
        "cluster {}: istiod at {} in netns {}",
        c.id(),
        c.underlay_ip(),
        c.underlay_netns()
    ));
    for node in c.nodes() {
        n.saw(&format!(
            "{}: netns {}, address {}, pod CIDR {}",
            node.name, node.netns, node.ip, node.pod_cidr
        ));
    }
    n.doing("waiting for istiod /ready, mesh-cni chained into each node's CNI config, ztunnel /healthz/ready");
    h(step, c.wait_ready())?;
    n.ok("the mesh is ready");

    let step = n.step("A client and a server in namespace `demo`, not enrolled");
    let [n1, n2] = [&c.nodes()[0], &c.nodes()[1]];
    h(&step, c.create_namespace(NS, &[]))?;
    let client = h(
        &step,
        c.add_pod(
            PodSpec::new("client", NS)
                .on(n1)
                .service_account("sleep")
                .label("app", "client"),
        ),
    )?;
    let server = h(
        &step,
        c.add_pod(
            PodSpec::new("server", NS)
                .on(n2)
                .service_account("echo")
                .label("app", "echo")
                .port(TCP_PORT)
                .port(HTTP_PORT),
        ),
    )?;
    h(
        &step,
        c.start_echo_server(&server, &[TCP_PORT], &[HTTP_PORT]),
    )?;
    let inodes = (
        h(&step, client.netns_inode())?,
        h(&step, server.netns_inode())?,
    );
    for (p, inode) in [(&client, inodes.0), (&server, inodes.1)] {
        n.saw(&format!(
            "pod {} on {}: IP {}, service account {}, netns {} (inode {inode}); CNI plugins called: {}",
            p.key(),
            p.node,
            p.ip,
            p.service_account,
            p.netns,
            c.pod_plugins(p).join(" -> ")
        ));
    }
    let base = (
        h(&step, c.netns_rules(&client))?,
        h(&step, c.netns_rules(&server))?,
    );

    let step = n.step("Plaintext traffic: the wire between the nodes carries the payload");
    let payload = format!("demo-secret-plain-{}", c.id());
    let cap = start_capture(n, c, &step, "plain")?;
    n.doing(&format!(
        "client sends {payload:?} to {}",
        server.addr(TCP_PORT)
    ));
    let reply = h(&step, c.echo_tcp(&client, server.addr(TCP_PORT), &payload))?;
    n.saw(&format!("echoed back: {reply:?}"));
    let seen = h(
        &step,
        cap.stop_when("the server's FIN", Duration::from_secs(10), |cap| {
            cap.saw_fin(|p| p.src == server.ip && p.sport == TCP_PORT)
        })
        .map_err(HarnessError::from),
    )?;
    n.saw(&format!(
        "capture on {}'s link:\n{}",
        n1.name,
        pod_summary(c, &seen)
    ));
    expect(&step, seen.contains(payload.as_bytes()), || {
        format!(
            "the capture did not see the plaintext payload:\n{}",
            seen.summary()
        )
    })?;
    n.ok("the payload is readable by anyone on the wire");

    let step = n.step("Enrolling namespace `demo`: istio.io/dataplane-mode=ambient");
    h(&step, c.label_namespace(NS, DATAPLANE_MODE, Some(AMBIENT)))?;
    n.doing("waiting for the cni-agent to enrol the running pods (redirect rules and ztunnel listeners inside their netns)");
    h(&step, c.wait_enrolled(&client, &base.0, WAIT))?;
    h(&step, c.wait_enrolled(&server, &base.1, WAIT))?;
    let ports = h(&step, c.listening_ports(&client))?;
    n.saw(&format!(
        "listening inside the client's netns now: {ports:?} (ztunnel: {ZTUNNEL_POD_PORTS:?})"
    ));
    let now = (
        h(&step, client.netns_inode())?,
        h(&step, server.netns_inode())?,
    );
    expect(&step, now == inodes, || {
        format!("pod netns changed: {inodes:?} -> {now:?}")
    })?;
    n.ok(&format!(
        "same network namespaces (inodes {} and {}): no pod was restarted",
        now.0, now.1
    ));

    let step = n.step("The same pods, now over HBONE mutual TLS");
    n.doing("client connects until the server's ztunnel counts a mutual-TLS connection (config reaches both ztunnels)");
    let evidence = h(
        &step,
        c.wait_mtls(&client, &server, TCP_PORT, "hello over the mesh", WAIT),
    )?;
    let cap = start_capture(n, c, &step, "mtls")?;
    let secret = format!("demo-secret-mtls-{}", c.id());
    n.doing(&format!("client sends {secret:?}"));
    let reply = h(&step, c.echo_tcp(&client, server.addr(TCP_PORT), &secret))?;
    n.saw(&format!("echoed back: {reply:?}"));
    let seen = h(&step, cap.stop().map_err(HarnessError::from))?;
    n.saw(&format!(
        "capture on {}'s link:\n{}",
        n1.name,
        pod_summary(c, &seen)
    ));
    check_only_tls(c, &step, &seen, &secret)?;
    n.ok(&format!(
        "pod-to-pod bytes on the wire are TLS to port {HBONE_PORT}; the payload is not visible"
    ));
    n.saw(&format!(
        "{} ztunnel metrics: istio_tcp_connections_opened_total{{reporter=\"destination\", connection_security_policy=\"mutual_tls\", source_principal=\"{}\", destination_principal=\"{}\"}} = {}",
        evidence.node, evidence.source_principal, evidence.destination_principal, evidence.opened
    ));
    for node in [n1, n2] {
        let dump = h(&step, c.ztunnel_config_dump(node))?;
        let ids = spiffe_ids(&dump);
        n.saw(&format!(
            "{} ztunnel config_dump identities: {}",
            node.name,
            ids.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }

    let step = n.step("Denying the client with an AuthorizationPolicy");
    let principal = format!("{}/ns/{NS}/sa/{}", c.trust_domain(), client.service_account);
    let policy = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-client\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: echo\n  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"{principal}\"]\n"
    );
    n.doing(&format!(
        "applying a DENY policy for principal {principal} on app=echo:\n{policy}"
    ));
    h(&step, c.apply_yaml("deny-client", &policy))?;
    let why = h(
        &step,
        c.wait_refused(&client, server.addr(TCP_PORT), "let me in", WAIT),
    )?;
    n.saw(&format!("the client now gets: {why}"));
    n.ok("the connection is refused and nothing is echoed");

    super::l7::steps(n, c, &client)
}

fn start_capture(n: &Narrator, c: &Cluster, step: &str, name: &str) -> Result<Capture, DemoError> {
    let n1 = &c.nodes()[0];
    n.doing(&format!(
        "capturing with tcpdump on {} ({}'s link, in the underlay netns {})",
        n1.underlay_veth,
        n1.name,
        c.underlay_netns()
    ));
    h(
        step,
        Capture::start(
            c.underlay_netns(),
            &n1.underlay_veth,
            &c.work_dir().join(format!("demo-{name}.pcap")),
            &c.work_dir().join(format!("tcpdump-{name}.log")),
            "tcp",
        )
        .map_err(HarnessError::from),
    )
}

/// Pod-to-pod flows only (the wire also carries xDS and probes).
fn pod_summary(c: &Cluster, seen: &Captured) -> String {
    let plan = c.plan();
    let flows = seen.flows_between(|ip| plan.is_pod_ip(ip));
    if flows.is_empty() {
        return "(no pod-to-pod TCP seen)".into();
    }
    flows
        .iter()
        .map(|(k, f)| {
            let kind = if f.payload.is_empty() {
                "no payload"
            } else if looks_like_tls(&f.payload) {
                "TLS"
            } else {
                "readable bytes"
            };
            format!(
                "{k}: {} packets, {} payload bytes ({kind})",
                f.packets,
                f.payload.len()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_only_tls(c: &Cluster, step: &str, seen: &Captured, secret: &str) -> Result<(), DemoError> {
    let plan = c.plan();
    let flows = seen.flows_between(|ip| plan.is_pod_ip(ip));
    expect(step, !seen.contains(secret.as_bytes()), || {
        format!("the payload is visible on the wire:\n{}", seen.summary())
    })?;
    let outside: Vec<String> = flows
        .iter()
        .filter(|(k, f)| !f.payload.is_empty() && k.dport != HBONE_PORT && k.sport != HBONE_PORT)
        .map(|(k, _)| k.to_string())
        .collect();
    expect(step, outside.is_empty(), || {
        format!("pod-to-pod bytes outside HBONE: {outside:?}")
    })?;
    let tls = flows
        .iter()
        .filter(|(k, f)| k.dport == HBONE_PORT && !f.payload.is_empty())
        .all(|(_, f)| looks_like_tls(&f.payload));
    let any = flows.keys().any(|k| k.dport == HBONE_PORT);
    expect(step, any && tls, || {
        format!(
            "expected TLS to port {HBONE_PORT}, saw:\n{}",
            seen.summary()
        )
    })
}

/// Every `spiffe://` string in a JSON document.
fn spiffe_ids(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(v, &mut out);
    out
}

fn walk(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) if s.starts_with("spiffe://") => {
            out.insert(s.clone());
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
        Value::Object(o) => o.values().for_each(|x| walk(x, out)),
        _ => {}
    }
}
