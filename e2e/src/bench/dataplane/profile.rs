//! CPU profiles of the ztunnels under load, with Linux `perf` (Debian's linux-perf): a sampled
//! flat profile by shared object and symbol while an L4 iperf3 run and an L4 fortio run go on.
//! The reports land in the profile directory, one text file per ztunnel and load.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Bed;
use crate::bench::error::BenchError;
use crate::bench::report::model::Path as MeshPath;
use crate::harness::cmd;
use crate::harness::prereq;

/// Sampling frequency (Hz).
const FREQUENCY: &str = "999";
/// Lines of each report kept.
const REPORT_LINES: usize = 80;

fn start_perf(pid: u32, data: &Path) -> Result<Child, BenchError> {
    Command::new("perf")
        .args(["record", "-q", "-F", FREQUENCY, "-p", &pid.to_string(), "-o"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(BenchError::io("starting perf record"))
}

fn stop_perf(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
    }
    let _ = child.wait();
}

fn report(data: &Path, out: &Path, title: &str) -> Result<(), BenchError> {
    let o = cmd::run(
        Command::new("perf")
            .args(["report", "--stdio", "--sort", "dso,symbol", "--percent-limit", "0.5", "-i"])
            .arg(data),
        Duration::from_secs(120),
    )
    .map_err(crate::harness::HarnessError::from)?;
    let lines: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(REPORT_LINES)
        .collect();
    let text = format!("# {title}\n{}\n", lines.join("\n"));
    std::fs::write(out, text).map_err(BenchError::io(format!("writing {}", out.display())))?;
    let _ = std::fs::remove_file(data);
    Ok(())
}

/// A load to profile under.
type Load<'a> = dyn Fn() -> Result<(), BenchError> + 'a;

/// Profiles both ztunnels during an L4 iperf3 run (1 connection) and an L4 fortio run.
pub(super) fn run(bed: &Bed<'_>, dir: &Path) -> Result<(), BenchError> {
    if prereq::in_path("perf").is_none() {
        return Err(BenchError::MissingTool {
            tool: "perf".into(),
            hint: "apt-get install linux-perf".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let loads: [(&str, &Load<'_>); 2] = [
        ("iperf3", &|| bed.throughput(MeshPath::L4, 1).map(|_| ())),
        ("fortio", &|| bed.latency(MeshPath::L4).map(|_| ())),
    ];
    for (name, load) in loads {
        let mut perfs = Vec::new();
        for z in &bed.ztunnels {
            let slug: String = z
                .label
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join("-");
            let data = dir.join(format!("{slug}-{name}.data"));
            perfs.push((start_perf(z.pid, &data)?, data, slug, z.label.clone()));
        }
        let result = load();
        let mut reports = Vec::new();
        for (child, data, slug, label) in perfs {
            stop_perf(child);
            reports.push(report(
                &data,
                &dir.join(format!("{slug}-{name}.txt")),
                &format!("{label}, L4 {name} load"),
            ));
        }
        result?;
        reports.into_iter().collect::<Result<Vec<()>, _>>()?;
        eprintln!("mesh-bench: profiles of the {name} load written to {}", dir.display());
    }
    Ok(())
}
