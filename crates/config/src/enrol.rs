//! The labels and annotations of the ambient contract, and who is enrolled.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Namespace and pod label: `ambient` enrols, `none` opts a pod out.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// Value of [`DATAPLANE_MODE`] that enrols.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
/// Value of [`DATAPLANE_MODE`] that opts out.
pub const DATAPLANE_MODE_NONE: &str = "none";
/// Namespace, Service and Pod label naming the waypoint to use (`none` opts out).
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// Namespace of the waypoint named by [`USE_WAYPOINT`] when it is not the object's own.
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
/// Gateway label: which traffic a waypoint handles (`service`, `workload`, `all`, `none`).
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
/// Label on Gateway proxy pods (waypoints included) naming their Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Pod annotation the CNI agent sets once the pod's traffic is redirected.
pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
/// Value of [`REDIRECTION_ANNOTATION`] on redirected pods.
pub const REDIRECTION_ENABLED: &str = "enabled";

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether the namespace carries `istio.io/dataplane-mode=ambient`.
pub fn namespace_enrolled(ns: &Namespace) -> bool {
    label(&ns.metadata, DATAPLANE_MODE) == Some(DATAPLANE_MODE_AMBIENT)
}

/// Pod enrolled in ambient: pod label `istio.io/dataplane-mode=none` opts out, `=ambient` opts
/// in, otherwise the namespace label decides. Host-network pods are never enrolled, and neither
/// are Gateway proxy pods ([`pod_gateway_name`]): waypoints speak HBONE themselves and must never
/// have their own traffic redirected, whatever their labels say.
pub fn pod_enrolled(pod: &Pod, ns: Option<&Namespace>) -> bool {
    if pod_host_network(pod) || pod_gateway_name(pod).is_some() {
        return false;
    }
    match label(&pod.metadata, DATAPLANE_MODE) {
        Some(DATAPLANE_MODE_NONE) => false,
        Some(DATAPLANE_MODE_AMBIENT) => true,
        _ => ns.is_some_and(namespace_enrolled),
    }
}

/// The Gateway a proxy pod serves (label [`GATEWAY_NAME_LABEL`]); `None` for other pods.
pub fn pod_gateway_name(pod: &Pod) -> Option<&str> {
    label(&pod.metadata, GATEWAY_NAME_LABEL).filter(|name| !name.is_empty())
}

/// Whether the pod shares its node's network namespace.
pub fn pod_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's uid: `metadata.uid`, or `<namespace>/<name>` for manifests without one (local mode
/// files usually have none; the directory source fills this value in when it reads them).
pub fn pod_uid(pod: &Pod) -> String {
    match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => format!(
            "{}/{}",
            pod.metadata
                .namespace
                .as_deref()
                .unwrap_or(crate::parse::DEFAULT_NAMESPACE),
            pod.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

/// The pod's service account (`default` when unset).
pub fn pod_service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default")
}

/// The waypoint an object asks for through [`USE_WAYPOINT`]: `Some(None)` for the explicit
/// opt-out `none`, `Some(Some(name))` for a waypoint, `None` when the label is absent.
pub fn use_waypoint(meta: &ObjectMeta) -> Option<Option<&str>> {
    match label(meta, USE_WAYPOINT)? {
        "none" => Some(None),
        name => Some(Some(name)),
    }
}

/// The namespace of the waypoint an object names through [`USE_WAYPOINT_NAMESPACE`], if set.
pub fn use_waypoint_namespace(meta: &ObjectMeta) -> Option<&str> {
    label(meta, USE_WAYPOINT_NAMESPACE).filter(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("x".into()),
            namespace: Some("demo".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn ns(labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: meta(labels),
            ..Default::default()
        }
    }

    fn pod(labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: meta(labels),
            ..Default::default()
        }
    }

    #[test]
    fn namespace_label_enrols_pods() {
        let ambient = ns(&[(DATAPLANE_MODE, "ambient")]);
        assert!(pod_enrolled(&pod(&[]), Some(&ambient)));
        assert!(!pod_enrolled(&pod(&[]), Some(&ns(&[]))));
        assert!(!pod_enrolled(&pod(&[]), None));
    }

    #[test]
    fn pod_label_overrides_namespace() {
        let ambient = ns(&[(DATAPLANE_MODE, "ambient")]);
        assert!(!pod_enrolled(
            &pod(&[(DATAPLANE_MODE, "none")]),
            Some(&ambient)
        ));
        assert!(pod_enrolled(
            &pod(&[(DATAPLANE_MODE, "ambient")]),
            Some(&ns(&[]))
        ));
        assert!(pod_enrolled(&pod(&[(DATAPLANE_MODE, "ambient")]), None));
    }

    #[test]
    fn host_network_pods_are_never_enrolled() {
        let mut p = pod(&[(DATAPLANE_MODE, "ambient")]);
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert!(!pod_enrolled(&p, Some(&ns(&[(DATAPLANE_MODE, "ambient")]))));
    }

    #[test]
    fn gateway_proxy_pods_are_never_enrolled() {
        let ambient = ns(&[(DATAPLANE_MODE, "ambient")]);
        let wp = pod(&[(GATEWAY_NAME_LABEL, "waypoint")]);
        assert_eq!(pod_gateway_name(&wp), Some("waypoint"));
        assert!(!pod_enrolled(&wp, Some(&ambient)));
        let explicit = pod(&[
            (GATEWAY_NAME_LABEL, "waypoint"),
            (DATAPLANE_MODE, "ambient"),
        ]);
        assert!(!pod_enrolled(&explicit, Some(&ambient)));
        assert_eq!(pod_gateway_name(&pod(&[(GATEWAY_NAME_LABEL, "")])), None);
    }

    #[test]
    fn uid_falls_back_to_namespace_and_name() {
        let mut p = pod(&[]);
        assert_eq!(pod_uid(&p), "demo/x");
        p.metadata.uid = Some("1234-abcd".into());
        assert_eq!(pod_uid(&p), "1234-abcd");
    }

    #[test]
    fn service_account_defaults() {
        assert_eq!(pod_service_account(&pod(&[])), "default");
        let mut p = pod(&[]);
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            service_account_name: Some("reviews".into()),
            ..Default::default()
        });
        assert_eq!(pod_service_account(&p), "reviews");
    }

    #[test]
    fn use_waypoint_label() {
        assert_eq!(use_waypoint(&meta(&[])), None);
        assert_eq!(use_waypoint(&meta(&[(USE_WAYPOINT, "none")])), Some(None));
        assert_eq!(
            use_waypoint(&meta(&[(USE_WAYPOINT, "wp")])),
            Some(Some("wp"))
        );
        assert_eq!(use_waypoint_namespace(&meta(&[])), None);
        assert_eq!(
            use_waypoint_namespace(&meta(&[(USE_WAYPOINT_NAMESPACE, "infra")])),
            Some("infra")
        );
    }
}
