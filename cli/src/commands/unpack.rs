//! `mcodec unpack`: an `.mcz` file back to the original, or a packed directory tree back
//! to the tree it was made from.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mcodec::container::Archive;

use super::pack::{MCZ, SAFETENSORS};
use super::tree::{self, Step};
use super::{blame, file_done};
use crate::error::{CliError, Context};
use crate::fsutil::{self, name_str};
use crate::progress::Bar;
use crate::{Global, UnpackArgs};

/// Runs `unpack`.
pub fn run(a: &UnpackArgs, g: &Global) -> Result<(), CliError> {
    let is_dir = fs::metadata(&a.input).at(&a.input)?.is_dir();
    let out = match &a.output {
        Some(o) => o.clone(),
        None => match fsutil::strip_suffix(&a.input, MCZ)? {
            Some(o) => o,
            None if is_dir => fsutil::with_suffix(&a.input, ".out")?,
            None => {
                return Err(CliError::usage(
                    &a.input,
                    "has no .mcz suffix; name the output with -o",
                ))
            }
        },
    };
    if is_dir {
        unpack_dir(&a.input, &out, g)
    } else {
        unpack_file(&a.input, &out, g)
    }
}

fn unpack_file(input: &Path, out: &Path, g: &Global) -> Result<(), CliError> {
    fsutil::check_output(out, g.force, false)?;
    fsutil::check_distinct(input, out, false)?;
    let start = Instant::now();
    let file = fsutil::open_input(input)?;
    let meta = file.metadata().at(input)?;
    // The archive's own map: opening reads only the pages it parses, and `prefetch`
    // queues the reads of the rest before decoding (from a cold page cache the disk
    // sets the pace).
    let archive = Archive::open_file(&file).at(input)?;
    let original = archive.index().original_len;
    let bar = Bar::bytes(original, g.quiet);
    fsutil::write_atomic(out, g.force, Some(meta.permissions()), |w| {
        archive.prefetch();
        archive
            .unpack_to(w, &|d| bar.set(d))
            .map_err(|e| blame(e, input, out))
    })?;
    drop(bar);
    file_done(g, input, out, meta.len(), original, false, start)
}

fn unpack_dir(input: &Path, out: &Path, g: &Global) -> Result<(), CliError> {
    fsutil::check_output(out, g.force, true)?;
    fsutil::check_distinct(input, out, true)?;
    let start = Instant::now();
    // Opening every archive first fails a damaged tree before any work and sizes the bar.
    let suffix = format!("{SAFETENSORS}{MCZ}");
    let steps: Vec<Step> = tree::plan(input, |path, rel, _| {
        if !name_str(rel).is_some_and(|n| n.ends_with(&suffix)) {
            return Ok(None);
        }
        let data = fsutil::map_walked(input, rel)?;
        let original = Archive::open(&data).at(path)?.index().original_len;
        let dst: PathBuf = fsutil::strip_suffix(rel, MCZ)?
            .ok_or_else(|| CliError::at(path, "cannot derive the unpacked name"))?;
        Ok(Some((dst, original)))
    })?;
    tree::run(
        input,
        out,
        g,
        false,
        start,
        &steps,
        |data, src, dst, w, progress| {
            let archive = Archive::open(data).at(src)?;
            archive
                .unpack_to(w, progress)
                .map_err(|e| blame(e, src, dst))
        },
    )
}
