//! The machine a run happens on, and how busy it is.

use super::procstat::parse_status_kib;
use super::report::model::{Machine, PhaseLoad};

/// 1-minute load average (`/proc/loadavg`), 0 when unreadable.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Records the load at the start of a phase.
pub fn phase(loads: &mut Vec<PhaseLoad>, name: &str) {
    let load1 = load1();
    tracing::info!(phase = name, load1, "bench phase");
    eprintln!("mesh-bench: {name} (load average {load1:.2})");
    loads.push(PhaseLoad {
        phase: name.to_string(),
        load1,
    });
}

/// CPUs, model, kernel and memory of this machine.
pub fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        mem_total_mib: parse_status_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024,
        load: Vec::new(),
    }
}
