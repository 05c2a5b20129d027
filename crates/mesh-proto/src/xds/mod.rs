//! Delta xDS (`envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources`):
//! a resource store, the server core istiod serves it with, and the client ztunnel and the
//! waypoint consume it with.
//!
//! Semantics, per stream and type URL:
//! - The first request's `resource_names_subscribe` empty or containing `*` makes a wildcard
//!   subscription; otherwise names are subscribed individually. Both change at any time.
//! - `initial_resource_versions` lists what a reconnecting client holds: resources it holds at
//!   the current version are not resent, names that no longer exist are sent as removals.
//! - Resource versions are digests of the resource bytes, so they stay valid across server
//!   restarts; the store-wide version (a counter) is reported in `system_version_info` and to
//!   [`ServerHooks::on_ack`].
//! - Every response has a fresh nonce. A request echoing it without `error_detail` is an ACK,
//!   with `error_detail` a NACK; NACKed resources are not resent until they change.
//! - The first request of a type is always answered (possibly empty) so the client knows when
//!   its initial state is complete. Later, only changes are pushed, one unacknowledged response
//!   per type at a time; changes made meanwhile are merged into the next response.
//! - A subscribed name that does not exist is not answered until it appears.

mod client;
mod connector;
mod error;
mod server;
mod store;
mod stream;

pub use client::{ClientConfig, ClientHandler, Subscription, XdsClient};
pub use connector::TlsChannelConnector;
pub use error::XdsError;
pub use identity::Identity;
pub use server::{ClientStatus, NoHooks, ServerHooks, TypeStatus, XdsServer};
pub use store::ResourceStore;
