//! A string that must never reach a log line or a serialized state.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A password, token, API secret or key.
///
/// `Debug` and `Display` print `***`, and the type deliberately does not implement
/// `Serialize`: the only way to the value is [`Secret::expose`], which call sites use
/// exactly where the value goes onto the wire. Its bytes are overwritten with zeros when
/// it is dropped, so a freed secret is not left in the heap for a core file or a later
/// allocation to show.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that sends it to its peer.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroize_clears_a_string_in_place() {
        // What Drop does, on a string whose buffer can still be looked at.
        let mut value = String::from("hunter2");
        let (ptr, len) = (value.as_ptr(), value.len());
        zeroize::Zeroize::zeroize(&mut value);
        assert!(value.is_empty());
        // SAFETY: zeroize keeps the allocation (it clears, then truncates), so the
        // `len` bytes at `ptr` are still owned by `value`.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        assert!(bytes.iter().all(|&b| b == 0), "{bytes:?}");
    }

    #[test]
    fn never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
