//! istiod's hooks into the xDS server: logging of connections and metrics of NACKs.
//!
//! xDS streams are not authenticated in local mode: the resources are the mesh's topology,
//! which every node proxy needs anyway; certificates are what the CA guards.

use std::sync::Arc;

use identity::Identity;
use mesh_proto::proto::discovery::Node;
use mesh_proto::xds::ServerHooks;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::metrics::Metrics;

pub struct XdsHooks {
    metrics: Arc<Metrics>,
}

impl XdsHooks {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        XdsHooks { metrics }
    }
}

impl ServerHooks for XdsHooks {
    fn on_connect(
        &self,
        node: &Node,
        _metadata: &MetadataMap,
        peer: Option<&Identity>,
    ) -> Result<(), Status> {
        if node.id.is_empty() {
            return Err(Status::invalid_argument(
                "the first discovery request must carry node.id",
            ));
        }
        tracing::debug!(node = %node.id, peer = ?peer.map(Identity::uri), "xDS client connecting");
        Ok(())
    }

    fn on_nack(&self, node_id: &str, type_url: &str, error: &str) {
        tracing::warn!(
            node = node_id,
            type_url,
            error,
            "xDS client rejected a push"
        );
        self.metrics
            .xds_rejects
            .get_or_create(&Metrics::type_label(type_url))
            .inc();
    }
}
