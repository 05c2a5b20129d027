//! Enrolling and releasing one pod: the order of the steps and the rollback.
//!
//! Enrol: ztunnel first (it starts its listeners inside the pod's namespace), then the redirect
//! rules, so redirected connections always find a listener; when the rules fail, ztunnel is told
//! to drop the pod again. Release: rules first (traffic flows directly again), then ztunnel.

use std::sync::Arc;

use mesh_proto::zds::ZdsError;
use tracing::{info, warn};

use super::netns::Netns;
use super::rules::{self, RedirectConfig, RulesError};
use super::zds_sender::{PodWorkload, ZdsSender};

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("ztunnel: {0}")]
    Ztunnel(#[from] ZdsError),
    #[error("redirect rules: {0}")]
    Rules(#[from] RulesError),
}

pub struct Enroller {
    pub zds: ZdsSender,
    pub rules: RedirectConfig,
}

impl Enroller {
    pub fn new(zds: ZdsSender, rules: RedirectConfig) -> Self {
        Self { zds, rules }
    }

    /// Hands the pod to ztunnel, then redirects its traffic.
    pub async fn enroll(&self, pod: &PodWorkload, netns: Arc<Netns>) -> Result<(), EnrolError> {
        self.zds.add(pod, &netns).await?;
        if let Err(e) = rules::install_async(netns.clone(), self.rules.clone()).await {
            if let Err(del) = self.zds.del(&pod.uid).await {
                warn!(uid = %pod.uid, error = %del, "rollback: ztunnel did not drop the pod");
            }
            return Err(e.into());
        }
        info!(pod = %format!("{}/{}", pod.namespace, pod.name), uid = %pod.uid,
              netns = %netns.path().display(), "pod enrolled");
        Ok(())
    }

    /// Removes the rules (when the namespace is still there), then tells ztunnel. Both steps are
    /// attempted; the first failure is returned.
    pub async fn release(&self, uid: &str, netns: Option<Arc<Netns>>) -> Result<(), EnrolError> {
        let rules_result = match netns {
            Some(ns) => rules::remove_async(ns, self.rules.clone()).await.map(drop),
            None => Ok(()),
        };
        let zds_result = self.zds.del(uid).await;
        rules_result?;
        zds_result?;
        info!(uid, "pod released");
        Ok(())
    }

    /// Refreshes the rules of an already enrolled pod (flush and refill our chains).
    pub async fn refresh_rules(&self, netns: Arc<Netns>) -> Result<(), EnrolError> {
        Ok(rules::install_async(netns, self.rules.clone()).await?)
    }
}
