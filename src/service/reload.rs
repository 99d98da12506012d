//! SIGHUP: what changed between two configuration files, and how much of the agent a
//! change needs to restart. Values are never printed (some are secrets), only the keys.

use std::collections::BTreeSet;

use toml::{Table, Value};

/// How much of the agent a reload restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The file means the same: nothing to do.
    Nothing,
    /// Only parts that change in place: rooms, media and streams are not touched.
    /// `control`: remote control changed (`[mqtt]`, `device_id`, `[identity]`, which only
    /// the MQTT `login_room` default uses), so the MQTT connection is restarted.
    /// `audio_processing`: `[audio_processing]` changed, so each microphone's processing
    /// is swapped while it runs.
    /// `servers`: the Janus servers (`[janus.servers.<name>]`) or `rooms.routes` changed:
    /// the rooms on the servers that changed (or were removed) are logged in again where
    /// they now belong; rooms on every other server are not touched, and new routes
    /// apply to later logins.
    InPlace {
        control: bool,
        audio_processing: bool,
        servers: bool,
    },
    /// Anything else (Janus, sources, encoder, rooms rules, state_dir, …): the agent
    /// leaves its rooms, rebuilds media, the SFU connection and the engine with the new
    /// settings, and takes up the same desired state again (a second or two without
    /// media, as after a restart).
    Everything,
}

fn is_under(key: &str, section: &str) -> bool {
    key == section
        || key
            .strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('.'))
}

impl Scope {
    pub fn of(changed: &[String]) -> Scope {
        if changed.is_empty() {
            return Scope::Nothing;
        }
        let is_control =
            |key: &str| key == "device_id" || is_under(key, "mqtt") || is_under(key, "identity");
        let is_audio = |key: &str| is_under(key, "audio_processing");
        let is_servers = |key: &str| is_under(key, "janus.servers") || key == "rooms.routes";
        if changed
            .iter()
            .all(|key| is_control(key) || is_audio(key) || is_servers(key))
        {
            Scope::InPlace {
                control: changed.iter().any(|key| is_control(key)),
                audio_processing: changed.iter().any(|key| is_audio(key)),
                servers: changed.iter().any(|key| is_servers(key)),
            }
        } else {
            Scope::Everything
        }
    }

    pub fn describe(self) -> String {
        match self {
            Scope::Nothing => "nothing to do".to_owned(),
            Scope::InPlace {
                control,
                audio_processing,
                servers,
            } => {
                let parts: Vec<&str> = [
                    (control, "restarting MQTT control"),
                    (
                        audio_processing,
                        "changing the microphones' processing in place",
                    ),
                    (
                        servers,
                        "applying the Janus servers and routes (rooms on servers that changed are logged in again)",
                    ),
                ]
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, part)| part)
                .collect();
                let only = if control && !audio_processing && !servers {
                    " only"
                } else {
                    ""
                };
                let untouched = if servers {
                    "no other room, media or stream is touched"
                } else {
                    "rooms and streams are not touched"
                };
                format!("{}{only} ({untouched})", parts.join(" and "))
            }
            Scope::Everything => {
                "restarting rooms, media and control with the same rooms and streams".to_owned()
            }
        }
    }
}

/// The `[janus.servers.<name>]` that a change touches (added, removed or changed), from
/// the changed keys and both files (`janus.servers` as a whole: every name in either).
pub fn changed_servers(changed: &[String], old: &Table, new: &Table) -> BTreeSet<String> {
    let names = |table: &Table| -> Vec<String> {
        table
            .get("janus")
            .and_then(Value::as_table)
            .and_then(|j| j.get("servers"))
            .and_then(Value::as_table)
            .map(|servers| servers.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for key in changed {
        if key == "janus.servers" {
            out.extend(names(old));
            out.extend(names(new));
        } else if let Some(rest) = key.strip_prefix("janus.servers.") {
            let name = rest.split('.').next().unwrap_or(rest);
            out.insert(name.to_owned());
        }
    }
    out
}

/// The dotted keys whose values differ (added, removed or changed), sorted.
pub fn changed_keys(old: &Table, new: &Table) -> Vec<String> {
    let mut changed = Vec::new();
    diff("", old, new, &mut changed);
    changed.sort();
    changed
}

fn diff(prefix: &str, old: &Table, new: &Table, out: &mut Vec<String>) {
    let key_of = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    for (k, old_value) in old {
        match (old_value, new.get(k)) {
            (Value::Table(a), Some(Value::Table(b))) => diff(&key_of(k), a, b, out),
            (a, Some(b)) if a == b => {}
            _ => out.push(key_of(k)),
        }
    }
    for k in new.keys() {
        if !old.contains_key(k) {
            out.push(key_of(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn changed_keys_name_keys_never_values() {
        let old = table(
            "device_id = \"a\"\n[mqtt]\nurl = \"mqtt://h:1\"\npassword = \"old-secret\"\n[janus]\nurl = \"ws://x\"\n",
        );
        let new = table(
            "device_id = \"a\"\n[mqtt]\nurl = \"mqtt://h:1\"\npassword = \"new-secret\"\nkeepalive_s = 10\n[janus]\nurl = \"ws://x\"\n[sources.aux]\nvideo = \"test\"\n",
        );
        let changed = changed_keys(&old, &new);
        assert_eq!(changed, ["mqtt.keepalive_s", "mqtt.password", "sources"]);
        assert!(!changed.join(" ").contains("secret"));
        assert_eq!(changed_keys(&old, &old), Vec::<String>::new());
    }

    #[test]
    fn scope_follows_what_changed() {
        let keys = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Scope::of(&[]), Scope::Nothing);
        assert_eq!(
            Scope::of(&keys(&[
                "mqtt.keepalive_s",
                "identity.user_name",
                "device_id"
            ])),
            Scope::InPlace {
                control: true,
                audio_processing: false,
                servers: false
            }
        );
        assert_eq!(
            Scope::of(&keys(&[
                "audio_processing.echo_cancel",
                "audio_processing.noise_suppression"
            ])),
            Scope::InPlace {
                control: false,
                audio_processing: true,
                servers: false
            }
        );
        assert_eq!(
            Scope::of(&keys(&["audio_processing", "mqtt.url"])),
            Scope::InPlace {
                control: true,
                audio_processing: true,
                servers: false
            }
        );
        assert_eq!(
            Scope::of(&keys(&[
                "audio_processing.gain_control",
                "encoder.bitrate_kbps"
            ])),
            Scope::Everything
        );
        assert_eq!(Scope::of(&keys(&["audio_processingx"])), Scope::Everything);
        assert_eq!(
            Scope::of(&keys(&["mqtt.url", "janus.url"])),
            Scope::Everything
        );
        assert_eq!(
            Scope::of(&keys(&["encoder.bitrate_kbps"])),
            Scope::Everything
        );
        assert_eq!(Scope::of(&keys(&["mqttx"])), Scope::Everything);
        assert_eq!(
            Scope::of(&keys(&["janus.servers.b.url", "rooms.routes"])),
            Scope::InPlace {
                control: false,
                audio_processing: false,
                servers: true
            }
        );
        assert_eq!(
            Scope::of(&keys(&["janus.servers", "mqtt.url"])),
            Scope::InPlace {
                control: true,
                audio_processing: false,
                servers: true
            }
        );
        assert_eq!(
            Scope::of(&keys(&["janus.servers.b.url", "janus.url"])),
            Scope::Everything
        );
        assert_eq!(Scope::of(&keys(&["janus.serversx"])), Scope::Everything);
    }

    #[test]
    fn scopes_are_described() {
        let control = Scope::InPlace {
            control: true,
            audio_processing: false,
            servers: false,
        };
        assert_eq!(
            control.describe(),
            "restarting MQTT control only (rooms and streams are not touched)"
        );
        let servers = Scope::InPlace {
            control: false,
            audio_processing: false,
            servers: true,
        };
        assert!(
            servers
                .describe()
                .starts_with("applying the Janus servers and routes"),
            "{}",
            servers.describe()
        );
    }

    #[test]
    fn changed_servers_are_named() {
        let old = table(
            "[janus]\nurl = \"ws://x\"\n[janus.servers.a]\nurl = \"ws://a\"\n[janus.servers.b]\nurl = \"ws://b\"\n",
        );
        let new = table(
            "[janus]\nurl = \"ws://x\"\n[janus.servers.a]\nurl = \"ws://a\"\n[janus.servers.b]\nurl = \"ws://b2\"\n[janus.servers.c]\nurl = \"ws://c\"\n",
        );
        let changed = changed_keys(&old, &new);
        assert_eq!(changed, ["janus.servers.b.url", "janus.servers.c"]);
        let servers: Vec<String> = changed_servers(&changed, &old, &new).into_iter().collect();
        assert_eq!(servers, ["b", "c"]);
        let none = table("[janus]\nurl = \"ws://x\"\n");
        let all = changed_keys(&none, &new);
        let servers: Vec<String> = changed_servers(&all, &none, &new).into_iter().collect();
        assert_eq!(servers, ["a", "b", "c"]);
    }
}
