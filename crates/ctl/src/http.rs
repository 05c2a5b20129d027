//! A small HTTP/1.1 GET client for the components' plain-HTTP debug endpoints (istiod's
//! monitoring port, ztunnel's admin port), directly over TCP or over any byte stream (a
//! Kubernetes port-forward).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("request to {url} failed: {source}")]
    Request { url: String, source: hyper::Error },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not answer JSON: {source}")]
    Json {
        url: String,
        source: serde_json::Error,
    },
}

impl HttpError {
    /// The HTTP status of an error answer, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Joins a base URL (`http://host:port` with or without a trailing slash or path) and a path.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// `GET url`; a non-2xx answer is an error carrying the body's first line.
pub async fn get(url: &str, timeout: Duration) -> Result<Bytes, HttpError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| HttpError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(HttpError::Url {
                url: url.to_string(),
                reason: format!(
                    "scheme {other:?} is not supported; the monitoring and admin endpoints \
                     serve plain http://"
                ),
            });
        }
        None => {
            return Err(HttpError::Url {
                url: url.to_string(),
                reason: "expected http://host:port".into(),
            });
        }
    }
    let Some(authority) = uri.authority().map(|a| a.as_str().to_string()) else {
        return Err(HttpError::Url {
            url: url.to_string(),
            reason: "no host".into(),
        });
    };
    let addr = if uri.port_u16().is_some() {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let work = async {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|source| HttpError::Connect {
                url: url.to_string(),
                source,
            })?;
        get_over(stream, &authority, &path, url).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.to_string(),
            timeout,
        })?
}

/// `GET path` over an established byte stream; `url` names the target in errors.
pub async fn get_over<IO>(io: IO, host: &str, path: &str, url: &str) -> Result<Bytes, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_err = |source| HttpError::Request {
        url: url.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(request_err)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "application/json, text/plain")
        .body(Empty::<Bytes>::new())
        .map_err(|e| HttpError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let resp = sender.send_request(req).await.map_err(request_err)?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(request_err)?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(HttpError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body: text.lines().next().unwrap_or("").trim().to_string(),
        });
    }
    Ok(body)
}

/// `GET url` and decode the JSON answer.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    url: &str,
    timeout: Duration,
) -> Result<T, HttpError> {
    let body = get(url, timeout).await?;
    serde_json::from_slice(&body).map_err(|source| HttpError::Json {
        url: url.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(
            join("http://h:1/", "/debug/x"),
            "http://h:1/debug/x".to_string()
        );
        assert_eq!(join("http://h:1", "ready"), "http://h:1/ready".to_string());
    }

    #[tokio::test]
    async fn https_and_garbage_are_refused_with_a_reason() {
        let err = get("https://127.0.0.1:1/x", Duration::from_secs(1))
            .await
            .expect_err("https");
        assert!(err.to_string().contains("plain http://"), "{err}");
        let err = get("127.0.0.1:15000", Duration::from_secs(1))
            .await
            .expect_err("no scheme");
        assert!(err.to_string().contains("invalid URL"), "{err}");
    }
}
