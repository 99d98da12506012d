//! roomcast as a system service: one supervisor loop around the [`Agent`] and MQTT
//! control that
//!
//! - restores the desired state saved in `state_dir` ([`state`]) and keeps it saved
//!   ([`persist`]),
//! - speaks the systemd notify protocol ([`notify`]):
//!   `READY=1` once the configuration is loaded, media is validated (every GStreamer
//!   element found, every channel's pipeline parsed), the saved rooms were handed to the
//!   engine and the MQTT connection attempt has started. It does not wait for the broker
//!   or Janus to answer: a box that boots without network must still start (it keeps
//!   connecting in the background, and says so in `STATUS=`).
//!   `STATUS=` lines ([`status`]), `WATCHDOG=1` only after a real liveness check
//!   ([`watchdog`]), `RELOADING=1`/`READY=1` around a reload, `STOPPING=1` on shutdown,
//! - reloads the configuration when asked (SIGHUP in `main.rs`): the new file is
//!   validated first and refused (the running one kept) when it is broken; a valid one
//!   is applied with as little disruption as its changes allow ([`reload`]),
//! - stops within [`STOP_BUDGET`]: every room left, `offline` said, as far as the
//!   SFU and the broker answer in time.

pub mod faults;
pub mod memory;
pub mod notify;
mod persist;
pub mod reload;
pub mod state;
pub mod status;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::notify::Notifier;
use self::persist::Persister;
use self::state::{DesiredState, Loaded, StateStore};
use self::watchdog::MediaLiveness;
use crate::control::{Control, RunningControl};
use crate::engine::ServerName;
use crate::media::GstMedia;
use crate::{Agent, Config, RunError};

/// A stop (SIGTERM, or a reload's restart) gets this long to leave the rooms and say
/// `offline`; then the agent stops anyway (the broker's last will says `offline`).
pub const STOP_BUDGET: Duration = Duration::from_millis(2500);
/// What of [`STOP_BUDGET`] is kept for saving the state and saying `offline` after the
/// rooms are left; the rest is the agent's ([`crate::Agent::stopped`]).
const AFTER_ROOMS: Duration = Duration::from_millis(500);
/// How long a reload that changes `[mqtt]` gives the old connection to finish (the agent
/// keeps running meanwhile): room for each of `RunningControl::stop`'s steps at its cap.
const CONTROL_SWAP: Duration = Duration::from_secs(8);

/// How often `STATUS=` is brought up to date (it is sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// What the process around the agent gives it.
#[derive(Default)]
pub struct RunOptions {
    /// The configuration file, for reloads (and to log what a reload changed).
    pub config_path: Option<PathBuf>,
    /// One message per reload request (SIGHUP).
    pub reloads: Option<mpsc::Receiver<()>>,
    /// Where systemd is told how things go; by default from `NOTIFY_SOCKET`.
    pub notifier: Option<Notifier>,
}

/// The parts one configuration runs.
struct Generation {
    config: Config,
    /// The file's text, to tell what a reload changes.
    text: Option<String>,
    agent: Agent,
    control: RunningControl,
    persister: Persister,
    /// Cancelled to stop this generation (a child of the process's shutdown token).
    stop: CancellationToken,
}

impl Generation {
    /// Starts everything `config` describes and hands the engine `restore`.
    async fn start(
        config: Config,
        text: Option<String>,
        media: Option<Arc<GstMedia>>,
        restore: DesiredState,
        on_disk: Option<DesiredState>,
        shutdown: &CancellationToken,
    ) -> Result<Self, RunError> {
        // TLS and the rest of the MQTT settings are checked before anything starts.
        let control = Control::new(&config)?;
        let media = match media {
            Some(media) => media,
            None => Arc::new(GstMedia::new(&config)?),
        };
        let stop = shutdown.child_token();
        let agent = Agent::start_with_media(&config, media, stop.clone());
        let persister = Persister::start(
            StateStore::new(config.state_file()),
            agent.engine.desired(),
            on_disk,
        );
        // Control first: it subscribes to the engine's events, so the restore's events
        // (room_restored, then the rooms' states) reach the dashboards too.
        let control = control.start(agent.engine.clone());
        if !restore.is_empty() {
            match agent.engine.restore(restore).await {
                Ok(report) => {
                    info!(
                        "restoring the saved state: logging in again to {} room(s) [{}], publishing {} [{}], playing {} [{}]",
                        report.rooms.len(),
                        join(&report.rooms),
                        report.publishing.len(),
                        join(&report.publishing),
                        report.playing.len(),
                        join(&report.playing),
                    );
                    for refused in &report.refused {
                        warn!("not restored (the configuration's rules refuse it): {refused}");
                    }
                }
                Err(e) => warn!("the saved state could not be restored: {e}"),
            }
        }
        persister.sync();
        Ok(Self {
            config,
            text,
            agent,
            control,
            persister,
            stop,
        })
    }

    /// Leaves the rooms and stops, within [`STOP_BUDGET`]. Returns the desired state
    /// (unchanged by stopping: the rooms are left, not given up).
    async fn stop(self) -> DesiredState {
        let desired = self.agent.engine.desired();
        self.stop.cancel();
        let Self {
            agent,
            control,
            persister,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + STOP_BUDGET;
        let orderly = async move {
            // The engine leaves the rooms first, so their events still reach dashboards.
            agent.stopped(STOP_BUDGET.saturating_sub(AFTER_ROOMS)).await;
            persister.finish().await;
            // Control gets what is left of the budget (at least AFTER_ROOMS, unless
            // saving the state ate into it).
            control
                .stop(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        };
        if tokio::time::timeout(STOP_BUDGET, orderly).await.is_err() {
            warn!(
                "stopping took longer than {STOP_BUDGET:?}; stopping anyway (the broker's last will says offline)"
            );
        }
        desired.borrow().clone()
    }

    fn fault_targets(&self) -> faults::Targets {
        faults::Targets {
            engine: self.agent.engine.clone(),
            media: self.agent.media.clone(),
        }
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the agent as a service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    options: RunOptions,
) -> Result<(), RunError> {
    let RunOptions {
        config_path,
        mut reloads,
        notifier,
    } = options;
    let notifier = notifier.unwrap_or_else(Notifier::from_env);
    info!(
        "roomcast {} starting: {}",
        env!("CARGO_PKG_VERSION"),
        config.summary()
    );
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let text = config_path
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok());

    let store = StateStore::new(config.state_file());
    let loaded = store.load();
    let on_disk = match &loaded {
        Loaded::Missing => {
            info!(
                "no saved state in {} (first start): no rooms to rejoin",
                store.path().display()
            );
            Some(DesiredState::default())
        }
        Loaded::Read(state) => {
            info!("saved state in {}: {state}", store.path().display());
            Some(state.clone())
        }
        // Written again (the part kept, once restored).
        Loaded::Partly { .. } | Loaded::SetAside { .. } => None,
        // Left as it is until a command changes the rooms: it may be readable again
        // after a fix, and an empty state must not replace it.
        Loaded::Unreadable { .. } => Some(DesiredState::default()),
    };
    let mut current =
        Generation::start(config, text, None, loaded.state(), on_disk, &shutdown).await?;

    let (fault_targets, fault_targets_rx) = watch::channel(None);
    let faults_stop = CancellationToken::new();
    if let Some(path) = faults::socket_from_env() {
        fault_targets.send_replace(Some(current.fault_targets()));
        faults::spawn(path, fault_targets_rx, faults_stop.clone());
    }

    let mut status = StatusReporter::default();
    let first = status.line(&current).await;
    notifier.ready(&first);
    info!("ready: {first}");

    let watchdog_every = notifier.watchdog_interval();
    if let Some(every) = watchdog_every {
        info!(
            "systemd watchdog: a liveness check and WATCHDOG=1 every {every:?} (timeout {:?})",
            notifier.watchdog_timeout().unwrap_or_default()
        );
    }
    let mut watchdog_tick =
        tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut liveness = MediaLiveness::default();
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = current.agent.engine.subscribe();
    let mut events_open = true;
    let mut housekeeping = memory::Housekeeping::new();

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            request = next_reload(&mut reloads) => {
                if request.is_none() {
                    reloads = None;
                    continue;
                }
                let Some(path) = config_path.as_ref() else {
                    warn!("reload requested, but roomcast was started without a configuration file to read again");
                    continue;
                };
                current = reload(current, path, &notifier, &shutdown).await?;
                fault_targets.send_if_modified(|targets| {
                    if targets.is_some() {
                        *targets = Some(current.fault_targets());
                    }
                    targets.is_some()
                });
                liveness.reset();
                events = current.agent.engine.subscribe();
                events_open = true;
                let line = status.line(&current).await;
                notifier.ready(&line);
                info!("reload done: {line}");
            }
            _ = watchdog_tick.tick(), if watchdog_every.is_some() => {
                let every = watchdog_every.unwrap_or_default();
                match alive(&current, &mut liveness, watchdog::engine_deadline(every)).await {
                    Ok(()) => notifier.watchdog(),
                    Err(why) => error!("watchdog: NOT telling systemd that roomcast is alive: {why}"),
                }
            }
            event = events.recv(), if events_open => match event {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    status.dirty = true;
                    housekeeping.activity(Instant::now());
                }
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            _ = status_tick.tick() => {
                if let Some(line) = status.refresh(&current).await {
                    notifier.status(&line);
                }
                if housekeeping.due(Instant::now()) {
                    tokio::task::spawn_blocking(memory::trim);
                }
            }
        }
    }

    notifier.stopping();
    info!("stopping: leaving every room");
    faults_stop.cancel();
    current.stop().await;
    info!("roomcast stopped");
    Ok(())
}

async fn next_reload(reloads: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match reloads {
        Some(reloads) => reloads.recv().await,
        None => std::future::pending().await,
    }
}

/// The liveness check behind every `WATCHDOG=1`.
async fn alive(
    current: &Generation,
    liveness: &mut MediaLiveness,
    deadline: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(deadline, current.agent.engine.state()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("the room engine is gone: {e}")),
        Err(_) => {
            return Err(format!(
                "the room engine did not answer within {deadline:?}"
            ));
        }
    }
    liveness.check(Instant::now(), &current.agent.media.probes())?;
    if !current.control.is_alive() {
        return Err("the MQTT control task has ended".into());
    }
    Ok(())
}

/// Reloads the configuration file. A broken file is refused and everything keeps running
/// as it was; a valid one is applied (see [`reload::Scope`]).
async fn reload(
    mut current: Generation,
    path: &PathBuf,
    notifier: &Notifier,
    shutdown: &CancellationToken,
) -> Result<Generation, RunError> {
    info!("reload requested: reading {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            error!(
                "reload refused: cannot read {} ({e}); the running configuration is kept",
                path.display()
            );
            return Ok(current);
        }
    };
    let config = match Config::parse(&text, path) {
        Ok(config) => config,
        Err(e) => {
            error!("reload refused, the running configuration is kept: {e}");
            return Ok(current);
        }
    };
    let old_table = current
        .text
        .as_deref()
        .and_then(|t| t.parse::<toml::Table>().ok());
    let new_table = text.parse::<toml::Table>().ok();
    let changed = match (&old_table, &new_table) {
        (Some(old), Some(new)) => reload::changed_keys(old, new),
        // The running configuration's text is not known: treat everything as changed.
        _ => vec!["(the whole file)".to_owned()],
    };
    let scope = reload::Scope::of(&changed);
    if scope == reload::Scope::Nothing {
        info!("reload: {} is unchanged; nothing to do", path.display());
        return Ok(current);
    }
    info!(
        "reload: changed {}; {}",
        changed.join(", "),
        scope.describe()
    );
    for warning in config.warnings() {
        warn!("{warning}");
    }
    match scope {
        reload::Scope::Nothing => Ok(current),
        reload::Scope::InPlace {
            control: restart_control,
            audio_processing,
            servers,
        } => {
            let control = if restart_control {
                match Control::new(&config) {
                    Ok(control) => Some(control),
                    Err(e) => {
                        error!("reload refused, the running configuration is kept: {e}");
                        return Ok(current);
                    }
                }
            } else {
                None
            };
            notifier.reloading();
            if audio_processing {
                match current
                    .agent
                    .media
                    .set_audio_processing(&config.audio_processing)
                {
                    Ok(()) => info!(
                        "reload: audio processing is now {}",
                        config.audio_processing
                    ),
                    Err(e) => error!(
                        "reload: the microphones' processing could not be changed ({e}); it stays as it was until the next restart of the source"
                    ),
                }
            }
            if servers {
                apply_servers(&current, &config, &changed, &old_table, &new_table).await;
            }
            if let Some(control) = control {
                // The old connection goes first (two connections with one client id would
                // take the broker session from each other): `offline`, then `online` again.
                let old = current.control;
                old.stop(CONTROL_SWAP).await;
                current.control = control.start(current.agent.engine.clone());
            }
            current.config = config;
            current.text = Some(text);
            Ok(current)
        }
        reload::Scope::Everything => {
            // Everything that can be checked is checked before anything stops.
            if let Err(e) = Control::new(&config) {
                error!("reload refused, the running configuration is kept: {e}");
                return Ok(current);
            }
            let media = match GstMedia::new(&config) {
                Ok(media) => Arc::new(media),
                Err(e) => {
                    error!("reload refused, the running configuration is kept: media: {e}");
                    return Ok(current);
                }
            };
            notifier.reloading();
            let started = Instant::now();
            let desired = current.stop().await;
            info!(
                "reload: left the rooms in {} ms; starting again with {desired}",
                started.elapsed().as_millis()
            );
            Generation::start(config, Some(text), Some(media), desired, None, shutdown).await
        }
    }
}

/// A reload changed `[janus.servers.*]` or `rooms.routes`: the rooms on the servers that
/// changed are logged in again where they now belong; nothing else is touched.
async fn apply_servers(
    current: &Generation,
    config: &Config,
    changed: &[String],
    old_table: &Option<toml::Table>,
    new_table: &Option<toml::Table>,
) {
    let (Some(old), Some(new)) = (old_table, new_table) else {
        // Not reached: without both files the scope is Everything.
        return;
    };
    let servers: Vec<ServerName> = reload::changed_servers(changed, old, new)
        .iter()
        .filter_map(|name| ServerName::parse(name).ok())
        .collect();
    match current.agent.reroute(config, servers).await {
        Ok(moved) if moved.is_empty() => {
            info!("reload: no room is on a server that changed; no room was touched")
        }
        Ok(moved) => info!(
            "reload: logging in again to {} room(s) on servers that changed [{}]; the others are not touched",
            moved.len(),
            join(&moved)
        ),
        Err(e) => warn!("reload: the room engine did not take the new servers: {e}"),
    }
}

/// Keeps `STATUS=` up to date without asking the engine more than once a second.
#[derive(Default)]
struct StatusReporter {
    last: String,
    dirty: bool,
    refreshed: Option<Instant>,
}

impl StatusReporter {
    async fn line(&mut self, current: &Generation) -> String {
        let line = match current.agent.engine.state().await {
            Ok(snapshot) => status::status_line(&snapshot),
            Err(_) => "the room engine is not answering".to_owned(),
        };
        self.last = line.clone();
        self.dirty = false;
        self.refreshed = Some(Instant::now());
        line
    }

    /// A new line when something happened (or 10 s passed) and the line changed.
    async fn refresh(&mut self, current: &Generation) -> Option<String> {
        let stale = self
            .refreshed
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if !self.dirty && !stale {
            return None;
        }
        let before = self.last.clone();
        let state = tokio::time::timeout(Duration::from_secs(1), self.line(current)).await;
        match state {
            Ok(line) if line != before => Some(line),
            _ => None,
        }
    }
}
