//! Sampled CPU profiles with Linux `perf` (Debian's linux-perf): `perf record` attached to a
//! process for the length of a load, then a flat report by shared object and by symbol, written
//! as text. Used with `mesh-bench run --profile DIR`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::BenchError;
use crate::harness::cmd;
use crate::harness::prereq;

/// Sampling frequency (Hz).
const FREQUENCY: &str = "999";
/// Symbol lines kept in a report.
const REPORT_LINES: usize = 60;

/// Fails with how to get `perf` when it is missing.
pub fn require() -> Result<(), BenchError> {
    match prereq::in_path("perf") {
        Some(_) => Ok(()),
        None => Err(BenchError::MissingTool {
            tool: "perf".into(),
            hint: "apt-get install linux-perf".into(),
        }),
    }
}

/// A `perf record` attached to one process.
#[derive(Debug)]
pub struct Recording {
    child: Child,
    data: PathBuf,
}

impl Recording {
    /// Starts sampling `pid` into `data`.
    pub fn start(pid: u32, data: &Path) -> Result<Self, BenchError> {
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                FREQUENCY,
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(BenchError::io("starting perf record"))?;
        Ok(Self {
            child,
            data: data.to_path_buf(),
        })
    }

    /// Stops sampling and writes the report to `out` under `title`.
    pub fn finish(mut self, out: &Path, title: &str) -> Result<(), BenchError> {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let _ = self.child.wait();
        let result = report(&self.data, out, title);
        let _ = std::fs::remove_file(&self.data);
        result
    }
}

/// `perf report` sorted by `sort`: sample lines only, padding dropped.
fn perf_report(data: &Path, sort: &str) -> Result<Vec<String>, BenchError> {
    let o = cmd::run(
        Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--sort",
                sort,
                "--percent-limit",
                "0.5",
                "-i",
            ])
            .arg(data),
        Duration::from_secs(120),
    )
    .map_err(crate::harness::HarnessError::from)?;
    Ok(o.stdout
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end().trim_end_matches(['-', ' ']).to_string())
        .collect())
}

fn report(data: &Path, out: &Path, title: &str) -> Result<(), BenchError> {
    let by_dso = perf_report(data, "dso")?;
    let mut by_symbol = perf_report(data, "dso,symbol")?;
    by_symbol.truncate(REPORT_LINES);
    let text = format!(
        "# {title}\n\n## by shared object\n{}\n\n## by symbol\n{}\n",
        by_dso.join("\n"),
        by_symbol.join("\n")
    );
    std::fs::write(out, text).map_err(BenchError::io(format!("writing {}", out.display())))
}
