//! iperf3 (Debian's `iperf3`): bulk TCP throughput over one or several parallel connections.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::BenchError;

/// Port of the `iperf3 -s` servers in the server pods.
pub const PORT: u16 = 5201;

/// One throughput run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// What the receiver got, in Gbit/s.
    pub gbps: f64,
    /// TCP retransmissions the sender saw, when iperf3 reports them.
    pub retransmits: Option<u64>,
}

pub fn server_args() -> Vec<String> {
    ["iperf3", "-s", "-p", &PORT.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `iperf3 -c` for `seconds` over `streams` connections, the first second left out of the
/// result (slow start), JSON output.
pub fn client_args(server: Ipv4Addr, streams: u32, seconds: u64) -> Vec<String> {
    [
        "iperf3",
        "-c",
        &server.to_string(),
        "-p",
        &PORT.to_string(),
        "-P",
        &streams.to_string(),
        "-t",
        &seconds.to_string(),
        "-O",
        "1",
        "-J",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn deadline(seconds: u64) -> Duration {
    Duration::from_secs(seconds + 30)
}

/// Parses `iperf3 -J` output.
pub fn parse(stdout: &str) -> Result<Throughput, BenchError> {
    let what = "iperf3 JSON";
    let v: Value = serde_json::from_str(stdout.trim())
        .map_err(|e| BenchError::parse(what, format!("{e}: {}", head(stdout))))?;
    if let Some(err) = v["error"].as_str() {
        return Err(BenchError::tool("iperf3", err));
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| BenchError::parse(what, "no end.sum_received.bits_per_second"))?;
    Ok(Throughput {
        gbps: bps / 1e9,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64(),
    })
}

fn head(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_received_rate() {
        let out = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bits_per_second":2.1e10,"retransmits":7},"sum_received":{"bits_per_second":2.05e10}}}"#;
        let t = parse(out).unwrap();
        assert!((t.gbps - 20.5).abs() < 1e-9);
        assert_eq!(t.retransmits, Some(7));
    }

    #[test]
    fn reports_iperf_errors() {
        let out =
            r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
        let e = parse(out).unwrap_err().to_string();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(parse("not json").is_err());
    }

    #[test]
    fn client_arguments() {
        let a = client_args(Ipv4Addr::new(10, 1, 2, 3), 8, 8).join(" ");
        assert!(a.starts_with("iperf3 -c 10.1.2.3 -p 5201 -P 8 -t 8"), "{a}");
        assert!(a.ends_with("-J"));
    }
}
