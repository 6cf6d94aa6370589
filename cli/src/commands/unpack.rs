//! `mcodec unpack`: an `.mcz` file back to the original, or a packed directory tree back
//! to the tree it was made from.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mcodec::container::Archive;

use super::pack::{MCZ, SAFETENSORS};
use super::tree::{self, Step};
use super::{blame, file_done, PackedInput};
use crate::error::{CliError, Context, Failure};
use crate::fsutil::{self, name_str};
use crate::progress::Bar;
use crate::{Global, UnpackArgs};

/// Runs `unpack`.
pub fn run(a: &UnpackArgs, g: &Global) -> Result<(), CliError> {
    let stdin = fsutil::is_stdio(&a.input);
    let is_dir = !stdin && fs::metadata(&a.input).at(&a.input)?.is_dir();
    let out = match &a.output {
        Some(o) => o.clone(),
        // Standard input has no name to strip: the output goes to standard output.
        None if stdin => PathBuf::from(fsutil::STDIO),
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
    if a.rm {
        fsutil::check_rm(&a.input, &out, is_dir)?;
    }
    if is_dir {
        if fsutil::is_stdio(&out) {
            return Err(CliError::usage(
                &a.input,
                "a packed directory unpacks to a directory, not to standard output",
            ));
        }
        unpack_dir(&a.input, &out, g)
    } else {
        unpack_file(&a.input, &out, g, a.rm)
    }
}

/// Unpacks one file (or standard input); with `remove`, removes `input` once `out` is
/// written (every checksum checked on the way) and synced.
fn unpack_file(input: &Path, out: &Path, g: &Global, remove: bool) -> Result<(), CliError> {
    let (from_stdin, to_stdout) = (fsutil::is_stdio(input), fsutil::is_stdio(out));
    if !to_stdout {
        fsutil::check_output(out, g.force, false)?;
        if !from_stdin {
            fsutil::check_distinct(input, out, false)?;
        }
    }
    let start = Instant::now();
    let input_path = input;
    let source = PackedInput::open(input)?;
    let archive = source.archive(input)?;
    let (input, out_name) = (fsutil::input_name(input), fsutil::output_name(out));
    let original = archive.index().original_len;
    archive.prefetch();
    if to_stdout {
        // What reaches standard output cannot be taken back: every checksum is checked
        // first (a decode that writes nothing), so damaged input writes no byte.
        archive.verify(&|_| {}).at(input)?;
    }
    let bar = Bar::bytes(original, g.quiet);
    let unpack_into = |w: &mut (dyn Write + Send)| {
        archive
            .unpack_to(w, &|d| bar.set(d))
            .map_err(|e| blame(e, input, out_name))
    };
    if to_stdout {
        fsutil::write_stdout(g.force, |w| unpack_into(w))?;
    } else {
        fsutil::write_atomic(out, g.force, source.permissions(), |w| unpack_into(w))?;
    }
    drop(bar);
    let packed_len = source.len();
    if remove {
        // (The archive maps the input: unmapped first, as it is about to go.)
        drop(archive);
        drop(source);
        fsutil::remove_input(input_path, out)?;
    }
    file_done(g, input, out_name, packed_len, original, false, start)
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
        let dst: PathBuf = fsutil::strip_suffix(rel, MCZ)?.ok_or_else(|| {
            CliError::at_kind(path, Failure::Invalid, "cannot derive the unpacked name")
        })?;
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
