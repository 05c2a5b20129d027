//! `meshctl waypoint apply|generate|list|delete|status`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams};
use mesh_config::objects::{Gateway, kind};
use mesh_config::{Object, ObjectKey, Snapshot, USE_WAYPOINT};
use serde::Serialize;

use crate::cli::{
    WaypointApplyArgs, WaypointCommand, WaypointDeleteArgs, WaypointGenerateArgs, WaypointListArgs,
};
use crate::context::{Ctx, Mode};
use crate::istiod::WaypointState;
use crate::kube_client::{self, KubeEnv, KubeError};
use crate::local::{LocalEnv, PutOutcome};
use crate::output::{self, OutputFormat, Table};
use crate::waypoint_gateway::{
    self as wg, GATEWAY_NAME_LABEL, is_waypoint, traffic_label, waypoint_gateway, waypoint_pods,
    waypoint_users,
};

use super::{EXIT_FAILED, EXIT_OK, POLL_INTERVAL};

pub async fn run(ctx: &Ctx, cmd: &WaypointCommand) -> anyhow::Result<u8> {
    match cmd {
        WaypointCommand::Generate(a) => generate(ctx, a).await,
        WaypointCommand::Apply(a) => match &ctx.mode {
            Mode::Local(env) => apply_local(ctx, env, a).await,
            Mode::Kube(s) => apply_kube(ctx, &Ctx::kube(s).await?, a).await,
        },
        WaypointCommand::List(a) => {
            let (ns, rows) = listed(ctx, a.all_namespaces).await?;
            print_list(ctx, &rows, a, ns.as_deref())?;
            Ok(EXIT_OK)
        }
        WaypointCommand::Status(a) => {
            let (ns, mut rows) = listed(ctx, a.all_namespaces).await?;
            if let Some(name) = &a.name {
                rows.retain(|r| &r.name == name);
                if rows.is_empty() {
                    let place = ns
                        .as_deref()
                        .map(|ns| format!(" in namespace {ns}"))
                        .unwrap_or_default();
                    bail!(
                        "waypoint {name} not found{place}; `meshctl waypoint list` shows the \
                         waypoints"
                    );
                }
            }
            print_status(ctx, &rows, ns.as_deref())?;
            Ok(EXIT_OK)
        }
        WaypointCommand::Delete(a) => match &ctx.mode {
            Mode::Local(env) => delete_local(ctx, env, a),
            Mode::Kube(s) => delete_kube(ctx, &Ctx::kube(s).await?, a).await,
        },
    }
}

/// The waypoints of one namespace (`-n`, else the default one), or of all with `-A`; the
/// namespace listed (`None` with `-A`) and the rows.
async fn listed(ctx: &Ctx, all: bool) -> anyhow::Result<(Option<String>, Vec<WaypointRow>)> {
    match &ctx.mode {
        Mode::Local(env) => {
            let ns = (!all).then(|| ctx.local_namespace());
            let rows = rows_local(env, ns.clone()).await?;
            Ok((ns, rows))
        }
        Mode::Kube(s) => {
            let kube = Ctx::kube(s).await?;
            let ns = (!all).then(|| ctx.kube_namespace(&kube));
            let rows = rows_kube(&kube, ns.as_deref()).await?;
            Ok((ns, rows))
        }
    }
}

async fn generate(ctx: &Ctx, a: &WaypointGenerateArgs) -> anyhow::Result<u8> {
    let ns = match (&ctx.namespace, &ctx.mode) {
        (Some(ns), _) => ns.clone(),
        (None, Mode::Kube(s)) => match Ctx::kube(s).await {
            Ok(kube) => kube.default_namespace().to_string(),
            Err(_) => "default".into(),
        },
        (None, Mode::Local(_)) => ctx.local_namespace(),
    };
    let gw = waypoint_gateway(&ns, &a.spec.name, a.spec.traffic_type);
    let text = match ctx.output {
        OutputFormat::Json => output::encode(OutputFormat::Json, &gw)?,
        _ => wg::to_yaml(&gw)?,
    };
    print!("{text}");
    Ok(EXIT_OK)
}

/// The JSON/YAML form of `apply`'s outcome.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyResult {
    waypoint: ObjectResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_label: Option<ObjectResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    programmed: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectResult {
    namespace: String,
    name: String,
    /// `created`, `updated`, `unchanged`, `applied`, `labelled`.
    result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
}

fn current_use_waypoint(ns: Option<&Namespace>) -> Option<String> {
    ns.and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(USE_WAYPOINT))
        .cloned()
}

fn check_enrollment(
    ns: &str,
    name: &str,
    current: Option<&str>,
    overwrite: bool,
) -> anyhow::Result<()> {
    match current {
        Some(cur) if cur != name && !overwrite => bail!(
            "namespace {ns} already uses waypoint {cur:?} (label {USE_WAYPOINT}={cur}); pass \
             --overwrite to switch it to {name}"
        ),
        _ => Ok(()),
    }
}

async fn apply_local(ctx: &Ctx, env: &LocalEnv, a: &WaypointApplyArgs) -> anyhow::Result<u8> {
    let ns = ctx.local_namespace();
    let name = &a.spec.name;
    let snap = env.snapshot()?;
    let key = ObjectKey::new(kind::GATEWAY, &ns, name);
    if let Some(Object::Gateway(existing)) = snap.get(&key)
        && !is_waypoint(existing)
        && !a.overwrite
    {
        bail!(
            "Gateway {ns}/{name} already exists in {} and is not a waypoint (gatewayClassName \
             {:?}); choose another --name, or pass --overwrite to replace it",
            source_of(&snap, &key),
            existing.spec.gateway_class_name
        );
    }
    if a.enroll_namespace {
        check_enrollment(
            &ns,
            name,
            current_use_waypoint(snap.namespace(&ns)).as_deref(),
            a.overwrite,
        )?;
    }
    let gw = waypoint_gateway(&ns, name, a.spec.traffic_type);
    let yaml = wg::to_yaml(&gw)?;
    let put = env.put_object(
        &snap,
        &key,
        &yaml,
        &env.generated_path("waypoint", &ns, name),
    )?;
    let mut result = ApplyResult {
        waypoint: ObjectResult {
            namespace: ns.clone(),
            name: name.clone(),
            result: put.verb().into(),
            file: Some(put.path().to_path_buf()),
        },
        namespace_label: None,
        programmed: None,
    };
    if ctx.output == OutputFormat::Table {
        let where_ = match &put {
            PutOutcome::Created(p) => format!("written to {}", p.display()),
            PutOutcome::Updated(p) | PutOutcome::Unchanged(p) => format!("in {}", p.display()),
        };
        println!("waypoint {ns}/{name} {} ({where_})", put.verb());
    }
    if a.enroll_namespace {
        let change = env.set_namespace_label(&snap, &ns, USE_WAYPOINT, Some(name))?;
        let verb = if change.edit.changed {
            "labelled"
        } else {
            "unchanged"
        };
        if ctx.output == OutputFormat::Table {
            let file = change
                .file
                .as_ref()
                .map(|f| format!(" ({})", f.display()))
                .unwrap_or_default();
            println!("namespace {ns} {verb}: {USE_WAYPOINT}={name}{file}");
        }
        if change.edit.reformatted {
            eprintln!(
                "note: the Namespace document was rewritten from its parsed form (its layout was \
                 too unusual to edit in place); its comments are gone"
            );
        }
        result.namespace_label = Some(ObjectResult {
            namespace: ns.clone(),
            name: ns.clone(),
            result: verb.into(),
            file: change.file,
        });
    }
    let mut code = EXIT_OK;
    if a.wait {
        match wait_programmed(a.timeout, &ns, name, || local_state(env, &ns, name)).await {
            Ok(_) => result.programmed = Some(true),
            Err(e) => {
                result.programmed = Some(false);
                eprintln!("error: {e}");
                code = EXIT_FAILED;
            }
        }
    }
    finish_apply(ctx, &result)?;
    Ok(code)
}

fn finish_apply(ctx: &Ctx, result: &ApplyResult) -> anyhow::Result<()> {
    match ctx.output {
        OutputFormat::Table => {
            if result.programmed == Some(true) {
                println!(
                    "waypoint {}/{} is programmed",
                    result.waypoint.namespace, result.waypoint.name
                );
            }
        }
        other => print!("{}", output::encode(other, result)?),
    }
    Ok(())
}

fn source_of(snap: &Snapshot, key: &ObjectKey) -> String {
    snap.sources
        .get(key)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the configuration".into())
}

/// Polls `state` until the waypoint is programmed, printing each new status on stderr.
async fn wait_programmed<F, Fut>(
    timeout: Duration,
    ns: &str,
    name: &str,
    mut state: F,
) -> Result<WaypointState, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = WaypointState>,
{
    let deadline = Instant::now() + timeout;
    eprintln!(
        "waiting up to {} for waypoint {ns}/{name} to be programmed...",
        humantime(timeout)
    );
    let mut last = String::new();
    loop {
        let st = state().await;
        if st.programmed == Some(true) {
            return Ok(st);
        }
        let line = describe(&st);
        if line != last {
            eprintln!("  {line}");
            last = line;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {} waiting for waypoint {ns}/{name} to be programmed (last \
                 status: {last}). Check that istiod and the waypoint's pod are running, or raise \
                 --timeout",
                humantime(timeout)
            ));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
}

fn describe(st: &WaypointState) -> String {
    let verdict = match st.programmed {
        Some(true) => "programmed",
        Some(false) => "not programmed",
        None => "status unknown",
    };
    let detail: Vec<&str> = [st.reason.as_deref(), st.message.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if detail.is_empty() {
        verdict.to_string()
    } else {
        format!("{verdict}: {}", detail.join(": "))
    }
}

fn humantime(d: Duration) -> String {
    if !d.as_millis().is_multiple_of(1000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// The waypoint's state in local mode: istiod's `/debug/waypoints` when reachable and served,
/// else the Ready condition of the waypoint's pod in the configuration directory.
async fn local_state(env: &LocalEnv, ns: &str, name: &str) -> WaypointState {
    let from_istiod = istiod_states(env).await;
    let snap = env.snapshot().ok();
    state_from(env, &from_istiod, snap.as_ref(), ns, name)
}

/// What istiod said: its waypoint list, or why there is none.
enum IstiodView {
    NotConfigured,
    NoEndpoint,
    Unreachable(String),
    States(Vec<WaypointState>),
}

async fn istiod_states(env: &LocalEnv) -> IstiodView {
    let Some(istiod) = &env.istiod else {
        return IstiodView::NotConfigured;
    };
    match istiod.waypoints().await {
        Ok(Some(states)) => IstiodView::States(states),
        Ok(None) => IstiodView::NoEndpoint,
        Err(e) => IstiodView::Unreachable(e.to_string()),
    }
}

fn state_from(
    env: &LocalEnv,
    view: &IstiodView,
    snap: Option<&Snapshot>,
    ns: &str,
    name: &str,
) -> WaypointState {
    let base = WaypointState {
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    };
    if let IstiodView::States(states) = view {
        return match states.iter().find(|s| s.namespace == ns && s.name == name) {
            Some(s) => s.clone(),
            None => WaypointState {
                programmed: Some(false),
                reason: Some("NotKnown".into()),
                message: Some("istiod does not list this waypoint (yet)".into()),
                ..base
            },
        };
    }
    let pods = snap.map(|s| waypoint_pods(s, ns, name)).unwrap_or_default();
    if !pods.is_empty() {
        let ready: Vec<&str> = pods
            .iter()
            .filter(|p| wg::pod_ready(p))
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        return if ready.is_empty() {
            WaypointState {
                programmed: Some(false),
                reason: Some("PodNotReady".into()),
                message: Some(format!("{} waypoint pod(s), none Ready", pods.len())),
                ..base
            }
        } else {
            WaypointState {
                programmed: Some(true),
                reason: Some("PodReady".into()),
                message: Some(format!("pod {} is Ready", ready.join(", "))),
                ..base
            }
        };
    }
    let istiod = match view {
        IstiodView::NotConfigured => "no --istiod-url given".to_string(),
        IstiodView::NoEndpoint => "istiod serves no /debug/waypoints".to_string(),
        IstiodView::Unreachable(e) => format!("istiod unreachable ({e})"),
        IstiodView::States(_) => String::new(),
    };
    WaypointState {
        programmed: None,
        reason: Some("Unknown".into()),
        message: Some(format!(
            "{istiod}, and no waypoint pod (label {GATEWAY_NAME_LABEL}={name}) in {}",
            env.config_dir.display()
        )),
        ..base
    }
}

async fn apply_kube(ctx: &Ctx, kube: &KubeEnv, a: &WaypointApplyArgs) -> anyhow::Result<u8> {
    let ns = ctx.kube_namespace(kube);
    let name = &a.spec.name;
    let api = kube.gateways(Some(&ns));
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| KubeError::api(format!("get Gateway {ns}/{name}"), e))?;
    if let Some(obj) = &existing {
        let gw: Gateway = kube_client::typed(obj)?;
        if !is_waypoint(&gw) && !a.overwrite {
            bail!(
                "Gateway {ns}/{name} already exists and is not a waypoint (gatewayClassName \
                 {:?}); choose another --name, or pass --overwrite to replace it",
                gw.spec.gateway_class_name
            );
        }
    }
    if a.enroll_namespace {
        let Some(ns_obj) = kube.get_namespace(&ns).await? else {
            bail!("namespace {ns} does not exist; create it first (kubectl create namespace {ns})");
        };
        check_enrollment(
            &ns,
            name,
            current_use_waypoint(Some(&ns_obj)).as_deref(),
            a.overwrite,
        )?;
    }
    let gw = waypoint_gateway(&ns, name, a.spec.traffic_type);
    kube_client::apply_gateway(kube, &gw, a.overwrite).await?;
    let verb = if existing.is_some() {
        "configured"
    } else {
        "created"
    };
    if ctx.output == OutputFormat::Table {
        println!("waypoint {ns}/{name} {verb}");
    }
    let mut result = ApplyResult {
        waypoint: ObjectResult {
            namespace: ns.clone(),
            name: name.clone(),
            result: verb.into(),
            file: None,
        },
        namespace_label: None,
        programmed: None,
    };
    if a.enroll_namespace {
        kube.label_namespace(&ns, &[(USE_WAYPOINT, Some(name))])
            .await?;
        if ctx.output == OutputFormat::Table {
            println!("namespace {ns} labelled: {USE_WAYPOINT}={name}");
        }
        result.namespace_label = Some(ObjectResult {
            namespace: ns.clone(),
            name: ns.clone(),
            result: "labelled".into(),
            file: None,
        });
    }
    let mut code = EXIT_OK;
    if a.wait {
        let state = || async {
            match kube.gateways(Some(&ns)).get_opt(name).await {
                Ok(Some(obj)) => kube_client::gateway_state(&obj),
                Ok(None) => WaypointState {
                    namespace: ns.clone(),
                    name: name.clone(),
                    programmed: Some(false),
                    reason: Some("NotFound".into()),
                    message: Some("the Gateway is gone".into()),
                    ..Default::default()
                },
                Err(e) => WaypointState {
                    namespace: ns.clone(),
                    name: name.clone(),
                    programmed: None,
                    reason: Some("ApiError".into()),
                    message: Some(e.to_string()),
                    ..Default::default()
                },
            }
        };
        match wait_programmed(a.timeout, &ns, name, state).await {
            Ok(_) => result.programmed = Some(true),
            Err(e) => {
                result.programmed = Some(false);
                eprintln!("error: {e}");
                code = EXIT_FAILED;
            }
        }
    }
    finish_apply(ctx, &result)?;
    Ok(code)
}

/// One waypoint, for `list` and `status`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WaypointRow {
    namespace: String,
    name: String,
    traffic_type: String,
    programmed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
}

fn row(gw: &Gateway, st: WaypointState, file: Option<PathBuf>) -> WaypointRow {
    WaypointRow {
        namespace: gw.metadata.namespace.clone().unwrap_or_default(),
        name: gw.metadata.name.clone().unwrap_or_default(),
        traffic_type: traffic_label(gw).to_string(),
        programmed: st.programmed,
        reason: st.reason,
        message: st.message,
        file,
    }
}

async fn rows_local(env: &LocalEnv, ns: Option<String>) -> anyhow::Result<Vec<WaypointRow>> {
    let snap = env.snapshot()?;
    let view = istiod_states(env).await;
    let mut rows = Vec::new();
    for gw in snap.gateways().filter(|g| is_waypoint(g)) {
        let gns = gw.metadata.namespace.as_deref().unwrap_or_default();
        let gname = gw.metadata.name.as_deref().unwrap_or_default();
        if ns.as_deref().is_some_and(|n| n != gns) {
            continue;
        }
        let st = state_from(env, &view, Some(&snap), gns, gname);
        let key = ObjectKey::new(kind::GATEWAY, gns, gname);
        rows.push(row(gw, st, snap.sources.get(&key).cloned()));
    }
    Ok(rows)
}

async fn rows_kube(kube: &KubeEnv, ns: Option<&str>) -> anyhow::Result<Vec<WaypointRow>> {
    let list = kube
        .gateways(ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::api("list Gateways", e))?;
    let mut rows = Vec::new();
    for obj in &list.items {
        let gw: Gateway = kube_client::typed(obj)?;
        if is_waypoint(&gw) {
            rows.push(row(&gw, kube_client::gateway_state(obj), None));
        }
    }
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

fn programmed_text(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// What an empty list says: the namespace looked in (`None`: every namespace).
fn empty_note(ns: Option<&str>) -> String {
    match ns {
        None => "No waypoints found.\n".into(),
        Some(ns) => format!("No waypoints found in namespace {ns}.\n"),
    }
}

fn print_list(
    ctx: &Ctx,
    rows: &[WaypointRow],
    a: &WaypointListArgs,
    ns: Option<&str>,
) -> anyhow::Result<()> {
    output::print(ctx.output, &rows, || {
        if rows.is_empty() {
            return empty_note(ns);
        }
        let mut headers = vec!["NAME", "TRAFFIC TYPE", "PROGRAMMED"];
        if a.all_namespaces {
            headers.insert(0, "NAMESPACE");
        }
        let mut t = Table::new(headers);
        for r in rows {
            let mut cells = vec![
                r.name.clone(),
                r.traffic_type.clone(),
                programmed_text(r.programmed).to_string(),
            ];
            if a.all_namespaces {
                cells.insert(0, r.namespace.clone());
            }
            t.row(cells);
        }
        t.render()
    })?;
    Ok(())
}

fn print_status(ctx: &Ctx, rows: &[WaypointRow], ns: Option<&str>) -> anyhow::Result<()> {
    output::print(ctx.output, &rows, || {
        if rows.is_empty() {
            return empty_note(ns);
        }
        let mut t = Table::new(["NAMESPACE", "NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]);
        for r in rows {
            t.row([
                r.namespace.clone(),
                r.name.clone(),
                programmed_text(r.programmed).to_string(),
                "Programmed".to_string(),
                r.reason.clone().unwrap_or_default(),
                r.message.clone().unwrap_or_default(),
            ]);
        }
        t.render()
    })?;
    Ok(())
}

/// The waypoints `delete` acts on.
fn delete_targets(a: &WaypointDeleteArgs, all: impl FnOnce() -> Vec<String>) -> Vec<String> {
    if a.all {
        all()
    } else if a.names.is_empty() {
        vec![a.name.clone()]
    } else {
        a.names.clone()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeleteResult {
    namespace: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    /// Objects whose `istio.io/use-waypoint` still names it.
    still_used_by: Vec<String>,
}

fn print_deleted(ctx: &Ctx, results: &[DeleteResult], ns: &str) -> anyhow::Result<()> {
    for r in results {
        if !r.still_used_by.is_empty() {
            eprintln!(
                "warning: {} still use waypoint {}/{} ({USE_WAYPOINT}); their traffic fails until \
                 the label is removed or the waypoint is applied again",
                r.still_used_by.join(", "),
                r.namespace,
                r.name
            );
        }
    }
    output::print(ctx.output, &results, || {
        if results.is_empty() {
            return format!("No waypoints found in namespace {ns}.\n");
        }
        results
            .iter()
            .map(|r| match &r.file {
                Some(f) => format!(
                    "waypoint {}/{} deleted ({})\n",
                    r.namespace,
                    r.name,
                    f.display()
                ),
                None => format!("waypoint {}/{} deleted\n", r.namespace, r.name),
            })
            .collect()
    })?;
    Ok(())
}

fn delete_local(ctx: &Ctx, env: &LocalEnv, a: &WaypointDeleteArgs) -> anyhow::Result<u8> {
    let ns = ctx.local_namespace();
    let mut snap = env.snapshot()?;
    let names = delete_targets(a, || {
        snap.gateways()
            .filter(|g| is_waypoint(g) && g.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter_map(|g| g.metadata.name.clone())
            .collect()
    });
    let mut results = Vec::new();
    for name in names {
        let key = ObjectKey::new(kind::GATEWAY, &ns, &name);
        match snap.get(&key) {
            Some(Object::Gateway(gw)) if is_waypoint(gw) => {}
            Some(Object::Gateway(gw)) => bail!(
                "Gateway {ns}/{name} (in {}) is not a waypoint (gatewayClassName {:?}); meshctl \
                 deletes only waypoints",
                source_of(&snap, &key),
                gw.spec.gateway_class_name
            ),
            _ => bail!(
                "waypoint {ns}/{name} not found in {}; `meshctl waypoint list -A` shows the \
                 waypoints",
                env.config_dir.display()
            ),
        }
        let (file, _removed) = env.delete_object(&snap, &key)?;
        results.push(DeleteResult {
            still_used_by: waypoint_users(&snap, &ns, &name),
            namespace: ns.clone(),
            name,
            file: Some(file),
        });
        // Later deletions may concern the same file.
        snap = env.snapshot()?;
    }
    print_deleted(ctx, &results, &ns)?;
    Ok(EXIT_OK)
}

async fn delete_kube(ctx: &Ctx, kube: &KubeEnv, a: &WaypointDeleteArgs) -> anyhow::Result<u8> {
    let ns = ctx.kube_namespace(kube);
    let api = kube.gateways(Some(&ns));
    let listed = if a.all {
        rows_kube(kube, Some(&ns))
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect()
    } else {
        Vec::new()
    };
    let names = delete_targets(a, || listed);
    // Who still names the waypoints: namespaces and services carrying the label.
    let selector = ListParams::default().labels(USE_WAYPOINT);
    let namespaces: Api<Namespace> = Api::all(kube.client.clone());
    let services: Api<Service> = Api::all(kube.client.clone());
    let mut objects: Vec<Object> = Vec::new();
    if let Ok(list) = namespaces.list(&selector).await {
        objects.extend(list.items.into_iter().map(Object::from));
    }
    if let Ok(list) = services.list(&selector).await {
        objects.extend(list.items.into_iter().map(Object::from));
    }
    let users = Snapshot::from_objects(objects);
    let mut results = Vec::new();
    for name in names {
        let obj = api
            .get_opt(&name)
            .await
            .map_err(|e| KubeError::api(format!("get Gateway {ns}/{name}"), e))?
            .with_context(|| format!("waypoint {ns}/{name} not found"))?;
        let gw: Gateway = kube_client::typed(&obj)?;
        if !is_waypoint(&gw) {
            bail!(
                "Gateway {ns}/{name} is not a waypoint (gatewayClassName {:?}); meshctl deletes \
                 only waypoints",
                gw.spec.gateway_class_name
            );
        }
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| KubeError::api(format!("delete Gateway {ns}/{name}"), e))?;
        results.push(DeleteResult {
            still_used_by: waypoint_users(&users, &ns, &name),
            namespace: ns.clone(),
            name,
            file: None,
        });
    }
    print_deleted(ctx, &results, &ns)?;
    Ok(EXIT_OK)
}
