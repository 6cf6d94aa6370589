//! The writer: packs a safetensors file (or raw elements) into an `.mcz` file, tensors
//! encoded in parallel batches, streams written as they are done, then the index and the
//! trailer.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::checksum::xxh3_64;
use rayon::prelude::*;

use super::{
    trailer, ContainerError, Index, PrefixRef, SourceKind, StreamRef, TensorEntry, Unsupported,
    BLOCK, MAGIC, MAX_DTYPE_LEN, MAX_EXPANSION, MAX_NAME_LEN, STREAM_ALIGN, VERSION_MAJOR,
    VERSION_MINOR,
};
use crate::dtype::Dtype;
use crate::entropy::stream::CodedStream;
use crate::entropy::stream::Effort;
use crate::safetensors;
use crate::tensor::{self, EncodeOptions};

/// Input bytes encoded together before they are written out.
const BATCH_BYTES: u64 = 256 << 20;

/// Options for [`pack`], built with chained setters that also pack:
///
/// ```
/// use mcodec::container::{Archive, PackOptions};
/// use mcodec::{Dtype, Effort};
///
/// let weights: Vec<u8> = (0..4096u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
/// let mut packed = Vec::new();
/// PackOptions::new()
///     .effort(Effort::Max)
///     .threads(2)
///     .raw_dtype(Dtype::F32)
///     .pack_reader(std::io::Cursor::new(&weights), &mut packed)?;
/// let mut back = Vec::new();
/// Archive::open(&packed)?.unpack_to(&mut back, &|_| {})?;
/// assert_eq!(back, weights);
/// # Ok::<(), mcodec::container::ContainerError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// Tensor encoder settings.
    pub encode: EncodeOptions,
    /// Pack the input as raw elements of this dtype instead of parsing safetensors.
    pub raw_dtype: Option<Dtype>,
    /// Worker threads of the packing methods (`None`: the caller's rayon pool, by
    /// default one thread per core). The free functions [`pack`] and [`pack_parts`]
    /// always use the caller's pool.
    pub threads: Option<usize>,
}

impl PackOptions {
    /// The defaults: effort [`Effort::Default`], safetensors input, all cores.
    pub fn new() -> Self {
        Self::default()
    }

    /// How hard the encoder searches for tables.
    pub fn effort(mut self, effort: Effort) -> Self {
        self.encode.effort = effort;
        self
    }

    /// Chunk length exponent (`mcodec::tensor::CHUNK_LOG2_RANGE`); packing refuses one
    /// outside it.
    pub fn chunk_log2(mut self, chunk_log2: u8) -> Self {
        self.encode.chunk_log2 = chunk_log2;
        self
    }

    /// Every tensor encoder setting at once.
    pub fn encode(mut self, encode: EncodeOptions) -> Self {
        self.encode = encode;
        self
    }

    /// Packs the input as raw elements of `dtype` instead of parsing it as safetensors.
    pub fn raw_dtype(mut self, dtype: Dtype) -> Self {
        self.raw_dtype = Some(dtype);
        self
    }

    /// Packs on a pool of `threads` worker threads of its own (at least one).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// [`pack`]s `input` into `out` with these options.
    pub fn pack<W: Write + Send>(&self, input: &[u8], out: W) -> Result<PackStats, ContainerError> {
        self.pack_with_progress(input, out, &|_| {})
    }

    /// [`Self::pack`], calling `progress` with the input bytes done so far.
    pub fn pack_with_progress<W: Write + Send>(
        &self,
        input: &[u8],
        out: W,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<PackStats, ContainerError> {
        self.in_pool(|| pack(input, self, out, progress))
    }

    /// Packs everything `input` holds, from its start: the bytes are read into memory
    /// (one buffer of the input's length, refused with [`ContainerError::Io`] if it
    /// cannot be had) and packed from there. For a file, [`Self::pack_path`] maps it
    /// instead.
    pub fn pack_reader<R: Read + Seek, W: Write + Send>(
        &self,
        mut input: R,
        out: W,
    ) -> Result<PackStats, ContainerError> {
        let len = input.seek(SeekFrom::End(0))?;
        input.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::new();
        usize::try_from(len)
            .ok()
            .and_then(|n| bytes.try_reserve_exact(n).ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("cannot hold the {len}-byte input in memory"),
                )
            })?;
        input.take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("input ended after {} of {len} bytes", bytes.len()),
            )
            .into());
        }
        self.pack(&bytes, out)
    }

    /// Packs the file at `path` over a read-only memory map (the file must not be
    /// truncated meanwhile, as for every mapped input).
    pub fn pack_path<W: Write + Send>(
        &self,
        path: impl AsRef<Path>,
        out: W,
    ) -> Result<PackStats, ContainerError> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            // An empty file cannot be mapped everywhere; it packs like empty bytes.
            return self.pack(&[], out);
        }
        // SAFETY: read-only map, dropped before returning; truncation of the file by
        // another process meanwhile is the documented limit of mapped input.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        self.pack(&map, out)
    }

    /// Runs `f` on this pack's own pool when [`Self::threads`] asked for one.
    fn in_pool<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, ContainerError> + Send,
    ) -> Result<T, ContainerError> {
        match self.threads {
            None => f(),
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| io::Error::other(format!("cannot start {n} threads: {e}")))?
                .install(f),
        }
    }
}

/// Sizes of a finished pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackStats {
    /// Input bytes.
    pub original_len: u64,
    /// Output bytes.
    pub packed_len: u64,
}

struct CountingWriter<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> CountingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn align(&mut self) -> io::Result<()> {
        let pad = self.pos.next_multiple_of(STREAM_ALIGN) - self.pos;
        self.write(&[0u8; STREAM_ALIGN as usize][..pad as usize])
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        let zeros = [0u8; 1 << 16];
        while n > 0 {
            let k = n.min(zeros.len() as u64);
            self.write(&zeros[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn stream(&mut self, stream: &CodedStream) -> io::Result<StreamRef> {
        self.align()?;
        let offset = self.pos;
        let mut hasher = crate::checksum::Xxh3::new();
        for segment in stream.segments() {
            hasher.update(segment);
            self.write(segment)?;
        }
        Ok(StreamRef {
            offset,
            len: self.pos - offset,
            checksum: hasher.digest(),
        })
    }
}

/// Frees the buffers that packing keeps for its next coded pieces (at most 64 MiB; see
/// [`pack`]). A process that packs again later need not call it; one that packed once
/// and runs on can, to hand that memory back.
pub fn release_spare_buffers() {
    crate::recycle::release();
}

/// Coded tensors of one batch, each with the checksum of its original bytes.
type CodedBatch = Vec<(tensor::EncodedTensor, u64)>;

/// Packs `input` (a safetensors file, or raw elements with [`PackOptions::raw_dtype`])
/// into `out`. `progress` is called with the input bytes done so far.
///
/// The buffers of the coded pieces, once written, are kept (at most 64 MiB, shared by
/// every pack of the process) for the next pieces, this pack's and later ones': freed
/// and faulted in again per batch, they cost a tenth of the encode time.
/// [`release_spare_buffers`] frees them.
pub fn pack<W: Write + Send>(
    input: &[u8],
    opts: &PackOptions,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackStats, ContainerError> {
    let file_len = input.len() as u64;
    let (source, prefix_len, infos) = match &opts.raw_dtype {
        None => {
            let header = safetensors::parse(input, file_len)?;
            (SourceKind::Safetensors, header.prefix_len, header.tensors)
        }
        Some(dtype) => (SourceKind::Raw, 0, raw_tensors(dtype, file_len)),
    };
    let data = |i: usize| {
        let r = &infos[i].range;
        &input[r.start as usize..r.end as usize]
    };
    pack_tensors(
        source,
        &input[..prefix_len as usize],
        &infos,
        &data,
        opts,
        out,
        progress,
    )
}

/// Packs a safetensors file given as its header (the 8-byte length and the JSON, with its
/// padding) and the bytes of each tensor in file order, without joining them first: the
/// `.mcz` unpacks to `header` followed by every part. Each part must have exactly the
/// length the header gives its tensor. [`PackOptions::raw_dtype`] must be unset.
pub fn pack_parts<W: Write + Send>(
    header: &[u8],
    parts: &[&[u8]],
    opts: &PackOptions,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackStats, ContainerError> {
    if opts.raw_dtype.is_some() {
        return Err(Unsupported::RawParts.into());
    }
    let data_len = parts.iter().map(|p| p.len() as u64).sum::<u64>();
    let parsed = safetensors::parse(header, header.len() as u64 + data_len)?;
    if parsed.prefix_len != header.len() as u64 {
        return Err(Unsupported::HeaderLen {
            given: header.len() as u64,
            declared: parsed.prefix_len,
        }
        .into());
    }
    if parsed.tensors.len() != parts.len() {
        return Err(Unsupported::PartCount {
            tensors: parsed.tensors.len(),
            parts: parts.len(),
        }
        .into());
    }
    for (t, part) in parsed.tensors.iter().zip(parts) {
        let want = t.range.end - t.range.start;
        if want != part.len() as u64 {
            return Err(Unsupported::PartLen {
                name: t.name.clone(),
                expected: want,
                found: part.len() as u64,
            }
            .into());
        }
    }
    pack_tensors(
        SourceKind::Safetensors,
        header,
        &parsed.tensors,
        &|i| parts[i],
        opts,
        out,
        progress,
    )
}

/// The writer behind [`pack`] and [`pack_parts`]: `prefix` is the original file's bytes
/// before the first tensor, `data(i)` the bytes of `infos[i]`.
fn pack_tensors<'d, W: Write + Send>(
    source: SourceKind,
    prefix: &[u8],
    infos: &[safetensors::TensorInfo],
    data: &(dyn Fn(usize) -> &'d [u8] + Sync),
    opts: &PackOptions,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackStats, ContainerError> {
    let prefix_len = prefix.len() as u64;
    let file_len = infos.last().map_or(prefix_len, |t| t.range.end);
    opts.encode.validate().map_err(Unsupported::Options)?;
    // The index stores name lengths in 16 bits and dtype names in 8: refuse what does not
    // fit rather than write an unreadable file.
    for t in infos {
        if t.name.len() > MAX_NAME_LEN
            || t.dtype.name().len() > MAX_DTYPE_LEN
            || t.shape.len() > safetensors::MAX_RANK
        {
            return Err(Unsupported::IndexField {
                name: t.name.chars().take(64).collect(),
                name_len: t.name.len(),
                dtype_len: t.dtype.name().len(),
                rank: t.shape.len(),
            }
            .into());
        }
    }
    let mut w = CountingWriter { inner: out, pos: 0 };
    let mut preamble = [0u8; BLOCK as usize];
    preamble[..8].copy_from_slice(&MAGIC);
    preamble[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    preamble[10..12].copy_from_slice(&VERSION_MINOR.to_le_bytes());
    w.write(&preamble)?;

    let compressed = zstd::bulk::compress(prefix, opts.encode.zstd_level.max(3)).ok();
    let compressed = compressed.filter(|c| !prefix.is_empty() && c.len() < prefix.len());
    let zstd = compressed.is_some();
    let stream = w.stream(&compressed.unwrap_or_else(|| prefix.to_vec()).into())?;
    let prefix = PrefixRef {
        stream,
        zstd,
        raw_len: prefix_len,
        raw_checksum: xxh3_64(prefix),
    };

    // Batches of tensors are encoded in parallel; writing one batch (a serial copy and
    // checksum) overlaps with encoding the next.
    let mut batches = Vec::new();
    let mut batch_start = 0;
    while batch_start < infos.len() {
        let mut batch_end = batch_start;
        let mut batch_bytes = 0;
        while batch_end < infos.len() && (batch_end == batch_start || batch_bytes < BATCH_BYTES) {
            batch_bytes += infos[batch_end].range.end - infos[batch_end].range.start;
            batch_end += 1;
        }
        batches.push(batch_start..batch_end);
        batch_start = batch_end;
    }
    let encode_batch = |range: std::ops::Range<usize>| -> CodedBatch {
        infos[range.clone()]
            .par_iter()
            .zip(range)
            .map(|(t, i)| {
                let data = data(i);
                rayon::join(
                    || tensor::encode(&t.dtype, data, &opts.encode),
                    || xxh3_64(data),
                )
            })
            .collect()
    };
    let mut entries = Vec::with_capacity(infos.len());
    let mut write_batch = |range: std::ops::Range<usize>,
                           coded: Vec<(tensor::EncodedTensor, u64)>|
     -> io::Result<()> {
        for (t, (enc, checksum)) in infos[range.clone()].iter().zip(coded) {
            let streams = enc
                .streams
                .iter()
                .map(|s| w.stream(s))
                .collect::<io::Result<Vec<_>>>()?;
            for s in enc.streams {
                s.recycle();
            }
            entries.push(TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                original_offset: t.range.start,
                original_len: t.range.end - t.range.start,
                checksum,
                codec: enc.codec,
                chunk_log2: enc.chunk_log2,
                streams,
            });
        }
        if let Some(last) = range.last() {
            progress(infos[last].range.end);
        }
        Ok(())
    };
    let mut pending: Option<(std::ops::Range<usize>, CodedBatch)> = None;
    for range in batches {
        let (written, coded) = rayon::join(
            || pending.take().map_or(Ok(()), |(r, c)| write_batch(r, c)),
            || encode_batch(range.clone()),
        );
        written?;
        pending = Some((range, coded));
    }
    if let Some((r, c)) = pending {
        write_batch(r, c)?;
    }
    let index = Index {
        source,
        original_len: file_len,
        prefix,
        tensors: entries,
    };
    // The fast level codes the index at zstd level 3: level 19 took ~6 % of its
    // one-thread MiniLM BF16 encode, for a few hundred bytes.
    let (index_bytes, form) = match opts.encode.effort {
        Effort::Fast => index.to_stored_at(3),
        _ => index.to_stored(),
    };
    w.align()?;
    // A file that codes almost nothing (a model of zeros) is padded with zeros before its
    // index up to the reader's expansion limit.
    let min_len = file_len.div_ceil(MAX_EXPANSION);
    let end = w.pos + index_bytes.len() as u64 + BLOCK;
    if end < min_len {
        w.zeros(min_len - end)?;
        w.align()?;
    }
    let index_offset = w.pos;
    w.write(&index_bytes)?;
    w.write(&trailer(index_offset, &index_bytes, file_len, form))?;
    w.inner.flush()?;
    progress(file_len);
    Ok(PackStats {
        original_len: file_len,
        packed_len: w.pos,
    })
}

/// Tensors of a raw input: the whole elements as one 1-D tensor, and any leftover bytes
/// as a `U8` tail.
fn raw_tensors(dtype: &Dtype, file_len: u64) -> Vec<safetensors::TensorInfo> {
    let size = dtype.element_size().unwrap_or(1) as u64;
    let body = file_len / size * size;
    let mut v = vec![safetensors::TensorInfo {
        name: "data".into(),
        dtype: dtype.clone(),
        shape: vec![file_len / size],
        range: 0..body,
    }];
    if body < file_len {
        v.push(safetensors::TensorInfo {
            name: "tail".into(),
            dtype: Dtype::U8,
            shape: vec![file_len - body],
            range: body..file_len,
        });
    }
    v
}
