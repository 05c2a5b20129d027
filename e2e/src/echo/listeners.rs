//! The TCP sockets listening in the caller's network namespace, read from `/proc/net/tcp` and
//! `/proc/net/tcp6` (which describe the namespace of the process reading them). Inside a pod this
//! shows what ztunnel bound there (15001, 15006, 15008) without any tool in the image.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// State code of a listening socket in `/proc/net/tcp*`.
const TCP_LISTEN: &str = "0A";

/// Errors reading the socket tables.
#[derive(Debug, thiserror::Error)]
pub enum ListenersError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line_no}: {reason}: {line:?}")]
    Parse {
        path: String,
        line_no: usize,
        line: String,
        reason: String,
    },
}

/// Every listening TCP socket of the current network namespace, sorted. A missing `tcp6` table
/// (IPv6 disabled) counts as empty.
pub fn listening(proc_net: &Path) -> Result<Vec<SocketAddr>, ListenersError> {
    let mut out = Vec::new();
    for (file, required) in [("tcp", true), ("tcp6", false)] {
        let path = proc_net.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ListenersError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        out.extend(parse_table(&text).map_err(|(line_no, line, reason)| {
            ListenersError::Parse {
                path: path.display().to_string(),
                line_no,
                line,
                reason,
            }
        })?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The listening sockets of one `/proc/net/tcp*` table; an error carries the line number, the
/// line and why it was refused.
fn parse_table(text: &str) -> Result<Vec<SocketAddr>, (usize, String, String)> {
    let mut out = Vec::new();
    // The first line is the header.
    for (i, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad = |reason: &str| (i + 1, line.to_string(), reason.to_string());
        let (local, state) = match (fields.get(1), fields.get(3)) {
            (Some(l), Some(s)) => (*l, *s),
            _ => return Err(bad("fewer than 4 fields")),
        };
        if state != TCP_LISTEN {
            continue;
        }
        out.push(parse_addr(local).ok_or_else(|| bad("bad local address"))?);
    }
    Ok(out)
}

/// `0100007F:3A98` (IPv4) or 32 hex digits `:port` (IPv6): the address as the kernel prints it,
/// in 32-bit words of host byte order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each word is the network-order bytes read as a native integer.
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (k, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(k * 8..k * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:3A99 00000000:0000 0A 00000000:0000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:3A98 00000000:0000 0A 00000000:0000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0A00F40A:1F90 0B00F40A:C350 01 00000000:0000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:3AA8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:3A98 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";

    #[test]
    fn lists_only_listening_ipv4_sockets_with_their_addresses() {
        let got = parse_table(TCP).unwrap();
        let want: Vec<SocketAddr> = vec![
            "0.0.0.0:15001".parse().unwrap(),
            "127.0.0.1:15000".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn decodes_ipv6_words_in_host_order() {
        let got = parse_table(TCP6).unwrap();
        let want: Vec<SocketAddr> = vec![
            "[::]:15016".parse().unwrap(),
            "[::1]:15000".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_a_garbled_line_with_its_number() {
        let text = "header\n   0: nothex:zz 00000000:0000 0A\n";
        let (line_no, _, reason) = parse_table(text).unwrap_err();
        assert_eq!(line_no, 2);
        assert!(reason.contains("address"), "{reason}");
    }

    #[test]
    fn reads_this_namespace() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let got = listening(Path::new("/proc/net")).unwrap();
        assert!(got.contains(&addr), "{addr} not in {got:?}");
    }
}
