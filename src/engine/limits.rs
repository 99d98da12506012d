//! Every limit on how much the box holds, in one place. The engine refuses a command that
//! would go past one when the command arrives (with a code, see [`super::ErrorCode`]);
//! the state file ([`crate::service::state`]) reads back everything up to the same limits.
//! So what the engine accepts, a restart restores, and what a restart restores, the
//! engine could have accepted.
//!
//! The identifier lengths live with their types ([`super::types`]); what they add up to
//! is checked here (`a_full_state_fits_in_the_state_file`).

/// Rooms at once (multi-room mode; `rooms.max_rooms` may only lower it).
pub const MAX_ROOMS: usize = 32;
/// Streams at once, published and played together.
pub const MAX_STREAMS: usize = 256;
/// The largest state file read. A state holding [`MAX_ROOMS`] rooms and [`MAX_STREAMS`]
/// streams, every identifier at its longest, renders to 180 KiB (measured): this leaves room
/// for hand edits and never refuses a file the box wrote.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;
