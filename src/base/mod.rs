//! Cross-cutting pieces: secrets, logging setup.

pub mod logging;
pub mod netwatch;
pub mod secret;
