mod common;
use e2e::harness::{PodSpec, components, poll, process::Proc};
use std::time::Duration;

#[test]
fn scratch_agent_chain() -> anyhow::Result<()> {
    common::with_cluster(common::builder().nodes(1).mesh(false), |c| {
        let n = &c.nodes()[0];
        let mut files = n.files.clone();
        files.plugin_binary = c.bin_dir().join("mesh-cni");
        let args = components::cni_agent_args(&files, c.config_dir(), "debug");
        let mut agent = Proc::spawn(
            "agent",
            &n.netns,
            &c.bin_dir().join("cni-agent"),
            &args,
            &[],
            &files.agent_log,
        )?;
        let r = poll::eventually("chain", Duration::from_secs(20), || {
            if let Some(s) = agent.exit_status() {
                return Ok(Err(s.to_string()));
            }
            let t = n.cni.current_plugin_types().map_err(|e| e.to_string())?;
            if t.iter().any(|x| x == "mesh-cni") {
                Ok(Ok(t))
            } else {
                Err(format!("{t:?}"))
            }
        });
        println!("chain: {r:?}");
        println!(
            "conflist: {}",
            std::fs::read_to_string(n.cni.conf_dir.join("10-mesh-bridge.conflist"))?
        );
        let p = c.add_pod(PodSpec::new("a", "plain").on(n));
        println!("pod: {p:?}");
        if let Ok(p) = &p {
            println!("plugins {:?}", c.pod_plugins(p));
        }
        c.create_namespace("amb", &[("istio.io/dataplane-mode", "ambient")])?;
        std::thread::sleep(Duration::from_millis(600));
        let q = c.add_pod(PodSpec::new("b", "amb").on(n));
        println!("pod enrolled ns: {q:?}");
        println!("agent log:\n{}", agent.log_tail(60));
        println!(
            "status: {}",
            std::fs::read_to_string(files.agent_state_dir.join("status.json")).unwrap_or_default()
        );
        if let Ok(p) = &p {
            c.delete_pod(p)?;
        }
        Ok(())
    })
}
