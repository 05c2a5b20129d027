//! Reading the pcap files tcpdump writes: Ethernet / IPv4 / TCP packets with their payloads.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Errors of pcap parsing.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file (magic {0:#010x})")]
    Magic(u32),
    #[error("unsupported link type {0} (expected Ethernet)")]
    LinkType(u32),
    #[error("truncated pcap file")]
    Truncated,
}

/// One TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub payload: Vec<u8>,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// The TCP segments of a pcap file (other packets are skipped).
pub fn parse(data: &[u8]) -> Result<Vec<TcpPacket>, PcapError> {
    if data.len() < 24 {
        return Err(PcapError::Truncated);
    }
    let magic_le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let le = match magic_le {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => return Err(PcapError::Magic(m)),
    };
    let u32_at = |b: &[u8], i: usize| -> u32 {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(data, 20);
    if link != 1 {
        return Err(PcapError::LinkType(link));
    }
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = u32_at(data, off + 8) as usize;
        let start = off + 16;
        let end = start.checked_add(incl).ok_or(PcapError::Truncated)?;
        if end > data.len() {
            // tcpdump killed mid-write: keep what is complete.
            break;
        }
        if let Some(p) = parse_ethernet(&data[start..end]) {
            out.push(p);
        }
        off = end;
    }
    Ok(out)
}

fn parse_ethernet(frame: &[u8]) -> Option<TcpPacket> {
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut off = 14;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    if ethertype != 0x0800 {
        return None;
    }
    parse_ipv4(frame.get(off..)?)
}

fn parse_ipv4(ip: &[u8]) -> Option<TcpPacket> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?])).min(ip.len());
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = ip.get(ihl..total)?;
    let data_off = usize::from(tcp.get(12)? >> 4) * 4;
    Some(TcpPacket {
        src,
        dst,
        sport: u16::from_be_bytes([tcp[0], tcp[1]]),
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        flags: *tcp.get(13)?,
        payload: tcp.get(data_off..).unwrap_or_default().to_vec(),
    })
}

/// One direction of a TCP connection as seen in a capture.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{}",
            self.src, self.sport, self.dst, self.dport
        )
    }
}

/// Payload bytes of one direction, in capture order.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    pub packets: usize,
    pub payload: Vec<u8>,
    /// Whether the connection's opening (SYN) was captured, i.e. the payload starts at the
    /// beginning of the stream.
    pub syn: bool,
}

/// Groups packets by direction and concatenates their payloads (retransmissions included, which
/// is fine for searching).
pub fn flows(packets: &[TcpPacket]) -> BTreeMap<FlowKey, Flow> {
    let mut map: BTreeMap<FlowKey, Flow> = BTreeMap::new();
    for p in packets {
        let f = map
            .entry(FlowKey {
                src: p.src,
                sport: p.sport,
                dst: p.dst,
                dport: p.dport,
            })
            .or_default();
        f.packets += 1;
        f.syn |= p.flags & TCP_SYN != 0;
        f.payload.extend_from_slice(&p.payload);
    }
    map
}

/// Whether `payload` starts like a TLS stream: a record of type handshake (22), change cipher
/// spec (20), alert (21) or application data (23) with version 3.x.
pub fn looks_like_tls(payload: &[u8]) -> bool {
    matches!(payload, [20..=23, 3, 0..=4, ..])
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a little-endian pcap with Ethernet/IPv4/TCP packets.
    fn build(packets: &[TcpPacket]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for p in packets {
            let mut tcp = Vec::new();
            tcp.extend_from_slice(&p.sport.to_be_bytes());
            tcp.extend_from_slice(&p.dport.to_be_bytes());
            tcp.extend_from_slice(&[0; 8]);
            tcp.push(5 << 4);
            tcp.push(p.flags);
            tcp.extend_from_slice(&[0; 6]);
            tcp.extend_from_slice(&p.payload);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&p.src.octets());
            ip.extend_from_slice(&p.dst.octets());
            ip.extend_from_slice(&tcp);
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            frame.extend_from_slice(&ip);
            // Ethernet padding must be ignored.
            frame.extend_from_slice(&[0xee; 4]);
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
        }
        out
    }

    fn pkt(sport: u16, dport: u16, payload: &[u8]) -> TcpPacket {
        TcpPacket {
            src: Ipv4Addr::new(10, 1, 1, 2),
            dst: Ipv4Addr::new(10, 1, 2, 2),
            sport,
            dport,
            flags: TCP_ACK,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn round_trips_packets_and_groups_flows() {
        let pkts = vec![
            pkt(40000, 15008, &[22, 3, 1, 0, 5]),
            pkt(40000, 15008, &[23, 3, 3, 0, 1]),
            pkt(40001, 9000, b"plain secret"),
        ];
        let data = build(&pkts);
        let parsed = parse(&data).unwrap();
        assert_eq!(parsed, pkts);
        let f = flows(&parsed);
        assert_eq!(f.len(), 2);
        let tls = f.values().find(|f| f.packets == 2).unwrap();
        assert!(looks_like_tls(&tls.payload));
        assert!(!looks_like_tls(b"plain secret"));
        assert!(contains(&data, b"secret"));
        assert!(!contains(&data, b""));
    }

    #[test]
    fn rejects_other_files_and_tolerates_a_cut_tail() {
        assert!(matches!(parse(&[0u8; 24]), Err(PcapError::Magic(0))));
        let data = build(&[pkt(1, 2, b"abc"), pkt(3, 4, b"def")]);
        let cut = &data[..data.len() - 5];
        assert_eq!(parse(cut).unwrap().len(), 1);
    }
}
