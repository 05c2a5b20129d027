//! What the mesh leaves on a node's host, seen from a shell there: the CNI configuration and
//! plugins, the redirect rules inside pod network namespaces, the host's own rules.
//! ([`NodeAccess::Host`]: the node is this machine; a prefix such as `docker exec {node}`
//! reaches a kind node.)

use std::path::Path;
use std::time::Duration;

use super::K8sError;
use super::settings::NodeAccess;
use super::tools::{CommandOutput, run_with_env};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the container runtime mounts pod network namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Where the mesh's CNI plugin is installed.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// A shell on one node.
#[derive(Debug, Clone)]
pub struct NodeShell {
    pub node: String,
    access: NodeAccess,
}

impl NodeShell {
    pub fn new(access: &NodeAccess, node: &str) -> Self {
        NodeShell {
            node: node.to_string(),
            access: access.clone(),
        }
    }

    /// Runs `sh -c script` on the node.
    pub async fn sh(&self, script: &str) -> Result<CommandOutput, K8sError> {
        match &self.access {
            NodeAccess::Host => run_with_env(Path::new("sh"), &["-c", script], &[], TIMEOUT).await,
            NodeAccess::Prefix(prefix) => {
                let words: Vec<String> = prefix
                    .iter()
                    .map(|w| w.replace("{node}", &self.node))
                    .collect();
                let (program, rest) = words.split_first().ok_or_else(|| {
                    K8sError::Invalid("MESH_E2E_NODE_EXEC is an empty command".into())
                })?;
                let mut args: Vec<&str> = rest.iter().map(String::as_str).collect();
                args.extend(["sh", "-c", script]);
                run_with_env(Path::new(program), &args, &[], TIMEOUT).await
            }
        }
    }

    /// Like [`NodeShell::sh`], but a failure is an error.
    pub async fn sh_ok(&self, script: &str) -> Result<String, K8sError> {
        Ok(self.sh(script).await?.checked()?.stdout)
    }

    /// Every file of the CNI configuration directory with its content, as one text.
    pub async fn cni_config(&self) -> Result<String, K8sError> {
        self.sh_ok(&format!(
            "cd {CNI_CONF_DIR} 2>/dev/null || exit 0; for f in *; do [ -f \"$f\" ] || continue; \
             printf '=== %s\\n' \"$f\"; cat \"$f\"; printf '\\n'; done"
        ))
        .await
    }

    /// Whether `path` exists on the node.
    pub async fn exists(&self, path: &str) -> Result<bool, K8sError> {
        Ok(self.sh(&format!("test -e '{path}'")).await?.success())
    }

    /// The files (not directories) under `dir`, recursively, one path a line; empty when `dir`
    /// does not exist.
    pub async fn files_under(&self, dir: &str) -> Result<Vec<String>, K8sError> {
        let out = self
            .sh_ok(&format!("[ -d '{dir}' ] || exit 0; find '{dir}' ! -type d"))
            .await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// The network namespace (under [`NETNS_DIR`]) that holds `ip`, the pod's address.
    pub async fn netns_of(&self, ip: &str) -> Result<String, K8sError> {
        let script = format!(
            "for n in {NETNS_DIR}/*; do nsenter --net=\"$n\" ip -o addr show 2>/dev/null | \
             grep -q ' {ip}/' && echo \"$n\"; done; true"
        );
        let out = self.sh_ok(&script).await?;
        let found: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        match found.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(K8sError::Invalid(format!(
                "no network namespace in {NETNS_DIR} of node {} holds {ip}",
                self.node
            ))),
            many => Err(K8sError::Invalid(format!(
                "several network namespaces of node {} hold {ip}: {many:?}",
                self.node
            ))),
        }
    }

    /// `iptables-save` and `ip6tables-save` of the `nat` table inside a network namespace.
    pub async fn nat_rules_in(&self, netns: &str) -> Result<String, K8sError> {
        self.sh_ok(&format!(
            "nsenter --net='{netns}' iptables-save -t nat; \
             nsenter --net='{netns}' ip6tables-save -t nat 2>/dev/null; true"
        ))
        .await
    }

    /// Lines of the host's `iptables-save` and `ip6tables-save` (every table) that mention
    /// `needle`.
    pub async fn host_rules_matching(&self, needle: &str) -> Result<Vec<String>, K8sError> {
        let out = self
            .sh_ok("iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; true")
            .await?;
        Ok(out
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect())
    }
}
