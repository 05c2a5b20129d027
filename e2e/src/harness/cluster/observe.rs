//! Waiting for what a user observes of the mesh: pods enrolled or released (seen from inside
//! their netns), connections counted as mutual TLS with the right identities by the destination
//! ztunnel, connections refused by policy.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::components::ZTUNNEL_POD_PORTS;
use super::super::error::HarnessError;
use super::super::metrics::Metrics;
use super::super::poll;
use super::{Cluster, Node, Pod};

/// The metric family ztunnel counts connections in.
pub const OPENED: &str = "istio_tcp_connections_opened_total";

/// Proof that a connection went over mutual TLS: the destination ztunnel's counter for it.
#[derive(Debug, Clone, PartialEq)]
pub struct MtlsEvidence {
    pub node: String,
    pub source_principal: String,
    pub destination_principal: String,
    /// `istio_tcp_connections_opened_total` for these labels, after the connection.
    pub opened: f64,
}

impl Cluster {
    /// The labels of a destination-reported mutual-TLS connection from `src` to `dst`.
    pub fn mtls_labels(&self, src: &Pod, dst: &Pod) -> Vec<(&'static str, String)> {
        vec![
            ("reporter", "destination".into()),
            ("connection_security_policy", "mutual_tls".into()),
            (
                "source_principal",
                self.principal(&src.namespace, &src.service_account),
            ),
            (
                "destination_principal",
                self.principal(&dst.namespace, &dst.service_account),
            ),
        ]
    }

    /// How many mutual-TLS connections from `src` to `dst` `dst`'s ztunnel has counted.
    pub fn mtls_opened(&self, src: &Pod, dst: &Pod) -> Result<f64, HarnessError> {
        let node = self.node(&dst.node)?;
        let labels = self.mtls_labels(src, dst);
        let filter: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok(self.ztunnel_metrics(node)?.sum(OPENED, &filter))
    }

    /// The connection-opened series of a node's ztunnel, for error messages.
    pub fn describe_connections(&self, node: &Node) -> String {
        match self.ztunnel_metrics(node) {
            Ok(m) => describe(&m),
            Err(e) => format!("  (cannot scrape {} ztunnel: {e})", node.name),
        }
    }

    /// Polls (up to `timeout`) until an echo from `src` to `dst:port` succeeds and `dst`'s
    /// ztunnel counts one more mutual-TLS connection with both principals.
    pub fn wait_mtls(
        &self,
        src: &Pod,
        dst: &Pod,
        port: u16,
        message: &str,
        timeout: Duration,
    ) -> Result<MtlsEvidence, HarnessError> {
        let node = self.node(&dst.node)?;
        let what = format!("{} -> {} over mutual TLS", src.key(), dst.key());
        let res = poll::eventually(&what, timeout, || {
            let before = self.mtls_opened(src, dst).map_err(|e| e.to_string())?;
            self.echo_tcp(src, dst.addr(port), message)
                .map_err(|e| format!("echo failed: {e}"))?;
            // The counter may move a moment after the echo completes.
            poll::eventually("the counter to move", Duration::from_secs(5), || {
                let now = self.mtls_opened(src, dst).map_err(|e| e.to_string())?;
                if now > before {
                    Ok(now)
                } else {
                    Err(format!("still {now}"))
                }
            })
            .map_err(|e| {
                format!(
                    "the echo worked but {} ztunnel counted no new mutual_tls connection ({e})",
                    node.name
                )
            })
        });
        match res {
            Ok(opened) => Ok(MtlsEvidence {
                node: node.name.clone(),
                source_principal: self.principal(&src.namespace, &src.service_account),
                destination_principal: self.principal(&dst.namespace, &dst.service_account),
                opened,
            }),
            Err(e) => Err(HarnessError::Invalid(format!(
                "{e}\nexpected series {OPENED}{:?}\n{} ztunnel connection series:\n{}",
                self.mtls_labels(src, dst),
                node.name,
                self.describe_connections(node)
            ))),
        }
    }

    /// Polls until echoes from `from` to `to` fail (e.g. a policy took effect); returns the
    /// client's explanation.
    pub fn wait_refused(
        &self,
        from: &Pod,
        to: SocketAddr,
        message: &str,
        timeout: Duration,
    ) -> Result<String, HarnessError> {
        let what = format!("echo {} -> {to} to be refused", from.key());
        poll::eventually(&what, timeout, || match self.echo_tcp(from, to, message) {
            Ok(r) => Err(format!("still allowed (echoed {r:?})")),
            Err(e @ HarnessError::EchoFailed { .. }) => Ok(Ok(e.to_string())),
            Err(e) => Ok(Err(e)),
        })?
    }

    /// Polls until ztunnel listens inside the pod's netns (15001, 15006, 15008) and the pod's
    /// packet-filter rules differ from `baseline` (what they were before enrolment).
    pub fn wait_enrolled(
        &self,
        pod: &Pod,
        baseline: &[String],
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let what = format!(
            "pod {} to be enrolled (ztunnel listeners and redirect rules in its netns)",
            pod.key()
        );
        poll::eventually(&what, timeout, || {
            let ports = self.listening_ports(pod).map_err(|e| e.to_string())?;
            let rules = self.netns_rules(pod).map_err(|e| e.to_string())?;
            let listening = ZTUNNEL_POD_PORTS.iter().all(|p| ports.contains(p));
            if listening && rules != baseline {
                Ok(())
            } else {
                Err(format!(
                    "listening ports {ports:?}; {} rule lines (baseline {})",
                    rules.len(),
                    baseline.len()
                ))
            }
        })?;
        Ok(())
    }

    /// Polls until the pod's netns is back to its un-enrolled state: listening on exactly
    /// `app_ports`, with the `baseline` rules.
    pub fn wait_released(
        &self,
        pod: &Pod,
        app_ports: &[u16],
        baseline: &[String],
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let what = format!(
            "pod {} to be released (no ztunnel listener, no rule of ours)",
            pod.key()
        );
        poll::eventually(&what, timeout, || {
            let ports = self.listening_ports(pod).map_err(|e| e.to_string())?;
            let rules = self.netns_rules(pod).map_err(|e| e.to_string())?;
            if ports == app_ports && rules == baseline {
                Ok(())
            } else {
                let extra: Vec<&String> = rules.iter().filter(|r| !baseline.contains(r)).collect();
                Err(format!(
                    "listening ports {ports:?} (want {app_ports:?}); rules not in the baseline: {extra:?}"
                ))
            }
        })?;
        Ok(())
    }
}

fn describe(m: &Metrics) -> String {
    m.describe(
        OPENED,
        &[
            "reporter",
            "connection_security_policy",
            "source_principal",
            "destination_principal",
        ],
    )
}
