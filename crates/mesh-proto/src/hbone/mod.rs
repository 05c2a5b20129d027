//! HBONE: TCP tunnelled as HTTP/2 CONNECT streams over mutual TLS 1.3 to port 15008.
//!
//! The `:authority` of each CONNECT is the target `ip:port`; the server answers 200 and bytes
//! then flow both ways. Peers are authenticated by the SPIFFE identity in their certificates
//! (see the `identity` crate for the TLS configurations).

mod client;
mod drain;
mod error;
mod info;
mod pool;
mod server;
pub mod settings;
mod stream;

pub use client::{ClientConnection, connect_once};
pub use drain::{Drain, DrainTrigger};
pub use error::{FailureSide, HboneError};
pub use info::ConnectionInfo;
pub use pool::{Pool, PoolConfig, PoolKey};
pub use server::{Handler, InboundRequest, Responder, parse_authority, serve, serve_connection};
pub use stream::{H2ReadHalf, H2Stream, H2WriteHalf, LINGER_TIMEOUT};

/// Port of the HBONE listener.
pub const HBONE_PORT: u16 = 15008;
