//! `mcodec pack`: a safetensors (or raw) file to `.mcz`, or a directory tree with every
//! `*.safetensors` packed and everything else copied.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mcodec::container::{pack, ContainerError, PackOptions};

use super::tree::{self, Step};
use super::{blame, file_done};
use crate::error::{Classify, CliError, Context, Failure};
use crate::fsutil::{self, name_str};
use crate::progress::Bar;
use crate::{Global, PackArgs};

/// Suffix of packed files.
pub const MCZ: &str = ".mcz";
/// Suffix of the files directory mode packs.
pub const SAFETENSORS: &str = ".safetensors";

/// Runs `pack`.
pub fn run(a: &PackArgs, g: &Global) -> Result<(), CliError> {
    let mut opts = PackOptions::new().encode(a.level.options(a.chunk_log2));
    opts.raw_dtype = a.dtype.clone();
    let stdin = fsutil::is_stdio(&a.input);
    let is_dir = !stdin && fs::metadata(&a.input).at(&a.input)?.is_dir();
    let out = match &a.output {
        Some(o) => o.clone(),
        // Standard input has no name to extend: the output goes to standard output.
        None if stdin => PathBuf::from(fsutil::STDIO),
        None => fsutil::with_suffix(&a.input, MCZ)?,
    };
    if a.rm {
        fsutil::check_rm(&a.input, &out, is_dir)?;
    }
    if is_dir {
        if a.dtype.is_some() {
            return Err(CliError::usage(
                &a.input,
                "--dtype applies to a single file, not a directory",
            ));
        }
        if fsutil::is_stdio(&out) {
            return Err(CliError::usage(
                &a.input,
                "a directory packs to a directory, not to standard output",
            ));
        }
        pack_dir(&a.input, &out, &opts, g)
    } else {
        pack_file(&a.input, &out, &opts, g, a.rm)
    }
}

/// Packs one file (or standard input); with `remove`, removes `input` once `out` is
/// written, synced and decodes to the input's checksums.
fn pack_file(
    input: &Path,
    out: &Path,
    opts: &PackOptions,
    g: &Global,
    remove: bool,
) -> Result<(), CliError> {
    let (from_stdin, to_stdout) = (fsutil::is_stdio(input), fsutil::is_stdio(out));
    if !to_stdout {
        fsutil::check_output(out, g.force, false)?;
        if !from_stdin {
            fsutil::check_distinct(input, out, false)?;
        }
    }
    let start = Instant::now();
    let input_path = input;
    let data = fsutil::read_input(input)?;
    let (input, out_name) = (fsutil::input_name(input), fsutil::output_name(out));
    let bar = Bar::bytes(data.len() as u64, g.quiet);
    let pack_into = |w: &mut (dyn Write + Send)| {
        pack(&data, opts, w, &|d| bar.set(d)).map_err(|e| match e {
            ContainerError::Safetensors(_) => CliError::at_kind(
                input,
                e.failure(),
                format!("{e} (pack other files with an explicit --dtype)"),
            ),
            e => blame(e, input, out_name),
        })
    };
    // (The whole input is checked as safetensors before the first byte is written, so
    // standard output gets a whole file or nothing but for a failed write.)
    let stats = if to_stdout {
        fsutil::write_stdout(g.force, |w| pack_into(w))?
    } else {
        let perms = if from_stdin {
            fsutil::new_file_permissions()
        } else {
            Some(fs::metadata(input).at(input)?.permissions())
        };
        fsutil::write_atomic(out, g.force, perms, |w| pack_into(w))?
    };
    drop(bar);
    if remove {
        // The file as it lies on disk, decoded whole: every tensor and the header must
        // match the checksums taken from the input while packing.
        let written = fs::File::open(out).at(out_name)?;
        mcodec::container::Archive::open_file(&written)
            .and_then(|archive| archive.verify(&|_| {}))
            .at(out_name)?;
        drop(data);
        fsutil::remove_input(input_path, out)?;
    }
    file_done(
        g,
        input,
        out_name,
        stats.original_len,
        stats.packed_len,
        true,
        start,
    )
}

fn pack_dir(input: &Path, out: &Path, opts: &PackOptions, g: &Global) -> Result<(), CliError> {
    fsutil::check_output(out, g.force, true)?;
    fsutil::check_distinct(input, out, true)?;
    let start = Instant::now();
    // Validating every header first means a bad file fails the run before any work.
    let steps: Vec<Step> = tree::plan(input, |path, rel, len| {
        let name = name_str(rel).unwrap_or("");
        if name.ends_with(SAFETENSORS) {
            let data = fsutil::map_walked(input, rel)?;
            mcodec::safetensors::parse(&data, data.len() as u64)
                .map_err(|e| CliError::at(path, ContainerError::Safetensors(e)))?;
            let mut dst = rel.as_os_str().to_owned();
            dst.push(MCZ);
            Ok(Some((PathBuf::from(dst), len)))
        } else if name.ends_with(&format!("{SAFETENSORS}{MCZ}")) {
            // Unpacking would turn it into a .safetensors file: no faithful round trip.
            Err(CliError::at_kind(
                path,
                Failure::Unsupported,
                "already a packed file; the directory would not unpack to the same tree",
            ))
        } else {
            Ok(None)
        }
    })?;
    tree::run(
        input,
        out,
        g,
        true,
        start,
        &steps,
        |data, src, dst, w, progress| {
            pack(data, opts, w, progress).map_err(|e| blame(e, src, dst))?;
            Ok(())
        },
    )
}
