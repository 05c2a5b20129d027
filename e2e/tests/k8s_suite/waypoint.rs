//! Step 5: a waypoint for the namespace with `meshctl waypoint apply --enroll-namespace --wait`,
//! then L7 features through it: an HTTPRoute splitting the `echo` Service 90/10 between its two
//! versions (measured), an L7 AuthorizationPolicy denying `GET /admin` (403), and the
//! waypoint's `istio_requests_total`.

use std::time::Duration;

use e2e::harness::Metrics;
use e2e::k8s::mesh::{self, GATEWAY_NAME_LABEL, REQUESTS};
use e2e::k8s::tools::run as run_tool;
use e2e::k8s::{apply, diagnostics, eventually, workloads};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use super::apps::HTTP_PORT;
use super::{PROPAGATION, ROLLOUT, Suite, traffic};

const WAYPOINT: &str = "waypoint";
/// Requests of the split measurement.
const SPLIT_REQUESTS: u32 = 200;
/// Accepted number of echo-v2 answers out of [`SPLIT_REQUESTS`] for a 10 % weight: 10 % is 20;
/// the bounds are about 3.3 standard deviations away (a wrong split of 50/50 gives ~100).
const SPLIT_V2_RANGE: std::ops::RangeInclusive<u32> = 6..=40;

fn route(ns: &str) -> String {
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
      port: {HTTP_PORT}
  rules:
    - matches:
        - path: {{type: PathPrefix, value: /v2}}
      backendRefs:
        - {{name: echo-v2, port: {HTTP_PORT}}}
    - backendRefs:
        - {{name: echo-v1, port: {HTTP_PORT}, weight: 90}}
        - {{name: echo-v2, port: {HTTP_PORT}, weight: 10}}
"
    )
}

fn deny_admin(ns: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: echo-deny-admin
  namespace: {ns}
spec:
  targetRefs:
    - group: \"\"
      kind: Service
      name: echo
  action: DENY
  rules:
    - to:
        - operation:
            methods: [GET]
            paths: [/admin, /admin/*]
"
    )
}

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let suite = &*suite;
    let ns = suite.settings.namespace.as_str();
    let meshctl = suite
        .settings
        .meshctl
        .as_ref()
        .map_err(|e| anyhow::anyhow!("meshctl is missing: {e}"))?;
    let out = run_tool(
        &suite.settings,
        meshctl,
        &[
            "waypoint",
            "apply",
            "-n",
            ns,
            "--enroll-namespace",
            "--wait",
            "--timeout",
            "90s",
        ],
        Duration::from_secs(150),
    )
    .await?;
    if !out.success() {
        anyhow::bail!(
            "the waypoint did not become ready: `meshctl waypoint apply -n {ns} --enroll-namespace \
             --wait` failed ({}).\nwaypoint pods:\n{}meshctl said:\n{}",
            out.status,
            waypoint_pods_state(suite, ns).await,
            out.combined()
        );
    }
    suite.log(format!(
        "meshctl waypoint apply: {}",
        out.combined().replace('\n', " | ")
    ));

    // What meshctl promised: the Gateway, programmed; the namespace using it; its pod ready.
    let gw_ref = apply::parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {WAYPOINT}\n  namespace: {ns}\n"
    ))?;
    let gw = apply::get_live(&suite.client, &gw_ref[0])
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("meshctl succeeded but there is no Gateway {ns}/{WAYPOINT}")
        })?;
    let programmed = gw.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Programmed" && c["status"] == "True")
        });
    anyhow::ensure!(
        programmed,
        "Gateway {ns}/{WAYPOINT} is not Programmed: {}",
        gw.data["status"]
    );
    let namespaces: Api<Namespace> = Api::all(suite.client.clone());
    let labels = namespaces
        .get(ns)
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    anyhow::ensure!(
        labels.get("istio.io/use-waypoint").map(String::as_str) == Some(WAYPOINT),
        "namespace {ns} is not labelled istio.io/use-waypoint={WAYPOINT}: {labels:?}"
    );
    let selector = format!("{GATEWAY_NAME_LABEL}={WAYPOINT}");
    let wp_pods = eventually("the waypoint pod to be ready", ROLLOUT, || {
        workloads::pods_ready(&suite.client, ns, &selector, 1)
    })
    .await?;
    let wp_pod = workloads::name(&wp_pods[0]).to_string();
    suite.log(format!(
        "Gateway {WAYPOINT} Programmed, namespace uses it, pod {wp_pod} ready"
    ));

    let apps = suite.apps()?;
    let client = apps.pod("client")?.name.as_str();
    let base = format!("http://{}", apps.service("echo", HTTP_PORT)?);

    apply::apply_yaml(&suite.client, &route(ns)).await?;
    // The route is in force once /v2 always reaches echo-v2 (without it, half the requests
    // reach echo-v1).
    let v2_url = format!("{base}/v2");
    eventually(
        "the HTTPRoute to send /v2 to echo-v2 only",
        PROPAGATION,
        || async {
            let sum = traffic::http_repeat(suite, client, &v2_url, 10)
                .await
                .map_err(|e| e.to_string())?;
            let v2 = count_prefix(&sum.pods, "echo-v2-");
            if v2 == 10 {
                Ok(())
            } else {
                Err(format!("{sum:?}"))
            }
        },
    )
    .await?;
    suite.log("HTTPRoute in force: /v2 answered by echo-v2 only");

    // What `kubectl get httproute -o yaml` shows: the mesh accepted the route for its parent.
    let route_ref = apply::parse(&route(ns))?;
    let accepted = eventually(
        "the HTTPRoute's status to show the parent Service accepted",
        PROPAGATION,
        || async {
            let live = apply::get_live(&suite.client, &route_ref[0])
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the HTTPRoute is gone")?;
            let parent = &live.data["status"]["parents"][0];
            let cond = |t: &str| {
                parent["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == t)
                    .map(|c| c["status"].as_str().unwrap_or_default().to_string())
            };
            if parent["controllerName"] == "istio.io/mesh-controller"
                && parent["parentRef"]["name"] == "echo"
                && cond("Accepted").as_deref() == Some("True")
                && cond("ResolvedRefs").as_deref() == Some("True")
            {
                Ok(parent["conditions"][0]["message"].clone())
            } else {
                Err(format!("status: {}", live.data["status"]))
            }
        },
    )
    .await?;
    suite.log(format!("HTTPRoute status: Accepted ({accepted})"));

    let before = mesh::pod_metrics(&suite.client, ns, &wp_pod).await?;
    let url = format!("{base}/");
    let sum = traffic::http_repeat(suite, client, &url, SPLIT_REQUESTS).await?;
    let (v1, v2) = (
        count_prefix(&sum.pods, "echo-v1-"),
        count_prefix(&sum.pods, "echo-v2-"),
    );
    suite.log(format!(
        "split over {SPLIT_REQUESTS} requests: echo-v1 {v1}, echo-v2 {v2} ({sum:?})"
    ));
    anyhow::ensure!(
        sum.errors.is_empty() && sum.statuses.get(&200) == Some(&SPLIT_REQUESTS),
        "not every request of the split got a 200: {sum:?}"
    );
    anyhow::ensure!(
        v1 + v2 == SPLIT_REQUESTS,
        "answers from pods other than echo-v1/v2: {sum:?}"
    );
    anyhow::ensure!(
        SPLIT_V2_RANGE.contains(&v2),
        "HTTPRoute weights 90/10: echo-v2 answered {v2} of {SPLIT_REQUESTS} requests, expected {SPLIT_V2_RANGE:?}"
    );

    let after = mesh::pod_metrics(&suite.client, ns, &wp_pod).await?;
    let filter = [
        ("reporter", "waypoint"),
        ("response_code", "200"),
        ("destination_service_namespace", ns),
    ];
    let counted = after.sum(REQUESTS, &filter) - before.sum(REQUESTS, &filter);
    anyhow::ensure!(
        counted >= f64::from(SPLIT_REQUESTS),
        "the waypoint's istio_requests_total{filter:?} grew by {counted} over {SPLIT_REQUESTS} requests:\n{}",
        describe_requests(&after)
    );
    let principal = suite.settings.principal("client");
    anyhow::ensure!(
        after.sum(
            REQUESTS,
            &[("reporter", "waypoint"), ("source_principal", &principal)]
        ) > 0.0,
        "no istio_requests_total from source_principal={principal}:\n{}",
        describe_requests(&after)
    );
    suite.log(format!(
        "waypoint istio_requests_total (200, {ns}) grew by {counted}"
    ));

    apply::apply_yaml(&suite.client, &deny_admin(ns)).await?;
    let admin = format!("{base}/admin");
    let body = eventually(
        "GET /admin to be denied (403) by the waypoint",
        PROPAGATION,
        || async {
            match traffic::http_get(suite, client, &admin).await {
                Ok(Ok((403, body))) => Ok(body),
                Ok(Ok((s, _))) => Err(format!("status {s}")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    suite.log(format!(
        "GET /admin -> 403 ({})",
        body.lines().nth(1).unwrap_or("").trim()
    ));
    for (path, want) in [("/admin/users", 403), ("/", 200), ("/administrator", 200)] {
        match traffic::http_get(suite, client, &format!("{base}{path}")).await? {
            Ok((s, _)) if s == want => {}
            Ok((s, body)) => anyhow::bail!(
                "with GET /admin denied, GET {path} answered {s}, expected {want}\n{body}"
            ),
            Err(e) => anyhow::bail!("with GET /admin denied, GET {path}: {e}"),
        }
    }
    suite.log("GET /admin/users -> 403, GET / -> 200, GET /administrator -> 200");
    let m = mesh::pod_metrics(&suite.client, ns, &wp_pod).await?;
    let denied = m.sum(
        REQUESTS,
        &[("reporter", "waypoint"), ("response_code", "403")],
    );
    anyhow::ensure!(
        denied >= 2.0,
        "the waypoint counted {denied} requests answered 403:\n{}",
        describe_requests(&m)
    );
    suite.log(format!(
        "waypoint istio_requests_total with response_code=403: {denied}"
    ));
    Ok(())
}

fn count_prefix(pods: &std::collections::BTreeMap<String, u32>, prefix: &str) -> u32 {
    pods.iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

fn describe_requests(m: &Metrics) -> String {
    m.describe(
        REQUESTS,
        &[
            "reporter",
            "source_principal",
            "destination_service_name",
            "destination_workload",
            "response_code",
            "response_flags",
        ],
    )
}

/// The waypoint's pods with the last lines of their logs, to say why it is not ready.
async fn waypoint_pods_state(suite: &Suite, ns: &str) -> String {
    let selector = format!("{GATEWAY_NAME_LABEL}={WAYPOINT}");
    let pods = match workloads::pods(&suite.client, ns, &selector).await {
        Ok(p) => p,
        Err(e) => return format!("  (cannot list them: {e})"),
    };
    if pods.is_empty() {
        return format!("  none ({selector}): the waypoint controller created no pod");
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(suite.client.clone(), ns);
    let mut out = String::new();
    for p in &pods {
        out.push_str(&format!("  {}\n", workloads::summary(p)));
        let lp = kube::api::LogParams {
            tail_lines: Some(4),
            ..Default::default()
        };
        if let Ok(log) = api.logs(workloads::name(p), &lp).await {
            for l in diagnostics::strip_ansi(&log).lines() {
                out.push_str(&format!("    {l}\n"));
            }
        }
    }
    out
}
