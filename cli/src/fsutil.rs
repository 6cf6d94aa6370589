//! File-system plumbing: memory-mapped inputs, outputs that appear only when complete,
//! and the directory walk of directory mode.
//!
//! Outputs are built under a temporary name beside the destination and renamed into
//! place at the end, so an error or a crash never leaves a partial file under the final
//! name, and the rename itself never follows a symlink at the destination.

use std::ffi::OsString;
use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::ops::Deref;
use std::path::{Component, Path, PathBuf};

pub use mcodec_store::outdir::DirOutput;
use mcodec_store::outdir::{create_temporary, parent_dir, OutputError, TEMP_PREFIX};
use memmap2::Mmap;
use tempfile::{Builder, NamedTempFile};

use crate::error::{CliError, Context, Failure};

/// Buffer of output writers: large enough to batch the small index and padding writes.
const WRITE_BUFFER: usize = 1 << 20;

/// An input's bytes: a read-only memory map of a file, or what standard input held.
pub struct Input {
    bytes: InputBytes,
}

enum InputBytes {
    Mapped(Mmap),
    Read(Vec<u8>),
}

impl Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.bytes {
            InputBytes::Mapped(map) => map,
            InputBytes::Read(bytes) => bytes,
        }
    }
}

/// The path that stands for standard input (as an input) or standard output (as an
/// output), as for zstd and gzip.
pub const STDIO: &str = "-";

/// Whether `path` stands for standard input or output ([`STDIO`]).
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == STDIO
}

/// How messages name standard input.
pub fn stdin_name() -> &'static Path {
    Path::new("<stdin>")
}

/// How messages name standard output.
pub fn stdout_name() -> &'static Path {
    Path::new("<stdout>")
}

/// `path` as messages name it: [`stdin_name`] for [`STDIO`].
pub fn input_name(path: &Path) -> &Path {
    if is_stdio(path) {
        stdin_name()
    } else {
        path
    }
}

/// `path` as messages name it: [`stdout_name`] for [`STDIO`].
pub fn output_name(path: &Path) -> &Path {
    if is_stdio(path) {
        stdout_name()
    } else {
        path
    }
}

/// Reads all of standard input. Refuses a terminal: a user who typed no input file
/// would otherwise wait on a prompt that never says what it wants (zstd does the same).
pub fn read_stdin() -> Result<Input, CliError> {
    let mut stdin = io::stdin().lock();
    if stdin.is_terminal() {
        return Err(CliError::usage(
            stdin_name(),
            "is a terminal; pipe the input in or name a file",
        ));
    }
    let mut bytes = Vec::new();
    stdin.read_to_end(&mut bytes).at(stdin_name())?;
    Ok(Input {
        bytes: InputBytes::Read(bytes),
    })
}

/// The bytes of the input `path`: the file mapped, or standard input read for [`STDIO`].
pub fn read_input(path: &Path) -> Result<Input, CliError> {
    if is_stdio(path) {
        read_stdin()
    } else {
        map_input(path)
    }
}

/// Writes standard output through `write`, buffered, and flushes it. Refuses a terminal
/// unless `force` (compressed or binary bytes would fill the screen; zstd does the same).
/// Unlike [`write_atomic`], what is written cannot be taken back: callers check their
/// input fully before writing.
pub fn write_stdout<T>(
    force: bool,
    write: impl FnOnce(&mut BufWriter<io::Stdout>) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let stdout = io::stdout();
    if !force && stdout.is_terminal() {
        return Err(CliError::usage(
            stdout_name(),
            "is a terminal; redirect it, or use -f to write binary data there",
        ));
    }
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, stdout);
    let value = write(&mut w)?;
    w.flush().at(stdout_name())?;
    Ok(value)
}

/// Permissions of a new output whose input has none to give (standard input):
/// `rw-r--r--`, as most tools create files under the usual umask.
pub fn new_file_permissions() -> Option<Permissions> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(Permissions::from_mode(0o644))
    }
    #[cfg(not(unix))]
    None
}

/// Maps the regular file `path` read-only.
pub fn map_input(path: &Path) -> Result<Input, CliError> {
    map_file(&open_input(path)?, path)
}

/// Opens the regular file `path` for reading, refusing directories and special files.
pub fn open_input(path: &Path) -> Result<File, CliError> {
    // Checked before opening: opening a FIFO would block.
    let meta = fs::metadata(path).at(path)?;
    if meta.is_dir() {
        return Err(CliError::at_kind(path, Failure::Io, "is a directory"));
    }
    if !meta.is_file() {
        return Err(CliError::at_kind(path, Failure::Io, "not a regular file"));
    }
    File::open(path).at(path)
}

/// Opens the regular file `rel` under the walked directory `root` for reading without
/// following any symlink below `root`: for files found by [`walk`], where a symlink
/// swapped in after the walk, for the file or for any directory above it, must be
/// refused, not followed (it could lead anywhere). Each directory is opened relative to
/// the one above it (`openat` with `O_NOFOLLOW`), so no path is resolved twice. FIFOs and
/// devices are refused too (opened non-blocking, so a FIFO cannot hang the open). Errors
/// name the file.
pub fn open_walked(root: &Path, rel: &Path) -> Result<File, CliError> {
    let path = root.join(rel);
    let file = match open_beneath(root, rel) {
        Ok(f) => f,
        Err(Refused::Symlink(at)) if at == rel => {
            return Err(CliError::at_kind(
                &path,
                Failure::Io,
                "became a symbolic link after the directory was read; refusing to follow it",
            ))
        }
        Err(Refused::Symlink(at)) => {
            return Err(CliError::at_kind(
                &path,
                Failure::Io,
                format!(
                    "its directory {} became a symbolic link after the directory was read; \
                     refusing to follow it",
                    root.join(at).display()
                ),
            ))
        }
        Err(Refused::Io(e)) => return Err(CliError::at(&path, e)),
    };
    if !file.metadata().at(&path)?.is_file() {
        return Err(CliError::at_kind(
            &path,
            Failure::Io,
            "is no longer a regular file (changed after the directory was read)",
        ));
    }
    Ok(file)
}

/// Why [`open_beneath`] failed.
enum Refused {
    /// The component ending at this path (relative to the root) is a symlink.
    Symlink(PathBuf),
    /// Any other error.
    Io(io::Error),
}

/// Opens `rel` (plain names only) under `root`, one component at a time from the opened
/// `root`, following no symlink below it.
#[cfg(unix)]
fn open_beneath(root: &Path, rel: &Path) -> Result<File, Refused> {
    use std::os::unix::fs::OpenOptionsExt;

    let names = rel
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(Refused::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some((last, dirs)) = names.split_last() else {
        return Err(Refused::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty relative path",
        )));
    };
    // The root itself is what the user named: a symlink there is followed, as by `walk`.
    let mut dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map_err(Refused::Io)?;
    let mut at = PathBuf::new();
    for name in dirs {
        at.push(name);
        dir = openat(&dir, name, libc::O_DIRECTORY).map_err(|e| refused(root, &at, e))?;
    }
    at.push(last);
    openat(&dir, last, libc::O_NONBLOCK).map_err(|e| refused(root, &at, e))
}

/// What a failed open of the component ending at `at` (under `root`) means: with
/// `O_NOFOLLOW`, a symlink fails with ELOOP (EMLINK on FreeBSD), or ENOTDIR where a
/// directory was asked for; which of those is a symlink is asked of the file system
/// (for the message only: nothing is opened through it).
#[cfg(unix)]
fn refused(root: &Path, at: &Path, e: io::Error) -> Refused {
    let maybe_symlink = matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::EMLINK | libc::ENOTDIR)
    );
    if maybe_symlink
        && fs::symlink_metadata(root.join(at)).is_ok_and(|m| m.file_type().is_symlink())
    {
        Refused::Symlink(at.to_owned())
    } else {
        Refused::Io(e)
    }
}

/// Opens `name` in the directory `dir` read-only with `flags`, never following a symlink.
#[cfg(unix)]
fn openat(dir: &File, name: &std::ffi::OsStr, flags: libc::c_int) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;

    let name = std::ffi::CString::new(name.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let flags = flags | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open directory and `name` a NUL-terminated string, both alive
    // for the call; a non-negative result is a new descriptor that nothing else owns.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Without `openat`: an ordinary open (symlinks are followed).
#[cfg(not(unix))]
fn open_beneath(root: &Path, rel: &Path) -> Result<File, Refused> {
    File::open(root.join(rel)).map_err(Refused::Io)
}

/// Maps `file` (opened from `path`) read-only.
pub fn map_file(file: &File, path: &Path) -> Result<Input, CliError> {
    // SAFETY: the map is read-only and lives no longer than this `Input`. As with any
    // memory-mapped I/O, another process truncating the file meanwhile can fault the
    // process; the speed of zero-copy input is worth that, as for other tools.
    let map = unsafe { Mmap::map(file) }.at(path)?;
    Ok(Input {
        bytes: InputBytes::Mapped(map),
    })
}

/// Maps the file `rel` found by [`walk`] under `root` read-only, opened with
/// [`open_walked`].
pub fn map_walked(root: &Path, rel: &Path) -> Result<Input, CliError> {
    map_file(&open_walked(root, rel)?, &root.join(rel))
}

/// `path` with `suffix` appended to its last component (`a/b` → `a/b.mcz`); a path such
/// as `.` or `model/` is first resolved so it has a last component to extend.
pub fn with_suffix(path: &Path, suffix: &str) -> Result<PathBuf, CliError> {
    let path = named(path)?;
    let mut s: OsString = path.clone().into_os_string();
    s.push(suffix);
    Ok(PathBuf::from(s))
}

/// `path` without `suffix` at the end of its last component, or `None` if it does not end
/// so (or nothing would remain).
pub fn strip_suffix(path: &Path, suffix: &str) -> Result<Option<PathBuf>, CliError> {
    let path = named(path)?;
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    Ok(match name.strip_suffix(suffix) {
        Some(stem) if !stem.is_empty() => Some(path.with_file_name(stem)),
        _ => None,
    })
}

/// `path` normalised so that its last component is a real name: trailing slashes go and
/// `.`/`..` endings are resolved.
fn named(path: &Path) -> Result<PathBuf, CliError> {
    match path.components().next_back() {
        Some(Component::Normal(_)) => Ok(path.components().collect()),
        _ => {
            let abs = fs::canonicalize(path).at(path)?;
            if abs.file_name().is_none() {
                return Err(CliError::at_kind(
                    path,
                    Failure::Invalid,
                    "cannot derive an output name; use -o",
                ));
            }
            Ok(abs)
        }
    }
}

/// Checks that `out` may be written: never through a symlink, and only over an existing
/// file with `force`.
pub fn check_output(out: &Path, force: bool, dir_mode: bool) -> Result<(), CliError> {
    Ok(mcodec_store::outdir::check_output(out, force, dir_mode)?)
}

/// Whether two existing paths name the same file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    }
}

/// Refuses an output that is the input, or a directory output nested with its input
/// (building or replacing one would then read or delete the other).
pub fn check_distinct(input: &Path, out: &Path, dir_mode: bool) -> Result<(), CliError> {
    if same_file(input, out) {
        return Err(CliError::at_kind(
            out,
            Failure::Invalid,
            "output is the input file",
        ));
    }
    if dir_mode {
        let abs_in = fs::canonicalize(input).at(input)?;
        let abs_parent = fs::canonicalize(parent_dir(out)).at(out)?;
        let abs_out = match out.file_name() {
            Some(name) => abs_parent.join(name),
            None => abs_parent,
        };
        if abs_out.starts_with(&abs_in) {
            return Err(CliError::at_kind(
                out,
                Failure::Invalid,
                "output lies inside the input directory",
            ));
        }
        if abs_in.starts_with(&abs_out) {
            return Err(CliError::at_kind(
                out,
                Failure::Invalid,
                "output contains the input directory",
            ));
        }
    }
    Ok(())
}

/// Writes the file `out` through `write`, under a temporary name that is renamed into
/// place only once everything is written and synced. `perms` (usually the input's) are
/// applied first, so the file never appears with the temporary file's private mode.
pub fn write_atomic<T>(
    out: &Path,
    force: bool,
    perms: Option<Permissions>,
    write: impl FnOnce(&mut BufWriter<&File>) -> Result<T, CliError>,
) -> Result<T, CliError> {
    // Listed for the signal handler (`crate::signals`) until renamed into place.
    let (tmp, listed) = create_temporary(
        || {
            Builder::new()
                .prefix(TEMP_PREFIX)
                .suffix(".tmp")
                .tempfile_in(parent_dir(out))
        },
        NamedTempFile::path,
    )
    .map_err(|e| OutputError::temporary(out, &e))?;
    let value = {
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, tmp.as_file());
        let value = write(&mut w)?;
        w.flush().at(out)?;
        value
    };
    tmp.as_file().sync_all().at(out)?;
    if let Some(p) = perms {
        tmp.as_file().set_permissions(p).at(out)?;
    }
    // Dropping `listed` on any error above deletes the temporary.
    let done = if force {
        tmp.persist(out)
    } else {
        tmp.persist_noclobber(out)
    };
    done.map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            CliError::at_kind(out, Failure::Exists, "already exists (use -f to overwrite)")
        } else {
            CliError::at(out, e.error)
        }
    })?;
    listed.renamed();
    Ok(value)
}

/// Refuses `--rm` where no input file is left to remove once the output is safe: a
/// directory, standard input, or an output on standard output (which cannot be synced
/// or read back).
pub fn check_rm(input: &Path, out: &Path, is_dir: bool) -> Result<(), CliError> {
    let why = if is_stdio(input) {
        "--rm needs an input file, not standard input"
    } else if is_stdio(out) {
        "--rm needs an output file, not standard output"
    } else if is_dir {
        "--rm removes single files, not directories"
    } else {
        return Ok(());
    };
    Err(CliError::usage(input, why))
}

/// Removes the input file of a `--rm` run whose output `out` is written (by
/// [`write_atomic`], which synced its bytes): the output's directory is synced first, so
/// that its rename is on disk before the input's removal can be.
pub fn remove_input(input: &Path, out: &Path) -> Result<(), CliError> {
    let dir = parent_dir(out);
    File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    fs::remove_file(input).at(input)
}

/// What a directory entry is.
#[derive(Debug)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file of this many bytes.
    File(u64),
    /// A symbolic link with this target; recreated as it is, never followed.
    Symlink(PathBuf),
    /// Anything else (FIFO, socket, device): listed so each command can decide.
    Other,
}

/// One entry of a directory tree, relative to its root.
#[derive(Debug)]
pub struct Entry {
    /// Path relative to the root.
    pub rel: PathBuf,
    /// What it is.
    pub node: Node,
}

/// Every entry under `root`, sorted, each directory before its contents. Symlinks are
/// listed, not followed, so cycles cannot occur.
pub fn walk(root: &Path) -> Result<Vec<Entry>, CliError> {
    let mut entries = Vec::new();
    walk_into(root, Path::new(""), &mut entries)?;
    Ok(entries)
}

fn walk_into(root: &Path, rel: &Path, entries: &mut Vec<Entry>) -> Result<(), CliError> {
    let dir = root.join(rel);
    let mut names = fs::read_dir(&dir)
        .at(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .at(&dir)?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).at(&path)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).at(&path)?;
            entries.push(Entry {
                rel,
                node: Node::Symlink(target),
            });
        } else if ft.is_dir() {
            entries.push(Entry {
                rel: rel.clone(),
                node: Node::Dir,
            });
            walk_into(root, &rel, entries)?;
        } else if ft.is_file() {
            entries.push(Entry {
                rel,
                node: Node::File(meta.len()),
            });
        } else {
            entries.push(Entry {
                rel,
                node: Node::Other,
            });
        }
    }
    Ok(())
}

/// Creates the symlink `link` pointing at `target`.
pub fn symlink(target: &Path, link: &Path) -> Result<(), CliError> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, link).at(link)
    }
    #[cfg(not(unix))]
    {
        let _ = target;
        Err(CliError::at_kind(
            link,
            Failure::Unsupported,
            "symbolic links are only supported on Unix",
        ))
    }
}

/// The name of `rel` as UTF-8, if it is.
pub fn name_str(rel: &Path) -> Option<&str> {
    rel.file_name().and_then(|n| n.to_str())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A file the walk listed, replaced by a symlink before it is opened (the race of
    /// directory mode), is refused with its name, never followed.
    #[test]
    fn a_symlink_swapped_in_after_the_walk_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        fs::create_dir(&root).unwrap();
        let secret = tmp.path().join("secret");
        fs::write(&secret, b"outside the tree").unwrap();
        let file = root.join("a.bin");
        fs::write(&file, b"inside").unwrap();

        let entries = walk(&root).unwrap();
        assert!(matches!(entries[0].node, Node::File(6)));
        let rel = Path::new("a.bin");
        assert_eq!(&*map_walked(&root, rel).unwrap(), b"inside");

        fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&secret, &file).unwrap();
        for e in [
            open_walked(&root, rel).unwrap_err(),
            map_walked(&root, rel).err().unwrap(),
        ] {
            assert_eq!(e.path.as_deref(), Some(file.as_path()));
            assert!(e.problem.contains("symbolic link"), "{}", e.problem);
        }
        // What an ordinary open would have read.
        assert_eq!(&*map_input(&file).unwrap(), b"outside the tree");

        // A FIFO in its place is refused too, without blocking.
        fs::remove_file(&file).unwrap();
        let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_walked(&root, rel).unwrap_err();
        assert!(e.problem.contains("regular file"), "{}", e.problem);
    }

    /// A directory the walk listed, replaced by a symlink to a directory outside the tree
    /// before a file in it is opened, is refused with the file's name: nothing outside
    /// the tree is read, however deep the swapped directory.
    #[test]
    fn a_parent_directory_swapped_for_a_symlink_after_the_walk_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        let outside = tmp.path().join("outside");
        for dir in [root.join("sub/deeper"), outside.join("deeper")] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::write(root.join("sub/deeper/a.bin"), "inside").unwrap();
        fs::write(outside.join("deeper/a.bin"), "outside the tree").unwrap();
        let rel = Path::new("sub/deeper/a.bin");
        let file = root.join(rel);
        let entries = walk(&root).unwrap();
        assert!(entries
            .iter()
            .any(|e| e.rel == rel && matches!(e.node, Node::File(6))));
        assert_eq!(&*map_walked(&root, rel).unwrap(), b"inside");

        // The top directory, then the one just above the file.
        for (swapped, target) in [
            (root.join("sub"), outside.clone()),
            (root.join("sub/deeper"), outside.join("deeper")),
        ] {
            let moved = tmp.path().join("moved");
            fs::rename(&swapped, &moved).unwrap();
            std::os::unix::fs::symlink(&target, &swapped).unwrap();
            // What an ordinary open reads now.
            assert_eq!(fs::read(&file).unwrap(), b"outside the tree");
            for e in [
                open_walked(&root, rel).unwrap_err(),
                map_walked(&root, rel).err().unwrap(),
            ] {
                assert_eq!(e.path.as_deref(), Some(file.as_path()));
                assert!(e.problem.contains("symbolic link"), "{}", e.problem);
                assert!(
                    e.problem.contains(&*swapped.to_string_lossy()),
                    "{}",
                    e.problem
                );
            }
            fs::remove_file(&swapped).unwrap();
            fs::rename(&moved, &swapped).unwrap();
        }
        assert_eq!(&*map_walked(&root, rel).unwrap(), b"inside");
    }
}
