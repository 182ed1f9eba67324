//! Forwarding loops: an upstream that is one of our own listen addresses (checked when the
//! servers are bound), or one that sends our queries back to us, found as CoreDNS's `loop`
//! plugin finds it: a query for a random name at start, and a watch for that name coming back.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::wire;

/// The probe's type, as CoreDNS's: nothing real asks for HINFO of a random name, and the
/// answer path compares names only for queries of this type.
pub(super) const TYPE_HINFO: u16 = 13;
/// How long the probe of one upstream is retried until the upstream answers it at all
/// (CoreDNS: 30 s, to ride out a slow start of the network or of the upstream).
pub(super) const PROBE_FOR: Duration = Duration::from_secs(30);
pub(super) const PROBE_RETRY: Duration = Duration::from_secs(1);
/// How long the name is still watched for after the upstream answered (CoreDNS: 2 s): a loop
/// through a slow chain of forwarders may bring it back after the answer.
pub(super) const WATCH_AFTER: Duration = Duration::from_secs(2);

/// The probe names out now, each with the upstream it was sent to.
#[derive(Debug, Default)]
pub(super) struct Probes {
    /// How many names are out; while none is, the answer path looks no further than this.
    out: AtomicUsize,
    names: Mutex<Vec<(Box<[u8]>, usize)>>,
}

impl Probes {
    /// A fresh random name (lowercase wire form) for a probe of upstream `index`, watched from now on.
    pub fn start(&self, index: usize) -> Box<[u8]> {
        let name = probe_name();
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.push((name.clone(), index));
        self.out.store(names.len(), Relaxed);
        name
    }

    pub fn stop(&self, name: &[u8]) {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.retain(|(n, _)| **n != *name);
        self.out.store(names.len(), Relaxed);
    }

    /// The upstream whose probe `lower` (a lowercase wire name) is, if it is one.
    pub fn sent_to(&self, lower: &[u8]) -> Option<usize> {
        if self.out.load(Relaxed) == 0 {
            return None;
        }
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.iter().find(|(n, _)| **n == *lower).map(|&(_, i)| i)
    }
}

/// `<n>.<n>.`, two random 62-bit numbers under the root, as CoreDNS's (from the OS's CSPRNG,
/// so nobody can send it to us first and make us drop a good upstream).
fn probe_name() -> Box<[u8]> {
    let label = || {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            b = fastrand::u64(..).to_be_bytes();
        }
        (u64::from_be_bytes(b) >> 2).to_string()
    };
    let name = format!("{}.{}.", label(), label());
    wire::name_to_wire(&name)
        .expect("digits make a valid name")
        .into_boxed_slice()
}

/// Whether asking `upstream` means asking ourselves: it is one of `listen` (the addresses our
/// servers are bound to), or one of them is a wildcard on its port and `upstream` is an
/// address of this host (`local`, loopback included: the kernel delivers those to a wildcard).
pub fn is_own_address(upstream: SocketAddr, listen: &[SocketAddr], local: &[IpAddr]) -> bool {
    let ip = canonical(upstream.ip());
    listen.iter().any(|ours| {
        if ours.port() != upstream.port() {
            return false;
        }
        let our_ip = canonical(ours.ip());
        if our_ip == ip {
            return true;
        }
        our_ip.is_unspecified()
            && our_ip.is_ipv4() == ip.is_ipv4()
            && (ip.is_unspecified()
                || ip.is_loopback()
                || local.iter().any(|l| canonical(*l) == ip))
    })
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The probe question: HINFO of `name` in IN.
pub(super) fn probe_question(name: &[u8]) -> Vec<u8> {
    let mut question = name.to_vec();
    question.extend_from_slice(&TYPE_HINFO.to_be_bytes());
    question.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    question
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_addresses_include_every_local_address_behind_a_wildcard() {
        let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "198.18.0.5".parse().unwrap()];
        let exact = [addr("127.0.0.1:53")];
        assert!(is_own_address(addr("127.0.0.1:53"), &exact, &local));
        assert!(!is_own_address(addr("127.0.0.1:5353"), &exact, &local));
        assert!(!is_own_address(addr("127.0.0.2:53"), &exact, &local));
        assert!(is_own_address(
            addr("[::ffff:127.0.0.1]:53"),
            &exact,
            &local
        ));

        let wildcard = [addr("0.0.0.0:53")];
        for ours in [
            "127.0.0.1:53",
            "127.0.0.53:53",
            "198.18.0.5:53",
            "0.0.0.0:53",
        ] {
            assert!(is_own_address(addr(ours), &wildcard, &local), "{ours}");
        }
        for theirs in ["198.18.0.6:53", "198.18.0.5:54", "[::1]:53"] {
            assert!(!is_own_address(addr(theirs), &wildcard, &local), "{theirs}");
        }
        let wildcard6 = [addr("[::]:53")];
        assert!(is_own_address(addr("[::1]:53"), &wildcard6, &local));
        assert!(!is_own_address(
            addr("[2001:db8::1]:53"),
            &wildcard6,
            &local
        ));
    }

    #[test]
    fn probe_names_are_random_and_found_while_out() {
        let probes = Probes::default();
        let a = probes.start(0);
        let b = probes.start(3);
        assert_ne!(a, b);
        assert_eq!(probes.sent_to(&a), Some(0));
        assert_eq!(probes.sent_to(&b), Some(3));
        assert_eq!(probes.sent_to(b"\x03www\x00"), None);
        probes.stop(&a);
        assert_eq!(probes.sent_to(&a), None);
        probes.stop(&b);
        assert_eq!(probes.out.load(Relaxed), 0);
        // Two labels of digits under the root.
        let labels: Vec<&[u8]> = a.split(|&b| b < 0x30).filter(|l| !l.is_empty()).collect();
        assert_eq!(labels.len(), 2, "{a:?}");
    }
}
