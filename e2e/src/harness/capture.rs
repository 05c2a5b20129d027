//! Packet captures with tcpdump on an interface of a namespace (typically a node's veth in the
//! underlay, i.e. the wire between nodes), written to a pcap file and analysed afterwards.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pcap::{self, Flow, FlowKey, PcapError, TcpPacket};
use super::poll::{self, PollError};
use super::prereq::{self, PrereqError};
use super::process::{Proc, ProcessError};

/// Errors of captures.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Prereq(#[from] PrereqError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("tcpdump on {iface} in {netns} did not start: {source}; its output:\n{log}")]
    NotStarted {
        iface: String,
        netns: String,
        #[source]
        source: PollError,
        log: String,
    },
    #[error("cannot read capture {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("capture {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: PcapError,
    },
}

/// A running tcpdump.
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    file: PathBuf,
    iface: String,
}

impl Capture {
    /// Starts `tcpdump -i iface -w file` (full packets, flushed per packet) with a BPF `filter`,
    /// and returns once tcpdump is listening.
    pub fn start(
        netns: &str,
        iface: &str,
        file: &Path,
        log: &Path,
        filter: &str,
    ) -> Result<Self, CaptureError> {
        let tcpdump = prereq::require_tool("tcpdump", "tcpdump")?;
        let mut args: Vec<String> = [
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "0",
            "-Z",
            "root",
            "-w",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(file.display().to_string());
        args.extend(filter.split_whitespace().map(str::to_string));
        let mut proc = Proc::spawn(
            &format!("tcpdump {iface}"),
            netns,
            &tcpdump,
            &args,
            &[],
            log,
        )?;
        let started = poll::eventually(
            &format!("tcpdump on {iface} to start listening"),
            Duration::from_secs(15),
            || {
                if let Some(status) = proc.exit_status() {
                    return Ok(Err(format!("tcpdump exited ({status})")));
                }
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if text.contains("listening on") {
                    Ok(Ok(()))
                } else {
                    Err("no \"listening on\" line yet".to_string())
                }
            },
        );
        let fail = |source: PollError, proc: &Proc| CaptureError::NotStarted {
            iface: iface.to_string(),
            netns: netns.to_string(),
            source,
            log: proc.log_tail(20),
        };
        match started {
            Ok(Ok(())) => {}
            Ok(Err(exited)) => {
                let source = PollError {
                    what: "tcpdump to start".into(),
                    waited: Duration::ZERO,
                    attempts: 1,
                    last: exited,
                };
                return Err(fail(source, &proc));
            }
            Err(e) => return Err(fail(e, &proc)),
        }
        Ok(Self {
            proc,
            file: file.to_path_buf(),
            iface: iface.to_string(),
        })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// What has been written so far (tcpdump writes every packet at once).
    pub fn snapshot(&self) -> Result<Captured, CaptureError> {
        read_capture(&self.file, &self.iface)
    }

    /// Waits until what has been captured satisfies `pred` (e.g. the FIN of a flow), then stops.
    pub fn stop_when(
        self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Captured) -> bool,
    ) -> Result<Captured, CaptureError> {
        let waited = poll::eventually(what, timeout, || match self.snapshot() {
            Ok(c) if pred(&c) => Ok(()),
            Ok(c) => Err(format!("not yet; so far:\n{}", c.summary())),
            Err(e) => Err(e.to_string()),
        });
        if let Err(e) = waited {
            tracing::warn!("capture on {}: {e}", self.iface);
        }
        self.stop()
    }

    /// Stops tcpdump once the file has stopped growing (at most 5 s), and reads it.
    pub fn stop(mut self) -> Result<Captured, CaptureError> {
        let size = |f: &Path| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        let mut last = size(&self.file);
        let _ = poll::eventually("the capture to go quiet", Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(200));
            let now = size(&self.file);
            let quiet = now == last;
            last = now;
            if quiet {
                Ok(())
            } else {
                Err(format!("{now} bytes and growing"))
            }
        });
        self.proc.stop(Duration::from_secs(5));
        read_capture(&self.file, &self.iface)
    }
}

fn read_capture(file: &Path, iface: &str) -> Result<Captured, CaptureError> {
    let path = file.display().to_string();
    let raw = std::fs::read(file).map_err(|source| CaptureError::Read {
        path: path.clone(),
        source,
    })?;
    let packets = pcap::parse(&raw).map_err(|source| CaptureError::Parse { path, source })?;
    Ok(Captured {
        iface: iface.to_string(),
        file: file.to_path_buf(),
        raw,
        packets,
    })
}

/// What a capture saw.
#[derive(Debug, Clone)]
pub struct Captured {
    pub iface: String,
    pub file: PathBuf,
    /// The pcap file as written.
    pub raw: Vec<u8>,
    pub packets: Vec<TcpPacket>,
}

impl Captured {
    /// Whether `needle` appears anywhere: in the raw file or in a flow's reassembled payload
    /// (so a string split across two segments is found too).
    pub fn contains(&self, needle: &[u8]) -> bool {
        pcap::contains(&self.raw, needle)
            || self
                .flows_where(|_| true)
                .values()
                .any(|f| pcap::contains(&f.payload, needle))
    }

    /// Flows (one direction each) whose key satisfies `pred`.
    pub fn flows_where(&self, pred: impl Fn(&FlowKey) -> bool) -> BTreeMap<FlowKey, Flow> {
        pcap::flows(&self.packets)
            .into_iter()
            .filter(|(k, _)| pred(k))
            .collect()
    }

    /// Flows between two addresses matching `is_ours` at both ends (pod-to-pod).
    pub fn flows_between(&self, is_ours: impl Fn(Ipv4Addr) -> bool) -> BTreeMap<FlowKey, Flow> {
        self.flows_where(|k| is_ours(k.src) && is_ours(k.dst))
    }

    /// Whether a packet matching `pred` carried a FIN (its connection was closed).
    pub fn saw_fin(&self, pred: impl Fn(&TcpPacket) -> bool) -> bool {
        self.packets
            .iter()
            .any(|p| p.flags & pcap::TCP_FIN != 0 && pred(p))
    }

    /// One line per flow with its packet count, payload size and first bytes, for messages.
    pub fn summary(&self) -> String {
        let flows = pcap::flows(&self.packets);
        if flows.is_empty() {
            return format!("  (no TCP packets captured on {})", self.iface);
        }
        flows
            .iter()
            .map(|(k, f)| {
                let head: String = f
                    .payload
                    .iter()
                    .take(12)
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                format!(
                    "  {k}: {} packets{}, {} payload bytes{}{}",
                    f.packets,
                    if f.syn { " (from SYN)" } else { "" },
                    f.payload.len(),
                    if head.is_empty() { "" } else { ", starts " },
                    head
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
