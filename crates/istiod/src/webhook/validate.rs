//! What the webhook refuses in AuthorizationPolicies and PeerAuthentications: values that
//! cannot mean anything (bad ports, addresses, wildcards, empty conditions) and combinations
//! Istio's own validation rejects. What is valid but not enforced as written (L7 attributes
//! on a ztunnel policy, a scope already taken) is left to the model, whose issues become
//! warnings.

use std::net::IpAddr;

use mesh_config::objects::{
    AuthorizationAction, AuthorizationPolicy, Condition, GATEWAY_GROUP, Operation,
    PeerAuthentication, PolicyTargetReference, Source,
};

/// The problems of a policy, one message each; empty when valid.
pub fn authorization_policy(ap: &AuthorizationPolicy) -> Vec<String> {
    let mut errors = Vec::new();
    let spec = &ap.spec;
    let refs: Vec<&PolicyTargetReference> = spec.all_target_refs().collect();
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        errors.push("only one of targetRef and targetRefs may be set".to_string());
    }
    if spec.selector.is_some() && !refs.is_empty() {
        errors.push("only one of selector and targetRef(s) may be set".to_string());
    }
    let own_namespace = ap.metadata.namespace.as_deref().unwrap_or("default");
    for (i, r) in refs.iter().enumerate() {
        target_ref(i + 1, r, own_namespace, &mut errors);
    }
    match (spec.action, &spec.provider) {
        (AuthorizationAction::Custom, None) => {
            errors.push("action CUSTOM needs a provider".to_string());
        }
        (AuthorizationAction::Custom, Some(p)) if p.name.is_empty() => {
            errors.push("provider.name must not be empty".to_string());
        }
        (action, Some(_)) if action != AuthorizationAction::Custom => {
            errors.push(format!(
                "provider is only valid with action CUSTOM, not {action:?}"
            ));
        }
        _ => {}
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            source(&format!("{at}.from[{j}].source"), &from.source, &mut errors);
        }
        for (j, to) in rule.to.iter().enumerate() {
            operation(
                &format!("{at}.to[{j}].operation"),
                &to.operation,
                &mut errors,
            );
        }
        for (j, cond) in rule.when.iter().enumerate() {
            condition(&format!("{at}.when[{j}]"), cond, &mut errors);
        }
    }
    errors
}

/// The problems of a PeerAuthentication, one message each; empty when valid.
pub fn peer_authentication(pa: &PeerAuthentication) -> Vec<String> {
    let mut errors = Vec::new();
    let has_selector = pa
        .spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if !pa.spec.port_level_mtls.is_empty() && !has_selector {
        errors.push("portLevelMtls requires a selector with at least one label".to_string());
    }
    for port in pa.spec.port_level_mtls.keys() {
        if *port == 0 || *port > 65535 {
            errors.push(format!("portLevelMtls: {port} is not a port (1-65535)"));
        }
    }
    errors
}

fn target_ref(n: usize, r: &PolicyTargetReference, own_ns: &str, errors: &mut Vec<String>) {
    let at = format!("targetRef #{n}");
    if r.name.is_empty() {
        errors.push(format!("{at}: name must not be empty"));
    }
    let expected_group = match r.kind.as_str() {
        "Gateway" | "GatewayClass" => GATEWAY_GROUP,
        "Service" => "",
        "ServiceEntry" => "networking.istio.io",
        other => {
            errors.push(format!(
                "{at}: kind {other:?} is not supported (Gateway, GatewayClass, Service or \
                 ServiceEntry)"
            ));
            return;
        }
    };
    if r.group != expected_group {
        errors.push(format!(
            "{at}: group of a {} must be {expected_group:?}, not {:?}",
            r.kind, r.group
        ));
    }
    if let Some(ns) = r.namespace.as_deref()
        && !ns.is_empty()
        && ns != own_ns
    {
        errors.push(format!(
            "{at}: namespace {ns:?} differs from the policy's ({own_ns:?}); cross-namespace \
             references are not allowed"
        ));
    }
}

fn source(at: &str, s: &Source, errors: &mut Vec<String>) {
    if *s == Source::default() {
        errors.push(format!("{at} must not be empty"));
        return;
    }
    for (field, values) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        wildcards(&format!("{at}.{field}"), values, errors);
    }
    for (field, values) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for v in values {
            if !is_ip_or_cidr(v) {
                errors.push(format!("{at}.{field}: {v:?} is not an IP address or CIDR"));
            }
        }
    }
}

fn operation(at: &str, op: &Operation, errors: &mut Vec<String>) {
    if *op == Operation::default() {
        errors.push(format!("{at} must not be empty"));
        return;
    }
    for (field, values) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        for v in values {
            if !is_port(v) {
                errors.push(format!("{at}.{field}: {v:?} is not a port (1-65535)"));
            }
        }
    }
    for (field, values) in [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
    ] {
        wildcards(&format!("{at}.{field}"), values, errors);
    }
    for (field, values) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
        for v in values {
            if v.is_empty() {
                errors.push(format!("{at}.{field}: empty path"));
            }
        }
    }
}

fn condition(at: &str, c: &Condition, errors: &mut Vec<String>) {
    if c.key.is_empty() {
        errors.push(format!("{at}: key must not be empty"));
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        errors.push(format!(
            "{at}: condition on {:?} needs values or notValues",
            c.key
        ));
    }
    match c.key.as_str() {
        "destination.port" => {
            for v in c.values.iter().chain(&c.not_values) {
                if !is_port(v) {
                    errors.push(format!("{at}: {v:?} is not a port (1-65535)"));
                }
            }
        }
        "source.ip" | "remote.ip" | "destination.ip" => {
            for v in c.values.iter().chain(&c.not_values) {
                if !is_ip_or_cidr(v) {
                    errors.push(format!("{at}: {v:?} is not an IP address or CIDR"));
                }
            }
        }
        _ => {}
    }
}

/// Values may use `*` only as a whole value, a prefix or a suffix; none may be empty.
fn wildcards(at: &str, values: &[String], errors: &mut Vec<String>) {
    for v in values {
        if v.is_empty() {
            errors.push(format!("{at}: empty value"));
            continue;
        }
        let stars = v.matches('*').count();
        if stars > 1 || (stars == 1 && !v.starts_with('*') && !v.ends_with('*')) {
            errors.push(format!(
                "{at}: {v:?} may use * only as a prefix, a suffix or the whole value"
            ));
        }
    }
}

fn is_port(v: &str) -> bool {
    matches!(v.parse::<u16>(), Ok(p) if p > 0)
}

fn is_ip_or_cidr(v: &str) -> bool {
    v.parse::<IpAddr>().is_ok() || v.parse::<ipnet::IpNet>().is_ok()
}

#[cfg(test)]
mod tests;
