//! Reading istiod's monitoring and debug endpoints (port 15014): `/ready`,
//! `/debug/config_issues`, `/debug/config_dump`, `/debug/waypoints`, `/metrics`.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::http::{self, HttpError};

/// Per-request time limit for the debug endpoints.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one istiod's monitoring port.
#[derive(Clone, Debug)]
pub struct IstiodClient {
    base: String,
    timeout: Duration,
}

/// What istiod reports about one waypoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaypointState {
    pub namespace: String,
    pub name: String,
    /// `None` when istiod gives no verdict.
    pub programmed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

impl IstiodClient {
    pub fn new(base: impl Into<String>) -> Self {
        IstiodClient {
            base: base.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        http::join(&self.base, path)
    }

    /// `true` once istiod serves its first configuration, `false` while it answers 503.
    pub async fn ready(&self) -> Result<bool, HttpError> {
        match http::get(&self.url("/ready"), self.timeout).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(503) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The invalid configuration istiod reports (`[{file, object, reason}]`).
    pub async fn config_issues(&self) -> Result<Value, HttpError> {
        http::get_json(&self.url("/debug/config_issues"), self.timeout).await
    }

    /// The running configuration (flags) istiod reports.
    pub async fn config_dump(&self) -> Result<Value, HttpError> {
        http::get_json(&self.url("/debug/config_dump"), self.timeout).await
    }

    /// The waypoints istiod knows and whether each is programmed; `Ok(None)` when this istiod
    /// has no `/debug/waypoints` endpoint.
    pub async fn waypoints(&self) -> Result<Option<Vec<WaypointState>>, HttpError> {
        match http::get_json::<Value>(&self.url("/debug/waypoints"), self.timeout).await {
            Ok(v) => Ok(Some(parse_waypoints(&v))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The version istiod reports: a `version` field of `/debug/config_dump`, else the `tag`
    /// label of an `istio_build` metric. `Ok(None)` when it reports none.
    pub async fn version(&self) -> Result<Option<String>, HttpError> {
        let dump = self.config_dump().await?;
        if let Some(v) = version_field(&dump) {
            return Ok(Some(v));
        }
        match http::get(&self.url("/metrics"), self.timeout).await {
            Ok(body) => Ok(build_tag(&String::from_utf8_lossy(&body))),
            Err(_) => Ok(None),
        }
    }
}

/// A `version` (or `build.version`) string field of a JSON document.
pub fn version_field(v: &Value) -> Option<String> {
    [
        v.get("version"),
        v.get("build").and_then(|b| b.get("version")),
    ]
    .into_iter()
    .flatten()
    .find_map(|x| x.as_str().map(str::to_string))
}

/// The `tag` label of `istio_build{...}` in a Prometheus text exposition.
pub fn build_tag(metrics: &str) -> Option<String> {
    let line = metrics.lines().find(|l| l.starts_with("istio_build{"))?;
    let labels = line.strip_prefix("istio_build{")?.split('}').next()?;
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == "tag").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Reads the `/debug/waypoints` answer: a list (or `{"waypoints": [...]}`) of entries naming a
/// waypoint by `namespace`/`name` (or `metadata`), with its state as a `programmed` boolean,
/// Gateway-style `conditions` (type `Programmed`), or a `status` string.
pub fn parse_waypoints(v: &Value) -> Vec<WaypointState> {
    let items = v
        .as_array()
        .or_else(|| v.get("waypoints").and_then(Value::as_array));
    let Some(items) = items else {
        return Vec::new();
    };
    let mut out: Vec<WaypointState> = items.iter().filter_map(parse_waypoint).collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// The first non-empty string among `keys`.
fn str_at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
}

fn parse_waypoint(item: &Value) -> Option<WaypointState> {
    let meta = item.get("metadata").unwrap_or(&Value::Null);
    let name = str_at(item, &["name"]).or_else(|| str_at(meta, &["name"]))?;
    let namespace = str_at(item, &["namespace"])
        .or_else(|| str_at(meta, &["namespace"]))
        .unwrap_or("");
    let mut state = WaypointState {
        namespace: namespace.to_string(),
        name: name.to_string(),
        ..Default::default()
    };
    let status = item.get("status");
    let conditions = item
        .get("conditions")
        .or_else(|| status.and_then(|s| s.get("conditions")))
        .and_then(Value::as_array);
    let condition = |t: &str| {
        conditions.and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
        })
    };
    let is_false = |c: &Value| match c.get("status") {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("false"),
        _ => false,
    };
    // Programmed decides; a refused Gateway (Accepted=False) is not programmed either.
    let decisive =
        condition("Programmed").or_else(|| condition("Accepted").filter(|c| is_false(c)));
    if let Some(cond) = decisive {
        state.programmed = match cond.get("status") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => Some(s.eq_ignore_ascii_case("true")),
            _ => None,
        };
        if cond.get("type").and_then(Value::as_str) == Some("Accepted") {
            state.programmed = Some(false);
        }
        state.reason = str_at(cond, &["reason"]).map(str::to_string);
        state.message = str_at(cond, &["message"]).map(str::to_string);
    }
    if let Some(b) = item.get("programmed").and_then(Value::as_bool) {
        state.programmed = Some(b);
    }
    if state.programmed.is_none()
        && let Some(s) = status.and_then(Value::as_str)
    {
        state.programmed = Some(s.eq_ignore_ascii_case("programmed"));
        state.reason.get_or_insert_with(|| s.to_string());
    }
    if state.reason.is_none() {
        state.reason = str_at(item, &["reason"]).map(str::to_string);
    }
    if state.message.is_none() {
        state.message = str_at(item, &["message", "error"]).map(str::to_string);
    }
    let addresses = item
        .get("addresses")
        .or_else(|| status.and_then(|s| s.get("addresses")));
    match addresses {
        Some(Value::Array(list)) => {
            state.addresses = list
                .iter()
                .filter_map(|a| a.as_str().or_else(|| str_at(a, &["value"])))
                .map(str::to_string)
                .collect();
        }
        _ => {
            if let Some(a) = str_at(item, &["address"]) {
                state.addresses.push(a.to_string());
            }
        }
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn waypoint_states_read_from_several_shapes() {
        let v = json!({"waypoints": [
            {"namespace": "b", "name": "w", "programmed": true, "address": "10.0.0.9"},
            {"metadata": {"namespace": "a", "name": "w"},
             "status": {"conditions": [{"type": "Accepted", "status": "True"},
                        {"type": "Programmed", "status": "False", "reason": "NoPod",
                         "message": "no waypoint pod is ready"}]}},
            {"namespace": "c", "name": "x", "status": "Pending"},
            {"namespace": "d", "name": "gone", "conditions": [
                {"type": "Accepted", "status": "False", "reason": "GatewayNotFound",
                 "message": "no Gateway d/gone"}]},
            {"no": "name"}
        ]});
        let states = parse_waypoints(&v);
        assert_eq!(states.len(), 4);
        assert_eq!(states[3].programmed, Some(false));
        assert_eq!(states[3].reason.as_deref(), Some("GatewayNotFound"));
        assert_eq!(
            states[0],
            WaypointState {
                namespace: "a".into(),
                name: "w".into(),
                programmed: Some(false),
                reason: Some("NoPod".into()),
                message: Some("no waypoint pod is ready".into()),
                addresses: vec![],
            }
        );
        assert_eq!(states[1].programmed, Some(true));
        assert_eq!(states[1].addresses, vec!["10.0.0.9".to_string()]);
        assert_eq!(states[2].programmed, Some(false));
        assert_eq!(states[2].reason.as_deref(), Some("Pending"));
    }

    #[test]
    fn versions_from_dump_or_metrics() {
        assert_eq!(
            version_field(&json!({"version": "1.2.3"})),
            Some("1.2.3".into())
        );
        assert_eq!(version_field(&json!({"config_dir": "/x"})), None);
        let metrics =
            "# TYPE istio_build gauge\nistio_build{component=\"pilot\",tag=\"0.1.0\"} 1\n";
        assert_eq!(build_tag(metrics), Some("0.1.0".into()));
        assert_eq!(build_tag("other 1\n"), None);
    }
}
