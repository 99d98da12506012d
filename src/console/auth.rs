//! Who may use the console: HTTP Basic authentication against a file of users and
//! password hashes (`--auth FILE`), one `user:sha256-hex-of-the-password` a line
//! (`printf '%s' 'the password' | sha256sum` gives the hex). Lines starting with `#` and
//! blank lines are skipped. The browser asks for the user and password once and sends
//! them with every request, the live stream included.

use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

/// Why the auth file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} line {line}: expected `user:sha256-hex` (64 hex digits: printf '%s' 'the password' | sha256sum)"
    )]
    Line { path: PathBuf, line: usize },
    #[error("{path} holds no user; add a line `user:sha256-hex`")]
    Empty { path: PathBuf },
}

/// The users allowed in, each with the SHA-256 of its password.
#[derive(Clone)]
pub struct Users {
    users: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.users.len())
            .finish()
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Users {
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthError> {
        let mut users = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || AuthError::Line {
                path: path.to_owned(),
                line: n + 1,
            };
            let (user, hash) = line.rsplit_once(':').ok_or_else(bad)?;
            let hash = hex32(hash.trim()).ok_or_else(bad)?;
            if user.is_empty() {
                return Err(bad());
            }
            users.push((user.to_owned(), hash));
        }
        if users.is_empty() {
            return Err(AuthError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self { users })
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        // Every entry is compared, each in constant time, so the answer's timing says
        // nothing about which user or how much of the hash matched.
        let mut allowed = false;
        for (name, hash) in &self.users {
            let same_hash = hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            allowed |= same_hash && name == user;
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf '%s' 'secret' | sha256sum
    const SECRET: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    fn basic(user: &str, password: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    #[test]
    fn users_and_passwords() {
        let users = Users::parse(
            &format!("# the IT desk\n\nit-desk:{SECRET}\n"),
            Path::new("a"),
        )
        .unwrap();
        assert!(users.allows(Some(&basic("it-desk", "secret"))));
        assert!(!users.allows(Some(&basic("it-desk", "Secret"))));
        assert!(!users.allows(Some(&basic("other", "secret"))));
        assert!(!users.allows(Some("Bearer x")));
        assert!(!users.allows(Some("Basic !!!")));
        assert!(!users.allows(None));
    }

    #[test]
    fn bad_files_say_which_line() {
        let e = Users::parse("it-desk:1234\n", Path::new("auth")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "auth line 1: expected `user:sha256-hex` (64 hex digits: printf '%s' 'the password' | sha256sum)"
        );
        assert!(matches!(
            Users::parse("# nobody\n", Path::new("auth")),
            Err(AuthError::Empty { .. })
        ));
        assert!(Users::parse(&format!(":{SECRET}"), Path::new("auth")).is_err());
    }
}
