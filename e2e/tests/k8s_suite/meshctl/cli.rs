//! meshctl as the user runs it (the suite's kubeconfig), and reading what it prints: JSON, and
//! tables whose cells are separated by two spaces or more.

use anyhow::Context;
use e2e::k8s::tools::{CommandOutput, run as run_tool};
use serde_json::Value;

use super::COMMAND_TIMEOUT;
use crate::k8s_suite::Suite;

/// meshctl as the user runs it.
pub struct Ctl<'a> {
    pub suite: &'a Suite,
    pub bin: &'a std::path::Path,
}

impl Ctl<'_> {
    /// `meshctl args...`, whatever its exit code.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CommandOutput> {
        Ok(run_tool(&self.suite.settings, self.bin, args, COMMAND_TIMEOUT).await?)
    }

    /// `meshctl args...`, which must succeed.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<CommandOutput> {
        let out = self.run(args).await?;
        anyhow::ensure!(
            out.success(),
            "`meshctl {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            out.combined()
        );
        Ok(out)
    }

    /// `meshctl args... -o json`, which must succeed and print JSON.
    pub async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all).await?;
        parse_json(&all, &out)
    }
}

pub fn parse_json(args: &[&str], out: &CommandOutput) -> anyhow::Result<Value> {
    serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "`meshctl {}` did not print JSON:\n{}",
            args.join(" "),
            out.combined()
        )
    })
}

/// The rows of a table meshctl printed: cells are separated by two spaces or more.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// Whether some row holds `cells` side by side.
pub fn has_row(text: &str, cells: &[&str]) -> bool {
    table_rows(text)
        .iter()
        .any(|row| row.windows(cells.len()).any(|w| w == cells))
}

pub fn ensure_row(what: &str, text: &str, cells: &[&str]) -> anyhow::Result<()> {
    anyhow::ensure!(
        has_row(text, cells),
        "{what}: no row with {cells:?} in:\n{text}"
    );
    Ok(())
}

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn array<'a>(v: &'a Value, what: &str) -> anyhow::Result<&'a Vec<Value>> {
    v.as_array()
        .with_context(|| format!("{what} is not a list: {v}"))
}

/// The namespace of the kubeconfig's current context (`default` when it names none).
pub fn context_namespace(kubeconfig: &std::path::Path) -> anyhow::Result<String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let current = kc.current_context.clone().unwrap_or_default();
    Ok(kc
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.namespace.clone())
        .unwrap_or_else(|| "default".into()))
}

pub fn array_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_table_rows_by_cells() {
        let t = "NAME       TRAFFIC TYPE   PROGRAMMED\nwaypoint   service        True\n";
        assert!(has_row(t, &["NAME", "TRAFFIC TYPE", "PROGRAMMED"]));
        assert!(has_row(t, &["waypoint", "service", "True"]));
        assert!(has_row(t, &["service", "True"]));
        assert!(!has_row(t, &["waypoint", "True"]));
    }
}
