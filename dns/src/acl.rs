//! Who may use us as a recursive resolver: configured client networks, by default loopback
//! and the networks of this node's own interfaces. Never an open resolver.

use std::net::IpAddr;

use ipnet::IpNet;

/// Client networks allowed to recurse.
#[derive(Clone, Debug, Default)]
pub struct RecursionAcl {
    networks: Vec<IpNet>,
}

impl RecursionAcl {
    pub fn new(networks: Vec<IpNet>) -> Self {
        RecursionAcl { networks }
    }

    /// Loopback plus the networks of every interface address of this host.
    pub fn local_default() -> Self {
        let mut networks: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().expect("valid"),
            "::1/128".parse().expect("valid"),
        ];
        networks.extend(interface_networks());
        networks.sort();
        networks.dedup();
        RecursionAcl { networks }
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            // An IPv4 client on a dual-stack socket.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// The networks (address/prefix, truncated to the network) of this host's interfaces.
pub fn interface_networks() -> Vec<IpNet> {
    interfaces().iter().map(IpNet::trunc).collect()
}

/// The addresses of this host's interfaces that others can reach: not loopback, not
/// link-local (for publishing the server's own name).
pub fn interface_addresses() -> Vec<IpAddr> {
    interfaces()
        .iter()
        .map(|n| n.addr())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
        })
        .collect()
}

/// Every interface address with its prefix length, from getifaddrs(3).
pub fn interfaces() -> Vec<IpNet> {
    interfaces_where(true)
}

/// The addresses of every interface but the loopback interface (where a DSR backend's node
/// holds the VIPs it serves), for the VIP guard's list of this node's own addresses.
pub fn non_loopback_interface_addresses() -> Vec<IpAddr> {
    interfaces_where(false).iter().map(|n| n.addr()).collect()
}

fn interfaces_where(loopback_interface: bool) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            let skip = !loopback_interface && ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
            if skip {
                cur = ifa.ifa_next;
                continue;
            }
            if let (Some(addr), Some(mask)) =
                (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask))
            {
                let prefix = match mask {
                    IpAddr::V4(m) => u32::from(m).count_ones() as u8,
                    IpAddr::V6(m) => u128::from(m).count_ones() as u8,
                };
                if let Ok(net) = IpNet::new(addr, prefix) {
                    out.push(net);
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// # Safety
/// `sa` is null or points to a sockaddr whose family says its real type.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match i32::from((*sa).sa_family) {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_allowed_and_others_are_not_by_config() {
        let acl = RecursionAcl::local_default();
        assert!(acl.allows("127.0.0.1".parse().unwrap()));
        assert!(acl.allows("::1".parse().unwrap()));
        assert!(acl.allows("::ffff:127.0.0.1".parse().unwrap()));
        let acl = RecursionAcl::new(vec!["198.18.0.0/16".parse().unwrap()]);
        assert!(acl.allows("198.18.4.5".parse().unwrap()));
        assert!(!acl.allows("198.19.0.1".parse().unwrap()));
        assert!(!acl.allows("127.0.0.1".parse().unwrap()));
    }
}
