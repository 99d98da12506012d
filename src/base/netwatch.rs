//! Notices when the box's network addresses change (DHCP gave another lease, Wi-Fi
//! roamed, a cable moved): every WebRTC path built on the old address is dead then,
//! and waiting for ICE to notice takes tens of seconds.
//!
//! One task polls the interfaces' addresses (`getifaddrs`) every [`PERIOD`] and bumps a
//! counter when the set of non-loopback addresses changes; it ends when nobody listens.
//! Polling instead of a netlink socket: it works the same in any network namespace and
//! costs one syscall a second.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

/// How often the addresses are read.
pub const PERIOD: Duration = Duration::from_millis(500);

/// The box's non-loopback, non-link-local interface addresses.
pub fn addresses() -> BTreeSet<IpAddr> {
    let mut found = BTreeSet::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with
    // freeifaddrs; every node and its ifa_addr are valid until then.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is a node of the list getifaddrs returned (see above).
        let entry = unsafe { &*node };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its layout.
            let address = unsafe { socket_address(entry.ifa_addr) };
            if let Some(address) = address.filter(is_routable) {
                found.insert(address);
            }
        }
        node = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// # Safety
/// `address` must point at a valid sockaddr of the size its family implies.
unsafe fn socket_address(address: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: the caller's guarantee; the casts follow the family.
    unsafe {
        match i32::from((*address).sa_family) {
            libc::AF_INET => {
                let v4 = &*(address as *const libc::sockaddr_in);
                Some(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()))
            }
            libc::AF_INET6 => {
                let v6 = &*(address as *const libc::sockaddr_in6);
                Some(IpAddr::from(v6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

fn is_routable(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// Starts the watch: the receiver's value goes up by one at every change of
/// [`addresses`]. The task ends once every receiver is dropped.
pub fn watch_addresses() -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut known = addresses();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(PERIOD) => {}
            }
            let now = addresses();
            if now != known {
                let gone: Vec<_> = known.difference(&now).collect();
                let new: Vec<_> = now.difference(&known).collect();
                info!(?gone, ?new, "the box's network addresses changed");
                // Only losing an address breaks the paths in use; a new one alone
                // (a second interface coming up) is not worth a reconnect.
                if !gone.is_empty() {
                    tx.send_modify(|generation| *generation += 1);
                }
                known = now;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_no_loopback_and_no_link_local() {
        let found = addresses();
        assert!(found.iter().all(is_routable), "{found:?}");
        assert!(!is_routable(&"127.0.0.1".parse().unwrap()));
        assert!(!is_routable(&"fe80::1".parse().unwrap()));
        assert!(!is_routable(&"169.254.3.4".parse().unwrap()));
        assert!(is_routable(&"10.78.1.2".parse().unwrap()));
    }
}
