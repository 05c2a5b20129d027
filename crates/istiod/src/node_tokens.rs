//! Local-mode authentication of node proxies: a file mapping bearer tokens to node names.
//!
//! Format: one `<token> <node-name>` pair per line, separated by whitespace; blank lines and
//! lines starting with `#` are ignored. A token may appear only once.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NodeTokensError {
    #[error("node tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node tokens file {path}, line {line}: expected `<token> <node-name>`")]
    Syntax { path: PathBuf, line: usize },
    #[error("node tokens file {path}, line {line}: token already assigned to node {node}")]
    Duplicate {
        path: PathBuf,
        line: usize,
        node: String,
    },
}

/// Bearer tokens of node proxies and the node each one identifies.
#[derive(Clone, Default)]
pub struct NodeTokens {
    entries: Vec<(String, String)>,
}

impl std::fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        let nodes: Vec<&str> = self.entries.iter().map(|(_, n)| n.as_str()).collect();
        f.debug_struct("NodeTokens").field("nodes", &nodes).finish()
    }
}

impl NodeTokens {
    pub fn load(path: &Path) -> Result<Self, NodeTokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeTokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the file content; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, NodeTokensError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(node), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(NodeTokensError::Syntax {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            };
            if let Some((_, node)) = entries.iter().find(|(t, _)| t == token) {
                return Err(NodeTokensError::Duplicate {
                    path: path.to_path_buf(),
                    line: i + 1,
                    node: node.clone(),
                });
            }
            entries.push((token.to_string(), node.to_string()));
        }
        Ok(NodeTokens { entries })
    }

    /// The node a token identifies. Every entry is compared in constant time, so the answer's
    /// timing does not reveal how much of a token matched.
    pub fn node_for(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (t, node) in &self.entries {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(node.as_str());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_comments_and_blank_lines() {
        let t = NodeTokens::parse(
            "# tokens\n\ns3cret-a node-a\n  tok-b\tnode-b  \n",
            Path::new("f"),
        )
        .expect("valid");
        assert_eq!(t.len(), 2);
        assert_eq!(t.node_for("s3cret-a"), Some("node-a"));
        assert_eq!(t.node_for("tok-b"), Some("node-b"));
        assert_eq!(t.node_for("s3cret"), None);
        assert_eq!(t.node_for(""), None);
        assert!(
            !format!("{t:?}").contains("s3cret"),
            "tokens are not printed"
        );
    }

    #[test]
    fn rejects_bad_lines_and_duplicates() {
        let err = NodeTokens::parse("a n1\nlonely\n", Path::new("tokens.txt")).expect_err("syntax");
        assert_eq!(
            err.to_string(),
            "node tokens file tokens.txt, line 2: expected `<token> <node-name>`"
        );
        let err = NodeTokens::parse("a n1\nb n2 extra\n", Path::new("t")).expect_err("syntax");
        assert!(err.to_string().contains("line 2"));
        let err = NodeTokens::parse("a n1\na n2\n", Path::new("t")).expect_err("dup");
        assert!(
            err.to_string().contains("already assigned to node n1"),
            "{err}"
        );
    }
}
