//! What the control plane currently serves, for readiness and debug endpoints.

use std::sync::atomic::{AtomicBool, Ordering};

use mesh_config::ConfigIssue;
use parking_lot::RwLock;
use serde::Serialize;

use crate::model::{ModelIssue, WaypointStatus};

/// One reported problem, as `/debug/config_issues` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssueView {
    pub file: Option<String>,
    pub object: Option<String>,
    pub reason: String,
}

impl From<&ConfigIssue> for IssueView {
    fn from(i: &ConfigIssue) -> Self {
        IssueView {
            file: Some(i.file.display().to_string()),
            object: i.object.clone(),
            reason: i.reason.clone(),
        }
    }
}

impl From<&ModelIssue> for IssueView {
    fn from(i: &ModelIssue) -> Self {
        IssueView {
            file: i.file.as_ref().map(|f| f.display().to_string()),
            object: Some(i.object.clone()),
            reason: i.reason.clone(),
        }
    }
}

/// Summary of the last projection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Projected {
    /// Generation of the configuration snapshot served.
    pub generation: u64,
    pub workloads: usize,
    pub services: usize,
    pub authorizations: usize,
    pub waypoints: usize,
    /// Store-wide xDS version after the projection.
    pub store_version: u64,
}

/// Shared status of the running control plane.
#[derive(Debug, Default)]
pub struct ControlPlaneStatus {
    ready: AtomicBool,
    issues: RwLock<Vec<IssueView>>,
    projected: RwLock<Projected>,
    waypoints: RwLock<Vec<WaypointStatus>>,
}

impl ControlPlaneStatus {
    /// Whether the first configuration has been projected into the xDS store.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn issues(&self) -> Vec<IssueView> {
        self.issues.read().clone()
    }

    pub fn projected(&self) -> Projected {
        self.projected.read().clone()
    }

    /// The status of every waypoint (and of waypoints named but missing).
    pub fn waypoints(&self) -> Vec<WaypointStatus> {
        self.waypoints.read().clone()
    }

    /// Records a projection; returns the issues not reported by the previous one.
    pub(crate) fn record(
        &self,
        projected: Projected,
        issues: Vec<IssueView>,
        waypoints: Vec<WaypointStatus>,
    ) -> Vec<IssueView> {
        let new = {
            let old = self.issues.read();
            issues
                .iter()
                .filter(|i| !old.contains(i))
                .cloned()
                .collect()
        };
        *self.issues.write() = issues;
        *self.projected.write() = projected;
        *self.waypoints.write() = waypoints;
        self.ready.store(true, Ordering::Release);
        new
    }
}
