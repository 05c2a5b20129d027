//! `waypoint list|status|generate` on step 5's waypoint; `waypoint apply --wait` and `delete` of
//! a second one.

use e2e::k8s::mesh::GATEWAY_NAME_LABEL;
use e2e::k8s::{apply, eventually, workloads};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::Value;

use super::cli::{Ctl, array, array_len, context_namespace, ensure_row, str_of};
use super::{MISSING_WAYPOINT, WAYPOINT};
use crate::k8s_suite::{ROLLOUT, Suite};

/// The waypoint this step creates and deletes.
const EXTRA: &str = "extra";

/// `waypoint list|status|generate` on the sample namespace, whose waypoint step 5 applied.
pub async fn waypoints_of_step_5(suite: &Suite, ctl: &Ctl<'_>) -> anyhow::Result<()> {
    let ns = suite.settings.namespace.as_str();
    let list = ctl.json(&["waypoint", "list", "-n", ns]).await?;
    let rows = array(&list, "meshctl waypoint list -o json")?;
    anyhow::ensure!(
        rows.len() == 1
            && str_of(&rows[0], "name") == WAYPOINT
            && str_of(&rows[0], "namespace") == ns
            && str_of(&rows[0], "trafficType") == "service"
            && rows[0]["programmed"] == Value::Bool(true),
        "meshctl waypoint list -n {ns}: expected {WAYPOINT}, service, programmed; got {list:#}"
    );
    let table = ctl.ok(&["waypoint", "list", "-n", ns]).await?.stdout;
    ensure_row(
        "meshctl waypoint list",
        &table,
        &["NAME", "TRAFFIC TYPE", "PROGRAMMED"],
    )?;
    ensure_row(
        "meshctl waypoint list",
        &table,
        &[WAYPOINT, "service", "True"],
    )?;
    let all = ctl.ok(&["waypoint", "list", "-A"]).await?.stdout;
    ensure_row(
        "meshctl waypoint list -A",
        &all,
        &[ns, WAYPOINT, "service", "True"],
    )?;

    let status = ctl.ok(&["waypoint", "status", "-n", ns]).await?.stdout;
    ensure_row(
        "meshctl waypoint status",
        &status,
        &[ns, WAYPOINT, "True", "Programmed"],
    )?;
    let missing = ctl
        .run(&["waypoint", "status", "-n", ns, "--name", MISSING_WAYPOINT])
        .await?;
    anyhow::ensure!(
        !missing.success() && missing.stderr.contains("not found"),
        "meshctl waypoint status --name {MISSING_WAYPOINT}: expected a failure saying it is not \
         found, got ({}):\n{}",
        missing.status,
        missing.combined()
    );

    let yaml = ctl
        .ok(&["waypoint", "generate", "-n", ns, "--name", EXTRA])
        .await?
        .stdout;
    let objs = apply::parse(&yaml)?;
    let [gw] = objs.as_slice() else {
        anyhow::bail!(
            "meshctl waypoint generate printed {} objects:\n{yaml}",
            objs.len()
        );
    };
    let kind = gw.types.as_ref().map(|t| t.kind.as_str());
    let labels = gw.metadata.labels.clone().unwrap_or_default();
    let listener = &gw.data["spec"]["listeners"][0];
    anyhow::ensure!(
        kind == Some("Gateway")
            && gw.metadata.name.as_deref() == Some(EXTRA)
            && gw.metadata.namespace.as_deref() == Some(ns)
            && gw.data["spec"]["gatewayClassName"] == "istio-waypoint"
            && labels.get("istio.io/waypoint-for").map(String::as_str) == Some("service")
            && listener["port"] == 15008
            && listener["protocol"] == "HBONE",
        "meshctl waypoint generate -n {ns} --name {EXTRA}: not a waypoint Gateway:\n{yaml}"
    );
    let json = ctl
        .json(&["waypoint", "generate", "-n", ns, "--name", EXTRA])
        .await?;
    anyhow::ensure!(
        json["spec"]["gatewayClassName"] == "istio-waypoint",
        "meshctl waypoint generate -o json: {json:#}"
    );
    anyhow::ensure!(
        apply::get_live(&suite.client, gw).await?.is_none(),
        "meshctl waypoint generate created Gateway {ns}/{EXTRA}"
    );
    suite.log(format!(
        "meshctl waypoint list/status: {ns}/{WAYPOINT} programmed; generate: a waypoint Gateway, \
         nothing created"
    ));
    Ok(())
}

/// `waypoint apply --wait` of a second waypoint, listed, then `waypoint delete`: the Gateway
/// goes, and the controller's Deployment with it.
pub async fn waypoint_apply_delete(suite: &Suite, ctl: &Ctl<'_>, ns2: &str) -> anyhow::Result<()> {
    let out = ctl
        .ok(&[
            "waypoint",
            "apply",
            "-n",
            ns2,
            "--name",
            EXTRA,
            "--wait",
            "--timeout",
            "120s",
        ])
        .await?;
    for line in [
        format!("waypoint {ns2}/{EXTRA} created"),
        format!("waypoint {ns2}/{EXTRA} is programmed"),
    ] {
        anyhow::ensure!(
            out.stdout.lines().any(|l| l == line),
            "meshctl waypoint apply --wait: no line {line:?}:\n{}",
            out.combined()
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(suite.client.clone(), ns2);
    anyhow::ensure!(
        deployments.get_opt(EXTRA).await?.is_some(),
        "waypoint {ns2}/{EXTRA} is programmed but there is no Deployment {EXTRA}"
    );
    let list = ctl.json(&["waypoint", "list", "-A"]).await?;
    let listed = array(&list, "meshctl waypoint list -A -o json")?
        .iter()
        .any(|r| {
            str_of(r, "namespace") == ns2
                && str_of(r, "name") == EXTRA
                && r["programmed"] == Value::Bool(true)
        });
    anyhow::ensure!(
        listed,
        "meshctl waypoint list -A does not list {ns2}/{EXTRA} as programmed: {list:#}"
    );
    suite.log(format!(
        "meshctl waypoint apply --wait: {ns2}/{EXTRA} created and programmed, listed with -A"
    ));

    let out = ctl
        .ok(&["waypoint", "delete", "-n", ns2, "--name", EXTRA])
        .await?;
    anyhow::ensure!(
        out.stdout
            .contains(&format!("waypoint {ns2}/{EXTRA} deleted")),
        "meshctl waypoint delete: {}",
        out.combined()
    );
    let gw = apply::parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {EXTRA}\n  namespace: {ns2}\n"
    ))?;
    anyhow::ensure!(
        apply::get_live(&suite.client, &gw[0]).await?.is_none(),
        "meshctl waypoint delete said deleted, but Gateway {ns2}/{EXTRA} is still there"
    );
    let selector = format!("{GATEWAY_NAME_LABEL}={EXTRA}");
    eventually(
        &format!("the Deployment and pods of waypoint {ns2}/{EXTRA} to be removed"),
        ROLLOUT,
        || async {
            let left = workloads::pods(&suite.client, ns2, &selector)
                .await
                .map_err(|e| e.to_string())?;
            match deployments.get_opt(EXTRA).await {
                Ok(None) if left.is_empty() => Ok(()),
                Ok(d) => Err(format!(
                    "deployment there: {}, pods: {:?}",
                    d.is_some(),
                    left.iter().map(workloads::summary).collect::<Vec<_>>()
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let again = ctl
        .run(&["waypoint", "delete", "-n", ns2, "--name", EXTRA])
        .await?;
    anyhow::ensure!(
        !again.success() && again.stderr.contains("not found"),
        "meshctl waypoint delete of a deleted waypoint: expected a failure saying it is not \
         found, got ({}):\n{}",
        again.status,
        again.combined()
    );
    let empty = ctl.ok(&["waypoint", "list", "-n", ns2]).await?.stdout;
    anyhow::ensure!(
        empty == format!("No waypoints found in namespace {ns2}.\n"),
        "meshctl waypoint list -n {ns2} after the delete:\n{empty}"
    );
    // Without -n: the kubeconfig context's namespace, named as such.
    let default_ns = context_namespace(&suite.settings.kubeconfig)?;
    let listed = ctl.json(&["waypoint", "list"]).await?;
    if array_len(&listed) == 0 {
        let text = ctl.ok(&["waypoint", "list"]).await?.stdout;
        anyhow::ensure!(
            text == format!("No waypoints found in namespace {default_ns}.\n"),
            "meshctl waypoint list (no -n, context namespace {default_ns}):\n{text}"
        );
    }
    suite.log(format!(
        "meshctl waypoint delete: Gateway {ns2}/{EXTRA}, its Deployment and pod gone"
    ));
    Ok(())
}
