//! Configuration bursts are coalesced before the model is recomputed (virtual time).

use std::sync::Arc;
use std::time::Duration;

use istiod::metrics::Metrics;
use istiod::model::ModelConfig;
use istiod::status::ControlPlaneStatus;
use istiod::xds::{Debounce, Projector};
use mesh_config::{ConfigSource, Snapshot, StaticSource};
use mesh_proto::proto::type_url::ADDRESS;
use mesh_proto::xds::ResourceStore;

fn pod(ip: &str) -> Snapshot {
    Snapshot::from_yaml(
        "pods.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: demo}}\n\
             spec: {{containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {ip}}}\n"
        ),
    )
}

#[tokio::test(start_paused = true)]
async fn burst_of_changes_is_projected_once_after_the_quiet_period() {
    let source = StaticSource::new(pod("10.0.0.1"));
    let store = ResourceStore::new();
    let status = Arc::new(ControlPlaneStatus::default());
    let projector = Projector::new(
        store.clone(),
        ModelConfig::default(),
        status.clone(),
        Arc::new(Metrics::new()),
    );
    let debounce = Debounce {
        quiet: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    tokio::spawn(projector.run(source.subscribe(), debounce));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        status.projected().generation,
        0,
        "initial snapshot projected"
    );
    let initial_version = store.version();

    for (i, ip) in ["10.0.0.2", "10.0.0.3", "10.0.0.4"].iter().enumerate() {
        source.set(pod(ip));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            status.projected().generation,
            0,
            "change {i} still coalescing"
        );
    }
    tokio::time::sleep(Duration::from_millis(49)).await;
    assert_eq!(
        status.projected().generation,
        0,
        "quiet period not over yet"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        status.projected().generation,
        3,
        "the last snapshot of the burst"
    );
    assert_eq!(
        store.version(),
        initial_version + 1,
        "one store change for the burst"
    );
    let (_, any) = store.get(ADDRESS, "demo/p").expect("workload");
    assert!(any.value.windows(4).any(|w| w == [10, 0, 0, 4]));
}

#[tokio::test(start_paused = true)]
async fn a_busy_source_is_still_projected_after_the_maximum_delay() {
    let source = StaticSource::new(pod("10.0.0.1"));
    let status = Arc::new(ControlPlaneStatus::default());
    let projector = Projector::new(
        ResourceStore::new(),
        ModelConfig::default(),
        status.clone(),
        Arc::new(Metrics::new()),
    );
    let debounce = Debounce {
        quiet: Duration::from_millis(100),
        max: Duration::from_millis(300),
    };
    tokio::spawn(projector.run(source.subscribe(), debounce));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        status.projected().generation,
        0,
        "initial snapshot projected"
    );
    // A change every 50ms never leaves a quiet period; the maximum delay forces a projection.
    for i in 0..10 {
        source.set(pod(&format!("10.0.1.{i}")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        if status.projected().generation > 0 {
            assert!(
                i >= 5,
                "projected after {} ms, before the maximum delay",
                (i + 1) * 50
            );
            return;
        }
    }
    panic!("never projected while changes kept coming");
}
