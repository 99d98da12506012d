//! SIGHUP: what changed between two configuration files, and how much of the agent a
//! change needs to restart. Values are never printed (some are secrets), only the keys.

use std::collections::BTreeSet;

use toml::{Table, Value};

/// How much of the agent a reload restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The file means the same: nothing to do.
    Nothing,
    /// Only remote control changed (`[mqtt]`, `device_id`, `[identity]`, which only the
    /// MQTT `login_room` default uses): the MQTT connection is restarted; rooms, media
    /// and streams are not touched.
    Control,
    /// Only the Janus servers (`[janus.servers.<name>]`) and `rooms.routes` changed: the
    /// rooms on the servers that changed (or were removed) are logged in again where
    /// they now belong; rooms on every other server, media and control are not touched.
    /// New routes apply to later logins.
    Servers,
    /// Anything else (Janus, sources, encoder, rooms rules, state_dir, …): the agent
    /// leaves its rooms, rebuilds media, the SFU connection and the engine with the new
    /// settings, and takes up the same desired state again (a second or two without
    /// media, as after a restart).
    Everything,
}

impl Scope {
    pub fn of(changed: &[String]) -> Scope {
        if changed.is_empty() {
            return Scope::Nothing;
        }
        let control_only = changed.iter().all(|key| {
            key == "device_id"
                || key == "mqtt"
                || key.starts_with("mqtt.")
                || key == "identity"
                || key.starts_with("identity.")
        });
        let servers_only = changed.iter().all(|key| {
            key == "janus.servers" || key.starts_with("janus.servers.") || key == "rooms.routes"
        });
        if control_only {
            Scope::Control
        } else if servers_only {
            Scope::Servers
        } else {
            Scope::Everything
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scope::Nothing => "nothing to do",
            Scope::Control => "restarting MQTT control only (rooms and streams are not touched)",
            Scope::Servers => {
                "applying the Janus servers and routes: rooms on servers that changed are logged in again, nothing else is touched"
            }
            Scope::Everything => {
                "restarting rooms, media and control with the same rooms and streams"
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
            Scope::Control
        );
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
            Scope::Servers
        );
        assert_eq!(Scope::of(&keys(&["janus.servers"])), Scope::Servers);
        assert_eq!(
            Scope::of(&keys(&["janus.servers.b.url", "janus.url"])),
            Scope::Everything
        );
        assert_eq!(
            Scope::of(&keys(&["janus.servers.b.url", "mqtt.url"])),
            Scope::Everything
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
