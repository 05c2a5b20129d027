//! Command line of `mesh-echo`, and the code that runs each command.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::{client, server};

/// Test application of the ambient mesh: a TCP echo and HTTP server, and its client.
#[derive(Debug, Parser)]
#[command(name = "mesh-echo", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve TCP echo and HTTP until killed.
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
    },
}

/// Runs the parsed command and returns the process exit code.
pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Server { tcp, http, name } => {
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
            };
            match rt.block_on(server::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mesh-echo server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
            match client::http_with_headers(&url, &pairs, Duration::from_millis(timeout_ms)) {
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
