//! Streaming the original file out of an [`Archive`] ([`Archive::unpack_to`]): tensors are
//! decoded batch by batch into one of two bounded buffers, and each batch is written, in
//! file order, while the next one decodes.
//!
//! Writing the decoded bytes costs about as much CPU time as decoding them (the copy into
//! the page cache was 30 % of an `mcodec unpack` profile); done one after the other, a
//! 2-core machine decoded with both cores and then wrote with one. Overlapped, the write
//! hides behind the decoding of the next batch. Memory stays bounded by two batches
//! whatever sizes the index claims.

use std::io::Write;

use rayon::prelude::*;

use super::reader::check_tensor;
use super::{Archive, ContainerError};
use crate::tensor::{TensorDecoder, TensorError};

/// Bytes of tensors decoded at once: small enough that writing one batch overlaps the
/// decoding of the next on a model of a few dozen MB, large enough that a batch's tensors
/// keep every thread busy.
const BATCH_BYTES: usize = 16 << 20;

/// One unit of decoding, written out as a whole once decoded.
enum Job<'s> {
    /// Consecutive tensors `first..end`, each decoded whole and checked against its
    /// checksum while decoding.
    Whole {
        first: usize,
        end: usize,
        len: usize,
    },
    /// The bytes `offset..offset + len` of a tensor larger than a batch; its checksum is
    /// computed by the writer, in order, and checked after the last piece.
    Piece {
        tensor: usize,
        decoder: &'s TensorDecoder<'s>,
        offset: usize,
        len: usize,
    },
    /// A tensor larger than a batch whose codec decodes only front to back (zstd): decoded
    /// and written by the writer itself, piece by piece.
    Sequential {
        tensor: usize,
        decoder: &'s TensorDecoder<'s>,
    },
}

impl Job<'_> {
    /// Bytes the job decodes into a buffer (none for a sequential tensor).
    fn buffer_len(&self) -> usize {
        match self {
            Job::Whole { len, .. } | Job::Piece { len, .. } => *len,
            Job::Sequential { .. } => 0,
        }
    }
}

impl Archive<'_> {
    /// Writes the original file to `out`, checking every checksum; `progress` gets the
    /// original bytes written so far. Tensors decode in batches of at most 16 MiB, in
    /// parallel with each other and within themselves, and each batch is written while the
    /// next one decodes, so memory stays bounded (two batches) whatever sizes the file
    /// claims. A tensor whose checksum fails may have been partly written: callers write
    /// to a temporary file.
    pub fn unpack_to<W: Write + Send>(
        &self,
        out: W,
        progress: &dyn Fn(u64),
    ) -> Result<(), ContainerError> {
        self.unpack_batched(out, progress, BATCH_BYTES)
    }

    /// [`Self::unpack_to`] with batches of `batch` bytes (tests use small ones).
    fn unpack_batched<W: Write + Send>(
        &self,
        mut out: W,
        progress: &dyn Fn(u64),
        batch: usize,
    ) -> Result<(), ContainerError> {
        let prefix = self.prefix()?;
        out.write_all(&prefix)?;
        let mut written = prefix.len() as u64;
        // Decoders of the tensors larger than a batch, parsed before any job refers to
        // them (their streams are not checked: the tensor checksum covers the output).
        let tensors = &self.index().tensors;
        let large: Vec<(usize, TensorDecoder<'_>)> = tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.original_len > batch as u64)
            .map(|(i, _)| Ok((i, self.decoder_with(i, false)?)))
            .collect::<Result<_, ContainerError>>()?;
        let jobs = plan(self, &large, batch);
        // Two buffers at most: one being written, one being decoded into. Each keeps the
        // largest length it had, so reuse costs no zeroing.
        let mut spare: Vec<Vec<u8>> = Vec::with_capacity(2);
        // The large tensor being written piece by piece, with its running checksum.
        let mut hasher = crate::checksum::Xxh3::new();
        let mut previous: Option<(&Job<'_>, Vec<u8>)> = None;
        for job in jobs.iter().map(Some).chain(std::iter::once(None)) {
            let mut next = job.map(|j| {
                let mut buffer = spare.pop().unwrap_or_default();
                if buffer.len() < j.buffer_len() {
                    // A new zeroed allocation, not a resize: for buffers this large the
                    // allocator maps fresh pages, which are zero already, whereas growing
                    // writes every byte (8 % of an F32 unpack's instructions, callgrind).
                    buffer = vec![0; j.buffer_len()];
                }
                (j, buffer)
            });
            let (decoded, wrote) = rayon::join(
                || match &mut next {
                    Some((job, buffer)) => self.decode_job(job, &mut buffer[..job.buffer_len()]),
                    None => Ok(()),
                },
                || match &previous {
                    Some((job, buffer)) => {
                        self.write_job(job, &buffer[..job.buffer_len()], &mut out, &mut hasher)
                    }
                    None => Ok(0),
                },
            );
            if let Some((_, buffer)) = previous.take() {
                spare.push(buffer);
            }
            written += wrote?;
            progress(written);
            decoded?;
            previous = next;
        }
        out.flush()?;
        Ok(())
    }

    /// Decodes `job` into `buffer` (exactly its length); whole tensors are checked here.
    fn decode_job(&self, job: &Job<'_>, buffer: &mut [u8]) -> Result<(), ContainerError> {
        match *job {
            Job::Whole { first, end, .. } => {
                let mut slices = Vec::with_capacity(end - first);
                let mut rest = buffer;
                for t in &self.index().tensors[first..end] {
                    let (slice, tail) =
                        std::mem::take(&mut rest).split_at_mut(t.original_len as usize);
                    slices.push(slice);
                    rest = tail;
                }
                slices
                    .into_par_iter()
                    .enumerate()
                    .try_for_each(|(k, slice)| self.decode_tensor(first + k, slice))
            }
            Job::Piece {
                tensor,
                decoder,
                offset,
                ..
            } => decoder
                .decode_at(offset, buffer)
                .map_err(|source| self.tensor_error(tensor, source)),
            Job::Sequential { .. } => Ok(()),
        }
    }

    /// Writes a decoded job to `out` and returns the bytes written; pieces of a large
    /// tensor feed `hasher`, which is checked and reset after the last one.
    fn write_job<W: Write>(
        &self,
        job: &Job<'_>,
        buffer: &[u8],
        out: &mut W,
        hasher: &mut crate::checksum::Xxh3,
    ) -> Result<u64, ContainerError> {
        match *job {
            Job::Whole { .. } => out.write_all(buffer)?,
            Job::Piece {
                tensor,
                offset,
                len,
                ..
            } => {
                hasher.update(buffer);
                out.write_all(buffer)?;
                let t = &self.index().tensors[tensor];
                if (offset + len) as u64 == t.original_len {
                    check_tensor(t, hasher.digest())?;
                    hasher.reset();
                }
            }
            Job::Sequential { tensor, decoder } => {
                let t = &self.index().tensors[tensor];
                let mut write_error = None;
                decoder
                    .decode_pieces(BATCH_BYTES, &mut |piece, _| {
                        hasher.update(piece);
                        out.write_all(piece).map_err(|e| {
                            write_error = Some(e);
                            TensorError::Stopped
                        })
                    })
                    .map_err(|source| match write_error.take() {
                        Some(e) => ContainerError::Io(e),
                        None => self.tensor_error(tensor, source),
                    })?;
                check_tensor(t, hasher.digest())?;
                hasher.reset();
                return Ok(t.original_len);
            }
        }
        Ok(buffer.len() as u64)
    }

    fn tensor_error(&self, tensor: usize, source: TensorError) -> ContainerError {
        ContainerError::Tensor {
            name: self.index().tensors[tensor].name.clone(),
            source,
        }
    }
}

/// The jobs that write the file's tensors in order: runs of tensors up to a batch, and
/// each tensor larger than a batch in pieces of whole chunk pairs.
fn plan<'s>(
    archive: &Archive<'_>,
    large: &'s [(usize, TensorDecoder<'s>)],
    batch: usize,
) -> Vec<Job<'s>> {
    let tensors = &archive.index().tensors;
    let mut jobs = Vec::new();
    let mut large = large.iter().peekable();
    let mut run: Option<(usize, usize)> = None; // (first tensor, bytes)
    for (i, t) in tensors.iter().enumerate() {
        let len = t.original_len as usize;
        if let Some((_, decoder)) = large.next_if(|(k, _)| *k == i) {
            if let Some((first, bytes)) = run.take() {
                jobs.push(Job::Whole {
                    first,
                    end: i,
                    len: bytes,
                });
            }
            match decoder.piece_bytes(batch) {
                Some(piece) => {
                    let mut offset = 0;
                    while offset < len {
                        let n = piece.min(len - offset);
                        jobs.push(Job::Piece {
                            tensor: i,
                            decoder,
                            offset,
                            len: n,
                        });
                        offset += n;
                    }
                }
                None => jobs.push(Job::Sequential { tensor: i, decoder }),
            }
            continue;
        }
        match &mut run {
            Some((_, bytes)) if *bytes + len <= batch => *bytes += len,
            _ => {
                if let Some((first, bytes)) = run.take() {
                    jobs.push(Job::Whole {
                        first,
                        end: i,
                        len: bytes,
                    });
                }
                run = Some((i, len));
            }
        }
    }
    if let Some((first, bytes)) = run {
        jobs.push(Job::Whole {
            first,
            end: tensors.len(),
            len: bytes,
        });
    }
    jobs
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::container::{pack, PackOptions};
    use crate::tensor::Codec;

    /// A safetensors file of tensors of many sizes: BF16 and F32 ones larger and smaller
    /// than the test batch, and an I64 one that zstd codes.
    fn mixed_file() -> Vec<u8> {
        let mut tensors: Vec<(String, &str, Vec<u8>)> = Vec::new();
        let bf16 = |n: usize, seed: u32| -> Vec<u8> {
            (0..n as u32)
                .flat_map(|i| {
                    let x = (i.wrapping_mul(2_654_435_761) ^ seed) >> 20;
                    let v = ((x % 23) as f32 - 11.0) * 0.01;
                    ((v.to_bits() >> 16) as u16).to_le_bytes()
                })
                .collect()
        };
        for (k, n) in [3000, 10, 40_000, 0, 777, 25_000].into_iter().enumerate() {
            tensors.push((format!("b{k}"), "BF16", bf16(n, k as u32)));
        }
        let f32s: Vec<u8> = (0..9000u32)
            .flat_map(|i| (((i % 97) as f32) * 0.001 - 0.05).to_le_bytes())
            .collect();
        tensors.push(("f".into(), "F32", f32s));
        let ints: Vec<u8> = (0..6000u64).flat_map(|i| (i / 7).to_le_bytes()).collect();
        tensors.push(("i".into(), "I64", ints));
        let mut header = String::from("{");
        let mut data = Vec::new();
        for (k, (name, dtype, bytes)) in tensors.iter().enumerate() {
            let size = if *dtype == "BF16" {
                2
            } else {
                8 / (1 + (*dtype == "F32") as usize)
            };
            header += &format!(
                r#"{}"{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{},{}]}}"#,
                if k > 0 { "," } else { "" },
                bytes.len() / size,
                data.len(),
                data.len() + bytes.len()
            );
            data.extend_from_slice(bytes);
        }
        header += "}";
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&data);
        file
    }

    /// [`mixed_file`] and its packed form, in chunks of 1024 elements (so that a tensor
    /// larger than the test batch has many chunk pairs).
    fn packed_mixed() -> (Vec<u8>, Vec<u8>) {
        let input = mixed_file();
        let mut opts = PackOptions::default();
        opts.encode.chunk_log2 = 10;
        opts.encode.block_log2 = 8;
        let mut packed = Vec::new();
        pack(&input, &opts, &mut packed, &|_| {}).unwrap();
        (input, packed)
    }

    #[test]
    fn batched_unpack_is_byte_exact_with_every_kind_of_job() {
        let (input, packed) = packed_mixed();
        let archive = Archive::open(&packed).unwrap();
        let batch = 9000;
        // The plan must hold every kind of job, or this test checks less than it says.
        let tensors = &archive.index().tensors;
        assert!(tensors
            .iter()
            .any(|t| t.codec == Codec::Zstd && t.original_len > batch as u64));
        let large: Vec<_> = tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.original_len > batch as u64)
            .map(|(i, _)| (i, archive.decoder_with(i, false).unwrap()))
            .collect();
        let jobs = plan(&archive, &large, batch);
        assert!(jobs.iter().any(|j| matches!(j, Job::Sequential { .. })));
        assert!(
            jobs.iter()
                .filter(|j| matches!(j, Job::Piece { .. }))
                .count()
                > 4
        );
        assert!(
            jobs.iter()
                .filter(|j| matches!(j, Job::Whole { .. }))
                .count()
                > 1
        );
        for batch in [batch, 1, 4096, 1 << 30] {
            let last = Cell::new(0);
            let mut back = Vec::new();
            archive
                .unpack_batched(
                    &mut back,
                    &|done| {
                        assert!(done >= last.get());
                        last.set(done);
                    },
                    batch,
                )
                .unwrap();
            assert!(back == input, "batch {batch}");
            assert_eq!(last.get(), input.len() as u64);
        }
    }

    /// `file` with tensor `i`'s recorded checksum replaced (index and trailer rewritten):
    /// decoding then succeeds and only the tensor checksum check can notice.
    fn with_tensor_checksum(file: &[u8], i: usize, checksum: u64) -> Vec<u8> {
        let mut index = Archive::open(file).unwrap().index().clone();
        index.tensors[i].checksum = checksum;
        let mut out = file.to_vec();
        crate::container::replace_index(&mut out, &index).unwrap();
        out
    }

    #[test]
    fn every_kind_of_job_checks_its_tensor_checksum() {
        let (_, packed) = packed_mixed();
        let archive = Archive::open(&packed).unwrap();
        // With a batch of 9000 bytes: b2 (80 000 bytes) is written in pieces, i (zstd,
        // 48 000) sequentially, b0 (6000) whole.
        for name in ["b2", "i", "b0"] {
            let i = archive.find(name).unwrap();
            let stored = archive.index().tensors[i].checksum;
            let bad = with_tensor_checksum(&packed, i, stored ^ 1);
            let bad = Archive::open(&bad).unwrap();
            let err = bad
                .unpack_batched(Vec::new(), &|_| {}, 9000)
                .expect_err(name);
            match err {
                ContainerError::Checksum { stored: s, .. } => assert_eq!(s, stored ^ 1),
                other => panic!("{name}: {other}"),
            }
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
