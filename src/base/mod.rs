//! Cross-cutting pieces: secrets, logging setup.

pub mod logging;
pub mod lossy;
pub mod netwatch;
pub mod secret;
pub mod tls;
