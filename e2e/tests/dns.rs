//! The DNS proxy ztunnel runs on 15053 inside each enrolled pod: the pod's DNS queries (UDP port
//! 53, whatever resolver address) are redirected to it, and mesh service names resolve to their
//! service VIP, with the short forms a pod's search path allows. Needs root and built binaries.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::ensure;
use e2e::harness::{AMBIENT, DATAPLANE_MODE, PodSpec, ServiceSpec, eventually, netns};

use common::*;

/// A minimal A query for `name` with id `id` and recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer's rcode and A records, read from a response to a single-question query.
fn answers(resp: &[u8], id: u16) -> Result<(u8, Vec<Ipv4Addr>), String> {
    if resp.len() < 12 || resp[..2] != id.to_be_bytes() {
        return Err(format!("not a response to query {id}: {resp:?}"));
    }
    let rcode = resp[3] & 0x0f;
    let ancount = u16::from_be_bytes([resp[6], resp[7]]);
    // Skip the question: name, type, class.
    let mut i = 12;
    while i < resp.len() && resp[i] != 0 {
        i += 1 + resp[i] as usize;
    }
    i += 5;
    let mut ips = Vec::new();
    for _ in 0..ancount {
        // Name (a pointer or labels), type, class, ttl, rdlength, rdata.
        if i >= resp.len() {
            return Err("truncated answer".into());
        }
        if resp[i] & 0xc0 == 0xc0 {
            i += 2;
        } else {
            while i < resp.len() && resp[i] != 0 {
                i += 1 + resp[i] as usize;
            }
            i += 1;
        }
        let rtype = u16::from_be_bytes([resp[i], resp[i + 1]]);
        let rdlen = u16::from_be_bytes([resp[i + 8], resp[i + 9]]) as usize;
        let data = &resp[i + 10..i + 10 + rdlen];
        if rtype == 1 && rdlen == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + rdlen;
    }
    Ok((rcode, ips))
}

/// Sends `name` to `resolver:53` from inside the pod netns `ns`.
fn resolve(
    ns: &str,
    resolver: Ipv4Addr,
    name: &str,
    id: u16,
) -> Result<(u8, Vec<Ipv4Addr>), String> {
    let q = query(id, name);
    netns::run_in(ns, move || -> Result<Vec<u8>, String> {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(6)))
            .map_err(|e| e.to_string())?;
        s.send_to(&q, SocketAddr::from((resolver, 53)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        let n = s
            .recv(&mut buf)
            .map_err(|e| format!("no DNS answer: {e}"))?;
        Ok(buf[..n].to_vec())
    })
    .map_err(|e| e.to_string())?
    .and_then(|resp| answers(&resp, id))
}

#[test]
fn enrolled_pods_resolve_mesh_services_through_ztunnel() -> anyhow::Result<()> {
    with_mesh(|c| {
        let ns = "l4-dns";
        c.create_namespace(ns, &[(DATAPLANE_MODE, AMBIENT)])?;
        let cl = c.add_pod(
            PodSpec::new("client", ns)
                .on(&c.nodes()[0])
                .service_account("client"),
        )?;
        let srv = c.add_pod(
            PodSpec::new("server", ns)
                .on(&c.nodes()[1])
                .label("app", "server"),
        )?;
        let svc = c.add_service(
            ServiceSpec::new("echo", ns)
                .select("app", "server")
                .port(80, 9000),
        )?;
        // Any resolver address works: port 53 is redirected inside the pod. Use the server pod's
        // address so that nothing could leave the test's own namespaces.
        let resolver = srv.ip;
        let mut id = 1u16;
        for name in [
            format!("echo.{ns}.svc.cluster.local"),
            format!("echo.{ns}"),
            "echo".to_string(),
        ] {
            eventually(
                &format!("{name} to resolve to {}", svc.vip),
                PROPAGATION,
                || {
                    id = id.wrapping_add(1);
                    match resolve(&cl.netns, resolver, &name, id) {
                        Ok((0, ips)) if ips == vec![svc.vip] => Ok(()),
                        Ok((rcode, ips)) => Err(format!("rcode {rcode}, answers {ips:?}")),
                        Err(e) => Err(e),
                    }
                },
            )?;
        }
        // A name the mesh does not know is not answered from the mesh state.
        let (rcode, ips) = resolve(&cl.netns, resolver, "unknown-service.example", 4242)
            .map_err(anyhow::Error::msg)?;
        ensure!(
            ips.is_empty(),
            "an unknown name got mesh answers {ips:?} (rcode {rcode})"
        );
        Ok(())
    })
}
