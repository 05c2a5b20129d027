//! The delta-xDS state of one server stream, without I/O: what the client subscribed to, what it
//! holds, which changes are pending and which response awaits its ACK.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::Status;

use super::server::TypeStatus;
use super::store::{ResourceStore, Watch};
use crate::proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};

/// The subscription name meaning "every resource of the type".
pub(crate) const WILDCARD: &str = "*";

/// What a request told the server about an earlier response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Feedback {
    Ack { type_url: String, version: u64 },
    Nack { type_url: String, error: String },
}

#[derive(Default)]
pub(crate) struct StreamState {
    types: BTreeMap<String, TypeState>,
}

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds, as far as the server knows: name -> version. Sent resources enter
    /// it when sent (a NACKed version is not resent until the resource changes again).
    known: HashMap<String, String>,
    /// Names whose state must be compared with what the client holds.
    pending: HashSet<String>,
    /// Compare everything subscribed (after a new wildcard subscription or the first request).
    full: bool,
    /// Whether the first response of the type was sent; the first request is always answered,
    /// even with an empty response, so that the client knows its initial state is complete.
    initial_sent: bool,
    outstanding: Option<Outstanding>,
    last_acked_version: Option<u64>,
    last_nack: Option<String>,
}

struct Outstanding {
    nonce: String,
    version: u64,
}

impl TypeState {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    fn has_work(&self) -> bool {
        self.outstanding.is_none() && (!self.initial_sent || self.full || !self.pending.is_empty())
    }
}

impl StreamState {
    /// Applies one request: subscription changes, initial versions, ACK or NACK.
    pub(crate) fn handle_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        watch: &Watch,
    ) -> Result<Option<Feedback>, Status> {
        if req.type_url.is_empty() {
            return Err(Status::invalid_argument(
                "delta discovery request without type_url",
            ));
        }
        let type_url = req.type_url;
        let ts = match self.types.entry(type_url.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                // Record changes from now on, before the initial state is read.
                watch.add_interest(&type_url);
                let ts = e.insert(TypeState {
                    known: req.initial_resource_versions,
                    full: true,
                    ..TypeState::default()
                });
                // An empty first subscription is the legacy form of a wildcard subscription.
                if req.resource_names_subscribe.is_empty() {
                    ts.wildcard = true;
                }
                ts
            }
        };

        let feedback = if req.response_nonce.is_empty() {
            None
        } else {
            match &ts.outstanding {
                Some(o) if o.nonce == req.response_nonce => {
                    let version = o.version;
                    ts.outstanding = None;
                    match req.error_detail {
                        Some(err) => {
                            ts.last_nack = Some(err.message.clone());
                            Some(Feedback::Nack {
                                type_url: type_url.clone(),
                                error: err.message,
                            })
                        }
                        None => {
                            ts.last_acked_version = Some(version);
                            Some(Feedback::Ack {
                                type_url: type_url.clone(),
                                version,
                            })
                        }
                    }
                }
                _ => {
                    tracing::debug!(%type_url, nonce = %req.response_nonce, "ignoring stale nonce");
                    None
                }
            }
        };

        for name in req.resource_names_subscribe {
            if name == WILDCARD {
                if !ts.wildcard {
                    ts.wildcard = true;
                    ts.full = true;
                }
            } else if ts.names.insert(name.clone()) && !ts.wildcard {
                ts.pending.insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == WILDCARD {
                ts.wildcard = false;
                // The client drops what it no longer subscribes to; forget it without a removal.
                let names = &ts.names;
                ts.known.retain(|n, _| names.contains(n));
            } else {
                ts.names.remove(&name);
                if !ts.wildcard {
                    ts.known.remove(&name);
                    ts.pending.remove(&name);
                }
            }
        }
        Ok(feedback)
    }

    /// Records names that changed in the store.
    pub(crate) fn mark_changed(&mut self, changed: HashMap<String, HashSet<String>>) {
        for (type_url, names) in changed {
            if let Some(ts) = self.types.get_mut(&type_url) {
                ts.pending.extend(names);
            }
        }
    }

    /// Builds the next response, if a type has something to send and no unacknowledged
    /// response. Pending changes accumulated meanwhile are merged into one response.
    pub(crate) fn next_response(
        &mut self,
        store: &ResourceStore,
        nonces: &AtomicU64,
    ) -> Option<DeltaDiscoveryResponse> {
        self.types
            .iter_mut()
            .filter(|(_, ts)| ts.has_work())
            .find_map(|(type_url, ts)| build_response(type_url, ts, store, nonces))
    }

    /// Per-type status for debug endpoints.
    pub(crate) fn status(&self) -> Vec<TypeStatus> {
        self.types
            .iter()
            .map(|(type_url, ts)| TypeStatus {
                type_url: type_url.clone(),
                wildcard: ts.wildcard,
                names: ts.names.iter().cloned().collect(),
                resources_sent: ts.known.len(),
                last_acked_version: ts.last_acked_version,
                last_nack: ts.last_nack.clone(),
                awaiting_ack: ts.outstanding.as_ref().map(|o| o.nonce.clone()),
            })
            .collect()
    }
}

/// Compares what the client holds with the store for the names that need it; returns the delta,
/// or nothing when the client is up to date (except for the always-answered first request).
fn build_response(
    type_url: &str,
    ts: &mut TypeState,
    store: &ResourceStore,
    nonces: &AtomicU64,
) -> Option<DeltaDiscoveryResponse> {
    let mut resources = Vec::new();
    let mut removed = Vec::new();
    let version = store.read(type_url, |view| {
        let candidates: BTreeSet<String> = if ts.full {
            let mut c: BTreeSet<String> = ts.names.iter().cloned().collect();
            c.extend(ts.known.keys().cloned());
            c.extend(ts.pending.drain());
            if ts.wildcard {
                c.extend(view.names().cloned());
            }
            c
        } else {
            ts.pending.drain().collect()
        };
        for name in candidates {
            if !ts.subscribed(&name) {
                ts.known.remove(&name);
                continue;
            }
            match view.get(&name) {
                Some(r) => {
                    if ts.known.get(&name) == Some(&r.version) {
                        continue;
                    }
                    ts.known.insert(name.clone(), r.version.clone());
                    resources.push(Resource {
                        version: r.version.clone(),
                        resource: Some(r.any.clone()),
                        name,
                        ..Resource::default()
                    });
                }
                None => {
                    if ts.known.remove(&name).is_some() {
                        removed.push(name);
                    }
                }
            }
        }
        view.version
    });
    ts.full = false;
    if resources.is_empty() && removed.is_empty() && ts.initial_sent {
        return None;
    }
    ts.initial_sent = true;
    let nonce = nonces.fetch_add(1, Ordering::Relaxed).to_string();
    ts.outstanding = Some(Outstanding {
        nonce: nonce.clone(),
        version,
    });
    Some(DeltaDiscoveryResponse {
        system_version_info: version.to_string(),
        resources,
        type_url: type_url.to_owned(),
        nonce,
        removed_resources: removed,
    })
}

#[cfg(test)]
mod tests;
