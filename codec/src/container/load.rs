//! Decoding many tensors at once as one list of pieces that any number of threads work
//! through ([`Archive::decode_many`]): the loader's threads meet once per load instead of
//! once per piece of every big tensor and once per run of small ones.
//!
//! Why: on a machine whose cores other processes want too, every point where a thread
//! waits for another (a `join`, the end of a parallel loop) lets the waiting thread's
//! core go to a competitor, and the thread then waits for a core when the work comes
//! (rayon's idle threads call `sched_yield` first, which under EEVDF puts them behind
//! the competitors). A warm two-thread MiniLM load met 20-odd times that way.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::reader::{check_tensor, Released};
use super::{Archive, ContainerError};
use crate::checksum::{xxh3_64, Xxh3};
use crate::huge_pages::Advised;
use crate::tensor::{self, Codec, TensorDecoder};

/// Output of one tensor of a [`Archive::decode_many`] call: its index and the memory it
/// decodes into (exactly its original length).
pub type DecodeTarget<'o> = (usize, &'o mut [u8]);

/// One tensor of the load.
struct Job<'s> {
    tensor: usize,
    /// The output, written piece by piece by whichever thread claims a piece.
    out: *mut u8,
    len: usize,
    /// Bytes per piece (whole chunk pairs; the whole tensor for a one-piece tensor).
    piece: usize,
    pieces: usize,
    /// Its decoder and huge-page advice, made by the first thread to claim a piece and
    /// dropped when the tensor is done: a decoder holds tables (all-MiniLM's 104 held
    /// together took 2.8 MB).
    plan: Mutex<PlanSlot<'s>>,
    progress: Mutex<Progress>,
}

enum PlanSlot<'s> {
    NotYet,
    Ready(Arc<Plan<'s>>),
    /// The tensor is done, or making its decoder failed.
    Gone,
}

struct Plan<'s> {
    decoder: TensorDecoder<'s>,
    huge: Option<Advised>,
}

/// How far a tensor's checksum and page release have come: pieces are hashed in order,
/// each by the thread that finds it next in line (one at a time), while the other
/// threads go on decoding.
struct Progress {
    done: Vec<bool>,
    /// Pieces hashed so far.
    hashed: usize,
    /// Whether a thread is hashing now (it holds `hasher`).
    hashing: bool,
    hasher: Option<Xxh3>,
    released: Option<Released>,
}

/// The shared state of one [`Archive::decode_many`] call.
struct Load<'s, 'a> {
    archive: &'s Archive<'a>,
    release: bool,
    jobs: Vec<Job<'s>>,
    /// Pieces before each job (for finding a claimed piece's job).
    first_piece: Vec<usize>,
    next: AtomicUsize,
    completed: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<ContainerError>>,
}

// SAFETY: the raw output pointers are written only through the pieces claimed from
// `next` (each piece once, by one thread, disjoint byte ranges of outputs that the
// caller of `decode_many` lent exclusively for the call), and a piece is read (hashed)
// only after the thread that decoded it marked it done under the job's mutex, which
// orders the write before the read. Everything else is atomics and mutexes.
unsafe impl Sync for Load<'_, '_> {}

/// Bytes of a chunk pair of a split tensor (`None` for stored and zstd tensors, and for
/// chunk lengths out of range, which the decoder rejects).
fn pair_bytes(codec: Codec, chunk_log2: u8) -> Option<usize> {
    let Codec::Split(layout) = codec else {
        return None;
    };
    1usize
        .checked_shl(u32::from(chunk_log2))
        .filter(|&c| c.trailing_zeros() == u32::from(chunk_log2))?
        .checked_mul(2 * layout.element_size())
}

impl<'a> Archive<'a> {
    /// Decodes each target tensor into its buffer (exactly its original length), checking
    /// every checksum, as one list of pieces (a chunk pair each, in the order given) that
    /// `run` hands to its threads: `run` is called once with a closure to call on each
    /// thread it wants working (concurrently); every call returns when no piece is left
    /// to start. Whatever `run` leaves undone is decoded on this thread after it
    /// returns. `on_done(i)` is called once per tensor `i` decoded and checked, on the
    /// thread that finished it.
    ///
    /// With `release` (a whole-file load into fresh memory) each tensor's compressed
    /// pages are released as it decodes and its output is advised for huge pages, as
    /// [`Archive::decode_tensor_releasing_later`] does. The pieces call no rayon: the
    /// threads may be any, including ones outside a pool.
    ///
    /// On an error the first one is returned; the buffers then hold partial data.
    pub fn decode_many(
        &self,
        targets: Vec<DecodeTarget<'_>>,
        release: bool,
        run: impl FnOnce(&(dyn Fn() + Sync)),
        on_done: &(dyn Fn(usize) + Sync),
    ) -> Result<(), ContainerError> {
        let mut jobs = Vec::with_capacity(targets.len());
        let mut first_piece = Vec::with_capacity(targets.len());
        let mut total = 0usize;
        for (tensor, out) in targets {
            let Some(t) = self.index().tensors.get(tensor) else {
                return Err(ContainerError::OutputSize {
                    found: out.len() as u64,
                    expected: 0,
                });
            };
            if out.len() as u64 != t.original_len {
                return Err(ContainerError::OutputSize {
                    found: out.len() as u64,
                    expected: t.original_len,
                });
            }
            let len = out.len();
            let (piece, pieces) = match pair_bytes(t.codec, t.chunk_log2) {
                Some(pair) if len > pair => (pair, len.div_ceil(pair)),
                _ => (len, 1),
            };
            first_piece.push(total);
            total += pieces;
            jobs.push(Job {
                tensor,
                out: out.as_mut_ptr(),
                len,
                piece,
                pieces,
                plan: Mutex::new(PlanSlot::NotYet),
                progress: Mutex::new(Progress {
                    done: vec![false; pieces],
                    hashed: 0,
                    hashing: false,
                    hasher: (pieces > 1).then(Xxh3::new),
                    released: Some(Released::new(release, t.streams.len())),
                }),
            });
        }
        let load = Load {
            archive: self,
            release,
            jobs,
            first_piece,
            next: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        };
        run(&|| load.work(on_done));
        load.work(on_done);
        let error = load.error.lock().unwrap_or_else(|e| e.into_inner()).take();
        let left = load.jobs.len() - load.completed.load(Ordering::Relaxed);
        match error {
            Some(e) => Err(e),
            // Not expected: every piece left undone comes with an error. Said rather than
            // returning buffers that were not checked.
            None if left > 0 => Err(ContainerError::Io(std::io::Error::other(format!(
                "{left} tensors were not decoded"
            )))),
            None => Ok(()),
        }
    }
}

impl<'s> Load<'s, '_> {
    /// Claims and decodes pieces until none is left (or one failed).
    fn work(&self, on_done: &(dyn Fn(usize) + Sync)) {
        while !self.failed.load(Ordering::Relaxed) {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            let j = self.first_piece.partition_point(|&f| f <= k);
            let Some(job) = j.checked_sub(1).and_then(|j| self.jobs.get(j)) else {
                return;
            };
            let piece = k - self.first_piece[j - 1];
            if piece >= job.pieces {
                // Past the last piece (`first_piece` ends with the last job's start).
                return;
            }
            if let Err(e) = self.piece(job, piece, on_done) {
                self.failed.store(true, Ordering::Relaxed);
                let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(e);
                return;
            }
        }
    }

    /// The job's plan, made now if this thread is first; `None` when the tensor is done
    /// or another thread's making it failed (that thread reports the error).
    fn plan(&self, job: &Job<'s>) -> Result<Option<Arc<Plan<'s>>>, ContainerError> {
        let mut slot = job.plan.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            PlanSlot::Ready(plan) => return Ok(Some(Arc::clone(plan))),
            PlanSlot::Gone => return Ok(None),
            PlanSlot::NotYet => {}
        }
        // The padding after the streams is checked at the end, so that a tensor whose
        // streams are still being read from disk decodes behind the read.
        let decoder = match self.archive.decoder_padding_later(job.tensor, false) {
            Ok(decoder) => decoder,
            Err(e) => {
                *slot = PlanSlot::Gone;
                return Err(e);
            }
        };
        let huge = if self.release {
            // SAFETY: as in `piece`: the whole output, lent for the call; advising
            // changes no byte of it.
            let out = unsafe { output(job.out, 0, job.len) };
            crate::huge_pages::advise(out)
        } else {
            None
        };
        let plan = Arc::new(Plan { decoder, huge });
        *slot = PlanSlot::Ready(Arc::clone(&plan));
        Ok(Some(plan))
    }

    /// Decodes piece `k` of `job`, then hashes what is next in line if no other thread
    /// is, and finishes the tensor if that was its last piece.
    fn piece(
        &self,
        job: &Job<'s>,
        k: usize,
        on_done: &(dyn Fn(usize) + Sync),
    ) -> Result<(), ContainerError> {
        let t = &self.archive.index().tensors[job.tensor];
        let tensor_error = |source| ContainerError::Tensor {
            name: t.name.clone(),
            source,
        };
        let Some(plan) = self.plan(job)? else {
            return Ok(());
        };
        let start = k * job.piece;
        let end = (start + job.piece).min(job.len);
        // SAFETY: piece `k` was claimed by this thread alone (`next`), and pieces of a job
        // are disjoint ranges inside its output, which the caller lent for the call.
        let dst = unsafe { output(job.out, start, end - start) };
        match plan.decoder.pair_bytes() {
            Some(pair) if job.pieces == 1 || pair == job.piece => {
                tensor::prefault_task(dst, job.out as usize, pair, job.out as usize + job.len);
                plan.decoder
                    .decode_piece(start, dst)
                    .map_err(tensor_error)?;
            }
            // Stored and zstd tensors: one piece.
            _ if job.pieces == 1 => plan.decoder.decode(dst).map_err(tensor_error)?,
            _ => {
                return Err(ContainerError::OutputSize {
                    found: job.piece as u64,
                    expected: t.original_len,
                })
            }
        }
        if let Some(h) = &plan.huge {
            h.end_if_dear();
        }
        if job.pieces == 1 {
            // SAFETY: the whole output, decoded by this thread just now.
            let out = unsafe { output(job.out, 0, job.len) };
            return self.finish(job, &plan, xxh3_64(out), on_done);
        }
        let mut p = job.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.done[k] = true;
        let hashed = p.hashed;
        if p.hashing || !p.done[hashed] {
            return Ok(());
        }
        // Hash every piece that is next in line, the lock released meanwhile.
        p.hashing = true;
        let (Some(mut hasher), Some(mut released)) = (p.hasher.take(), p.released.take()) else {
            return Ok(());
        };
        loop {
            let from = p.hashed;
            let to = (from..job.pieces)
                .find(|&i| !p.done[i])
                .unwrap_or(job.pieces);
            drop(p);
            let (a, b) = (from * job.piece, (to * job.piece).min(job.len));
            // SAFETY: these pieces were marked done under the job's mutex after they were
            // written; only the thread holding `hashing` reads them.
            hasher.update(unsafe { output(job.out, a, b - a) });
            let chunks = b / (job.piece / 2).max(1);
            released.advance(self.archive, t, || plan.decoder.chunks_payload(chunks));
            p = job.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.hashed = to;
            if to == job.pieces {
                drop(p);
                return self.finish(job, &plan, hasher.digest(), on_done);
            }
            if !p.done[to] {
                p.hasher = Some(hasher);
                p.released = Some(released);
                p.hashing = false;
                return Ok(());
            }
        }
    }

    fn finish(
        &self,
        job: &Job<'s>,
        plan: &Plan<'s>,
        computed: u64,
        on_done: &(dyn Fn(usize) + Sync),
    ) -> Result<(), ContainerError> {
        if let Some(h) = &plan.huge {
            h.end();
        }
        *job.plan.lock().unwrap_or_else(|e| e.into_inner()) = PlanSlot::Gone;
        check_tensor(&self.archive.index().tensors[job.tensor], computed)?;
        self.archive.check_padding_of(Some(job.tensor))?;
        self.completed.fetch_add(1, Ordering::Relaxed);
        on_done(job.tensor);
        Ok(())
    }
}

/// Bytes `start..start + len` of an output.
///
/// # Safety
/// `out` must point to an output lent to the load (at least `start + len` bytes; null
/// only when `len` is 0), and no other thread may touch that range meanwhile.
unsafe fn output<'o>(out: *mut u8, start: usize, len: usize) -> &'o mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: see the function's contract.
    unsafe { std::slice::from_raw_parts_mut(out.add(start), len) }
}
