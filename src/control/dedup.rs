//! Command-id deduplication: a command id seen recently is not run again; its first reply
//! is sent again instead. QoS 1 delivers at least once (a broker resends what it did not
//! see acknowledged, a dashboard retries after a timeout): this makes the effect
//! exactly once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a finished command's reply is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(600);
/// At most this many finished commands are remembered (the oldest are forgotten first).
pub const REMEMBER_MAX: usize = 1024;
/// At most this many bytes of remembered replies.
pub const REMEMBER_MAX_BYTES: usize = 4 * 1024 * 1024;

enum Entry {
    /// Being run; `duplicates` more deliveries arrived meanwhile, each owed a reply.
    Running {
        duplicates: u32,
    },
    Done {
        reply: Vec<u8>,
    },
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
}

#[derive(Default)]
pub struct ReplyCache {
    entries: HashMap<String, Entry>,
    /// Finished ids, oldest first, with when they finished.
    finished: VecDeque<(String, Instant)>,
    bytes: usize,
}

impl ReplyCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an arriving command id.
    pub fn arrive(&mut self, id: &str, now: Instant) -> Seen {
        self.expire(now);
        match self.entries.get_mut(id) {
            None => {
                self.entries
                    .insert(id.to_owned(), Entry::Running { duplicates: 0 });
                Seen::New
            }
            Some(Entry::Running { duplicates }) => {
                *duplicates = duplicates.saturating_add(1);
                Seen::Running
            }
            Some(Entry::Done { reply }) => Seen::Done(reply.clone()),
        }
    }

    /// Records a finished command's reply; returns how many times to publish it (once,
    /// plus once per duplicate that arrived while it ran).
    pub fn finish(&mut self, id: &str, reply: &[u8], now: Instant) -> u32 {
        let duplicates = match self.entries.get(id) {
            Some(Entry::Running { duplicates }) => *duplicates,
            _ => 0,
        };
        self.bytes += reply.len();
        self.entries.insert(
            id.to_owned(),
            Entry::Done {
                reply: reply.to_vec(),
            },
        );
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
            if let Some(Entry::Done { reply }) = self.entries.remove(id.as_str()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_id_gets_its_first_reply_again() {
        let mut cache = ReplyCache::new();
        let t = Instant::now();
        assert_eq!(cache.arrive("a", t), Seen::New);
        assert_eq!(cache.finish("a", b"reply-1", t), 1);
        assert_eq!(cache.arrive("a", t), Seen::Done(b"reply-1".to_vec()));
        assert_eq!(cache.arrive("b", t), Seen::New);
    }

    #[test]
    fn duplicates_while_running_are_each_owed_a_reply() {
        let mut cache = ReplyCache::new();
        let t = Instant::now();
        assert_eq!(cache.arrive("a", t), Seen::New);
        assert_eq!(cache.arrive("a", t), Seen::Running);
        assert_eq!(cache.arrive("a", t), Seen::Running);
        assert_eq!(cache.finish("a", b"r", t), 3);
    }

    #[test]
    fn old_and_excess_entries_are_forgotten() {
        let mut cache = ReplyCache::new();
        let t = Instant::now();
        cache.arrive("old", t);
        cache.finish("old", b"r", t);
        let later = t + REMEMBER_FOR + Duration::from_secs(1);
        assert_eq!(cache.arrive("old", later), Seen::New);

        let mut cache = ReplyCache::new();
        for i in 0..REMEMBER_MAX + 10 {
            let id = i.to_string();
            cache.arrive(&id, t);
            cache.finish(&id, b"r", t);
        }
        assert_eq!(cache.len(), REMEMBER_MAX);
        assert_eq!(cache.arrive("0", t), Seen::New);

        let mut cache = ReplyCache::new();
        let big = vec![0u8; REMEMBER_MAX_BYTES / 2 + 1];
        for id in ["x", "y", "z"] {
            cache.arrive(id, t);
            cache.finish(id, &big, t);
        }
        assert!(cache.bytes <= REMEMBER_MAX_BYTES);
        assert_eq!(cache.arrive("z", t), Seen::Done(big.clone()));
        assert_eq!(cache.arrive("x", t), Seen::New);
    }
}
