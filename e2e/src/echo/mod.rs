//! `mesh-echo`: the test application the demo and the end-to-end tests run inside pods.
//!
//! - `mesh-echo server --tcp PORT --http PORT [--name POD]`: a TCP echo server and an HTTP/1.1
//!   server whose JSON body names the pod, the method, the path and the request headers;
//!   `/status/<code>` answers with that status code. With `--fail-every N` one request in every
//!   N (the first included) is answered 503; `GET /_echo/stats` reports the requests served and
//!   failed.
//! - `mesh-echo client tcp ADDR --message X`: sends X, prints the echoed reply, fails clearly
//!   when the connection is refused, reset or closed before the whole echo came back.
//! - `mesh-echo client http URL`: prints the status and the body; non-2xx exits with code 22.
//!   With `--repeat N`: N requests, then a JSON summary of statuses and answering pods.
//! - `mesh-echo listeners`: the TCP sockets listening in the pod's network namespace.

pub mod cli;
pub mod client;
pub mod listeners;
pub mod server;

/// Errors of the echo server.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to serve: give at least one --tcp or --http port")]
    NoListeners,
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signal(#[source] std::io::Error),
}
