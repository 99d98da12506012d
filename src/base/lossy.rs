//! A bounded channel that never blocks its sender and, when full, drops the *oldest*
//! message and counts it: for traffic the box does not control (what other participants
//! in a room send, what Janus reports about them). A room full of chatty participants
//! costs at most `capacity` messages of memory, and the newest — the current state of
//! things — is what is kept.
//!
//! `recv` is cancel-safe (a message is taken only when `recv` returns it), so it can sit
//! in a `select!` like an `mpsc::Receiver`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::warn;

struct Queue<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
    dropped: u64,
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    ready: Notify,
    capacity: usize,
    what: &'static str,
}

/// Creates a channel holding at most `capacity` (≥ 1) messages; `what` names them in
/// the warning logged when some are dropped (at the 1st, 2nd, 4th, 8th… drop).
pub fn channel<T>(capacity: usize, what: &'static str) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
            dropped: 0,
        }),
        ready: Notify::new(),
        capacity: capacity.max(1),
        what,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiver is gone.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

impl<T> Sender<T> {
    /// Queues `item`, dropping the oldest queued message when full. Never waits.
    pub fn send(&self, item: T) -> Result<(), Closed> {
        let Ok(mut queue) = self.shared.queue.lock() else {
            return Err(Closed);
        };
        if !queue.receiver_alive {
            return Err(Closed);
        }
        if queue.items.len() >= self.shared.capacity {
            queue.items.pop_front();
            queue.dropped += 1;
            if queue.dropped.is_power_of_two() {
                warn!(
                    "{} came faster than they were handled: {} dropped so far (oldest first; at most {} are kept)",
                    self.shared.what, queue.dropped, self.shared.capacity
                );
            }
        }
        queue.items.push_back(item);
        drop(queue);
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.senders += 1;
        }
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.senders -= 1;
        }
        self.shared.ready.notify_one();
    }
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next message, oldest first; `None` once every sender is gone and nothing is
    /// left.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            let ready = self.shared.ready.notified();
            {
                let Ok(mut queue) = self.shared.queue.lock() else {
                    return None;
                };
                if let Some(item) = queue.items.pop_front() {
                    return Some(item);
                }
                if queue.senders == 0 {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// How many messages were dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.queue.lock().map_or(0, |q| q.dropped)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.receiver_alive = false;
            queue.items.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_full_channel_drops_the_oldest_and_counts() {
        let (tx, mut rx) = channel(3, "test messages");
        for n in 0..10 {
            tx.send(n).unwrap();
        }
        assert_eq!(rx.dropped(), 7);
        assert_eq!(rx.recv().await, Some(7));
        assert_eq!(rx.recv().await, Some(8));
        assert_eq!(rx.recv().await, Some(9));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn recv_waits_wakes_and_is_cancel_safe() {
        let (tx, mut rx) = channel(4, "test messages");
        // Cancelled while waiting: nothing is lost.
        let waited = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await;
        assert!(waited.is_err());
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send("late").unwrap();
            tx
        });
        assert_eq!(rx.recv().await, Some("late"));
        let tx = sender.await.unwrap();
        let tx2 = tx.clone();
        drop(tx);
        tx2.send("still open").unwrap();
        assert_eq!(rx.recv().await, Some("still open"));
        drop(rx);
        assert_eq!(tx2.send("nobody"), Err(Closed));
    }
}
