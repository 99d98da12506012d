//! The config loader: any text is a valid `Config` or a `ConfigError` that names the
//! file (and, where it can, the line and the key), never a panic. `validate()` looks at
//! the filesystem for the TLS files a config names; that is harmless here.
//!
//! Shared by the fuzz target and the root test suite (`tests/fuzz_seeds.rs`), which
//! replays the seeds and every past crash on each `cargo test`.

use std::path::Path;

use roomcast::config::{Config, ConfigError};

pub fn check(data: &[u8]) {
    // The loader reads the file with read_to_string: only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            // What `run` and `check-config` do with a valid config.
            assert!(config.validate().is_empty());
            let _ = config.summary();
            let _ = config.warnings();
            let _ = config.engine_settings();
            let _ = config.state_file();
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.toml"), "{message}");
            match e {
                ConfigError::Parse { line, column, .. } => {
                    let lines = text.split('\n').count();
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}");
                    assert!(column >= 1);
                }
                ConfigError::Invalid { problems, .. } => {
                    assert!(!problems.is_empty());
                    for p in problems {
                        assert!(!p.message.is_empty());
                        if let Some(line) = p.line {
                            assert!(line >= 1 && line <= text.split('\n').count());
                        }
                    }
                }
                ConfigError::Read { .. } => panic!("parse never reads a file"),
            }
        }
    }
}
