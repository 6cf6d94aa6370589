//! `mcodec verify`: decode everything and check every checksum, writing nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::pack::MCZ;
use super::{emit, mb_per_s, PackedInput};
use crate::error::{CliError, Context, Failure};
use crate::fsutil::{self, name_str, Node};
use crate::progress::Bar;
use crate::{Global, VerifyArgs};

/// What one verified file held.
struct Checked {
    tensors: usize,
    original: u64,
}

/// Runs `verify`.
pub fn run(a: &VerifyArgs, g: &Global) -> Result<(), CliError> {
    let path = &a.file;
    let start = Instant::now();
    let is_dir = !fsutil::is_stdio(path) && std::fs::metadata(path).at(path)?.is_dir();
    let files: Vec<PathBuf> = if is_dir {
        fsutil::walk(path)?
            .into_iter()
            .filter(|e| {
                matches!(e.node, Node::File(_))
                    && name_str(&e.rel).is_some_and(|n| n.ends_with(MCZ))
            })
            .map(|e| path.join(e.rel))
            .collect()
    } else {
        vec![path.clone()]
    };
    if files.is_empty() {
        return Err(CliError::at_kind(
            path,
            Failure::Missing,
            "no .mcz files found",
        ));
    }
    let bar = Bar::bytes(0, g.quiet);
    let mut total = Checked {
        tensors: 0,
        original: 0,
    };
    let mut failed = 0usize;
    for file in &files {
        match verify_one(file, &bar, total.original) {
            Ok(c) => {
                total.tensors += c.tensors;
                total.original += c.original;
            }
            // A single file's error is the run's error; in a directory each failure gets
            // its line and the run goes on to check the rest.
            Err(e) if !is_dir => return Err(e),
            Err(e) => {
                bar.suspend(|| eprintln!("{e}"));
                failed += 1;
            }
        }
    }
    drop(bar);
    if failed > 0 {
        return Err(CliError::at_kind(
            path,
            Failure::Corrupt,
            format!("{failed} of {} .mcz files failed verification", files.len()),
        ));
    }
    if !g.quiet {
        let secs = start.elapsed().as_secs_f64();
        let count = if is_dir {
            format!("{} files, ", files.len())
        } else {
            String::new()
        };
        emit(&format!(
            "{}: OK, {count}{} tensors, {} bytes ({:.1} MB) in {secs:.2} s, {:.1} MB/s\n",
            fsutil::input_name(path).display(),
            total.tensors,
            total.original,
            total.original as f64 / 1e6,
            mb_per_s(total.original, secs),
        ))?;
    }
    Ok(())
}

fn verify_one(file: &Path, bar: &Bar, base: u64) -> Result<Checked, CliError> {
    let source = PackedInput::open(file)?;
    let archive = source.archive(file)?;
    bar.grow(archive.index().original_len);
    archive.prefetch();
    let original = archive
        .verify(&|d| bar.set(base + d))
        .at(fsutil::input_name(file))?;
    Ok(Checked {
        tensors: archive.index().tensors.len(),
        original,
    })
}
