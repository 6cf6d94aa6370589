//! Model manifests (STORE.md §4): the JSON document that makes a model visible, listing
//! its files and, for safetensors files, the header blob and one object per tensor.
//!
//! [`Manifest::parse`] is strict: unknown or duplicate fields, a wrong format tag or
//! version, names or paths that could escape a directory, sizes that do not add up and
//! counts over the limits are refused with a typed error before anything is trusted.

use std::collections::HashSet;

use mcodec::{Dtype, ShapeError};
use serde::{Deserialize, Serialize};

use crate::key::ObjectKey;
use crate::object::MAX_EXPANSION;

/// The `format` field of every manifest.
pub const FORMAT: &str = "mcodec-store-manifest";
/// Manifest version written and read (2: tensor entries carry `key`, and delta objects
/// are named by [`ObjectKey::delta`]).
pub const VERSION: u32 = 2;
/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// Most files in one model.
pub const MAX_FILES: usize = 100_000;
/// Most tensors in one model.
pub const MAX_TENSORS: usize = 1_000_000;
/// Most `/`-separated segments of a model name (`org/name` has two).
pub const MAX_NAME_SEGMENTS: usize = 4;
/// Longest model name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest relative file path.
pub const MAX_PATH_LEN: usize = 4096;
/// Most components of a relative file path.
pub const MAX_PATH_DEPTH: usize = 32;
/// Largest inline object.
pub const MAX_INLINE_BYTES: usize = 3072;
/// Longest tensor name (safetensors names are JSON keys; this bounds them).
pub const MAX_TENSOR_NAME_LEN: usize = 1024;

/// Errors of manifest parsing and of name checks.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest is larger than the limit (64 MiB; STORE.md §4).
    #[error("manifest of {len} bytes exceeds {limit}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON of the manifest's shape (unknown, duplicate or missing fields included).
    #[error("manifest is not valid: {0}")]
    Json(String),
    /// The format tag is not `"mcodec-store-manifest"`.
    #[error("not a manifest: format {0:?}")]
    Format(String),
    /// A version this code does not read.
    #[error("manifest version {found}, this build reads {supported}")]
    Version {
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// A model name is not allowed.
    #[error("model name {name:?}: {problem}")]
    Name {
        /// The name (cut to 80 characters).
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A file path is not a safe relative path.
    #[error("file path {path:?}: {problem}")]
    Path {
        /// The path (cut to 80 characters).
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A model is named as its own delta base.
    #[error("model {name:?} is its own base")]
    OwnBase {
        /// The model name.
        name: String,
    },
    /// More files than a manifest may list.
    #[error("{count} files, limit {max}")]
    FileCount {
        /// Files listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A single-file model lists another number of files than one.
    #[error("single-file model lists {count} files")]
    SingleFileCount {
        /// Files listed.
        count: usize,
    },
    /// The file of a single-file model lies in a directory.
    #[error("single file {path:?} has a directory")]
    SingleFileDir {
        /// The path (cut to 80 characters).
        path: String,
    },
    /// A file mode has bits beyond the permission bits.
    #[error("file {path:?}: mode {mode:o}")]
    Mode {
        /// The path (cut to 80 characters).
        path: String,
        /// The mode.
        mode: u32,
    },
    /// A path is listed twice.
    #[error("file {path:?} listed twice")]
    DuplicatePath {
        /// The path (cut to 80 characters).
        path: String,
    },
    /// More tensors than a manifest may list.
    #[error("more than {max} tensors")]
    TensorCount {
        /// The limit.
        max: usize,
    },
    /// A file has both or neither of a blob and a safetensors entry.
    #[error("file {path:?} needs exactly one of blob and safetensors")]
    FileKind {
        /// The path (cut to 80 characters).
        path: String,
    },
    /// A path is both a file and the directory of another file.
    #[error("{path:?} is both a file and a directory")]
    FileAndDirectory {
        /// The path (cut to 80 characters).
        path: String,
    },
    /// A safetensors file's entry does not add up.
    #[error("file {path:?}: {problem}")]
    File {
        /// The path (cut to 80 characters).
        path: String,
        /// What is wrong (boxed: it can carry three object keys).
        problem: Box<FileProblem>,
    },
}

/// What is wrong with a safetensors file's manifest entry.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileProblem {
    /// The header length is outside what a safetensors header can be.
    #[error("header of {found} bytes outside 8..={max}")]
    HeaderLen {
        /// The length.
        found: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A tensor name is empty or too long.
    #[error("tensor name of {len} bytes outside 1..={max}")]
    TensorName {
        /// Its length.
        len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// A dtype name is empty, too long or has control characters.
    #[error("tensor {tensor:?}: bad dtype name")]
    Dtype {
        /// Tensor name (cut to 80 characters).
        tensor: String,
    },
    /// A tensor's rank exceeds the limit.
    #[error("tensor {tensor:?}: rank {rank}")]
    Rank {
        /// Tensor name (cut to 80 characters).
        tensor: String,
        /// Its rank.
        rank: usize,
    },
    /// Shape and dtype do not make the tensor's length.
    #[error("tensor {tensor:?}: {source}")]
    Shape {
        /// Tensor name (cut to 80 characters).
        tensor: String,
        /// Shape, dtype and length.
        source: ShapeError,
    },
    /// An inline object is too large or belongs to a delta.
    #[error("tensor {tensor:?}: inline object of {len} bytes (limit {max}, plain only)")]
    Inline {
        /// Tensor name (cut to 80 characters).
        tensor: String,
        /// The inline object's bytes.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// An inline object claims more decoded bytes than the expansion limit allows.
    #[error("tensor {tensor:?}: {claimed} bytes claimed by a {len}-byte inline object exceed the limit of {allowed}")]
    InlineExpansion {
        /// Tensor name (cut to 80 characters).
        tensor: String,
        /// Decoded bytes claimed.
        claimed: u64,
        /// The inline object's bytes.
        len: usize,
        /// The most it may claim.
        allowed: u64,
    },
    /// A tensor is a delta against itself.
    #[error("tensor {tensor:?} is a delta against itself")]
    SelfDelta {
        /// Tensor name (cut to 80 characters).
        tensor: String,
    },
    /// A plain tensor's object is not its key.
    #[error("tensor {tensor:?}: plain object {object} is not its key {key}")]
    PlainObject {
        /// Tensor name (cut to 80 characters).
        tensor: String,
        /// The object listed.
        object: ObjectKey,
        /// The tensor's key.
        key: ObjectKey,
    },
    /// A delta tensor's object is not the delta name of its key against its base.
    #[error("tensor {tensor:?}: delta object {object} is not the delta name of key {key} against base {base}")]
    DeltaObject {
        /// Tensor name (cut to 80 characters).
        tensor: String,
        /// The object listed.
        object: ObjectKey,
        /// The tensor's key.
        key: ObjectKey,
        /// Its delta base.
        base: ObjectKey,
    },
    /// The tensor lengths overflow 64 bits.
    #[error("tensor lengths overflow")]
    LengthOverflow,
    /// Header and tensors do not make the file's size.
    #[error("header and tensors make {total} bytes, file size is {size}")]
    Size {
        /// Header and tensor bytes.
        total: u64,
        /// The file's size.
        size: u64,
    },
}

/// A model manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `"mcodec-store-manifest"`.
    pub format: String,
    /// The manifest format's version (STORE.md §4).
    pub version: u32,
    /// The model's name.
    pub name: String,
    /// The base model its deltas were computed against, if any.
    pub base: Option<BaseRef>,
    /// Whether the model was added from a single file (else a directory).
    pub single_file: bool,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
}

/// The base model of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    /// Its name.
    pub name: String,
    /// Chosen automatically (else given with `--base`).
    pub auto: bool,
}

/// One file of a model: a blob, or a safetensors file rebuilt from its header and tensors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the model directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits (`0o777` mask).
    pub mode: u32,
    /// The whole file as one blob (exclusive with `safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<ObjectKey>,
    /// The file as header and tensors (exclusive with `blob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safetensors: Option<SafetensorsEntry>,
}

/// A safetensors file: its header bytes and tensors in file order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetensorsEntry {
    /// Blob of the bytes before the first tensor (length prefix and JSON header).
    pub header: ObjectKey,
    /// Length of those bytes.
    pub header_len: u64,
    /// Tensors in file order; they follow the header without gaps.
    pub tensors: Vec<TensorEntry>,
}

/// One tensor of a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Dtype name as in safetensors.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte length.
    pub len: u64,
    /// The tensor's key ([`ObjectKey::tensor`] of its dtype, shape and bytes).
    pub key: ObjectKey,
    /// The object holding it: `key` itself for a plain object, else
    /// [`ObjectKey::delta`]`(key, delta_base)`.
    pub object: ObjectKey,
    /// The plain object (a tensor key) that `object` is a delta against, if it is a delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_base: Option<ObjectKey>,
    /// The object's bytes, for a small plain object kept in the manifest instead of the
    /// backend (a file per 1 KiB bias would cost a 4 KiB block on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineBytes>,
}

/// Bytes of an inline object, written as standard base64 (with padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineBytes(pub Vec<u8>);

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Value of each byte as a base64 digit, [`NOT_B64`] for a byte that is not one: a lookup
/// per character, not a search of [`B64`] (which took about 1 ms of the serial start of a
/// `store get` of MiniLM's fine-tune, for its 65 inline tensors).
const B64_VALUE: [u8; 256] = {
    let mut t = [NOT_B64; 256];
    let mut i = 0;
    while i < 64 {
        t[B64[i] as usize] = i as u8;
        i += 1;
    }
    t
};
const NOT_B64: u8 = 0xFF;

impl InlineBytes {
    /// Standard base64 with padding.
    pub fn to_base64(&self) -> String {
        let mut s = String::with_capacity(self.0.len().div_ceil(3) * 4);
        for c in self.0.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                if k <= c.len() {
                    s.push(B64[(n >> (18 - 6 * k)) as usize & 63] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    /// Parses canonical standard base64 (padding required, no whitespace, unused bits
    /// zero), so every byte string has exactly one spelling.
    pub fn from_base64(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if !b.len().is_multiple_of(4) {
            return Err(format!(
                "base64 of length {} is not a multiple of 4",
                b.len()
            ));
        }
        let val = |c: u8| Some(B64_VALUE[usize::from(c)]).filter(|&v| v != NOT_B64);
        let mut out = Vec::with_capacity(b.len() / 4 * 3);
        for (i, q) in b.chunks(4).enumerate() {
            let last = i + 1 == b.len() / 4;
            let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && !last) {
                return Err("misplaced base64 padding".into());
            }
            let mut n = 0u32;
            for &c in &q[..4 - pad] {
                n = (n << 6)
                    | u32::from(val(c).ok_or_else(|| format!("{:?} is not base64", c as char))?);
            }
            n <<= 6 * pad as u32;
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            let keep = 3 - pad;
            if bytes[keep..].iter().any(|&x| x != 0) {
                return Err("non-canonical base64".into());
            }
            out.extend_from_slice(&bytes[..keep]);
        }
        Ok(Self(out))
    }
}

impl Serialize for InlineBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for InlineBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

impl TensorEntry {
    /// The dtype.
    pub fn dtype(&self) -> Dtype {
        Dtype::parse(&self.dtype)
    }

    /// The plain object needed to decode it: the delta base, or the object itself.
    pub fn root(&self) -> ObjectKey {
        self.delta_base.unwrap_or(self.key)
    }

    /// The object name its `key` and `delta_base` call for: the key for a plain object,
    /// the derived delta name for a delta.
    pub fn expected_object(&self) -> ObjectKey {
        match &self.delta_base {
            Some(b) => ObjectKey::delta(&self.key, b),
            None => self.key,
        }
    }
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks a model name: 1 to 128 bytes of `/`-separated segments (at most
/// [`MAX_NAME_SEGMENTS`], as in `org/name`), each of ASCII letters, digits, `.`, `_` and
/// `-`, starting with a letter or digit; no `..` anywhere. No segment is empty, `.` or
/// `..`, so a name is a safe relative path on every platform (it cannot leave the
/// store's `models/` directory) and a safe object-storage key.
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    let bad = |problem: &str| ManifestError::Name {
        name: cut(name),
        problem: problem.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(&format!(
            "is {} bytes, limit {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(bad(&format!(
            "contains {c:?}; use letters, digits, '.', '_', '-' and '/' between segments"
        )));
    }
    let segments = name.split('/').count();
    if segments > MAX_NAME_SEGMENTS {
        return Err(bad(&format!(
            "has {segments} '/'-separated segments, limit {MAX_NAME_SEGMENTS}"
        )));
    }
    if name.split('/').any(str::is_empty) {
        return Err(bad(
            "has an empty segment (a leading, trailing or double '/')",
        ));
    }
    if !name
        .split('/')
        .all(|s| s.starts_with(|c: char| c.is_ascii_alphanumeric()))
    {
        return Err(bad(
            "must start with a letter or digit (and so must each segment)",
        ));
    }
    if name.contains("..") {
        return Err(bad("contains \"..\""));
    }
    Ok(())
}

/// Checks a relative file path: `/`-separated normal components, none empty, `.` or
/// `..`, no backslash, NUL or control character, within the length and depth limits.
pub fn validate_path(path: &str) -> Result<(), ManifestError> {
    let bad = |problem: &str| ManifestError::Path {
        path: cut(path),
        problem: problem.to_owned(),
    };
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(bad(&format!(
            "length {} outside 1..={MAX_PATH_LEN}",
            path.len()
        )));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("contains a control character or backslash"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_PATH_DEPTH {
        return Err(bad(&format!(
            "{} components, limit {MAX_PATH_DEPTH}",
            parts.len()
        )));
    }
    for p in parts {
        if p.is_empty() || p == "." || p == ".." {
            return Err(bad("has an empty, '.' or '..' component (or is absolute)"));
        }
        if p.len() > 255 {
            return Err(bad("has a component over 255 bytes"));
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                len: bytes.len(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        // The tag and version are checked before the shape, so a future version gets a
        // version error rather than an unknown-field one.
        #[derive(Deserialize)]
        struct Tag {
            format: Option<serde_json::Value>,
            version: Option<serde_json::Value>,
        }
        let tag: Tag =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        match tag.format.as_ref().and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => return Err(ManifestError::Format(cut(&format!("{other:?}")))),
        }
        match tag.version.as_ref().and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => {
                return Err(ManifestError::Version {
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: VERSION,
                })
            }
            None => return Err(ManifestError::Json("version is not a number".into())),
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks everything [`Self::parse`] checks beyond the JSON shape.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format(cut(&self.format)));
        }
        if self.version != VERSION {
            return Err(ManifestError::Version {
                found: self.version,
                supported: VERSION,
            });
        }
        validate_name(&self.name)?;
        if let Some(b) = &self.base {
            validate_name(&b.name)?;
            if b.name == self.name {
                return Err(ManifestError::OwnBase {
                    name: cut(&self.name),
                });
            }
        }
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::FileCount {
                count: self.files.len(),
                max: MAX_FILES,
            });
        }
        if self.single_file && self.files.len() != 1 {
            return Err(ManifestError::SingleFileCount {
                count: self.files.len(),
            });
        }
        let mut paths = HashSet::with_capacity(self.files.len());
        let mut dirs = HashSet::new();
        let mut tensor_count = 0usize;
        for f in &self.files {
            validate_path(&f.path)?;
            if self.single_file && f.path.contains('/') {
                return Err(ManifestError::SingleFileDir { path: cut(&f.path) });
            }
            if f.mode > 0o777 {
                return Err(ManifestError::Mode {
                    path: cut(&f.path),
                    mode: f.mode,
                });
            }
            if !paths.insert(f.path.as_str()) {
                return Err(ManifestError::DuplicatePath { path: cut(&f.path) });
            }
            let mut at = 0;
            while let Some(i) = f.path[at..].find('/') {
                dirs.insert(&f.path[..at + i]);
                at += i + 1;
            }
            match (&f.blob, &f.safetensors) {
                (Some(_), None) => {}
                (None, Some(st)) => {
                    tensor_count += st.tensors.len();
                    if tensor_count > MAX_TENSORS {
                        return Err(ManifestError::TensorCount { max: MAX_TENSORS });
                    }
                    validate_safetensors(&f.path, f.size, st)?;
                }
                _ => return Err(ManifestError::FileKind { path: cut(&f.path) }),
            }
        }
        if let Some(d) = dirs.iter().find(|d| paths.contains(*d)) {
            return Err(ManifestError::FileAndDirectory { path: cut(d) });
        }
        Ok(())
    }

    /// Serialises the manifest (pretty JSON, newline-terminated).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifests serialise");
        v.push(b'\n');
        v
    }

    /// Total bytes of the model's files.
    pub fn logical_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every tensor with the path of its file.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorEntry> {
        self.files
            .iter()
            .filter_map(|f| f.safetensors.as_ref())
            .flat_map(|s| &s.tensors)
    }

    /// Every backend object the model needs, with its decoded size (delta bases
    /// included, inline objects not; an object may appear more than once).
    pub fn objects(&self) -> Vec<(ObjectKey, u64)> {
        let mut v = Vec::new();
        for f in &self.files {
            if let Some(b) = f.blob {
                v.push((b, f.size));
            }
            if let Some(st) = &f.safetensors {
                v.push((st.header, st.header_len));
                for t in st.tensors.iter().filter(|t| t.inline.is_none()) {
                    v.push((t.object, t.len));
                    if let Some(b) = t.delta_base {
                        v.push((b, t.len));
                    }
                }
            }
        }
        v
    }
}

fn validate_safetensors(path: &str, size: u64, st: &SafetensorsEntry) -> Result<(), ManifestError> {
    let bad = |problem| ManifestError::File {
        path: cut(path),
        problem: Box::new(problem),
    };
    let header_cap = mcodec::safetensors::MAX_HEADER_LEN + 8;
    if st.header_len < 8 || st.header_len > header_cap {
        return Err(bad(FileProblem::HeaderLen {
            found: st.header_len,
            max: header_cap,
        }));
    }
    let mut total = st.header_len;
    for t in &st.tensors {
        if t.name.is_empty() || t.name.len() > MAX_TENSOR_NAME_LEN {
            return Err(bad(FileProblem::TensorName {
                len: t.name.len(),
                max: MAX_TENSOR_NAME_LEN,
            }));
        }
        if t.dtype.is_empty() || t.dtype.len() > 255 || t.dtype.chars().any(char::is_control) {
            return Err(bad(FileProblem::Dtype {
                tensor: cut(&t.name),
            }));
        }
        if t.shape.len() > mcodec::safetensors::MAX_RANK {
            return Err(bad(FileProblem::Rank {
                tensor: cut(&t.name),
                rank: t.shape.len(),
            }));
        }
        t.dtype().check_shape(&t.shape, t.len).map_err(|source| {
            bad(FileProblem::Shape {
                tensor: cut(&t.name),
                source,
            })
        })?;
        if let Some(i) = &t.inline {
            if t.delta_base.is_some() || i.0.len() > MAX_INLINE_BYTES {
                return Err(bad(FileProblem::Inline {
                    tensor: cut(&t.name),
                    len: i.0.len(),
                    max: MAX_INLINE_BYTES,
                }));
            }
            let allowed = (i.0.len() as u64).saturating_mul(MAX_EXPANSION);
            if t.len > allowed {
                return Err(bad(FileProblem::InlineExpansion {
                    tensor: cut(&t.name),
                    claimed: t.len,
                    len: i.0.len(),
                    allowed,
                }));
            }
        }
        if t.delta_base == Some(t.key) {
            return Err(bad(FileProblem::SelfDelta {
                tensor: cut(&t.name),
            }));
        }
        if t.object != t.expected_object() {
            return Err(bad(match t.delta_base {
                None => FileProblem::PlainObject {
                    tensor: cut(&t.name),
                    object: t.object,
                    key: t.key,
                },
                Some(base) => FileProblem::DeltaObject {
                    tensor: cut(&t.name),
                    object: t.object,
                    key: t.key,
                    base,
                },
            }));
        }
        total = total
            .checked_add(t.len)
            .ok_or_else(|| bad(FileProblem::LengthOverflow))?;
    }
    if total != size {
        return Err(bad(FileProblem::Size { total, size }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: "ft-1.0".into(),
            base: Some(BaseRef {
                name: "base".into(),
                auto: true,
            }),
            single_file: false,
            files: vec![
                FileEntry {
                    path: "config.json".into(),
                    size: 10,
                    mode: 0o644,
                    blob: Some(ObjectKey([1; 32])),
                    safetensors: None,
                },
                FileEntry {
                    path: "sub/model.safetensors".into(),
                    size: 100 + 8,
                    mode: 0o644,
                    blob: None,
                    safetensors: Some(SafetensorsEntry {
                        header: ObjectKey([2; 32]),
                        header_len: 100,
                        tensors: vec![TensorEntry {
                            name: "w".into(),
                            dtype: "BF16".into(),
                            shape: vec![2, 2],
                            len: 8,
                            key: ObjectKey([3; 32]),
                            object: ObjectKey::delta(&ObjectKey([3; 32]), &ObjectKey([4; 32])),
                            delta_base: Some(ObjectKey([4; 32])),
                            inline: None,
                        }],
                    }),
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        assert_eq!(m.objects().len(), 4);
    }

    fn edited(f: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest, ManifestError> {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        f(&mut v);
        Manifest::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn hostile_manifests_are_refused() {
        use serde_json::json;
        let e = |f: fn(&mut serde_json::Value)| edited(f).unwrap_err();
        assert!(matches!(
            e(|v| v["extra"] = json!(1)),
            ManifestError::Json(_)
        ));
        assert!(matches!(
            e(|v| v["version"] = json!(1)),
            ManifestError::Version { found: 1, .. }
        ));
        assert!(matches!(
            e(|v| v["format"] = json!("x")),
            ManifestError::Format(_)
        ));
        assert!(matches!(
            e(|v| v["name"] = json!("../x")),
            ManifestError::Name { .. }
        ));
        assert!(matches!(
            e(|v| v["name"] = json!("a//b")),
            ManifestError::Name { .. }
        ));
        for p in ["../etc/passwd", "/abs", "a//b", "a/./b", "a\\b", "a/..", ""] {
            let r = edited(|v| v["files"][0]["path"] = json!(p));
            assert!(matches!(r, Err(ManifestError::Path { .. })), "{p}: {r:?}");
        }
        assert!(matches!(
            e(|v| v["files"][0]["path"] = json!("sub")),
            ManifestError::FileAndDirectory { ref path } if path == "sub"
        ));
        assert!(matches!(
            e(|v| v["files"][1]["size"] = json!(109)),
            ManifestError::File { ref problem, .. }
                if **problem == FileProblem::Size { total: 108, size: 109 }
        ));
        assert!(matches!(
            e(|v| v["files"][1]["safetensors"]["tensors"][0]["shape"] =
                json!([4294967296u64, 4294967296u64, 4])),
            ManifestError::File { ref problem, .. }
                if matches!(**problem, FileProblem::Shape { .. })
        ));
        assert!(matches!(
            e(|v| v["files"][0]["safetensors"] = v["files"][1]["safetensors"].clone()),
            ManifestError::FileKind { .. }
        ));
        assert!(matches!(
            e(|v| v["files"][0]["blob"] = json!("00")),
            ManifestError::Json(_)
        ));
        assert!(matches!(
            e(|v| v["base"]["name"] = json!("ft-1.0")),
            ManifestError::OwnBase { .. }
        ));
        // Object names must follow from the tensor key and the delta base.
        fn t(v: &mut serde_json::Value) -> &mut serde_json::Map<String, serde_json::Value> {
            v["files"][1]["safetensors"]["tensors"][0]
                .as_object_mut()
                .unwrap()
        }
        let (k3, k4) = (ObjectKey([3; 32]), ObjectKey([4; 32]));
        let other_base = ObjectKey::delta(&k3, &ObjectKey([5; 32]));
        type Edit<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;
        let wrong: [(&str, Edit); 5] = [
            (
                "delta named as plain",
                Box::new(|v| {
                    t(v).insert("object".into(), json!(k3));
                }),
            ),
            (
                "delta name of another base",
                Box::new(|v| {
                    t(v).insert("object".into(), json!(other_base));
                }),
            ),
            (
                "another tensor's key",
                Box::new(|v| {
                    t(v).insert("key".into(), json!(k4));
                }),
            ),
            (
                "plain under a delta name",
                Box::new(|v| {
                    t(v).remove("delta_base");
                }),
            ),
            (
                "delta against itself",
                Box::new(|v| {
                    t(v).insert("delta_base".into(), json!(k3));
                }),
            ),
        ];
        for (what, f) in &wrong {
            let r = edited(f);
            assert!(
                matches!(
                    r,
                    Err(ManifestError::File { ref problem, .. })
                        if matches!(
                            **problem,
                            FileProblem::PlainObject { .. }
                                | FileProblem::DeltaObject { .. }
                                | FileProblem::SelfDelta { .. }
                        )
                ),
                "{what}: {r:?}"
            );
        }
        let err = edited(|v| {
            t(v).insert("object".into(), json!(k3));
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not the delta name of key"), "{err}");
        let plain = edited(|v| {
            t(v).remove("delta_base");
            t(v).insert("object".into(), json!(k3));
        });
        assert!(plain.is_ok(), "{plain:?}");
        let no_key = edited(|v| {
            t(v).remove("key");
        });
        assert!(matches!(no_key, Err(ManifestError::Json(_))), "{no_key:?}");
        assert!(Manifest::parse(b"{\"format\":\"mcodec-store-manifest\",\"format\":1}").is_err());
        assert!(Manifest::parse(b"").is_err());
        assert!(Manifest::parse(&vec![b' '; MAX_MANIFEST_BYTES + 1]).is_err());
    }

    #[test]
    fn base64_is_canonical() {
        for n in 0..20u8 {
            let b = InlineBytes((0..n).map(|i| i.wrapping_mul(97)).collect());
            assert_eq!(InlineBytes::from_base64(&b.to_base64()).unwrap(), b);
        }
        assert_eq!(InlineBytes(b"foob".to_vec()).to_base64(), "Zm9vYg==");
        // Every digit, in every position of a quad.
        for shift in 0..3u8 {
            let b = InlineBytes((0..=255u8).map(|i| i.wrapping_add(shift)).collect());
            assert_eq!(InlineBytes::from_base64(&b.to_base64()).unwrap(), b);
        }
        for bad in [
            "Zm9vYh==",
            "Zm9vY",
            "Zm=vYg==",
            "Zm9v\nYg==",
            "Zg===",
            "Z===",
            "Zm9-",
            "Zm9_",
            "Zm9\u{e9}",
            "Zm9\u{ff}Yg==",
        ] {
            assert!(InlineBytes::from_base64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in [
            "a",
            "llama-3.1-8b",
            "A_b.c-9",
            "a/b",
            "meta-llama/Llama-3.1-8B",
            "a/b/c/d",
        ] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/",
            "/a",
            "a//b",
            "a/.b",
            "a/../b",
            "a/-b",
            "a/b/c/d/e",
            "a\\b",
            "-a",
            ".hidden",
            "a..b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
