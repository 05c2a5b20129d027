use super::*;

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa)
}

fn http<'a>(method: &'a str, path: &'a str, host: &'a str, h: &'a HeaderMap) -> HttpAttributes<'a> {
    HttpAttributes {
        method,
        path,
        host,
        headers: h,
    }
}

fn policy(action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        name: "ns/p".into(),
        action,
        targets: vec![],
        rules,
    }
}

#[test]
fn istio_string_forms() {
    assert!(StringMatch::parse("*").matches("x"));
    assert!(!StringMatch::parse("*").matches(""));
    assert!(StringMatch::parse("/admin*").matches("/admin/users"));
    assert!(StringMatch::parse("*.json").matches("/a.json"));
    assert!(StringMatch::parse("/a").matches("/a"));
    assert!(!StringMatch::parse("/a").matches("/a/"));
}

#[test]
fn deny_first_then_allow_and_no_allow_means_allow() {
    let h = HeaderMap::new();
    let client = id("clients", "sleep");
    let subject = Subject {
        principal: Some(&client),
        port: 80,
        http: Some(http("GET", "/admin", "reviews", &h)),
    };
    let deny_admin = policy(
        Action::Deny,
        vec![Rule {
            from: vec![],
            to: vec![Operation {
                paths: vec![StringMatch::parse("/admin*")],
                ..Default::default()
            }],
        }],
    );
    let allow_all = policy(Action::Allow, vec![Rule::default()]);
    assert_eq!(evaluate([&allow_all], "ns/svc", &subject), Decision::Allow);
    assert!(
        matches!(evaluate([&allow_all, &deny_admin], "ns/svc", &subject), Decision::Deny(r) if r.contains("ns/p"))
    );
    assert_eq!(evaluate([], "ns/svc", &subject), Decision::Allow);
    // An ALLOW policy without rules allows nothing.
    let allow_nothing = policy(Action::Allow, vec![]);
    assert!(matches!(
        evaluate([&allow_nothing], "ns/svc", &subject),
        Decision::Deny(_)
    ));
    // Policies for another service do not apply.
    let mut other = deny_admin.clone();
    other.targets = vec!["ns/other".into()];
    assert_eq!(evaluate([&other], "ns/svc", &subject), Decision::Allow);
}

#[test]
fn sources_operations_and_negations() {
    let h = HeaderMap::new();
    let client = id("clients", "sleep");
    let s = |method, path, host| Subject {
        principal: Some(&client),
        port: 8080,
        http: Some(http(method, path, host, &h)),
    };
    let src = Source::from_proto(pb::Source {
        principals: vec!["spiffe://cluster.local/ns/clients/*".into()],
        not_namespaces: vec!["blocked".into()],
        ..Default::default()
    });
    let op = Operation::from_proto(
        pb::Operation {
            methods: vec!["GET".into()],
            hosts: vec!["Reviews.demo".into()],
            not_paths: vec!["/private*".into()],
            ports: vec![8080],
            ..Default::default()
        },
        "t",
    )
    .expect("operation");
    let p = policy(
        Action::Allow,
        vec![Rule {
            from: vec![src],
            to: vec![op],
        }],
    );
    assert_eq!(
        evaluate([&p], "k", &s("GET", "/", "reviews.demo:8080")),
        Decision::Allow
    );
    assert!(matches!(
        evaluate([&p], "k", &s("POST", "/", "reviews.demo")),
        Decision::Deny(_)
    ));
    assert!(matches!(
        evaluate([&p], "k", &s("GET", "/private/x", "reviews.demo")),
        Decision::Deny(_)
    ));
    assert!(matches!(
        evaluate([&p], "k", &s("GET", "/", "other")),
        Decision::Deny(_)
    ));
    let stranger = id("blocked", "sleep");
    let blocked = Subject {
        principal: Some(&stranger),
        ..s("GET", "/", "reviews.demo")
    };
    assert!(matches!(evaluate([&p], "k", &blocked), Decision::Deny(_)));
}

#[test]
fn http_only_rules_on_plain_tcp_fail_closed() {
    let client = id("clients", "sleep");
    let tcp = Subject {
        principal: Some(&client),
        port: 80,
        http: None,
    };
    let http_rule = || Rule {
        from: vec![],
        to: vec![Operation {
            methods: vec!["GET".into()],
            ..Default::default()
        }],
    };
    let allow_get = policy(Action::Allow, vec![http_rule()]);
    assert!(
        matches!(evaluate([&allow_get], "k", &tcp), Decision::Deny(_)),
        "ALLOW never matches"
    );
    let deny_get = policy(Action::Deny, vec![http_rule()]);
    assert!(
        matches!(evaluate([&deny_get], "k", &tcp), Decision::Deny(_)),
        "DENY applies on its L4 fields"
    );
    let port_only = policy(
        Action::Allow,
        vec![Rule {
            from: vec![],
            to: vec![Operation {
                ports: vec![80],
                ..Default::default()
            }],
        }],
    );
    assert_eq!(evaluate([&port_only], "k", &tcp), Decision::Allow);
}

#[test]
fn hosts_with_ports_and_brackets() {
    assert_eq!(strip_port("a.b:80"), "a.b");
    assert_eq!(strip_port("a.b"), "a.b");
    assert_eq!(strip_port("[fd00::1]:80"), "[fd00::1]");
    assert_eq!(strip_port("fd00::1"), "fd00::1");
}
