//! The Kubernetes end-to-end suite: the mesh installed with helm into the cluster of
//! `KUBECONFIG`, then what a user does and sees, step by step:
//!
//! 1. install: Gateway API CRDs, `helm install` of charts/ambient, every component Ready;
//! 2. sample apps in an un-labelled namespace talk plaintext;
//! 3. labelling the namespace enrols the running pods (same UIDs, no restart): mutual TLS with
//!    both identities in ztunnel's metrics;
//! 4. L4 AuthorizationPolicies (ALLOW, DENY) take effect on the running pods;
//! 5. `meshctl waypoint apply --enroll-namespace --wait`: an HTTPRoute 90/10 split, an L7
//!    denial, `istio_requests_total` from the waypoint;
//! 6. pods created later are enrolled at creation; `istio.io/dataplane-mode=none` opts out;
//! 7. every `meshctl` command against the cluster, as a user runs it: `version`, `waypoint
//!    list|status|generate|apply|delete`, `dataplane enroll|release` of a second namespace,
//!    `ztunnel-config` by node and by pod while it is enrolled, `analyze` (clean, then
//!    deliberate errors), `precheck`, `completion`;
//! 8. removing the label releases the pods: plaintext, nothing of the mesh left in them;
//! 9. `helm uninstall` leaves nothing behind.
//!
//! A step runs when the steps it builds on passed; the summary says which passed, which failed
//! (with the reason and the gathered logs) and which could not run. Without KUBECONFIG the test
//! fails and says so. `cargo test --workspace` does not run it (`test = false` in Cargo.toml):
//! `make e2e` (local cluster) and `make e2e-kind` do, with
//! `cargo test -p e2e --test kubernetes -- --nocapture`. Settings: see `e2e::k8s::settings`;
//! `MESH_E2E_KEEP_INSTALL=1` skips step 9, leaving the mesh and the apps to look at.

mod k8s_suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_mesh_on_kubernetes() {
    if let Err(report) = k8s_suite::run().await {
        panic!("{report}");
    }
}
