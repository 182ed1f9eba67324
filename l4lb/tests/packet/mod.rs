//! Test packets: Ethernet frames with IPv4 or IPv6 and TCP or UDP, checksums computed in
//! full (shared by the XDP fixtures and the XDP benchmark).
#![allow(dead_code)]

use std::net::IpAddr;

use lodestar_control::model::Protocol;
use lodestar_l4lb::layout::Flow;

pub fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[derive(Clone)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub sport: u16,
    pub dport: u16,
    pub syn: bool,
    pub payload: Vec<u8>,
    pub fragment: bool,
    pub ip_options: bool,
    pub udp_no_csum: bool,
}

pub fn pkt(src: &str, dst: &str, proto: Protocol, sport: u16, dport: u16) -> Pkt {
    Pkt {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        sport,
        dport,
        syn: true,
        payload: b"hello".to_vec(),
        fragment: false,
        ip_options: false,
        udp_no_csum: false,
    }
}

impl Pkt {
    pub fn l4(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend(self.sport.to_be_bytes());
        l4.extend(self.dport.to_be_bytes());
        match self.proto {
            Protocol::Tcp => {
                l4.extend(1u32.to_be_bytes()); // seq
                l4.extend(0u32.to_be_bytes()); // ack
                l4.push(5 << 4);
                l4.push(if self.syn { 0x02 } else { 0x10 });
                l4.extend(65535u16.to_be_bytes());
                l4.extend([0, 0, 0, 0]); // checksum, urgent
            }
            Protocol::Udp => {
                l4.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend([0, 0]);
            }
        }
        l4.extend(&self.payload);
        let proto = if self.proto == Protocol::Tcp { 6u8 } else { 17 };
        let mut pseudo = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                pseudo.extend(s.octets());
                pseudo.extend(d.octets());
                pseudo.extend([0, proto]);
                pseudo.extend((l4.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                pseudo.extend(s.octets());
                pseudo.extend(d.octets());
                pseudo.extend((l4.len() as u32).to_be_bytes());
                pseudo.extend([0, 0, 0, proto]);
            }
            _ => panic!("mixed families"),
        }
        let csum = finish(sum16(&l4, sum16(&pseudo, 0)));
        let at = if self.proto == Protocol::Tcp { 16 } else { 6 };
        if !(self.proto == Protocol::Udp && self.udp_no_csum) {
            l4[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        }
        l4
    }

    /// IP packet (no Ethernet).
    pub fn ip(&self) -> Vec<u8> {
        let l4 = self.l4();
        let proto = if self.proto == Protocol::Tcp { 6u8 } else { 17 };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let opt = if self.ip_options { 4 } else { 0 };
                let mut h = vec![0x45 + (opt / 4) as u8, 0];
                h.extend(((20 + opt + l4.len()) as u16).to_be_bytes());
                h.extend([0x12, 0x34]);
                h.extend(if self.fragment {
                    [0x20, 0x00]
                } else {
                    [0x40, 0x00]
                });
                h.extend([64, proto, 0, 0]);
                h.extend(s.octets());
                h.extend(d.octets());
                h.extend(std::iter::repeat_n(1u8, opt)); // NOP options
                let c = finish(sum16(&h, 0));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h.extend(l4);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = vec![0x60, 0, 0, 0];
                let frag = if self.fragment { 8 } else { 0 };
                h.extend(((frag + l4.len()) as u16).to_be_bytes());
                h.push(if self.fragment { 44 } else { proto });
                h.push(64);
                h.extend(s.octets());
                h.extend(d.octets());
                if self.fragment {
                    h.extend([proto, 0, 0, 1, 0, 0, 0, 7]); // first fragment, more follow
                }
                h.extend(l4);
                h
            }
            _ => panic!("mixed families"),
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        eth(self.src.is_ipv4(), self.ip())
    }

    pub fn flow(&self) -> Flow {
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        let family = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                src[..4].copy_from_slice(&s.octets());
                dst[..4].copy_from_slice(&d.octets());
                2
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                src = s.octets();
                dst = d.octets();
                10
            }
            _ => panic!(),
        };
        Flow {
            src,
            dst,
            sport: self.sport.to_be(),
            dport: self.dport.to_be(),
            proto: if self.proto == Protocol::Tcp { 6 } else { 17 },
            family,
            pad: [0; 2],
        }
    }
}

pub fn eth(v4: bool, payload: Vec<u8>) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend(if v4 { [0x08, 0x00] } else { [0x86, 0xdd] });
    f.extend(payload);
    f
}
