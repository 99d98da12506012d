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
//! - Read with [`parse_state`], a pure function of the bytes (the fuzz target). A file
//!   that cannot be read or parsed is renamed aside (`state.json.corrupt-<UTC time>`)
//!   with a warning and the agent starts with no rooms: never a crash.
//! - No secret is ever in it (see [`crate::engine::desired`]): login tokens are not kept,
//!   only `had_token`.
//! - `version` changes when the meaning of a field does; a newer file is set aside, not
//!   half-understood.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

pub use crate::engine::desired::{DesiredPlay, DesiredPublish, DesiredRoom, DesiredState};

/// The version this roomcast writes and reads.
pub const STATE_VERSION: u64 = 1;
/// A state file larger than this is not read (a real one is a few KiB).
pub const MAX_STATE_BYTES: usize = 1024 * 1024;
/// At most this many rooms (the config's `rooms.max_rooms` limit).
pub const MAX_ROOMS: usize = crate::config::MAX_ROOMS_LIMIT;
/// At most this many published plus played streams.
pub const MAX_STREAMS: usize = 256;

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
    /// The file could not be used; it was renamed to `to` (when that worked).
    SetAside {
        why: String,
        to: Option<PathBuf>,
    },
}

impl Loaded {
    /// The state to restore: empty unless one was read.
    pub fn state(&self) -> DesiredState {
        match self {
            Loaded::Read(state) => state.clone(),
            _ => DesiredState::default(),
        }
    }
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

    /// Reads the saved state. A missing file is no error; an unreadable or corrupt one
    /// is set aside with a warning. Never fails.
    pub fn load(&self) -> Loaded {
        // A crash in the middle of a save leaves the temporary file: it is not the state.
        let temp = self.temp_path();
        if temp.exists() {
            debug!("removing {} left by an interrupted save", temp.display());
            let _ = fs::remove_file(&temp);
        }
        let why = match fs::read(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => format!("cannot be read: {e}"),
            Ok(bytes) => match parse_state(&bytes) {
                Ok(state) => return Loaded::Read(state),
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
                    user: user.clone(),
                    had_token: false,
                },
                DesiredRoom {
                    room_id: RoomId::parse("staff").unwrap(),
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
            (b"[1, 2]", "not a state file"),
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
        fs::write(store.path(), b"{\"version\": 1, \"rooms\": [").unwrap();
        let Loaded::SetAside { why, to: Some(to) } = store.load() else {
            panic!("set aside")
        };
        assert!(why.contains("not a state file"), "{why}");
        assert!(!store.path().exists());
        let name = to.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("state.json.corrupt-20"), "{name}");
        assert_eq!(fs::read(&to).unwrap(), b"{\"version\": 1, \"rooms\": [");
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

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_736_843_400), "20250114T083000Z");
    }
}
