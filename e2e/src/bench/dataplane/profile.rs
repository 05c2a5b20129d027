//! CPU profiles of the ztunnels under load ([`crate::bench::perf`]): during an L4 iperf3 run,
//! an L4 fortio run (both ztunnels) and the HBONE handshake test (the server side's ztunnel).
//! One report per ztunnel and load in the profile directory.

use std::path::Path;

use super::Bed;
use crate::bench::error::BenchError;
use crate::bench::perf::{self, Recording};
use crate::bench::procstat::Watched;
use crate::bench::report::model::Path as MeshPath;

/// A load to profile under.
type Load<'a> = dyn Fn() -> Result<(), BenchError> + 'a;

fn slug(w: &Watched) -> String {
    w.label
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("-")
}

/// Profiles `watched` during `load`, writing `<dir>/<proxy>-<name>.txt`.
fn profile(dir: &Path, name: &str, watched: &[Watched], load: &Load<'_>) -> Result<(), BenchError> {
    let mut recordings = Vec::new();
    for w in watched {
        let data = dir.join(format!("{}-{name}.data", slug(w)));
        recordings.push((Recording::start(w.pid, &data)?, w));
    }
    let result = load();
    let mut reports = Vec::new();
    for (rec, w) in recordings {
        let out = dir.join(format!("{}-{name}.txt", slug(w)));
        reports.push(rec.finish(&out, &format!("{}, {name} load", w.label)));
    }
    result?;
    reports.into_iter().collect::<Result<Vec<()>, _>>()?;
    eprintln!(
        "mesh-bench: profiles of the {name} load written to {}",
        dir.display()
    );
    Ok(())
}

pub(super) fn run(bed: &Bed<'_>, dir: &Path) -> Result<(), BenchError> {
    perf::require()?;
    std::fs::create_dir_all(dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    profile(dir, "L4-iperf3", &bed.ztunnels, &|| {
        bed.throughput(MeshPath::L4, 1).map(|_| ())
    })?;
    profile(dir, "L4-fortio", &bed.ztunnels, &|| {
        bed.latency(MeshPath::L4).map(|_| ())
    })?;
    profile(dir, "hbone-handshakes", &bed.ztunnels[1..], &|| {
        bed.hbone_rate().map(|_| ())
    })
}
