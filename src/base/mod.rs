//! Cross-cutting pieces: backoff, secrets, logging setup, TLS roots, bounded queues, the address
//! watch, and the BLK1 latency stamp's layout (which the config checks and media paints).

pub mod backoff;
pub mod logging;
pub mod lossy;
pub mod netwatch;
pub mod secret;
pub mod stamp;
pub mod tls;
