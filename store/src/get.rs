//! `get`: a model back to a directory, every file verified, the directory renamed into
//! place only when complete (STORE.md §6).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mcodec::container::{pack, PackOptions};
use rayon::prelude::*;

use crate::error::{out_err, Result, StoreError};
use crate::input::PACKED_SUFFIX;
use crate::manifest::{FileEntry, SafetensorsEntry};
use crate::outdir::{check_output, DirOutput, OutputError};
use crate::progress::{Progress, ProgressFn};
use crate::report::GetReport;
use crate::writer::{write_at, PieceWriter};
use crate::Store;

/// Where a `get` writes a model's files, and how.
#[derive(Clone, Copy)]
struct Target<'a> {
    /// The output directory being built.
    dir: &'a DirOutput,
    /// Where it is going (errors name paths under it).
    out: &'a Path,
    /// Whether every file is synced to disk.
    sync: bool,
    /// Safetensors files are written packed with these options when given.
    pack: Option<&'a PackOptions>,
    /// Reports the bytes written.
    progress: &'a Progress<'a>,
}

impl Store {
    /// `force`): every file rebuilt and verified in a temporary directory beside `out`,
    /// then renamed into place. With `sync`, files are flushed to disk first.
    pub fn get(&self, name: &str, out: &Path, force: bool, sync: bool) -> Result<GetReport> {
        self.get_with_progress(name, out, force, sync, &|_, _| {})
    }

    /// [`Self::get`], reporting the bytes of the model written so far to `progress`.
    pub fn get_with_progress(
        &self,
        name: &str,
        out: &Path,
        force: bool,
        sync: bool,
        progress: &ProgressFn<'_>,
    ) -> Result<GetReport> {
        self.par(|| self.get_inner(name, out, force, sync, None, progress))
    }

    /// Like [`Self::get`], but every safetensors file is written packed with `opts`, as
    /// `mcodec pack` would (`X.safetensors` becomes `X.safetensors.mcz`, byte for byte what
    /// packing the file gives); other files are written as they are.
    pub fn get_packed(
        &self,
        name: &str,
        out: &Path,
        force: bool,
        sync: bool,
        opts: &PackOptions,
    ) -> Result<GetReport> {
        self.par(|| self.get_inner(name, out, force, sync, Some(opts), &|_, _| {}))
    }

    fn get_inner(
        &self,
        name: &str,
        out: &Path,
        force: bool,
        sync: bool,
        pack: Option<&PackOptions>,
        progress: &ProgressFn<'_>,
    ) -> Result<GetReport> {
        let m = self.manifest(name)?;
        check_output(out, force, true)?;
        let dir = DirOutput::new(out, force)?;
        let progress = Progress::new(progress, m.files.iter().map(|f| f.size).sum());
        // The safetensors files first, one at a time (their tensors in parallel), then the
        // other files in parallel: writing every file in parallel, so that small files'
        // blobs decode beside the tensors, was measured slower (73.1 against 69.8 ms, 15
        // alternating runs; again in the thirteenth session: tensors 44.0 against 35.8
        // ms), but the blobs one after another left one thread idle for ~2–3 ms at the end.
        let target = Target {
            dir: &dir,
            out,
            sync,
            pack,
            progress: &progress,
        };
        self.get_files(&m.files, &target)?;
        let report = GetReport {
            files: m.files.len(),
            bytes: m.files.iter().map(|f| f.size).sum(),
        };
        if sync {
            File::open(dir.root())
                .and_then(|d| d.sync_all())
                .map_err(out_err(out))?;
        }
        dir.finish()?;
        progress.finish();
        Ok(report)
    }

    /// Writes every file of `files` into `to`, as [`Self::get_file`] does: the safetensors files one after another (their tensors
    /// decode on every thread), then the other files (blobs) each on any thread, largest
    /// first, so that the small ones even out the threads' ends (one after another they
    /// left the other thread idle: 2.8 → 1.5 ms from the last tensor write to the rename
    /// of a 46 MB `get`, BENCHMARKS.md thirteenth session). Returns the error of the first
    /// failing file in file order, as a serial loop would; once a file fails, the files
    /// after it in file order are not started.
    fn get_files(&self, files: &[FileEntry], to: &Target<'_>) -> Result<()> {
        let failed_at = AtomicUsize::new(usize::MAX);
        let errors: Mutex<Vec<(usize, StoreError)>> = Mutex::new(Vec::new());
        let run = |i: usize| {
            if i > failed_at.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = self.get_file(&files[i], to) {
                failed_at.fetch_min(i, Ordering::Relaxed);
                errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, e));
            }
        };
        let (st, mut blobs): (Vec<usize>, Vec<usize>) =
            (0..files.len()).partition(|&i| files[i].safetensors.is_some());
        st.into_iter().for_each(run);
        blobs.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
        blobs.par_iter().with_max_len(1).for_each(|&i| run(i));
        let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
        match errors.into_iter().min_by_key(|(i, _)| *i) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes the model file `f` into `to`: its bytes, packed when asked, and its mode.
    fn get_file(&self, f: &FileEntry, to: &Target<'_>) -> Result<()> {
        let Target {
            dir,
            out,
            sync,
            pack,
            progress,
        } = *to;
        let dest = dir.path(Path::new(&f.path));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(out_err(out))?;
        }
        self.write_file(f, &dest, sync, progress)
            .map_err(|e| match e {
                // Named by where the file is going, not where it is being built.
                StoreError::Output(OutputError::Io { source, .. }) => {
                    OutputError::io(&out.join(&f.path), source).into()
                }
                e => e,
            })?;
        let dest = match pack.filter(|_| f.safetensors.is_some()) {
            Some(opts) => {
                let packed_rel = format!("{}{PACKED_SUFFIX}", f.path);
                let packed = dir.path(Path::new(&packed_rel));
                pack_file(&dest, &packed, opts, sync)
                    .map_err(|e| OutputError::io(&out.join(&packed_rel), e))?;
                fs::remove_file(&dest).map_err(out_err(out))?;
                packed
            }
            None => dest,
        };
        set_mode(&dest, f.mode).map_err(out_err(out))?;
        Ok(())
    }

    /// Writes one file of a model to `dest`.
    fn write_file(
        &self,
        f: &FileEntry,
        dest: &Path,
        sync: bool,
        progress: &Progress<'_>,
    ) -> Result<()> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(out_err(dest))?;
        if let Some(key) = &f.blob {
            self.with_blob(key, f.size, |bytes| {
                (&file).write_all(bytes).map_err(out_err(dest))
            })?;
            progress.advance(f.size);
        } else if let Some(st) = &f.safetensors {
            if f.size > 0 {
                self.check_claims(st)?;
                file.set_len(f.size).map_err(out_err(dest))?;
                // Tensors that decode in pieces (ULP deltas, split-coded objects) are
                // written with positioned writes, each piece from a buffer of its thread
                // where it was decoded and hashed while in cache (`pieces`): their pages
                // are never mapped into this process (no page faults, no zeroing of fresh
                // pages before they are written, no unmapping of them all on one thread
                // at the end, a serial 6–8 ms of a 46 MB `get`). The others (BitX deltas,
                // stored and zstd objects) are decoded in place into a map of the file,
                // not populated up front: each tensor's pages are mapped by the thread
                // that decodes it (the tensor decoder's prefault of each chunk pair), and
                // only the pages written through the map are mapped at all.
                // SAFETY: the file was just created by us in a private temporary directory
                // and has the length set above; nothing else maps or truncates it.
                let mut map =
                    unsafe { memmap2::MmapOptions::new().map_mut(&file) }.map_err(out_err(dest))?;
                let header = self.get_blob(&st.header, st.header_len)?;
                write_at(&file, &header, 0).map_err(out_err(dest))?;
                let mut rest = &mut map[header.len()..];
                let mut at = header.len() as u64;
                let mut tensors = Vec::with_capacity(st.tensors.len());
                for t in &st.tensors {
                    let (s, tail) = std::mem::take(&mut rest).split_at_mut(t.len as usize);
                    tensors.push((t, at, s));
                    at += t.len;
                    rest = tail;
                }
                let pieces = PieceWriter::new(&file);
                tensors.into_par_iter().try_for_each(|(t, start, whole)| {
                    self.write_tensor(t, whole, &|offset, buf, n| {
                        pieces.write(start + offset, buf, n).map_err(out_err(dest))
                    })?;
                    progress.advance(t.len);
                    Ok::<(), StoreError>(())
                })?;
                pieces.finish().map_err(out_err(dest))?;
                if sync {
                    map.flush().map_err(out_err(dest))?;
                }
            }
        }
        if sync {
            file.sync_all().map_err(out_err(dest))?;
        }
        Ok(())
    }
}

impl Store {
    /// Refuses a file whose tensors claim more bytes than their objects may decode to,
    /// before the file is sized by those claims (inline tensors are bounded by manifest
    /// validation).
    fn check_claims(&self, st: &SafetensorsEntry) -> Result<()> {
        st.tensors
            .par_iter()
            .filter(|t| t.inline.is_none())
            .try_for_each(|t| self.check_claim(t))
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let mut p = fs::metadata(path)?.permissions();
        p.set_readonly(mode & 0o200 == 0);
        fs::set_permissions(path, p)
    }
}

/// Packs the safetensors file `src` into the new file `dest`.
fn pack_file(src: &Path, dest: &Path, opts: &PackOptions, sync: bool) -> std::io::Result<()> {
    let input = File::open(src)?;
    // SAFETY: `src` was written by this get in its private temporary directory and is not
    // changed while mapped.
    let map = unsafe { memmap2::Mmap::map(&input) }?;
    let file = File::options().write(true).create_new(true).open(dest)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
    pack(&map, opts, &mut w, &|_| {}).map_err(std::io::Error::other)?;
    w.flush()?;
    drop(w);
    if sync {
        file.sync_all()?;
    }
    Ok(())
}
