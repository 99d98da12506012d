//! Config errors: each names the file, the line, the field and what is allowed.

use std::fmt;
use std::path::PathBuf;

/// One rule a valid-looking file breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `rooms.max_rooms`.
    pub field: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn new(field: &str, message: String) -> Self {
        Self {
            field: field.to_owned(),
            line: None,
            message,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source} (pass --config PATH; the example is config/roomcast.example.toml)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}:{column}: {}{message}", path.display(), key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The dotted key at the error, when it can be told.
        key: Option<String>,
        message: String,
    },

    #[error("{}", InvalidList { path, problems })]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

struct InvalidList<'a> {
    path: &'a PathBuf,
    problems: &'a [Problem],
}

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match p.line {
                Some(line) => write!(
                    f,
                    "{}:{line}: `{}`: {}",
                    self.path.display(),
                    p.field,
                    p.message
                )?,
                None => write!(f, "{}: `{}`: {}", self.path.display(), p.field, p.message)?,
            }
        }
        Ok(())
    }
}
