//! The agent's core: the pod records, kept in line with the configuration (reconcile) and with
//! what the CNI plugin reports (ADD, DEL, CHECK).
//!
//! A pod is enrolled when the configuration says so ([`mesh_config::pod_enrolled`]) and its
//! network namespace is known: from the CNI ADD, or, for pods that started before the agent or
//! before their namespace was labelled, by finding the namespace that holds the pod's IP. A pod
//! is released when it should no longer be enrolled or has disappeared from the configuration.
//! Every change is saved to the state directory and published in `status.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_config::Snapshot;
use mesh_proto::zds::{ZdsError, ZdsServerOptions, ZdsStatus};
use tokio::sync::{Mutex, watch};
use tracing::{debug, info, warn};

use super::desired::{self, PodView};
use super::enroller::Enroller;
use super::netns::{self, Netns, NetnsError};
use super::rules::{self, RedirectConfig};
use super::state::{
    EnrolledPod, Enrolment, PendingPod, PodKey, PodRecord, StateError, StateStore, Status, now_unix,
};
use super::zds_sender::{PodWorkload, ZdsSender};
use crate::api::{PROTOCOL_VERSION, PluginCommand, PluginRequest, PluginResponse};

/// Settings of the agent core.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub state_dir: PathBuf,
    pub zds_socket: PathBuf,
    pub zds: ZdsServerOptions,
    /// Directory of named network namespaces searched for pods started before the agent.
    pub netns_dir: PathBuf,
    /// The host's `/proc`, whose `PID/ns/net` are searched too (`None`: not searched).
    pub proc_dir: Option<PathBuf>,
    /// How long a CNI ADD waits for its pod to show up in the configuration.
    pub pod_wait: Duration,
    pub rules: RedirectConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("zds: {0}")]
    Zds(#[from] ZdsError),
}

/// The enrolled pods and the uid each is enrolled with.
pub type EnrolledPods = BTreeMap<PodKey, String>;

pub struct Agent {
    cfg: AgentConfig,
    enroller: Enroller,
    config: watch::Receiver<Arc<Snapshot>>,
    inner: Mutex<Inner>,
    enrolled: watch::Sender<EnrolledPods>,
}

struct Inner {
    store: StateStore,
    /// Pods that should be enrolled and are not, with the reason.
    pending: BTreeMap<PodKey, String>,
}

/// Opens the recorded namespace of `rec`, checking it is still the same one.
fn open_recorded(rec: &PodRecord) -> Option<Result<Netns, NetnsError>> {
    let path = rec.netns.as_ref()?;
    Some(Netns::open_expecting(path, rec.netns_inode))
}

fn workload_of(key: &PodKey, en: &Enrolment) -> PodWorkload {
    PodWorkload {
        uid: en.uid.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        service_account: en.service_account.clone(),
    }
}

fn enrolment(view: &PodView) -> Enrolment {
    Enrolment {
        uid: view.workload.uid.clone(),
        service_account: view.workload.service_account.clone(),
        since: now_unix(),
    }
}

impl Agent {
    /// Loads the records, refreshes the rules of the pods enrolled before (flush and refill, so
    /// nothing is duplicated) and starts the ZDS server with them in its snapshot.
    pub async fn start(
        cfg: AgentConfig,
        config: watch::Receiver<Arc<Snapshot>>,
    ) -> Result<Arc<Self>, AgentError> {
        let mut store = StateStore::load(&cfg.state_dir)?;
        let mut restored = Vec::new();
        for (key, rec) in store.pods.iter_mut() {
            let Some(en) = rec.enrolled.clone() else {
                continue;
            };
            let ns = match open_recorded(rec) {
                Some(Ok(ns)) => Arc::new(ns),
                other => {
                    let why = other.map_or("no namespace recorded".to_string(), |r| {
                        r.err().map(|e| e.to_string()).unwrap_or_default()
                    });
                    info!(pod = %key, reason = %why, "enrolled pod is gone");
                    rec.enrolled = None;
                    continue;
                }
            };
            let refreshed = rules::install_async(ns.clone(), cfg.rules.clone()).await;
            match refreshed
                .map_err(|e| e.to_string())
                .and_then(|()| ns.try_clone_fd().map_err(|e| e.to_string()))
            {
                Ok(fd) => restored.push((workload_of(key, &en), fd)),
                Err(e) => {
                    warn!(pod = %key, error = %e, "cannot restore enrolled pod; will enrol again");
                    rec.enrolled = None;
                }
            }
        }
        info!(pods = restored.len(), "restored enrolled pods");
        let zds = ZdsSender::bind(&cfg.zds_socket, cfg.zds.clone(), restored)?;
        store.save()?;
        let agent = Arc::new(Agent {
            enroller: Enroller::new(zds, cfg.rules.clone()),
            cfg,
            config,
            inner: Mutex::new(Inner {
                store,
                pending: BTreeMap::new(),
            }),
            enrolled: watch::Sender::new(EnrolledPods::new()),
        });
        agent.persist(&*agent.inner.lock().await);
        Ok(agent)
    }

    /// ztunnel's connection status.
    pub fn zds_status(&self) -> watch::Receiver<ZdsStatus> {
        self.enroller.zds.status()
    }

    /// The enrolled pods, updated after every change (whether made by a reconciliation or by
    /// the CNI plugin).
    pub fn enrolled(&self) -> watch::Receiver<EnrolledPods> {
        self.enrolled.subscribe()
    }

    /// The status as published in `status.json`.
    pub async fn status(&self) -> Status {
        self.build_status(&*self.inner.lock().await)
    }

    /// Answers the CNI plugin.
    pub async fn handle_plugin(&self, req: PluginRequest) -> PluginResponse {
        if req.version != PROTOCOL_VERSION {
            return PluginResponse::Error {
                message: format!(
                    "plugin protocol version {} is not {PROTOCOL_VERSION}: install the plugin \
                     that comes with this agent",
                    req.version
                ),
            };
        }
        debug!(command = ?req.command, pod = %format!("{}/{}", req.pod_namespace, req.pod_name),
               container = %req.container_id, "plugin request");
        match req.command {
            PluginCommand::Add => self.cni_add(req).await,
            PluginCommand::Del => self.cni_del(req).await,
            PluginCommand::Check => self.cni_check(req).await,
        }
    }

    /// The view of a pod reported by the plugin, waiting a little for the configuration to show
    /// it; `false` when it never did.
    async fn view_for_cni(&self, key: &PodKey, uid: Option<&str>) -> (PodView, bool) {
        let mut rx = self.config.clone();
        let _ = tokio::time::timeout(
            self.cfg.pod_wait,
            rx.wait_for(|s| desired::find_pod(s, key).is_some()),
        )
        .await;
        let snap = rx.borrow().clone();
        match desired::find_pod(&snap, key) {
            Some(pod) => (desired::view(pod, &snap), true),
            None => (desired::fallback_view(key, uid, &snap), false),
        }
    }

    async fn cni_add(&self, req: PluginRequest) -> PluginResponse {
        let key = PodKey::new(&req.pod_namespace, &req.pod_name);
        let Some(path) = req.netns.clone() else {
            return PluginResponse::Error {
                message: "ADD without a network namespace path".into(),
            };
        };
        let (view, found) = self.view_for_cni(&key, req.pod_uid.as_deref()).await;
        let netns = match Netns::open(&path) {
            Ok(ns) => Arc::new(ns),
            Err(e) => {
                return PluginResponse::Error {
                    message: e.to_string(),
                };
            }
        };
        let mut inner = self.inner.lock().await;
        if let Some(old) = inner.store.pods.get(&key).cloned()
            && let Some(en) = &old.enrolled
        {
            let same_netns = old.netns_inode == Some(netns.inode());
            if !same_netns || en.uid != view.workload.uid {
                // An earlier sandbox of this pod (or an outdated identity): let it go first.
                let old_ns = if same_netns {
                    None
                } else {
                    open_recorded(&old).and_then(Result::ok).map(Arc::new)
                };
                if let Err(e) = self.enroller.release(&en.uid, old_ns).await {
                    warn!(pod = %key, error = %e, "releasing the previous sandbox failed");
                }
            }
        }
        let ips = if req.ips.is_empty() {
            view.ips.clone()
        } else {
            req.ips.clone()
        };
        let mut rec = PodRecord {
            container_id: Some(req.container_id.clone()),
            netns: Some(path),
            netns_inode: Some(netns.inode()),
            ips,
            pod_uid: req.pod_uid.clone(),
            enrolled: None,
            seen_in_config: found,
        };
        let resp = if view.enroll {
            match self.enroller.enroll(&view.workload, netns).await {
                Ok(()) => {
                    rec.enrolled = Some(enrolment(&view));
                    inner.pending.remove(&key);
                    PluginResponse::Enrolled
                }
                Err(e) => {
                    warn!(pod = %key, error = %e, "enrolment at pod creation failed");
                    inner.pending.insert(key.clone(), e.to_string());
                    PluginResponse::Error {
                        message: e.to_string(),
                    }
                }
            }
        } else {
            inner.pending.remove(&key);
            PluginResponse::NotEnrolled
        };
        inner.store.pods.insert(key, rec);
        self.persist(&inner);
        resp
    }

    async fn cni_del(&self, req: PluginRequest) -> PluginResponse {
        let key = PodKey::new(&req.pod_namespace, &req.pod_name);
        let mut inner = self.inner.lock().await;
        let Some(rec) = inner.store.pods.get(&key).cloned() else {
            return PluginResponse::NotEnrolled;
        };
        if rec
            .container_id
            .as_deref()
            .is_some_and(|c| c != req.container_id)
        {
            // DEL of an older sandbox; the current one stays.
            return PluginResponse::NotEnrolled;
        }
        if let Some(en) = &rec.enrolled {
            let ns = open_recorded(&rec).and_then(Result::ok).map(Arc::new);
            if let Err(e) = self.enroller.release(&en.uid, ns).await {
                warn!(pod = %key, error = %e, "release at pod deletion incomplete");
            }
        }
        inner.store.pods.remove(&key);
        inner.pending.remove(&key);
        self.persist(&inner);
        PluginResponse::NotEnrolled
    }

    async fn cni_check(&self, req: PluginRequest) -> PluginResponse {
        let key = PodKey::new(&req.pod_namespace, &req.pod_name);
        let snap = self.config.borrow().clone();
        let view = match desired::find_pod(&snap, &key) {
            Some(pod) => desired::view(pod, &snap),
            None => desired::fallback_view(&key, req.pod_uid.as_deref(), &snap),
        };
        let inner = self.inner.lock().await;
        let rec = inner.store.pods.get(&key).filter(|r| {
            r.container_id
                .as_deref()
                .is_none_or(|c| c == req.container_id)
        });
        let error = |message: String| PluginResponse::Error { message };
        match (
            view.enroll,
            rec.and_then(|r| r.enrolled.as_ref().map(|_| r)),
        ) {
            (true, Some(rec)) => {
                let Some(Ok(ns)) = open_recorded(rec) else {
                    return error("the pod's network namespace is gone".into());
                };
                let ns = Arc::new(ns);
                let check = tokio::task::spawn_blocking(move || rules::installed(&ns)).await;
                match check {
                    Ok(Ok(true)) => PluginResponse::Enrolled,
                    Ok(Ok(false)) => error("the redirect rules are missing".into()),
                    Ok(Err(e)) => error(e.to_string()),
                    Err(e) => error(e.to_string()),
                }
            }
            (true, None) => error(format!(
                "the pod should be enrolled and is not: {}",
                inner
                    .pending
                    .get(&key)
                    .map_or("not reported yet", String::as_str)
            )),
            (false, Some(_)) => error("the pod is enrolled and should not be".into()),
            (false, None) => PluginResponse::NotEnrolled,
        }
    }

    /// Brings the records in line with the latest configuration: enrols the pods of this node
    /// that should be, releases the others, forgets deleted pods.
    pub async fn reconcile(&self) {
        let snap = self.config.borrow().clone();
        let pods = desired::node_pods(&snap, &self.cfg.node_name);
        let mut inner = self.inner.lock().await;
        let known = self.enroller.zds.known().await;
        let mut pending = BTreeMap::new();
        let store = &mut inner.store;

        let keys: Vec<PodKey> = store.pods.keys().cloned().collect();
        for key in keys {
            let Some(rec) = store.pods.get_mut(&key) else {
                continue;
            };
            let view = pods.get(&key);
            if view.is_some() {
                rec.seen_in_config = true;
            }
            let netns_alive = matches!(open_recorded(rec), Some(Ok(_)));
            let gone = view.is_none() && (rec.seen_in_config || !netns_alive);
            if let Some(en) = rec.enrolled.clone() {
                let keep = match view {
                    Some(v) => v.enroll && v.workload.uid == en.uid,
                    None => !gone,
                };
                if !keep {
                    let ns = open_recorded(rec).and_then(Result::ok).map(Arc::new);
                    if let Err(e) = self.enroller.release(&en.uid, ns).await {
                        warn!(pod = %key, error = %e, "release incomplete");
                    }
                    rec.enrolled = None;
                }
            }
            if gone {
                debug!(pod = %key, "forgetting deleted pod");
                store.pods.remove(&key);
            }
        }

        for (key, view) in pods.iter().filter(|(_, v)| v.enroll) {
            let rec = store.pods.entry(key.clone()).or_insert_with(|| PodRecord {
                seen_in_config: true,
                ..PodRecord::default()
            });
            if rec
                .enrolled
                .as_ref()
                .is_some_and(|e| known.contains(&e.uid))
            {
                continue;
            }
            let ns = match open_recorded(rec) {
                Some(Ok(ns)) => ns,
                _ => match self.find_netns(&view.ips).await {
                    Some(ns) => {
                        rec.netns = Some(ns.path().to_path_buf());
                        rec.netns_inode = Some(ns.inode());
                        rec.ips = view.ips.clone();
                        ns
                    }
                    None => {
                        let reason = if view.ips.is_empty() {
                            "no pod IP in the configuration and no CNI report".to_string()
                        } else {
                            format!("no network namespace holds {:?}", view.ips)
                        };
                        pending.insert(key.clone(), reason);
                        continue;
                    }
                },
            };
            match self.enroller.enroll(&view.workload, Arc::new(ns)).await {
                Ok(()) => rec.enrolled = Some(enrolment(view)),
                Err(e) => {
                    debug!(pod = %key, error = %e, "enrolment pending");
                    pending.insert(key.clone(), e.to_string());
                }
            }
        }
        inner.pending = pending;
        self.persist(&inner);
    }

    /// Releases every enrolled pod (rules removed, ztunnel told) and forgets them, for an
    /// uninstall. A pod whose recorded namespace path is gone (a `/proc/PID` path whose process
    /// exited, say) is looked up again by its addresses. Returns how many pods were released.
    pub async fn release_all(&self) -> usize {
        let mut inner = self.inner.lock().await;
        let mut released = 0;
        let records: Vec<(PodKey, PodRecord)> = inner
            .store
            .pods
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, rec) in records {
            let Some(en) = &rec.enrolled else {
                continue;
            };
            let ns = match open_recorded(&rec) {
                Some(Ok(ns)) => Some(ns),
                _ => self.find_netns(&rec.ips).await,
            };
            match self.enroller.release(&en.uid, ns.map(Arc::new)).await {
                Ok(()) => released += 1,
                Err(e) => warn!(pod = %key, error = %e, "release incomplete"),
            }
        }
        inner.store.pods.clear();
        inner.pending.clear();
        self.persist(&inner);
        released
    }

    async fn find_netns(&self, ips: &[std::net::IpAddr]) -> Option<Netns> {
        let ips = ips.to_vec();
        let dir = self.cfg.netns_dir.clone();
        let proc_dir = self.cfg.proc_dir.clone();
        tokio::task::spawn_blocking(move || netns::find_by_ip(&ips, &dir, proc_dir.as_deref()))
            .await
            .ok()
            .flatten()
    }

    fn build_status(&self, inner: &Inner) -> Status {
        Status {
            node: self.cfg.node_name.clone(),
            ztunnel_connected: self.enroller.zds.status().borrow().connected,
            updated: now_unix(),
            enrolled: inner
                .store
                .pods
                .iter()
                .filter_map(|(k, r)| {
                    let en = r.enrolled.as_ref()?;
                    Some(EnrolledPod {
                        namespace: k.namespace.clone(),
                        name: k.name.clone(),
                        uid: en.uid.clone(),
                        service_account: en.service_account.clone(),
                        netns: r.netns.clone(),
                        ips: r.ips.clone(),
                        since: en.since,
                    })
                })
                .collect(),
            pending: inner
                .pending
                .iter()
                .map(|(k, reason)| PendingPod {
                    namespace: k.namespace.clone(),
                    name: k.name.clone(),
                    reason: reason.clone(),
                })
                .collect(),
        }
    }

    /// Saves the records and publishes the status; failures are logged (the next change
    /// retries).
    fn persist(&self, inner: &Inner) {
        let enrolled: EnrolledPods = inner
            .store
            .pods
            .iter()
            .filter_map(|(k, r)| Some((k.clone(), r.enrolled.as_ref()?.uid.clone())))
            .collect();
        self.enrolled.send_if_modified(|cur| {
            let changed = *cur != enrolled;
            if changed {
                *cur = enrolled;
            }
            changed
        });
        if let Err(e) = inner.store.save() {
            warn!(error = %e, "cannot save pod records");
        }
        if let Err(e) = inner.store.write_status(&self.build_status(inner)) {
            warn!(error = %e, "cannot write status");
        }
    }
}

/// For `--uninstall`: removes the redirect rules of every pod recorded as enrolled in
/// `state_dir` and clears the records. Returns how many pods were released.
pub fn release_recorded_pods(
    state_dir: &std::path::Path,
    cfg: &RedirectConfig,
) -> Result<usize, StateError> {
    let mut store = StateStore::load(state_dir)?;
    let mut released = 0;
    for (key, rec) in &store.pods {
        if rec.enrolled.is_none() {
            continue;
        }
        match open_recorded(rec) {
            Some(Ok(ns)) => match rules::remove(&ns, cfg) {
                Ok(_) => released += 1,
                Err(e) => warn!(pod = %key, error = %e, "cannot remove redirect rules"),
            },
            _ => debug!(pod = %key, "namespace gone; nothing to remove"),
        }
    }
    store.pods.clear();
    store.save()?;
    Ok(released)
}
