//! `meshctl analyze [FILES...]`: offline on files, on `--config-dir`, or in the cluster.
//! Exit codes: 0 no error, 1 warnings only with `--fail-on-warning`, 2 errors, 3 the analysis
//! could not run.

use std::collections::BTreeMap;

use kube::api::ListParams;
use mesh_config::objects::kind;
use mesh_config::{Object, ObjectKey};
use serde::Serialize;
use serde_json::Value;

use crate::analyze::{self, Finding, Input, Options, documents};
use crate::cli::AnalyzeArgs;
use crate::context::{Ctx, Mode};
use crate::kube_client::{self, KubeEnv, KubeError};
use crate::output::{self, OutputFormat};

pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_WARNINGS: u8 = 1;
pub const EXIT_ERRORS: u8 = 2;
pub const EXIT_CANNOT_RUN: u8 = 3;

#[derive(Debug, Serialize)]
struct Report<'a> {
    /// What was analyzed: files, a directory, or `cluster`.
    source: String,
    errors: usize,
    warnings: usize,
    findings: &'a [Finding],
}

pub async fn run(ctx: &Ctx, args: &AnalyzeArgs) -> u8 {
    match analyze(ctx, args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_CANNOT_RUN
        }
    }
}

async fn analyze(ctx: &Ctx, args: &AnalyzeArgs) -> anyhow::Result<u8> {
    let ns_filter = (!args.all_namespaces)
        .then(|| ctx.namespace.clone())
        .flatten();
    let (source, input) = if !args.files.is_empty() {
        let input = analyze::load_paths(&args.files)?;
        let names: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
        (names.join(", "), input)
    } else {
        match &ctx.mode {
            Mode::Local(env) => {
                if !env.config_dir.is_dir() {
                    anyhow::bail!(
                        "configuration directory {} does not exist or is not a directory",
                        env.config_dir.display()
                    );
                }
                let input = analyze::load_paths(std::slice::from_ref(&env.config_dir))?;
                (env.config_dir.display().to_string(), input)
            }
            Mode::Kube(s) => {
                let kube = Ctx::kube(s).await?;
                let input = cluster_input(&kube).await?;
                ("cluster".to_string(), input)
            }
        }
    };
    let opts = Options {
        root_namespace: args.root_namespace.clone(),
    };
    let mut findings = analyze::analyze(&input, &opts);
    if let Some(ns) = &ns_filter {
        findings.retain(|f| f.namespace.as_deref().is_none_or(|n| n == ns));
    }
    let (errors, warnings) = analyze::counts(&findings);
    let report = Report {
        source: source.clone(),
        errors,
        warnings,
        findings: &findings,
    };
    match ctx.output {
        OutputFormat::Table => print!("{}", render(&findings, &source)),
        other => print!("{}", output::encode(other, &report)?),
    }
    Ok(if errors > 0 {
        EXIT_ERRORS
    } else if warnings > 0 && args.fail_on_warning {
        EXIT_WARNINGS
    } else {
        EXIT_CLEAN
    })
}

/// `Error [MESH0003] AuthorizationPolicy shop/p (file:line)`, the message and the fix, then a
/// summary.
pub fn render(findings: &[Finding], source: &str) -> String {
    if findings.is_empty() {
        return format!("No validation issues found in {source}.\n");
    }
    let mut out = String::new();
    for f in findings {
        let location = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!(" ({}:{line})", file.display()),
            (Some(file), None) => format!(" ({})", file.display()),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{} [{}] {}{location}\n    {}\n    Fix: {}\n",
            f.severity.title(),
            f.code,
            f.object,
            f.message,
            f.fix
        ));
    }
    let (errors, warnings) = analyze::counts(findings);
    out.push_str(&format!(
        "\n{errors} error{}, {warnings} warning{} in {source}.\n",
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" }
    ));
    out
}

/// Reads the mesh's objects from the cluster (kinds whose CRDs are missing are skipped, with a
/// note).
async fn cluster_input(kube: &KubeEnv) -> anyhow::Result<Input> {
    use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
    use kube::api::Api;

    let mut objects: Vec<Object> = Vec::new();
    let lp = ListParams::default();
    let ns_api: Api<Namespace> = Api::all(kube.client.clone());
    let pod_api: Api<Pod> = Api::all(kube.client.clone());
    let svc_api: Api<Service> = Api::all(kube.client.clone());
    objects.extend(
        ns_api
            .list(&lp)
            .await
            .map_err(|e| KubeError::api("list namespaces", e))?
            .items
            .into_iter()
            .map(Object::from),
    );
    objects.extend(
        pod_api
            .list(&lp)
            .await
            .map_err(|e| KubeError::api("list pods", e))?
            .items
            .into_iter()
            .map(Object::from),
    );
    objects.extend(
        svc_api
            .list(&lp)
            .await
            .map_err(|e| KubeError::api("list services", e))?
            .items
            .into_iter()
            .map(Object::from),
    );
    let mut raw: BTreeMap<ObjectKey, Value> = BTreeMap::new();
    let mut load_findings = Vec::new();
    let dynamic = [
        (kube_client::gateway_resource(), kind::GATEWAY),
        (kube_client::http_route_resource(), kind::HTTP_ROUTE),
        (kube_client::grpc_route_resource(), kind::GRPC_ROUTE),
        (
            kube_client::authorization_policy_resource(),
            kind::AUTHORIZATION_POLICY,
        ),
        (
            kube_client::peer_authentication_resource(),
            kind::PEER_AUTHENTICATION,
        ),
    ];
    for (ar, kind_name) in dynamic {
        let api = kube_client::dynamic_api(&kube.client, &ar, None);
        let list = match api.list(&lp).await {
            Ok(l) => l,
            Err(e) => {
                let e = KubeError::api(format!("list {}", ar.plural), e);
                if e.code() == Some(404) {
                    eprintln!(
                        "note: {} ({}) is not served by this cluster; skipped",
                        ar.kind, ar.api_version
                    );
                    continue;
                }
                return Err(e.into());
            }
        };
        for mut obj in list.items {
            // List items may come without their type; the parser needs it.
            if obj.types.is_none() {
                obj.types = Some(kube::api::TypeMeta {
                    api_version: ar.api_version.clone(),
                    kind: ar.kind.clone(),
                });
            }
            let value = serde_json::to_value(&obj)?;
            let parsed = mesh_config::parse_manifests(&serde_json::to_string(&value)?);
            let key = documents::doc_key(&value);
            for err in parsed.errors {
                load_findings.push(Finding {
                    code: documents::INVALID_MANIFEST,
                    severity: analyze::Severity::Error,
                    object: err
                        .object_label()
                        .unwrap_or_else(|| format!("{kind_name} (unnamed)")),
                    file: None,
                    line: None,
                    message: err.reason,
                    fix: "correct the object; istiod skips it".into(),
                    namespace: key.as_ref().map(|k| k.namespace.clone()),
                });
            }
            if let Some(key) = key {
                raw.insert(key, value);
            }
            objects.extend(parsed.objects);
        }
    }
    let snapshot = mesh_config::Snapshot::from_objects(objects);
    Ok(Input {
        documents: documents::cluster_documents(&raw),
        locations: BTreeMap::new(),
        load_findings,
        snapshot,
    })
}
