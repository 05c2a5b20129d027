use super::*;

fn settings() -> WaypointSettings {
    WaypointSettings {
        image: "registry.local/waypoint:1.2".into(),
        image_pull_policy: "IfNotPresent".into(),
        trust_domain: "cluster.local".into(),
        xds_address: "https://istiod.istio-system.svc:15012".into(),
        istiod_identity: "spiffe://cluster.local/ns/istio-system/sa/istiod".into(),
        token_audience: "istio-ca".into(),
    }
}

fn gateway() -> Gateway {
    let snap = mesh_config::Snapshot::from_yaml(
        "gw.yaml",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: reviews-wp, namespace: bookinfo, uid: 5f1c-uid}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#,
    );
    snap.gateways().next().cloned().expect("one gateway")
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

#[test]
fn every_object_is_named_like_the_gateway_and_owned_by_it() {
    let objs = waypoint_objects(&gateway(), &settings()).expect("complete gateway");
    for meta in [
        &objs.service_account.metadata,
        &objs.deployment.metadata,
        &objs.service.metadata,
    ] {
        assert_eq!(meta.name.as_deref(), Some("reviews-wp"));
        assert_eq!(meta.namespace.as_deref(), Some("bookinfo"));
        assert_eq!(label(meta, GATEWAY_NAME_LABEL), Some("reviews-wp"));
        let owners = meta.owner_references.as_deref().expect("owned");
        assert_eq!(
            owners,
            [OwnerReference {
                api_version: "gateway.networking.k8s.io/v1".into(),
                kind: "Gateway".into(),
                name: "reviews-wp".into(),
                uid: "5f1c-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        );
    }
    // Serialized for server-side apply, each carries its type.
    let json = serde_json::to_value(&objs.deployment).expect("serializable");
    assert_eq!(json["apiVersion"], "apps/v1");
    assert_eq!(json["kind"], "Deployment");
}

#[test]
fn the_deployment_runs_the_waypoint_with_its_identity_and_trust() {
    let objs = waypoint_objects(&gateway(), &settings()).expect("complete gateway");
    let spec = objs.deployment.spec;
    assert_eq!(
        spec.selector.match_labels.expect("selector")[GATEWAY_NAME_LABEL],
        "reviews-wp"
    );
    assert_eq!(
        spec.replicas, None,
        "replicas are left to the user or an autoscaler"
    );
    let template = spec.template;
    let meta = template.metadata.expect("pod metadata");
    assert_eq!(label(&meta, GATEWAY_NAME_LABEL), Some("reviews-wp"));
    assert_eq!(label(&meta, "istio.io/dataplane-mode"), Some("none"));
    let pod = template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("reviews-wp"));
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.local/waypoint:1.2")
    );
    assert_eq!(
        container.args.as_deref().expect("args"),
        [
            "--name=reviews-wp",
            "--namespace=bookinfo",
            "--service-account=reviews-wp",
            "--trust-domain=cluster.local",
            "--xds-address=https://istiod.istio-system.svc:15012",
            "--istiod-identity=spiffe://cluster.local/ns/istio-system/sa/istiod",
            "--ca-root-file=/var/run/secrets/istio/root-cert.pem",
            "--token-file=/var/run/secrets/tokens/istio-token",
        ]
    );
    let volumes = pod.volumes.expect("volumes");
    let token = volumes[0].projected.as_ref().expect("projected token");
    let projection = token.sources.as_ref().expect("sources")[0]
        .service_account_token
        .as_ref()
        .expect("token");
    assert_eq!(projection.audience.as_deref(), Some("istio-ca"));
    assert_eq!(projection.path, "istio-token");
    assert_eq!(
        volumes[1].config_map.as_ref().map(|c| c.name.as_str()),
        Some("istio-ca-root-cert")
    );
    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts,
        ["/var/run/secrets/tokens", "/var/run/secrets/istio"]
    );
}

#[test]
fn the_service_exposes_hbone_status_and_metrics() {
    let objs = waypoint_objects(&gateway(), &settings()).expect("complete gateway");
    let spec = objs.service.spec.expect("spec");
    let ports: Vec<(Option<&str>, i32)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("mesh"), 15008),
            (Some("status-port"), 15021),
            (Some("metrics"), 15020)
        ]
    );
    assert_eq!(
        spec.selector.expect("selector")[GATEWAY_NAME_LABEL],
        "reviews-wp"
    );
}

#[test]
fn a_gateway_without_uid_cannot_own_anything_yet() {
    let mut gw = gateway();
    gw.metadata.uid = None;
    assert_eq!(
        waypoint_objects(&gw, &settings()).expect_err("no uid"),
        DesiredError::Incomplete("uid")
    );
}
