//! Decoding one stream: what each symbol means, the contexts that pick an element's table,
//! and the 4-lane decoder of layouts 1 and 2 (layout 3's is in `wide`).

use super::plan::table_pairs;
use super::{extra_bits_of, load, store, untokenize, Layout};
use crate::delta::coder::{BitReader, CoderError, RansDecoder, SlotTables, LANES};
use crate::delta::DeltaError;

/// What a symbol stands for, looked up instead of computed in the decode loop.
#[derive(Clone, Copy, Default)]
pub(super) struct SymbolMeaning {
    /// Magnitude without its extra bits.
    pub(super) magnitude: u64,
    /// Raw extra bits that follow.
    pub(super) extra_bits: u32,
    /// All ones when the difference is negative, else 0.
    negative: u64,
}

/// Meaning of every symbol below the alphabet size (and of nothing above it: the slot
/// tables hold symbols below 256, so a symbol indexes this array without a check).
pub(super) fn meanings(layout: Layout) -> Box<[SymbolMeaning; 256]> {
    let mut all = Box::new([SymbolMeaning::default(); 256]);
    for (s, m) in all.iter_mut().enumerate().take(layout.alphabet()) {
        let s = s as u16;
        let extra_bits = extra_bits_of(s);
        let negative = s != 0 && s & 1 == 0;
        let magnitude = if negative {
            untokenize(layout, s, 0).wrapping_neg() & layout.mask()
        } else {
            untokenize(layout, s, 0)
        };
        *m = SymbolMeaning {
            magnitude,
            extra_bits,
            negative: if negative { u64::MAX } else { 0 },
        };
    }
    all
}

/// What picks an element's table when decoding, and what its symbol means.
pub(super) struct Contexts<'a> {
    pub(super) layout: Layout,
    /// `(exponent, context bit)` → offset of its table in `tables` (the context bit is
    /// always 0 without [`FLAG_PREV_ZERO`](super::FLAG_PREV_ZERO)).
    table_at: Vec<usize>,
    /// Exponent → index of its table for context bit 0, plus that for bit 1 shifted up by
    /// 16 (layout 3: one lookup per element, off the rANS chain, then a select by the bit).
    pub(super) table_pairs: Vec<u32>,
    pub(super) tables: &'a SlotTables,
    pub(super) meanings: &'a [SymbolMeaning; 256],
}

impl<'a> Contexts<'a> {
    pub(super) fn new(
        layout: Layout,
        group_of: &[u8],
        prev_zero: bool,
        tables: &'a SlotTables,
        meanings: &'a [SymbolMeaning; 256],
    ) -> Self {
        let k = if prev_zero { 2 } else { 1 };
        let table_at = group_of
            .iter()
            .flat_map(|&g| {
                let first = usize::from(g) * k;
                [first, first + k - 1].map(SlotTables::offset)
            })
            .collect();
        let table_pairs = table_pairs(group_of, prev_zero);
        Self {
            layout,
            table_at,
            table_pairs,
            tables,
            meanings,
        }
    }
}

/// Decodes one element of lane `lane` from base bytes `b` into `o`. Lane `l` decodes
/// elements `l, l + LANES, …` and its context bit is its own previous symbol, so the
/// lanes are independent chains; the caller unrolls by LANES so that the lane indices are
/// constants and the rANS states stay in registers.
#[inline(always)]
fn decode_one<const W: usize>(
    ctx: &Contexts<'_>,
    rans: &mut RansDecoder<LANES>,
    bits: &mut BitReader,
    back_zero: &mut bool,
    lane: usize,
    b: &[u8],
    o: &mut [u8],
) {
    let layout = ctx.layout;
    let b = load::<W>(b);
    let table = ctx.table_at[layout.exponent(b) * 2 + usize::from(*back_zero)];
    let symbol = rans.get(lane, ctx.tables, table);
    *back_zero = symbol == 0;
    store::<W>(target_of::<W>(ctx, symbol as u8, b, bits), o);
}

/// The target element of base element `b` whose difference is `symbol` and the extra bits
/// it reads from `bits`.
#[inline(always)]
pub(super) fn target_of<const W: usize>(
    ctx: &Contexts<'_>,
    symbol: u8,
    b: u64,
    bits: &mut BitReader,
) -> u64 {
    let layout = ctx.layout;
    // Branch-free for symbol 0 too: no extra bits, magnitude 0.
    let m = ctx.meanings[usize::from(symbol)];
    let extra = if W == 8 {
        bits.get(m.extra_bits)
    } else {
        // At most 30 extra bits below 64-bit elements.
        bits.get32(m.extra_bits)
    };
    let magnitude = m.magnitude.wrapping_add(extra);
    // Two's complement negation where negative: (x ^ -1) - (-1) = -x.
    let diff = (magnitude ^ m.negative).wrapping_sub(m.negative);
    layout.unkey(layout.key(b).wrapping_add(diff) & layout.mask())
}

/// Decodes one stream (a layout-1 delta's, or a chunk's) of `base.len() / W` elements.
pub(super) fn decode_stream<const W: usize>(
    ctx: &Contexts<'_>,
    base: &[u8],
    out: &mut [u8],
    bytes: &[u8],
) -> Result<(), DeltaError> {
    let coder_err = |e: CoderError| DeltaError::Corrupt(format!("ulp: {e}"));
    let (mut rans, bit_bytes) = RansDecoder::<LANES>::new(bytes).map_err(coder_err)?;
    let mut bits = BitReader::new(bit_bytes);
    // Lane `l` decodes elements `l, l + LANES, …`; its context bit is its own previous
    // symbol, so the lanes are independent chains. Unrolled by LANES, the lane indices are
    // constants and the states stay in registers.
    let mut back_zero = [true; LANES];
    let n = base.len() / W;
    let rounds = n / LANES;
    const _: () = assert!(LANES == 4, "the decode loop below is unrolled for 4 lanes");
    for (bq, oq) in base
        .chunks_exact(W * LANES)
        .zip(out.chunks_exact_mut(W * LANES))
    {
        let (b, o) = (bq.split_at(2 * W), oq.split_at_mut(2 * W));
        let [z0, z1, z2, z3] = &mut back_zero;
        decode_one::<W>(ctx, &mut rans, &mut bits, z0, 0, b.0, &mut o.0[..W]);
        decode_one::<W>(ctx, &mut rans, &mut bits, z1, 1, &b.0[W..], &mut o.0[W..]);
        decode_one::<W>(ctx, &mut rans, &mut bits, z2, 2, b.1, &mut o.1[..W]);
        decode_one::<W>(ctx, &mut rans, &mut bits, z3, 3, &b.1[W..], &mut o.1[W..]);
    }
    for i in rounds * LANES..n {
        let lane = i % LANES;
        decode_one::<W>(
            ctx,
            &mut rans,
            &mut bits,
            &mut back_zero[lane],
            lane,
            &base[i * W..],
            &mut out[i * W..],
        );
    }
    rans.finish().map_err(coder_err)?;
    bits.finish().map_err(coder_err)?;
    Ok(())
}
