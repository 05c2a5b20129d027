//! What a process costs, from `/proc`: CPU seconds (`/proc/<pid>/stat`, user + system time of
//! every thread), resident memory (`VmRSS` of `/proc/<pid>/status`), and a [`Meter`] that
//! brackets a load with both, sampling RSS while it runs.

use std::process::Command;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::BenchError;
use crate::harness::netns;

/// How often a [`Meter`] samples RSS.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 when unknown).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `utime + stime` (ticks) of a `/proc/<pid>/stat` line. The command name may hold spaces and
/// parentheses, so fields are counted from the last `)`: state is field 3, utime 14, stime 15.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line (`VmRSS:     1234 kB`) of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn read_proc(pid: u32, file: &'static str) -> Result<String, BenchError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| BenchError::Proc {
        pid,
        file,
        reason: e.to_string(),
    })
}

/// CPU seconds (user + system, all threads) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let stat = read_proc(pid, "stat")?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| BenchError::Proc {
        pid,
        file: "stat",
        reason: format!("unexpected format: {stat:?}"),
    })?;
    Ok(ticks as f64 / clock_ticks())
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status = read_proc(pid, "status")?;
    parse_status_kib(&status, "VmRSS").ok_or_else(|| BenchError::Proc {
        pid,
        file: "status",
        reason: "no VmRSS line (a zombie?)".into(),
    })
}

/// File name of the process's executable (`/proc/<pid>/exe`), else its `comm`.
pub fn exe_name(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| read_proc(pid, "comm").ok().map(|c| c.trim().to_string()))
}

/// Pids of the processes in network namespace `netns` whose executable is named `exe`.
pub fn find_in_netns(netns_name: &str, exe: &str) -> Vec<u32> {
    netns::pids(netns_name)
        .into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .filter(|p| exe_name(*p).as_deref() == Some(exe))
        .collect()
}

/// A process to measure, with a label for the report (`ztunnel node1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub label: String,
    pub pid: u32,
}

impl Watched {
    pub fn new(label: impl Into<String>, pid: u32) -> Self {
        Self {
            label: label.into(),
            pid,
        }
    }
}

/// What one process used between [`Meter::start`] and [`Meter::finish`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub label: String,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    /// Largest RSS sampled (every 100 ms) during the window.
    pub rss_max_kib: u64,
    /// RSS at the end of the window.
    pub rss_end_kib: u64,
}

impl Usage {
    /// Average cores busy during the window.
    pub fn cores(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.cpu_seconds / self.wall_seconds
        } else {
            0.0
        }
    }
}

/// Measures a set of processes over a window: CPU time at both ends, RSS sampled in between.
#[derive(Debug)]
pub struct Meter {
    watched: Vec<Watched>,
    started: Instant,
    cpu_start: Vec<f64>,
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Vec<u64>>,
}

impl Meter {
    pub fn start(watched: &[Watched]) -> Result<Self, BenchError> {
        let cpu_start = watched
            .iter()
            .map(|w| cpu_seconds(w.pid))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let pids: Vec<u32> = watched.iter().map(|w| w.pid).collect();
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut max = vec![0u64; pids.len()];
            loop {
                for (m, pid) in max.iter_mut().zip(&pids) {
                    if let Ok(kib) = rss_kib(*pid) {
                        *m = (*m).max(kib);
                    }
                }
                if flag.load(Ordering::Acquire) {
                    return max;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Ok(Self {
            watched: watched.to_vec(),
            started: Instant::now(),
            cpu_start,
            stop,
            sampler,
        })
    }

    pub fn finish(self) -> Result<Vec<Usage>, BenchError> {
        let wall = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Release);
        let max = self
            .sampler
            .join()
            .unwrap_or_else(|_| vec![0; self.watched.len()]);
        let mut out = Vec::new();
        for ((w, cpu0), max) in self.watched.iter().zip(&self.cpu_start).zip(max) {
            let end = rss_kib(w.pid)?;
            out.push(Usage {
                label: w.label.clone(),
                cpu_seconds: cpu_seconds(w.pid)? - cpu0,
                wall_seconds: wall,
                rss_max_kib: max.max(end),
                rss_end_kib: end,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_counted_after_the_command_name() {
        // comm with a space and a parenthesis; utime 1500, stime 250.
        let stat = "4242 (zt (x) 1) S 1 4242 4242 0 -1 4194560 2386 0 0 0 1500 250 0 0 20 0 9 0 123 456 789";
        assert_eq!(parse_stat_ticks(stat), Some(1750));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_lines_give_kib() {
        let status = "Name:\tztunnel\nVmHWM:\t   20480 kB\nVmRSS:\t    9876 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(9876));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn measures_this_process() {
        let me = std::process::id();
        let meter = Meter::start(&[Watched::new("self", me)]).unwrap();
        // Burn a little CPU so the delta is not negative or absurd.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert_ne!(x, 1);
        let usage = meter.finish().unwrap();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].cpu_seconds >= 0.0);
        assert!(usage[0].rss_end_kib > 0 && usage[0].rss_max_kib >= usage[0].rss_end_kib);
        assert!(exe_name(me).is_some());
    }
}
