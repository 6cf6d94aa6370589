//! XXH3-64, the checksum of every tensor, stream and index (FORMAT.md §6), with the stripe
//! loop chosen at run time.
//!
//! `xxhash-rust` picks its vector width when it is compiled: for the x86-64 baseline that is
//! SSE2, and a tensor's checksum then cost about a fifth of an AVX-512 decode. Inputs longer
//! than 240 bytes are hashed here with AVX2 or AVX-512 stripe kernels when the code path
//! ([`crate::cpu::simd_level`]) allows them; the result is the same XXH3-64 value bit for
//! bit (the tests compare with `xxhash-rust` on many lengths and piece splits). Short inputs,
//! and every input on the scalar path (what ARM runs, where `xxhash-rust` uses NEON), go to
//! `xxhash-rust` unchanged.

use crate::cpu::{simd_level, SimdLevel};

/// XXH3-64 with the default secret and seed 0 of `data`, as `xxhash_rust::xxh3::xxh3_64`.
pub fn xxh3_64(data: &[u8]) -> u64 {
    // `xxhash-rust`'s one-shot form is faster than its streaming one.
    if data.len() <= MID_SIZE_MAX || simd_level() == SimdLevel::Scalar {
        return xxhash_rust::xxh3::xxh3_64(data);
    }
    let mut hasher = Xxh3::new();
    hasher.update(data);
    hasher.digest()
}

/// Streaming XXH3-64: [`Xxh3::digest`] after any sequence of [`Xxh3::update`]s equals
/// [`xxh3_64`] of their concatenation.
#[derive(Clone)]
pub struct Xxh3(State);

#[derive(Clone)]
enum State {
    /// `xxhash-rust`'s own streaming state (scalar path, non-x86 targets).
    Reference(Box<xxhash_rust::xxh3::Xxh3>),
    /// This module's state with a vector stripe kernel.
    #[cfg(target_arch = "x86_64")]
    Vector(Box<long::State>),
}

impl Xxh3 {
    /// A hasher for the code path in force now ([`crate::cpu::simd_level`]).
    pub fn new() -> Self {
        Self::for_level(simd_level())
    }

    /// A hasher that uses the stripe kernel of `level` (which the CPU must support; the
    /// scalar level takes `xxhash-rust`).
    pub fn for_level(level: SimdLevel) -> Self {
        match level {
            SimdLevel::Scalar => Self(State::Reference(Box::default())),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 | SimdLevel::Avx512 if level.is_supported() => {
                Self(State::Vector(Box::new(long::State::new(level))))
            }
            _ => Self(State::Reference(Box::default())),
        }
    }

    /// Hashes `data` after everything given so far.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            State::Reference(h) => h.update(data),
            #[cfg(target_arch = "x86_64")]
            State::Vector(h) => h.update(data),
        }
    }

    /// The XXH3-64 of everything given so far (the state is kept: more may follow).
    pub fn digest(&self) -> u64 {
        match &self.0 {
            State::Reference(h) => h.digest(),
            #[cfg(target_arch = "x86_64")]
            State::Vector(h) => h.digest(),
        }
    }

    /// Forgets everything given so far.
    pub fn reset(&mut self) {
        match &mut self.0 {
            State::Reference(h) => h.reset(),
            #[cfg(target_arch = "x86_64")]
            State::Vector(h) => h.reset(),
        }
    }
}

impl Default for Xxh3 {
    fn default() -> Self {
        Self::new()
    }
}

/// Longest input XXH3 hashes without stripes (`xxhash-rust` handles these).
const MID_SIZE_MAX: usize = 240;

/// The long-input part of XXH3-64 (the xxHash specification, "XXH3 64-bit, inputs longer
/// than 240 bytes"), with the streaming bookkeeping of the reference `XXH3_update`.
#[cfg(target_arch = "x86_64")]
mod long {
    use super::MID_SIZE_MAX;
    use crate::cpu::SimdLevel;

    const STRIPE: usize = 64;
    const SECRET_SIZE: usize = 192;
    /// Secret bytes each stripe moves along.
    const SECRET_CONSUME_RATE: usize = 8;
    const STRIPES_PER_BLOCK: usize = (SECRET_SIZE - STRIPE) / SECRET_CONSUME_RATE;
    /// Input kept back between updates: the reference implementation's buffer, so that the
    /// last stripe is never consumed before the digest knows it is the last.
    const BUFFER: usize = 256;
    const SECRET_LASTACC_START: usize = 7;
    const SECRET_MERGEACCS_START: usize = 11;

    const PRIME32_1: u64 = 0x9E37_79B1;
    const PRIME32_2: u64 = 0x85EB_CA77;
    const PRIME32_3: u64 = 0xC2B2_AE3D;
    const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
    const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
    const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;
    const PRIME64_5: u64 = 0x27D4_EB2F_1656_67C5;

    const INITIAL_ACC: [u64; 8] = [
        PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3, PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1,
    ];

    /// The default secret of XXH3 (kSecret of the specification).
    const SECRET: [u8; SECRET_SIZE] = [
        0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad,
        0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3,
        0x67, 0x1f, 0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc,
        0xff, 0x72, 0x21, 0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6,
        0x81, 0x3a, 0x26, 0x4c, 0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65,
        0x8b, 0x1b, 0x53, 0x2e, 0xa3, 0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19,
        0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8, 0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9,
        0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d, 0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31,
        0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, 0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb,
        0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb, 0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0,
        0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e, 0x2b, 0x16, 0xbe, 0x58, 0x7d,
        0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce, 0x45, 0xcb, 0x3a, 0x8f,
        0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
    ];

    /// The eight 64-bit accumulators, in one cache line (one AVX-512 register).
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Acc([u64; 8]);

    #[derive(Clone)]
    pub(super) struct State {
        acc: Acc,
        buffer: [u8; BUFFER],
        buffered: usize,
        /// Stripes accumulated in the current block (a scramble ends every block).
        stripes_in_block: usize,
        total_len: u64,
        level: SimdLevel,
    }

    impl State {
        /// `level` is AVX2 or AVX-512 and the CPU supports it (checked by the caller).
        pub(super) fn new(level: SimdLevel) -> Self {
            debug_assert!(level != SimdLevel::Scalar && level.is_supported());
            Self {
                acc: Acc(INITIAL_ACC),
                buffer: [0; BUFFER],
                buffered: 0,
                stripes_in_block: 0,
                total_len: 0,
                level,
            }
        }

        pub(super) fn reset(&mut self) {
            self.acc = Acc(INITIAL_ACC);
            self.buffered = 0;
            self.stripes_in_block = 0;
            self.total_len = 0;
        }

        /// Accumulates the whole stripes of `data` (a multiple of 64 bytes) into `acc`,
        /// scrambling at every block end; returns the stripes now in the open block.
        fn consume(&self, acc: &mut Acc, data: &[u8], stripes_in_block: usize) -> usize {
            debug_assert_eq!(data.len() % STRIPE, 0);
            match self.level {
                // SAFETY: `State::new` requires a level the CPU supports.
                SimdLevel::Avx512 => unsafe { avx512::consume(acc, data, stripes_in_block) },
                // SAFETY: as above.
                _ => unsafe { avx2::consume(acc, data, stripes_in_block) },
            }
        }

        /// Accumulates one stripe with the secret at `secret_offset` (no scramble).
        fn last_stripe(&self, acc: &mut Acc, stripe: &[u8; STRIPE], secret_offset: usize) {
            let secret: &[u8; STRIPE] = SECRET[secret_offset..secret_offset + STRIPE]
                .try_into()
                .expect("a stripe of the secret");
            match self.level {
                // SAFETY: `State::new` requires a level the CPU supports.
                SimdLevel::Avx512 => unsafe { avx512::accumulate_one(acc, stripe, secret) },
                // SAFETY: as above.
                _ => unsafe { avx2::accumulate_one(acc, stripe, secret) },
            }
        }

        /// The reference `XXH3_update`: input is consumed in units of the buffer size, and
        /// at least one byte is always kept back for the digest.
        pub(super) fn update(&mut self, mut data: &[u8]) {
            self.total_len = self.total_len.wrapping_add(data.len() as u64);
            if data.len() <= BUFFER - self.buffered {
                self.buffer[self.buffered..self.buffered + data.len()].copy_from_slice(data);
                self.buffered += data.len();
                return;
            }
            if self.buffered > 0 {
                let fill = BUFFER - self.buffered;
                self.buffer[self.buffered..].copy_from_slice(&data[..fill]);
                data = &data[fill..];
                let mut acc = self.acc;
                self.stripes_in_block = self.consume(&mut acc, &self.buffer, self.stripes_in_block);
                self.acc = acc;
                self.buffered = 0;
            }
            // `data` is not empty here. Whole buffer units, all but the last byte's unit.
            if data.len() > BUFFER {
                let units = (data.len() - 1) / BUFFER;
                let (whole, rest) = data.split_at(units * BUFFER);
                let mut acc = self.acc;
                self.stripes_in_block = self.consume(&mut acc, whole, self.stripes_in_block);
                self.acc = acc;
                // The digest may need the bytes before the kept ones (its last stripe).
                self.buffer[BUFFER - STRIPE..].copy_from_slice(&whole[whole.len() - STRIPE..]);
                data = rest;
            }
            self.buffer[..data.len()].copy_from_slice(data);
            self.buffered = data.len();
        }

        pub(super) fn digest(&self) -> u64 {
            if self.total_len <= MID_SIZE_MAX as u64 {
                return xxhash_rust::xxh3::xxh3_64(&self.buffer[..self.buffered]);
            }
            let mut acc = self.acc;
            let last_secret = SECRET_SIZE - STRIPE - SECRET_LASTACC_START;
            let kept = &self.buffer[..self.buffered];
            if kept.len() >= STRIPE {
                let stripes = (kept.len() - 1) / STRIPE;
                self.consume(&mut acc, &kept[..stripes * STRIPE], self.stripes_in_block);
                let last: &[u8; STRIPE] = kept[kept.len() - STRIPE..]
                    .try_into()
                    .expect("a whole stripe");
                self.last_stripe(&mut acc, last, last_secret);
            } else {
                // The last stripe starts in bytes already consumed: the buffer's tail.
                let catch_up = STRIPE - kept.len();
                let mut last = [0u8; STRIPE];
                last[..catch_up].copy_from_slice(&self.buffer[BUFFER - catch_up..]);
                last[catch_up..].copy_from_slice(kept);
                self.last_stripe(&mut acc, &last, last_secret);
            }
            merge_accs(&acc, self.total_len.wrapping_mul(PRIME64_1))
        }
    }

    fn read_u64(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
    }

    fn mul128_fold64(a: u64, b: u64) -> u64 {
        let product = u128::from(a) * u128::from(b);
        product as u64 ^ (product >> 64) as u64
    }

    fn merge_accs(acc: &Acc, start: u64) -> u64 {
        let mut result = start;
        for i in 0..4 {
            let at = SECRET_MERGEACCS_START + 16 * i;
            result = result.wrapping_add(mul128_fold64(
                acc.0[2 * i] ^ read_u64(&SECRET, at),
                acc.0[2 * i + 1] ^ read_u64(&SECRET, at + 8),
            ));
        }
        // XXH3_avalanche.
        result ^= result >> 37;
        result = result.wrapping_mul(0x1656_6791_9E37_79F9);
        result ^ (result >> 32)
    }

    /// The stripe kernels. Per 64-bit lane `i` of a stripe: `acc[i ^ 1] += data[i]` and
    /// `acc[i] += lo32(k) * hi32(k)` with `k = data[i] ^ secret[i]`; a scramble sets
    /// `acc[i] = (acc[i] ^ (acc[i] >> 47) ^ secret_end[i]) * PRIME32_1`.
    mod avx512 {
        use super::{Acc, SECRET, SECRET_CONSUME_RATE, SECRET_SIZE, STRIPE, STRIPES_PER_BLOCK};
        use std::arch::x86_64::*;

        #[inline(always)]
        unsafe fn accumulate(acc: __m512i, data: *const u8, secret: *const u8) -> __m512i {
            let data = _mm512_loadu_si512(data.cast());
            let key = _mm512_xor_si512(data, _mm512_loadu_si512(secret.cast()));
            let product = _mm512_mul_epu32(key, _mm512_srli_epi64::<32>(key));
            // Swap the 64-bit halves of each 128-bit lane: acc[i ^ 1] += data[i].
            let swapped = _mm512_shuffle_epi32::<0b01_00_11_10>(data);
            _mm512_add_epi64(acc, _mm512_add_epi64(product, swapped))
        }

        /// # Safety
        /// The CPU must support AVX-512 F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn consume(acc: &mut Acc, data: &[u8], mut in_block: usize) -> usize {
            let mut a = _mm512_load_si512(acc.0.as_ptr().cast());
            let prime = _mm512_set1_epi32(super::PRIME32_1 as i32);
            let scramble_key = _mm512_loadu_si512(SECRET[SECRET_SIZE - STRIPE..].as_ptr().cast());
            for stripe in data.chunks_exact(STRIPE) {
                // SAFETY: a stripe is 64 bytes; `in_block` < 16 keeps the secret's 64
                // bytes at `in_block * 8` inside its 192.
                a = unsafe {
                    accumulate(
                        a,
                        stripe.as_ptr(),
                        SECRET.as_ptr().add(in_block * SECRET_CONSUME_RATE),
                    )
                };
                in_block += 1;
                if in_block == STRIPES_PER_BLOCK {
                    let mixed = _mm512_ternarylogic_epi64::<0x96>(
                        a,
                        _mm512_srli_epi64::<47>(a),
                        scramble_key,
                    );
                    let low = _mm512_mul_epu32(mixed, prime);
                    let high = _mm512_mul_epu32(_mm512_srli_epi64::<32>(mixed), prime);
                    a = _mm512_add_epi64(low, _mm512_slli_epi64::<32>(high));
                    in_block = 0;
                }
            }
            // SAFETY: `Acc` is 64 bytes, 64-aligned.
            unsafe { _mm512_store_si512(acc.0.as_mut_ptr().cast(), a) };
            in_block
        }

        /// # Safety
        /// The CPU must support AVX-512 F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn accumulate_one(acc: &mut Acc, stripe: &[u8; 64], secret: &[u8; 64]) {
            // SAFETY: both arrays are 64 bytes; `Acc` is 64 bytes, 64-aligned.
            unsafe {
                let a = _mm512_load_si512(acc.0.as_ptr().cast());
                let a = accumulate(a, stripe.as_ptr(), secret.as_ptr());
                _mm512_store_si512(acc.0.as_mut_ptr().cast(), a);
            }
        }
    }

    mod avx2 {
        use super::{Acc, SECRET, SECRET_CONSUME_RATE, SECRET_SIZE, STRIPE, STRIPES_PER_BLOCK};
        use std::arch::x86_64::*;

        #[inline(always)]
        unsafe fn accumulate(acc: __m256i, data: *const u8, secret: *const u8) -> __m256i {
            let data = _mm256_loadu_si256(data.cast());
            let key = _mm256_xor_si256(data, _mm256_loadu_si256(secret.cast()));
            let product = _mm256_mul_epu32(key, _mm256_srli_epi64::<32>(key));
            let swapped = _mm256_shuffle_epi32::<0b01_00_11_10>(data);
            _mm256_add_epi64(acc, _mm256_add_epi64(product, swapped))
        }

        #[inline(always)]
        unsafe fn scramble(acc: __m256i, key: __m256i, prime: __m256i) -> __m256i {
            let mixed = _mm256_xor_si256(_mm256_xor_si256(acc, _mm256_srli_epi64::<47>(acc)), key);
            let low = _mm256_mul_epu32(mixed, prime);
            let high = _mm256_mul_epu32(_mm256_srli_epi64::<32>(mixed), prime);
            _mm256_add_epi64(low, _mm256_slli_epi64::<32>(high))
        }

        /// # Safety
        /// The CPU must support AVX2.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn consume(acc: &mut Acc, data: &[u8], mut in_block: usize) -> usize {
            // SAFETY: `Acc` is 64 bytes, 64-aligned; the scramble key is the secret's
            // last 64 bytes.
            let (mut a0, mut a1, key0, key1) = unsafe {
                let key = SECRET[SECRET_SIZE - STRIPE..].as_ptr();
                (
                    _mm256_load_si256(acc.0.as_ptr().cast()),
                    _mm256_load_si256(acc.0.as_ptr().add(4).cast()),
                    _mm256_loadu_si256(key.cast()),
                    _mm256_loadu_si256(key.add(32).cast()),
                )
            };
            let prime = _mm256_set1_epi32(super::PRIME32_1 as i32);
            for stripe in data.chunks_exact(STRIPE) {
                // SAFETY: a stripe is 64 bytes; `in_block` < 16 keeps the secret's 64
                // bytes at `in_block * 8` inside its 192.
                unsafe {
                    let secret = SECRET.as_ptr().add(in_block * SECRET_CONSUME_RATE);
                    a0 = accumulate(a0, stripe.as_ptr(), secret);
                    a1 = accumulate(a1, stripe.as_ptr().add(32), secret.add(32));
                }
                in_block += 1;
                if in_block == STRIPES_PER_BLOCK {
                    // SAFETY: register-only arithmetic, AVX2 enabled here.
                    unsafe {
                        a0 = scramble(a0, key0, prime);
                        a1 = scramble(a1, key1, prime);
                    }
                    in_block = 0;
                }
            }
            // SAFETY: `Acc` is 64 bytes, 64-aligned.
            unsafe {
                _mm256_store_si256(acc.0.as_mut_ptr().cast(), a0);
                _mm256_store_si256(acc.0.as_mut_ptr().add(4).cast(), a1);
            }
            in_block
        }

        /// # Safety
        /// The CPU must support AVX2.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn accumulate_one(acc: &mut Acc, stripe: &[u8; 64], secret: &[u8; 64]) {
            // SAFETY: both arrays are 64 bytes; `Acc` is 64 bytes, 64-aligned.
            unsafe {
                let a0 = _mm256_load_si256(acc.0.as_ptr().cast());
                let a1 = _mm256_load_si256(acc.0.as_ptr().add(4).cast());
                let a0 = accumulate(a0, stripe.as_ptr(), secret.as_ptr());
                let a1 = accumulate(a1, stripe.as_ptr().add(32), secret.as_ptr().add(32));
                _mm256_store_si256(acc.0.as_mut_ptr().cast(), a0);
                _mm256_store_si256(acc.0.as_mut_ptr().add(4).cast(), a1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes (xorshift), so a failure reproduces.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Lengths around every boundary of the algorithm: short forms, the buffer (256), a
    /// block (1024 bytes = 16 stripes), several blocks.
    fn lengths() -> Vec<usize> {
        let mut v: Vec<usize> = (0..=600).collect();
        for base in [1024usize, 2048, 4096, 16 * 1024, 65_536, 1 << 20] {
            for d in [-129i64, -65, -64, -63, -1, 0, 1, 63, 64, 65, 255, 256, 257] {
                v.push((base as i64 + d) as usize);
            }
        }
        v.push(3 * 1024 * 1024 + 17);
        v
    }

    #[test]
    fn one_shot_matches_xxhash_rust_on_every_path() {
        let data = bytes(3 * 1024 * 1024 + 17, 7);
        for level in SimdLevel::supported() {
            for &n in &lengths() {
                let mut h = Xxh3::for_level(level);
                h.update(&data[..n]);
                assert_eq!(
                    h.digest(),
                    xxhash_rust::xxh3::xxh3_64(&data[..n]),
                    "{level} length {n}"
                );
            }
        }
        for &n in &lengths() {
            assert_eq!(
                xxh3_64(&data[..n]),
                xxhash_rust::xxh3::xxh3_64(&data[..n]),
                "{n}"
            );
        }
    }

    #[test]
    fn streaming_matches_one_shot_for_any_split() {
        let data = bytes(70_000, 11);
        let pieces = [
            1usize, 7, 63, 64, 65, 200, 255, 256, 257, 1000, 1024, 4097, 8192,
        ];
        for level in SimdLevel::supported() {
            for &n in &[241usize, 300, 1023, 1024, 1025, 5000, 70_000] {
                let expected = xxhash_rust::xxh3::xxh3_64(&data[..n]);
                for &piece in &pieces {
                    let mut h = Xxh3::for_level(level);
                    for part in data[..n].chunks(piece) {
                        h.update(part);
                        h.update(&[]);
                    }
                    assert_eq!(h.digest(), expected, "{level} length {n} pieces of {piece}");
                    // Digest keeps the state; reset forgets it.
                    assert_eq!(h.digest(), expected);
                    h.reset();
                    h.update(&data[..n]);
                    assert_eq!(h.digest(), expected, "{level} after reset");
                }
                // Uneven pieces: growing sizes cross buffer and block ends at odd places.
                let mut h = Xxh3::for_level(level);
                let (mut at, mut step) = (0, 1);
                while at < n {
                    let end = (at + step).min(n);
                    h.update(&data[at..end]);
                    at = end;
                    step = step * 3 / 2 + 1;
                }
                assert_eq!(h.digest(), expected, "{level} length {n} growing pieces");
            }
        }
    }
}
