//! The demo's L7 steps: a waypoint for namespace `demo`, a 90/10 HTTPRoute split measured over
//! 1,000 requests, an L7 deny (`GET /admin`), and retries hiding a flaky backend.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::scenario::{HTTP_PORT, NS, WAIT, expect, h};
use super::{DemoError, Narrator};
use crate::echo::client::RepeatSummary;
use crate::harness::manifests;
use crate::harness::{
    Cluster, HarnessError, Pod, PodSpec, Service, ServiceSpec, UseWaypointOn, Waypoint,
    WaypointSpec, eventually,
};

const WAYPOINT: &str = "waypoint";
const SVC_PORT: u16 = 80;
const SPLIT_REQUESTS: u32 = 1000;
const RETRY_REQUESTS: u32 = 100;

fn url(svc: &Service, path: &str) -> String {
    format!("http://{}:{SVC_PORT}{path}", svc.vip)
}

fn http_service(
    c: &Cluster,
    name: &str,
    selector: &[(&str, &str)],
) -> Result<Service, HarnessError> {
    let mut spec = ServiceSpec::new(name, NS).named_port("http", SVC_PORT, HTTP_PORT);
    for (k, v) in selector {
        spec = spec.select(k, v);
    }
    c.add_service(spec)
}

fn web_pod(c: &Cluster, name: &str, version: &str, node: usize) -> Result<Pod, HarnessError> {
    let p = c.add_pod(
        PodSpec::new(name, NS)
            .on(&c.nodes()[node])
            .service_account("web")
            .label("app", "web")
            .label("version", version)
            .port(HTTP_PORT),
    )?;
    c.start_echo_server(&p, &[], &[HTTP_PORT])?;
    Ok(p)
}

/// Runs the L7 steps with the demo's `client` pod.
pub(super) fn steps(n: &mut Narrator, c: &Cluster, client: &Pod) -> Result<(), DemoError> {
    let (wp, web) = deploy(n, c, client)?;
    split(n, c, client, &wp, &web)?;
    deny_admin(n, c, client, &wp, &web)?;
    retries(n, c, client, &wp)
}

fn deploy(n: &mut Narrator, c: &Cluster, client: &Pod) -> Result<(Waypoint, Service), DemoError> {
    let step = n.step("L7: deploying a waypoint for namespace `demo`");
    let n2 = &c.nodes()[1];
    let gateway = h(
        &step,
        manifests::to_yaml(&manifests::waypoint_gateway(WAYPOINT, NS, "service"))
            .map_err(HarnessError::from),
    )?;
    n.doing(&format!(
        "applying a Gateway of class istio-waypoint (what `istioctl waypoint apply -n {NS}` writes):\n{gateway}"
    ));
    n.doing(&format!(
        "deploying it as the waypoint controller would: pod {WAYPOINT}-0 on {} (labelled gateway-name={WAYPOINT}, never captured),\nService {WAYPOINT} (15008 mesh), and the `waypoint` binary in the pod's netns with its node's token",
        n2.name
    ));
    let wp = h(
        &step,
        c.add_waypoint(WaypointSpec::new(WAYPOINT, NS).on(n2)),
    )?;
    n.saw(&format!(
        "waypoint ready: pod {} IP {}, identity {}, log {}",
        wp.pod.key(),
        wp.pod.ip,
        c.principal(NS, &wp.service_account),
        wp.log.display()
    ));
    let status = h(&step, c.istiod_waypoint_status(NS, WAYPOINT))?.unwrap_or(Value::Null);
    n.saw(&format!("istiod /debug/waypoints: {}", conditions(&status)));

    n.doing("two versions of a web app: web-v1 on node1, web-v2 on node2; Services web (both), web-v1, web-v2 (port 80 named http)");
    h(&step, web_pod(c, "web-v1", "v1", 0))?;
    h(&step, web_pod(c, "web-v2", "v2", 1))?;
    let web = h(&step, http_service(c, "web", &[("app", "web")]))?;
    h(
        &step,
        http_service(c, "web-v1", &[("app", "web"), ("version", "v1")]),
    )?;
    h(
        &step,
        http_service(c, "web-v2", &[("app", "web"), ("version", "v2")]),
    )?;
    n.doing(&format!(
        "labelling namespace {NS} istio.io/use-waypoint={WAYPOINT}: its services' traffic now goes through the waypoint"
    ));
    h(
        &step,
        c.use_waypoint(UseWaypointOn::Namespace(NS), Some(WAYPOINT)),
    )?;
    h(&step, c.wait_waypoint_bound(&wp, &web, WAIT))?;
    let body = through_waypoint(c, &step, client, &wp, &url(&web, "/"))?;
    let pod = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_string))
        .unwrap_or_default();
    n.saw(&format!("GET {} answered 200 by {pod}", url(&web, "/")));
    let principal = c.principal(NS, &client.service_account);
    let counted = h(
        &step,
        c.waypoint_requests(
            &wp,
            &[
                ("source_principal", principal.as_str()),
                ("response_code", "200"),
            ],
        ),
    )?;
    n.saw(&format!(
        "waypoint metrics: istio_requests_total{{reporter=\"waypoint\", source_principal=\"{principal}\", response_code=\"200\"}} = {counted}"
    ));
    expect(&step, counted >= 1.0, || {
        format!(
            "the waypoint did not count the client's request:\n{}",
            c.describe_waypoint_requests(&wp)
        )
    })?;
    n.ok("client ztunnel -> waypoint -> web's ztunnel: the waypoint sees every HTTP request");
    Ok((wp, web))
}

/// `Accepted=True (Accepted), Programmed=True (...)` of a `/debug/waypoints` entry.
fn conditions(status: &Value) -> String {
    let list: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} ({})",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                    .or(c["reason"].as_str())
                    .unwrap_or("")
            )
        })
        .collect();
    if list.is_empty() {
        format!("no conditions: {status}")
    } else {
        list.join(", ")
    }
}

/// Polls until `GET url` answers 200 and the waypoint counts one more request.
fn through_waypoint(
    c: &Cluster,
    step: &str,
    from: &Pod,
    wp: &Waypoint,
    url: &str,
) -> Result<String, DemoError> {
    let ok = [("response_code", "200")];
    let res = eventually(
        &format!("GET {url} to go through the waypoint"),
        WAIT,
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
    res.map_err(|e| DemoError::Unexpected {
        step: step.to_string(),
        reason: format!(
            "{e}\nwaypoint request series:\n{}",
            c.describe_waypoint_requests(wp)
        ),
    })
}

fn split(
    n: &mut Narrator,
    c: &Cluster,
    client: &Pod,
    wp: &Waypoint,
    web: &Service,
) -> Result<(), DemoError> {
    let step = n.step("L7: an HTTPRoute splits traffic 90/10 between web-v1 and web-v2");
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web-split\n  namespace: {NS}\nspec:\n  parentRefs:\n  - group: \"\"\n    kind: Service\n    name: web\n    port: {SVC_PORT}\n  rules:\n  - backendRefs:\n    - name: web-v1\n      port: {SVC_PORT}\n      weight: 90\n    - name: web-v2\n      port: {SVC_PORT}\n      weight: 10\n"
    );
    n.doing(&format!("applying:\n{route}"));
    h(&step, c.apply_yaml("route-web-split", &route))?;
    h(
        &step,
        c.wait_waypoint_route(wp, web, &format!("{NS}/web-split"), WAIT),
    )?;
    n.saw("the waypoint has the route (its config_dump lists it on service web)");
    n.doing(&format!(
        "client sends {SPLIT_REQUESTS} requests to {} (`mesh-echo client http --repeat {SPLIT_REQUESTS}`), each on a new connection",
        url(web, "/")
    ));
    let sum = h(&step, c.http_repeat(client, &url(web, "/"), SPLIT_REQUESTS))?;
    n.saw(&tally(&sum));
    let v1 = sum.pods.get("web-v1").copied().unwrap_or(0);
    let v2 = sum.pods.get("web-v2").copied().unwrap_or(0);
    expect(
        &step,
        sum.errors.is_empty() && sum.statuses.get(&200) == Some(&SPLIT_REQUESTS),
        || format!("not every request was answered 200: {sum:?}"),
    )?;
    expect(
        &step,
        v1 + v2 == SPLIT_REQUESTS && (850..=950).contains(&v1),
        || {
            format!(
                "web-v1 answered {v1} and web-v2 {v2} of {SPLIT_REQUESTS}; the route asks for 90/10"
            )
        },
    )?;
    n.ok(&format!(
        "web-v1 got {:.1}% and web-v2 {:.1}% of the requests (90/10 asked)",
        percent(v1, SPLIT_REQUESTS),
        percent(v2, SPLIT_REQUESTS)
    ));
    Ok(())
}

fn percent(part: u32, whole: u32) -> f64 {
    f64::from(part) * 100.0 / f64::from(whole.max(1))
}

/// One line per status and per answering pod.
fn tally(sum: &RepeatSummary) -> String {
    let mut lines = vec![format!("{} requests:", sum.requests)];
    for (pod, count) in &sum.pods {
        lines.push(format!(
            "  answered by {pod}: {count} ({:.1}%)",
            percent(*count, sum.requests)
        ));
    }
    for (status, count) in &sum.statuses {
        lines.push(format!("  HTTP {status}: {count}"));
    }
    for (error, count) in &sum.errors {
        lines.push(format!("  no answer ({error}): {count}"));
    }
    lines.join("\n")
}

fn deny_admin(
    n: &mut Narrator,
    c: &Cluster,
    client: &Pod,
    wp: &Waypoint,
    web: &Service,
) -> Result<(), DemoError> {
    let step = n.step("L7: an AuthorizationPolicy on the waypoint denies GET /admin");
    let policy = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-admin\n  namespace: {NS}\nspec:\n  targetRefs:\n  - kind: Gateway\n    group: gateway.networking.k8s.io\n    name: {WAYPOINT}\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/admin\"]\n"
    );
    n.doing(&format!("applying:\n{policy}"));
    h(&step, c.apply_yaml("deny-admin", &policy))?;
    h(
        &step,
        c.wait_waypoint_policy(wp, &format!("{NS}/deny-admin"), WAIT),
    )?;
    let mut answers = BTreeMap::new();
    for path in ["/admin", "/"] {
        let (status, body) = h(&step, c.http_get(client, &url(web, path)))?;
        let what = match serde_json::from_str::<Value>(&body) {
            Ok(v) if v["pod"].is_string() => {
                format!("answered by pod {}", v["pod"].as_str().unwrap_or_default())
            }
            _ => format!("{:?}", body.trim()),
        };
        n.saw(&format!("GET {path} -> HTTP {status}, {what}"));
        answers.insert(path, (status, body));
    }
    let (admin, admin_body) = &answers["/admin"];
    let (root, _) = &answers["/"];
    expect(
        &step,
        *admin == 403 && admin_body.contains("RBAC: access denied") && *root == 200,
        || format!("GET /admin answered {admin} ({admin_body:?}) and GET / answered {root}"),
    )?;
    let denied = h(&step, c.waypoint_requests(wp, &[("response_code", "403")]))?;
    n.saw(&format!(
        "waypoint metrics: istio_requests_total{{reporter=\"waypoint\", response_code=\"403\"}} = {denied}"
    ));
    n.ok("GET /admin is refused by the waypoint (403) before reaching any pod; GET / passes");
    Ok(())
}

fn retries(n: &mut Narrator, c: &Cluster, client: &Pod, wp: &Waypoint) -> Result<(), DemoError> {
    let step = n.step("L7: retries hide a flaky backend");
    n.doing("pod flaky on node1 runs `mesh-echo server --fail-every 2`: every other request it gets fails with 503; Service flaky (port 80 named http)");
    let flaky = h(
        &step,
        c.add_pod(
            PodSpec::new("flaky", NS)
                .on(&c.nodes()[0])
                .service_account("flaky")
                .label("app", "flaky")
                .port(HTTP_PORT),
        ),
    )?;
    h(&step, c.start_flaky_echo_server(&flaky, &[HTTP_PORT], 2))?;
    let svc = h(&step, http_service(c, "flaky", &[("app", "flaky")]))?;
    h(&step, c.wait_waypoint_bound(wp, &svc, WAIT))?;
    n.doing("without a retry policy: the client sends 20 requests");
    let no_retry = h(
        &step,
        eventually(
            "the flaky service to be reached through the waypoint",
            WAIT,
            || match c.http_repeat(client, &url(&svc, "/"), 20) {
                Ok(sum) if sum.errors.is_empty() && sum.statuses.contains_key(&200) => Ok(sum),
                Ok(sum) => Err(format!("{sum:?}")),
                Err(e) => Err(e.to_string()),
            },
        )
        .map_err(HarnessError::from),
    )?;
    n.saw(&tally(&no_retry));
    let failed = no_retry.statuses.get(&503).copied().unwrap_or(0);
    expect(&step, failed > 0, || {
        format!("the flaky backend did not fail without retries: {no_retry:?}")
    })?;
    n.ok(&format!(
        "{failed} of 20 requests failed: the backend is really flaky"
    ));

    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: flaky-retry\n  namespace: {NS}\nspec:\n  parentRefs:\n  - group: \"\"\n    kind: Service\n    name: flaky\n    port: {SVC_PORT}\n  rules:\n  - backendRefs:\n    - name: flaky\n      port: {SVC_PORT}\n    retry:\n      attempts: 2\n      codes: [503]\n      backoff: 10ms\n"
    );
    n.doing(&format!("applying a retry policy:\n{route}"));
    h(&step, c.apply_yaml("route-flaky-retry", &route))?;
    h(
        &step,
        c.wait_waypoint_route(wp, &svc, &format!("{NS}/flaky-retry"), WAIT),
    )?;
    let before = h(&step, c.echo_stats(&flaky, HTTP_PORT))?;
    n.doing(&format!("the client sends {RETRY_REQUESTS} requests"));
    let sum = h(
        &step,
        c.http_repeat(client, &url(&svc, "/"), RETRY_REQUESTS),
    )?;
    let after = h(&step, c.echo_stats(&flaky, HTTP_PORT))?;
    let (served, failed) = (
        after.requests - before.requests,
        after.failed - before.failed,
    );
    n.saw(&format!(
        "the flaky backend's own count: {served} requests served, {failed} of them failed with 503"
    ));
    n.saw(&format!("the client's count: {}", tally(&sum)));
    expect(
        &step,
        sum.errors.is_empty() && sum.statuses.get(&200) == Some(&RETRY_REQUESTS),
        || format!("the client still saw failures: {sum:?}"),
    )?;
    expect(&step, failed > 0, || {
        format!("the backend failed nothing ({served} served): the retries were not exercised")
    })?;
    n.ok(&format!(
        "the waypoint retried each of the {failed} failures: the client saw {RETRY_REQUESTS} x HTTP 200"
    ));
    Ok(())
}
