// Decodes split-coded .mcz tensors (FORMAT.md §4.3, §5, §7) straight into their element
// bytes in device memory. Compiled at run time by NVRTC (gpu-decode/src/gpu.rs); mirrored
// step for step by gpu-decode/src/mirror.rs, which CI checks against the CPU decoder.
// Any change here must be made there too. Read-only data goes through __ldg (the
// non-coherent cache path): the compiler cannot infer it from addresses held in structs.
//
// Work: one CTA per task (a run of chunks of one tensor), WARPS warps per CTA, one warp
// per chunk at a time: thread `lane` of the warp is rANS lane `lane` of the chunk. The
// tensor's expanded decode tables (built on the host, TABLE_BYTES each) are copied into
// shared memory once per CTA. Decoded elements are staged per warp in shared memory for
// STAGE_STEPS steps and written out as 16-byte stores (8 bytes for F8).
//
// Safety against hostile data: the host validates every stream before upload; the kernel
// still bounds every data-dependent read (word and raw-area indexes are clamped to the
// payload's readable end, table ids are clamped) and reports a failed end state, an
// unconsumed or overrun word stream or raw area and a bad table id through `err` instead
// of writing outside the tensor.
//
// Raw blocks (format 1.4, stream mode 5, FORMAT.md §5.5.1): a block whose id equals its
// stream's table count is stored bit-packed in the chunk's raw area, after the states
// (an all-raw chunk is its raw area alone). Blocks hold multiples of 32 symbols, so a
// step is all raw or all coded for a field (warp-uniform): a raw step reads each lane's b
// bits from the area instead of a rANS step, and the words start after the area. Only
// the step loop has the raw step: a chunk goes on in the step loop from its first run of
// groups with a raw block. F32 tensors with raw blocks run the MODES_ANY instance
// (FLAG_F32_RAW, `raw_ok`). The raw read position lives in shared memory (`Static`).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define WARPS 8
#define STAGE_STEPS 8
#define STAGE_ELEMS (STAGE_STEPS * 32)
#define STAGE_BYTES_PER_WARP (STAGE_ELEMS * 4)
#define TABLE_BYTES 5632
#define TABLE_SYMBOLS_OFF 1024
#define TABLE_SLOTS_OFF 1536
#define MAX_FIELDS 4

#define MODE_PACKED 0
#define MODE_CONST 1
#define MODE_RANS 2

#define LAYOUT_BF16 0
#define LAYOUT_F16 1
#define LAYOUT_F32 2
#define LAYOUT_F8 3
// The joint layouts (format 1.1, codecs 6..8): the sign coded with the exponent, as bit 0
// of the first field, the mantissa bit it displaces at the top of the second.
#define LAYOUT_BF16_JOINT 4
#define LAYOUT_F16_JOINT 5
#define LAYOUT_F32_JOINT 6

// TensorDesc.flags: an F32 tensor with raw blocks (run by its MODES_ANY instance).
#define FLAG_F32_RAW 1u

#define ERR_CORRUPT_CHUNK 1
#define ERR_BAD_TABLE_ID 2
#define ERR_FIELD_HEADER 3

#define RANS_L 65536u
// A raw block's table (decode_chunk's `table`): no shared-memory address.
#define RAW_TABLE 0xFFFFFFFFu

// Field stream of one tensor. Addresses are device addresses.
struct FieldDesc {
    u64 stream;       // first byte of the stream (its mode byte); 16-byte aligned
    u64 chunk_index;  // rANS: per chunk, u64 payload offset (from `stream`), u32 payload
                      // length, u32 raw area length R (FORMAT.md §5.5.1; 0 without raw
                      // blocks); a payload of length R is all raw: no states, no words
    u64 block_ids;    // rANS: one table id byte per block; id == n_tables: a raw block
    u32 mode;         // MODE_*
    u32 bits;         // symbol width
    u32 value;        // Const: the symbol
    u32 block_log2;   // rANS: block length exponent
    u32 n_tables;     // rANS: tables of this stream
    u32 table_slot;   // rANS: index of its first table among the tensor's tables
};

struct TensorDesc {
    u64 dst;          // output, 16-byte aligned
    u64 n;            // elements
    u64 tables;       // the tensor's expanded tables, back to back, 16-byte aligned
    u32 layout;       // LAYOUT_*
    u32 chunk_log2;
    u32 n_fields;
    u32 n_tables;     // tables of all fields
    u32 tag;          // reported for a corrupt chunk: the tensor's index in the model
    u32 flags;        // FLAG_*
    FieldDesc fields[MAX_FIELDS];
};

struct Task {
    u32 tensor;
    u32 first_chunk;
    u32 n_chunks;
    u32 pad;
};

// The Rust structs in plan.rs have the same layout; these sizes are asserted there too.
static_assert(sizeof(FieldDesc) == 48, "FieldDesc layout");
static_assert(sizeof(TensorDesc) == 240, "TensorDesc layout");
static_assert(sizeof(Task) == 16, "Task layout");

__device__ __forceinline__ void report(u32* err, u32 code, u32 tensor, u32 chunk) {
    if (atomicCAS(err, 0u, code) == 0u) {
        err[1] = tensor;
        err[2] = chunk;
    }
}

// Per layout: fields, element size, each field's width and its bits in the element
// (FORMAT.md §4.3). An element is the OR of its fields' contributions, so fields can be
// merged in any order: coded fields in the step loop, packed fields at the flush.
// SIGN_IN_RESIDUAL: field 1 holds the sign as its top bit (the flush merges it with
// masked shifts); in the joint layouts field 1 is mantissa bits only.
template <int LAYOUT>
struct Layout;
template <>
struct Layout<LAYOUT_BF16> {
    static const int FIELDS = 2;
    static const int ESIZE = 2;
    static const bool SIGN_IN_RESIDUAL = true;
    __device__ static int sym_shift(int) { return 0; }
    __device__ static int bits(int f) { return f == 0 ? 9 : 7; }
    __device__ static u32 contrib(int f, u32 s) {
        return f == 0 ? s << 6 : ((s & 0x40u) << 9) | (s & 0x3Fu);
    }
    // contrib of two symbols at once, one per 16-bit half (no half overflows into the
    // other: every contribution fits 16 bits).
    __device__ static u32 contrib2(int f, u32 s) {
        return f == 0 ? s << 6 : ((s & 0x00400040u) << 9) | (s & 0x003F003Fu);
    }
};
template <>
struct Layout<LAYOUT_F16> {
    static const int FIELDS = 2;
    static const int ESIZE = 2;
    static const bool SIGN_IN_RESIDUAL = true;
    __device__ static int sym_shift(int) { return 0; }
    __device__ static int bits(int) { return 8; }
    __device__ static u32 contrib(int f, u32 s) {
        return f == 0 ? s << 7 : ((s & 0x80u) << 8) | (s & 0x7Fu);
    }
    __device__ static u32 contrib2(int f, u32 s) {
        return f == 0 ? s << 7 : ((s & 0x00800080u) << 8) | (s & 0x007F007Fu);
    }
};
template <>
struct Layout<LAYOUT_F32> {
    static const int FIELDS = 4;
    static const int ESIZE = 4;
    static const bool SIGN_IN_RESIDUAL = true;
    __device__ static int sym_shift(int f) { return f < 2 ? 16 : 0; }
    __device__ static int bits(int f) { return f == 0 ? 9 : f == 1 ? 7 : 8; }
    __device__ static u32 contrib(int f, u32 s) {
        return f == 0   ? s << 22
               : f == 1 ? ((s & 0x40u) << 25) | ((s & 0x3Fu) << 16)
               : f == 2 ? s << 8
                        : s;
    }
};
template <>
struct Layout<LAYOUT_F8> {
    static const int FIELDS = 1;
    static const int ESIZE = 1;
    static const bool SIGN_IN_RESIDUAL = false;
    __device__ static int sym_shift(int) { return 0; }
    __device__ static int bits(int) { return 8; }
    __device__ static u32 contrib(int, u32 s) { return s; }
};
// Joint layouts: field 0 = the base layout's field 0 with the sign in place of its lowest
// bit; field 1 = the base layout's mantissa bits of field 1 plus the displaced bit on top.
template <>
struct Layout<LAYOUT_BF16_JOINT> {
    static const int FIELDS = 2;
    static const int ESIZE = 2;
    static const bool SIGN_IN_RESIDUAL = false;
    __device__ static int sym_shift(int) { return 0; }
    __device__ static int bits(int f) { return f == 0 ? 9 : 7; }
    __device__ static u32 contrib(int f, u32 s) {
        return f == 0 ? ((s & 0x1FEu) << 6) | ((s & 1u) << 15) : s;
    }
    __device__ static u32 contrib2(int f, u32 s) {
        return f == 0 ? ((s & 0x01FE01FEu) << 6) | ((s & 0x00010001u) << 15) : s;
    }
};
template <>
struct Layout<LAYOUT_F16_JOINT> {
    static const int FIELDS = 2;
    static const int ESIZE = 2;
    static const bool SIGN_IN_RESIDUAL = false;
    __device__ static int sym_shift(int) { return 0; }
    __device__ static int bits(int) { return 8; }
    __device__ static u32 contrib(int f, u32 s) {
        return f == 0 ? ((s & 0xFEu) << 7) | ((s & 1u) << 15) : s;
    }
    __device__ static u32 contrib2(int f, u32 s) {
        return f == 0 ? ((s & 0x00FE00FEu) << 7) | ((s & 0x00010001u) << 15) : s;
    }
};
template <>
struct Layout<LAYOUT_F32_JOINT> {
    static const int FIELDS = 4;
    static const int ESIZE = 4;
    static const bool SIGN_IN_RESIDUAL = false;
    __device__ static int sym_shift(int f) { return f < 2 ? 16 : 0; }
    __device__ static int bits(int f) { return f == 0 ? 9 : f == 1 ? 7 : 8; }
    __device__ static u32 contrib(int f, u32 s) {
        return f == 0   ? ((s & 0x1FEu) << 22) | ((s & 1u) << 31)
               : f == 1 ? s << 16
               : f == 2 ? s << 8
                        : s;
    }
};

// Stream modes as template parameters: 2 bits per field, MODE_ANY = read from the
// descriptor at run time. One instance of the decoder per layout and per combination of
// the first two fields' modes (the others, F32's low bytes, stay MODE_ANY), so that the
// step loop holds no branch on a mode.
#define MODE_ANY 3u
#define MODES_ANY 0xFFu

template <u32 MODES>
__device__ __forceinline__ bool mode_fixed(int f) {
    return ((MODES >> (2 * f)) & 3u) != MODE_ANY;
}

template <u32 MODES>
__device__ __forceinline__ u32 field_mode(int f, u32 runtime) {
    return mode_fixed<MODES>(f) ? (MODES >> (2 * f)) & 3u : runtime;
}

// Whether the instance has the group loop: only instances with a field fixed to rANS
// (the decoders that matter for speed), so that the full kernel's code size and compile
// time stay moderate. The CPU mirror follows this rule (`group_loop` in mirror.rs).
template <u32 MODES>
__host__ __device__ constexpr bool has_group_loop() {
    bool rans = false;
    for (int f = 0; f < MAX_FIELDS; ++f) rans |= ((MODES >> (2 * f)) & 3u) == MODE_RANS;
    return MODES != MODES_ANY && rans;
}

// Whether the instance decodes raw blocks (FORMAT.md §5.5.1). F32's specialised instances
// do not: with the raw step in their step loops, ptxas spilled more there at 64
// registers (gpu-decode/NOTES.md); an F32 tensor with raw blocks runs the MODES_ANY
// instance (the host sets FLAG_F32_RAW), which has only the step loop.
template <int LAYOUT, u32 MODES>
__host__ __device__ constexpr bool raw_ok() {
    return (LAYOUT != LAYOUT_F32 && LAYOUT != LAYOUT_F32_JOINT) || MODES == MODES_ANY;
}

// The group loop's prefetch of the next group's global-memory reads: 1 = into L1 (the
// default), 2 = into L2 only, 0 = none. The host may set it (`MCODEC_GPU_PREFETCH`, an
// experiment knob of src/gpu.rs); results do not depend on it.
#ifndef MCZ_PREFETCH
#define MCZ_PREFETCH 1
#endif

__device__ __forceinline__ void prefetch(const void* at) {
#if MCZ_PREFETCH == 2
    asm volatile("prefetch.global.L2 [%0];" ::"l"(at));
#else
    asm volatile("prefetch.global.L1 [%0];" ::"l"(at));
#endif
}

// The table switches of both decode loops, at element `e` of a chunk (the start of a
// run of `unit`-element units: a staging group or a step, both multiples of 32): every
// rANS field whose block starts at `e` gets that block's table (`select(f, e)`), and the
// result is the end, in units, of the run up to the next block boundary of any rANS field
// (blocks hold a multiple of 32 symbols, so a field's table is warp-uniform and the run's
// units need no test for a boundary), at most `limit`.
template <class L, u32 MODES, typename Select>
__device__ __forceinline__ u32 switch_tables(const TensorDesc& d, u32 e, u32 unit, u32 limit,
                                             Select select) {
    u32 run_end = limit;
#pragma unroll
    for (int f = 0; f < L::FIELDS; ++f) {
        const FieldDesc& fd = d.fields[f];
        if (field_mode<MODES>(f, fd.mode) != MODE_RANS) continue;
        const u32 mask = (1u << fd.block_log2) - 1;
        if ((e & mask) == 0) select(f, e);
        const u32 next = ((e | mask) + 1) / unit;
        run_end = next < run_end ? next : run_end;
    }
    return run_end;
}

// Writes the staged group of `count` elements (a group starts at a multiple of
// STAGE_ELEMS in its chunk). Lane `lane` owns the group's elements 8·lane … 8·lane + 7,
// whose first byte in the output is `out`: it reads their staged values (the coded
// fields, merged), ORs in the packed fields — whose 8 symbols are 8·b consecutive bits
// starting on a byte boundary, read as three aligned words from `packed_at(f, b, s0)`,
// the first of them `s0` bits before the lane's first symbol — and stores the 8 elements
// with one 16-byte store (two for F32, 8 bytes for F8); the 32 lanes cover the group
// contiguously. FULL: the group is known to be whole (the group loop); otherwise the
// tensor's last group, if partial, is stored element by element.
template <int LAYOUT, bool FULL, typename ModeOf, typename PackedAt>
__device__ __forceinline__ void flush(ModeOf mode_of, const u8* stage, u8* out, u32 count,
                                      u32 lane, PackedAt packed_at) {
    typedef Layout<LAYOUT> L;
    __syncwarp();
    const u32 first = 8 * lane;
    if constexpr (L::ESIZE == 2) {
        // 16-bit elements stay packed two to a word: merged and stored as 4 words.
        if (FULL || first < count) {
            const uint4 q = ((const uint4*)stage)[lane];
            u32 w2e[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int f = 0; f < L::FIELDS; ++f) {
                if (mode_of(f) != MODE_PACKED) continue;
                const u32 b = L::bits(f);
                u32 s0;
                const u32* w = packed_at(f, b, s0);
                const u32 w0 = __ldg(w), w1 = __ldg(w + 1), w2 = __ldg(w + 2);
                const u32 m = (1u << b) - 1;
                if (8 * b <= 64) {
                    const u64 bits =
                        (u64)__funnelshift_r(w1, w2, s0) << 32 | __funnelshift_r(w0, w1, s0);
#pragma unroll
                    for (int k = 0; k < 4; ++k) {
                        // Symbols 2k and 2k+1: the 2b bits from bit 2bk on.
                        const u32 c = (u32)(bits >> (b * 2 * k));
                        if (f == 1 && L::SIGN_IN_RESIDUAL) {
                            // Sign + mantissa (sign the symbol's top bit): each term is a
                            // shift and a masked OR. Low bits of symbol 2k stay; its sign
                            // (bit b−1) goes to bit 15 and symbol 2k+1's low bits to bit 16
                            // on (both a shift by 16 − b); its sign (bit 2b−1) to bit 31.
                            const u32 low = (1u << (b - 1)) - 1;
                            w2e[k] |= (c & low) | ((c << (16 - b)) & (0x8000u | low << 16)) |
                                      ((c << (32 - 2 * b)) & 0x80000000u);
                        } else {
                            w2e[k] |= L::contrib2(f, (c & m) | ((c >> b) & m) << 16);
                        }
                    }
                } else {
                    // 9-bit fields: as in the flush below.
                    const u32 a[3] = {__funnelshift_r(w0, w1, s0), __funnelshift_r(w1, w2, s0),
                                      w2 >> s0};
#pragma unroll
                    for (int k = 0; k < 8; ++k) {
                        const int pos = b * k;
                        const u32 sym = __funnelshift_r(a[pos / 32], a[pos / 32 + 1], pos % 32) & m;
                        w2e[k / 2] |= L::contrib(f, sym) << (16 * (k & 1));
                    }
                }
            }
            u16* o = (u16*)out;
            if (FULL || count == STAGE_ELEMS) {
                *(uint4*)o = make_uint4(w2e[0], w2e[1], w2e[2], w2e[3]);
            } else {
                const u32 valid = count - first < 8 ? count - first : 8;
#pragma unroll
                for (u32 k = 0; k < 8; ++k) {
                    if (k < valid) o[k] = (u16)(w2e[k / 2] >> (16 * (k & 1)));
                }
            }
        }
    } else if (FULL || first < count) {
        u32 v[8];
        if (L::ESIZE == 1) {
            const uint2 q = ((const uint2*)stage)[lane];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                v[k] = (q.x >> (8 * k)) & 0xFFu;
                v[k + 4] = (q.y >> (8 * k)) & 0xFFu;
            }
        } else {
            const uint4 a = ((const uint4*)stage)[2 * lane];
            const uint4 b = ((const uint4*)stage)[2 * lane + 1];
            v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
            v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        }
#pragma unroll
        for (int f = 0; f < L::FIELDS; ++f) {
            if (mode_of(f) != MODE_PACKED) continue;
            const u32 b = L::bits(f);
            u32 s0;
            const u32* w = packed_at(f, b, s0);
            const u32 w0 = __ldg(w), w1 = __ldg(w + 1), w2 = __ldg(w + 2);
            if (8 * b <= 64) {
                // The 8·b ≤ 64 bits start s0 ≤ 24 bits into w0: two funnel shifts give
                // them as one 64-bit word; every symbol is then a shift by a constant.
                const u64 bits =
                    (u64)__funnelshift_r(w1, w2, s0) << 32 | __funnelshift_r(w0, w1, s0);
#pragma unroll
                for (int k = 0; k < 8; ++k) {
                    const u32 sym = (u32)(bits >> (b * k)) & ((1u << b) - 1);
                    v[k] |= L::contrib(f, sym);
                }
            } else {
                // 9-bit fields (exponents left packed): 72 bits, up to 96 with s0. Three
                // funnel shifts by s0 align them (a[2] = w2 >> s0 holds bits 64…71); then
                // symbol k is a funnel shift by the constant 9k mod 32 of a[9k/32] and the
                // word after it (no per-lane shift amounts or word selects, which ptxas
                // kept in registers: F32's group loops spilled with them).
                const u32 a[3] = {__funnelshift_r(w0, w1, s0), __funnelshift_r(w1, w2, s0),
                                  w2 >> s0};
#pragma unroll
                for (int k = 0; k < 8; ++k) {
                    const int pos = b * k;
                    const u32 sym =
                        __funnelshift_r(a[pos / 32], a[pos / 32 + 1], pos % 32) & ((1u << b) - 1);
                    v[k] |= L::contrib(f, sym);
                }
            }
        }
        if (FULL || count == STAGE_ELEMS) {
            if (L::ESIZE == 1) {
                *(uint2*)out = make_uint2(v[0] | v[1] << 8 | v[2] << 16 | v[3] << 24,
                                          v[4] | v[5] << 8 | v[6] << 16 | v[7] << 24);
            } else {
                ((uint4*)out)[0] = make_uint4(v[0], v[1], v[2], v[3]);
                ((uint4*)out)[1] = make_uint4(v[4], v[5], v[6], v[7]);
            }
        } else {
            const u32 valid = count - first < 8 ? count - first : 8;
#pragma unroll
            for (u32 k = 0; k < 8; ++k) {
                if (k < valid) {
                    if (L::ESIZE == 1) {
                        out[k] = (u8)v[k];
                    } else {
                        ((u32*)out)[k] = v[k];
                    }
                }
            }
        }
    }
    __syncwarp();
}

// A packed field's symbols for the elements from `e` on (`e` a multiple of 8): byte
// 1 + b·e/8 of the stream (after the mode byte), read from the aligned word holding it;
// `s0` is the symbol's bit offset in that word. The stream is 16-byte aligned and
// followed by at least 16 readable bytes.
__device__ __forceinline__ const u32* packed_word(u64 stream, u32 b, u64 e, u32& s0) {
    const u64 byte0 = 1 + (u64)b * e / 8;
    s0 = 8 * (u32)(byte0 & 3);
    return (const u32*)(stream + (byte0 & ~3ull));
}

// The kernel's static shared memory (one struct, so that the descriptor keeps offset 0):
// * desc: the CTA's tensor descriptor;
// * raw_base: raw blocks (FORMAT.md §5.5.1) without registers of their own. Per warp and
//   rANS field, the bytes of the field's raw area that would be left at chunk element 0
//   if every block were raw — the area's length plus b/8 bytes per element of the
//   field's coded blocks so far — so that a raw step at element e finds the bytes left as
//   raw_base − e·b/8 (one shared load). Set at the chunk's start, moved on when a coded
//   block is entered (table switches only);
// * nwords: the MODES_ANY instances' word counts (`nwords_of` in decode_chunk).
// Lane 0 writes them between warp barriers (`warp_store`); every lane reads them.
// gpu.rs reserves sizeof(Static) of the shared-memory budget (plan::STATIC_SHARED_BYTES).
struct Static {
    TensorDesc desc;
    int raw_base[WARPS][MAX_FIELDS];
    u32 nwords[WARPS][MAX_FIELDS];
};
static_assert(sizeof(Static) == 496, "Static layout");
__shared__ Static sh;

// Stores a warp-uniform value into the warp's shared slot `at` (converged warp).
template <typename T>
__device__ __forceinline__ void warp_store(T* at, u32 lane, T value) {
    __syncwarp();
    if (lane == 0) *at = value;
    __syncwarp();
}

// One warp decodes one chunk. Not inlined: each of the 43 instances is its own function,
// so ptxas allocates its registers alone (no spill inside its loops) and compiles the
// kernel in about the time one inlined function of the instances took before the group
// loop (inlined, they took 2.3× the CPU time and spilled inside loops). The call costs a
// few instructions per chunk and the global-memory descriptor's move to uniform registers
// (R2UR) in the loops.
template <int LAYOUT, u32 MODES>
__device__ __noinline__ void decode_chunk(const TensorDesc& d, u32 chunk, const u8* tables,
                                          u8* stage, u32 lane, u32* err) {
    typedef Layout<LAYOUT> L;
    const u64 chunk_len = 1ull << d.chunk_log2;
    const u64 start = (u64)chunk * chunk_len;
    if (start >= d.n) return;
    const u64 left = d.n - start;
    // `start` again, from the descriptor (reread: the loops' shared-memory stores could
    // alias it), for the loops of an instance with the raw step: one register (`chunk`)
    // live in them instead of two.
    auto chunk_start = [&]() -> u64 {
        return raw_ok<LAYOUT, MODES>() ? (u64)chunk << d.chunk_log2 : start;
    };
    const u32 m = (u32)(left < chunk_len ? left : chunk_len);

    // Per field, in registers for the step loop (its shared-memory stores could alias the
    // descriptor, so the compiler cannot hoist reads of it): rANS state, word position
    // and count, table; the constants merged once into `const_bits`; the mode is a
    // template constant, except for a MODE_ANY field (F32's low bytes), whose mode
    // `mode_of` reads from the descriptor at each use (steps, flushes, end checks) to keep
    // F32 within 64 registers. What only table switches and flushes need is read from the
    // descriptor there.
    u32 mode[L::FIELDS];
    u32 x[L::FIELDS];
    u32 p[L::FIELDS];
    u32 nwords[L::FIELDS];
    const u16* words[L::FIELDS];
    // The field's table as a shared-memory address (one register, where a pointer takes
    // two), or RAW_TABLE for a raw block.
    u32 table[L::FIELDS];
    const u32 tables_at = (u32)__cvta_generic_to_shared(tables);
    auto mode_of = [&](int f) -> u32 {
        return mode_fixed<MODES>(f) ? mode[f] : d.fields[f].mode;
    };
    // A rANS field's word count: in a register, but in the MODES_ANY instances (whose
    // step loop has the most live registers: every field's mode is read at run time, and
    // F32's has four fields with raw steps) in shared memory (sh.nwords).
    auto nwords_of = [&](int f) -> u32 {
        if constexpr (MODES == MODES_ANY) {
            // The warp's slot from %tid.x read here (volatile: not a register kept live).
            u32 tid;
            asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
            return sh.nwords[tid / 32][f];
        } else {
            return nwords[f];
        }
    };
    // This warp's raw_base and nwords slots in shared memory, one per field.
    int* const raw = sh.raw_base[threadIdx.x / 32];
    u32* const nw = sh.nwords[threadIdx.x / 32];
    // The coded fields' bits common to every element: the constants, merged once.
    u32 const_bits = 0;
    bool bad = false;
    bool bad_table = false;
    // Whether every rANS field's blocks span whole staging groups (block_log2 ≥ 8): then
    // the group loop below runs, switching tables only at group starts.
    bool whole_groups = true;
#pragma unroll
    for (int f = 0; f < L::FIELDS; ++f) {
        const FieldDesc& fd = d.fields[f];
        mode[f] = field_mode<MODES>(f, fd.mode);
        x[f] = RANS_L;
        p[f] = 0;
        nwords[f] = 0;
        if (MODES == MODES_ANY) warp_store(nw + f, lane, 0u);
        words[f] = 0;
        table[f] = tables_at;
        if (mode[f] == MODE_CONST) const_bits |= L::contrib(f, fd.value);
        if (mode[f] == MODE_RANS) {
            const u64* ci = (const u64*)fd.chunk_index;
            const u64 off = __ldg(ci + 2 * (u64)chunk);
            const u64 lens = __ldg(ci + 2 * (u64)chunk + 1);
            // The payload's length and its raw area's: a chunk that is its raw area alone
            // has no states (they stay RANS_L) and no words.
            const u32 len = (u32)lens, area = (u32)(lens >> 32);
            const u32 states = len == area ? 0u : 128u;
            const u8* payload = (const u8*)(fd.stream + off);
            if (area <= len && len - area >= states && area % 2 == 0 && area < (1u << 30)) {
                if (states != 0) {
                    x[f] = __ldg((const u32*)payload + lane);
                    bad |= x[f] < RANS_L;
                }
                words[f] = (const u16*)(payload + states + area);
                nwords[f] = (len - area - states) / 2;
                if (MODES == MODES_ANY) warp_store(nw + f, lane, nwords[f]);
                if (raw_ok<LAYOUT, MODES>()) warp_store(raw + f, lane, (int)area);
            } else {
                // A chunk index that does not fit its payload, an odd raw area or one
                // of 2^30 bytes or more (raw_base stays far from overflow; a corrupt
                // device copy): nothing is read past the payload's end.
                words[f] = (const u16*)(payload + (len & ~1u));
                if (raw_ok<LAYOUT, MODES>()) warp_store(raw + f, lane, 0);
                bad = true;
            }
            whole_groups &= fd.block_log2 >= 8;
        }
    }

    // The table of rANS field f's block holding chunk element `e`; RAW_TABLE for a raw block
    // (id equal to the table count). A coded block moves the field's raw base on by its
    // length in raw bytes (see `raw_base`).
    auto select_table = [&](int f, u32 e) {
        const FieldDesc& fd = d.fields[f];
        const u64 block = (chunk_start() + e) >> fd.block_log2;
        u32 id = __ldg((const u8*)fd.block_ids + block);
        if (id == fd.n_tables && raw_ok<LAYOUT, MODES>()) {
            table[f] = RAW_TABLE;
            return;
        }
        if (raw_ok<LAYOUT, MODES>()) {
            warp_store(raw + f, lane, raw[f] + (int)((L::bits(f) << fd.block_log2) / 8));
        }
        if (id >= fd.n_tables) {
            id = 0;
            bad_table = true;
        }
        table[f] = tables_at + (fd.table_slot + id) * TABLE_BYTES;
    };

    // One step: element first + lane of every field (first = 32·t); returns the merged
    // coded fields. `active`: the element exists (always, in the group loop). `with_raw`: a
    // rANS field may be in a raw block (the step loop); the group loop's runs have none.
    auto step = [&](bool with_raw, bool active, u32 first) -> u32 {
        u32 v = const_bits;
#pragma unroll
        for (int f = 0; f < L::FIELDS; ++f) {
            const u32 mf = mode_of(f);
            if (raw_ok<LAYOUT, MODES>() && with_raw && mf == MODE_RANS && table[f] == RAW_TABLE) {
                // A raw step (warp-uniform): lane `lane`'s b bits at bit lane·b of what is
                // left of the raw area (`left` bytes, from the raw base; negative once
                // overrun); a lane whose bytes are not all in the area reads the area's
                // end instead (the first word or what follows the payload: 2 readable
                // bytes) and, if active, sets `bad`.
                const u32 b = L::bits(f);
                u32 tid;
                asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
                const int left = sh.raw_base[tid / 32][f] - (int)(first * b / 8);
                const u32 bit = (tid % 32) * b;
                const int at = (int)(bit >> 3);
                const bool two = (bit & 7) + b > 8;
                const bool in = at + (two ? 1 : 0) < left;
                bad |= active && !in;
                const u8* q = (const u8*)words[f] - (in ? left - at : 0);
                const u32 lo = __ldg(q);
                const u32 hi = two ? __ldg(q + 1) : 0u;
                v |= L::contrib(f, ((hi << 8 | lo) >> (bit & 7)) & ((1u << b) - 1));
            } else if (mf == MODE_RANS) {
                const u8* tb = (const u8*)__cvta_shared_to_generic(table[f]);
                const u32 xs = x[f];
                const u32 slot = xs & 4095u;
                const u32 j = tb[TABLE_SLOTS_OFF + slot];
                const u32 e = ((const u32*)tb)[j];
                // The table holds the symbol's bits in the element, shifted down by
                // sym_shift (plan.rs `table_symbol`).
                v |= (u32)((const u16*)(tb + TABLE_SYMBOLS_OFF))[j] << L::sym_shift(f);
                const u32 y = ((e >> 12) + 1) * (xs >> 12) + slot - (e & 4095u);
                const bool need = active && y < RANS_L;
                const u32 mask = __ballot_sync(0xffffffffu, need);
                // Every lane loads (lane-uniform control flow, no convergence barrier) the
                // word it would take if it renormalises, its index clamped to the
                // payload's end: the 2 bytes there are always readable (the next chunk's
                // payload or the stream's padding), and a chunk that reads past its end
                // fails the end check (p ≠ nwords) whatever it read.
                const u32 k = min(p[f] + __popc(mask & ((1u << lane) - 1)), nwords_of(f));
                const u32 word = (u32)__ldg(words[f] + k);
                x[f] = need ? (y << 16) | word : active ? y : x[f];
                p[f] += __popc(mask);
            }
            // Constants are in `const_bits`; packed fields are merged at the flush.
        }
        return v;
    };

    auto stage_value = [&](u32 row, u32 v) {
        u8* const at = stage + lane * L::ESIZE + row;
        if (L::ESIZE == 1) {
            *at = (u8)v;
        } else if (L::ESIZE == 2) {
            *(u16*)at = (u16)v;
        } else {
            *(u32*)at = v;
        }
    };

    // Whether a rANS field is in a raw block (its table RAW_TABLE) for the run just selected.
    auto raw_in_run = [&]() -> bool {
        bool any = false;
        if (!raw_ok<LAYOUT, MODES>()) return false;
#pragma unroll
        for (int f = 0; f < L::FIELDS; ++f) {
            const u32 mf = mode_of(f);
            any |= mf == MODE_RANS && table[f] == RAW_TABLE;
        }
        return any;
    };

    u32 t = 0;
    // The end of a run with a raw block (in steps) at which the group loop stopped, its
    // tables selected; 0 if it did not stop at one.
    u32 raw_run_end = 0;
    if constexpr (!has_group_loop<MODES>()) whole_groups = false;
    if (whole_groups) {
        // The group loop: STAGE_STEPS whole steps per iteration, unrolled (staging rows
        // at constant offsets, no per-step `active`, flush or loop test), tables switched
        // only at group starts. The lane's output address and each packed field's word
        // address and bit offset are kept in registers and advance by a constant per
        // group. The chunk's last m mod STAGE_ELEMS elements go to the step loop below,
        // and so does the rest of the chunk from its first run with a raw block on: the
        // step loop alone holds the raw step, so that the group loop's code (registers,
        // instructions) is that of a tensor without raw blocks.
        const u32 groups = m / STAGE_ELEMS;
        u8* out = (u8*)d.dst + (start + 8 * lane) * L::ESIZE;
        const u32* pk[L::FIELDS];
        u32 pk_s0[L::FIELDS];
#pragma unroll
        for (int f = 0; f < L::FIELDS; ++f) {
            pk[f] = 0;
            pk_s0[f] = 0;
            if (mode_fixed<MODES>(f) && mode[f] == MODE_PACKED) {
                pk[f] = packed_word(d.fields[f].stream, L::bits(f), start + 8 * lane, pk_s0[f]);
            }
        }
        u32 g = 0;
#pragma unroll 1
        while (g < groups) {
            // Table switches at the start of each run of groups up to the next block
            // boundary of any rANS field (as in the step loop below), so that the group
            // loop itself holds no switch (the compiler would predicate it: its
            // instructions would issue every group).
            const u32 run_end =
                switch_tables<L, MODES>(d, g * STAGE_ELEMS, STAGE_ELEMS, groups, select_table);
            if (raw_in_run()) {
                raw_run_end = run_end * STAGE_STEPS;
                break;
            }
#pragma unroll 1
            for (; g < run_end; ++g) {
#if MCZ_PREFETCH
                // Prefetch, a group ahead, of what the next group reads from global memory
                // (these reads' latency is on the steps' dependency chain — the word read
                // of every step, the packed reads at the flush — and a chunk's word stream
                // enters a new 32-byte sector every few steps): lanes 0…7 (the others
                // repeat them) prefetch the 8 sectors that start 64 bytes past the rANS
                // word position p (words p + 32 … p + 159, each index clamped to the
                // payload's end as in the step), and every lane the first packed word of
                // its elements of the next group, if there is one. No register, no wait.
                // Not for F32 (the registers of its group loops are all taken: it would
                // spill there).
#pragma unroll
                for (int f = 0; f < (L::ESIZE <= 2 ? L::FIELDS : 0); ++f) {
                    if (mode_fixed<MODES>(f) && mode[f] == MODE_RANS) {
                        prefetch(words[f] + min(p[f] + 32 + 16 * (lane & 7), nwords[f]));
                    } else if (mode_fixed<MODES>(f) && mode[f] == MODE_PACKED) {
                        if (g + 1 < groups) prefetch(pk[f] + L::bits(f) * (STAGE_ELEMS / 32));
                    }
                }
#endif
#pragma unroll
                for (int s = 0; s < STAGE_STEPS; ++s) {
                    stage_value(32 * L::ESIZE * s, step(false, true, 0));
                }
                const u64 g0 = chunk_start() + (u64)g * STAGE_ELEMS;
                flush<LAYOUT, true>(mode_of, stage, out, STAGE_ELEMS, lane,
                                    [&](int f, u32 b, u32& s0) -> const u32* {
                                        if (mode_fixed<MODES>(f)) {
                                            s0 = pk_s0[f];
                                            return pk[f];
                                        }
                                        return packed_word(d.fields[f].stream, b,
                                                           g0 + 8 * lane, s0);
                                    });
                out += STAGE_ELEMS * L::ESIZE;
#pragma unroll
                for (int f = 0; f < L::FIELDS; ++f) {
                    if (mode_fixed<MODES>(f) && mode[f] == MODE_PACKED) {
                        pk[f] += L::bits(f) * (STAGE_ELEMS / 32);  // b·STAGE_ELEMS bits
                    }
                }
            }
        }
        t = (raw_ok<LAYOUT, MODES>() ? g : groups) * STAGE_STEPS;
    }

    const u32 steps = (m + 31) / 32;
    u32 row = 0;
#pragma unroll 1
    while (t < steps) {
        // Table switches: the steps up to the next block boundary of any rANS field run
        // without testing for one (but for the run the group loop stopped at, whose
        // tables it selected: a second select would move the raw bases twice).
        const u32 run_end = t < raw_run_end
                                ? raw_run_end
                                : switch_tables<L, MODES>(d, 32 * t, 32, steps, select_table);
#pragma unroll 1
        for (; t < run_end; ++t) {
            // Step t's elements go to row t % STAGE_STEPS of the staging buffer; `row`
            // is that row's byte offset, kept as a counter (no modulo per step).
            stage_value(row, step(true, 32 * t + lane < m, 32 * t));
            row += 32 * L::ESIZE;
            if (row == STAGE_STEPS * 32 * L::ESIZE || t == steps - 1) {
                const u32 done = (t / STAGE_STEPS) * STAGE_ELEMS;
                const u32 count = m - done < STAGE_ELEMS ? m - done : STAGE_ELEMS;
                const u64 g0 = chunk_start() + done + 8 * lane;
                flush<LAYOUT, false>(mode_of, stage, (u8*)d.dst + g0 * L::ESIZE, count, lane,
                                     [&](int f, u32 b, u32& s0) {
                                         return packed_word(d.fields[f].stream, b, g0, s0);
                                     });
                row = 0;
            }
        }
    }

    // End checks: a rANS field's end state and word count; a packed or constant field's
    // mode byte (and constant value) where the descriptor says its stream starts.
    bool bad_header = false;
#pragma unroll
    for (int f = 0; f < L::FIELDS; ++f) {
        const u8* head = (const u8*)d.fields[f].stream;
        if (mode_of(f) == MODE_RANS) {
            bad |= x[f] != RANS_L || p[f] != nwords_of(f);
        } else if (mode_of(f) == MODE_PACKED) {
            bad_header |= __ldg(head) != 0;
        } else {
            bad_header |= __ldg(head) != 1 ||
                          ((u32)__ldg(head + 1) | (u32)__ldg(head + 2) << 8) != d.fields[f].value;
        }
    }
    const bool any_bad = __any_sync(0xffffffffu, bad);
    const bool any_bad_table = __any_sync(0xffffffffu, bad_table);
    const bool any_bad_header = __any_sync(0xffffffffu, bad_header);
    if (lane == 0 && (any_bad || any_bad_table || any_bad_header)) {
        report(err,
               any_bad_table    ? ERR_BAD_TABLE_ID
               : any_bad_header ? ERR_FIELD_HEADER
                                : ERR_CORRUPT_CHUNK,
               d.tag, chunk);
    }
}

// Picks the decoder instance for the descriptor's layout and field modes. Compiled with
// -DMCZ_ONLY_LAYOUT=L -DMCZ_ONLY_MODES=M (the SASS instruction count of
// gpu-decode/tests/decode/sass.rs), the kernel holds that one instance only.
template <int LAYOUT, u32 REST>
__device__ __forceinline__ void dispatch(const TensorDesc& d, u32 chunk, const u8* tables,
                                         u8* stage, u32 lane, u32* err) {
    const u32 m0 = d.fields[0].mode;
    if constexpr (Layout<LAYOUT>::FIELDS == 1) {
        switch (m0) {
            case 0: decode_chunk<LAYOUT, 0u | REST>(d, chunk, tables, stage, lane, err); return;
            case 1: decode_chunk<LAYOUT, 1u | REST>(d, chunk, tables, stage, lane, err); return;
            case 2: decode_chunk<LAYOUT, 2u | REST>(d, chunk, tables, stage, lane, err); return;
            default: decode_chunk<LAYOUT, MODES_ANY>(d, chunk, tables, stage, lane, err); return;
        }
    } else {
        const u32 m1 = d.fields[1].mode;
#define MCZ_CASE(a, b)                                                                  \
    case (a) * 3 + (b):                                                                 \
        decode_chunk<LAYOUT, (a) | (b) << 2 | REST>(d, chunk, tables, stage, lane, err); \
        return;
        switch (m0 < 3 && m1 < 3 ? m0 * 3 + m1 : 9) {
            MCZ_CASE(0, 0) MCZ_CASE(0, 1) MCZ_CASE(0, 2)
            MCZ_CASE(1, 0) MCZ_CASE(1, 1) MCZ_CASE(1, 2)
            MCZ_CASE(2, 0) MCZ_CASE(2, 1) MCZ_CASE(2, 2)
            default: decode_chunk<LAYOUT, MODES_ANY>(d, chunk, tables, stage, lane, err); return;
        }
#undef MCZ_CASE
    }
}

// The joint layouts: the writer chooses them only where the exponent field is rANS
// coded, so only its typical instances are specialised (the others run the MODES_ANY
// instance), which keeps the kernel's compile time near what it was.
template <int LAYOUT, u32 REST>
__device__ __forceinline__ void dispatch_joint(const TensorDesc& d, u32 chunk,
                                               const u8* tables, u8* stage, u32 lane,
                                               u32* err) {
    const u32 m0 = d.fields[0].mode, m1 = d.fields[1].mode;
    if (m0 == MODE_RANS && m1 == MODE_PACKED) {
        decode_chunk<LAYOUT, MODE_RANS | MODE_PACKED << 2 | REST>(d, chunk, tables, stage, lane,
                                                                  err);
    } else if (m0 == MODE_RANS && m1 == MODE_RANS) {
        decode_chunk<LAYOUT, MODE_RANS | MODE_RANS << 2 | REST>(d, chunk, tables, stage, lane,
                                                                err);
    } else {
        decode_chunk<LAYOUT, MODES_ANY>(d, chunk, tables, stage, lane, err);
    }
}

// At least 4 CTAs (32 warps) per SM: caps registers at 64 per thread.
extern "C" __global__ void __launch_bounds__(WARPS * 32, 4)
    mcz_decode(const TensorDesc* __restrict__ tensors, const Task* __restrict__ tasks,
               u32 n_tasks, const u8* arena, const u8* tables_in, u8* out, u32* err) {
    // `arena`, `tables_in` and `out` are reached through the descriptors' addresses;
    // they are arguments so that the host orders the launch after their writes.
    (void)arena;
    (void)tables_in;
    (void)out;
    extern __shared__ __align__(16) u8 smem[];
    TensorDesc& desc = sh.desc;
    if (blockIdx.x >= n_tasks) return;
    const Task task = tasks[blockIdx.x];
    if (threadIdx.x == 0) desc = tensors[task.tensor];
    __syncthreads();

    // Shared memory: WARPS staging buffers, then the tensor's tables.
    u8* tables = smem + WARPS * STAGE_BYTES_PER_WARP;
    const uint4* src = (const uint4*)desc.tables;
    uint4* dst = (uint4*)tables;
    const u32 n16 = desc.n_tables * (TABLE_BYTES / 16);
    for (u32 k = threadIdx.x; k < n16; k += WARPS * 32) dst[k] = __ldg(src + k);
    __syncthreads();

    const u32 warp = threadIdx.x / 32;
    const u32 lane = threadIdx.x % 32;
    u8* stage = smem + warp * STAGE_BYTES_PER_WARP;
    for (u32 c = warp; c < task.n_chunks; c += WARPS) {
        const u32 chunk = task.first_chunk + c;
#ifdef MCZ_ONLY_LAYOUT
        decode_chunk<MCZ_ONLY_LAYOUT, MCZ_ONLY_MODES>(desc, chunk, tables, stage, lane, err);
#else
        // F32's low-byte fields stay MODE_ANY: 81 instances would cost compile time for
        // the least common layout.
        switch (desc.layout) {
            case LAYOUT_BF16: dispatch<LAYOUT_BF16, 0u>(desc, chunk, tables, stage, lane, err); break;
            case LAYOUT_F16: dispatch<LAYOUT_F16, 0u>(desc, chunk, tables, stage, lane, err); break;
            case LAYOUT_F32:
                if (desc.flags & FLAG_F32_RAW) {
                    decode_chunk<LAYOUT_F32, MODES_ANY>(desc, chunk, tables, stage, lane, err);
                } else {
                    dispatch<LAYOUT_F32, MODE_ANY << 4 | MODE_ANY << 6>(desc, chunk, tables,
                                                                        stage, lane, err);
                }
                break;
            case LAYOUT_BF16_JOINT:
                dispatch_joint<LAYOUT_BF16_JOINT, 0u>(desc, chunk, tables, stage, lane, err);
                break;
            case LAYOUT_F16_JOINT:
                dispatch_joint<LAYOUT_F16_JOINT, 0u>(desc, chunk, tables, stage, lane, err);
                break;
            case LAYOUT_F32_JOINT:
                if (desc.flags & FLAG_F32_RAW) {
                    decode_chunk<LAYOUT_F32_JOINT, MODES_ANY>(desc, chunk, tables, stage, lane,
                                                              err);
                } else {
                    dispatch_joint<LAYOUT_F32_JOINT, MODE_ANY << 4 | MODE_ANY << 6>(
                        desc, chunk, tables, stage, lane, err);
                }
                break;
            default: dispatch<LAYOUT_F8, 0u>(desc, chunk, tables, stage, lane, err); break;
        }
#endif
    }
}
