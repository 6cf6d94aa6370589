//! A tensor decoded, verified and handed out a piece at a time (`get`): each piece of a
//! delta's base is decoded into a buffer of the thread, the delta applied over it in the
//! same buffer, the result hashed and written, all while the piece is in cache, pieces on
//! every thread. The tensor's key is then put together from the pieces' hashes
//! (`treehash`) and checked as [`Store::get_tensor_into`] checks it. Tensors that do not
//! decode in pieces (BitX deltas, stored or zstd objects, a layout-1 ULP delta) and objects
//! that do not parse go through [`Store::get_tensor_into`], into the caller's buffer.

use std::cell::Cell;

use mcodec::delta::{DeltaMethod, DeltaPieces};
use mcodec::TensorDecoder;
use rayon::prelude::*;

use crate::error::{obj_err, Result, StoreError};
use crate::key::ObjectKey;
use crate::manifest::TensorEntry;
use crate::object::{self, Header, ObjectError};
use crate::treehash::{self, PieceHash};
use crate::Store;

/// Largest piece: a tensor whose base's chunk and delta's chunk have no common
/// multiple up to this is decoded whole.
pub(crate) const MAX_PIECE_BYTES: usize = 16 << 20;

/// Where a piece's bytes go: `(offset in the tensor, buffer, n)`, the piece being the
/// buffer's first `n` bytes. The sink may keep the buffer and leave another in its place
/// (of any length: the next piece grows it), so that a piece written later is not copied.
pub(crate) type PieceSink<'a> = dyn Fn(u64, &mut Vec<u8>, usize) -> Result<()> + Sync + 'a;

thread_local! {
    /// A piece of the tensor (first of its delta's base).
    static PIECE_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's piece buffer, cut to `n` bytes (grown, zeroed, only the
/// first time). Taken out of the thread's slot while `f` runs, so a nested use (none is
/// made: `f` does no rayon work) would get a new buffer rather than fail.
pub(crate) fn with_piece_buffer<R>(n: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    with_piece_vec(n, |buf| f(&mut buf[..n]))
}

/// [`with_piece_buffer`] with the buffer itself (at least `n` bytes long), which `f` may
/// swap for another: the thread keeps whichever it is left with.
fn with_piece_vec<R>(n: usize, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = PIECE_BUFFER.take();
    if buf.len() < n {
        buf.resize(n, 0);
    }
    let r = f(&mut buf);
    PIECE_BUFFER.set(buf);
    r
}

/// How a tensor decodes in pieces.
struct Plan<'a> {
    /// The plain object's decoder (a delta's base's).
    plain: TensorDecoder<'a>,
    /// Its key (the base's, for a delta), which names its errors.
    plain_key: ObjectKey,
    /// The delta and its base's key, for a delta object.
    delta: Option<(DeltaPieces<'a>, ObjectKey)>,
    /// Bytes per piece: whole chunks of the plain object and of the delta.
    piece: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Store {
    /// Decodes the tensor of manifest entry `t` and verifies it like
    /// [`Self::get_tensor_into`]: in pieces handed to `sink` (in any order, on any thread;
    /// all of them before this returns `Ok`) where it decodes so, else whole into `whole`
    /// (the tensor's place in the output; untouched by the pieces). Bytes of a tensor
    /// that fails verification may have been written before the error: the caller
    /// discards them.
    pub(crate) fn write_tensor(
        &self,
        t: &TensorEntry,
        whole: &mut [u8],
        sink: &PieceSink<'_>,
    ) -> Result<()> {
        self.with_entry_bytes(t, |obj| self.write_stored(t, obj, whole, sink))
    }

    /// [`Self::write_tensor`] given the entry's stored bytes `obj`.
    fn write_stored(
        &self,
        t: &TensorEntry,
        obj: &[u8],
        whole: &mut [u8],
        sink: &PieceSink<'_>,
    ) -> Result<()> {
        // The base is read only for a ULP delta that is what the entry says (else the
        // whole decode reports what is wrong, as it always has, and reads the base
        // itself).
        let base = object::split(obj)
            .ok()
            .filter(|(h, payload)| {
                crate::read::check_entry(t, h).is_ok()
                    && (h.delta_base().is_none()
                        || mcodec::delta::method_of(payload) == Ok(DeltaMethod::Ulp))
            })
            .and_then(|(h, _)| h.delta_base());
        let base_obj;
        let base_bytes = match base {
            Some(b) => {
                base_obj = self.backend.get_object_bytes(&b)?;
                Some(&*base_obj)
            }
            None => None,
        };
        match plan(t, obj, base_bytes) {
            Some(plan) => self.write_pieces(t, &plan, sink),
            None => self.decode_entry_into(t, obj, whole),
        }
    }

    /// [`Self::write_tensor`] by `plan`.
    fn write_pieces(&self, t: &TensorEntry, plan: &Plan<'_>, sink: &PieceSink<'_>) -> Result<()> {
        let len = t.len as usize;
        let prefix = ObjectKey::tensor_prefix(&t.dtype(), &t.shape, t.len);
        let total = (prefix.len() + len) as u64;
        let count = len.div_ceil(plan.piece);
        let hashes: Vec<Result<PieceHash>> = (0..count)
            .into_par_iter()
            .map(|k| {
                let at = k * plan.piece;
                let n = plan.piece.min(len - at);
                with_piece_vec(n, |buf| -> Result<PieceHash> {
                    let out = &mut buf[..n];
                    let plain_err = |e| obj_err(plan.plain_key)(ObjectError::from(e));
                    // A delta's base piece is decoded into the buffer and the delta
                    // applied over it there: one buffer in cache, not two (a base piece
                    // written out and read back).
                    plan.plain.decode_chunks(at, out).map_err(plain_err)?;
                    if let Some((delta, _)) = &plan.delta {
                        delta
                            .decode_at_in_place(at, out)
                            .map_err(|e| StoreError::Object {
                                key: t.object,
                                source: ObjectError::Delta(e),
                            })?;
                    }
                    let hash = treehash::hash_piece(total, (prefix.len() + at) as u64, out);
                    sink(at as u64, buf, n)?;
                    Ok(hash)
                })
            })
            .collect();
        let mut pieces = Vec::with_capacity(count + 1);
        pieces.push(treehash::hash_piece(total, 0, &prefix));
        // The first failing piece in tensor order: the same input gives the same error.
        for h in hashes {
            pieces.push(h?);
        }
        let digest = treehash::combine(total, pieces).expect("the pieces tile the tensor");
        let tensor = ObjectKey(digest);
        let name = plan
            .delta
            .as_ref()
            .map_or(tensor, |(_, base)| ObjectKey::delta(&tensor, base));
        if name != t.object {
            return Err(StoreError::Checksum {
                key: t.object,
                computed: name,
            });
        }
        // The object verified against its own name; the manifest's key of the tensor must
        // be the one that name was made from.
        if tensor != t.key {
            return Err(StoreError::Checksum {
                key: t.object,
                computed: tensor,
            });
        }
        Ok(())
    }
}

/// How the tensor of entry `t`, stored as `obj` (with its delta base's object
/// `base_obj`), decodes in pieces; `None` if it does not, or if anything about the objects
/// is amiss (the whole decode then reports it as it always has).
fn plan<'a>(t: &TensorEntry, obj: &'a [u8], base_obj: Option<&'a [u8]>) -> Option<Plan<'a>> {
    let (header, payload) = object::split(obj).ok()?;
    let len = usize::try_from(t.len).ok().filter(|&l| l > 0)?;
    crate::read::check_entry(t, &header).ok()?;
    let decoder = |header: &Header, payload: &'a [u8]| match header {
        Header::Plain {
            codec,
            chunk_log2,
            stream_lens,
            meta,
        } if meta.raw_len == t.len => {
            object::plain_decoder(*codec, *chunk_log2, stream_lens, payload, len).ok()
        }
        _ => None,
    };
    let (plain, plain_key, delta) = match &header {
        Header::Delta { meta, base, .. } => {
            let (base_header, base_payload) = object::split(base_obj?).ok()?;
            if base_header.meta() != Some(meta) || base_header.delta_base().is_some() {
                return None;
            }
            let plain = decoder(&base_header, base_payload)?;
            let delta = DeltaPieces::new(&meta.dtype, payload, len).ok()??;
            (plain, *base, Some((delta, *base)))
        }
        Header::Plain { .. } => (decoder(&header, payload)?, t.object, None),
        Header::Blob { .. } => return None,
    };
    // Whole chunks of the plain object, not chunk pairs: for a BF16 tensor a piece of
    // 512 KiB (one base chunk, one delta chunk) rather than 1 MiB, so that the piece and
    // the base decoder's field buffer (512 KiB of 16-bit symbols) are about the size of a
    // 1 MiB L2 cache, not twice it (BENCHMARKS.md, ninth session).
    let unit = plain.chunk_bytes()?;
    let piece = match &delta {
        Some((d, _)) => {
            let chunk = d.chunk_bytes();
            (unit / gcd(unit, chunk)).checked_mul(chunk)?
        }
        None => unit,
    };
    (piece <= MAX_PIECE_BYTES).then_some(Plan {
        plain,
        plain_key,
        delta,
        piece,
    })
}

/// Whether the tensor object of header `header` and payload `payload` decodes to
/// `tensor` (a delta against `base`, the base tensor's bytes), decoded a piece at a time
/// into a buffer of the thread and compared with the same bytes of `tensor`, pieces on
/// every thread: no tensor-sized buffer to allocate, zero and fault in. `None` when the
/// object does not decode in pieces, or when it does not decode (the caller's whole
/// decode then reports why).
pub(crate) fn decodes_to(
    header: &Header,
    payload: &[u8],
    base: Option<&[u8]>,
    tensor: &[u8],
) -> Option<bool> {
    let len = tensor.len();
    let meta = header
        .meta()
        .filter(|m| m.raw_len == len as u64 && len > 0)?;
    // A delta decodes from the base's bytes given; a plain object from its streams.
    let (delta, plain) = match (header, base) {
        (Header::Delta { .. }, Some(base)) if base.len() == len => (
            Some((DeltaPieces::new(&meta.dtype, payload, len).ok()??, base)),
            None,
        ),
        (
            Header::Plain {
                codec,
                chunk_log2,
                stream_lens,
                ..
            },
            None,
        ) => (
            None,
            Some(object::plain_decoder(*codec, *chunk_log2, stream_lens, payload, len).ok()?),
        ),
        _ => return None,
    };
    let piece = match (&delta, &plain) {
        (Some((d, _)), _) => d.chunk_bytes(),
        (_, Some(p)) => p.pair_bytes()?,
        _ => return None,
    };
    if piece > MAX_PIECE_BYTES {
        return None;
    }
    let results: Vec<Option<bool>> = (0..len.div_ceil(piece))
        .into_par_iter()
        .map(|k| {
            let at = k * piece;
            let n = piece.min(len - at);
            with_piece_buffer(n, |out| {
                let decoded = match (&delta, &plain) {
                    (Some((d, base)), _) => d.decode_at(at, &base[at..at + n], out).is_ok(),
                    (_, Some(p)) => p.decode_piece(at, out).is_ok(),
                    _ => false,
                };
                decoded.then(|| *out == tensor[at..at + n])
            })
        })
        .collect();
    results.into_iter().try_fold(true, |all, r| Some(all && r?))
}
