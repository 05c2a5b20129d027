//! SPIFFE identities of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";

/// Why a string is not a workload SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("SPIFFE id {input:?} must start with \"spiffe://\"")]
    MissingScheme { input: String },
    #[error("SPIFFE id {input:?} has an empty trust domain")]
    EmptyTrustDomain { input: String },
    #[error(
        "SPIFFE id {input:?} has an invalid trust domain {trust_domain:?}: only lowercase letters, \
         digits, '.', '-' and '_' are allowed"
    )]
    InvalidTrustDomain { input: String, trust_domain: String },
    #[error("SPIFFE id {input:?} must not contain a query, fragment, port or user info")]
    ForbiddenComponent { input: String },
    #[error(
        "SPIFFE id {input:?} must have the path /ns/<namespace>/sa/<service-account>, found {path:?}"
    )]
    WrongPath { input: String, path: String },
    #[error(
        "SPIFFE id {input:?} has an invalid {what} {value:?}: it must be non-empty, not '.' or \
         '..', and use only letters, digits, '.', '-' and '_'"
    )]
    InvalidSegment {
        input: String,
        what: &'static str,
        value: String,
    },
}

/// A workload identity: trust domain, namespace and service account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(td: impl Into<String>, ns: impl Into<String>, sa: impl Into<String>) -> Self {
        Identity {
            trust_domain: td.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }

    /// The SPIFFE URI, `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Whether `td` is a syntactically valid SPIFFE trust domain name.
pub fn is_valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl FromStr for Identity {
    type Err = SpiffeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_string();
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeError::MissingScheme { input: owned() })?;
        if rest.contains(['?', '#', '@']) {
            return Err(SpiffeError::ForbiddenComponent { input: owned() });
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(SpiffeError::EmptyTrustDomain { input: owned() });
        }
        if td.contains(':') {
            return Err(SpiffeError::ForbiddenComponent { input: owned() });
        }
        if !is_valid_trust_domain(td) {
            return Err(SpiffeError::InvalidTrustDomain {
                input: owned(),
                trust_domain: td.to_string(),
            });
        }
        let wrong_path = || SpiffeError::WrongPath {
            input: owned(),
            path: path.to_string(),
        };
        let parts: Vec<&str> = path
            .strip_prefix('/')
            .ok_or_else(wrong_path)?
            .split('/')
            .collect();
        let [ns_key, ns, sa_key, sa] = parts.as_slice() else {
            return Err(wrong_path());
        };
        if *ns_key != "ns" || *sa_key != "sa" {
            return Err(wrong_path());
        }
        for (what, value) in [("namespace", ns), ("service account", sa)] {
            if !is_valid_segment(value) {
                return Err(SpiffeError::InvalidSegment {
                    input: owned(),
                    what,
                    value: value.to_string(),
                });
            }
        }
        Ok(Identity::new(td, *ns, *sa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_uri() {
        let id = Identity::new("cluster.local", "default", "web");
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/default/sa/web");
        assert_eq!(id.to_string(), id.uri());
    }
}
