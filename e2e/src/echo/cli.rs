//! Command line of `mesh-echo`, and the code that runs each command.

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::{client, listeners, server};

/// Test application of the ambient mesh: a TCP echo and HTTP server, and its client.
#[derive(Debug, Parser)]
#[command(name = "mesh-echo", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the TCP sockets listening in this network namespace, one `ADDR:PORT` a line.
    Listeners,
    /// Serve TCP echo and HTTP until SIGTERM or SIGINT.
    Server {
        /// TCP echo port (repeatable).
        #[arg(long = "tcp")]
        tcp: Vec<u16>,
        /// HTTP/1.1 port (repeatable).
        #[arg(long = "http")]
        http: Vec<u16>,
        /// Name reported in HTTP responses.
        #[arg(long, env = "POD_NAME", default_value = "unknown")]
        name: String,
        /// Flaky on purpose: answer one HTTP request in every N (the first, the (N+1)th, ...)
        /// with 503. `GET /_echo/stats` reports the requests served and failed.
        #[arg(long)]
        fail_every: Option<NonZeroU32>,
    },
    /// One request, then exit: 0 on success, 1 on failure, 22 on a non-2xx HTTP status.
    Client {
        #[command(subcommand)]
        kind: ClientCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Send a message to a TCP echo server and print the reply.
    Tcp {
        /// ip:port of the server.
        addr: String,
        #[arg(long, default_value = "hello from mesh-echo")]
        message: String,
        /// Connect and read deadline, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// GET an http:// URL; print the status line and the body.
    Http {
        url: String,
        /// Extra request header `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Send the request N times (a new connection each) and print a JSON summary: counts
        /// of statuses, of answering pods and of errors. Exits 1 if any request failed.
        #[arg(long, value_name = "N")]
        repeat: Option<u32>,
    },
}

/// Runs the parsed command and returns the process exit code.
pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Server {
            tcp,
            http,
            name,
            fail_every,
        } => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("mesh-echo: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let cfg = server::ServerConfig {
                tcp_ports: tcp,
                http_ports: http,
                name,
                fail_every,
            };
            match rt.block_on(server::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mesh-echo server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Listeners => match listeners::listening(std::path::Path::new("/proc/net")) {
            Ok(list) => {
                for addr in list {
                    println!("{addr}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mesh-echo listeners: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Client {
            kind:
                ClientCommand::Tcp {
                    addr,
                    message,
                    timeout_ms,
                },
        } => match client::tcp(&addr, &message, Duration::from_millis(timeout_ms)) {
            Ok(reply) => {
                println!("{reply}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mesh-echo client: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Client {
            kind:
                ClientCommand::Http {
                    url,
                    headers,
                    timeout_ms,
                    repeat,
                },
        } => {
            let mut pairs = Vec::new();
            for h in &headers {
                match h.split_once(':') {
                    Some((k, v)) => pairs.push((k.trim(), v.trim())),
                    None => {
                        eprintln!("mesh-echo client: bad header {h:?}, expected `Name: value`");
                        return ExitCode::FAILURE;
                    }
                }
            }
            let timeout = Duration::from_millis(timeout_ms);
            if let Some(n) = repeat {
                let sum = client::http_repeat(&url, &pairs, n, timeout);
                match serde_json::to_string(&sum) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("mesh-echo client: cannot print the summary: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                return if sum.errors.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            match client::http_with_headers(&url, &pairs, timeout) {
                Ok(resp) => {
                    println!("status: {}", resp.status);
                    print!("{}", resp.text());
                    if resp.is_success() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("mesh-echo client: {url} answered HTTP {}", resp.status);
                        ExitCode::from(22)
                    }
                }
                Err(e) => {
                    eprintln!("mesh-echo client: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
