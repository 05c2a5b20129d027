use super::*;

const EMPTY: &str = "";

const INSTALLED: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MESH_OUTPUT - [0:0]
:MESH_PREROUTING - [0:0]
-A PREROUTING -j MESH_PREROUTING
-A OUTPUT -j MESH_OUTPUT
-A OUTPUT -j MESH_OUTPUT
-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";

#[test]
fn fresh_install_hooks_both_chains() {
    let text = render_install(&RedirectConfig::default(), EMPTY);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"*nat"));
    assert_eq!(lines.last(), Some(&"COMMIT"));
    for want in [
        ":MESH_PREROUTING - [0:0]",
        "-I PREROUTING 1 -j MESH_PREROUTING",
        "-I OUTPUT 1 -j MESH_OUTPUT",
        "-A MESH_PREROUTING -m mark --mark 0x539/0xfff -j RETURN",
        "-A MESH_PREROUTING -i lo -j RETURN",
        "-A MESH_PREROUTING -p tcp --dport 15008 -j RETURN",
        "-A MESH_PREROUTING -p tcp -j REDIRECT --to-ports 15006",
        "-A MESH_OUTPUT -m mark --mark 0x539/0xfff -j RETURN",
        "-A MESH_OUTPUT -o lo -j RETURN",
        "-A MESH_OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A MESH_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports 15053",
        "-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{text}");
    }
    // DNS must be matched before the catch-all TCP redirect.
    let pos = |l: &str| lines.iter().position(|x| *x == l).expect("line");
    assert!(
        pos("-A MESH_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports 15053")
            < pos("-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001")
    );
}

#[test]
fn reinstall_keeps_one_jump_each() {
    let text = render_install(&RedirectConfig::default(), INSTALLED);
    assert!(!text.contains("-I PREROUTING"), "{text}");
    assert!(!text.contains("-I OUTPUT"), "{text}");
    assert_eq!(
        text.matches("-D OUTPUT -j MESH_OUTPUT").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("-D PREROUTING"), "{text}");
    // Chains are flushed before being refilled.
    assert!(text.contains("-F MESH_OUTPUT\n"), "{text}");
}

#[test]
fn removal_deletes_every_jump_and_chain() {
    let text = render_remove(INSTALLED).expect("something to remove");
    assert_eq!(
        text.matches("-D OUTPUT -j MESH_OUTPUT").count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("-D PREROUTING -j MESH_PREROUTING").count(), 1);
    for chain in ["MESH_OUTPUT", "MESH_PREROUTING"] {
        assert!(text.contains(&format!("-X {chain}\n")), "{text}");
    }
    assert_eq!(render_remove(EMPTY), None);
}

#[test]
fn dns_capture_and_ports_follow_the_config() {
    let cfg = RedirectConfig {
        outbound_port: 25001,
        capture_dns: false,
        ..RedirectConfig::default()
    };
    let text = render_install(&cfg, EMPTY);
    assert!(!text.contains("--dport 53"), "{text}");
    assert!(text.contains("-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 25001"));
}

#[test]
fn our_lines_are_recognised() {
    assert_eq!(our_lines(INSTALLED).len(), 6);
    assert!(our_lines("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n").is_empty());
}
