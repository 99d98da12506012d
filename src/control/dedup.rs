//! Command-id deduplication: a command id seen recently is not run again; its first reply
//! is sent again instead. QoS 1 delivers at least once (a broker resends what it did not
//! see acknowledged, a dashboard retries after a timeout): this makes the effect
//! exactly once.
//!
//! Keyed on the id *and* the command: a redelivery carries the same `op` and `args`; the
//! same id with another command is a dashboard bug (or two dashboards counting alike)
//! and is refused with 1000904 instead of answered with a reply to something else.
//! Read-only ops (`get_state`, `list_devices`) are never remembered: repeating them is
//! harmless, and a dashboard polling the state must not push out the entries that guard
//! the commands that change something.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a finished command's reply is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(600);
/// At most this many finished commands are remembered (the oldest are forgotten first).
pub const REMEMBER_MAX: usize = 1024;
/// At most this many bytes of remembered replies.
pub const REMEMBER_MAX_BYTES: usize = 4 * 1024 * 1024;

/// What a command does, as a number: a hash of its `op` and `args` (keys sorted; absent,
/// `null` and `{}` args alike), keyed per process so that nobody can make two commands
/// collide on purpose. Other top-level fields are ignored, as the contract says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

enum Entry {
    /// Being run; `duplicates` more deliveries arrived meanwhile, each owed a reply.
    Running {
        fingerprint: Fingerprint,
        duplicates: u32,
    },
    Done {
        fingerprint: Fingerprint,
        reply: Vec<u8>,
    },
}

impl Entry {
    fn fingerprint(&self) -> Fingerprint {
        match self {
            Entry::Running { fingerprint, .. } | Entry::Done { fingerprint, .. } => *fingerprint,
        }
    }
}

/// What to do with a command id that just arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never seen (or forgotten): run it.
    New,
    /// Running now: its reply will be sent once more when it finishes.
    Running,
    /// Finished: send this reply again, run nothing.
    Done(Vec<u8>),
    /// The id was used for another command: refuse this one (1000904), run nothing.
    Conflict,
}

#[derive(Default)]
pub struct ReplyCache {
    entries: HashMap<String, Entry>,
    /// Finished ids, oldest first, with when they finished.
    finished: VecDeque<(String, Instant)>,
    bytes: usize,
    keys: RandomState,
}

impl ReplyCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The fingerprint of a command's payload (already parsed: a valid command).
    pub fn fingerprint(&self, payload: &[u8]) -> Fingerprint {
        let mut hasher = self.keys.build_hasher();
        match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(command)) => {
                hash_value(command.get("op").unwrap_or(&Value::Null), &mut hasher);
                match command.get("args") {
                    None | Some(Value::Null) => hasher.write_u8(0),
                    Some(Value::Object(args)) if args.is_empty() => hasher.write_u8(0),
                    Some(args) => hash_value(args, &mut hasher),
                }
            }
            _ => payload.hash(&mut hasher),
        }
        Fingerprint(hasher.finish())
    }

    /// Records an arriving command that changes something.
    pub fn arrive(&mut self, id: &str, fingerprint: Fingerprint, now: Instant) -> Seen {
        self.expire(now);
        match self.entries.get_mut(id) {
            None => {
                self.entries.insert(
                    id.to_owned(),
                    Entry::Running {
                        fingerprint,
                        duplicates: 0,
                    },
                );
                Seen::New
            }
            Some(entry) if entry.fingerprint() != fingerprint => Seen::Conflict,
            Some(Entry::Running { duplicates, .. }) => {
                *duplicates = duplicates.saturating_add(1);
                Seen::Running
            }
            Some(Entry::Done { reply, .. }) => Seen::Done(reply.clone()),
        }
    }

    /// A read-only command: remembered not at all, but its id must not be one in use
    /// for another command.
    pub fn check_read_only(&mut self, id: &str, fingerprint: Fingerprint, now: Instant) -> Seen {
        self.expire(now);
        match self.entries.get(id) {
            Some(entry) if entry.fingerprint() != fingerprint => Seen::Conflict,
            _ => Seen::New,
        }
    }

    /// Records a finished command's reply; returns how many times to publish it (once,
    /// plus once per duplicate that arrived while it ran).
    pub fn finish(&mut self, id: &str, reply: &[u8], now: Instant) -> u32 {
        let (fingerprint, duplicates) = match self.entries.get(id) {
            Some(Entry::Running {
                fingerprint,
                duplicates,
            }) => (*fingerprint, *duplicates),
            Some(Entry::Done { fingerprint, .. }) => (*fingerprint, 0),
            None => (Fingerprint(0), 0),
        };
        self.bytes += reply.len();
        if let Some(Entry::Done { reply: old, .. }) = self.entries.insert(
            id.to_owned(),
            Entry::Done {
                fingerprint,
                reply: reply.to_vec(),
            },
        ) {
            self.bytes -= old.len();
        }
        self.finished.push_back((id.to_owned(), now));
        self.expire(now);
        1 + duplicates
    }

    fn expire(&mut self, now: Instant) {
        while let Some((id, at)) = self.finished.front() {
            let too_old = now.duration_since(*at) > REMEMBER_FOR;
            let too_many = self.finished.len() > REMEMBER_MAX || self.bytes > REMEMBER_MAX_BYTES;
            if !too_old && !too_many {
                break;
            }
            if let Some(Entry::Done { reply, .. }) = self.entries.remove(id.as_str()) {
                self.bytes -= reply.len();
            }
            self.finished.pop_front();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Hashes a JSON value with object keys in sorted order (serde_json's map is sorted).
fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    match value {
        Value::Null => hasher.write_u8(0),
        Value::Bool(b) => {
            hasher.write_u8(1);
            b.hash(hasher);
        }
        Value::Number(n) => {
            hasher.write_u8(2);
            n.to_string().hash(hasher);
        }
        Value::String(s) => {
            hasher.write_u8(3);
            s.hash(hasher);
        }
        Value::Array(items) => {
            hasher.write_u8(4);
            hasher.write_usize(items.len());
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            hasher.write_u8(5);
            hasher.write_usize(map.len());
            for (key, item) in map {
                key.hash(hasher);
                hash_value(item, hasher);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Fingerprint = Fingerprint(7);

    #[test]
    fn a_finished_id_gets_its_first_reply_again() {
        let mut cache = ReplyCache::new();
        let t = Instant::now();
        assert_eq!(cache.arrive("a", F, t), Seen::New);
        assert_eq!(cache.finish("a", b"reply-1", t), 1);
        assert_eq!(cache.arrive("a", F, t), Seen::Done(b"reply-1".to_vec()));
        assert_eq!(cache.arrive("b", F, t), Seen::New);
    }

    #[test]
    fn duplicates_while_running_are_each_owed_a_reply() {
        let mut cache = ReplyCache::new();
        let t = Instant::now();
        assert_eq!(cache.arrive("a", F, t), Seen::New);
        assert_eq!(cache.arrive("a", F, t), Seen::Running);
        assert_eq!(cache.arrive("a", F, t), Seen::Running);
        assert_eq!(cache.finish("a", b"r", t), 3);
    }

    #[test]
    fn old_and_excess_entries_are_forgotten() {
        let mut cache = ReplyCache::new();
        let t = Instant::now();
        cache.arrive("old", F, t);
        cache.finish("old", b"r", t);
        let later = t + REMEMBER_FOR + Duration::from_secs(1);
        assert_eq!(cache.arrive("old", F, later), Seen::New);

        let mut cache = ReplyCache::new();
        for i in 0..REMEMBER_MAX + 10 {
            let id = i.to_string();
            cache.arrive(&id, F, t);
            cache.finish(&id, b"r", t);
        }
        assert_eq!(cache.len(), REMEMBER_MAX);
        assert_eq!(cache.arrive("0", F, t), Seen::New);

        let mut cache = ReplyCache::new();
        let big = vec![0u8; REMEMBER_MAX_BYTES / 2 + 1];
        for id in ["x", "y", "z"] {
            cache.arrive(id, F, t);
            cache.finish(id, &big, t);
        }
        assert!(cache.bytes <= REMEMBER_MAX_BYTES);
        assert_eq!(cache.arrive("z", F, t), Seen::Done(big.clone()));
        assert_eq!(cache.arrive("x", F, t), Seen::New);
    }

    #[test]
    fn the_same_id_with_another_command_is_a_conflict() {
        let mut cache = ReplyCache::new();
        let t = Instant::now();
        let login = cache.fingerprint(br#"{"id":"a","op":"login_room","args":{"room_id":"x"}}"#);
        // The same command, written differently: the same fingerprint.
        let again = cache.fingerprint(
            br#"{ "args": {"room_id": "x"}, "op": "login_room", "id": "a", "sent_at": 5 }"#,
        );
        assert_eq!(login, again);
        let other = cache.fingerprint(br#"{"id":"a","op":"login_room","args":{"room_id":"y"}}"#);
        assert_ne!(login, other);
        assert_eq!(
            cache.fingerprint(br#"{"id":"b","op":"logout_room"}"#),
            cache.fingerprint(br#"{"id":"b","op":"logout_room","args":null}"#)
        );
        assert_eq!(
            cache.fingerprint(br#"{"id":"b","op":"logout_room"}"#),
            cache.fingerprint(br#"{"id":"b","op":"logout_room","args":{}}"#)
        );
        assert_eq!(cache.arrive("a", login, t), Seen::New);
        assert_eq!(cache.arrive("a", other, t), Seen::Conflict);
        assert_eq!(cache.arrive("a", again, t), Seen::Running);
        assert_eq!(cache.finish("a", b"r", t), 2);
        assert_eq!(cache.arrive("a", other, t), Seen::Conflict);
        assert_eq!(cache.arrive("a", login, t), Seen::Done(b"r".to_vec()));
        let state = cache.fingerprint(br#"{"id":"a","op":"get_state"}"#);
        assert_eq!(cache.check_read_only("a", state, t), Seen::Conflict);
        assert_eq!(cache.check_read_only("fresh", state, t), Seen::New);
        assert_eq!(cache.len(), 1, "read-only ops are not remembered");
    }
}
