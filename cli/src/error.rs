//! The one error type of the tool: a problem, the file it concerns and the exit code.

use std::fmt;
use std::path::{Path, PathBuf};

/// Exit code of a failed operation.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error (the same as clap's).
pub const EXIT_USAGE: i32 = 2;

/// A failure, reported as one line `mcodec: <file>: <problem>`.
#[derive(Debug, thiserror::Error)]
pub struct CliError {
    /// The file the problem concerns, if any.
    pub path: Option<PathBuf>,
    /// What went wrong, on one line.
    pub problem: String,
    /// Process exit code.
    pub code: i32,
}

impl CliError {
    /// A failure concerning `path`.
    pub fn at(path: &Path, problem: impl fmt::Display) -> Self {
        Self {
            path: Some(path.to_owned()),
            problem: one_line(&problem.to_string()),
            code: EXIT_FAILURE,
        }
    }

    /// A usage error concerning `path` (exit code 2, like clap's own).
    pub fn usage(path: &Path, problem: impl fmt::Display) -> Self {
        Self {
            code: EXIT_USAGE,
            ..Self::at(path, problem)
        }
    }

    /// A failure that concerns no particular file.
    pub fn plain(problem: impl fmt::Display) -> Self {
        Self {
            path: None,
            problem: one_line(&problem.to_string()),
            code: EXIT_FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "mcodec: {}: {}", p.display(), self.problem),
            None => write!(f, "mcodec: {}", self.problem),
        }
    }
}

impl From<mcodec_store::outdir::OutputError> for CliError {
    fn from(e: mcodec_store::outdir::OutputError) -> Self {
        let path = e.path().to_owned();
        let problem = e.to_string();
        // The message starts with the path; the CLI prints it once, in front.
        let prefix = format!("{}: ", path.display());
        let problem = problem.strip_prefix(&prefix).unwrap_or(&problem).to_owned();
        Self::at(&path, problem)
    }
}

/// Attaches a file name to any displayable error.
pub trait Context<T> {
    /// Turns the error into a [`CliError`] about `path`.
    fn at(self, path: &Path) -> Result<T, CliError>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, CliError> {
        self.map_err(|e| CliError::at(path, e))
    }
}

/// Keeps a message on one line (errors must be exactly one line on stderr) and drops the
/// "(os error N)" that `io::Error` appends, which says nothing to a user.
fn one_line(s: &str) -> String {
    let mut s = if s.contains(['\n', '\r']) {
        s.split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        s.to_owned()
    };
    while let Some(i) = s.find(" (os error ") {
        match s[i..].find(')') {
            Some(j) => s.replace_range(i..i + j + 1, ""),
            None => break,
        }
    }
    s
}
