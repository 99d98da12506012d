//! `rooms.allowed`: the rooms this box may be sent into. Whoever can publish to the
//! box's `cmd` topic could otherwise send the classroom's camera and microphone into any
//! room they make up; with a list, `login_room` to another room fails with 1002906 (and
//! a saved room no longer on the list is not rejoined after a restart).
//!
//! Patterns are globs over the whole room id: `*` is any run of characters (also none),
//! `?` exactly one; every other character is itself. An empty list allows every room.

use std::fmt;

use super::types::RoomId;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomAllowList {
    patterns: Vec<String>,
}

impl RoomAllowList {
    /// Every room (no `rooms.allowed`).
    pub fn any() -> Self {
        Self::default()
    }

    pub fn new(patterns: Vec<String>) -> Self {
        Self { patterns }
    }

    pub fn is_any(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn allows(&self, room: &RoomId) -> bool {
        self.is_any() || self.patterns.iter().any(|p| glob(p, room.as_str()))
    }
}

/// `["bigclass", "group-*"]`, for messages.
impl fmt::Display for RoomAllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = self.patterns.iter().map(|p| format!("{p:?}")).collect();
        write!(f, "[{}]", quoted.join(", "))
    }
}

/// Whether `text` matches `pattern` (`*`, `?`), in time linear in their lengths times
/// the stars: the last star is backtracked to, never earlier ones.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).unwrap()
    }

    #[test]
    fn globs() {
        let cases = [
            ("bigclass", "bigclass", true),
            ("bigclass", "bigclass2", false),
            ("group-*", "group-3", true),
            ("group-*", "group-", true),
            ("group-*", "groups", false),
            ("*", "anything", true),
            ("g?", "g1", true),
            ("g?", "g12", false),
            ("*-lab-*", "chem-lab-2", true),
            ("*-lab-*", "chem-lab", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob(pattern, text), expected, "{pattern:?} {text:?}");
        }
        // No exponential backtracking.
        let long = "a".repeat(127);
        assert!(!glob("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn an_empty_list_allows_every_room() {
        assert!(RoomAllowList::any().allows(&room("anything")));
        let list = RoomAllowList::new(vec!["bigclass".into(), "group-*".into()]);
        assert!(list.allows(&room("bigclass")));
        assert!(list.allows(&room("group-7")));
        assert!(!list.allows(&room("attacker-room")));
        assert_eq!(list.to_string(), r#"["bigclass", "group-*"]"#);
    }
}
