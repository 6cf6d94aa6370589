//! The kernel (`kernels/mcz_decode.cu`) written step for step in Rust, so CI checks its
//! logic against the CPU decoder without a GPU.
//!
//! Same descriptors, same address arithmetic, same shared-memory layout (tables, staging
//! buffers), same order of operations. A CTA's warps are run one after another (they
//! share nothing they write), a warp's 32 threads as a lane loop; `__ballot_sync`,
//! `__popc`, `__funnelshift_r` and the 16-byte stores are emulated. Every memory access
//! goes through [`Memory`] / [`Output`], which panic on an access outside what the host
//! uploaded, so a test that runs hostile data through the mirror also checks that the
//! kernel stays in bounds.

use crate::plan::{
    symbol_shift, Task, TensorDesc, ERR_BAD_TABLE_ID, ERR_CORRUPT_CHUNK, ERR_FIELD_HEADER,
    FLAG_F32_RAW, MAX_FIELDS, MODE_CONST, MODE_PACKED, MODE_RANS, STAGE_BYTES_PER_WARP,
    STAGE_ELEMS, STAGE_STEPS, TABLE_BYTES, TABLE_SLOTS_OFF, TABLE_SYMBOLS_OFF, WARPS,
};
use mcodec::format::{LANES, RANS_L};

/// Read-only device memory: regions at fixed addresses.
pub struct Memory<'a> {
    regions: Vec<(u64, &'a [u8])>,
}

impl<'a> Memory<'a> {
    /// Memory holding `regions` (address, bytes); they must not overlap.
    pub fn new(regions: Vec<(u64, &'a [u8])>) -> Self {
        Self { regions }
    }

    fn bytes(&self, addr: u64, len: usize) -> &'a [u8] {
        for &(base, bytes) in &self.regions {
            if addr >= base && addr - base + len as u64 <= bytes.len() as u64 {
                let at = (addr - base) as usize;
                return &bytes[at..at + len];
            }
        }
        panic!("kernel would read {len} bytes at {addr:#x}, outside every uploaded buffer")
    }

    fn aligned(&self, addr: u64, len: usize) -> &'a [u8] {
        assert!(
            addr.is_multiple_of(len as u64),
            "misaligned {len}-byte load at {addr:#x}"
        );
        self.bytes(addr, len)
    }

    fn u8(&self, addr: u64) -> u32 {
        u32::from(self.bytes(addr, 1)[0])
    }

    fn u16(&self, addr: u64) -> u32 {
        let b = self.aligned(addr, 2);
        u32::from(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, addr: u64) -> u32 {
        let b = self.aligned(addr, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A prefetch (`prefetch.global`): reads nothing, but must stay inside the buffers.
    fn prefetch(&self, addr: u64) {
        self.bytes(addr, 1);
    }

    fn u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.aligned(addr, 8).try_into().expect("8 bytes"))
    }
}

/// Writable device memory: one output buffer at `base`.
pub struct Output<'a> {
    /// Address of the first byte.
    pub base: u64,
    /// The buffer.
    pub bytes: &'a mut [u8],
}

impl Output<'_> {
    fn store(&mut self, addr: u64, src: &[u8]) {
        assert!(
            addr.is_multiple_of(src.len() as u64),
            "misaligned {}-byte store at {addr:#x}",
            src.len()
        );
        let at = addr.checked_sub(self.base).map(|a| a as usize);
        match at.and_then(|a| self.bytes.get_mut(a..a + src.len())) {
            Some(dst) => dst.copy_from_slice(src),
            None => panic!(
                "kernel would write {} bytes at {addr:#x}, outside the output",
                src.len()
            ),
        }
    }
}

/// Fields and element size of a kernel layout (ids as `LAYOUT_*` in the kernel: 0 BF16,
/// 1 F16, 2 F32, 3 F8, 4..=6 the joint BF16, F16, F32).
fn layout_fields(layout: u32) -> (usize, usize) {
    match layout {
        0 | 1 | 4 | 5 => (2, 2),
        2 | 6 => (4, 4),
        _ => (1, 1),
    }
}

/// `Layout<L>::bits`: width of field `f`.
fn field_bits(layout: u32, f: usize) -> u32 {
    match (layout, f) {
        (0 | 2 | 4 | 6, 0) => 9,
        (0 | 4, _) | (2 | 6, 1) => 7,
        _ => 8,
    }
}

/// `raw_ok<LAYOUT, MODES>`: whether the kernel instance that decodes `d` has the raw step:
/// all but F32's instances specialised by mode; an F32 tensor with raw blocks
/// ([`FLAG_F32_RAW`]) runs the `MODES_ANY` instance, which has it.
fn raw_ok(d: &TensorDesc) -> bool {
    !matches!(d.layout, 2 | 6) || d.flags & FLAG_F32_RAW != 0
}

/// `Layout<L>::contrib`: the bits field `f`'s symbol `s` sets in the element.
pub(crate) fn contrib(layout: u32, f: usize, s: u32) -> u32 {
    match (layout, f) {
        (0, 0) => s << 6,
        (0, _) => ((s & 0x40) << 9) | (s & 0x3F),
        (1, 0) => s << 7,
        (1, _) => ((s & 0x80) << 8) | (s & 0x7F),
        (2, 0) => s << 22,
        (2, 1) => ((s & 0x40) << 25) | ((s & 0x3F) << 16),
        (2 | 6, 2) => s << 8,
        // Joint layouts: the sign is bit 0 of field 0.
        (4, 0) => ((s & 0x1FE) << 6) | ((s & 1) << 15),
        (5, 0) => ((s & 0xFE) << 7) | ((s & 1) << 15),
        (6, 0) => ((s & 0x1FE) << 22) | ((s & 1) << 31),
        (6, 1) => s << 16,
        _ => s,
    }
}

/// `Layout<L>::contrib2`: [`contrib`] of two symbols at once, one per 16-bit half
/// (16-bit layouts; no contribution overflows its half).
fn contrib2(layout: u32, f: usize, s: u32) -> u32 {
    match (layout, f) {
        (0, 0) => s << 6,
        (0, _) => ((s & 0x0040_0040) << 9) | (s & 0x003F_003F),
        (1, 0) => s << 7,
        (1, _) => ((s & 0x0080_0080) << 8) | (s & 0x007F_007F),
        (4, 0) => ((s & 0x01FE_01FE) << 6) | ((s & 0x0001_0001) << 15),
        (5, 0) => ((s & 0x00FE_00FE) << 7) | ((s & 0x0001_0001) << 15),
        (4 | 5, _) => s,
        _ => unreachable!("contrib2 is for 16-bit layouts"),
    }
}

fn funnelshift_r(lo: u32, hi: u32, shift: u32) -> u32 {
    ((((u64::from(hi)) << 32) | u64::from(lo)) >> (shift & 31)) as u32
}

/// `atomicCAS(err, 0, code)` and, for the winner, the tensor and chunk.
fn report(err: &mut [u32; 3], code: u32, tensor: u32, chunk: u32) {
    if err[0] == 0 {
        *err = [code, tensor, chunk];
    }
}

/// Runs the kernel `mcz_decode` over `tasks` (one CTA each).
pub fn launch(
    mem: &Memory<'_>,
    out: &mut Output<'_>,
    descs: &[TensorDesc],
    tasks: &[Task],
    err: &mut [u32; 3],
) {
    let shared = crate::plan::shared_bytes(descs);
    let mut smem = vec![0u8; shared];
    for task in tasks {
        let desc = descs[task.tensor as usize];
        let (stages, tables) = smem.split_at_mut(WARPS * STAGE_BYTES_PER_WARP);
        let n = desc.n_tables as usize * TABLE_BYTES;
        // The 16-byte copy loop of the kernel.
        assert!(desc.tables.is_multiple_of(16));
        tables[..n].copy_from_slice(mem.bytes(desc.tables, n));
        for warp in 0..WARPS {
            let stage = &mut stages[warp * STAGE_BYTES_PER_WARP..][..STAGE_BYTES_PER_WARP];
            let mut c = warp as u32;
            while c < task.n_chunks {
                let chunk = task.first_chunk + c;
                decode_chunk(&desc, chunk, tables, stage, mem, out, err);
                c += WARPS as u32;
            }
        }
    }
}

/// One warp decodes one chunk: `decode_chunk<LAYOUT, MODES>` of the kernel, lanes as a
/// loop. The kernel's stream modes are template parameters (its instances specialise one
/// algorithm); here they are read from the descriptor.
#[allow(clippy::too_many_arguments)]
fn decode_chunk(
    d: &TensorDesc,
    chunk: u32,
    tables: &[u8],
    stage: &mut [u8],
    mem: &Memory<'_>,
    out: &mut Output<'_>,
    err: &mut [u32; 3],
) {
    let (fields, esize) = layout_fields(d.layout);
    let chunk_len = 1u64 << d.chunk_log2;
    let start = u64::from(chunk) * chunk_len;
    if start >= d.n {
        return;
    }
    let m = (d.n - start).min(chunk_len) as u32;

    let mut x = [[RANS_L; LANES]; MAX_FIELDS];
    let mut p = [[0u32; LANES]; MAX_FIELDS];
    let mut nwords = [0u32; MAX_FIELDS];
    let mut words = [0u64; MAX_FIELDS];
    let mut table = [0usize; MAX_FIELDS];
    // The warp's raw bases (the kernel's `sh.raw_base`, in shared memory): per rANS field,
    // the bytes of its raw area that would be left at chunk element 0 if every block were
    // raw (the area's length plus b/8 bytes per element of the field's coded blocks so
    // far), so that a raw step at element e has raw_base − e·b/8 bytes left. (The kernel's
    // MODES_ANY instances keep the word counts in shared memory too: the same values.)
    let raw_ok = raw_ok(d);
    let mut raw_base = [0i32; MAX_FIELDS];
    let mut bad = [false; LANES];
    let mut bad_table = [false; LANES];
    // Every rANS field's blocks span whole staging groups: the group loop runs.
    let mut whole_groups = true;
    for f in 0..fields {
        let fd = &d.fields[f];
        if fd.mode == MODE_RANS {
            let off = mem.u64(fd.chunk_index + 16 * u64::from(chunk));
            let lens = mem.u64(fd.chunk_index + 16 * u64::from(chunk) + 8);
            // The payload's length and its raw area's (FORMAT.md §5.5.1): a chunk that is
            // its raw area alone has no states (they stay RANS_L) and no words.
            let (len, area) = (lens as u32, (lens >> 32) as u32);
            let states: u32 = if len == area { 0 } else { 128 };
            let payload = fd.stream + off;
            if area <= len && len - area >= states && area % 2 == 0 && area < 1 << 30 {
                if states != 0 {
                    for lane in 0..LANES {
                        x[f][lane] = mem.u32(payload + 4 * lane as u64);
                        bad[lane] |= x[f][lane] < RANS_L;
                    }
                }
                words[f] = payload + u64::from(states + area);
                nwords[f] = (len - area - states) / 2;
                if raw_ok {
                    raw_base[f] = area as i32;
                }
            } else {
                // A chunk index that does not fit its payload, an odd raw area or one
                // of 2^30 bytes or more (raw_base stays far from overflow; a corrupt
                // device copy): nothing is read past the payload's end.
                words[f] = payload + u64::from(len & !1);
                bad.fill(true);
            }
            whole_groups &= fd.block_log2 >= 8;
        }
    }

    // The constants, merged once.
    let mut const_bits = 0u32;
    for f in 0..fields {
        if d.fields[f].mode == MODE_CONST {
            const_bits |= contrib(d.layout, f, d.fields[f].value);
        }
    }
    let mut t = 0u32;
    // The end (in steps) of the run with a raw block at which the group loop stopped, its
    // tables selected; 0 if it did not stop at one.
    let mut raw_run_end = 0u32;
    if whole_groups && group_loop(d, fields) {
        // The kernel's group loop: STAGE_STEPS whole steps per iteration, tables switched
        // at group starts, the lane's output address and each packed field's word address
        // and bit offset kept per lane and advanced by a constant per group. It stops at
        // the chunk's first run of groups with a raw block: the step loop, which alone
        // has the raw step, goes on from there.
        let groups = m / STAGE_ELEMS as u32;
        let mut out_at: [u64; LANES] =
            std::array::from_fn(|lane| d.dst + (start + 8 * lane as u64) * esize as u64);
        let mut pk = [[(0u64, 0u32); LANES]; MAX_FIELDS];
        for (f, pk) in pk.iter_mut().enumerate().take(fields) {
            if d.fields[f].mode == MODE_PACKED {
                let b = field_bits(d.layout, f);
                for (lane, at) in pk.iter_mut().enumerate() {
                    *at = packed_word(d.fields[f].stream, b, start + 8 * lane as u64);
                }
            }
        }
        let mut g = 0u32;
        while g < groups {
            // Table switches at the start of each run of groups up to the next block
            // boundary of any rANS field.
            let mut run_end = groups;
            for (f, fd) in d.fields[..fields].iter().enumerate() {
                if fd.mode != MODE_RANS {
                    continue;
                }
                let block_mask = (1u32 << fd.block_log2) - 1;
                let e = g * STAGE_ELEMS as u32;
                if e & block_mask == 0 {
                    table[f] = select_table(
                        fd,
                        raw_ok,
                        field_bits(d.layout, f),
                        start + u64::from(e),
                        mem,
                        &mut bad_table,
                        &mut raw_base[f],
                    );
                }
                run_end = run_end.min(((e | block_mask) + 1) / STAGE_ELEMS as u32);
            }
            // `raw_in_run`: a rANS field in a raw block.
            if raw_ok && (0..fields).any(|f| d.fields[f].mode == MODE_RANS && table[f] == RAW_TABLE)
            {
                raw_run_end = run_end * STAGE_STEPS as u32;
                break;
            }
            while g < run_end {
                // The kernel's prefetch of the next group's reads (fields whose mode is a
                // template constant: the first two; not for F32): the 8 sectors of the word
                // stream from 64 bytes past p, and each lane's first packed word of the
                // next group.
                let prefetched = if esize <= 2 { fields.min(2) } else { 0 };
                for f in 0..prefetched {
                    if d.fields[f].mode == MODE_RANS {
                        for (lane, &pos) in p[f].iter().enumerate() {
                            let k = (pos + 32 + 16 * (lane as u32 & 7)).min(nwords[f]);
                            mem.prefetch(words[f] + 2 * u64::from(k));
                        }
                    } else if d.fields[f].mode == MODE_PACKED && g + 1 < groups {
                        let bytes = u64::from(field_bits(d.layout, f)) * STAGE_ELEMS as u64 / 8;
                        for at in &pk[f] {
                            mem.prefetch(at.0 + bytes);
                        }
                    }
                }
                for s in 0..STAGE_STEPS {
                    // No raw step here (`step(false, …)` in the kernel).
                    let v = step(
                        d, fields, tables, &table, &mut x, &mut p, &words, &nwords, None, &mut bad,
                        const_bits, m, t, true, mem,
                    );
                    stage_row(stage, s, esize, &v);
                    t += 1;
                }
                let packed_at = |f: usize, lane: usize| pk[f][lane];
                flush(
                    d,
                    stage,
                    fields,
                    esize,
                    STAGE_ELEMS as u32,
                    &out_at,
                    packed_at,
                    mem,
                    out,
                );
                for at in &mut out_at {
                    *at += (STAGE_ELEMS * esize) as u64;
                }
                for (f, pk) in pk.iter_mut().enumerate().take(fields) {
                    if d.fields[f].mode == MODE_PACKED {
                        // b·STAGE_ELEMS bits further: b·STAGE_ELEMS/8 bytes.
                        let bytes = u64::from(field_bits(d.layout, f)) * STAGE_ELEMS as u64 / 8;
                        for at in pk.iter_mut() {
                            at.0 += bytes;
                        }
                    }
                }
                g += 1;
            }
        }
    }

    // The step loop: the chunk's last m mod STAGE_ELEMS elements in the group loop's
    // case (and the rest of the chunk from its first run with a raw block), else the
    // whole chunk.
    let steps = m.div_ceil(32);
    while t < steps {
        // Table switches at the start of each run of steps up to the next block boundary
        // of any rANS field, but for the run the group loop stopped at (its tables are
        // selected; a second select would move the raw bases twice).
        let mut run_end = steps;
        if t < raw_run_end {
            run_end = raw_run_end;
        } else {
            for (f, fd) in d.fields[..fields].iter().enumerate() {
                if fd.mode != MODE_RANS {
                    continue;
                }
                let block_mask = (1u32 << fd.block_log2) - 1;
                if (32 * t) & block_mask == 0 {
                    table[f] = select_table(
                        fd,
                        raw_ok,
                        field_bits(d.layout, f),
                        start + 32 * u64::from(t),
                        mem,
                        &mut bad_table,
                        &mut raw_base[f],
                    );
                }
                run_end = run_end.min((((32 * t) | block_mask) + 1) / 32);
            }
        }
        while t < run_end {
            let v = step(
                d,
                fields,
                tables,
                &table,
                &mut x,
                &mut p,
                &words,
                &nwords,
                raw_ok.then_some(&raw_base),
                &mut bad,
                const_bits,
                m,
                t,
                false,
                mem,
            );
            let s = (t as usize) % STAGE_STEPS;
            stage_row(stage, s, esize, &v);
            if s == STAGE_STEPS - 1 || t == steps - 1 {
                let done = (t as usize / STAGE_STEPS * STAGE_ELEMS) as u32;
                let count = (m - done).min(STAGE_ELEMS as u32);
                let g0 = start + u64::from(done);
                let out_at: [u64; LANES] =
                    std::array::from_fn(|lane| d.dst + (g0 + 8 * lane as u64) * esize as u64);
                let packed_at = |f: usize, lane: usize| {
                    packed_word(
                        d.fields[f].stream,
                        field_bits(d.layout, f),
                        g0 + 8 * lane as u64,
                    )
                };
                flush(d, stage, fields, esize, count, &out_at, packed_at, mem, out);
            }
            t += 1;
        }
    }

    let mut bad_header = false;
    for f in 0..fields {
        let fd = &d.fields[f];
        if fd.mode == MODE_RANS {
            for lane in 0..LANES {
                bad[lane] |= x[f][lane] != RANS_L || p[f][lane] != nwords[f];
            }
        } else if fd.mode == MODE_PACKED {
            bad_header |= mem.u8(fd.stream) != 0;
        } else {
            bad_header |= mem.u8(fd.stream) != 1
                || (mem.u8(fd.stream + 1) | mem.u8(fd.stream + 2) << 8) != fd.value;
        }
    }
    let any_bad = bad.iter().any(|&b| b);
    let any_bad_table = bad_table.iter().any(|&b| b);
    if any_bad || any_bad_table || bad_header {
        let code = if any_bad_table {
            ERR_BAD_TABLE_ID
        } else if bad_header {
            ERR_FIELD_HEADER
        } else {
            ERR_CORRUPT_CHUNK
        };
        report(err, code, d.tag, chunk);
    }
}

/// `has_group_loop<MODES>`: whether the kernel instance that decodes `d` has the group
/// loop: one of the fields whose mode is a template constant (the first two; F8's one) is
/// rANS-coded. For the joint layouts (`dispatch_joint`) only the instances of a rANS
/// first field with a packed or rANS second one are specialised; the rest run the
/// `MODES_ANY` instance, which has no group loop; so does an F32 tensor with raw blocks
/// ([`FLAG_F32_RAW`]).
fn group_loop(d: &TensorDesc, fields: usize) -> bool {
    if matches!(d.layout, 2 | 6) && d.flags & FLAG_F32_RAW != 0 {
        return false;
    }
    if (4..=6).contains(&d.layout) {
        return d.fields[0].mode == MODE_RANS
            && (d.fields[1].mode == MODE_PACKED || d.fields[1].mode == MODE_RANS);
    }
    d.fields[..fields.min(2)]
        .iter()
        .any(|f| f.mode == MODE_RANS)
}

/// What [`select_table`] gives for a raw block (the kernel's `RAW_TABLE`).
const RAW_TABLE: usize = usize::MAX;

/// `select_table`: the table of rANS field `fd`'s block holding element `e` of the
/// tensor as an offset into the tables, or [`RAW_TABLE`] for a raw block (id equal to the
/// table count, where `raw_ok`: [`raw_ok`]; any other id past the tables is clamped to 0
/// and sets `bad_table`). In an instance with the raw step, a coded block moves the
/// field's raw base (`raw_base`) on by its length in raw bytes (`b` bits a symbol).
#[allow(clippy::too_many_arguments)]
fn select_table(
    fd: &crate::plan::FieldDesc,
    raw_ok: bool,
    b: u32,
    e: u64,
    mem: &Memory<'_>,
    bad_table: &mut [bool; LANES],
    raw_base: &mut i32,
) -> usize {
    let block = e >> fd.block_log2;
    let mut id = mem.u8(fd.block_ids + block);
    if id == fd.n_tables && raw_ok {
        return RAW_TABLE;
    }
    if raw_ok {
        *raw_base += ((b << fd.block_log2) / 8) as i32;
    }
    if id >= fd.n_tables {
        id = 0;
        bad_table.fill(true);
    }
    (fd.table_slot + id) as usize * TABLE_BYTES
}

/// `step`: element `32·t + lane` of every field; returns each lane's merged coded fields.
/// `raw_base`: the raw bases where the step may meet a raw block (`with_raw` in the
/// kernel: the step loop of an instance with the raw step), else `None`. A raw block's
/// step (warp-uniform: blocks hold multiples of 32 symbols) reads lane `lane`'s `b` bits
/// at bit `lane·b` of what is left of the raw area (`raw_base[f] − 32t·b/8` bytes,
/// ending at the words; negative once overrun); a lane whose bytes are not all in the
/// area reads the area's end instead (the first word or what follows the payload: 2
/// readable bytes) and, if active, sets `bad`.
/// `full`: the group loop's steps, where every lane is taken to be active (as the kernel
/// does, without testing `32·t + lane < m`).
#[allow(clippy::too_many_arguments)]
fn step(
    d: &TensorDesc,
    fields: usize,
    tables: &[u8],
    table: &[usize; MAX_FIELDS],
    x: &mut [[u32; LANES]; MAX_FIELDS],
    p: &mut [[u32; LANES]; MAX_FIELDS],
    words: &[u64; MAX_FIELDS],
    nwords: &[u32; MAX_FIELDS],
    raw_base: Option<&[i32; MAX_FIELDS]>,
    bad: &mut [bool; LANES],
    const_bits: u32,
    m: u32,
    t: u32,
    full: bool,
    mem: &Memory<'_>,
) -> [u32; LANES] {
    let mut v = [const_bits; LANES];
    for f in 0..fields {
        if d.fields[f].mode != MODE_RANS {
            // Constants are in `const_bits`; packed fields are merged at the flush.
            continue;
        }
        if let Some(raw_base) = raw_base.filter(|_| table[f] == RAW_TABLE) {
            let b = field_bits(d.layout, f);
            let left = raw_base[f] - (32 * t * b / 8) as i32;
            for (lane, value) in v.iter_mut().enumerate() {
                let active = full || 32 * t + (lane as u32) < m;
                let bit = lane as u32 * b;
                let at = (bit >> 3) as i32;
                let two = (bit & 7) + b > 8;
                let inside = at + i32::from(two) < left;
                bad[lane] |= active && !inside;
                // Inside: byte `at` of the rest of the area; else the area's end.
                let q = words[f] - if inside { (left - at) as u64 } else { 0 };
                let lo = mem.u8(q);
                let hi = if two { mem.u8(q + 1) } else { 0 };
                *value |= contrib(d.layout, f, ((hi << 8 | lo) >> (bit & 7)) & ((1 << b) - 1));
            }
            continue;
        }
        let tb = &tables[table[f]..table[f] + TABLE_BYTES];
        let mut y = [0u32; LANES];
        let mut need = [false; LANES];
        let mut mask = 0u32;
        for lane in 0..LANES {
            let xs = x[f][lane];
            let slot = xs & 4095;
            let j = tb[TABLE_SLOTS_OFF + slot as usize] as usize;
            let e = u32::from_le_bytes(tb[4 * j..4 * j + 4].try_into().expect("4 bytes"));
            // The table holds the symbol's bits in the element, shifted down.
            let at = TABLE_SYMBOLS_OFF + 2 * j;
            v[lane] |=
                u32::from(u16::from_le_bytes([tb[at], tb[at + 1]])) << symbol_shift(d.layout, f);
            y[lane] = ((e >> 12) + 1) * (xs >> 12) + slot - (e & 4095);
            let active = full || 32 * t + (lane as u32) < m;
            need[lane] = active && y[lane] < RANS_L;
            mask |= u32::from(need[lane]) << lane;
        }
        for lane in 0..LANES {
            // Every lane loads the word it would take, its index clamped to the
            // payload's end (2 readable bytes; reading there fails the end check).
            let active = full || 32 * t + (lane as u32) < m;
            let below = mask & ((1u32 << lane) - 1);
            let k = (p[f][lane] + below.count_ones()).min(nwords[f]);
            let word = mem.u16(words[f] + 2 * u64::from(k));
            if need[lane] {
                x[f][lane] = (y[lane] << 16) | word;
            } else if active {
                x[f][lane] = y[lane];
            }
            p[f][lane] += mask.count_ones();
        }
    }
    v
}

/// Stores a step's values into row `s` of the staging buffer.
fn stage_row(stage: &mut [u8], s: usize, esize: usize, v: &[u32; LANES]) {
    for (lane, value) in v.iter().enumerate() {
        let at = (s * 32 + lane) * esize;
        stage[at..at + esize].copy_from_slice(&value.to_le_bytes()[..esize]);
    }
}

/// `packed_word`: the aligned word holding a packed field's symbol of element `e` (a
/// multiple of 8) and that symbol's bit offset in it.
fn packed_word(stream: u64, b: u32, e: u64) -> (u64, u32) {
    let byte0 = 1 + u64::from(b) * e / 8;
    (stream + (byte0 & !3), 8 * (byte0 & 3) as u32)
}

/// `flush<LAYOUT>`: lane `l` owns elements `8l … 8l + 7` of the group, whose first byte
/// is `out_at[l]`: staged values, OR the packed fields read as three aligned words from
/// `packed_at(f, l)` (address, bit offset), one vector store (16 bytes; two for F32, 8
/// bytes for F8) for a whole group, element stores for a partial one.
#[allow(clippy::too_many_arguments)]
fn flush(
    d: &TensorDesc,
    stage: &[u8],
    fields: usize,
    esize: usize,
    count: u32,
    out_at: &[u64; LANES],
    packed_at: impl Fn(usize, usize) -> (u64, u32),
    mem: &Memory<'_>,
    out: &mut Output<'_>,
) {
    for lane in 0..LANES as u32 {
        let first = 8 * lane;
        if first >= count {
            continue;
        }
        let mut v = [0u32; 8];
        for (k, value) in v.iter_mut().enumerate() {
            let at = (first as usize + k) * esize;
            let mut b = [0u8; 4];
            b[..esize].copy_from_slice(&stage[at..at + esize]);
            *value = u32::from_le_bytes(b);
        }
        for f in 0..fields {
            let fd = &d.fields[f];
            if fd.mode != MODE_PACKED {
                continue;
            }
            let b = field_bits(d.layout, f);
            let (w, s0) = packed_at(f, lane as usize);
            let (w0, w1, w2) = (mem.u32(w), mem.u32(w + 4), mem.u32(w + 8));
            if 8 * b <= 64 {
                let bits = u64::from(funnelshift_r(w1, w2, s0)) << 32
                    | u64::from(funnelshift_r(w0, w1, s0));
                let m = (1u32 << b) - 1;
                if esize == 2 {
                    // The kernel keeps 16-bit elements two to a word and merges a pair
                    // of symbols at once.
                    for k in 0..4 {
                        let lo = (bits >> (b * 2 * k as u32)) as u32 & m;
                        let hi = (bits >> (b * (2 * k as u32 + 1))) as u32 & m;
                        let pair = contrib2(d.layout, f, lo | hi << 16);
                        v[2 * k] |= pair & 0xFFFF;
                        v[2 * k + 1] |= pair >> 16;
                    }
                } else {
                    for (k, value) in v.iter_mut().enumerate() {
                        let sym = (bits >> (b * k as u32)) as u32 & m;
                        *value |= contrib(d.layout, f, sym);
                    }
                }
            } else {
                // 9-bit fields: the 72 bits aligned by three funnel shifts by s0, then
                // symbol k a funnel shift by the constant 9k mod 32.
                let a = [
                    funnelshift_r(w0, w1, s0),
                    funnelshift_r(w1, w2, s0),
                    w2 >> s0,
                ];
                for (k, value) in v.iter_mut().enumerate() {
                    let pos = b as usize * k;
                    let sym = funnelshift_r(a[pos / 32], a[pos / 32 + 1], pos as u32 % 32)
                        & ((1 << b) - 1);
                    *value |= contrib(d.layout, f, sym);
                }
            }
        }
        let dst = out_at[lane as usize];
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|value| value.to_le_bytes()[..esize].to_vec())
            .collect();
        if count as usize == STAGE_ELEMS {
            for (i, part) in bytes.chunks(16).enumerate() {
                out.store(dst + 16 * i as u64, part);
            }
        } else {
            let valid = (count - first).min(8) as usize;
            for k in 0..valid {
                out.store(dst + (k * esize) as u64, &bytes[k * esize..(k + 1) * esize]);
            }
        }
    }
}
