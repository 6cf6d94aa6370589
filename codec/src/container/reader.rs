//! The reader: [`Archive`] opens an `.mcz` file (preamble, trailer, index, padding checks)
//! and decodes any tensor, or the whole file, checking every checksum.

use std::io;

use crate::checksum::xxh3_64;
use rayon::prelude::*;

use super::{
    ContainerError, Corruption, Index, Part, StoredForm, StreamRef, TensorEntry, BLOCK, MAGIC,
    MAX_EXPANSION, TRAILER_MAGIC, VERSION_MAJOR,
};
use crate::tensor::{self, TensorDecoder, ZstdError};

/// A readable `.mcz` file over its bytes: borrowed ([`Archive::open`]) or a memory map
/// the archive owns ([`Archive::open_path`]).
#[derive(Debug)]
pub struct Archive<'a> {
    bytes: Bytes<'a>,
    index: Index,
    /// Tensor position by name, for [`Archive::find`].
    by_name: std::collections::HashMap<String, usize>,
    /// Padding not yet checked, as byte ranges owned by the stream before them: entry 0
    /// for the header stream, `i + 1` for tensor `i`. Empty where parsing checked it.
    unchecked_padding: Vec<Vec<(u64, u64)>>,
    /// The mapped file (a duplicate descriptor), kept open for [`Archive::prefetch`] to
    /// read it through: archives from [`Archive::open_file`] on Linux.
    file: Option<std::fs::File>,
}

/// When [`Archive::parse`] checks the padding between streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PaddingCheck {
    /// While parsing (bytes already in memory).
    Now,
    /// With the stream before each gap, when its tensor (or the header) is read: a
    /// memory-mapped file's gaps lie all over it, and from a cold page cache touching
    /// them while opening costs one synchronous read each (6–18 ms to open a MiniLM
    /// archive here, a tenth of a whole cold load), while the pages next to a stream
    /// being decoded are read anyway.
    WithStreams,
}

/// Where an archive's bytes live.
#[derive(Debug)]
enum Bytes<'a> {
    Borrowed(&'a [u8]),
    /// Shared with the read-ahead thread of [`Archive::prefetch`].
    Mapped(std::sync::Arc<memmap2::Mmap>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Archive<'static> {
    /// Opens the `.mcz` file at `path` over a memory map the archive owns; checks the
    /// preamble, trailer and index, and the padding after each stream when that stream's
    /// tensor (or the header) is read. Errors are [`ContainerError::Io`] for the file
    /// itself.
    ///
    /// Like every memory-mapped reader, the archive assumes the file is not truncated or
    /// rewritten while it is open; every stream is still checked against its checksum
    /// when it is read, so a file changed underneath yields an error, not other weights.
    pub fn open_path(path: impl AsRef<std::path::Path>) -> Result<Self, ContainerError> {
        Self::open_file(&std::fs::File::open(path)?)
    }

    /// Opens an `.mcz` file already opened for reading (for example without following
    /// symbolic links) over a memory map the archive owns, as [`Archive::open_path`]
    /// does; the archive does not keep `file` itself.
    pub fn open_file(file: &std::fs::File) -> Result<Self, ContainerError> {
        // An empty file cannot be mapped on every platform; it is not an mcz file either.
        if file.metadata()?.len() == 0 {
            return Err(ContainerError::Empty);
        }
        // SAFETY: the map is read-only and private to this archive; a concurrent writer
        // can change the bytes seen, which every reader path checks against checksums
        // before trusting (see above). Truncation by another process is the documented
        // limit of memory-mapped files.
        let map = unsafe { memmap2::Mmap::map(file)? };
        // Parsing touches a few pages at both ends of the file (preamble, trailer,
        // index). From a cold page cache, each such fault would otherwise make the
        // kernel read a whole read-around window synchronously (`read_ahead_kb`, 8 MiB on
        // some machines): measured at 20–80 ms to open a 30 MB file, more than reading
        // all of it. Random access reads only the pages touched; normal read-ahead comes
        // back for the tensors. Failures of the hints are harmless and ignored.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
        let mut archive = Self::parse(
            Bytes::Mapped(std::sync::Arc::new(map)),
            PaddingCheck::WithStreams,
        )?;
        if cfg!(target_os = "linux") {
            archive.file = file.try_clone().ok();
        }
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &archive.bytes {
            let _ = map.advise(memmap2::Advice::Normal);
            // Where the page cache holds large folios, each fault of parsing maps a
            // whole folio (512 KiB to 1 MiB seen on Linux 6.18); when parsing still
            // checked the padding all over the file, a freshly opened MiniLM F32 archive
            // had 27 MB of its 74 MB file in the process's resident set before any
            // tensor was decoded. Unmap what parsing touched; the page cache keeps it.
            // SAFETY: the map is a read-only, shared mapping of a file, so dropping its
            // page mappings discards nothing: the next access maps the same file bytes
            // again, and every stream is checked against its checksum when read.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
        Ok(archive)
    }

    /// Opens an `.mcz` file held in memory that the archive takes over (bytes received
    /// over a network, say); checks the preamble, trailer and index.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, ContainerError> {
        Self::parse(Bytes::Owned(bytes), PaddingCheck::Now)
    }
}

impl<'a> Archive<'a> {
    /// Checks the preamble, trailer and index. Streams are checked when read.
    pub fn open(bytes: &'a [u8]) -> Result<Self, ContainerError> {
        Self::parse(Bytes::Borrowed(bytes), PaddingCheck::Now)
    }

    fn parse(source: Bytes<'a>, padding: PaddingCheck) -> Result<Self, ContainerError> {
        let bytes: &[u8] = &source;
        let len = bytes.len() as u64;
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err(ContainerError::NoMagic);
        }
        if len < 2 * BLOCK {
            return Err(Corruption::TooShort { len }.into());
        }
        let major = u16::from_le_bytes([bytes[8], bytes[9]]);
        if major != VERSION_MAJOR {
            return Err(ContainerError::Version {
                found: major,
                supported: VERSION_MAJOR,
            });
        }
        let t = &bytes[bytes.len() - BLOCK as usize..];
        let word = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().expect("8 bytes"));
        if t[48..56] != TRAILER_MAGIC {
            return Err(Corruption::NoTrailerMagic.into());
        }
        let stored = word(56);
        let computed = xxh3_64(&t[..56]);
        if stored != computed {
            return Err(ContainerError::Checksum {
                what: Part::Trailer,
                stored,
                computed,
            });
        }
        let (index_offset, index_len, index_sum) = (word(0), word(8), word(16));
        let form = StoredForm::from_trailer(t.try_into().expect("64 bytes"))?;
        // Bound the claimed output by the bytes really there before anything is sized
        // from the index.
        let allowed = len.saturating_mul(MAX_EXPANSION);
        if word(24) > allowed {
            return Err(ContainerError::Limit {
                what: Part::OriginalSize { file_len: len },
                requested: word(24),
                allowed,
            });
        }
        if index_offset < BLOCK
            || index_offset % form.align != 0
            || index_offset.checked_add(index_len) != Some(len - BLOCK)
        {
            return Err(Corruption::IndexPlacement {
                offset: index_offset,
                len: index_len,
                trailer: len - BLOCK,
            }
            .into());
        }
        let index_bytes = &bytes[index_offset as usize..(len - BLOCK) as usize];
        let computed = xxh3_64(index_bytes);
        if computed != index_sum {
            return Err(ContainerError::Checksum {
                what: Part::Index,
                stored: index_sum,
                computed,
            });
        }
        let index = Index::parse_stored(index_bytes, index_offset, form)?;
        if index.original_len != word(24) {
            return Err(Corruption::OriginalLen {
                trailer: word(24),
                index: index.original_len,
            }
            .into());
        }
        let mut unchecked_padding = vec![Vec::new(); index.tensors.len() + 1];
        for (owner, gap) in padding_gaps(&index, index_offset) {
            match padding {
                PaddingCheck::Now => check_gap(bytes, &index, owner, gap)?,
                PaddingCheck::WithStreams => unchecked_padding[owner].push(gap),
            }
        }
        let by_name = index
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            bytes: source,
            index,
            by_name,
            unchecked_padding,
            file: None,
        })
    }

    /// Checks the padding after tensor `i`'s streams (or, for `None`, after the header
    /// stream and before the first stream) where opening left it to the reads
    /// (memory-mapped files). Every decoder of the tensor runs this; a caller that reads
    /// streams itself ([`Archive::stream_unverified`]) calls it.
    pub fn check_padding_of(&self, i: Option<usize>) -> Result<(), ContainerError> {
        let owner = i.map_or(0, |i| i + 1);
        self.unchecked_padding
            .get(owner)
            .into_iter()
            .flatten()
            .try_for_each(|&gap| check_gap(&self.bytes, &self.index, owner, gap))
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The position in [`Index::tensors`] of the tensor called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Hints that the whole file is about to be read (archives from
    /// [`Archive::open_path`] or [`Archive::open_file`]): the kernel reads the file ahead,
    /// in order, while tensors decode, which is what makes a load from a cold page cache
    /// fast. Returns at once; a no-op for archives not over a map. Failures are ignored.
    ///
    /// On Linux a thread of its own reads the file through (`sendfile` to `/dev/null`,
    /// no copy): that takes the kernel's sequential read-ahead, which read MiniLM F32's
    /// 74 MB from a cold cache in 39 ms (median of 7) where `MADV_WILLNEED` requests of
    /// 2 MiB took 72–113 ms, and a cold load waited on them (11 % faster this way).
    /// Elsewhere, or when that cannot start, the file is requested with
    /// `MADV_WILLNEED`, window by window: one request is capped at the read-ahead window,
    /// and a request returns before its read completes but waits for room in the
    /// device's queue, so the first 32 MiB are requested here (about a millisecond) and
    /// the rest from a thread of its own.
    ///
    /// A file that looks cached already (a page every 2 MiB, `mincore`) starts nothing:
    /// on a warm load the thread only competed with the decoders for the cores.
    pub fn prefetch(&self) {
        if self.looks_cached() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let (Bytes::Mapped(map), Some(file)) = (&self.bytes, &self.file) {
            if let (Ok(file), Ok(null)) = (
                file.try_clone(),
                std::fs::OpenOptions::new().write(true).open("/dev/null"),
            ) {
                let shared = std::sync::Arc::clone(map);
                let order = self.read_order(map.len(), READ_PART);
                let spawned = std::thread::Builder::new()
                    .name("mcodec-prefetch".into())
                    .spawn(move || read_through(&shared, &file, &null, order));
                if spawned.is_ok() {
                    return;
                }
            }
        }
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &self.bytes {
            const INLINE: usize = 32 << 20;
            let inline = INLINE.min(map.len());
            advise_will_need(map, 0..inline);
            if inline < map.len() {
                let shared = std::sync::Arc::clone(map);
                let spawned = std::thread::Builder::new()
                    .name("mcodec-prefetch".into())
                    .spawn(move || advise_will_need(&shared, inline..shared.len()));
                if spawned.is_err() {
                    // No thread to spare: request the rest here.
                    advise_will_need(map, inline..map.len());
                }
            }
        }
    }

    /// The order in which [`Self::prefetch`] reads the `len` bytes of the file: in file
    /// order, except that the streams of a tensor are read side by side, a part of each
    /// at a time (parts of about `part` bytes together): chunk `k` of a tensor needs
    /// chunk `k` of every stream, so a loader decoding the tensor behind the read starts
    /// after its first part instead of after all of its streams but the last (a cold
    /// load of the 1.33 GB BF16 model, 2 threads: 0.99 -> 0.81 s, BENCHMARKS.md).
    pub(super) fn read_order(&self, len: usize, part: u64) -> Vec<std::ops::Range<usize>> {
        let mut tensors: Vec<&TensorEntry> = self
            .index
            .tensors
            .iter()
            .filter(|t| !t.streams.is_empty())
            .collect();
        tensors.sort_by_key(|t| t.streams.iter().map(|s| s.offset).min());
        // Offsets and lengths were checked against the file on open.
        let at = |o: u64| o as usize;
        let mut order = Vec::new();
        let mut covered = 0;
        for t in tensors {
            let start = t.streams.iter().map(|s| s.offset).min().unwrap_or(0);
            let end = t
                .streams
                .iter()
                .map(|s| s.offset + s.len)
                .max()
                .unwrap_or(0);
            if at(start) > covered {
                order.push(covered..at(start));
            }
            let parts = t.coded_len().div_ceil(part.max(1)).max(1);
            if t.streams.len() == 1 || parts == 1 {
                order.push(at(start)..at(end));
            } else {
                let cut = |s: &StreamRef, j: u64| {
                    at(s.offset + (s.len as u128 * j as u128 / parts as u128) as u64)
                };
                for j in 0..parts {
                    order.extend(t.streams.iter().map(|s| cut(s, j)..cut(s, j + 1)));
                }
            }
            covered = covered.max(at(end));
        }
        if covered < len {
            order.push(covered..len);
        }
        order.retain(|r| !r.is_empty());
        order
    }

    /// Hints that tensor `i`'s streams will not be read again (archives from
    /// [`Archive::open_path`]): their pages leave this process's resident set, so a loader
    /// holds about the decoded model, not the decoded model plus the file. The page cache
    /// keeps them; a later read faults them back in from the file. Failures are ignored.
    pub fn release(&self, i: usize) {
        self.release_tensors(&[i]);
    }

    /// [`Archive::release`] for several tensors at once, in one system call per run of
    /// them that lies together in the file (a tensor's streams, and tensors next to each
    /// other, are separated by a few bytes of padding at most). Dropping mapped pages
    /// flushes them from the TLB of every CPU running the process's other threads, one
    /// interrupt each per call: in a 2-thread load of all-MiniLM (BF16), releasing each
    /// stream on its own made 254 calls and spent 7.5 % of the load's CPU in those
    /// flushes. Indices out of range are ignored.
    pub fn release_tensors(&self, tensors: &[usize]) {
        let mut spans: Vec<(u64, u64)> = tensors
            .iter()
            .filter_map(|&i| self.index.tensors.get(i))
            .flat_map(|t| t.streams.iter().map(|s| (s.offset, s.offset + s.len)))
            .filter(|(start, end)| end > start)
            .collect();
        spans.sort_unstable();
        // Runs closer than a page apart share a page anyway: merge them.
        let page = page_size() as u64;
        let mut run: Option<(u64, u64)> = None;
        for (start, end) in spans {
            match &mut run {
                Some((_, run_end)) if start <= *run_end + page => *run_end = (*run_end).max(end),
                _ => {
                    if let Some((a, b)) = run.replace((start, end)) {
                        self.release_bytes(a as usize, (b - a) as usize);
                    }
                }
            }
        }
        if let Some((a, b)) = run {
            self.release_bytes(a as usize, (b - a) as usize);
        }
    }

    /// Drops the pages of bytes `offset..offset + len` of the file from this process's
    /// resident set (mapped archives only; see [`Archive::release`]). The range must lie
    /// inside the file; a partial page at either end is dropped whole.
    fn release_bytes(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &self.bytes {
            // SAFETY: the map is a read-only, shared mapping of a file, so dropping its
            // pages discards nothing: the next access reads the same file bytes again,
            // which are checked against their checksum as always. The range lies inside
            // the map (callers pass ranges of streams, checked against the file's length
            // on open).
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }

    /// The bytes of a stream, checked against its checksum.
    pub fn stream(
        &self,
        s: &StreamRef,
        what: impl FnOnce() -> Part,
    ) -> Result<&[u8], ContainerError> {
        let bytes = &self.bytes[s.offset as usize..(s.offset + s.len) as usize];
        let computed = xxh3_64(bytes);
        if computed != s.checksum {
            return Err(ContainerError::Checksum {
                what: what(),
                stored: s.checksum,
                computed,
            });
        }
        Ok(bytes)
    }

    /// The bytes of a stream as stored, not checked against its checksum: for a caller
    /// that copies them (the GPU loader) and verifies the copy, so that what it uses is
    /// what was verified. Bounds were checked when the archive was opened.
    pub fn stream_unverified(&self, s: &StreamRef) -> &[u8] {
        &self.bytes[s.offset as usize..(s.offset + s.len) as usize]
    }

    /// The original bytes before the first tensor (the safetensors header), checked.
    pub fn prefix(&self) -> Result<Vec<u8>, ContainerError> {
        self.check_padding_of(None)?;
        let p = &self.index.prefix;
        let stored = self.stream(&p.stream, || Part::HeaderStream)?;
        let raw = if p.zstd {
            tensor::check_zstd_frame(stored, p.raw_len).map_err(Corruption::HeaderFrame)?;
            let mut out = vec![0u8; p.raw_len as usize];
            let n = zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(stored, &mut out))
                .map_err(|e| Corruption::HeaderFrame(ZstdError::Decoder(e.to_string())))?;
            if n != out.len() {
                return Err(Corruption::HeaderFrame(ZstdError::DecodedSize {
                    found: n as u64,
                    expected: out.len() as u64,
                })
                .into());
            }
            out
        } else {
            stored.to_vec()
        };
        let computed = xxh3_64(&raw);
        if computed != p.raw_checksum {
            return Err(ContainerError::Checksum {
                what: Part::Header,
                stored: p.raw_checksum,
                computed,
            });
        }
        Ok(raw)
    }

    /// A decoder for tensor `i`, its streams checked.
    pub fn tensor_decoder(&self, i: usize) -> Result<TensorDecoder<'_>, ContainerError> {
        self.decoder_with(i, true)
    }

    /// A decoder for tensor `i` whose streams are checked against their checksums only
    /// when `check_streams`. Callers that pass `false` check the decoded tensor's own
    /// checksum before anything of it is used (FORMAT.md §6): every structural check of
    /// the decoder still runs, so damage cannot harm the reader, and damage that changes
    /// the output fails the tensor checksum. That saves a hash pass over the compressed
    /// bytes, measured at 10–18 % of an FP32 decode.
    pub(super) fn decoder_with(
        &self,
        i: usize,
        check_streams: bool,
    ) -> Result<TensorDecoder<'_>, ContainerError> {
        self.check_padding_of(Some(i))?;
        self.decoder_padding_later(i, check_streams)
    }

    /// [`Self::decoder_with`] without the check of the padding after the tensor's streams,
    /// which the caller makes ([`Self::check_padding_of`]) once it has decoded them: the
    /// padding lies after the tensor's last byte, which a load from a cold page cache
    /// reads last.
    pub(super) fn decoder_padding_later(
        &self,
        i: usize,
        check_streams: bool,
    ) -> Result<TensorDecoder<'_>, ContainerError> {
        let t = &self.index.tensors[i];
        if !check_streams {
            let streams: Vec<&[u8]> = t
                .streams
                .iter()
                .map(|s| self.stream_unverified(s))
                .collect();
            return self.build_decoder(t, &streams);
        }
        // Large streams are checked in parallel: a serial pass would cap decoding speed.
        let check = |(k, s): (usize, &StreamRef)| {
            self.stream(s, || Part::Stream {
                tensor: t.name.clone(),
                stream: k,
            })
        };
        let streams = if t.coded_len() > 1 << 20 {
            t.streams
                .par_iter()
                .enumerate()
                .map(check)
                .collect::<Result<Vec<_>, _>>()?
        } else {
            t.streams
                .iter()
                .enumerate()
                .map(check)
                .collect::<Result<Vec<_>, _>>()?
        };
        self.build_decoder(t, &streams)
    }

    fn build_decoder<'s>(
        &'s self,
        t: &TensorEntry,
        streams: &[&'s [u8]],
    ) -> Result<TensorDecoder<'s>, ContainerError> {
        let len = usize::try_from(t.original_len).map_err(|_| Corruption::TensorTooLarge {
            name: t.name.clone(),
            len: t.original_len,
        })?;
        TensorDecoder::new(t.codec, t.chunk_log2, len, streams).map_err(|source| {
            ContainerError::Tensor {
                name: t.name.clone(),
                source,
            }
        })
    }

    /// Decodes tensor `i` into `out` (exactly its original length) and checks its checksum.
    /// The stream checksums are not checked: the tensor checksum covers the output
    /// (FORMAT.md §6); on an error `out` holds no usable data.
    pub fn decode_tensor(&self, i: usize, out: &mut [u8]) -> Result<(), ContainerError> {
        self.decode_tensor_with(i, out, false)
    }

    /// Decodes tensor `i` like [`Archive::decode_tensor`] and releases its compressed
    /// pages as it goes (archives from [`Archive::open_path`]; see [`Archive::release`]):
    /// the pages of each piece of its streams once the chunks they hold are decoded, and
    /// all of the tensor's at the end, success or not. A big tensor then holds a few
    /// megabytes of the file in the resident set at a time instead of all of its
    /// compressed bytes until it is done. Being meant for fresh memory (a loader's new
    /// tensors), `out`'s whole 2 MiB blocks are advised for transparent huge pages where
    /// the system takes that advice and huge pages were not slow to map lately: a fresh
    /// huge page costs a quarter to a fifth of 512 small ones where the host backs it.
    pub fn decode_tensor_releasing(&self, i: usize, out: &mut [u8]) -> Result<(), ContainerError> {
        let done = self.decode_tensor_with(i, out, true);
        self.release(i);
        done
    }

    /// [`Archive::decode_tensor_releasing`] without the release at the end: the pages of
    /// the tensor's streams not released while it decoded (all of a small tensor's) are
    /// left to a later [`Archive::release_tensors`] covering several tensors, so that a
    /// loader of many small tensors drops their pages in a few system calls rather than
    /// one or more per tensor (see there).
    pub fn decode_tensor_releasing_later(
        &self,
        i: usize,
        out: &mut [u8],
    ) -> Result<(), ContainerError> {
        self.decode_tensor_with(i, out, true)
    }

    fn decode_tensor_with(
        &self,
        i: usize,
        out: &mut [u8],
        release: bool,
    ) -> Result<(), ContainerError> {
        let t = &self.index.tensors[i];
        // The padding after the streams is checked at the end, so that a tensor whose
        // streams are still being read from disk decodes behind the read.
        let decoder = self.decoder_padding_later(i, false)?;
        // Fresh memory of a whole-file load: huge pages while they come cheap.
        let huge = if release {
            crate::huge_pages::advise(out)
        } else {
            None
        };
        let tensor_error = |source| ContainerError::Tensor {
            name: t.name.clone(),
            source,
        };
        // Tensors longer than a chunk pair are hashed piece by piece as they are decoded,
        // while each piece is in cache; a pair is decoded by one task, and its output
        // stays in cache for the one-shot hash.
        let computed = if let Some(pair) = decoder.piece_bytes(0).filter(|&p| out.len() > p) {
            let mut hasher = crate::checksum::Xxh3::new();
            let mut released = Released::new(release, t.streams.len());
            let mut decoded = 0;
            decoder
                .decode_overlapped(out, &mut |piece| {
                    hasher.update(piece);
                    if let Some(h) = &huge {
                        h.end_if_dear();
                    }
                    // Pieces come in order, and the decoders are past them: the chunks
                    // before the end of this one are done.
                    decoded += piece.len();
                    released.advance(self, t, || decoder.chunks_payload(decoded / (pair / 2)));
                })
                .map_err(tensor_error)?;
            hasher.digest()
        } else {
            decoder.decode(out).map_err(tensor_error)?;
            xxh3_64(out)
        };
        check_tensor(t, computed)?;
        self.check_padding_of(Some(i))
    }

    /// Whether the page holding byte `offset` of a memory-mapped file is in the page
    /// cache (`mincore`); `true` for other archives, offsets past the end, or where it
    /// cannot be told.
    fn page_cached(&self, offset: u64) -> bool {
        #[cfg(target_os = "linux")]
        if let Bytes::Mapped(map) = &self.bytes {
            let page = page_size();
            let Some(at) = usize::try_from(offset)
                .ok()
                .map(|o| o / page * page)
                .filter(|&at| at < map.len())
            else {
                return true;
            };
            let mut status = 0u8;
            // SAFETY: `at` is page-aligned inside the map, one page long (the last page
            // rounded up, as the kernel rounds maps), and `status` holds its one byte;
            // mincore only writes `status`.
            let ok = unsafe {
                libc::mincore(map.as_ptr().add(at) as *mut libc::c_void, page, &mut status)
            } == 0;
            return !ok || status & 1 == 1;
        }
        let _ = offset;
        true
    }

    /// Whether a memory-mapped file looks cached whole: a page every 2 MiB and the last
    /// one (a few dozen system calls for a 100 MB file). `false` for other archives and
    /// off Linux.
    fn looks_cached(&self) -> bool {
        const EVERY: usize = 2 << 20;
        if !cfg!(target_os = "linux") || !matches!(self.bytes, Bytes::Mapped(_)) {
            return false;
        }
        let len = self.bytes.len() as u64;
        (0..len).step_by(EVERY).all(|o| self.page_cached(o)) && self.page_cached(len - 1)
    }

    /// Decodes the whole original file into `out` (exactly its length), tensors in
    /// parallel with each other and within themselves, checking every checksum.
    pub fn unpack_into(&self, out: &mut [u8]) -> Result<(), ContainerError> {
        if out.len() as u64 != self.index.original_len {
            return Err(ContainerError::OutputSize {
                found: out.len() as u64,
                expected: self.index.original_len,
            });
        }
        let prefix = self.prefix()?;
        let (head, mut rest) = out.split_at_mut(prefix.len());
        head.copy_from_slice(&prefix);
        // The index tiles the original exactly (checked on open): cut `out` into one slice
        // per tensor, in order.
        let mut slices = Vec::with_capacity(self.index.tensors.len());
        for t in &self.index.tensors {
            let (slice, tail) = std::mem::take(&mut rest).split_at_mut(t.original_len as usize);
            slices.push(slice);
            rest = tail;
        }
        slices
            .into_par_iter()
            .enumerate()
            .try_for_each(|(i, slice)| self.decode_tensor(i, slice))
    }

    /// Decodes every tensor and checks every checksum without writing anything; returns
    /// the original bytes checked.
    pub fn verify(&self, progress: &dyn Fn(u64)) -> Result<u64, ContainerError> {
        // Decoding skips the stream checksums; a check of the whole file reads them too.
        for t in &self.index.tensors {
            for (k, s) in t.streams.iter().enumerate() {
                self.stream(s, || Part::Stream {
                    tensor: t.name.clone(),
                    stream: k,
                })?;
            }
        }
        self.unpack_to(io::sink(), progress)?;
        Ok(self.index.original_len)
    }
}

/// The bytes of the stream area outside every stream (alignment padding and the padding
/// before the index), which must be zero (FORMAT.md §3.2) so that no byte of a file can
/// change without an error, as `(owner, (start, end))`: owner 0 for gaps after the header
/// stream or before any stream, `i + 1` after a stream of tensor `i`. Streams may come in
/// any order and may overlap; a gap belongs to the stream reaching furthest before it.
fn padding_gaps(index: &Index, index_offset: u64) -> Vec<(usize, (u64, u64))> {
    let mut spans: Vec<(u64, u64, usize)> = std::iter::once((&index.prefix.stream, 0))
        .chain(
            index
                .tensors
                .iter()
                .enumerate()
                .flat_map(|(i, t)| t.streams.iter().map(move |s| (s, i + 1))),
        )
        .map(|(s, owner)| (s.offset, s.offset + s.len, owner))
        .collect();
    spans.sort_unstable();
    spans.push((index_offset, index_offset, 0));
    let mut gaps = Vec::new();
    let (mut covered, mut owner) = (BLOCK, 0);
    for (start, end, by) in spans {
        if start > covered {
            // Offsets were checked against the index offset when the index was parsed.
            gaps.push((owner, (covered, start)));
        }
        if end > covered {
            (covered, owner) = (end, by);
        }
    }
    gaps
}

/// Checks that the gap `(start, end)` of `bytes`, owned by `owner` (as in
/// [`padding_gaps`]), is all zero; the error names the stream the gap follows, so that a
/// tensor whose read found it is named as a damaged stream's would be.
fn check_gap(
    bytes: &[u8],
    index: &Index,
    owner: usize,
    (start, end): (u64, u64),
) -> Result<(), ContainerError> {
    match bytes[start as usize..end as usize]
        .iter()
        .position(|&b| b != 0)
    {
        Some(k) => Err(Corruption::Padding {
            offset: start + k as u64,
            after: match owner.checked_sub(1) {
                None => Part::HeaderStream,
                Some(i) => Part::Tensor {
                    name: index.tensors[i].name.clone(),
                },
            },
        }
        .into()),
        None => Ok(()),
    }
}

/// Reads `file` (the file `map` maps) into the page cache front to back by `sendfile`
/// to `null` (`/dev/null`): the kernel's sequential read-ahead, and no copy to user
/// space. Pieces already in the page cache are skipped (a warm load reads nothing).
/// Stops at the first failure.
#[cfg(target_os = "linux")]
fn read_through(
    map: &memmap2::Mmap,
    file: &std::fs::File,
    null: &std::fs::File,
    order: Vec<std::ops::Range<usize>>,
) {
    use std::os::fd::AsRawFd;
    const PIECE: usize = 8 << 20;
    let page = page_size();
    let mut status = vec![0u8; PIECE / page];
    let pieces = order.into_iter().flat_map(|r| {
        let start = r.start / page * page;
        let end = r.end.min(map.len());
        (start..end)
            .step_by(PIECE)
            .map(move |at| (at, PIECE.min(end - at)))
    });
    for (at, len) in pieces {
        let pages = len.div_ceil(page);
        // SAFETY: `at` is a multiple of the page size (pieces are) inside the map, the
        // range lies in it (the last page rounded up, as the kernel rounds maps), and
        // `status` has a byte for each of its pages; mincore only writes `status`.
        let cached = unsafe {
            libc::mincore(
                map.as_ptr().add(at) as *mut libc::c_void,
                len,
                status.as_mut_ptr().cast(),
            )
        } == 0
            && status[..pages].iter().all(|&s| s & 1 == 1);
        if !cached {
            let Ok(mut offset) = libc::off_t::try_from(at) else {
                return;
            };
            let end = at + len;
            while (offset as usize) < end {
                // SAFETY: both descriptors belong to files borrowed for the call;
                // `offset` is a local the kernel reads and advances.
                let n = unsafe {
                    libc::sendfile(
                        null.as_raw_fd(),
                        file.as_raw_fd(),
                        &mut offset,
                        end - offset as usize,
                    )
                };
                if n <= 0 {
                    return;
                }
            }
        }
    }
}

/// About how many bytes of a tensor's streams [`Archive::prefetch`] reads side by side.
const READ_PART: u64 = 8 << 20;

/// Asks the kernel to read `range` of `map` ahead, one read-ahead window per request.
#[cfg(unix)]
fn advise_will_need(map: &memmap2::Mmap, range: std::ops::Range<usize>) {
    const WINDOW: usize = 2 << 20;
    let mut offset = range.start;
    while offset < range.end {
        let len = WINDOW.min(range.end - offset);
        let _ = map.advise_range(memmap2::Advice::WillNeed, offset, len);
        offset += len;
    }
}

/// The fewest bytes of a stream that [`Archive::decode_tensor_releasing`] releases in one
/// call while it decodes (a piece's share of a stream is some 40–400 KB): each call
/// costs a TLB flush on the other threads' CPUs (see [`Archive::release_tensors`]). The
/// pages held back stay resident for at most a step per stream.
const RELEASE_STEP: u64 = 1 << 20;

/// How far [`Archive::decode_tensor_releasing`] has released each stream of a tensor
/// while it decodes.
pub(super) struct Released {
    /// Per stream, the file offset before which its whole pages are released; `None`
    /// where nothing is to be released (a plain decode; systems other than Linux).
    upto: Option<Vec<u64>>,
}

impl Released {
    pub(super) fn new(release: bool, streams: usize) -> Self {
        Self {
            upto: (release && cfg!(target_os = "linux")).then(|| vec![0; streams]),
        }
    }

    /// Releases the whole pages of each stream's range in `payloads` (relative to the
    /// stream, one per stream of `t`) not released yet. Pages a neighbouring stream or
    /// tensor still reads may go too: they are read back from the page cache.
    pub(super) fn advance(
        &mut self,
        archive: &Archive<'_>,
        t: &TensorEntry,
        payloads: impl FnOnce() -> Vec<std::ops::Range<usize>>,
    ) {
        let Some(upto) = &mut self.upto else {
            return;
        };
        let page = page_size() as u64;
        for ((s, r), done) in t.streams.iter().zip(payloads()).zip(upto.iter_mut()) {
            let start = (s.offset + r.start as u64)
                .max(*done)
                .next_multiple_of(page);
            let end = (s.offset + r.end as u64) / page * page;
            // At least a step at a time: each call interrupts the other threads' CPUs
            // for a TLB flush (see `Archive::release_tensors`); what is left at the end
            // goes with the tensor's last release.
            if end >= start + RELEASE_STEP {
                archive.release_bytes(start as usize, (end - start) as usize);
                *done = end;
            }
        }
    }
}

/// The system's page size (4 KiB on x86-64, 16 or 64 KiB on some ARM kernels).
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf has no preconditions and only reads system configuration.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if let Some(p) = usize::try_from(page).ok().filter(|p| p.is_power_of_two()) {
                return p;
            }
        }
        4096
    })
}

/// Compares the checksum `computed` over a decoded tensor with the one `t` stores.
pub(super) fn check_tensor(t: &TensorEntry, computed: u64) -> Result<(), ContainerError> {
    if computed == t.checksum {
        return Ok(());
    }
    Err(ContainerError::Checksum {
        what: Part::Tensor {
            name: t.name.clone(),
        },
        stored: t.checksum,
        computed,
    })
}
