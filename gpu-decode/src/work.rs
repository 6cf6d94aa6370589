//! The host side of decoding a group: where each tensor lands in the output, the kernel
//! work (descriptors and copies) of a launch, the same work run by the CPU mirror, and
//! the check of decoded bytes against the originals' checksums. The mirror runs and the
//! group check are for the tests and fuzz targets only (`fuzzing` feature).

use crate::gpu::GpuError;
use crate::plan::{self, Body, PreparedTensor, TensorDesc};
#[cfg(feature = "fuzzing")]
use crate::{mirror, plan::Prepared};
use crate::{RawTarget, OUTPUT_ALIGN};

/// Where each tensor of a group lands in one output buffer: back to back, each at a
/// multiple of [`OUTPUT_ALIGN`]. Returns the offsets and the total size.
pub fn output_layout(prepared: &[PreparedTensor], tensors: &[usize]) -> (Vec<u64>, u64) {
    let mut at = 0u64;
    let offsets = tensors
        .iter()
        .map(|&t| {
            let here = at.next_multiple_of(OUTPUT_ALIGN);
            at = here + prepared[t].out_len;
            here
        })
        .collect();
    (offsets, at)
}

/// The kernel work of decoding `tensors` of `prepared` into a buffer at `dst`, with the
/// arena at `arena` and the tables at `tables`: the kernel descriptors, and the
/// CPU-decoded tensors as (arena offset, output offset, length) copies.
pub fn launch_work(
    prepared: &[PreparedTensor],
    tensors: &[usize],
    offsets: &[u64],
    arena: u64,
    tables: u64,
    dst: u64,
) -> (Vec<TensorDesc>, Vec<(u64, u64, u64)>) {
    let mut descs = Vec::new();
    let mut copies = Vec::new();
    for (&t, &off) in tensors.iter().zip(offsets) {
        let p = &prepared[t];
        match &p.body {
            Body::Empty => {}
            Body::Split(d) => descs.push(d.relocate(arena, tables, dst + off, t as u32)),
            Body::Raw { offset, .. } => copies.push((*offset, off, p.out_len)),
        }
    }
    (descs, copies)
}

/// A tensor the kernel does not decode, copied instead: (arena offset of its CPU-decoded
/// bytes, destination address, length).
pub(crate) type RawCopy = (u64, u64, u64);

/// The kernel work of decoding `targets` of `prepared`, each into its own memory, with
/// the arena at `arena` and the tables at `tables`: the kernel descriptors, and the
/// CPU-decoded tensors as (arena offset, destination address, length) copies. Refuses a
/// target whose length is not its tensor's or whose address is not 16-byte aligned.
pub fn raw_work(
    prepared: &[PreparedTensor],
    targets: &[RawTarget],
    arena: u64,
    tables: u64,
) -> Result<(Vec<TensorDesc>, Vec<RawCopy>), GpuError> {
    let mut descs = Vec::new();
    let mut copies = Vec::new();
    for target in targets {
        let t = target.tensor;
        let Some(p) = prepared.get(t) else {
            return Err(plan::PlanError::NoSuchTensor {
                index: t,
                count: prepared.len(),
            }
            .into());
        };
        if target.len != p.out_len {
            return Err(GpuError::BadOutput(format!(
                "tensor {:?}: {} bytes given, it decodes to {}",
                p.name, target.len, p.out_len
            )));
        }
        if p.out_len > 0 && !target.address.is_multiple_of(16) {
            return Err(GpuError::BadOutput(format!(
                "tensor {:?}: address {:#x} not 16-byte aligned",
                p.name, target.address
            )));
        }
        match &p.body {
            Body::Empty => {}
            Body::Split(d) => descs.push(d.relocate(arena, tables, target.address, t as u32)),
            Body::Raw { offset, .. } => copies.push((*offset, target.address, p.out_len)),
        }
    }
    Ok((descs, copies))
}

/// Decodes `targets` of `prepared` with the CPU mirror of the kernel into `out`, which
/// stands for device memory at address `base` (each target's address lies in it): what
/// [`GpuModel::decode_into_raw`](crate::GpuModel::decode_into_raw) does on the device.
#[cfg(feature = "fuzzing")]
pub fn mirror_decode_raw(
    prepared: &Prepared,
    targets: &[RawTarget],
    out: &mut [u8],
    base: u64,
) -> Result<(), GpuError> {
    let (descs, copies) = raw_work(&prepared.tensors, targets, MIRROR_ARENA, MIRROR_TABLES)?;
    run_mirror(
        prepared,
        &descs,
        &copies,
        mirror::Output { base, bytes: out },
    )?;
    Ok(())
}

/// Where the mirror's memory places the arena and the tables (any addresses apart from
/// each other and from the output do).
#[cfg(feature = "fuzzing")]
const MIRROR_ARENA: u64 = 1 << 40;
#[cfg(feature = "fuzzing")]
const MIRROR_TABLES: u64 = 2 << 40;

/// Copies the CPU-decoded tensors (`copies`, destinations as addresses) and runs the
/// mirror's launches of `descs` (arena and tables at [`MIRROR_ARENA`] and
/// [`MIRROR_TABLES`]) into `out`; reports a corrupt chunk as the kernel would.
#[cfg(feature = "fuzzing")]
fn run_mirror(
    prepared: &Prepared,
    descs: &[TensorDesc],
    copies: &[RawCopy],
    mut out: mirror::Output<'_>,
) -> Result<(), CorruptChunk> {
    for &(from, to, len) in copies {
        let (from, to, len) = (from as usize, (to - out.base) as usize, len as usize);
        out.bytes[to..to + len].copy_from_slice(&prepared.arena[from..from + len]);
    }
    let mem = mirror::Memory::new(vec![
        (MIRROR_ARENA, &prepared.arena),
        (MIRROR_TABLES, &prepared.tables),
    ]);
    let mut err = [0u32; 3];
    for launch in plan::launches(descs, plan::DEFAULT_WARP_SLOTS) {
        mirror::launch(&mem, &mut out, &launch.descs, &launch.tasks, &mut err);
    }
    match corrupt_chunk(&prepared.tensors, err) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A chunk the kernel (or its mirror) found corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor {tensor:?} chunk {chunk}: {}", match *.code {
    plan::ERR_BAD_TABLE_ID => "block names a missing table",
    plan::ERR_FIELD_HEADER => "packed or constant field header differs from the descriptor (corrupt device copy)",
    _ => "rANS end state or word count wrong (corrupt stream)",
})]
pub struct CorruptChunk {
    /// Tensor name.
    pub tensor: String,
    /// Chunk index.
    pub chunk: u32,
    /// Kernel error code (`plan::ERR_*`).
    pub code: u32,
}

/// Decodes `tensors` of `prepared` with the CPU mirror of the kernel, into one buffer laid
/// out by [`output_layout`]. Returns the buffer and the offsets.
#[cfg(feature = "fuzzing")]
pub fn mirror_decode(
    prepared: &Prepared,
    tensors: &[usize],
) -> Result<(Vec<u8>, Vec<u64>), CorruptChunk> {
    const OUT: u64 = 3 << 40;
    let (offsets, total) = output_layout(&prepared.tensors, tensors);
    let (descs, copies) = launch_work(
        &prepared.tensors,
        tensors,
        &offsets,
        MIRROR_ARENA,
        MIRROR_TABLES,
        OUT,
    );
    let mut out = vec![0u8; total as usize];
    // `launch_work` gives copies' destinations as offsets into the output.
    let copies: Vec<RawCopy> = copies.iter().map(|&(f, to, l)| (f, OUT + to, l)).collect();
    run_mirror(
        prepared,
        &descs,
        &copies,
        mirror::Output {
            base: OUT,
            bytes: &mut out,
        },
    )?;
    Ok((out, offsets))
}

/// The error the kernel's (or mirror's) error words `[code, tag, chunk]` describe, `None`
/// for none: the tag is the tensor's index among `tensors` (the model's prepared tensors),
/// whichever group was launched.
pub(crate) fn corrupt_chunk(tensors: &[PreparedTensor], err: [u32; 3]) -> Option<CorruptChunk> {
    let [code, tag, chunk] = err;
    (code != 0).then(|| CorruptChunk {
        tensor: tensors
            .get(tag as usize)
            .map_or_else(|| format!("#{tag}"), |t| t.name.clone()),
        chunk,
        code,
    })
}

/// Which decoded tensors [`GpuModel::verify`](crate::GpuModel::verify) hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Every tensor of the group.
    All,
    /// `count` tensors of the group, chosen by `seed` (a different seed per call spreads
    /// the cost of a full check over many decodes).
    Sample {
        /// Tensors to check per call.
        count: usize,
        /// Chooses them.
        seed: u64,
    },
}

impl Verify {
    /// Positions (into a group of `len` tensors) that this choice checks, ascending.
    pub fn positions(self, len: usize) -> Vec<usize> {
        match self {
            Self::All => (0..len).collect(),
            Self::Sample { count, seed } => {
                // A seeded partial Fisher-Yates shuffle: `count` distinct positions.
                let mut all: Vec<usize> = (0..len).collect();
                let mut state = seed;
                let take = count.min(len);
                for i in 0..take {
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    let j = i + (z % (len - i) as u64) as usize;
                    all.swap(i, j);
                }
                let mut chosen = all[..take].to_vec();
                chosen.sort_unstable();
                chosen
            }
        }
    }
}

/// A decoded tensor whose bytes do not hash to the original's xxh3-64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor {tensor:?}: decoded bytes hash to {computed:016x}, the original's xxh3-64 is {expected:016x}")]
pub struct DecodedMismatch {
    /// Tensor name.
    pub tensor: String,
    /// The original's checksum.
    pub expected: u64,
    /// The decoded bytes' checksum.
    pub computed: u64,
}

/// Checks the decoded bytes of tensor `t` against the original's xxh3-64.
pub fn check_tensor(t: &PreparedTensor, bytes: &[u8]) -> Result<(), DecodedMismatch> {
    let computed = xxhash_rust::xxh3::xxh3_64(bytes);
    if computed == t.checksum && bytes.len() as u64 == t.out_len {
        Ok(())
    } else {
        Err(DecodedMismatch {
            tensor: t.name.clone(),
            expected: t.checksum,
            computed,
        })
    }
}

/// Checks the tensors `which` chooses of a group's output `out` (laid out by
/// [`output_layout`] for `tensors` of `prepared`, at `offsets`) against the originals'
/// xxh3-64. Returns how many tensors were checked.
#[cfg(feature = "fuzzing")]
pub fn check_decoded(
    prepared: &[PreparedTensor],
    tensors: &[usize],
    offsets: &[u64],
    out: &[u8],
    which: Verify,
) -> Result<usize, DecodedMismatch> {
    let chosen = which.positions(tensors.len());
    for &k in &chosen {
        let t = &prepared[tensors[k]];
        let at = offsets[k] as usize;
        check_tensor(t, &out[at..at + t.out_len as usize])?;
    }
    Ok(chosen.len())
}
