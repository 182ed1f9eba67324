//! The dummy interface the agent's DNS listens on, dcos-net's `spartan` (DC/OS puts
//! 198.51.100.1-3 on it and points every `resolv.conf` there): made and owned by the agent over
//! netlink before the servers bind, removed on a clean stop. (An empty bridge where the kernel
//! has no dummy driver.)

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::{Handle, LinkBridge, LinkDummy};
use tracing::{info, warn};

/// What failed while setting the interface up or taking it down.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("cannot open a netlink socket")]
    Socket {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what} interface {name:?} (needs CAP_NET_ADMIN)")]
    Netlink {
        what: &'static str,
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("interface {name:?} vanished while it was being set up")]
    Vanished { name: String },
}

/// A dummy interface with the listen addresses on it, until [`ListenInterface::remove`].
pub(super) struct ListenInterface {
    name: String,
    index: u32,
    handle: Handle,
    /// Runs the netlink connection; ends with the interface.
    connection: tokio::task::JoinHandle<()>,
}

impl ListenInterface {
    /// Makes the dummy interface `name` (or takes over one left by an earlier agent or by
    /// DC/OS's own unit), puts `addresses` on it (/32 and /128, as DC/OS does) and sets it up.
    pub async fn create(
        name: &str,
        addresses: &[IpAddr],
    ) -> Result<ListenInterface, InterfaceError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| InterfaceError::Socket { source })?;
        let connection = tokio::spawn(connection);
        let failed = |what| failed(what, name);
        let index = match find(&handle, name).await.map_err(failed("look up"))? {
            Some(index) => {
                info!(
                    interface = name,
                    "taking over the existing listen interface"
                );
                index
            }
            None => {
                let dummy = handle.link().add(LinkDummy::new(name).up().build());
                match dummy.execute().await {
                    Ok(()) => {}
                    // A kernel built without the dummy driver (CONFIG_DUMMY): an empty bridge
                    // holds local addresses the same way, and is in every kernel that runs
                    // containers.
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EOPNOTSUPP => {
                        warn!(
                            interface = name,
                            "this kernel has no dummy interfaces; making an empty bridge instead"
                        );
                        handle
                            .link()
                            .add(LinkBridge::new(name).up().build())
                            .execute()
                            .await
                            .map_err(failed("create"))?;
                    }
                    Err(e) => return Err(failed("create")(e)),
                }
                find(&handle, name)
                    .await
                    .map_err(failed("look up"))?
                    .ok_or_else(|| InterfaceError::Vanished { name: name.into() })?
            }
        };
        let interface = ListenInterface {
            name: name.to_string(),
            index,
            handle,
            connection,
        };
        if let Err(e) = interface.configure(addresses).await {
            interface.remove().await;
            return Err(e);
        }
        info!(interface = name, addresses = ?addresses, "listen interface ready");
        Ok(interface)
    }

    /// Puts `addresses` on the interface and sets it up.
    async fn configure(&self, addresses: &[IpAddr]) -> Result<(), InterfaceError> {
        let failed = |what| failed(what, &self.name);
        for ip in addresses {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let mut add = self.handle.address().add(self.index, *ip, prefix).replace();
            if ip.is_ipv6() {
                // No duplicate address detection: a tentative address cannot be bound, and
                // nothing else is on a dummy link to collide with.
                add.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            add.execute().await.map_err(failed("add an address to"))?;
        }
        self.handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(self.index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(failed("set up"))
    }

    /// Deletes the interface (its addresses go with it).
    pub async fn remove(self) {
        match self.handle.link().del(self.index).execute().await {
            Ok(()) => info!(interface = %self.name, "listen interface removed"),
            Err(e) => warn!(interface = %self.name, "cannot remove the listen interface: {e}"),
        }
        self.connection.abort();
    }
}

/// What a failed netlink request to do `what` to `name` is.
fn failed(what: &'static str, name: &str) -> impl FnOnce(rtnetlink::Error) -> InterfaceError {
    let name = name.to_string();
    move |source| InterfaceError::Netlink { what, name, source }
}

/// The index of the link called `name`, if there is one.
async fn find(handle: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e),
    }
}
