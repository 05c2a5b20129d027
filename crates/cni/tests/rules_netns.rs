//! The redirect rules in a real network namespace (root): installed, idempotent, removed
//! without leaving anything of ours and without touching anyone else's rules; and finding a
//! namespace by the address it holds.

mod common;

use std::net::IpAddr;
use std::path::Path;

use cni::agent::netns::{self, Netns};
use cni::agent::rules::{self, RedirectConfig};
use common::{TestNetns, mesh_lines, require_tool};

/// A rule that is not ours, to check it survives.
const FOREIGN: &str = "-A OUTPUT -d 192.0.2.1/32 -j RETURN";

#[test]
fn rules_are_idempotent_and_removable() {
    require_tool("iptables-restore", "iptables");
    let ns = TestNetns::new("rule");
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-d",
        "192.0.2.1/32",
        "-j",
        "RETURN",
    ]);
    let handle = Netns::open(&ns.path).expect("open netns");
    let cfg = RedirectConfig::default();

    rules::install(&handle, &cfg).expect("install");
    let first = ns.nat_rules(false);
    for want in [
        "-A PREROUTING -j MESH_PREROUTING",
        "-A OUTPUT -j MESH_OUTPUT",
        "-A MESH_PREROUTING -m mark --mark 0x539/0xfff -j RETURN",
        "-A MESH_PREROUTING -i lo -j RETURN",
        "-A MESH_PREROUTING -p tcp -m tcp --dport 15008 -j RETURN",
        "-A MESH_PREROUTING -p tcp -j REDIRECT --to-ports 15006",
        "-A MESH_OUTPUT -m mark --mark 0x539/0xfff -j RETURN",
        "-A MESH_OUTPUT -o lo -j RETURN",
        "-A MESH_OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A MESH_OUTPUT -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053",
        "-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        FOREIGN,
    ] {
        assert!(
            first.lines().any(|l| l == want),
            "missing {want:?} in\n{first}"
        );
    }
    // Our jump comes first in OUTPUT, before the foreign rule.
    let output_rules: Vec<&str> = first
        .lines()
        .filter(|l| l.starts_with("-A OUTPUT "))
        .collect();
    assert_eq!(
        output_rules.first(),
        Some(&"-A OUTPUT -j MESH_OUTPUT"),
        "{first}"
    );
    assert!(rules::installed(&handle).expect("check"));
    let v6 = ns.nat_rules(true);
    assert!(
        v6.lines()
            .any(|l| l == "-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001"),
        "no IPv6 rules:\n{v6}"
    );

    rules::install(&handle, &cfg).expect("install again");
    let second = ns.nat_rules(false);
    assert_eq!(
        mesh_lines(&first),
        mesh_lines(&second),
        "reinstall changed our rules"
    );
    assert_eq!(
        second
            .lines()
            .filter(|l| *l == "-A OUTPUT -j MESH_OUTPUT")
            .count(),
        1,
        "{second}"
    );
    assert_eq!(mesh_lines(&ns.nat_rules(true)).len(), mesh_lines(&v6).len());

    assert!(rules::remove(&handle, &cfg).expect("remove"));
    let after = ns.nat_rules(false);
    assert!(mesh_lines(&after).is_empty(), "left over:\n{after}");
    assert!(
        after.lines().any(|l| l == FOREIGN),
        "foreign rule lost:\n{after}"
    );
    assert!(mesh_lines(&ns.nat_rules(true)).is_empty());
    assert!(!rules::installed(&handle).expect("check"));
    assert!(
        !rules::remove(&handle, &cfg).expect("remove again"),
        "nothing left to remove"
    );
}

#[test]
fn a_namespace_is_found_by_its_address() {
    let ns = TestNetns::new("find");
    let ip: IpAddr = format!("10.253.{}.7", common::next_index() % 250 + 1)
        .parse()
        .expect("ip");
    ns.add_address(&format!("{ip}/32"));
    let handle = Netns::open(&ns.path).expect("open");
    assert!(handle.addresses().expect("addresses").contains(&ip));

    let found = netns::find_by_ip(&[ip], Path::new("/var/run/netns"), None).expect("found");
    assert_eq!(found.inode(), ns.inode());

    // Through a process living in the namespace, with no named namespaces to look at.
    let empty = tempfile::tempdir().expect("tempdir");
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "sleep", "30"])
        .spawn()
        .expect("spawn sleeper");
    let pid = sleeper.id();
    common::wait_until(
        "the sleeper to enter the namespace",
        std::time::Duration::from_secs(5),
        || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns.inode())
        },
    );
    let by_proc = netns::find_by_ip(&[ip], empty.path(), Some(Path::new("/proc")));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let by_proc = by_proc.expect("found through /proc");
    assert_eq!(by_proc.inode(), ns.inode());
    assert!(
        by_proc.path().starts_with("/proc"),
        "{}",
        by_proc.path().display()
    );

    let absent: IpAddr = "192.0.2.213".parse().expect("ip");
    assert!(netns::find_by_ip(&[absent], Path::new("/var/run/netns"), None).is_none());
}
