//! The Markdown report: the tables of `bench/results/<date>.md`, `latest.md` and the README's
//! Performance section.

use std::fmt::Write as _;

use super::model::{BenchResults, ControlPlane, Dataplane, Path};
use super::targets::{self, Target};

fn ms(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn met(t: &Target) -> &'static str {
    match t.met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// The whole report; `chart` is the PNG's path relative to the Markdown file.
pub fn render(r: &BenchResults, chart: Option<&str>) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let loads: Vec<String> = m
        .load
        .iter()
        .map(|l| format!("{} {:.2}", l.phase, l.load1))
        .collect();
    let _ = writeln!(
        out,
        "Measured by `make bench` on {} ({} × {}, Linux {}, {} MiB), in {:.0} s. One run per figure; \
         the no-mesh path is measured in the same run, on un-enrolled pods on the same two nodes. \
         The machine is shared: 1-minute load average at each phase: {}.\n",
        r.date,
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.mem_total_mib,
        r.duration_seconds,
        loads.join(", ")
    );
    if let Some(c) = chart {
        let _ = writeln!(out, "![latency and throughput]({c})\n");
    }
    match &r.dataplane {
        Some(d) => dataplane(&mut out, r, d),
        None => out.push_str("Data plane: not measured.\n\n"),
    }
    match &r.control_plane {
        Some(cp) => control_plane(&mut out, cp),
        None => out.push_str("Control plane: not measured.\n\n"),
    }
    out.push_str("### Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n");
    for t in targets::evaluate(r) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.name,
            t.goal,
            t.measured,
            met(&t)
        );
    }
    out.push('\n');
    if !r.errors.is_empty() {
        out.push_str("### Steps that failed\n\n");
        for e in &r.errors {
            let first = e.lines().next().unwrap_or_default();
            let _ = writeln!(out, "- {first}");
        }
        out.push('\n');
    }
    out
}

fn dataplane(out: &mut String, r: &BenchResults, d: &Dataplane) {
    let s = &r.settings.load;
    let _ = writeln!(
        out,
        "### Latency\n\nfortio, {} req/s over {} HTTP/1.1 connections, {} B bodies each way, {} s per path.\n",
        s.qps, s.connections, s.payload_bytes, s.seconds
    );
    out.push_str("| path | p50 | p90 | p99 | p99.9 | added p99 | requests | errors |\n|---|---|---|---|---|---|---|---|\n");
    let base = d.latency.iter().find(|l| l.path == Path::NoMesh);
    for l in &d.latency {
        let added = match base {
            Some(b) if l.path != Path::NoMesh => {
                format!("{:+.0} µs", l.latency.p99_us - b.latency.p99_us)
            }
            _ => "–".into(),
        };
        let x = &l.latency;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            l.path.describe(),
            ms(x.p50_us),
            ms(x.p90_us),
            ms(x.p99_us),
            ms(x.p999_us),
            added,
            x.requests,
            x.errors
        );
    }
    if let Some(why) = &d.l7_unavailable {
        let first = why.lines().next().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | waypoint not available: {first} | | | | | | |",
            Path::L7.describe()
        );
    }
    out.push('\n');

    let _ = writeln!(
        out,
        "### Throughput\n\niperf3, {} s per run (first second left out).\n",
        r.settings.iperf_seconds
    );
    out.push_str("| path | 1 connection | 8 connections |\n|---|---|---|\n");
    for path in [Path::NoMesh, Path::L4] {
        let cell = |streams: u32| {
            let t = d
                .throughput
                .iter()
                .find(|t| t.path == path && t.streams == streams);
            let base = d
                .throughput
                .iter()
                .find(|t| t.path == Path::NoMesh && t.streams == streams);
            match (t, base) {
                (Some(t), Some(b)) if path != Path::NoMesh && b.throughput.gbps > 0.0 => {
                    let busy: Vec<String> = t
                        .proxies
                        .iter()
                        .map(|u| format!("{} {:.2} cores", u.label, u.cores()))
                        .collect();
                    format!(
                        "{:.2} Gbit/s ({:.0}% of no mesh; {})",
                        t.throughput.gbps,
                        100.0 * t.throughput.gbps / b.throughput.gbps,
                        busy.join(", ")
                    )
                }
                (Some(t), _) => format!("{:.2} Gbit/s", t.throughput.gbps),
                (None, _) => "not measured".into(),
            }
        };
        let _ = writeln!(out, "| {} | {} | {} |", path.describe(), cell(1), cell(8));
    }
    out.push('\n');

    out.push_str(
        "### Cost\n\nEach proxy under the latency load (CPU seconds per 1,000 requests = vCPU at 1,000 req/s), \
         idle (after enrolment, before any load), and with idle connections held open through the mesh.\n\n",
    );
    out.push_str("| proxy | path | CPU s / 1k req | RSS under load (max) | idle RSS |\n|---|---|---|---|---|\n");
    for c in &d.cost {
        let idle = d
            .idle_rss
            .iter()
            .find(|i| i.proxy == c.usage.label)
            .map(|i| mib(i.rss_kib))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            out,
            "| {} | {} | {:.4} | {} | {} |",
            c.usage.label,
            c.path.name(),
            c.cpu_seconds_per_1k(),
            mib(c.usage.rss_max_kib),
            idle
        );
    }
    out.push('\n');
    if let Some(ic) = &d.idle_connections {
        let _ = writeln!(
            out,
            "{} of {} idle connections open (client pod → server pod through both ztunnels):\n",
            ic.held, ic.requested
        );
        out.push_str("| proxy | RSS before | RSS with the connections | per connection |\n|---|---|---|---|\n");
        for p in &ic.proxies {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} KiB |",
                p.proxy,
                mib(p.before_kib),
                mib(p.after_kib),
                p.bytes_per_connection(ic.held) / 1024.0
            );
        }
        out.push('\n');
    }

    let cs = &d.connection_setup;
    out.push_str(
        "### Connection setup\n\n| what | per second | errors | notes |\n|---|---|---|---|\n",
    );
    let rate = |r: &Option<super::super::tools::RateReport>| match r {
        Some(r) => (format!("{:.0}", r.per_second), r.errors.to_string()),
        None => ("not measured".into(), "–".into()),
    };
    let (v, e) = rate(&cs.plain_tcp);
    let _ = writeln!(
        out,
        "| new TCP connections, no mesh | {v} | {e} | connect, 1-byte echo, close |"
    );
    let (v, e) = rate(&cs.mesh_tcp);
    let busy: Vec<String> = cs
        .mesh_tcp_proxies
        .iter()
        .map(|u| format!("{} {:.2} cores", u.label, u.cores()))
        .collect();
    let _ = writeln!(
        out,
        "| new TCP connections through the mesh | {v} | {e} | pooled HBONE: a new HTTP/2 stream per connection; {} |",
        busy.join(", ")
    );
    let (v, e) = rate(&cs.hbone);
    let per_core = cs
        .hbone_per_core()
        .map(|p| format!("{p:.0} per ztunnel core"))
        .unwrap_or_else(|| "–".into());
    let busy = cs
        .hbone_proxy
        .as_ref()
        .map(|u| format!("{} {:.2} cores", u.label, u.cores()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| new HBONE connections (TCP + mTLS + HTTP/2 + CONNECT each) | {v} | {e} | {per_core}; {busy} |"
    );
    out.push('\n');
}

fn control_plane(out: &mut String, cp: &ControlPlane) {
    let _ = writeln!(
        out,
        "### Control plane\n\n{} pods in {} services across {} nodes, {} simulated ztunnel subscribers (delta xDS clients in one process); \
         initial sync of every subscriber in {:.1} s. Change → ACK: one pod's manifest rewritten (a new `version` label), timed until \
         the last subscriber has received (and so ACKs) the changed workload.\n",
        cp.pods, cp.services, cp.nodes, cp.subscribers, cp.initial_sync_seconds
    );
    out.push_str(
        "| istiod setting | changes | p50 | p99 | max | timeouts | istiod CPU per change |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for run in &cp.runs {
        let p = |x: f64| {
            run.percentile(x)
                .map(|v| format!("{v:.0} ms"))
                .unwrap_or_else(|| "–".into())
        };
        let n = run.samples_ms.len() + run.timeouts as usize;
        let cpu = if n > 0 {
            format!("{:.2} s", run.istiod_cpu_seconds / n as f64)
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {cpu} |",
            run.label,
            run.samples_ms.len(),
            p(50.0),
            p(99.0),
            p(100.0),
            run.timeouts
        );
    }
    let zt = match (cp.ztunnel_rss_kib, &cp.ztunnel_error) {
        (Some(k), _) => format!(
            "{} ({} workloads)",
            mib(k),
            cp.ztunnel_workloads
                .map(|w| w.to_string())
                .unwrap_or_else(|| "?".into())
        ),
        (None, Some(e)) => format!("not measured: {}", e.lines().next().unwrap_or_default()),
        (None, None) => "not measured".into(),
    };
    let _ = writeln!(
        out,
        "\nistiod RSS with every subscriber synced: {}. A real ztunnel holding every workload: {zt}.\n",
        mib(cp.istiod_rss_kib)
    );
}
