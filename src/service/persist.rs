//! The persister: the one task that writes the state file. The engine owns the desired
//! state and publishes it in a `watch`; this task owns the file and writes it whenever
//! the desired state differs from what is on disk. Bursts coalesce (a `watch` keeps only
//! the latest value), and nothing is written while only room *states* change (a Janus
//! outage writes nothing): the SD card of a board is not worn by reconnects.

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::state::{DesiredState, StateStore};

pub struct Persister {
    stop: CancellationToken,
    kick: Arc<Notify>,
    task: JoinHandle<()>,
    desired: watch::Receiver<DesiredState>,
}

impl Persister {
    /// Starts writing `desired` to `store`. `on_disk` is what the file holds now, when
    /// known (nothing is written until the state differs from it).
    pub fn start(
        store: StateStore,
        desired: watch::Receiver<DesiredState>,
        on_disk: Option<DesiredState>,
    ) -> Self {
        let stop = CancellationToken::new();
        let kick = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            store,
            desired.clone(),
            on_disk,
            stop.clone(),
            kick.clone(),
        ));
        Self {
            stop,
            kick,
            task,
            desired,
        }
    }

    /// Makes the persister compare the desired state with the file now (after a
    /// restore, whose outcome may equal the engine's initial empty state).
    pub fn sync(&self) {
        self.kick.notify_one();
    }

    /// Writes what is pending, then stops. Returns the latest desired state.
    pub async fn finish(self) -> DesiredState {
        self.stop.cancel();
        let _ = self.task.await;
        self.desired.borrow().clone()
    }
}

async fn run(
    store: StateStore,
    mut desired: watch::Receiver<DesiredState>,
    mut on_disk: Option<DesiredState>,
    stop: CancellationToken,
    kick: Arc<Notify>,
) {
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            changed = desired.changed() => changed.is_err(),
            _ = kick.notified() => false,
            _ = stop.cancelled() => true,
        };
        let current = desired.borrow_and_update().clone();
        if on_disk.as_ref() != Some(&current) {
            let saving = store.clone();
            let state = current.clone();
            let saved = tokio::task::spawn_blocking(move || saving.save(&state)).await;
            match saved {
                Ok(Ok(())) => {
                    if failing {
                        info!("the state file {} is written again", store.path().display());
                    }
                    failing = false;
                    debug!(path = %store.path().display(), "desired state saved: {current}");
                    on_disk = Some(current);
                }
                Ok(Err(e)) => {
                    // Once per outage, not once per change.
                    if !failing {
                        error!(
                            "cannot write the state file {}: {e}; the rooms will not be rejoined after a restart until it can be written",
                            store.path().display()
                        );
                    }
                    failing = true;
                }
                Err(e) => error!("saving the state file panicked: {e}"),
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DesiredRoom, RoomId, User};
    use crate::service::state::{Loaded, parse_state};

    fn room(id: &str) -> DesiredRoom {
        DesiredRoom {
            room_id: RoomId::parse(id).unwrap(),
            server: None,
            user: User::parse("box-17", "Box").unwrap(),
            had_token: false,
        }
    }

    #[tokio::test]
    async fn writes_changes_and_the_last_one_on_finish() {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-persist-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let store = StateStore::new(dir.join("state.json"));
        let (tx, rx) = watch::channel(DesiredState::default());
        let persister = Persister::start(store.clone(), rx, Some(DesiredState::default()));
        // Unchanged: nothing written.
        persister.sync();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(store.load(), Loaded::Missing));
        tx.send_replace(DesiredState {
            rooms: vec![room("bigclass")],
            ..Default::default()
        });
        let mut written = None;
        for _ in 0..100 {
            if let Ok(bytes) = std::fs::read(store.path()) {
                written = Some(parse_state(&bytes).unwrap());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(written.unwrap().rooms, vec![room("bigclass")]);
        let last = DesiredState {
            rooms: vec![room("bigclass"), room("group-3")],
            ..Default::default()
        };
        tx.send_replace(last.clone());
        assert_eq!(persister.finish().await, last);
        let on_disk = parse_state(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(on_disk, last);
        std::fs::remove_dir_all(&dir).ok();
    }
}
