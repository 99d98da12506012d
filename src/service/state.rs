//! The desired state on disk: `state_dir/state.json` ([`crate::Config::state_file`]).
//!
//! ```json
//! {
//!   "version": 1,
//!   "rooms": [{"room_id": "bigclass", "user": {"user_id": "box-17", "user_name": "Room 101 camera"}},
//!             {"room_id": "staff", "user": {…}, "had_token": true}],
//!   "publishing": [{"stream_id": "box-17-main", "room_id": "bigclass", "channel": "main"}],
//!   "playing": [{"stream_id": "teacher", "room_id": "bigclass", "output": "display"}]
//! }
//! ```
//!
//! - Written atomically ([`StateStore::save`]): a temporary file in the same folder,
//!   fsync, rename over `state.json`, fsync of the folder. A crash (or `kill -9`, or a
//!   power cut) leaves either the old file or the new one, never a mix.
//! - Holds what the engine holds: the limits are the engine's own
//!   ([`crate::engine::limits`]), enforced when a command arrives, so every state the
//!   engine can reach is read back whole ([`parse_state`] of [`render_state`]).
//! - Read with [`salvage_state`], a pure function of the bytes (with [`parse_state`], its
//!   strict form, the fuzz targets). A file that is partly invalid, cut short or too
//!   large keeps what is valid — rooms first, then the streams of those rooms, up to the
//!   limits — and a copy of the original is set aside (`state.json.corrupt-<UTC time>`)
//!   with a warning naming what was left out. A file with nothing usable (not JSON, no or
//!   another `version`) is set aside and the agent starts with no rooms: never a crash.
//!   At most [`MAX_SET_ASIDE`] set-aside files are kept (the oldest go).
//! - A file that exists but cannot be read (permissions, an I/O error of the card) is
//!   not corrupt: it is left where it is, the agent starts with no rooms and says so,
//!   and the file is overwritten only once a command changes the rooms.
//! - No secret is ever in it (see [`crate::engine::desired`]): login tokens are not kept,
//!   only `had_token`.
//! - `version` changes when the meaning of a field does; a newer file is set aside, not
//!   half-understood.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, warn};

pub use crate::engine::desired::{DesiredPlay, DesiredPublish, DesiredRoom, DesiredState};
pub use crate::engine::limits::{MAX_ROOMS, MAX_STATE_BYTES, MAX_STREAMS};

/// The version this roomcast writes and reads.
pub const STATE_VERSION: u64 = 1;
/// At most this many set-aside files (`state.json.corrupt-*`) are kept in `state_dir`.
pub const MAX_SET_ASIDE: usize = 5;

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the file is {0} bytes; a state file is at most {MAX_STATE_BYTES} bytes")]
    TooLarge(usize),
    #[error("not a state file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no `version` field")]
    NoVersion,
    #[error("version {0} is not supported (this roomcast reads version {STATE_VERSION})")]
    UnsupportedVersion(String),
    #[error("{0}")]
    Invalid(String),
}

/// Only `version`, read first so that a newer file is reported as such, not as
/// "unknown field".
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: u64,
    #[serde(default)]
    rooms: Vec<DesiredRoom>,
    #[serde(default)]
    publishing: Vec<DesiredPublish>,
    #[serde(default)]
    playing: Vec<DesiredPlay>,
}

/// Parses a state file. Pure: no I/O, no panics, whatever the bytes. Ids are checked by
/// the engine's own rules (a room id that login_room would refuse is refused here too);
/// streams must name a room of the file; ids are unique; sizes are bounded.
pub fn parse_state(bytes: &[u8]) -> Result<DesiredState, StateError> {
    if bytes.len() > MAX_STATE_BYTES {
        return Err(StateError::TooLarge(bytes.len()));
    }
    // serde reads a struct from a JSON array too (fields by position): a state file is
    // an object, as the salvaging reader and every roomcast that wrote one agree.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(StateError::Invalid(
            "the file holds a JSON array; a state file is a JSON object".to_owned(),
        ));
    }
    let probe: VersionProbe = serde_json::from_slice(bytes)?;
    match probe.version {
        None => return Err(StateError::NoVersion),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(STATE_VERSION) => {}
        Some(other) => return Err(StateError::UnsupportedVersion(other.to_string())),
    }
    let file: FileV1 = serde_json::from_slice(bytes)?;
    let state = DesiredState {
        rooms: file.rooms,
        publishing: file.publishing,
        playing: file.playing,
    };
    check(&state)?;
    Ok(state)
}

fn check(state: &DesiredState) -> Result<(), StateError> {
    let invalid = |message: String| Err(StateError::Invalid(message));
    if state.rooms.len() > MAX_ROOMS {
        return invalid(format!("{} rooms; at most {MAX_ROOMS}", state.rooms.len()));
    }
    let streams = state.publishing.len() + state.playing.len();
    if streams > MAX_STREAMS {
        return invalid(format!("{streams} streams; at most {MAX_STREAMS}"));
    }
    for (i, room) in state.rooms.iter().enumerate() {
        if state.rooms[..i].iter().any(|r| r.room_id == room.room_id) {
            return invalid(format!("room `{}` is listed twice", room.room_id));
        }
    }
    let has_room = |id: &crate::engine::RoomId| state.rooms.iter().any(|r| &r.room_id == id);
    for (i, p) in state.publishing.iter().enumerate() {
        if !has_room(&p.room_id) {
            return invalid(format!(
                "published stream `{}` is in room `{}`, which is not in `rooms`",
                p.stream_id, p.room_id
            ));
        }
        if state.publishing[..i]
            .iter()
            .any(|q| q.stream_id == p.stream_id)
        {
            return invalid(format!(
                "published stream `{}` is listed twice",
                p.stream_id
            ));
        }
    }
    for (i, p) in state.playing.iter().enumerate() {
        if !has_room(&p.room_id) {
            return invalid(format!(
                "played stream `{}` is in room `{}`, which is not in `rooms`",
                p.stream_id, p.room_id
            ));
        }
        if state.playing[..i]
            .iter()
            .any(|q| q.stream_id == p.stream_id)
        {
            return invalid(format!("played stream `{}` is listed twice", p.stream_id));
        }
    }
    Ok(())
}

/// What [`salvage_state`] kept of a state file, and what it left out (each with why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvaged {
    pub state: DesiredState,
    pub left_out: Vec<String>,
}

/// The parts of a file as found, before any rule: raw entries, so that one bad entry
/// costs only itself.
#[derive(Default)]
struct Found {
    version: Option<Value>,
    rooms: Vec<Value>,
    publishing: Vec<Value>,
    playing: Vec<Value>,
    unknown: Vec<String>,
}

/// Reads the top-level object key by key into a [`Found`]. Entries are stored as they
/// are read, so a file cut short (or broken) part way keeps everything before the cut.
struct FileSeed<'a>(&'a mut Found);

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a state file object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => self.0.version = Some(map.next_value()?),
                "rooms" => map.next_value_seed(ListSeed(&mut self.0.rooms))?,
                "publishing" => map.next_value_seed(ListSeed(&mut self.0.publishing))?,
                "playing" => map.next_value_seed(ListSeed(&mut self.0.playing))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    self.0.unknown.push(key);
                }
            }
        }
        Ok(())
    }
}

struct ListSeed<'a>(&'a mut Vec<Value>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(entry) = seq.next_element::<Value>()? {
            self.0.push(entry);
        }
        Ok(())
    }
}

/// Reads what can be used of a state file: every valid room (the first [`MAX_ROOMS`]),
/// then every valid stream of those rooms (published first, [`MAX_STREAMS`] in all). Pure:
/// no I/O, no panics, whatever the bytes. Fails only when nothing can be trusted: not a
/// JSON object, no `version`, or a version this roomcast does not read. For a file
/// [`parse_state`] accepts, the same state with nothing left out.
pub fn salvage_state(bytes: &[u8]) -> Result<Salvaged, StateError> {
    let mut left_out = Vec::new();
    let bytes = if bytes.len() > MAX_STATE_BYTES {
        left_out.push(format!(
            "everything after the first {MAX_STATE_BYTES} bytes (the file is larger)"
        ));
        &bytes[..MAX_STATE_BYTES]
    } else {
        bytes
    };
    let mut found = Found::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = FileSeed(&mut found)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match (&found.version, read) {
        (None, Err(e)) => return Err(StateError::Json(e)),
        (None, Ok(())) => return Err(StateError::NoVersion),
        (Some(Value::Number(n)), read) if n.as_u64() == Some(STATE_VERSION) => {
            if let Err(e) = read {
                left_out.push(format!("what follows a break in the file ({e})"));
            }
        }
        (Some(other), _) => return Err(StateError::UnsupportedVersion(other.to_string())),
    }
    for key in &found.unknown {
        left_out.push(format!("the unknown field `{key}`"));
    }

    let mut state = DesiredState::default();
    for (i, raw) in found.rooms.into_iter().enumerate() {
        match DesiredRoom::deserialize(raw) {
            Err(e) => left_out.push(format!("room #{}: {e}", i + 1)),
            Ok(room) if state.rooms.iter().any(|r| r.room_id == room.room_id) => {
                left_out.push(format!("room `{}`: listed twice", room.room_id));
            }
            Ok(room) if state.rooms.len() >= MAX_ROOMS => {
                left_out.push(format!(
                    "room `{}`: more than {MAX_ROOMS} rooms",
                    room.room_id
                ));
            }
            Ok(room) => state.rooms.push(room),
        }
    }
    salvage_streams(
        found.publishing,
        "published",
        &state.rooms,
        0,
        &mut state.publishing,
        &mut left_out,
    );
    let published = state.publishing.len();
    salvage_streams(
        found.playing,
        "played",
        &state.rooms,
        published,
        &mut state.playing,
        &mut left_out,
    );
    Ok(Salvaged { state, left_out })
}

/// A published or played stream entry of the state file.
trait StreamEntry: for<'de> Deserialize<'de> {
    fn stream_id(&self) -> &crate::engine::StreamId;
    fn room_id(&self) -> &crate::engine::RoomId;
}

impl StreamEntry for DesiredPublish {
    fn stream_id(&self) -> &crate::engine::StreamId {
        &self.stream_id
    }
    fn room_id(&self) -> &crate::engine::RoomId {
        &self.room_id
    }
}

impl StreamEntry for DesiredPlay {
    fn stream_id(&self) -> &crate::engine::StreamId {
        &self.stream_id
    }
    fn room_id(&self) -> &crate::engine::RoomId {
        &self.room_id
    }
}

/// Keeps the valid `raws` (`what`: "published" or "played") in `kept`: each must parse,
/// be in a kept room, be listed once, and fit [`MAX_STREAMS`] with the `others` streams
/// already kept. What is left out is said in `left_out`.
fn salvage_streams<T: StreamEntry>(
    raws: Vec<Value>,
    what: &str,
    rooms: &[DesiredRoom],
    others: usize,
    kept: &mut Vec<T>,
    left_out: &mut Vec<String>,
) {
    for (i, raw) in raws.into_iter().enumerate() {
        let streams = others + kept.len();
        match T::deserialize(raw) {
            Err(e) => left_out.push(format!("{what} stream #{}: {e}", i + 1)),
            Ok(s) if !rooms.iter().any(|r| &r.room_id == s.room_id()) => left_out.push(format!(
                "{what} stream `{}`: its room `{}` is not kept",
                s.stream_id(),
                s.room_id()
            )),
            Ok(s) if kept.iter().any(|k| k.stream_id() == s.stream_id()) => {
                left_out.push(format!("{what} stream `{}`: listed twice", s.stream_id()));
            }
            Ok(s) if streams >= MAX_STREAMS => left_out.push(format!(
                "{what} stream `{}`: more than {MAX_STREAMS} streams",
                s.stream_id()
            )),
            Ok(s) => kept.push(s),
        }
    }
}

/// The file's bytes for `state` (what [`parse_state`] reads back).
pub fn render_state(state: &DesiredState) -> Vec<u8> {
    let file = FileV1 {
        version: STATE_VERSION,
        rooms: state.rooms.clone(),
        publishing: state.publishing.clone(),
        playing: state.playing.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    bytes
}

/// What [`StateStore::load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No state file: a first start, or nothing was ever joined.
    Missing,
    Read(DesiredState),
    /// Part of the file could not be used: `state` is what could, and is restored. The
    /// original was set aside as `copy` (when that worked); the file now holds `state`.
    Partly {
        state: DesiredState,
        left_out: Vec<String>,
        copy: Option<PathBuf>,
    },
    /// Nothing of the file could be used; it was renamed to `to` (when that worked).
    SetAside {
        why: String,
        to: Option<PathBuf>,
    },
    /// The file exists but cannot be read (permissions, an I/O error). It is left as it
    /// is: not corrupt, perhaps readable again after a fix.
    Unreadable {
        why: String,
    },
}

impl Loaded {
    /// The state to restore: empty unless one (or part of one) was read.
    pub fn state(&self) -> DesiredState {
        match self {
            Loaded::Read(state) | Loaded::Partly { state, .. } => state.clone(),
            _ => DesiredState::default(),
        }
    }
}

/// Reads at most `MAX_STATE_BYTES + 1` bytes: enough to know a file is too large, never
/// a whole huge one in memory.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_STATE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The state file of one `state_dir`.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.path.with_file_name(name)
    }

    /// Reads the saved state, keeping what is valid of a partly invalid file. A missing
    /// file is no error; an unreadable one is left alone; one with nothing usable is set
    /// aside. Never fails.
    pub fn load(&self) -> Loaded {
        self.load_with(read_bounded)
    }

    fn load_with(&self, read: impl FnOnce(&Path) -> io::Result<Vec<u8>>) -> Loaded {
        // A crash in the middle of a save leaves the temporary file: it is not the state.
        let temp = self.temp_path();
        if temp.exists() {
            debug!("removing {} left by an interrupted save", temp.display());
            let _ = fs::remove_file(&temp);
        }
        let why = match read(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
            // A folder in its place is nobody's state: set aside like a corrupt file.
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => format!("cannot be read: {e}"),
            Err(e) => {
                let why = format!("cannot be read: {e}");
                warn!(
                    "the state file {} {why}; starting with no rooms. It is left as it is \
                     (not corrupt): fix its owner and permissions (the service runs as the \
                     roomcast user) or check the storage, then restart roomcast. It is \
                     overwritten only once a command changes the rooms",
                    self.path.display()
                );
                return Loaded::Unreadable { why };
            }
            Ok(bytes) => match salvage_state(&bytes) {
                Ok(Salvaged { state, left_out }) if left_out.is_empty() => {
                    return Loaded::Read(state);
                }
                Ok(Salvaged { state, left_out }) => return self.keep_part(state, left_out),
                Err(e) => e.to_string(),
            },
        };
        let aside = self.aside_path();
        let to = match fs::rename(&self.path, &aside) {
            Ok(()) => {
                warn!(
                    "the state file {} {why}: set aside as {}; starting with no rooms",
                    self.path.display(),
                    aside.display()
                );
                self.prune_set_aside();
                Some(aside)
            }
            Err(e) => {
                warn!(
                    "the state file {} {why}, and it cannot be set aside ({e}); starting with no rooms",
                    self.path.display()
                );
                None
            }
        };
        Loaded::SetAside { why, to }
    }

    /// Sets the original aside (a hard link, or a copy where links are not possible)
    /// and replaces the file with the part kept: at no moment is there no state file.
    fn keep_part(&self, state: DesiredState, left_out: Vec<String>) -> Loaded {
        let aside = self.aside_path();
        let copy = match fs::hard_link(&self.path, &aside)
            .or_else(|_| fs::copy(&self.path, &aside).map(|_| ()))
        {
            Ok(()) => Some(aside),
            Err(e) => {
                warn!(
                    "cannot keep a copy of the state file {} as {} ({e})",
                    self.path.display(),
                    aside.display()
                );
                None
            }
        };
        let shown: Vec<&str> = left_out.iter().take(5).map(String::as_str).collect();
        let more = left_out.len().saturating_sub(shown.len());
        warn!(
            "the state file {} is partly invalid: restoring {state}; left out {} item(s): {}{}. \
             The original is set aside as {}",
            self.path.display(),
            left_out.len(),
            shown.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            },
            copy.as_ref()
                .map_or_else(|| "(nowhere)".to_owned(), |p| p.display().to_string())
        );
        if let Err(e) = self.save(&state) {
            warn!(
                "cannot write the kept part back to {} ({e}); it is written again once the rooms change",
                self.path.display()
            );
        }
        self.prune_set_aside();
        Loaded::Partly {
            state,
            left_out,
            copy,
        }
    }

    /// Removes the oldest set-aside files beyond [`MAX_SET_ASIDE`].
    fn prune_set_aside(&self) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut prefix = self.path.file_name().unwrap_or_default().to_os_string();
        prefix.push(".corrupt-");
        let prefix = prefix.to_string_lossy().into_owned();
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut aside: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        if aside.len() <= MAX_SET_ASIDE {
            return;
        }
        aside.sort();
        for (_, old) in &aside[..aside.len() - MAX_SET_ASIDE] {
            match fs::remove_file(old) {
                Ok(()) => info!(
                    "removed the old set-aside state file {} (at most {MAX_SET_ASIDE} are kept)",
                    old.display()
                ),
                Err(e) => warn!(
                    "cannot remove the old set-aside state file {}: {e}",
                    old.display()
                ),
            }
        }
    }

    /// `state.json.corrupt-20250114T083000Z` (a counter is added if that exists).
    fn aside_path(&self) -> PathBuf {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".corrupt-{}", utc_stamp(secs)));
        let first = self.path.with_file_name(&name);
        if !first.exists() {
            return first;
        }
        (1..)
            .map(|n| {
                let mut numbered = name.clone();
                numbered.push(format!("-{n}"));
                self.path.with_file_name(numbered)
            })
            .find(|p| !p.exists())
            .unwrap_or(first)
    }

    /// Writes `state` atomically: temporary file in the same folder, fsync, rename,
    /// fsync of the folder. Creates the folder (0700) when it is missing.
    pub fn save(&self, state: &DesiredState) -> io::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            info!("created the state folder {}", dir.display());
        }
        let temp = self.temp_path();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&render_state(state))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, &self.path)?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds (UTC), without a date crate.
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Channel, PlayOutput, RoomId, StreamId, User};

    fn sample() -> DesiredState {
        let user = User::parse("box-17", "Room 101 camera").unwrap();
        DesiredState {
            rooms: vec![
                DesiredRoom {
                    room_id: RoomId::parse("bigclass").unwrap(),
                    server: None,
                    user: user.clone(),
                    had_token: false,
                },
                DesiredRoom {
                    room_id: RoomId::parse("staff").unwrap(),
                    server: None,
                    user,
                    had_token: true,
                },
            ],
            publishing: vec![DesiredPublish {
                stream_id: StreamId::parse("box-17-main").unwrap(),
                room_id: RoomId::parse("bigclass").unwrap(),
                channel: Channel::Main,
            }],
            playing: vec![DesiredPlay {
                stream_id: StreamId::parse("teacher").unwrap(),
                room_id: RoomId::parse("staff").unwrap(),
                output: PlayOutput::Display,
            }],
        }
    }

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-state-{label}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_rendered_state_parses_back_to_itself() {
        let state = sample();
        let bytes = render_state(&state);
        assert_eq!(parse_state(&bytes).unwrap(), state);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert!(text.contains("\"had_token\": true"), "{text}");
        assert_eq!(
            text.matches("had_token").count(),
            1,
            "false is left out: {text}"
        );
        assert_eq!(
            parse_state(br#"{"version": 1}"#).unwrap(),
            DesiredState::default()
        );
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not a state file"),
            (b"\xff\xfe", "not a state file"),
            (b"[1, 2]", "a state file is a JSON object"),
            // serde would read `[1]` as {"version": 1} (fuzzing found it: the strict
            // reader took what the salvaging one refuses).
            (b"[1]", "a state file is a JSON object"),
            (b" \n[1, [], [], []]", "a state file is a JSON object"),
            (b"{}", "no `version`"),
            (br#"{"version": 2, "shiny": true}"#, "version 2 is not supported"),
            (br#"{"version": "1"}"#, "version \"1\" is not supported"),
            (br#"{"version": 1, "rooms": {}}"#, "not a state file"),
            (br#"{"version": 1, "extra": 1}"#, "unknown field `extra`"),
            (
                br#"{"version": 1, "rooms": [{"room_id": "", "user": {"user_id": "a", "user_name": "b"}}]}"#,
                "room_id",
            ),
            (
                br#"{"version": 1, "rooms": [{"room_id": "r", "user": {"user_id": "a/b", "user_name": "b"}}]}"#,
                "user_id",
            ),
            (
                br#"{"version": 1, "rooms": [{"room_id": "r", "user": {"user_id": "a", "user_name": "b"}, "token": "x"}]}"#,
                "unknown field `token`",
            ),
            (
                br#"{"version": 1, "publishing": [{"stream_id": "s", "room_id": "r", "channel": "main"}]}"#,
                "not in `rooms`",
            ),
            (
                br#"{"version": 1, "rooms": [{"room_id": "r", "user": {"user_id": "a", "user_name": "b"}}, {"room_id": "r", "user": {"user_id": "a", "user_name": "b"}}]}"#,
                "listed twice",
            ),
            (
                br#"{"version": 1, "rooms": [{"room_id": "r", "user": {"user_id": "a", "user_name": "b"}}], "playing": [{"stream_id": "s", "room_id": "r", "output": "tv"}]}"#,
                "unknown variant `tv`",
            ),
        ];
        for (bytes, expected) in cases {
            let error = parse_state(bytes).expect_err("refused").to_string();
            assert!(
                error.contains(expected),
                "{:?}: {error:?} lacks {expected:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let huge = vec![b' '; MAX_STATE_BYTES + 1];
        assert!(matches!(parse_state(&huge), Err(StateError::TooLarge(_))));
        let deep = "[".repeat(100_000);
        assert!(parse_state(deep.as_bytes()).is_err(), "no stack overflow");
    }

    #[test]
    fn save_is_atomic_and_private_and_load_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("save");
        let store = StateStore::new(dir.join("sub").join("state.json"));
        assert!(matches!(store.load(), Loaded::Missing));
        store.save(&sample()).unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(dir.join("sub")).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert!(!store.temp_path().exists());
        match store.load() {
            Loaded::Read(state) => assert_eq!(state, sample()),
            other => panic!("{other:?}"),
        }
        // An interrupted save leaves a temporary file: ignored and removed.
        fs::write(store.temp_path(), b"{\"vers").unwrap();
        assert!(matches!(store.load(), Loaded::Read(_)));
        assert!(!store.temp_path().exists());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_corrupt_file_is_set_aside_never_a_crash() {
        let dir = temp_dir("corrupt");
        let store = StateStore::new(dir.join("state.json"));
        fs::write(store.path(), b"{\"rooms\": [").unwrap();
        let Loaded::SetAside { why, to: Some(to) } = store.load() else {
            panic!("set aside")
        };
        assert!(why.contains("not a state file"), "{why}");
        assert!(!store.path().exists());
        let name = to.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("state.json.corrupt-20"), "{name}");
        assert_eq!(fs::read(&to).unwrap(), b"{\"rooms\": [");
        // A second corrupt file in the same second gets its own name.
        fs::write(store.path(), b"garbage").unwrap();
        let Loaded::SetAside {
            to: Some(second), ..
        } = store.load()
        else {
            panic!("set aside")
        };
        assert_ne!(second, to);
        // A folder where the file should be cannot be read: set aside too.
        fs::create_dir(store.path()).unwrap();
        assert!(matches!(store.load(), Loaded::SetAside { to: Some(_), .. }));
        assert!(matches!(store.load(), Loaded::Missing));
        fs::remove_dir_all(&dir).ok();
    }

    fn user(n: usize) -> User {
        User::parse(format!("box-{n}"), "Box").unwrap()
    }

    fn room(id: &str) -> DesiredRoom {
        DesiredRoom {
            room_id: RoomId::parse(id).unwrap(),
            server: None,
            user: user(17),
            had_token: false,
        }
    }

    fn play(stream: &str, room: &str) -> DesiredPlay {
        DesiredPlay {
            stream_id: StreamId::parse(stream).unwrap(),
            room_id: RoomId::parse(room).unwrap(),
            output: PlayOutput::None,
        }
    }

    /// The limits in `engine::limits` agree with the file: the largest state the engine
    /// can hold — every room and stream there may be, every id at its longest and made
    /// of the characters JSON escapes — renders within MAX_STATE_BYTES and reads back.
    #[test]
    fn a_full_state_fits_in_the_state_file() {
        use crate::engine::types::{ROOM_ID_LIMIT, STREAM_ID_MAX, USER_ID_LIMIT, USER_NAME_LIMIT};
        let long_room = |n: usize| {
            let id = format!("{n:02}{}", "\\".repeat(ROOM_ID_LIMIT - 3));
            RoomId::parse(id).unwrap()
        };
        let user = User::parse(
            "\\".repeat(USER_ID_LIMIT - 1),
            "\"".repeat(USER_NAME_LIMIT - 1),
        )
        .unwrap();
        let rooms: Vec<DesiredRoom> = (0..MAX_ROOMS)
            .map(|n| DesiredRoom {
                room_id: long_room(n),
                server: None,
                user: user.clone(),
                had_token: true,
            })
            .collect();
        let stream = |n: usize| {
            let id = format!("{n:03}{}", "x".repeat(STREAM_ID_MAX - 3));
            StreamId::parse(id).unwrap()
        };
        let half = MAX_STREAMS / 2;
        let state = DesiredState {
            publishing: (0..half)
                .map(|n| DesiredPublish {
                    stream_id: stream(n),
                    room_id: long_room(n % MAX_ROOMS),
                    channel: Channel::Main,
                })
                .collect(),
            playing: (half..MAX_STREAMS)
                .map(|n| DesiredPlay {
                    stream_id: stream(n),
                    room_id: long_room(n % MAX_ROOMS),
                    output: PlayOutput::Display,
                })
                .collect(),
            rooms,
        };
        let bytes = render_state(&state);
        println!(
            "the largest state: {} bytes of {MAX_STATE_BYTES}",
            bytes.len()
        );
        assert!(bytes.len() <= MAX_STATE_BYTES / 2, "{} bytes", bytes.len());
        assert_eq!(parse_state(&bytes).unwrap(), state);
        let salvaged = salvage_state(&bytes).unwrap();
        assert!(salvaged.left_out.is_empty(), "{:?}", salvaged.left_out);
        assert_eq!(salvaged.state, state);
    }

    /// The issue's file: 300 played streams in one room. It used to be set aside whole
    /// (no rooms after a restart); now the room and the first 256 streams are kept.
    #[test]
    fn too_many_streams_keep_the_room_and_the_first_streams() {
        let state = DesiredState {
            rooms: vec![room("bigclass")],
            playing: (0..300)
                .map(|n| play(&format!("s{n}"), "bigclass"))
                .collect(),
            ..Default::default()
        };
        let bytes = render_state(&state);
        assert!(parse_state(&bytes).is_err(), "the strict reader refuses it");
        let Salvaged {
            state: kept,
            left_out,
        } = salvage_state(&bytes).unwrap();
        assert_eq!(kept.rooms, vec![room("bigclass")]);
        assert_eq!(kept.playing.len(), MAX_STREAMS);
        assert_eq!(kept.playing[..], state.playing[..MAX_STREAMS]);
        assert_eq!(left_out.len(), 300 - MAX_STREAMS);
        assert!(
            left_out[0].contains("more than 256 streams"),
            "{left_out:?}"
        );
    }

    #[test]
    fn a_partly_invalid_file_keeps_what_is_valid_rooms_first() {
        let text = br#"{"version": 1, "color": "red",
            "playing": [{"stream_id": "a", "room_id": "r1", "output": "none"},
                        {"stream_id": "b", "room_id": "gone", "output": "none"},
                        {"stream_id": "c", "room_id": "r1", "output": "tv"}],
            "rooms": [{"room_id": "r1", "user": {"user_id": "box-17", "user_name": "Box"}},
                      {"room_id": "", "user": {"user_id": "box-17", "user_name": "Box"}},
                      {"room_id": "r1", "user": {"user_id": "box-17", "user_name": "Box"}},
                      {"room_id": "r2", "user": {"user_id": "box-17", "user_name": "Box"}, "token": "x"},
                      7,
                      {"room_id": "r3", "user": {"user_id": "box-17", "user_name": "Box"}}]}"#;
        let Salvaged { state, left_out } = salvage_state(text).unwrap();
        assert_eq!(state.rooms, vec![room("r1"), room("r3")]);
        assert_eq!(state.playing, vec![play("a", "r1")]);
        let all = left_out.join("\n");
        for expected in [
            "unknown field `color`",
            "room #2",
            "room `r1`: listed twice",
            "unknown field `token`",
            "room #5",
            "`gone` is not kept",
            "unknown variant `tv`",
        ] {
            assert!(all.contains(expected), "{expected:?} not in {all}");
        }
        // Cut short (a power cut on a file system without atomic rename, or a file too
        // large): what comes before the cut is kept.
        let full = render_state(&DesiredState {
            rooms: vec![room("r1"), room("r2")],
            playing: vec![play("a", "r1"), play("b", "r2")],
            ..Default::default()
        });
        let text = String::from_utf8(full.clone()).unwrap();
        let cut = text.find("\"b\"").unwrap();
        let Salvaged { state, left_out } = salvage_state(&full[..cut]).unwrap();
        assert_eq!(state.rooms, vec![room("r1"), room("r2")]);
        assert_eq!(state.playing, vec![play("a", "r1")]);
        assert!(left_out[0].contains("a break in the file"), "{left_out:?}");
        let mut huge = full.clone();
        huge.truncate(full.len() - 3);
        huge.extend(std::iter::repeat_n(b' ', MAX_STATE_BYTES));
        let Salvaged { state, left_out } = salvage_state(&huge).unwrap();
        assert_eq!(state.rooms.len(), 2);
        assert_eq!(state.playing.len(), 2);
        assert!(left_out[0].contains("after the first"), "{left_out:?}");
        // Nothing to trust: refused whole.
        for bad in [
            &b"[]"[..],
            b"{}",
            br#"{"version": 2, "rooms": []}"#,
            b"\xff",
        ] {
            assert!(
                salvage_state(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn load_keeps_the_valid_part_and_sets_the_original_aside() {
        let dir = temp_dir("partly");
        let store = StateStore::new(dir.join("state.json"));
        let state = DesiredState {
            rooms: vec![room("bigclass")],
            playing: (0..300)
                .map(|n| play(&format!("s{n}"), "bigclass"))
                .collect(),
            ..Default::default()
        };
        let original = render_state(&state);
        fs::write(store.path(), &original).unwrap();
        let Loaded::Partly {
            state: kept,
            left_out,
            copy: Some(copy),
        } = store.load()
        else {
            panic!("partly")
        };
        assert_eq!(kept.rooms.len(), 1);
        assert_eq!(kept.playing.len(), MAX_STREAMS);
        assert_eq!(left_out.len(), 44);
        assert_eq!(
            fs::read(&copy).unwrap(),
            original,
            "the original is kept aside"
        );
        // The file now holds the part kept: the next start reads it as it is.
        match store.load() {
            Loaded::Read(again) => assert_eq!(again, kept),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).ok();
    }

    /// EACCES or EIO is not corruption: the file stays where it is, untouched.
    #[test]
    fn an_unreadable_file_is_left_alone() {
        let dir = temp_dir("unreadable");
        let store = StateStore::new(dir.join("state.json"));
        store.save(&sample()).unwrap();
        for errno in [libc::EACCES, libc::EIO] {
            let loaded = store.load_with(|_| Err(io::Error::from_raw_os_error(errno)));
            let Loaded::Unreadable { why } = &loaded else {
                panic!("{loaded:?}")
            };
            assert!(why.contains("cannot be read"), "{why}");
            assert_eq!(loaded.state(), DesiredState::default());
            assert_eq!(
                parse_state(&fs::read(store.path()).unwrap()).unwrap(),
                sample()
            );
        }
        let entries = fs::read_dir(&dir).unwrap().count();
        assert_eq!(entries, 1, "nothing set aside");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn set_aside_files_are_bounded() {
        let dir = temp_dir("bounded");
        let store = StateStore::new(dir.join("state.json"));
        for n in 0..MAX_SET_ASIDE + 4 {
            fs::write(store.path(), format!("garbage {n}")).unwrap();
            assert!(matches!(store.load(), Loaded::SetAside { to: Some(_), .. }));
        }
        let mut aside: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        aside.sort();
        assert_eq!(aside.len(), MAX_SET_ASIDE, "{aside:?}");
        assert!(
            aside.contains(&format!("garbage {}", MAX_SET_ASIDE + 3)),
            "the newest is kept"
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_736_843_400), "20250114T083000Z");
    }
}
