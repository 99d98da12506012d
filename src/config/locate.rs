//! Finds where a key sits in the config text, so errors can name its line.

use toml::de::{DeTable, DeValue};

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The line of a dotted key such as `rooms.max_rooms`, or of the deepest part of it
/// that exists in the file.
pub fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    for part in dotted.split('.') {
        let Some((key, value)) = table.get_key_value(part) else {
            break;
        };
        found = Some(key.span().start);
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found.map(|offset| line_column(text, offset).0)
}

/// The dotted key whose key or value spans `offset`, as deep as it goes.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_key(doc.get_ref(), offset, &mut path).then(|| path.join("."))
}

fn find_key(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if key.span().contains(&offset) {
            return true;
        }
        let inside = match value.get_ref() {
            // A table's own span may cover only its header: look inside it.
            DeValue::Table(inner) => find_key(inner, offset, path),
            _ => false,
        };
        if inside || value.span().contains(&offset) {
            return true;
        }
        path.pop();
    }
    false
}
