//! L7 end-to-end tests of the ambient mesh on the local network-namespace cluster, through real
//! ztunnels and a real waypoint deployed as a pod of the cluster: a bound service's traffic goes
//! through the waypoint; an HTTPRoute splits traffic by weight; an AuthorizationPolicy on the
//! waypoint denies one path; retries hide a flaky backend; traffic that bypasses the waypoint is
//! refused by the destination ztunnel; a binding to a waypoint that does not exist fails closed.
//! Needs root; the mesh binaries, the waypoint included, must be built
//! (`cargo build --workspace --bins`).

mod common;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use e2e::harness::cluster::OPENED;
use e2e::harness::{
    AMBIENT, Cluster, DATAPLANE_MODE, HarnessError, Pod, PodSpec, Service, ServiceSpec,
    UseWaypointOn, Waypoint, WaypointSpec, eventually,
};

use common::*;

const NAME: &str = "waypoint";
/// Port of the HTTP Services (named `http`, so the waypoint parses HTTP).
const SVC_PORT: u16 = 80;

fn enrolled_namespace(c: &Cluster, ns: &str) -> anyhow::Result<()> {
    Ok(c.create_namespace(ns, &[(DATAPLANE_MODE, AMBIENT)])?)
}

fn client(c: &Cluster, ns: &str, node: usize) -> anyhow::Result<Pod> {
    Ok(c.add_pod(
        PodSpec::new("client", ns)
            .on(&c.nodes()[node])
            .service_account("client")
            .label("app", "client"),
    )?)
}

/// An echo server pod (TCP and HTTP) labelled `app: <app>` and `version: <version>`.
fn backend(
    c: &Cluster,
    name: &str,
    ns: &str,
    node: usize,
    app: &str,
    version: &str,
) -> anyhow::Result<Pod> {
    let p = c.add_pod(
        PodSpec::new(name, ns)
            .on(&c.nodes()[node])
            .service_account(app)
            .label("app", app)
            .label("version", version)
            .port(TCP_PORT)
            .port(HTTP_PORT),
    )?;
    c.start_echo_server(&p, &[TCP_PORT], &[HTTP_PORT])?;
    Ok(p)
}

/// A Service with an `http` port 80 (and a TCP echo port 9000) selecting `key=value`.
fn http_service(
    c: &Cluster,
    name: &str,
    ns: &str,
    selector: &[(&str, &str)],
) -> anyhow::Result<Service> {
    let mut spec = ServiceSpec::new(name, ns)
        .named_port("http", SVC_PORT, HTTP_PORT)
        .port(TCP_PORT, TCP_PORT);
    for (k, v) in selector {
        spec = spec.select(k, v);
    }
    Ok(c.add_service(spec)?)
}

fn url(svc: &Service, path: &str) -> String {
    format!("http://{}:{SVC_PORT}{path}", svc.vip)
}

/// Polls until `GET url` from `from` answers 200 (configuration converging).
fn eventually_http_ok(c: &Cluster, from: &Pod, url: &str) -> anyhow::Result<String> {
    Ok(eventually(
        &format!("GET {url} from {} to answer 200", from.key()),
        PROPAGATION,
        || match c.http_get(from, url) {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("HTTP {status}: {body}")),
            Err(e) => Err(e.to_string()),
        },
    )?)
}

/// Polls until a `GET url` from `from` answers 200 and the waypoint counts one more request
/// answered 200: the client's ztunnel sends the service's traffic to the waypoint.
fn eventually_through_waypoint(
    c: &Cluster,
    from: &Pod,
    wp: &Waypoint,
    url: &str,
) -> anyhow::Result<String> {
    let ok = [("response_code", "200")];
    let res = eventually(
        &format!(
            "GET {url} from {} to go through waypoint {}",
            from.key(),
            wp.key()
        ),
        PROPAGATION,
        || {
            let before = c.waypoint_requests(wp, &ok).map_err(|e| e.to_string())?;
            let body = match c.http_get(from, url) {
                Ok((200, body)) => body,
                Ok((status, body)) => return Err(format!("HTTP {status}: {body}")),
                Err(e) => return Err(e.to_string()),
            };
            eventually(
                "the waypoint's counter to move",
                Duration::from_secs(5),
                || match c.waypoint_requests(wp, &ok) {
                    Ok(now) if now > before => Ok(()),
                    Ok(now) => Err(format!("still {now}")),
                    Err(e) => Err(e.to_string()),
                },
            )
            .map_err(|e| format!("answered 200 but not through the waypoint ({e})"))?;
            Ok(body)
        },
    );
    res.with_context(|| {
        format!(
            "waypoint {} request series:\n{}",
            wp.key(),
            c.describe_waypoint_requests(wp)
        )
    })
}

/// An enrolled namespace with a client on node1 and a waypoint on node2.
fn setup(c: &Cluster, ns: &str) -> anyhow::Result<(Pod, Waypoint)> {
    enrolled_namespace(c, ns)?;
    let cl = client(c, ns, 0)?;
    let wp = c
        .add_waypoint(WaypointSpec::new(NAME, ns).node("node2"))
        .context("deploying the waypoint")?;
    Ok((cl, wp))
}

#[test]
fn traffic_to_a_bound_service_goes_through_the_waypoint() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l7-through";
        let (cl, wp) = setup(c, ns)?;
        let srv = backend(c, "echo", ns, 0, "echo", "v1")?;
        let svc = http_service(c, "echo", ns, &[("app", "echo")])?;
        // Not bound yet: L4 only, the waypoint sees nothing.
        eventually_http_ok(c, &cl, &url(&svc, "/direct"))?;
        let seen = c.waypoint_requests(&wp, &[])?;
        ensure!(
            seen == 0.0,
            "the waypoint counted {seen} requests before any service was bound to it"
        );

        c.use_waypoint(UseWaypointOn::Service(&svc), Some(NAME))?;
        c.wait_waypoint_bound(&wp, &svc, PROPAGATION)?;
        let body = eventually_through_waypoint(c, &cl, &wp, &url(&svc, "/through"))?;
        ensure!(
            body.contains("\"pod\": \"echo\"") && body.contains("\"path\": \"/through\""),
            "answered by someone else: {body}"
        );
        // The waypoint knows who called, and reports it like Istio's waypoints do.
        let client_principal = c.principal(ns, "client");
        let by_client = c.waypoint_requests(
            &wp,
            &[
                ("source_principal", client_principal.as_str()),
                ("response_code", "200"),
                ("connection_security_policy", "mutual_tls"),
            ],
        )?;
        ensure!(
            by_client >= 1.0,
            "no istio_requests_total{{reporter=\"waypoint\", source_principal={client_principal:?}, response_code=\"200\"}}:\n{}",
            c.describe_waypoint_requests(&wp)
        );
        // The destination ztunnel got the request from the waypoint over mutual TLS.
        let wp_principal = c.principal(ns, &wp.service_account);
        let node = c.node(&srv.node)?;
        let filter = [
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", wp_principal.as_str()),
        ];
        let from_wp = c.ztunnel_metrics(node)?.sum(OPENED, &filter);
        ensure!(
            from_wp >= 1.0,
            "{} ztunnel counted no mutual-TLS connection from the waypoint ({wp_principal}):\n{}",
            node.name,
            c.describe_connections(node)
        );
        Ok(())
    })
}

#[test]
fn http_route_splits_traffic_90_10_between_two_versions() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l7-split";
        let (cl, wp) = setup(c, ns)?;
        backend(c, "echo-v1", ns, 0, "echo", "v1")?;
        backend(c, "echo-v2", ns, 1, "echo", "v2")?;
        let parent = http_service(c, "echo", ns, &[("app", "echo")])?;
        http_service(c, "echo-v1", ns, &[("app", "echo"), ("version", "v1")])?;
        http_service(c, "echo-v2", ns, &[("app", "echo"), ("version", "v2")])?;
        c.use_waypoint(UseWaypointOn::Service(&parent), Some(NAME))?;
        c.apply_yaml("route-echo-split", &split_route(ns, 90, 10))?;
        c.wait_waypoint_route(&wp, &parent, &format!("{ns}/echo-split"), PROPAGATION)?;
        eventually_through_waypoint(c, &cl, &wp, &url(&parent, "/warm-up"))?;

        let before = c.waypoint_requests(&wp, &[("response_code", "200")])?;
        let sum = c.http_repeat(&cl, &url(&parent, "/split"), 1000)?;
        tracing::info!(?sum, "1000 requests through the 90/10 split");
        ensure!(
            sum.errors.is_empty() && sum.statuses.get(&200) == Some(&1000),
            "not every request was answered 200: {sum:?}"
        );
        let v1 = sum.pods.get("echo-v1").copied().unwrap_or(0);
        let v2 = sum.pods.get("echo-v2").copied().unwrap_or(0);
        ensure!(
            v1 + v2 == 1000,
            "answers from pods other than echo-v1 and echo-v2: {sum:?}"
        );
        ensure!(
            (850..=950).contains(&v1),
            "echo-v1 answered {v1} of 1000 requests (echo-v2 {v2}); the route asks for 90%"
        );
        // A request is counted once its response is complete, which may be just after the
        // client has read it.
        let counted = eventually(
            "the waypoint to count the 1000 requests",
            PROPAGATION,
            || {
                let after = c
                    .waypoint_requests(&wp, &[("response_code", "200")])
                    .map_err(|e| e.to_string())?;
                if after - before >= 1000.0 {
                    Ok(())
                } else {
                    Err(format!("counted {}", after - before))
                }
            },
        );
        if let Err(e) = counted {
            bail!("{e}\n{}", c.describe_waypoint_requests(&wp));
        }
        Ok(())
    })
}

/// An HTTPRoute attached to Service `echo` sending `v1`% to `echo-v1` and `v2`% to `echo-v2`.
fn split_route(ns: &str, v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo-split
  namespace: {ns}
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: {SVC_PORT}
  rules:
  - backendRefs:
    - name: echo-v1
      port: {SVC_PORT}
      weight: {v1}
    - name: echo-v2
      port: {SVC_PORT}
      weight: {v2}
"
    )
}

#[test]
fn authorization_policy_on_the_waypoint_denies_one_path() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l7-authz";
        let (cl, wp) = setup(c, ns)?;
        let srv = backend(c, "echo", ns, 1, "echo", "v1")?;
        let svc = http_service(c, "echo", ns, &[("app", "echo")])?;
        c.use_waypoint(UseWaypointOn::Service(&svc), Some(NAME))?;
        eventually_through_waypoint(c, &cl, &wp, &url(&svc, "/admin"))
            .context("/admin is allowed before the policy")?;

        c.apply_yaml("deny-admin", &deny_admin_policy(ns))?;
        c.wait_waypoint_policy(&wp, &format!("{ns}/deny-admin"), PROPAGATION)?;
        let served = c.echo_stats(&srv, HTTP_PORT)?.requests;
        let denied_before = c.waypoint_requests(&wp, &[("response_code", "403")])?;
        let (status, body) = c.http_get(&cl, &url(&svc, "/admin"))?;
        ensure!(
            status == 403,
            "GET /admin answered {status} with the DENY policy in place: {body}"
        );
        ensure!(
            body.contains("RBAC: access denied") && !body.contains("\"pod\""),
            "the 403 does not come from the waypoint: {body}"
        );
        let (status, body) = c.http_get(&cl, &url(&svc, "/"))?;
        ensure!(status == 200, "GET / answered {status}: {body}");
        // The policy names the exact path: a longer one is not denied.
        let (status, body) = c.http_get(&cl, &url(&svc, "/admin/help"))?;
        ensure!(status == 200, "GET /admin/help answered {status}: {body}");
        let now = c.echo_stats(&srv, HTTP_PORT)?.requests;
        ensure!(
            now == served + 2,
            "the backend served {} requests for GET /admin (denied), / and /admin/help",
            now - served
        );
        let denied = c.waypoint_requests(&wp, &[("response_code", "403")])? - denied_before;
        ensure!(
            denied == 1.0,
            "the waypoint counted {denied} requests answered 403:\n{}",
            c.describe_waypoint_requests(&wp)
        );
        Ok(())
    })
}

fn deny_admin_policy(ns: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: {ns}
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: {NAME}
  action: DENY
  rules:
  - to:
    - operation:
        methods: [\"GET\"]
        paths: [\"/admin\"]
"
    )
}

#[test]
fn retries_hide_a_flaky_backend() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l7-retry";
        let (cl, wp) = setup(c, ns)?;
        let flaky = c.add_pod(
            PodSpec::new("flaky", ns)
                .on(&c.nodes()[1])
                .service_account("flaky")
                .label("app", "flaky")
                .port(HTTP_PORT),
        )?;
        c.start_flaky_echo_server(&flaky, &[HTTP_PORT], 2)?;
        let svc = c.add_service(
            ServiceSpec::new("flaky", ns)
                .select("app", "flaky")
                .named_port("http", SVC_PORT, HTTP_PORT),
        )?;
        c.use_waypoint(UseWaypointOn::Service(&svc), Some(NAME))?;
        c.wait_waypoint_bound(&wp, &svc, PROPAGATION)?;
        // Without a retry policy, half of the requests fail: the backend is really flaky.
        let sum = eventually(
            "the flaky service to be reached through the waypoint",
            PROPAGATION,
            || {
                let sum = c
                    .http_repeat(&cl, &url(&svc, "/no-retry"), 20)
                    .map_err(|e| e.to_string())?;
                if sum.errors.is_empty() && sum.requests == 20 && sum.statuses.contains_key(&200) {
                    Ok(sum)
                } else {
                    Err(format!("{sum:?}"))
                }
            },
        )?;
        let failed = sum.statuses.get(&503).copied().unwrap_or(0);
        ensure!(
            failed >= 5,
            "without retries only {failed} of 20 requests failed: {sum:?}"
        );

        c.apply_yaml("route-flaky-retry", &retry_route(ns))?;
        c.wait_waypoint_config(&wp, "the retry policy", PROPAGATION, |config| {
            let has_retry = config["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["name"] == "flaky")
                .flat_map(|s| s["routes"].as_array().into_iter().flatten())
                .any(|r| {
                    r["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(&format!("{ns}/flaky-retry.")))
                        && !r["retry"].is_null()
                });
            if has_retry {
                Ok(())
            } else {
                Err(format!("services: {}", config["services"]))
            }
        })?;
        let before = c.echo_stats(&flaky, HTTP_PORT)?;
        let sum = c.http_repeat(&cl, &url(&svc, "/with-retry"), 100)?;
        let after = c.echo_stats(&flaky, HTTP_PORT)?;
        let (served, failed) = (
            after.requests - before.requests,
            after.failed - before.failed,
        );
        tracing::info!(?sum, served, failed, "100 requests with retries");
        ensure!(
            sum.errors.is_empty() && sum.statuses.get(&200) == Some(&100),
            "with retries the client still saw failures: {sum:?} (the backend served {served}, failed {failed})"
        );
        ensure!(
            failed >= 50 && served == 100 + failed,
            "the backend failed {failed} of the {served} attempts it served; retries hid nothing"
        );
        Ok(())
    })
}

fn retry_route(ns: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: flaky-retry
  namespace: {ns}
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: flaky
    port: {SVC_PORT}
  rules:
  - backendRefs:
    - name: flaky
      port: {SVC_PORT}
    retry:
      attempts: 2
      codes: [503]
      backoff: 10ms
"
    )
}

#[test]
fn traffic_bypassing_the_waypoint_is_refused_by_the_destination_ztunnel() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l7-bypass";
        let (cl, wp) = setup(c, ns)?;
        let srv = backend(c, "echo", ns, 1, "echo", "v1")?;
        let svc = http_service(c, "echo", ns, &[("app", "echo")])?;
        let direct = format!("http://{}:{HTTP_PORT}/direct", srv.ip);
        eventually_http_ok(c, &cl, &direct).context("direct to the pod before the binding")?;

        c.use_waypoint(UseWaypointOn::Service(&svc), Some(NAME))?;
        eventually_through_waypoint(c, &cl, &wp, &url(&svc, "/via-service"))?;
        let why = eventually(
            &format!("GET {direct} (the pod, not the service) to be refused"),
            PROPAGATION,
            || match c.http_get(&cl, &direct) {
                Ok((status, body)) => Err(format!("still answered HTTP {status}: {body}")),
                Err(e @ HarnessError::EchoFailed { .. }) => Ok(e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        )?;
        tracing::info!("direct request refused as expected: {why}");
        let served = c.echo_stats(&srv, HTTP_PORT)?.requests;
        for i in 0..3 {
            if let Ok((status, body)) = c.http_get(&cl, &direct) {
                bail!("direct request #{i} answered HTTP {status} after being refused: {body}");
            }
        }
        let tcp = c.echo_tcp(&cl, srv.addr(TCP_PORT), "bypass over tcp");
        ensure!(
            tcp.as_ref().is_err_and(HarnessError::is_echo_failure),
            "the TCP echo straight to the pod was not refused: {tcp:?}"
        );
        ensure!(
            c.echo_stats(&srv, HTTP_PORT)?.requests == served,
            "the backend served a request that bypassed the waypoint"
        );
        // The refusal is the destination ztunnel's, and says why.
        let node = c.node(&srv.node)?;
        let client_principal = c.principal(ns, "client");
        let log = without_ansi(&std::fs::read_to_string(&node.files.ztunnel_log)?);
        let refusal = log
            .lines()
            .find(|l| l.contains("bypassed the waypoint") && l.contains(&client_principal));
        ensure!(
            refusal.is_some(),
            "{} ztunnel's log has no refusal of {client_principal} for bypassing the waypoint",
            node.name
        );
        tracing::info!("destination ztunnel: {}", refusal.unwrap_or_default());
        // Through the service, the same client still gets its answer.
        let (status, body) = c.http_get(&cl, &url(&svc, "/via-service"))?;
        ensure!(
            status == 200,
            "GET via the service answered {status}: {body}"
        );
        Ok(())
    })
}

/// A log text without its terminal colour sequences (`ESC [ ... m`).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_binding_to_a_missing_waypoint_fails_closed() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l7-missing";
        enrolled_namespace(c, ns)?;
        let cl = client(c, ns, 0)?;
        let srv = backend(c, "echo", ns, 1, "echo", "v1")?;
        let svc = http_service(c, "echo", ns, &[("app", "echo")])?;
        eventually_http_ok(c, &cl, &url(&svc, "/before"))?;

        c.use_waypoint(UseWaypointOn::Service(&svc), Some("ghost"))?;
        let why = eventually(
            "requests to a service bound to a missing waypoint to fail",
            PROPAGATION,
            || match c.http_get(&cl, &url(&svc, "/ghost")) {
                Ok((status, body)) => Err(format!("still answered HTTP {status}: {body}")),
                Err(e @ HarnessError::EchoFailed { .. }) => Ok(e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        )?;
        tracing::info!("bound to a missing waypoint, the client gets: {why}");
        let served = c.echo_stats(&srv, HTTP_PORT)?.requests;
        for i in 0..3 {
            if let Ok((status, body)) = c.http_get(&cl, &url(&svc, "/ghost")) {
                bail!("request #{i} answered HTTP {status} through a missing waypoint: {body}");
            }
        }
        let tcp = c.echo_tcp(&cl, svc.addr(TCP_PORT), "no waypoint, no bytes");
        ensure!(
            tcp.as_ref().is_err_and(HarnessError::is_echo_failure),
            "a TCP echo through the service succeeded without its waypoint: {tcp:?}"
        );
        ensure!(
            c.echo_stats(&srv, HTTP_PORT)?.requests == served,
            "the backend served a request whose waypoint does not exist"
        );
        // The source ztunnel says why: no healthy upstream (the waypoint), `UH`.
        let node = c.node(&cl.node)?;
        let uh = c.ztunnel_metrics(node)?.sum(
            "istio_tcp_connections_closed_total",
            &[
                ("reporter", "source"),
                ("response_flags", "UH"),
                ("destination_service_name", "echo"),
            ],
        );
        ensure!(
            uh >= 1.0,
            "{} ztunnel counted no connection to echo closed with response_flags=\"UH\"",
            node.name
        );
        // istiod reports the binding it cannot honour.
        let status = c
            .istiod_waypoint_status(ns, "ghost")?
            .context("istiod does not list waypoint ghost in /debug/waypoints")?;
        let accepted = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|cond| cond["type"] == "Accepted")
            .cloned()
            .unwrap_or_default();
        ensure!(
            accepted["status"] == "False" && accepted["reason"] == "GatewayNotFound",
            "istiod's status of the missing waypoint: {status}"
        );
        Ok(())
    })
}
