//! `[network]`: how the box's WebRTC peers find a path to Janus through a school's
//! firewall: a STUN server for the box's public address, TURN relays tried in order
//! (UDP, TCP, TLS), and whether to relay always.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::base::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `stun://host:port`: the box's public address, for peers behind NAT.
    #[serde(default)]
    pub stun_server: Option<String>,
    /// `turn://user:pass@host:port?transport=udp|tcp` or `turns://user:pass@host:port`,
    /// tried in order. Secrets: never logged, never in the state.
    #[serde(default)]
    pub turn_servers: Vec<Secret>,
    #[serde(default)]
    pub ice_transport_policy: IcePolicy,
    /// PEM roots that `turns://` relays' certificates must chain to (default: the
    /// system's roots).
    #[serde(default)]
    pub turn_ca_file: Option<PathBuf>,
    /// Lost packets are asked for again (NACK) and sent again (RTX) on every stream.
    #[serde(default = "super::types::default_true")]
    pub retransmissions: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            stun_server: None,
            turn_servers: Vec::new(),
            ice_transport_policy: IcePolicy::All,
            turn_ca_file: None,
            retransmissions: true,
        }
    }
}

/// Which candidate pairs ICE may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcePolicy {
    /// Direct when possible, relayed otherwise.
    #[default]
    All,
    /// Always through a TURN relay.
    Relay,
}

impl IcePolicy {
    /// webrtcbin's `ice-transport-policy` nick.
    pub fn nick(self) -> &'static str {
        match self {
            IcePolicy::All => "all",
            IcePolicy::Relay => "relay",
        }
    }
}

/// How the box reaches a TURN relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTransport {
    Udp,
    Tcp,
    Tls,
}

impl RelayTransport {
    /// The stream's `transport` in the state when it goes through such a relay.
    pub fn label(self) -> &'static str {
        match self {
            RelayTransport::Udp => "relay-udp",
            RelayTransport::Tcp => "relay-tcp",
            RelayTransport::Tls => "relay-tls",
        }
    }
}

/// One TURN relay: the URL webrtcbin takes (with its credentials) and what may be shown.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    url: Secret,
    /// `user:password`, still percent-encoded as in the URL.
    credentials: Secret,
    pub host: String,
    pub port: u16,
    pub transport: RelayTransport,
}

impl TurnServer {
    /// The URL with its credentials, for webrtcbin's `add-turn-server` only.
    pub fn expose_url(&self) -> &str {
        self.url.expose()
    }

    /// This relay reached through a local TLS tunnel on 127.0.0.1:`port`: webrtcbin
    /// gets TURN over TCP to the tunnel; it is still shown (and labelled) as itself.
    pub fn via_local_tcp(&self, port: u16) -> TurnServer {
        TurnServer {
            url: Secret::new(format!(
                "turn://{}@127.0.0.1:{port}?transport=tcp",
                self.credentials.expose()
            )),
            credentials: self.credentials.clone(),
            host: self.host.clone(),
            port: self.port,
            transport: self.transport,
        }
    }
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.transport == RelayTransport::Tls {
            "turns"
        } else {
            "turn"
        };
        let transport = match self.transport {
            RelayTransport::Udp => "?transport=udp",
            RelayTransport::Tcp => "?transport=tcp",
            RelayTransport::Tls => "",
        };
        write!(f, "{scheme}://***@{}:{}{transport}", self.host, self.port)
    }
}

/// What the box's WebRTC peers are given, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServers {
    pub stun: Option<String>,
    pub turn: Vec<TurnServer>,
    pub policy: IcePolicy,
    /// NACK and RTX on every stream (`network.retransmissions`).
    pub retransmissions: bool,
}

impl Default for IceServers {
    fn default() -> Self {
        Self {
            stun: None,
            turn: Vec::new(),
            policy: IcePolicy::All,
            retransmissions: true,
        }
    }
}

impl NetworkConfig {
    /// The parsed servers, or the first problem as `(key, message)`.
    pub fn ice_servers(&self) -> Result<IceServers, (String, String)> {
        let stun = match &self.stun_server {
            Some(url) => Some(parse_stun(url).map_err(|m| ("network.stun_server".to_owned(), m))?),
            None => None,
        };
        let mut turn = Vec::new();
        for (i, url) in self.turn_servers.iter().enumerate() {
            turn.push(
                parse_turn(url.expose()).map_err(|m| (format!("network.turn_servers[{i}]"), m))?,
            );
        }
        if self.ice_transport_policy == IcePolicy::Relay && turn.is_empty() {
            return Err((
                "network.ice_transport_policy".into(),
                "\"relay\" needs at least one TURN server in network.turn_servers".into(),
            ));
        }
        Ok(IceServers {
            stun,
            turn,
            policy: self.ice_transport_policy,
            retransmissions: self.retransmissions,
        })
    }
}

fn host_port(url: &url::Url, default_port: u16) -> Result<(String, u16), String> {
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?
        .to_owned();
    Ok((host, url.port().unwrap_or(default_port)))
}

/// `stun://host[:port]` (port 3478 by default), as webrtcbin takes it.
fn parse_stun(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if url.scheme() != "stun" {
        return Err(format!(
            "{text:?} must start with stun:// (e.g. \"stun://stun.example.org:3478\")"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err("a STUN URL takes no credentials and no query".into());
    }
    let (host, port) = host_port(&url, 3478).map_err(|e| format!("{text:?} {e}"))?;
    Ok(format!("stun://{host}:{port}"))
}

/// `turn://user:pass@host[:port][?transport=udp|tcp]` (port 3478) or
/// `turns://user:pass@host[:port]` (port 5349). Errors never repeat the credentials.
fn parse_turn(text: &str) -> Result<TurnServer, String> {
    let url = url::Url::parse(text).map_err(|_| "is not a URL".to_owned())?;
    let (tls, default_port) = match url.scheme() {
        "turn" => (false, 3478),
        "turns" => (true, 5349),
        other => {
            return Err(format!(
                "the scheme {other:?} is not turn:// or turns:// \
                 (e.g. \"turn://user:pass@turn.example.org:3478?transport=tcp\")"
            ));
        }
    };
    if url.username().is_empty() || url.password().is_none_or(str::is_empty) {
        return Err("needs credentials: turn://user:password@host:port".into());
    }
    let mut transport = if tls {
        RelayTransport::Tls
    } else {
        RelayTransport::Udp
    };
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref(), tls) {
            ("transport", "udp", false) => transport = RelayTransport::Udp,
            ("transport", "tcp", false) => transport = RelayTransport::Tcp,
            ("transport", "tcp", true) => {}
            ("transport", other, _) => {
                return Err(format!(
                    "transport={other:?} is not supported: use udp or tcp (turns:// is TLS over TCP)"
                ));
            }
            (other, _, _) => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    let (host, port) = host_port(&url, default_port)?;
    // What webrtcbin parses: the scheme, the (still percent-encoded) credentials, the
    // host and port, and transport for turn://.
    let scheme = if tls { "turns" } else { "turn" };
    let query = match transport {
        RelayTransport::Udp => "?transport=udp",
        RelayTransport::Tcp => "?transport=tcp",
        RelayTransport::Tls => "",
    };
    let password = url.password().unwrap_or_default();
    let credentials = Secret::new(format!("{}:{password}", url.username()));
    let url = Secret::new(format!(
        "{scheme}://{}@{host}:{port}{query}",
        credentials.expose()
    ));
    Ok(TurnServer {
        url,
        credentials,
        host,
        port,
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(stun: Option<&str>, turn: &[&str], policy: IcePolicy) -> NetworkConfig {
        NetworkConfig {
            stun_server: stun.map(str::to_owned),
            turn_servers: turn.iter().map(|t| Secret::new(*t)).collect(),
            ice_transport_policy: policy,
            turn_ca_file: None,
            retransmissions: true,
        }
    }

    #[test]
    fn parses_what_the_example_config_shows() {
        let servers = network(
            Some("stun://stun.example.org:3478"),
            &[
                "turn://user:pass@turn.example.org:3478?transport=udp",
                "turn://user:pass@turn.example.org:3478?transport=tcp",
                "turns://user:pass@turn.example.org:443",
            ],
            IcePolicy::All,
        )
        .ice_servers()
        .unwrap();
        assert_eq!(
            servers.stun.as_deref(),
            Some("stun://stun.example.org:3478")
        );
        let transports: Vec<_> = servers.turn.iter().map(|t| t.transport).collect();
        assert_eq!(
            transports,
            [
                RelayTransport::Udp,
                RelayTransport::Tcp,
                RelayTransport::Tls
            ]
        );
        assert_eq!(
            servers.turn[1].expose_url(),
            "turn://user:pass@turn.example.org:3478?transport=tcp"
        );
        assert_eq!(servers.turn[2].port, 443);
        // Shown without the credentials.
        let shown = format!("{:?} {}", servers.turn[2], servers.turn[0]);
        assert!(!shown.contains("pass"), "{shown}");
        assert_eq!(
            network(None, &["turns://u:p@relay"], IcePolicy::Relay)
                .ice_servers()
                .unwrap()
                .turn[0]
                .port,
            5349
        );
    }

    #[test]
    fn refuses_bad_values_naming_the_key_and_never_the_password() {
        let refused = |n: NetworkConfig| n.ice_servers().unwrap_err();
        let (key, message) = refused(network(Some("http://x"), &[], IcePolicy::All));
        assert_eq!(key, "network.stun_server");
        assert!(message.contains("stun://"), "{message}");
        let (key, message) = refused(network(None, &["turn://relay:3478"], IcePolicy::All));
        assert_eq!(key, "network.turn_servers[0]");
        assert!(message.contains("credentials"), "{message}");
        let (key, message) = refused(network(
            None,
            &["turn://u:p@a:1", "stun://u:hunter2@relay:3478"],
            IcePolicy::All,
        ));
        assert_eq!(key, "network.turn_servers[1]");
        assert!(!message.contains("hunter2"), "{message}");
        let (_, message) = refused(network(
            None,
            &["turn://u:hunter2@relay?transport=sctp"],
            IcePolicy::All,
        ));
        assert!(
            message.contains("sctp") && !message.contains("hunter2"),
            "{message}"
        );
        let (key, _) = refused(network(None, &[], IcePolicy::Relay));
        assert_eq!(key, "network.ice_transport_policy");
    }
}
