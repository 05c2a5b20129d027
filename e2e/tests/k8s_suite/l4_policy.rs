//! Step 4: L4 AuthorizationPolicies on the running pods, enforced by the destination's ztunnel.
//! An ALLOW for the client's identity shuts the intruder out; a DENY of the client on the TCP
//! port shuts it out there only (HTTP still allowed); removing both lets everyone in again.

use super::apps::{HTTP_PORT, TCP_PORT};
use super::{PROPAGATION, Suite, traffic};
use e2e::k8s::apply;

fn allow_client(ns: &str, td: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: echo-allow-client
  namespace: {ns}
spec:
  selector:
    matchLabels: {{app: echo}}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: [\"{td}/ns/{ns}/sa/client\"]
"
    )
}

fn deny_client_tcp(ns: &str, td: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: echo-deny-client-tcp
  namespace: {ns}
spec:
  selector:
    matchLabels: {{app: echo}}
  action: DENY
  rules:
    - from:
        - source:
            principals: [\"{td}/ns/{ns}/sa/client\"]
      to:
        - operation:
            ports: [\"{TCP_PORT}\"]
"
    )
}

pub async fn run(suite: &mut Suite) -> anyhow::Result<()> {
    let suite = &*suite;
    let apps = suite.apps()?;
    let (ns, td) = (
        suite.settings.namespace.as_str(),
        suite.settings.trust_domain.as_str(),
    );
    let client = apps.pod("client")?.name.as_str();
    let intruder = apps.pod("intruder")?.name.as_str();
    let echo = apps.service("echo-v1", TCP_PORT)?;
    let echo_http = format!("http://{}/", apps.service("echo-v1", HTTP_PORT)?);

    traffic::tcp_echo_ok(suite, intruder, &echo, "before any policy").await?;
    traffic::tcp_echo_ok(suite, client, &echo, "before any policy").await?;

    let allow = allow_client(ns, td);
    apply::apply_yaml(&suite.client, &allow).await?;
    let said = traffic::eventually_tcp_denied(suite, intruder, &echo, PROPAGATION).await?;
    suite.log(format!(
        "ALLOW client only: intruder -> echo refused ({said})"
    ));
    traffic::tcp_echo_ok(suite, client, &echo, "allowed by the ALLOW policy").await?;
    suite.log("ALLOW client only: client -> echo still answered");

    // What `kubectl get authorizationpolicy -o yaml` shows: ztunnel took the policy as written.
    let allow_ref = apply::parse(&allow)?;
    let condition = e2e::k8s::eventually(
        "the ALLOW policy's status to say ztunnel accepted it",
        PROPAGATION,
        || async {
            let live = apply::get_live(&suite.client, &allow_ref[0])
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the policy is gone")?;
            let found = live.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "ZtunnelAccepted" && c["status"] == "True")
                .cloned();
            found.ok_or_else(|| format!("status: {}", live.data["status"]))
        },
    )
    .await?;
    suite.log(format!(
        "ALLOW policy status: ZtunnelAccepted=True ({})",
        condition["message"]
    ));

    let deny = deny_client_tcp(ns, td);
    apply::apply_yaml(&suite.client, &deny).await?;
    let said = traffic::eventually_tcp_denied(suite, client, &echo, PROPAGATION).await?;
    suite.log(format!(
        "DENY client on {TCP_PORT}: client -> echo:{TCP_PORT} refused ({said})"
    ));
    match traffic::http_get(suite, client, &echo_http).await? {
        Ok((200, _)) => suite.log(format!(
            "DENY client on {TCP_PORT}: client -> echo:{HTTP_PORT} still answered"
        )),
        Ok((status, body)) => anyhow::bail!(
            "the DENY of port {TCP_PORT} also hit port {HTTP_PORT}: GET {echo_http} answered {status}\n{body}"
        ),
        Err(e) => anyhow::bail!(
            "the DENY of port {TCP_PORT} also hit port {HTTP_PORT}: GET {echo_http}: {e}"
        ),
    }
    traffic::tcp_echo(suite, intruder, &echo, "still not allowed")
        .await?
        .err()
        .ok_or_else(|| anyhow::anyhow!("intruder -> echo answered under the ALLOW policy"))?;

    apply::delete_yaml(&suite.client, &deny).await?;
    apply::delete_yaml(&suite.client, &allow).await?;
    traffic::eventually_tcp_ok(suite, client, &echo, PROPAGATION).await?;
    traffic::eventually_tcp_ok(suite, intruder, &echo, PROPAGATION).await?;
    suite.log("policies deleted: client and intruder answered again");
    Ok(())
}
