//! HTTP GETs to a pod's port through the API server's port-forward (`pods/portforward`), as
//! `kubectl port-forward` does: it reaches ports bound to the pod's localhost too (ztunnel's
//! admin on 15000) and needs no route from this machine to the pod network.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;

use super::K8sError;

/// `GET path` on `namespace/pod:port`; returns the status code and the body.
pub async fn http_get(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let err = |reason: String| K8sError::PortForward {
        pod: format!("{namespace}/{pod}"),
        port,
        reason,
    };
    let work = async {
        let mut pf = api
            .portforward(pod, &[port])
            .await
            .map_err(|e| err(e.to_string()))?;
        let stream = pf
            .take_stream(port)
            .ok_or_else(|| err("no stream for the port".into()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| err(format!("request {path}: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| err(format!("GET {path}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(format!("reading the body of GET {path}: {e}")))?
            .to_bytes();
        driver.abort();
        pf.abort();
        Ok::<_, K8sError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| err(format!("no answer to GET {path} within {timeout:?}")))?
}

/// Like [`http_get`], but anything other than 200 is an error.
pub async fn http_get_ok(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<String, K8sError> {
    let (status, body) = http_get(client, namespace, pod, port, path, timeout).await?;
    if status == 200 {
        Ok(body)
    } else {
        Err(K8sError::PortForward {
            pod: format!("{namespace}/{pod}"),
            port,
            reason: format!(
                "GET {path} answered {status}: {}",
                body.chars().take(300).collect::<String>()
            ),
        })
    }
}
