//! Reading a model to add: a directory tree or a single file, each file memory-mapped.

use std::fs::{self, File};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use mcodec::container::Archive;
use mcodec::safetensors;
use memmap2::Mmap;

use crate::error::InputProblem;
use crate::manifest::{validate_path, MAX_FILES, MAX_PATH_DEPTH};
use crate::StoreError;

/// Files below this size are read rather than mapped.
const MAP_MIN_BYTES: u64 = 1 << 20;

/// The bytes of an input file.
pub enum Data {
    /// Read into memory.
    Owned(Vec<u8>),
    /// Memory-mapped.
    Mapped(Mmap),
}

impl Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(m) => m,
        }
    }
}

/// One file of the model.
pub struct InputFile {
    /// Path relative to the model root, `/`-separated.
    pub rel: String,
    /// Where it is.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
}

fn input_err(path: &Path, problem: impl Into<InputProblem>) -> StoreError {
    StoreError::Input {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Reads (or maps) a file.
pub fn load(path: &Path) -> Result<Data, StoreError> {
    let file = File::open(path).map_err(|e| input_err(path, e))?;
    let len = file.metadata().map_err(|e| input_err(path, e))?.len();
    if len < MAP_MIN_BYTES {
        let mut v = Vec::with_capacity(len as usize);
        io::Read::read_to_end(&mut &file, &mut v).map_err(|e| input_err(path, e))?;
        return Ok(Data::Owned(v));
    }
    // SAFETY: the map is read-only and dropped before `add` returns. Another process
    // truncating the file meanwhile could fault this one, as with any mapped input; a
    // concurrent change of its bytes is caught because every tensor's key is its hash and
    // `get` verifies it.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| input_err(path, e))?;
    Ok(Data::Mapped(map))
}

/// Suffix of a packed file (`mcodec pack`); `X.safetensors.mcz` is stored as the
/// `X.safetensors` it unpacks to, tensor by tensor (STORE.md §5).
pub const PACKED_SUFFIX: &str = ".mcz";

/// Loads a file of the model; a packed safetensors file (`X.safetensors.mcz`) is unpacked,
/// every tensor checked against the archive's checksums, and renamed `X.safetensors`.
pub fn load_unpacking(file: &mut InputFile) -> Result<Data, StoreError> {
    let data = load(&file.path)?;
    let Some(unpacked) = file
        .rel
        .strip_suffix(PACKED_SUFFIX)
        .filter(|s| s.ends_with(".safetensors"))
    else {
        return Ok(data);
    };
    let packed = |e| input_err(&file.path, InputProblem::Packed(e));
    // Archive::open bounds the claimed original length by the file's own size
    // (container::MAX_EXPANSION per byte) before anything is sized by it.
    let archive = Archive::open(&data).map_err(packed)?;
    let mut out = vec![0u8; archive.index().original_len as usize];
    archive.unpack_into(&mut out).map_err(packed)?;
    file.rel = unpacked.to_owned();
    Ok(Data::Owned(out))
}

/// Refuses a model in which a packed file unpacks to the name of another of its files.
pub fn check_unpacked_names(files: &[LoadedFile]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    for f in files {
        if !seen.insert(f.file.rel.as_str()) {
            return Err(input_err(
                &f.file.path,
                InputProblem::UnpackedNameTaken {
                    name: f.file.rel.clone(),
                },
            ));
        }
    }
    Ok(())
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() {
            0o444
        } else {
            0o644
        }
    }
}

/// The files of `path`: the file itself (single-file model, returns `true`), or every
/// regular file under the directory, sorted, symlinks followed. Empty directories are not
/// recorded; FIFOs, sockets and devices are refused.
pub fn collect(path: &Path) -> Result<(bool, Vec<InputFile>), StoreError> {
    let meta = fs::metadata(path).map_err(|e| input_err(path, e))?;
    if meta.is_file() {
        let rel = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| input_err(path, InputProblem::NotUtf8))?
            .to_owned();
        validate_path(&rel).map_err(|e| input_err(path, InputProblem::Path(e)))?;
        return Ok((
            true,
            vec![InputFile {
                rel,
                path: path.to_owned(),
                mode: mode_of(&meta),
            }],
        ));
    }
    if !meta.is_dir() {
        return Err(input_err(path, InputProblem::NotFileOrDir));
    }
    let mut files = Vec::new();
    walk(path, "", 0, &mut files)?;
    Ok((false, files))
}

fn walk(dir: &Path, rel: &str, depth: usize, out: &mut Vec<InputFile>) -> Result<(), StoreError> {
    if depth >= MAX_PATH_DEPTH {
        return Err(input_err(
            dir,
            InputProblem::TooDeep {
                limit: MAX_PATH_DEPTH,
            },
        ));
    }
    let mut names = fs::read_dir(dir)
        .map_err(|e| input_err(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| input_err(dir, e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let name = name
            .to_str()
            .ok_or_else(|| input_err(&path, InputProblem::NotUtf8))?;
        let rel = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::metadata(&path).map_err(|e| input_err(&path, e))?;
        if meta.is_dir() {
            walk(&path, &rel, depth + 1, out)?;
        } else if meta.is_file() {
            validate_path(&rel).map_err(|e| input_err(&path, InputProblem::Path(e)))?;
            if out.len() >= MAX_FILES {
                return Err(input_err(
                    dir,
                    InputProblem::TooManyFiles { limit: MAX_FILES },
                ));
            }
            out.push(InputFile {
                rel,
                path,
                mode: mode_of(&meta),
            });
        } else {
            return Err(input_err(&path, InputProblem::NotFileOrDir));
        }
    }
    Ok(())
}

/// One safetensors tensor of an input file.
pub struct InputTensor<'a> {
    pub info: safetensors::TensorInfo,
    pub bytes: &'a [u8],
}

/// An input file, loaded and (for safetensors) parsed.
pub struct LoadedFile {
    pub file: InputFile,
    pub data: Data,
    /// For a safetensors file, its parsed header and a copy of the header's bytes.
    pub header: Option<(safetensors::Header, Vec<u8>)>,
}

impl LoadedFile {
    pub fn tensors(&self) -> Vec<InputTensor<'_>> {
        self.header.as_ref().map_or_else(Vec::new, |(h, _)| {
            h.tensors
                .iter()
                .map(|t| InputTensor {
                    info: t.clone(),
                    bytes: &self.data[t.range.start as usize..t.range.end as usize],
                })
                .collect()
        })
    }
}
