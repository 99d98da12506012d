//! The configuration file: TOML in, a typed and validated [`Config`] out.
//! Nothing else in roomcast reads TOML. `config/roomcast.example.toml` documents every
//! field; keep the two in step.

pub mod audio_processing;
mod error;
mod locate;
pub mod media;
pub mod network;
mod types;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Problem};
pub use types::*;

/// Where `roomcast` looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/roomcast/roomcast.toml";

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| locate::line_column(text, span.start))
                .unwrap_or((1, 1));
            let key = e.span().and_then(|span| locate::key_at(text, span.start));
            ConfigError::Parse {
                path: origin.to_owned(),
                line,
                column,
                key,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        let mut problems = config.validate();
        if problems.is_empty() {
            return Ok(config);
        }
        for problem in &mut problems {
            problem.line = locate::line_of_key(text, &problem.field);
        }
        Err(ConfigError::Invalid {
            path: origin.to_owned(),
            problems,
        })
    }

    /// Rules that span fields or need more than a type to check.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, field: &str, message: String| {
            if !ok {
                problems.push(Problem::new(field, message));
            }
        };

        let id = &self.device_id;
        check(
            !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "device_id",
            format!(
                "{id:?} is not allowed: use 1 to 64 ASCII letters, digits, '-' or '_' (it is part of MQTT topics)"
            ),
        );
        check(
            self.state_dir.is_absolute(),
            "state_dir",
            format!("{} must be an absolute path", self.state_dir.display()),
        );
        check(
            (1..=MAX_ROOMS_LIMIT).contains(&self.rooms.max_rooms),
            "rooms.max_rooms",
            format!(
                "{} is out of range: allowed 1 to {MAX_ROOMS_LIMIT}",
                self.rooms.max_rooms
            ),
        );
        for (i, pattern) in self.rooms.allowed.iter().enumerate() {
            check(
                !pattern.is_empty()
                    && pattern.len() < crate::engine::types::ROOM_ID_LIMIT
                    && pattern.chars().all(|c| c.is_ascii_graphic()),
                &format!("rooms.allowed[{i}]"),
                format!(
                    "{pattern:?} is not a room pattern: 1 to 127 characters of a room id, with * (any run) and ? (one character)"
                ),
            );
        }

        for (name, source) in self.sources.iter() {
            let field = |f: &str| format!("sources.{name}.{f}");
            check(
                (160..=3840).contains(&source.width) && source.width % 2 == 0,
                &field("width"),
                format!(
                    "{} is not allowed: an even number from 160 to 3840",
                    source.width
                ),
            );
            check(
                (120..=2160).contains(&source.height) && source.height % 2 == 0,
                &field("height"),
                format!(
                    "{} is not allowed: an even number from 120 to 2160",
                    source.height
                ),
            );
            check(
                !source.stamp_enabled()
                    || crate::base::stamp::fits(source.width as usize, source.height as usize),
                &field("stamp"),
                format!(
                    "a {}x{} picture is too small for the BLK1 stamp (66 blocks of 32x32 pixels); set stamp = false or a larger size",
                    source.width, source.height
                ),
            );
            check(
                (1..=60).contains(&source.framerate),
                &field("framerate"),
                format!(
                    "{} is out of range: allowed 1 to 60 frames per second",
                    source.framerate
                ),
            );
        }

        if let Err((key, message)) = self.network.ice_servers() {
            check(false, &key, message);
        }
        if let Some(path) = &self.network.turn_ca_file {
            check(
                path.is_absolute(),
                "network.turn_ca_file",
                format!("{} must be an absolute path", path.display()),
            );
        }

        let enc = &self.encoder;
        check(
            (100..=20_000).contains(&enc.bitrate_kbps),
            "encoder.bitrate_kbps",
            format!(
                "{} is out of range: allowed 100 to 20000 kbit/s",
                enc.bitrate_kbps
            ),
        );
        check(
            (1..=30).contains(&enc.keyframe_interval_s),
            "encoder.keyframe_interval_s",
            format!(
                "{} is out of range: allowed 1 to 30 seconds",
                enc.keyframe_interval_s
            ),
        );
        check(
            (50..=enc.bitrate_kbps.max(50)).contains(&enc.min_bitrate_kbps),
            "encoder.min_bitrate_kbps",
            format!(
                "{} is out of range: allowed 50 kbit/s up to encoder.bitrate_kbps ({})",
                enc.min_bitrate_kbps, enc.bitrate_kbps
            ),
        );
        check(
            self.rooms.quality_interval_s <= 3600,
            "rooms.quality_interval_s",
            format!(
                "{} is out of range: allowed 0 (no quality events) to 3600 seconds",
                self.rooms.quality_interval_s
            ),
        );
        check(
            (6..=510).contains(&enc.audio_bitrate_kbps),
            "encoder.audio_bitrate_kbps",
            format!(
                "{} is out of range: Opus allows 6 to 510 kbit/s",
                enc.audio_bitrate_kbps
            ),
        );

        let mqtt = &self.mqtt;
        let prefix = &mqtt.topic_prefix;
        check(
            !prefix.is_empty()
                && !prefix.starts_with('/')
                && !prefix.ends_with('/')
                && !prefix.contains("//")
                && !prefix.contains(['+', '#', '\0']),
            "mqtt.topic_prefix",
            format!(
                "{prefix:?} is not allowed: one or more topic levels separated by '/', without '+', '#' or empty levels"
            ),
        );
        if let Some(client_id) = &mqtt.client_id {
            check(
                !client_id.is_empty() && client_id.len() <= 64,
                "mqtt.client_id",
                "must be 1 to 64 bytes".to_owned(),
            );
        }
        check(
            mqtt.keepalive_s >= 5,
            "mqtt.keepalive_s",
            format!(
                "{} is too short: allowed 5 to 65535 seconds",
                mqtt.keepalive_s
            ),
        );
        match (&mqtt.url, mqtt.urls.is_empty()) {
            (Some(_), false) => check(
                false,
                "mqtt.urls",
                "set mqtt.url (one broker) or mqtt.urls (a list of brokers), not both".to_owned(),
            ),
            (None, true) => check(
                false,
                "mqtt.url",
                "no broker: set mqtt.url = \"mqtt(s)://host:port\", or mqtt.urls = [ … ] for several".to_owned(),
            ),
            _ => {}
        }
        for (index, problem) in broker_list_problems(&mqtt.urls) {
            let key = index.map_or_else(|| "mqtt.urls".to_owned(), |i| format!("mqtt.urls[{i}]"));
            check(false, &key, problem);
        }
        let tls = mqtt.is_tls();
        check(
            mqtt.client_cert.is_some() == mqtt.client_key.is_some(),
            "mqtt.client_cert",
            "client_cert and client_key go together: set both or neither".to_owned(),
        );
        check(
            tls || (mqtt.ca_file.is_none() && mqtt.client_cert.is_none()),
            if mqtt.urls.is_empty() { "mqtt.url" } else { "mqtt.urls" },
            "TLS files are set but the URL is not mqtts://: use mqtts:// (roomcast never falls back to plaintext)".to_owned(),
        );
        check(
            !tls || mqtt.ca_file.is_some(),
            "mqtt.ca_file",
            "an mqtts:// broker needs ca_file, the CA certificate (PEM) that signed the broker's certificate".to_owned(),
        );
        for (field, file) in [
            ("mqtt.ca_file", &mqtt.ca_file),
            ("mqtt.client_cert", &mqtt.client_cert),
            ("mqtt.client_key", &mqtt.client_key),
        ] {
            if let Some(file) = file {
                check(
                    file.is_file(),
                    field,
                    format!("{} does not exist or is not a file", file.display()),
                );
            }
        }
        check(
            mqtt.username.is_some() || mqtt.password.is_none(),
            "mqtt.password",
            "a password needs a username".to_owned(),
        );

        for (i, route) in self.rooms.routes.iter().enumerate() {
            let pattern = &route.rooms;
            check(
                !pattern.is_empty()
                    && pattern.len() < crate::engine::types::ROOM_ID_LIMIT
                    && pattern.chars().all(|c| c.is_ascii_graphic()),
                &format!("rooms.routes[{i}].rooms"),
                format!(
                    "{pattern:?} is not a room pattern: 1 to 127 characters of a room id, with * (any run) and ? (one character)"
                ),
            );
            let known = route.server == crate::engine::ServerName::DEFAULT
                || self.janus.servers.contains_key(&route.server);
            check(
                known,
                &format!("rooms.routes[{i}].server"),
                format!(
                    "{:?} is not a configured Janus server: use \"default\" ([janus]) or the name of a [janus.servers.<name>] section ({})",
                    route.server,
                    self.server_routes()
                ),
            );
        }
        for (name, janus) in self.janus.servers.iter() {
            let field = format!("janus.servers.{name}");
            check(
                crate::engine::ServerName::parse(name).is_ok()
                    && name != crate::engine::ServerName::DEFAULT,
                &field,
                format!(
                    "{name:?} is not allowed as a server name: 1 to 64 ASCII letters, digits, '-' or '_', and not \"default\" (that is [janus] itself)"
                ),
            );
            check(
                janus.servers.is_empty(),
                &format!("{field}.servers"),
                "servers are listed once, under [janus.servers.<name>]; a server has no servers of its own".to_owned(),
            );
        }
        for (name, janus) in self.janus.all_servers() {
            let prefix = if name == crate::engine::ServerName::DEFAULT {
                "janus".to_owned()
            } else {
                format!("janus.servers.{name}")
            };
            janus.validate_server(&prefix, &mut check);
        }
        problems
    }

    /// Things that are valid but probably not what the operator wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.rooms.mode == crate::engine::RoomMode::Multi && !self.rooms.multi_room_enabled {
            warnings.push(
                "rooms.mode = \"multi\" but rooms.multi_room_enabled = false: every login will fail with 1002036".to_owned(),
            );
        }
        // Credentials over plaintext to anything but this machine (private addresses
        // included: a school network is shared with hundreds of devices).
        for url in self.mqtt.brokers() {
            if !url.is_tls() && !url.is_loopback() && self.mqtt.password.is_some() {
                warnings.push(format!(
                    "{} {url} is unencrypted and mqtt.password is set: the password and every command cross the network in clear; use mqtts:// with mqtt.ca_file",
                    if self.mqtt.urls.is_empty() {
                        "mqtt.url"
                    } else {
                        "mqtt.urls:"
                    }
                ));
            }
        }
        for (name, janus) in self.janus.all_servers() {
            let prefix = if name == crate::engine::ServerName::DEFAULT {
                "janus".to_owned()
            } else {
                format!("janus.servers.{name}")
            };
            let secrets: Vec<String> = [
                ("api_secret", janus.api_secret.is_some()),
                ("token", janus.token.is_some()),
                ("admin_key", janus.admin_key.is_some()),
            ]
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| format!("{prefix}.{key}"))
            .collect();
            if janus.url.is_plaintext() && !janus.url.is_loopback() {
                if secrets.is_empty() {
                    if janus.url.is_plaintext_remote() {
                        warnings.push(format!(
                            "{prefix}.url {} is unencrypted and not on this machine; consider wss://",
                            janus.url
                        ));
                    }
                } else {
                    warnings.push(format!(
                        "{prefix}.url {} is unencrypted and {} set: it crosses the network in clear with every request; use wss:// ({prefix}.ca_file for the school's own CA)",
                        janus.url,
                        match secrets.as_slice() {
                            [one] => format!("{one} is"),
                            many => format!("{} are", many.join(", ")),
                        }
                    ));
                }
            }
        }
        warnings
    }

    /// A one-line description for `check-config` and the startup log. No secrets.
    pub fn summary(&self) -> String {
        let rooms = match self.rooms.mode {
            crate::engine::RoomMode::Single => "single-room mode".to_owned(),
            crate::engine::RoomMode::Multi => format!(
                "multi-room mode (up to {} rooms, {}, fan-out {})",
                self.rooms.max_rooms,
                if self.rooms.multi_room_enabled {
                    "enabled"
                } else {
                    "NOT enabled"
                },
                self.rooms.fanout
            ),
        };
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|(name, s)| {
                format!(
                    "{name} {} {}x{}@{} + audio {}",
                    s.video, s.width, s.height, s.framerate, s.audio
                )
            })
            .collect();
        format!(
            "device {} as user {}, {rooms}, sources [{}], encoder {} at {} kbit/s, MQTT {} (topics {}/{}/…), Janus {}{}",
            self.device_id,
            self.identity.user_id,
            sources.join("; "),
            self.encoder.preference,
            self.encoder.bitrate_kbps,
            self.mqtt.describe_brokers(),
            self.mqtt.topic_prefix,
            self.device_id,
            self.janus.url,
            if self.janus.servers.is_empty() {
                String::new()
            } else {
                let others: Vec<String> = self
                    .janus
                    .servers
                    .iter()
                    .map(|(name, c)| format!("{name} {}", c.url))
                    .collect();
                format!(
                    " and {} ({} route{})",
                    others.join(", "),
                    self.rooms.routes.len(),
                    if self.rooms.routes.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                )
            },
        )
    }

    /// The engine's rules, from the `[rooms]` and `[janus]` sections.
    pub fn engine_settings(&self) -> crate::engine::EngineSettings {
        crate::engine::EngineSettings {
            mode: self.rooms.mode,
            max_rooms: self.rooms.max_rooms,
            multi_room_enabled: self.rooms.multi_room_enabled,
            quality_interval: (self.rooms.quality_interval_s > 0)
                .then(|| std::time::Duration::from_secs(self.rooms.quality_interval_s)),
            allowed_rooms: crate::engine::RoomAllowList::new(self.rooms.allowed.clone()),
            fanout: self.rooms.fanout,
            servers: self.server_routes(),
            reconnect: crate::engine::ReconnectPolicy {
                window: std::time::Duration::from_secs(self.janus.reconnect_window_s),
                ..Default::default()
            },
        }
    }

    /// The configured Janus servers and `rooms.routes`, for the engine.
    pub fn server_routes(&self) -> crate::engine::ServerRoutes {
        use crate::engine::{Route, ServerName};
        let others = self
            .janus
            .servers
            .keys()
            .filter_map(|name| ServerName::parse(name).ok());
        let routes = self
            .rooms
            .routes
            .iter()
            .filter_map(|r| {
                Some(Route {
                    rooms: r.rooms.clone(),
                    server: ServerName::parse(&r.server).ok()?,
                })
            })
            .collect();
        self.janus.all_servers().fold(
            crate::engine::ServerRoutes::new(others, routes),
            |routes, (name, janus)| match ServerName::parse(name) {
                Ok(name) => routes.with_reconnect_window(
                    name,
                    std::time::Duration::from_secs(janus.reconnect_window_s),
                ),
                Err(_) => routes,
            },
        )
    }

    /// The persisted state file inside `state_dir`.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
}

impl JanusConfig {
    /// The checks of one server's section (`prefix`: `janus` or `janus.servers.<name>`).
    fn validate_server(&self, prefix: &str, check: &mut dyn FnMut(bool, &str, String)) {
        if let Some(ca_file) = &self.ca_file {
            if self.url.is_plaintext() {
                check(
                    false,
                    &format!("{prefix}.ca_file"),
                    format!(
                        "is set but {prefix}.url {} is ws://; a CA is only used with wss://",
                        self.url
                    ),
                );
            } else if let Err(message) =
                crate::base::tls::trusting_only(&format!("{prefix}.ca_file"), ca_file)
            {
                check(false, &format!("{prefix}.ca_file"), message);
            }
        }
        check(
            (100..=60_000).contains(&self.request_timeout_ms),
            &format!("{prefix}.request_timeout_ms"),
            format!(
                "{} is out of range: allowed 100 to 60000 ms",
                self.request_timeout_ms
            ),
        );
        check(
            (1..=50).contains(&self.keepalive_interval_s),
            &format!("{prefix}.keepalive_interval_s"),
            format!(
                "{} is out of range: allowed 1 to 50 s (it must stay well inside Janus's session_timeout, 60 s by default)",
                self.keepalive_interval_s
            ),
        );
        check(
            (5..=86_400).contains(&self.reconnect_window_s),
            &format!("{prefix}.reconnect_window_s"),
            format!(
                "{} is out of range: allowed 5 to 86400 s",
                self.reconnect_window_s
            ),
        );
        check(
            (1..=100).contains(&self.room.publishers),
            &format!("{prefix}.room.publishers"),
            format!("{} is out of range: allowed 1 to 100", self.room.publishers),
        );
        check(
            (100..=50_000).contains(&self.room.bitrate_kbps),
            &format!("{prefix}.room.bitrate_kbps"),
            format!(
                "{} is out of range: allowed 100 to 50000 kbit/s",
                self.room.bitrate_kbps
            ),
        );
    }
}

#[cfg(test)]
mod tests;
