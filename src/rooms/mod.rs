//! Where rooms live: the SFU backends. Janus is the one roomcast speaks.

pub mod janus;
