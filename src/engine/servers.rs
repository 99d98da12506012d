//! Which SFU server each room is on. The box may be in rooms on several Janus servers at
//! once (`[janus]`, the default server, and `[janus.servers.<name>]`); a room's server is
//! the one `login_room` names, else the first of `rooms.routes` whose glob matches the
//! room id, else the default server. The engine resolves it once per login and keeps it
//! with the room, so every later operation goes to the same server.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::allow::glob;
use super::error::EngineError;
use super::types::RoomId;

/// A configured server's name: `default` (the `[janus]` section itself) or the `<name>`
/// of `[janus.servers.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerName(String);

impl ServerName {
    /// The name of `[janus]` itself.
    pub const DEFAULT: &'static str = "default";
    /// The longest name allowed.
    pub const MAX_LEN: usize = 64;

    pub fn default_server() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    /// A name as the config and the MQTT `server` argument spell it: 1 to 64 ASCII
    /// letters, digits, `-` or `_`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a server name: use 1 to {} ASCII letters, digits, '-' or '_'",
                Self::MAX_LEN
            ))
        }
    }

    /// A name that cannot be configured (malformed), kept (cut to 64 characters) only to
    /// be refused with 1002908 naming it.
    pub(super) fn unconfigured(raw: &str) -> Self {
        Self(raw.chars().take(Self::MAX_LEN).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for ServerName {
    fn default() -> Self {
        Self::default_server()
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `rooms.routes` entry: rooms whose id matches `rooms` (a glob) are on `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub rooms: String,
    pub server: ServerName,
}

/// The configured servers and the routes between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRoutes {
    /// Every configured server, `default` included, sorted.
    known: Vec<ServerName>,
    routes: Vec<Route>,
    /// Each server's `reconnect_window_s`, where it has its own.
    windows: BTreeMap<ServerName, Duration>,
}

impl Default for ServerRoutes {
    /// Only the default server (one `[janus]`, no routes).
    fn default() -> Self {
        Self {
            known: vec![ServerName::default_server()],
            routes: Vec::new(),
            windows: BTreeMap::new(),
        }
    }
}

impl ServerRoutes {
    /// `others` are the `[janus.servers.*]` names; routes to unknown servers are the
    /// config's to refuse (`check-config`), and are skipped here.
    pub fn new(others: impl IntoIterator<Item = ServerName>, routes: Vec<Route>) -> Self {
        let mut known: Vec<ServerName> = std::iter::once(ServerName::default_server())
            .chain(others)
            .collect();
        known.sort();
        known.dedup();
        let routes = routes
            .into_iter()
            .filter(|r| known.contains(&r.server))
            .collect();
        Self {
            known,
            routes,
            windows: BTreeMap::new(),
        }
    }

    /// How long a room on `server` that lost its connection is tried again before it
    /// is left (`reconnect_window_s` of that server's section).
    pub fn with_reconnect_window(mut self, server: ServerName, window: Duration) -> Self {
        self.windows.insert(server, window);
        self
    }

    pub fn reconnect_window(&self, server: &ServerName) -> Option<Duration> {
        self.windows.get(server).copied()
    }

    pub fn knows(&self, server: &ServerName) -> bool {
        self.known.contains(server)
    }

    pub fn known(&self) -> &[ServerName] {
        &self.known
    }

    /// The server `room` is on: `explicit` when given (it must be configured: 1002908
    /// otherwise), else the first matching route, else `default`.
    pub fn resolve(
        &self,
        room: &RoomId,
        explicit: Option<&ServerName>,
    ) -> Result<ServerName, EngineError> {
        if let Some(server) = explicit {
            if self.knows(server) {
                return Ok(server.clone());
            }
            return Err(EngineError::UnknownServer {
                server: server.to_string(),
                known: self.to_string(),
            });
        }
        Ok(self
            .routes
            .iter()
            .find(|r| glob(&r.rooms, room.as_str()))
            .map_or_else(ServerName::default_server, |r| r.server.clone()))
    }
}

/// `default, district`, for messages.
impl fmt::Display for ServerRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.known.iter().map(ServerName::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ServerName {
        ServerName::parse(n).unwrap()
    }

    fn room(r: &str) -> RoomId {
        RoomId::parse(r).unwrap()
    }

    #[test]
    fn names() {
        assert!(ServerName::parse("district-1_b").is_ok());
        assert!(ServerName::parse("").is_err());
        assert!(ServerName::parse("a.b").is_err());
        assert!(ServerName::parse(&"a".repeat(65)).is_err());
        assert!(name("default").is_default());
    }

    #[test]
    fn explicit_then_first_route_then_default() {
        let routes = ServerRoutes::new(
            [name("district"), name("school")],
            vec![
                Route {
                    rooms: "group-1*".into(),
                    server: name("school"),
                },
                Route {
                    rooms: "group-*".into(),
                    server: name("district"),
                },
                Route {
                    rooms: "*".into(),
                    server: name("gone"),
                },
            ],
        );
        assert_eq!(
            routes.resolve(&room("group-12"), None).unwrap(),
            name("school")
        );
        assert_eq!(
            routes.resolve(&room("group-3"), None).unwrap(),
            name("district")
        );
        assert_eq!(
            routes.resolve(&room("bigclass"), None).unwrap(),
            name("default")
        );
        assert_eq!(
            routes
                .resolve(&room("group-3"), Some(&name("default")))
                .unwrap(),
            name("default")
        );
        let err = routes
            .resolve(&room("bigclass"), Some(&name("nowhere")))
            .unwrap_err();
        assert_eq!(err.code().as_u32(), 1002908);
        let text = err.to_string();
        assert!(
            text.contains("nowhere") && text.contains("default, district, school"),
            "{text}"
        );
    }
}
