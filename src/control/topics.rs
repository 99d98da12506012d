//! The topic names of one box: `{prefix}/{device_id}/…`.

/// Every topic the agent uses, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
    /// Commands in (the agent subscribes, QoS 1).
    pub cmd: String,
    /// One reply per command (QoS 1, not retained).
    pub reply: String,
    /// Every engine event (QoS 1, not retained).
    pub events: String,
    /// The retained state snapshot.
    pub state: String,
    /// Retained `online` / `offline`; `offline` is also the last will.
    pub status: String,
}

impl Topics {
    /// `prefix` and `device_id` are the validated config values (no `+`, `#`, empty levels).
    pub fn new(prefix: &str, device_id: &str) -> Self {
        let base = format!("{prefix}/{device_id}");
        Self {
            cmd: format!("{base}/cmd"),
            reply: format!("{base}/reply"),
            events: format!("{base}/events"),
            state: format!("{base}/state"),
            status: format!("{base}/status"),
            base,
        }
    }

    /// `{prefix}/{device_id}`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}/rooms/{room}/events`, the room id made into one topic level.
    pub fn room_events(&self, room_id: &str) -> String {
        format!("{}/rooms/{}/events", self.base, encode_level(room_id))
    }
}

/// Makes a room id one topic level: `%`, `/`, `+` and `#` become `%25`, `%2F`, `%2B` and
/// `%23`; every other character (room ids are printable ASCII) stays as it is. Decoding
/// is ordinary percent-decoding.
pub fn encode_level(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '+' => out.push_str("%2B"),
            '#' => out.push_str("%23"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_of_a_box() {
        let t = Topics::new("school/roomcast", "box-17");
        assert_eq!(t.cmd, "school/roomcast/box-17/cmd");
        assert_eq!(t.reply, "school/roomcast/box-17/reply");
        assert_eq!(t.events, "school/roomcast/box-17/events");
        assert_eq!(t.state, "school/roomcast/box-17/state");
        assert_eq!(t.status, "school/roomcast/box-17/status");
        assert_eq!(
            t.room_events("bigclass"),
            "school/roomcast/box-17/rooms/bigclass/events"
        );
    }

    #[test]
    fn room_ids_become_one_level_without_wildcards() {
        assert_eq!(encode_level("group-3"), "group-3");
        assert_eq!(encode_level("a/b+c#d%e"), "a%2Fb%2Bc%23d%25e");
        // `%` first would double-encode: "%2F" in a room id stays distinguishable from "/".
        assert_eq!(encode_level("%2F"), "%252F");
        assert_eq!(
            encode_level("x~!@$^&*()_=-`;',.<>\\"),
            "x~!@$^&*()_=-`;',.<>\\"
        );
    }
}
