//! Static probability models for the rANS coder: quantised frequency tables, their
//! serialised form (FORMAT.md §5.2) and the encoder/decoder lookup tables built from them.
//!
//! The model knows nothing about how symbols are coded; `rans` only sees [`EncTable`]
//! and [`DecTable`].

use super::EntropyError;

/// Probability precision: frequencies sum to `1 << PROB_BITS` (FORMAT.md §5.2).
pub const PROB_BITS: u32 = 12;
/// Sum of the quantised frequencies of a table.
pub const PROB_SCALE: u32 = 1 << PROB_BITS;
/// Most distinct symbols one table may hold; the decoder slot entry keeps an 8-bit index.
pub const MAX_TABLE_SYMBOLS: usize = 256;
/// Widest symbol a field stream may carry (BF16 exponent + top mantissa bit).
pub const MAX_SYMBOL_BITS: u32 = 9;

/// A quantised frequency table: distinct symbols in increasing order with frequencies that
/// are each at least 1 and sum to exactly [`PROB_SCALE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreqTable {
    symbols: Vec<u16>,
    freqs: Vec<u16>,
}

impl FreqTable {
    /// Builds a table from a histogram indexed by symbol value. Returns `None` when no
    /// symbol occurs or more than [`MAX_TABLE_SYMBOLS`] distinct symbols occur.
    pub fn from_counts(counts: &[u32]) -> Option<Self> {
        let (symbols, used): (Vec<u16>, Vec<u64>) = counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(s, &c)| (s as u16, u64::from(c)))
            .unzip();
        if symbols.is_empty() || symbols.len() > MAX_TABLE_SYMBOLS {
            return None;
        }
        let freqs = quantize(&used);
        Some(Self { symbols, freqs })
    }

    /// Builds a table from already quantised frequencies, indexed by symbol value (0 marks
    /// an absent symbol), checking the same rules as [`Self::parse`].
    pub fn from_freqs(freqs: &[u16]) -> Result<Self, EntropyError> {
        let (symbols, freqs): (Vec<u16>, Vec<u16>) = freqs
            .iter()
            .enumerate()
            .filter(|(_, &f)| f > 0)
            .map(|(s, &f)| (s as u16, f))
            .unzip();
        if symbols.is_empty() || symbols.len() > MAX_TABLE_SYMBOLS {
            return Err(EntropyError::TableSize {
                count: symbols.len(),
                max: MAX_TABLE_SYMBOLS,
            });
        }
        let total: u32 = freqs.iter().map(|&f| u32::from(f)).sum();
        if total != PROB_SCALE {
            return Err(EntropyError::TableSum {
                total,
                expected: PROB_SCALE,
            });
        }
        Ok(Self { symbols, freqs })
    }

    /// A table from parts its caller has checked: symbols strictly increasing, at most
    /// [`MAX_TABLE_SYMBOLS`], frequencies at least 1 summing to [`PROB_SCALE`].
    pub(crate) fn from_parts(symbols: Vec<u16>, freqs: Vec<u16>) -> Self {
        debug_assert!(!symbols.is_empty() && symbols.len() <= MAX_TABLE_SYMBOLS);
        debug_assert!(symbols.windows(2).all(|w| w[0] < w[1]));
        debug_assert_eq!(freqs.iter().map(|&f| u32::from(f)).sum::<u32>(), PROB_SCALE);
        Self { symbols, freqs }
    }

    /// The frequency of every symbol below `alphabet`, indexed by symbol value (0 where
    /// absent): the inverse of [`Self::from_freqs`].
    pub fn dense_freqs(&self, alphabet: usize) -> Vec<u16> {
        let mut dense = vec![0u16; alphabet];
        for (&s, &f) in self.symbols.iter().zip(&self.freqs) {
            if let Some(slot) = dense.get_mut(usize::from(s)) {
                *slot = f;
            }
        }
        dense
    }

    /// The distinct symbols, in increasing order.
    pub fn symbols(&self) -> &[u16] {
        &self.symbols
    }

    /// The quantised frequency of each symbol in [`Self::symbols`].
    pub fn freqs(&self) -> &[u16] {
        &self.freqs
    }

    /// Exact cost in bits of coding `counts` (indexed by symbol) with this table, or
    /// `None` if some counted symbol is missing from the table.
    pub fn cost_bits(&self, counts: &[u32]) -> Option<f64> {
        let mut bits = 0.0;
        let mut next = 0;
        for (sym, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            while next < self.symbols.len() && usize::from(self.symbols[next]) < sym {
                next += 1;
            }
            if next == self.symbols.len() || usize::from(self.symbols[next]) != sym {
                return None;
            }
            bits += f64::from(c) * (f64::from(PROB_BITS) - f64::from(self.freqs[next]).log2());
        }
        Some(bits)
    }

    /// Size in bytes of [`Self::serialize`]'s output.
    pub fn serialized_len(&self) -> usize {
        2 + 4 * self.symbols.len()
    }

    /// Appends the table: `u16 count`, then `count` × (`u16 symbol`, `u16 freq`).
    pub fn serialize(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.symbols.len() as u16).to_le_bytes());
        for (&s, &f) in self.symbols.iter().zip(&self.freqs) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&f.to_le_bytes());
        }
    }

    /// Parses a table written by [`Self::serialize`] for symbols of `symbol_bits` bits,
    /// returning it and the number of bytes read. Every field is checked.
    pub fn parse(bytes: &[u8], symbol_bits: u32) -> Result<(Self, usize), EntropyError> {
        let count = usize::from(read_u16(bytes, 0)?);
        if count == 0 || count > MAX_TABLE_SYMBOLS {
            return Err(EntropyError::TableSize {
                count,
                max: MAX_TABLE_SYMBOLS,
            });
        }
        let mut symbols = Vec::with_capacity(count);
        let mut freqs = Vec::with_capacity(count);
        let mut total = 0u32;
        for i in 0..count {
            let sym = read_u16(bytes, 2 + 4 * i)?;
            let freq = read_u16(bytes, 4 + 4 * i)?;
            if u32::from(sym) >= 1 << symbol_bits {
                return Err(EntropyError::TableSymbolWidth {
                    symbol: sym,
                    bits: symbol_bits,
                });
            }
            if symbols.last().is_some_and(|&prev| prev >= sym) {
                return Err(EntropyError::TableOrder { symbol: sym });
            }
            if freq == 0 {
                return Err(EntropyError::TableZeroFrequency { symbol: sym });
            }
            total += u32::from(freq);
            symbols.push(sym);
            freqs.push(freq);
        }
        if total != PROB_SCALE {
            return Err(EntropyError::TableSum {
                total,
                expected: PROB_SCALE,
            });
        }
        Ok((Self { symbols, freqs }, 2 + 4 * count))
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, EntropyError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(EntropyError::Truncated {
            what: "frequency table",
            needed: at + 2,
            have: bytes.len(),
        })
}

/// Quantises counts to frequencies summing to [`PROB_SCALE`], each at least 1, spending
/// the rounding error where it costs the fewest bits.
fn quantize(counts: &[u64]) -> Vec<u16> {
    let total: u64 = counts.iter().sum();
    let scale = u64::from(PROB_SCALE);
    let mut freqs: Vec<u32> = counts
        .iter()
        .map(|&c| ((c * scale + total / 2) / total).max(1) as u32)
        .collect();
    let sum: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
    // Greedy repair: each step moves one unit where the coded size changes least; the
    // direction never flips. Keys are non-negative, so their bit patterns order like the
    // values; the heap breaks ties by symbol index, keeping the result deterministic.
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    if sum > scale {
        // Decrement where c·log2(f/(f-1)) is smallest.
        let cost = |c: u64, f: u32| (c as f64 * (f64::from(f) / f64::from(f - 1)).log2()).to_bits();
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..freqs.len())
            .filter(|&i| freqs[i] > 1)
            .map(|i| Reverse((cost(counts[i], freqs[i]), i)))
            .collect();
        for _ in 0..sum - scale {
            let Reverse((_, i)) = heap
                .pop()
                .expect("frequencies above 1 remain while the sum exceeds the scale");
            freqs[i] -= 1;
            if freqs[i] > 1 {
                heap.push(Reverse((cost(counts[i], freqs[i]), i)));
            }
        }
    } else if sum < scale {
        // Increment where c·log2((f+1)/f) gains most.
        let gain = |c: u64, f: u32| (c as f64 * (f64::from(f + 1) / f64::from(f)).log2()).to_bits();
        let mut heap: BinaryHeap<(u64, Reverse<usize>)> = (0..freqs.len())
            .map(|i| (gain(counts[i], freqs[i]), Reverse(i)))
            .collect();
        for _ in 0..scale - sum {
            let (_, Reverse(i)) = heap.pop().expect("the heap holds every symbol");
            freqs[i] += 1;
            heap.push((gain(counts[i], freqs[i]), Reverse(i)));
        }
    }
    freqs.into_iter().map(|f| f as u16).collect()
}

/// Shift of the encoder's fixed-point reciprocals (see [`EncEntry::rcp`]).
pub(crate) const RCP_SHIFT: u32 = 44;

/// Encoder data of one symbol.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EncEntry {
    /// Quantised frequency; 0 marks a symbol absent from the table.
    pub freq: u32,
    /// Cumulative frequency of the smaller symbols.
    pub start: u32,
    /// Renormalise while the state is at least this.
    pub x_max: u64,
    /// `ceil(2^RCP_SHIFT / freq)`: for every state `x < freq · 2^(32 - PROB_BITS)` (what
    /// renormalisation leaves), `x / freq == (x · rcp) >> RCP_SHIFT` and the product fits
    /// in 64 bits, so the coders need no 128-bit multiply. Fits: `x · rcp ≤ (freq·2^20 − 1)
    /// (2^44/freq + 1) = 2^64 + freq·2^20 − 2^44/freq − 1`, and `freq·2^20 ≤ 2^32 ≤
    /// 2^44/freq` for `freq ≤ 2^12`. Exact: the error `x·(rcp − 2^44/freq)/2^44 < x/2^44
    /// < freq/2^24 ≤ 1/freq` never reaches the next integer.
    pub rcp: u64,
}

/// The portable (scalar-path) encoder's data of one symbol: what its step reads, in the
/// form that takes the fewest instructions. For a present symbol the step computes
/// exactly what the [`EncEntry`] step does: `x ≥ freq · 2^20` is `x > x_max_m1`, and
/// `(q << PROB_BITS) + (y − q · freq)` is `y + q · cmpl` modulo 2^32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortableEntry {
    /// [`EncEntry::rcp`].
    pub rcp: u64,
    /// `freq · 2^(32 − PROB_BITS) − 1` (fits: `freq ≤ 2^PROB_BITS`).
    pub x_max_m1: u32,
    /// Cumulative frequency of the smaller symbols.
    pub start: u32,
    /// `PROB_SCALE − freq`: at most `PROB_SCALE − 1` for a present symbol, and exactly
    /// [`PROB_SCALE`] (a bit no present symbol's value has) for an absent one.
    pub cmpl: u32,
}

/// The portable encoder's entry of a symbol absent from the table.
const PORTABLE_ABSENT: PortableEntry = PortableEntry {
    rcp: 0,
    x_max_m1: u32::MAX,
    start: 0,
    cmpl: PROB_SCALE,
};

/// Entries of the portable encoder's table: every 9-bit value, so that a symbol masked
/// to 9 bits indexes it without a bounds check.
pub(crate) const PORTABLE_ENTRIES: usize = 1 << MAX_SYMBOL_BITS;

/// Per-symbol encoder data, indexed by symbol value.
#[derive(Clone, Debug)]
pub struct EncTable {
    pub(crate) entries: Vec<EncEntry>,
    /// `freq << 16 | start` per symbol value, for vector gathers.
    pub(crate) packed: Vec<u32>,
    /// The first symbol value of each of [`Self::windows`].
    // Read by the x86-64 vector encoder alone.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) window_lo: [u32; 2],
    /// [`Self::packed`] of the [`ENC_WINDOW`] symbol values from each
    /// [`Self::window_lo`] on (0, absent, past the table): first the run of that length
    /// with the largest total frequency, then the run with the most of the rest (FP8's
    /// negative values, or what an F16 exponent spreads past the first). The AVX-512
    /// encoder looks symbols up in these in registers and gathers only those outside
    /// both (on MiniLM, under one in a million).
    // Read by the x86-64 vector encoder alone.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) windows: [[u32; ENC_WINDOW]; 2],
    /// Whether the second window holds at least [`SECOND_WINDOW_MIN`] of the frequency
    /// outside the first (else the encoder skips it and gathers what is outside the
    /// first: a lookup per vector would cost more than the rare gather).
    // Read by the x86-64 vector encoder alone.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) second_window: bool,
    /// The AVX2 encoder's window: [`NARROW_WINDOW`] values, looked up by two 8-entry
    /// permutes, for tables that keep nearly all their frequency there.
    // Read by the x86-64 vector encoder alone.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) narrow: NarrowWindow,
    /// The portable encoder's table, built on its first use (only the scalar path
    /// reads it).
    portable: std::sync::OnceLock<Box<[PortableEntry; PORTABLE_ENTRIES]>>,
}

impl EncTable {
    /// Builds the encoder table for symbols of `symbol_bits` bits.
    pub fn new(table: &FreqTable, symbol_bits: u32) -> Self {
        let mut entries = vec![EncEntry::default(); 1 << symbol_bits];
        let mut start = 0u32;
        for (&s, &f) in table.symbols.iter().zip(&table.freqs) {
            let freq = u32::from(f);
            entries[usize::from(s)] = EncEntry {
                freq,
                start,
                x_max: u64::from(freq) << (32 - PROB_BITS),
                rcp: (1u64 << RCP_SHIFT).div_ceil(u64::from(freq)),
            };
            start += freq;
        }
        let packed: Vec<u32> = entries.iter().map(|e| (e.freq << 16) | e.start).collect();
        let first = heaviest_window(&entries, ENC_WINDOW, None);
        let second = heaviest_window(&entries, ENC_WINDOW, Some(first));
        let second_window = (second..second + ENC_WINDOW)
            .filter(|s| !(first..first + ENC_WINDOW).contains(s))
            .filter_map(|s| entries.get(s))
            .map(|e| e.freq)
            .sum::<u32>()
            >= SECOND_WINDOW_MIN;
        let window_lo = [first as u32, second as u32];
        let windows = window_lo.map(|lo| {
            std::array::from_fn(|k| packed.get(lo as usize + k).copied().unwrap_or_default())
        });
        let narrow = NarrowWindow::new(&entries, &packed);
        Self {
            entries,
            packed,
            window_lo,
            windows,
            second_window,
            narrow,
            portable: std::sync::OnceLock::new(),
        }
    }

    /// The portable encoder's table: [`PortableEntry`] per 9-bit value, absent for every
    /// value without a frequency (including those past `1 << symbol_bits`).
    pub(crate) fn portable(&self) -> &[PortableEntry; PORTABLE_ENTRIES] {
        self.portable.get_or_init(|| {
            let mut t = Box::new([PORTABLE_ABSENT; PORTABLE_ENTRIES]);
            for (p, e) in t.iter_mut().zip(&self.entries) {
                if e.freq > 0 {
                    *p = PortableEntry {
                        rcp: e.rcp,
                        x_max_m1: (e.x_max - 1) as u32,
                        start: e.start,
                        cmpl: PROB_SCALE - e.freq,
                    };
                }
            }
            t
        })
    }
}

/// Symbol values in each of [`EncTable::windows`].
pub(crate) const ENC_WINDOW: usize = 64;

/// Frequency (of [`PROB_SCALE`]) outside the first window that the second must hold to
/// be looked up: at 16/4096, under one vector of 16 symbols in 15 needs a gather
/// without it.
pub(crate) const SECOND_WINDOW_MIN: u32 = 16;

/// Symbol values in [`EncTable::narrow`]: four 8-entry permutes.
pub(crate) const NARROW_WINDOW: usize = 32;

/// Most frequency (of [`PROB_SCALE`]) that a table may have outside its narrow window
/// for the AVX2 encoder to look its symbols up there: at 32/4096, about one vector of 8
/// symbols in 16 or fewer holds one outside and gathers besides. (A BF16 exponent with
/// its top mantissa bit keeps all but ~10^-4 of MiniLM's weights within 32 values; F16's
/// exponent with three mantissa bits, F32's mantissa bytes and FP8 spread wider.)
pub(crate) const NARROW_OUTSIDE_MAX: u32 = 32;

/// The AVX2 encoder's window of a table: the run of [`NARROW_WINDOW`] symbol values with
/// the most frequency and their packed entries, looked up by permutes instead of
/// gathers.
#[derive(Clone, Debug)]
// Read by the x86-64 vector encoder alone.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct NarrowWindow {
    /// Whether at most [`NARROW_OUTSIDE_MAX`] of the frequency lies outside (else the
    /// encoder gathers every entry).
    pub used: bool,
    /// The first symbol value of the window.
    pub lo: u32,
    /// [`EncTable::packed`] of the window's values (0: absent, or past the table).
    pub packed: [u32; NARROW_WINDOW],
}

impl NarrowWindow {
    fn new(entries: &[EncEntry], packed: &[u32]) -> Self {
        let lo = heaviest_window(entries, NARROW_WINDOW, None);
        let inside: u32 = entries
            .iter()
            .skip(lo)
            .take(NARROW_WINDOW)
            .map(|e| e.freq)
            .sum();
        Self {
            used: PROB_SCALE - inside <= NARROW_OUTSIDE_MAX,
            lo: lo as u32,
            packed: std::array::from_fn(|k| packed.get(lo + k).copied().unwrap_or_default()),
        }
    }
}

/// The first value of the run of `len` symbol values with the largest total frequency
/// outside the run of [`ENC_WINDOW`] values from `taken` (if any) on: the lowest such
/// run, 0 for a table no longer than `len`.
fn heaviest_window(entries: &[EncEntry], len: usize, taken: Option<usize>) -> usize {
    if entries.len() <= len {
        return 0;
    }
    let freq = |s: usize| match taken {
        Some(t) if (t..t + ENC_WINDOW).contains(&s) => 0,
        _ => entries[s].freq,
    };
    let mut sum: u32 = (0..len).map(freq).sum();
    let (mut best, mut best_lo) = (sum, 0);
    for lo in 1..=entries.len() - len {
        sum = sum + freq(lo + len - 1) - freq(lo - 1);
        if sum > best {
            (best, best_lo) = (sum, lo);
        }
    }
    best_lo
}

/// Decoder table: one packed entry per probability slot plus the symbol values.
///
/// Slot entry layouts (an in-memory structure of this decoder, not part of the format):
/// - general: bits 24..32 symbol index into `symbols`, bits 12..24 `freq - 1`, bits 0..12
///   the slot's offset inside the symbol's range;
/// - inline, when every frequency is at most [`INLINE_MAX_FREQ`] and every symbol fits in
///   9 bits (true of nearly every weight field): bits 20..32 `freq`, bits 9..20 the offset,
///   bits 0..9 the symbol itself. The vector decoder then needs one table gather per step
///   instead of two, and the frequency is one shift away from the gather, which keeps the
///   state's dependency chain (gather, multiply, add) short.
///
/// The state update needs only `freq` and the offset, so the symbol lookup stays off the
/// decoder's dependency chain either way.
#[derive(Clone, Debug)]
pub struct DecTable {
    pub(crate) slots: Box<[u32; PROB_SCALE as usize]>,
    pub(crate) symbols: [u16; MAX_TABLE_SYMBOLS],
    /// The same symbols widened to 32 bits, for vector gathers.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    // read by the x86-64 vector code only
    pub(crate) symbols32: [u32; MAX_TABLE_SYMBOLS],
    /// Whether `slots` uses the inline layout.
    pub(crate) inline: bool,
    /// The scalar decoder's layout, built on its first use (see [`ScalarSlots`]).
    scalar: std::sync::OnceLock<Box<ScalarSlots>>,
}

/// The scalar decoder's slot table: per slot the symbol's frequency and the slot's offset
/// inside the symbol's range as two plain 16-bit loads, and the symbol in a table of its
/// own. Against the packed entry this saves the shifts, masks and `+ 1` of unpacking
/// (about a fifth of the scalar step's instructions), and the symbol load is off the
/// state's dependency chain. 24 KiB, still within L1.
///
/// Eleven other layouts measured slower on Zen 4 (BENCHMARKS.md, 2026-12-04 twelfth
/// session, sc14: 1.29–1.30 ns/symbol for this one against 1.32–1.49): what saves
/// instructions costs more in table size (u32 fields that x86 folds into `imul` and `add`,
/// 17.4 instead of 19.4 instructions per symbol in 40 KiB: +10 %; any 32 KiB layout +2–15 %)
/// or in lines per lookup (three u16 arrays: +7 %), and what saves loads costs more in
/// extraction (one packed u32 per slot, 16 KiB: +11 %) or in dependent loads (a u8 index
/// per slot into per-symbol entries: +15 %). On aarch64 the `[freq, offset]` pair costs an
/// address `add` per lookup that three u16 arrays do not (14.6–14.9 against 13.6
/// instructions per symbol in the compiled loop); not timed on ARM, and llvm-mca's models
/// of Neoverse N1 and Apple A13 rank that layout slower, not faster.
#[derive(Clone, Debug)]
pub(crate) struct ScalarSlots {
    /// `[freq, offset]` per slot.
    pub(crate) freq_offset: [[u16; 2]; PROB_SCALE as usize],
    /// The symbol of each slot.
    pub(crate) symbols: [u16; PROB_SCALE as usize],
}

/// Largest frequency the inline slot layout can hold (its offset field has 11 bits).
pub const INLINE_MAX_FREQ: u16 = 1 << 11;

impl DecTable {
    /// Builds the decoder table.
    pub fn new(table: &FreqTable) -> Self {
        let inline = table.freqs.iter().all(|&f| f <= INLINE_MAX_FREQ)
            && table
                .symbols
                .iter()
                .all(|&s| u32::from(s) < 1 << MAX_SYMBOL_BITS);
        // Appended, not written into a zeroed box: every slot is written (the frequencies
        // sum to PROB_SCALE), so zeroing them first was a pass for nothing (a `calloc` of
        // 16 KiB per table: 6 % of the instructions of a decode of 480 small tensors).
        let mut slots: Vec<u32> = Vec::with_capacity(PROB_SCALE as usize);
        let mut symbols = [0u16; MAX_TABLE_SYMBOLS];
        for (idx, (&s, &f)) in table.symbols.iter().zip(&table.freqs).enumerate() {
            symbols[idx] = s;
            let f = u32::from(f);
            if inline {
                let high = (f << 20) | u32::from(s);
                slots.extend((0..f).map(|offset| high | offset << 9));
            } else {
                let high = ((idx as u32) << 24) | ((f - 1) << 12);
                slots.extend((0..f).map(|offset| high | offset));
            }
        }
        // Every constructor of a table checks its sum, so this changes nothing; it keeps
        // the conversion below from depending on it.
        slots.resize(PROB_SCALE as usize, 0);
        let slots: Box<[u32; PROB_SCALE as usize]> = slots
            .into_boxed_slice()
            .try_into()
            .expect("resized to PROB_SCALE slots");
        let symbols32 = symbols.map(u32::from);
        Self {
            slots,
            symbols,
            symbols32,
            inline,
            scalar: std::sync::OnceLock::new(),
        }
    }

    /// The scalar decoder's layout of this table, built from the slot entries the first
    /// time it is asked for: only the scalar path pays for it (the vector paths decode
    /// their few tail symbols from the packed entries).
    pub(crate) fn scalar(&self) -> &ScalarSlots {
        self.scalar.get_or_init(|| {
            let mut t = Box::new(ScalarSlots {
                freq_offset: [[0; 2]; PROB_SCALE as usize],
                symbols: [0; PROB_SCALE as usize],
            });
            if self.inline {
                self.fill_scalar::<true>(&mut t);
            } else {
                self.fill_scalar::<false>(&mut t);
            }
            t
        })
    }

    /// Fills `t` from the slot entries of this table's layout (`INLINE`), a symbol's run
    /// of slots at a time (each run starts at offset 0, as [`Self::new`] lays them out):
    /// the runs' loops vectorise, where one unpacking per slot cost ~22 K instructions per
    /// table, 0.6 % of a scalar BF16 decode.
    fn fill_scalar<const INLINE: bool>(&self, t: &mut ScalarSlots) {
        let mut slot = 0;
        while slot < self.slots.len() {
            let (freq, _, symbol) = self.unpack::<INLINE>(self.slots[slot]);
            // `max(1)`: a frequency is at least 1, so the walk always moves on.
            let end = (slot + freq.max(1) as usize).min(self.slots.len());
            for (offset, pair) in t.freq_offset[slot..end].iter_mut().enumerate() {
                *pair = [freq as u16, offset as u16];
            }
            t.symbols[slot..end].fill(symbol);
            slot = end;
        }
    }

    /// A slot entry's frequency, offset and symbol, for a table whose layout is inline
    /// exactly when `INLINE`.
    #[inline(always)]
    pub(crate) fn unpack<const INLINE: bool>(&self, entry: u32) -> (u32, u32, u16) {
        if INLINE {
            (entry >> 20, (entry >> 9) & 0x7FF, (entry & 0x1FF) as u16)
        } else {
            (
                ((entry >> 12) & 0xFFF) + 1,
                entry & 0xFFF,
                self.symbols[(entry >> 24) as usize],
            )
        }
    }

    /// Whether the table uses the inline slot layout.
    #[cfg(test)]
    pub fn is_inline(&self) -> bool {
        self.inline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first window is the lowest run of ENC_WINDOW values with the most frequency,
    /// the second the lowest with the most of the rest; both hold those values' packed
    /// entries (zeros past a short table).
    #[test]
    fn encoder_windows_hold_the_heaviest_runs() {
        let mut counts = vec![0u32; 512];
        counts[10] = 1;
        counts[300..330].fill(100);
        counts[360] = 900;
        counts[400] = 5;
        counts[450] = 7;
        let enc = EncTable::new(&FreqTable::from_counts(&counts).unwrap(), 9);
        // [297, 361) holds everything but 10, 400 and 450; so does every later start up
        // to 300, and 297 is the first. Of the rest, [387, 451) holds 400 and 450.
        assert_eq!(enc.window_lo, [297, 387]);
        // 400 and 450 hold ~12 of 4096: not enough to look the second window up.
        assert!(!enc.second_window);
        for (w, &lo) in enc.windows.iter().zip(&enc.window_lo) {
            for (k, &e) in w.iter().enumerate() {
                assert_eq!(e, enc.packed[lo as usize + k]);
            }
        }
        let short = EncTable::new(&FreqTable::from_counts(&[3, 0, 9]).unwrap(), 2);
        assert_eq!(short.window_lo, [0, 0]);
        assert!(!short.second_window);
        assert_eq!(short.windows[0][..4], short.packed[..]);
        assert!(short.windows[0][4..].iter().all(|&e| e == 0));
        // With more of them, it pays.
        counts[400] = 500;
        let two = EncTable::new(&FreqTable::from_counts(&counts).unwrap(), 9);
        assert_eq!(two.window_lo, [297, 387]);
        assert!(two.second_window);
    }

    #[test]
    fn quantized_frequencies_sum_to_scale_and_keep_every_symbol() {
        let mut counts = vec![0u32; 512];
        counts[3] = 1;
        counts[4] = 1_000_000;
        counts[100] = 7;
        counts[511] = 300_000;
        counts[200..400].fill(1);
        let t = FreqTable::from_counts(&counts).unwrap();
        assert_eq!(
            t.freqs().iter().map(|&f| u32::from(f)).sum::<u32>(),
            PROB_SCALE
        );
        assert!(t.freqs().iter().all(|&f| f >= 1));
        assert_eq!(t.symbols().len(), 204);
        let (back, used) = {
            let mut buf = Vec::new();
            t.serialize(&mut buf);
            assert_eq!(buf.len(), t.serialized_len());
            FreqTable::parse(&buf, 9).unwrap()
        };
        assert_eq!(back, t);
        assert_eq!(used, t.serialized_len());
    }

    #[test]
    fn too_many_symbols_gives_no_table() {
        assert!(FreqTable::from_counts(&[1u32; 257]).is_none());
        assert!(FreqTable::from_counts(&[0u32; 16]).is_none());
        assert!(FreqTable::from_counts(&[1u32; 256]).is_some());
    }

    #[test]
    fn parse_rejects_bad_tables() {
        let good = FreqTable::from_counts(&[5, 0, 9]).unwrap();
        let mut buf = Vec::new();
        good.serialize(&mut buf);
        assert!(FreqTable::parse(&buf[..buf.len() - 1], 2).is_err());
        assert!(FreqTable::parse(&buf, 1).is_err(), "symbol 2 needs 2 bits");
        let mut bad_sum = buf.clone();
        bad_sum[4] ^= 1;
        assert!(FreqTable::parse(&bad_sum, 2).is_err());
        let mut unordered = buf.clone();
        unordered.swap(2, 6);
        unordered.swap(3, 7);
        assert!(FreqTable::parse(&unordered, 2).is_err());
        assert!(FreqTable::parse(&[0, 0], 2).is_err());
    }

    /// The encoders' 64-bit reciprocal division is exact and cannot overflow for every
    /// frequency and every state renormalisation can leave (`x < freq · 2^20`): checked at
    /// the top of the range, where the product is largest, and around every multiple of
    /// `freq` near it, where the rounding would show.
    #[test]
    fn reciprocal_division_is_exact_without_overflow() {
        for freq in 1..=PROB_SCALE {
            let rcp = (1u64 << RCP_SHIFT).div_ceil(u64::from(freq));
            let top = (u64::from(freq) << (32 - PROB_BITS)) - 1;
            let near_top = (1..=3u64).flat_map(|k| [top + 1 - k * u64::from(freq), top - k]);
            for x in [0, 1, u64::from(freq) - 1, u64::from(freq), top]
                .into_iter()
                .chain(near_top)
            {
                let product = x.checked_mul(rcp).expect("fits in 64 bits");
                assert_eq!(
                    product >> RCP_SHIFT,
                    x / u64::from(freq),
                    "x {x} freq {freq}"
                );
            }
        }
    }

    #[test]
    fn cost_matches_hand_computation() {
        let t = FreqTable::from_counts(&[1, 1]).unwrap();
        assert_eq!(t.freqs(), &[2048, 2048]);
        assert_eq!(t.cost_bits(&[3, 5]), Some(8.0));
        assert_eq!(t.cost_bits(&[3, 5, 1]), None);
    }
}
