use super::*;

const CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    cfg: InstallConfig,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("build/mesh-cni");
    std::fs::create_dir_all(plugin.parent().expect("parent")).expect("mkdir");
    std::fs::write(&plugin, b"#!/bin/true\n").expect("write plugin");
    let cfg = InstallConfig {
        bin_dir: dir.path().join("bin"),
        conf_dir: dir.path().join("net.d"),
        plugin_binary: plugin,
        agent_socket: "/run/mesh-cni/agent.sock".into(),
        exclude_namespaces: vec!["kube-system".into()],
        state_dir: dir.path().join("state"),
    };
    std::fs::create_dir_all(&cfg.conf_dir).expect("mkdir conf");
    Fixture { _dir: dir, cfg }
}

fn plugin_types(path: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    v["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn chains_once_and_restores_the_original_bytes() {
    let f = fixture();
    let file = f.cfg.conf_dir.join("10-podnet.conflist");
    std::fs::write(&file, CONFLIST).expect("write");
    std::fs::write(f.cfg.conf_dir.join("99-other.conflist"), CONFLIST).expect("write");

    let first = install(&f.cfg).expect("install");
    assert!(first.binary_updated && first.conflist_changed);
    assert_eq!(first.conflist.as_deref(), Some(file.as_path()));
    assert_eq!(plugin_types(&file), ["bridge", "portmap", "mesh-cni"]);
    let v: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    assert_eq!(v["plugins"][2]["agentSocket"], "/run/mesh-cni/agent.sock");
    assert_eq!(v["plugins"][2]["excludeNamespaces"], json!(["kube-system"]));
    assert!(f.cfg.bin_dir.join("mesh-cni").is_file());

    let again = install(&f.cfg).expect("install again");
    assert!(
        !again.binary_updated && !again.conflist_changed,
        "{again:?}"
    );
    assert_eq!(plugin_types(&file), ["bridge", "portmap", "mesh-cni"]);
    // Only the primary file is touched.
    assert_eq!(
        std::fs::read_to_string(f.cfg.conf_dir.join("99-other.conflist")).expect("read"),
        CONFLIST
    );

    uninstall(&f.cfg).expect("uninstall");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), CONFLIST);
    assert!(!f.cfg.bin_dir.join("mesh-cni").exists());
}

#[test]
fn an_older_entry_is_replaced() {
    let f = fixture();
    let file = f.cfg.conf_dir.join("10-podnet.conflist");
    let mut v: Value = serde_json::from_str(CONFLIST).expect("json");
    v["plugins"]
        .as_array_mut()
        .expect("plugins")
        .insert(0, json!({"type": "mesh-cni", "agentSocket": "/old.sock"}));
    std::fs::write(&file, v.to_string()).expect("write");
    let report = install(&f.cfg).expect("install");
    assert!(report.conflist_changed);
    assert_eq!(plugin_types(&file), ["bridge", "portmap", "mesh-cni"]);
    uninstall(&f.cfg).expect("uninstall");
    assert_eq!(plugin_types(&file), ["bridge", "portmap"]);
}

#[test]
fn a_single_plugin_conf_is_converted_and_restored() {
    let f = fixture();
    let conf = f.cfg.conf_dir.join("10-flannel.conf");
    let original = r#"{"cniVersion":"0.3.1","name":"cbr0","type":"bridge","bridge":"cni0"}"#;
    std::fs::write(&conf, original).expect("write");
    let report = install(&f.cfg).expect("install");
    let list = f.cfg.conf_dir.join("10-flannel.conflist");
    assert_eq!(report.conflist.as_deref(), Some(list.as_path()));
    assert!(!conf.exists());
    assert_eq!(plugin_types(&list), ["bridge", "mesh-cni"]);
    assert!(!install(&f.cfg).expect("again").conflist_changed);

    uninstall(&f.cfg).expect("uninstall");
    assert_eq!(std::fs::read_to_string(&conf).expect("read"), original);
    assert!(!list.exists());
}

#[test]
fn no_configuration_yet_is_not_an_error() {
    let f = fixture();
    let report = install(&f.cfg).expect("install");
    assert_eq!(report.conflist, None);
    let broken = f.cfg.conf_dir.join("05-broken.conflist");
    std::fs::write(&broken, "{nope").expect("write");
    let err = install(&f.cfg).expect_err("broken config");
    assert!(err.to_string().contains("05-broken.conflist"), "{err}");
}
