//! SPIFFE identities, the mesh CA, workload certificates and mutual-TLS configurations that verify
//! peers by SPIFFE id.
#![forbid(unsafe_code)]

pub mod ca;
pub mod cert;
pub mod csr;
pub mod manager;
pub mod spiffe;
pub mod tls;

pub use async_trait::async_trait;
pub use ca::{CaError, CertificateAuthority};
pub use cert::{CertError, WorkloadCertificate};
pub use csr::{CsrBundle, CsrError, generate_csr};
pub use manager::{
    CaClient, CertInfo, CertState, CertificateManager, LocalCa, ManagerConfig, ManagerError,
};
pub use spiffe::{Identity, SpiffeError};
pub use tls::{
    ALPN_H2, PeerPolicy, TlsError, client_config, install_crypto_provider, peer_identity,
    server_config,
};
