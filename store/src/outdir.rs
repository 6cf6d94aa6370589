//! Outputs that appear only when complete, shared by `store get` and the CLI's `pack`,
//! `unpack` and `tree` commands.
//!
//! An output is built under a temporary name beside its destination and renamed into
//! place at the end, so an error or a crash never leaves a partial output under the final
//! name, and nothing is ever written through a symlink at the destination.
//!
//! Every temporary is listed in a process-wide registry while it exists, so that a
//! program killed by a signal can remove them first ([`remove_temporaries`], called by
//! the CLI's SIGINT/SIGTERM handler).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tempfile::{Builder, TempDir};

/// The temporaries that exist now. A temporary is created and listed under the lock, so
/// [`remove_temporaries`] never misses one that is being created.
static TEMPORARIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn temporaries() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while listing leaves the list usable: it is only pushed to and filtered.
    TEMPORARIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a directory tree that the program's other threads, still running, may be
/// adding files to (a removal then fails with "directory not empty"): tries again.
fn remove_dir_retrying(path: &Path) -> io::Result<()> {
    let mut result = Ok(());
    for _ in 0..10 {
        result = fs::remove_dir_all(path);
        if result.is_ok() || !path.exists() {
            return Ok(());
        }
    }
    result
}

/// Creates a temporary with `create` and lists the path `path_of` gives while the
/// returned [`Listed`] lives.
pub fn create_temporary<T>(
    create: impl FnOnce() -> io::Result<T>,
    path_of: impl FnOnce(&T) -> &Path,
) -> io::Result<(T, Listed)> {
    let mut list = temporaries();
    let t = create()?;
    let path = path_of(&t).to_owned();
    list.push(path.clone());
    Ok((t, Listed { path: Some(path) }))
}

/// The listing of one temporary. Dropping it deletes the temporary (a file, or a
/// directory with its contents) and takes it off the list, both under the list's lock,
/// so a signal handler never finds it half gone.
#[must_use = "dropping it deletes the temporary"]
pub struct Listed {
    path: Option<PathBuf>,
}

impl Listed {
    /// Takes the temporary off the list without deleting it: it was renamed into place.
    pub fn renamed(mut self) {
        if let Some(path) = self.path.take() {
            temporaries().retain(|p| *p != path);
        }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let mut list = temporaries();
            // Errors are left to the owner's own cleanup, which runs next.
            let _ = remove(&path);
            list.retain(|p| *p != path);
        }
    }
}

/// Deletes the file or directory tree `path`; a missing one is no error.
fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_dir_retrying(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Deletes every listed temporary (files, and directories with their contents) and
/// returns with the list locked, so that no new temporary can be created before the
/// caller exits. Meant for a signal handler's thread, right before `exit`.
pub fn remove_temporaries() -> MutexGuard<'static, Vec<PathBuf>> {
    let mut list = temporaries();
    for path in list.drain(..) {
        // Nothing more can be done about a failure this late; say which one is left.
        if let Err(e) = remove(&path) {
            eprintln!("{}: cannot remove temporary: {e}", path.display());
        }
    }
    list
}

/// Prefix of every temporary file or directory created beside an output.
pub const TEMP_PREFIX: &str = ".mcodec-";

/// Why an output cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output is a symbolic link.
    #[error("{}: output is a symbolic link; refusing to write through it", path.display())]
    Symlink {
        /// The output.
        path: PathBuf,
    },
    /// The output exists and overwriting was not asked for.
    #[error("{}: already exists (use -f to overwrite)", path.display())]
    Exists {
        /// The output.
        path: PathBuf,
    },
    /// A file output would replace a directory.
    #[error("{}: is a directory; refusing to replace it", path.display())]
    IsDirectory {
        /// The output.
        path: PathBuf,
    },
    /// The temporary beside the output cannot be created.
    #[error("{}: cannot create a temporary file beside it: {reason}", path.display())]
    Temporary {
        /// The output.
        path: PathBuf,
        /// The failure, without the temporary's random name (which would only puzzle).
        reason: String,
    },
    /// Writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl OutputError {
    /// An I/O failure concerning `path`.
    pub fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Failure to create the temporary beside `out`.
    pub fn temporary(out: &Path, e: &io::Error) -> Self {
        let msg = e.to_string();
        Self::Temporary {
            path: out.to_owned(),
            reason: msg.split(" at path ").next().unwrap_or_default().to_owned(),
        }
    }

    /// The file or directory concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::Symlink { path }
            | Self::Exists { path }
            | Self::IsDirectory { path }
            | Self::Temporary { path, .. }
            | Self::Io { path, .. } => path,
        }
    }
}

/// The directory an output is created in (the current directory for a bare name).
pub fn parent_dir(out: &Path) -> &Path {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks that `out` may be written: never through a symlink, and only over an existing
/// output with `force`; a file output (`dir_mode` false) never replaces a directory.
pub fn check_output(out: &Path, force: bool, dir_mode: bool) -> Result<(), OutputError> {
    let meta = match fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OutputError::io(out, e)),
    };
    let path = out.to_owned();
    if meta.file_type().is_symlink() {
        return Err(OutputError::Symlink { path });
    }
    if !force {
        return Err(OutputError::Exists { path });
    }
    if meta.is_dir() && !dir_mode {
        return Err(OutputError::IsDirectory { path });
    }
    Ok(())
}

/// A directory output under construction beside its destination.
pub struct DirOutput {
    /// Listing of `holder`; dropped first, so it deletes `holder` under the list's lock.
    _listed: Listed,
    /// Holder of the build root; deleted with everything in it if not finished.
    holder: TempDir,
    /// The build root: a plain `create_dir` inside `holder`, so that it gets the usual
    /// permissions rather than the temporary directory's private ones.
    root: PathBuf,
    out: PathBuf,
    force: bool,
}

impl DirOutput {
    /// Starts building the directory `out`.
    pub fn new(out: &Path, force: bool) -> Result<Self, OutputError> {
        let (holder, listed) = create_temporary(
            || {
                Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempdir_in(parent_dir(out))
            },
            TempDir::path,
        )
        .map_err(|e| OutputError::temporary(out, &e))?;
        let root = holder.path().join("out");
        fs::create_dir(&root).map_err(|e| OutputError::io(out, e))?;
        Ok(Self {
            _listed: listed,
            holder,
            root,
            out: out.to_owned(),
            force,
        })
    }

    /// The directory being built.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry `rel` goes while building.
    pub fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Moves the finished directory into place, replacing an existing output only with
    /// `force` (checked again: one may have appeared meanwhile); an old output is moved
    /// aside first and restored if the move fails.
    pub fn finish(self) -> Result<(), OutputError> {
        let out = &self.out;
        check_output(out, self.force, true)?;
        let io = |e| OutputError::io(out, e);
        // Held while an old output lies aside in the holder: a signal arriving meanwhile
        // removes the temporaries only once the new output is in place (or the old one
        // is back).
        let _no_cleanup_now = temporaries();
        if fs::symlink_metadata(out).is_ok() {
            let aside = self.holder.path().join("old");
            fs::rename(out, &aside).map_err(io)?;
            if let Err(e) = fs::rename(&self.root, out) {
                let _ = fs::rename(&aside, out);
                return Err(io(e));
            }
        } else {
            fs::rename(&self.root, out).map_err(io)?;
        }
        // Dropping `self` (after the lock) deletes only the replaced output, if any.
        Ok(())
    }
}
