//! The typed configuration the waypoint runs with; printed at start-up and served on the admin
//! `config_dump`.

use std::net::SocketAddr;
use std::path::PathBuf;

use identity::Identity;
use serde::Serialize;

use crate::cli::Args;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--istiod-identity: {0}")]
    IstiodIdentity(identity::SpiffeError),
    #[error("the waypoint identity {0:?} is not a valid SPIFFE id")]
    Identity(String),
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} uses https but no --ca-root-file was given")]
    MissingRoot(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Waypoint (Gateway) name and namespace; the xDS resource is `<namespace>/<name>`.
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub trust_domain: String,
    pub xds_address: String,
    pub ca_address: String,
    pub ca_root_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    #[serde(serialize_with = "ser_display")]
    pub istiod_identity: Identity,
    pub listen: SocketAddr,
    pub metrics_address: SocketAddr,
    pub readiness_address: SocketAddr,
    pub admin_address: SocketAddr,
    pub otlp_endpoint: Option<String>,
    pub pool_max_streams: u32,
    /// Port of the destination ztunnels' HBONE listeners.
    pub hbone_port: u16,
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
        for addr in [&a.xds_address, &ca_address] {
            if addr.starts_with("https://") && a.ca_root_file.is_none() {
                return Err(ConfigError::MissingRoot(addr.clone()));
            }
        }
        let cfg = Config {
            name: a.name.clone(),
            namespace: a.namespace.clone(),
            service_account: a.service_account.clone(),
            trust_domain: a.trust_domain.clone(),
            xds_address: a.xds_address.clone(),
            ca_address,
            ca_root_file: a.ca_root_file.clone(),
            token_file: a.token_file.clone(),
            istiod_identity: a
                .istiod_identity
                .parse()
                .map_err(ConfigError::IstiodIdentity)?,
            listen: a.listen,
            metrics_address: a.metrics_address,
            readiness_address: a.readiness_address,
            admin_address: a.admin_address,
            otlp_endpoint: a.otlp_endpoint.clone(),
            pool_max_streams: a.pool_max_streams,
            hbone_port: mesh_proto::hbone::HBONE_PORT,
        };
        let id = cfg.identity();
        id.uri()
            .parse::<Identity>()
            .map_err(|_| ConfigError::Identity(id.uri()))?;
        Ok(cfg)
    }

    /// The waypoint's own SPIFFE identity.
    pub fn identity(&self) -> Identity {
        Identity::new(
            self.trust_domain.clone(),
            self.namespace.clone(),
            self.service_account.clone(),
        )
    }

    /// Name of the `mesh.waypoint.v1.Waypoint` resource to subscribe to.
    pub fn resource_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The bearer token, re-read on each call so a rotated token file is picked up.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        read_opt(self.token_file.as_ref(), "token file").map(|t| t.map(|t| t.trim().to_string()))
    }

    pub fn root_pem(&self) -> Result<Option<String>, ConfigError> {
        read_opt(self.ca_root_file.as_ref(), "CA root file")
    }
}

fn read_opt(path: Option<&PathBuf>, what: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(p) = path else {
        return Ok(None);
    };
    std::fs::read_to_string(p)
        .map(Some)
        .map_err(|source| ConfigError::Read {
            what,
            path: p.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Args {
        let base = [
            "waypoint",
            "--name",
            "waypoint",
            "--namespace",
            "bookinfo",
            "--service-account",
            "waypoint",
        ];
        Args::try_parse_from(base.iter().chain(extra)).expect("flags")
    }

    #[test]
    fn identity_resource_and_defaults() {
        let cfg =
            Config::from_args(&parse(&["--xds-address", "http://istiod:15010"])).expect("config");
        assert_eq!(
            cfg.identity().uri(),
            "spiffe://cluster.local/ns/bookinfo/sa/waypoint"
        );
        assert_eq!(cfg.resource_name(), "bookinfo/waypoint");
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:15008");
        assert_eq!(cfg.admin_address.to_string(), "127.0.0.1:15000");
        assert_eq!(cfg.ca_address, "http://istiod:15010");
        assert_eq!(cfg.hbone_port, 15008);
    }

    #[test]
    fn https_needs_the_root() {
        let err = Config::from_args(&parse(&[])).expect_err("default xds is https");
        assert!(err.to_string().contains("no --ca-root-file"), "{err}");
    }
}
