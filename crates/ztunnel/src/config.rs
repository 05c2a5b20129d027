//! The typed configuration ztunnel runs with; printed at start-up and served on `config_dump`.

use std::net::SocketAddr;
use std::path::PathBuf;

use identity::Identity;
use serde::Serialize;

use crate::cli::Args;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--istiod-identity: {0}")]
    IstiodIdentity(identity::spiffe::SpiffeError),
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--xds-address {0:?} uses https but no --ca-root-file was given")]
    MissingRoot(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub node_name: String,
    pub xds_address: String,
    pub ca_address: String,
    pub ca_root_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub trust_domain: String,
    #[serde(serialize_with = "ser_display")]
    pub istiod_identity: Identity,
    pub zds_socket: PathBuf,
    pub admin_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub readiness_address: SocketAddr,
    pub pool_max_streams: u32,
    pub local_config: Option<PathBuf>,
    pub local_ca_dir: Option<PathBuf>,
}

fn ser_display<S: serde::Serializer>(v: &Identity, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Config {
    pub fn from_args(a: &Args) -> Result<Self, ConfigError> {
        let ca_address = a
            .ca_address
            .clone()
            .unwrap_or_else(|| a.xds_address.clone());
        let uses_xds = a.local_config.is_none();
        let uses_ca = a.local_ca_dir.is_none();
        for (addr, used) in [(&a.xds_address, uses_xds), (&ca_address, uses_ca)] {
            if used && addr.starts_with("https://") && a.ca_root_file.is_none() {
                return Err(ConfigError::MissingRoot(addr.clone()));
            }
        }
        Ok(Config {
            node_name: a.node_name.clone(),
            xds_address: a.xds_address.clone(),
            ca_address,
            ca_root_file: a.ca_root_file.clone(),
            token_file: a.token_file.clone(),
            trust_domain: a.trust_domain.clone(),
            istiod_identity: a
                .istiod_identity
                .parse()
                .map_err(ConfigError::IstiodIdentity)?,
            zds_socket: a.zds_socket.clone(),
            admin_address: a.admin_address,
            metrics_address: a.metrics_address,
            readiness_address: a.readiness_address,
            pool_max_streams: a.pool_max_streams,
            local_config: a.local_config.clone(),
            local_ca_dir: a.local_ca_dir.clone(),
        })
    }

    /// The node token, re-read on each call so a rotated token file is picked up.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let Some(p) = &self.token_file else {
            return Ok(None);
        };
        std::fs::read_to_string(p)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|source| ConfigError::Read {
                what: "token file",
                path: p.clone(),
                source,
            })
    }

    pub fn root_pem(&self) -> Result<Option<String>, ConfigError> {
        let Some(p) = &self.ca_root_file else {
            return Ok(None);
        };
        std::fs::read_to_string(p)
            .map(Some)
            .map_err(|source| ConfigError::Read {
                what: "CA root file",
                path: p.clone(),
                source,
            })
    }
}
