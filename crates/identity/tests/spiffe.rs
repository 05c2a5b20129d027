//! Parsing and formatting of workload SPIFFE ids.

use identity::{Identity, SpiffeError};

#[test]
fn parse_and_format_round_trip() {
    for uri in [
        "spiffe://cluster.local/ns/default/sa/web",
        "spiffe://prod-east.example.com/ns/kube-system/sa/ztunnel",
        "spiffe://td_1/ns/a.b/sa/Mixed-Case_1",
    ] {
        let id: Identity = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(id.uri(), uri);
        assert_eq!(id.to_string(), uri);
        assert_eq!(id.uri().parse::<Identity>().unwrap(), id);
    }
    let id: Identity = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
    assert_eq!(id, Identity::new("cluster.local", "default", "web"));
}

/// Each malformed input is refused, and the message says what is wrong with it.
#[test]
fn malformed_ids_are_refused_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("", "must start with \"spiffe://\""),
        (
            "https://cluster.local/ns/a/sa/b",
            "must start with \"spiffe://\"",
        ),
        (
            "SPIFFE://cluster.local/ns/a/sa/b",
            "must start with \"spiffe://\"",
        ),
        ("spiffe:///ns/a/sa/b", "empty trust domain"),
        ("spiffe://", "empty trust domain"),
        (
            "spiffe://Cluster.Local/ns/a/sa/b",
            "invalid trust domain \"Cluster.Local\"",
        ),
        (
            "spiffe://clu$ter/ns/a/sa/b",
            "invalid trust domain \"clu$ter\"",
        ),
        ("spiffe://cluster.local:8080/ns/a/sa/b", "port"),
        ("spiffe://user@cluster.local/ns/a/sa/b", "user info"),
        ("spiffe://cluster.local/ns/a/sa/b?x=1", "query"),
        ("spiffe://cluster.local/ns/a/sa/b#frag", "fragment"),
        ("spiffe://cluster.local", "found \"\""),
        (
            "spiffe://cluster.local/",
            "/ns/<namespace>/sa/<service-account>",
        ),
        ("spiffe://cluster.local/ns/a", "found \"/ns/a\""),
        ("spiffe://cluster.local/ns/a/sa", "found \"/ns/a/sa\""),
        (
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "found \"/ns/a/sa/b/extra\"",
        ),
        (
            "spiffe://cluster.local/namespace/a/sa/b",
            "found \"/namespace/a/sa/b\"",
        ),
        ("spiffe://cluster.local/sa/b/ns/a", "found \"/sa/b/ns/a\""),
        ("spiffe://cluster.local/ns//sa/b", "invalid namespace \"\""),
        (
            "spiffe://cluster.local/ns/../sa/b",
            "invalid namespace \"..\"",
        ),
        (
            "spiffe://cluster.local/ns/a/sa/",
            "invalid service account \"\"",
        ),
        (
            "spiffe://cluster.local/ns/a/sa/b c",
            "invalid service account \"b c\"",
        ),
        (
            "spiffe://cluster.local/ns/a/sa/%41",
            "invalid service account \"%41\"",
        ),
    ];
    for (input, reason) in cases {
        let err = input
            .parse::<Identity>()
            .expect_err(&format!("{input:?} should be refused"));
        let msg = err.to_string();
        assert!(msg.contains(reason), "{input:?}: {msg:?} lacks {reason:?}");
        assert!(
            msg.contains(&format!("{input:?}")),
            "{msg:?} does not quote the input"
        );
    }
}

#[test]
fn error_variants_identify_the_problem() {
    assert!(matches!(
        "spiffe://cluster.local/ns/a".parse::<Identity>(),
        Err(SpiffeError::WrongPath { .. })
    ));
    assert!(matches!(
        "spiffe://UPPER/ns/a/sa/b".parse::<Identity>(),
        Err(SpiffeError::InvalidTrustDomain { .. })
    ));
}
