//! fortio (built from its Go module by `e2e/cluster/build.sh fortio`): the HTTP load
//! generator Istio publishes its latency figures with. The server side is `fortio server`, which
//! echoes request bodies; the client side is `fortio load ... -json -`, parsed here.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::BenchError;

/// Port of `fortio server`'s HTTP echo listener in the server pods.
pub const HTTP_PORT: u16 = 8080;

/// The load: requests per second over a number of keep-alive HTTP/1.1 connections, each request
/// carrying `payload_bytes` (fortio then sends a POST, echoed back by `fortio server`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    pub qps: u32,
    pub connections: u32,
    pub seconds: u64,
    pub payload_bytes: u32,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            qps: 1000,
            connections: 16,
            seconds: 12,
            payload_bytes: 1024,
        }
    }
}

/// Latency distribution of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub avg_us: f64,
    pub max_us: f64,
    /// Requests measured (warm-up excluded).
    pub requests: u64,
    pub actual_qps: f64,
    /// Requests that did not answer 200.
    pub errors: u64,
}

/// The arguments of `fortio server` (HTTP only, no gRPC, redirect or UI listeners).
pub fn server_args(fortio: &Path) -> Vec<String> {
    [
        &fortio.display().to_string(),
        "server",
        "-http-port",
        &HTTP_PORT.to_string(),
        "-grpc-port",
        "disabled",
        "-redirect-port",
        "disabled",
        "-ui-path",
        "",
        "-loglevel",
        "Warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The arguments of `fortio load` for `spec` against `url`, JSON on stdout, 10 µs histogram
/// resolution (the default 1 ms would blur sub-millisecond percentiles).
pub fn load_args(fortio: &Path, spec: &LoadSpec, url: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        fortio.display().to_string().as_str(),
        "load",
        "-qps",
        &spec.qps.to_string(),
        "-c",
        &spec.connections.to_string(),
        "-t",
        &format!("{}s", spec.seconds),
        "-r",
        "0.00001",
        "-p",
        "50,90,99,99.9",
        "-json",
        "-",
        "-quiet",
        "-loglevel",
        "Error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if spec.payload_bytes > 0 {
        args.extend(["-payload-size".to_string(), spec.payload_bytes.to_string()]);
    }
    args.push(url.to_string());
    args
}

/// How long to allow a `fortio load` of `spec` to take.
pub fn deadline(spec: &LoadSpec) -> Duration {
    Duration::from_secs(spec.seconds + 30)
}

/// The JSON document in fortio's stdout (it may print log lines around it).
fn json_part(stdout: &str) -> Option<&str> {
    let start = stdout.find('{')?;
    let end = stdout.rfind('}')?;
    (end > start).then(|| &stdout[start..=end])
}

/// Parses `fortio load -json -` output.
pub fn parse(stdout: &str) -> Result<Latency, BenchError> {
    let what = "fortio JSON";
    let text = json_part(stdout).ok_or_else(|| BenchError::parse(what, "no JSON object"))?;
    let v: Value =
        serde_json::from_str(text).map_err(|e| BenchError::parse(what, e.to_string()))?;
    let hist = &v["DurationHistogram"];
    let percentile = |p: f64| -> Result<f64, BenchError> {
        hist["Percentiles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                e["Percentile"]
                    .as_f64()
                    .is_some_and(|x| (x - p).abs() < 1e-9)
            })
            .and_then(|e| e["Value"].as_f64())
            .map(|s| s * 1e6)
            .ok_or_else(|| BenchError::parse(what, format!("no p{p} in DurationHistogram")))
    };
    let requests = hist["Count"]
        .as_u64()
        .ok_or_else(|| BenchError::parse(what, "no DurationHistogram.Count"))?;
    let ok = v["RetCodes"]["200"].as_u64().unwrap_or(0);
    Ok(Latency {
        p50_us: percentile(50.0)?,
        p90_us: percentile(90.0)?,
        p99_us: percentile(99.0)?,
        p999_us: percentile(99.9)?,
        avg_us: hist["Avg"].as_f64().unwrap_or(0.0) * 1e6,
        max_us: hist["Max"].as_f64().unwrap_or(0.0) * 1e6,
        requests,
        actual_qps: v["ActualQPS"].as_f64().unwrap_or(0.0),
        errors: requests.saturating_sub(ok),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"Fortio 1.68.2 running at 1000 queries per second
{
  "RunType": "HTTP",
  "ActualQPS": 999.7,
  "DurationHistogram": {
    "Count": 12000, "Min": 0.00021, "Max": 0.0042, "Sum": 4.8, "Avg": 0.0004,
    "Percentiles": [
      {"Percentile": 50, "Value": 0.000381},
      {"Percentile": 90, "Value": 0.000512},
      {"Percentile": 99, "Value": 0.000911},
      {"Percentile": 99.9, "Value": 0.00201}
    ]
  },
  "RetCodes": {"200": 11998, "503": 2}
}
All done"#;

    #[test]
    fn parses_percentiles_in_microseconds() {
        let l = parse(SAMPLE).unwrap();
        assert!((l.p50_us - 381.0).abs() < 1e-6, "{l:?}");
        assert!((l.p999_us - 2010.0).abs() < 1e-6, "{l:?}");
        assert_eq!((l.requests, l.errors), (12000, 2));
        assert!((l.actual_qps - 999.7).abs() < 1e-9);
    }

    #[test]
    fn missing_percentile_is_an_error_naming_it() {
        let text = SAMPLE.replace("99.9", "99.5");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("p99.9"), "{e}");
        assert!(parse("no json here").is_err());
    }

    #[test]
    fn load_arguments_carry_the_spec() {
        let args = load_args(
            Path::new("/f/fortio"),
            &LoadSpec::default(),
            "http://10.0.0.2:8080/",
        );
        let line = args.join(" ");
        for part in [
            "/f/fortio load",
            "-qps 1000",
            "-c 16",
            "-t 12s",
            "-payload-size 1024",
            "-json -",
        ] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
        assert_eq!(args.last().unwrap(), "http://10.0.0.2:8080/");
    }
}
