//! Directory mode of `pack` and `unpack`: the same tree with some files converted and
//! everything else (files, empty directories, symlinks) reproduced as it is.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use std::time::Instant;

use crate::error::{CliError, Context, Failure};
use crate::fsutil::{self, DirOutput, Input, Node};
use crate::progress::Bar;
use crate::Global;

/// What becomes of one entry of the input tree.
pub enum Action {
    /// Create the directory.
    Mkdir,
    /// Recreate the symlink with this target.
    Link(PathBuf),
    /// Copy the file as it is.
    Copy,
    /// Convert the file (pack or unpack it).
    Convert,
}

/// One step of a directory conversion.
pub struct Step {
    /// Source, relative to the input root.
    pub src: PathBuf,
    /// Destination, relative to the output root.
    pub dst: PathBuf,
    /// What to do.
    pub action: Action,
    /// Progress units the step accounts for (bytes).
    pub units: u64,
}

/// Counts of a finished directory conversion.
#[derive(Default)]
pub struct TreeStats {
    /// Files converted.
    pub converted: u64,
    /// Files copied as they are.
    pub copied: u64,
    /// Bytes read from the input tree's files.
    pub bytes_in: u64,
    /// Bytes written to the output tree's files.
    pub bytes_out: u64,
}

/// Plans the conversion of the tree at `root`. `classify` is given each regular file
/// (its path and path relative to `root`) and returns its converted name and progress
/// units, or `None` to copy it. Two entries mapping to one output name are refused.
pub fn plan(
    root: &Path,
    mut classify: impl FnMut(&Path, &Path, u64) -> Result<Option<(PathBuf, u64)>, CliError>,
) -> Result<Vec<Step>, CliError> {
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    for e in fsutil::walk(root)? {
        let (dst, action, units) = match e.node {
            Node::Dir => (e.rel.clone(), Action::Mkdir, 0),
            Node::Symlink(target) => {
                if !stays_inside(&e.rel, &target) {
                    return Err(CliError::at_kind(
                        &root.join(&e.rel),
                        Failure::Unsupported,
                        format!(
                            "symbolic link to {} leads out of the directory; refusing to reproduce it",
                            target.display()
                        ),
                    ));
                }
                (e.rel.clone(), Action::Link(target), 0)
            }
            Node::File(len) => match classify(&root.join(&e.rel), &e.rel, len)? {
                Some((dst, units)) => (dst, Action::Convert, units),
                None => (e.rel.clone(), Action::Copy, len),
            },
            Node::Other => {
                return Err(CliError::at_kind(
                    &root.join(&e.rel),
                    Failure::Unsupported,
                    "not a regular file, directory or symlink",
                ))
            }
        };
        if !seen.insert(dst.clone()) {
            return Err(CliError::at_kind(
                &root.join(&e.rel),
                Failure::Unsupported,
                format!(
                    "would be written as {}, which another entry also becomes",
                    dst.display()
                ),
            ));
        }
        steps.push(Step {
            src: e.rel,
            dst,
            action,
            units,
        });
    }
    Ok(steps)
}

/// Whether the symlink at `rel` (relative to the tree's root) with this target resolves
/// inside the tree, whatever else the tree holds: the target is relative, and its `..`
/// components all come first and climb no higher than the root. The link's own parents
/// are real directories (the walk never enters a symlink), and every link the target
/// passes through obeys the same rule, so resolution cannot leave the tree; a `..` after
/// a name is refused because that name may itself be a link.
pub fn stays_inside(rel: &Path, target: &Path) -> bool {
    use std::path::Component;
    let mut depth = rel.components().count().saturating_sub(1);
    let mut descended = false;
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if !descended && depth > 0 => depth -= 1,
            Component::Normal(_) => descended = true,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Carries out `steps` from `input` into a temporary directory that becomes `out` only
/// when all succeeded, behind a progress bar, and prints the summary line unless
/// `--quiet` (`packing` picks its verb; `start` is when the command began, so planning
/// counts in the rate). `convert(input, src, dst, writer, progress)` writes one converted
/// file from the mapped `input` (read from `src`) and reports its progress in the units
/// [`plan`] gave it. Files are opened without following symlinks below `input`
/// ([`fsutil::open_walked`]): one swapped in since the walk, for a file or a directory above
/// it, fails the run.
pub fn run(
    input: &Path,
    out: &Path,
    g: &Global,
    packing: bool,
    start: Instant,
    steps: &[Step],
    mut convert: impl FnMut(
        &Input,
        &Path,
        &Path,
        &mut BufWriter<&File>,
        &(dyn Fn(u64) + Sync),
    ) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let bar = Bar::bytes(steps.iter().map(|s| s.units).sum(), g.quiet);
    let dir = DirOutput::new(out, g.force)?;
    let mut stats = TreeStats::default();
    let mut done = 0u64;
    for step in steps {
        let src = input.join(&step.src);
        let dst = dir.path(&step.dst);
        // Errors name the final output path, not the temporary one.
        let shown = out.join(&step.dst);
        match &step.action {
            Action::Mkdir => fs::create_dir(&dst).at(&shown)?,
            Action::Link(target) => fsutil::symlink(target, &dst).map_err(|e| CliError {
                path: Some(shown.clone()),
                ..e
            })?,
            Action::Copy => {
                let mut from = fsutil::open_walked(input, &step.src)?;
                let perms = from.metadata().at(&src)?.permissions();
                let mut file = create(&dst, &shown)?;
                stats.bytes_in += step.units;
                stats.bytes_out += io::copy(&mut from, &mut file).at(&src)?;
                file.sync_all().at(&shown)?;
                file.set_permissions(perms).at(&shown)?;
                stats.copied += 1;
            }
            Action::Convert => {
                let from = fsutil::open_walked(input, &step.src)?;
                let meta = from.metadata().at(&src)?;
                let input = fsutil::map_file(&from, &src)?;
                stats.bytes_in += meta.len();
                let file = create(&dst, &shown)?;
                {
                    let mut w = BufWriter::with_capacity(1 << 20, &file);
                    convert(&input, &src, &shown, &mut w, &|d| bar.set(done + d))?;
                    w.flush().at(&shown)?;
                }
                file.sync_all().at(&shown)?;
                file.set_permissions(meta.permissions()).at(&shown)?;
                stats.bytes_out += file.metadata().at(&shown)?.len();
                stats.converted += 1;
            }
        }
        done += step.units;
        bar.set(done);
    }
    dir.finish()?;
    drop(bar);
    if !g.quiet {
        let secs = start.elapsed().as_secs_f64();
        super::emit(&summary(input, out, packing, &stats, secs))?;
    }
    Ok(())
}

/// Creates the new file `dst` (shown as `shown` in errors).
fn create(dst: &Path, shown: &Path) -> Result<File, CliError> {
    File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .at(shown)
}

/// The summary line of a directory conversion.
fn summary(input: &Path, out: &Path, packing: bool, s: &TreeStats, secs: f64) -> String {
    let verb = if packing { "packed" } else { "unpacked" };
    format!(
        "{} -> {}: {} files {verb}, {} copied; {}, {:.1} MB/s\n",
        input.display(),
        out.display(),
        s.converted,
        s.copied,
        super::sizes(s.bytes_in, s.bytes_out, packing),
        super::mb_per_s(s.bytes_in, secs),
    )
}

#[cfg(test)]
mod tests {
    use super::stays_inside;
    use std::path::Path;

    #[test]
    fn links_that_leave_the_tree_are_recognised() {
        let inside = [
            ("link", "a.safetensors"),
            ("link", "./sub/b"),
            ("sub/link", "../a"),
            ("sub/deeper/link", "../../a/b"),
            ("sub/link", "."),
        ];
        for (rel, target) in inside {
            assert!(
                stays_inside(Path::new(rel), Path::new(target)),
                "{rel} -> {target}"
            );
        }
        let outside = [
            ("link", "/etc/passwd"),
            ("link", ".."),
            ("link", "../model/a"),
            ("sub/link", "../../a"),
            ("link", "sub/../../a"),
            ("link", "sub/../a"),
        ];
        for (rel, target) in outside {
            assert!(
                !stays_inside(Path::new(rel), Path::new(target)),
                "{rel} -> {target}"
            );
        }
    }
}
