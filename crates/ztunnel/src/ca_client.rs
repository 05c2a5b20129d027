//! Certificates from istiod's CA (`istio.v1.auth.IstioCertificateService`), authenticated with
//! the node's bearer token; ztunnel asks on behalf of the pods it serves.

use std::time::Duration;

use identity::Identity;
use identity::manager::{CaClient, ManagerError};
use mesh_proto::proto::ca::IstioCertificateRequest;
use mesh_proto::proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use prost_types::value::Kind;
use tonic::transport::Channel;

/// Requested certificate lifetime.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Where the bearer token comes from: read again for every request, so a rotated projected
/// ServiceAccount token is picked up.
#[derive(Clone, Debug)]
pub enum TokenSource {
    None,
    Static(String),
    File(std::path::PathBuf),
}

impl TokenSource {
    fn read(&self) -> Result<Option<String>, ManagerError> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Static(t) => Ok(Some(t.clone())),
            TokenSource::File(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| {
                    ManagerError::CaRequest(format!(
                        "cannot read the token file {}: {e}",
                        p.display()
                    ))
                }),
        }
    }
}

pub struct GrpcCaClient {
    channel: Channel,
    token: TokenSource,
}

impl GrpcCaClient {
    pub fn new(channel: Channel, token: TokenSource) -> Self {
        GrpcCaClient { channel, token }
    }
}

#[async_trait::async_trait]
impl CaClient for GrpcCaClient {
    async fn sign(&self, id: &Identity, csr_pem: &str) -> Result<Vec<String>, ManagerError> {
        let mut metadata = prost_types::Struct::default();
        metadata.fields.insert(
            "ImpersonatedIdentity".into(),
            prost_types::Value {
                kind: Some(Kind::StringValue(id.to_string())),
            },
        );
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: VALIDITY.as_secs() as i64,
            metadata: Some(metadata),
        });
        if let Some(t) = self.token.read()? {
            let v = format!("Bearer {t}").parse().map_err(|_| {
                ManagerError::CaRequest("the node token is not a valid header value".into())
            })?;
            req.metadata_mut().insert("authorization", v);
        }
        let resp = IstioCertificateServiceClient::new(self.channel.clone())
            .create_certificate(req)
            .await
            .map_err(|s| {
                ManagerError::CaRequest(format!(
                    "istiod refused the certificate for {id}: {}",
                    s.message()
                ))
            })?;
        Ok(resp.into_inner().cert_chain)
    }
}
