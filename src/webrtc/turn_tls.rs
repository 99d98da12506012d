//! `turns://` relays: TURN over a TLS connection the box makes and verifies itself.
//!
//! libnice (0.1.21, as webrtcbin uses it with RFC 5245 compatibility) treats a TURN-TLS
//! relay as plain TCP: it never starts TLS, so a real `turns://` relay on port 443 sees
//! cleartext and drops it, and nothing would check the relay's certificate anyway. So
//! each `turns://` relay gets a local tunnel: a listener on 127.0.0.1 that libnice
//! reaches as `turn://…?transport=tcp`, and for each connection a TLS connection to the
//! relay (rustls, ring), its certificate checked against the system's roots or against
//! `network.turn_ca_file`. A relay whose certificate does not check out is refused (the
//! stream then says no relay gave it an address, 1003904).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::network::{RelayTransport, TurnServer};

/// Why a tunnel could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TunnelError {
    #[error("turns:// relay {relay}: {why}")]
    Setup { relay: String, why: String },
}

/// A running tunnel; it stops when dropped.
pub struct Tunnel {
    /// Where libnice connects.
    pub local: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The TLS settings for `turns://` relays: the system's roots, or only `ca_file`.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, TunnelError> {
    let setup = |why: String| TunnelError::Setup {
        relay: "(all)".into(),
        why,
    };
    match ca_file {
        Some(path) => crate::base::tls::trusting_only("network.turn_ca_file", path).map_err(setup),
        None => crate::base::tls::system_roots().map_err(setup),
    }
}

/// Starts a tunnel to `relay` (a `turns://` relay) on a free port of 127.0.0.1.
/// Needs a Tokio runtime.
pub fn start(relay: &TurnServer, tls: Arc<rustls::ClientConfig>) -> Result<Tunnel, TunnelError> {
    let setup = |why: String| TunnelError::Setup {
        relay: relay.to_string(),
        why,
    };
    let server_name = ServerName::try_from(relay.host.clone()).map_err(|e| {
        setup(format!(
            "{:?} is not a host name or address ({e})",
            relay.host
        ))
    })?;
    let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| setup(format!("cannot listen on 127.0.0.1 ({e})")))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| setup(e.to_string()))?;
    let local = std_listener
        .local_addr()
        .map_err(|e| setup(e.to_string()))?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| setup("no async runtime to run the tunnel on".into()))?;
    let _guard = runtime.enter();
    let listener = TcpListener::from_std(std_listener).map_err(|e| setup(e.to_string()))?;
    let stop = CancellationToken::new();
    let (target, label) = ((relay.host.clone(), relay.port), relay.to_string());
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stopping = stop.clone();
    runtime.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopping.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((inner, _)) = accepted else { continue };
            let (target, connector, name, label) = (
                target.clone(),
                connector.clone(),
                server_name.clone(),
                label.clone(),
            );
            let stopping = stopping.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stopping.cancelled() => {}
                    () = carry(inner, target, connector, name, &label) => {}
                }
            });
        }
    });
    debug!(relay = %relay, %local, "turns:// tunnel listening");
    Ok(Tunnel { local, stop })
}

/// One connection: TLS to the relay, then bytes both ways until either side closes.
async fn carry(
    mut inner: TcpStream,
    target: (String, u16),
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    label: &str,
) {
    let tcp = match TcpStream::connect((target.0.as_str(), target.1)).await {
        Ok(tcp) => tcp,
        Err(e) => {
            warn!(relay = %label, "cannot reach the TURN relay: {e}");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let _ = inner.set_nodelay(true);
    let mut outer = match connector.connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            warn!(
                relay = %label,
                "TLS to the TURN relay failed ({e}): its certificate must chain to the system's roots or to network.turn_ca_file"
            );
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut inner, &mut outer).await {
        debug!(relay = %label, "turns:// tunnel closed: {e}");
    }
}

/// The relay as libnice should see it: the tunnel's local end, over TCP.
pub fn through(relay: &TurnServer, tunnel: &Tunnel) -> TurnServer {
    debug_assert_eq!(relay.transport, RelayTransport::Tls);
    relay.via_local_tcp(tunnel.local.port())
}
