//! Reading one model's parts without writing it out: the API the Python bindings use.
//!
//! [`Store::model`] gives a model's files and tensors (names, dtypes, shapes, lengths);
//! [`Store::read_tensor_into`] decodes one tensor into a buffer the caller owns (a NumPy
//! array, say), verified against the tensor's key; [`Store::read_file`] gives the bytes of
//! a file stored whole and [`Store::read_safetensors_header`] the header of a safetensors
//! file. Every read applies the same checks and limits as `get`.

use crate::error::{Result, StoreError};
use crate::manifest::{FileEntry, Manifest, TensorEntry};
use crate::Store;

/// A stored model: its manifest, read and validated once.
#[derive(Clone, Debug)]
pub struct Model {
    manifest: Manifest,
}

impl Model {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Its files in path order: each a safetensors file (with its tensors, in file order)
    /// or a file stored whole.
    pub fn files(&self) -> &[FileEntry] {
        &self.manifest.files
    }

    /// Every tensor with the path of its file.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorEntry)> {
        self.manifest.files.iter().flat_map(|f| {
            f.safetensors
                .iter()
                .flat_map(|st| &st.tensors)
                .map(move |t| (f.path.as_str(), t))
        })
    }

    /// The tensor `name` of the file `path`.
    pub fn tensor(&self, path: &str, name: &str) -> Option<&TensorEntry> {
        self.tensors()
            .find(|(p, t)| *p == path && t.name == name)
            .map(|(_, t)| t)
    }

    /// The full manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

impl Store {
    /// The model `name`, for reading its parts.
    pub fn model(&self, name: &str) -> Result<Model> {
        Ok(Model {
            manifest: self.manifest(name)?,
        })
    }

    /// Decodes tensor `t` (of a [`Model`] of this store) into `out`, which must be exactly
    /// `t.len` bytes, and verifies the bytes against the tensor's key. On error `out`
    /// holds unspecified bytes.
    pub fn read_tensor_into(&self, t: &TensorEntry, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 != t.len {
            return Err(StoreError::BufferLength {
                tensor: t.name.clone(),
                expected: t.len,
                found: out.len() as u64,
            });
        }
        if t.inline.is_none() {
            self.check_claim(t)?;
        }
        self.get_tensor_into(t, out)
    }

    /// The bytes of file `f` when it is stored whole (not a safetensors file), verified.
    pub fn read_file(&self, f: &FileEntry) -> Result<Vec<u8>> {
        let key = f.blob.ok_or_else(|| StoreError::NotBlobFile {
            path: f.path.clone(),
        })?;
        self.get_blob(&key, f.size)
    }

    /// The header of safetensors file `f` (the 8-byte length, the JSON header with its
    /// metadata, and its padding: the file's first bytes up to the tensor data), verified;
    /// `None` for a file stored whole.
    pub fn read_safetensors_header(&self, f: &FileEntry) -> Result<Option<Vec<u8>>> {
        f.safetensors
            .as_ref()
            .map(|st| self.get_blob(&st.header, st.header_len))
            .transpose()
    }
}
