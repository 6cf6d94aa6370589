//! BLAKE3 of an input hashed in pieces, in any order and on any threads, each piece while
//! it is in cache: a piece hashes the whole 1 KiB chunks it holds as complete subtrees of
//! BLAKE3's tree and keeps the bytes of the chunks it shares with its neighbours;
//! [`combine`] hashes those shared chunks and merges everything up to the root. The
//! digest is the one `blake3::hash` gives for the whole input (tested against it).
//!
//! BLAKE3's tree over `C` chunks is left-complete: every range of `2^k` chunks that starts
//! at a multiple of `2^k` and ends within the input is a node of it (the whole input
//! excepted: that is the root, hashed with its own flag), and every other node splits at
//! the largest power of two of chunks below its count.

use std::collections::HashMap;

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::CHUNK_LEN;

const CHUNK: u64 = CHUNK_LEN as u64;

/// What one piece of the input contributes to its digest.
#[derive(Debug, Default)]
pub(crate) struct PieceHash {
    /// `(first chunk, chunk count, chaining value)` of complete aligned subtrees.
    subtrees: Vec<(u64, u64, ChainingValue)>,
    /// `(input offset, bytes)` of the parts of chunks the piece holds only in part, each
    /// within one chunk.
    fragments: Vec<(u64, Vec<u8>)>,
}

/// Chunks of an input of `total` bytes (an empty input has one, empty).
fn chunk_count(total: u64) -> u64 {
    total.div_ceil(CHUNK).max(1)
}

/// The largest power of two not above `n` (`n` ≥ 1).
fn power_at_most(n: u64) -> u64 {
    1 << (63 - n.leading_zeros())
}

/// Hashes the piece `bytes` found at `offset` of an input of `total` bytes.
pub(crate) fn hash_piece(total: u64, offset: u64, bytes: &[u8]) -> PieceHash {
    let end = offset + bytes.len() as u64;
    debug_assert!(end <= total, "piece {offset}+{} past {total}", bytes.len());
    let mut out = PieceHash::default();
    let chunks = chunk_count(total);
    if chunks == 1 {
        // The one chunk is the root: hashed whole by `combine`.
        if !bytes.is_empty() {
            out.fragments.push((offset, bytes.to_vec()));
        }
        return out;
    }
    // [offset, lo): part of a chunk; [lo, hi): whole chunks (the input's end closes its
    // last chunk); [hi, end): part of a chunk.
    let lo = offset.next_multiple_of(CHUNK).min(end);
    let hi = if end == total {
        end
    } else {
        end / CHUNK * CHUNK
    }
    .max(lo);
    let at = |x: u64| (x - offset) as usize;
    if lo > offset {
        out.fragments.push((offset, bytes[..at(lo)].to_vec()));
    }
    if end > hi {
        out.fragments.push((hi, bytes[at(hi)..].to_vec()));
    }
    // Empty when the piece holds no whole chunk; else `lo` is a chunk boundary.
    let (mut c, c_end) = (lo / CHUNK, if hi > lo { hi.div_ceil(CHUNK) } else { 0 });
    while c < c_end {
        let fit = power_at_most(c_end - c);
        let mut n = if c == 0 {
            fit
        } else {
            fit.min(1 << c.trailing_zeros())
        };
        if n == chunks {
            // The whole input is the root, not a subtree: its two halves are.
            n /= 2;
        }
        let from = c * CHUNK;
        let to = ((c + n) * CHUNK).min(end);
        let cv = blake3::Hasher::new()
            .set_input_offset(from)
            .update(&bytes[at(from)..at(to)])
            .finalize_non_root();
        out.subtrees.push((c, n, cv));
        c += n;
    }
    out
}

/// The BLAKE3 digest of an input of `total` bytes from the hashes of pieces that tile it
/// (in any order); `None` if they do not (a chunk's bytes missing or doubled).
pub(crate) fn combine(total: u64, pieces: Vec<PieceHash>) -> Option<[u8; 32]> {
    let chunks = chunk_count(total);
    let mut cvs: HashMap<(u64, u64), ChainingValue> = HashMap::new();
    let mut fragments = Vec::new();
    for p in pieces {
        for (c, n, cv) in p.subtrees {
            if cvs.insert((c, n), cv).is_some() {
                return None;
            }
        }
        fragments.extend(p.fragments);
    }
    fragments.sort_unstable_by_key(|f| f.0);
    // Each chunk held in parts, assembled and hashed (the root itself when it is the
    // only chunk).
    let mut frags = fragments.into_iter().peekable();
    while let Some((first, bytes)) = frags.next() {
        let c = first / CHUNK;
        let (start, end) = if chunks == 1 {
            (0, total)
        } else {
            (c * CHUNK, ((c + 1) * CHUNK).min(total))
        };
        if first != start {
            return None;
        }
        let mut chunk = bytes;
        while let Some((at, more)) = frags.next_if(|f| f.0 < end) {
            if at != start + chunk.len() as u64 {
                return None;
            }
            chunk.extend_from_slice(&more);
        }
        if start + chunk.len() as u64 != end {
            return None;
        }
        if chunks == 1 {
            return Some(*blake3::hash(&chunk).as_bytes());
        }
        let cv = blake3::Hasher::new()
            .set_input_offset(start)
            .update(&chunk)
            .finalize_non_root();
        if cvs.insert((c, 1), cv).is_some() {
            return None;
        }
    }
    if chunks == 1 {
        // No fragment: only an empty input has no bytes.
        return (total == 0).then(|| *blake3::hash(&[]).as_bytes());
    }
    let left = power_at_most(chunks - 1);
    let root = merge_subtrees_root(
        &subtree(&cvs, 0, left)?,
        &subtree(&cvs, left, chunks - left)?,
        Mode::Hash,
    );
    Some(*root.as_bytes())
}

/// The chaining value of the (non-root) node over chunks `first..first + n`.
fn subtree(cvs: &HashMap<(u64, u64), ChainingValue>, first: u64, n: u64) -> Option<ChainingValue> {
    if let Some(cv) = cvs.get(&(first, n)) {
        return Some(*cv);
    }
    if n == 1 {
        return None;
    }
    let left = power_at_most(n - 1);
    Some(merge_subtrees_non_root(
        &subtree(cvs, first, left)?,
        &subtree(cvs, first + left, n - left)?,
        Mode::Hash,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 131 + i / 977) as u8).collect()
    }

    /// Hashes `data` cut at `cuts` (sorted, within it), pieces in reverse order.
    fn by_pieces(data: &[u8], cuts: &[usize]) -> Option<[u8; 32]> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(data.len());
        let pieces = bounds
            .windows(2)
            .rev()
            .map(|w| hash_piece(data.len() as u64, w[0] as u64, &data[w[0]..w[1]]))
            .collect();
        combine(data.len() as u64, pieces)
    }

    #[test]
    fn pieces_give_the_digest_of_the_whole() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |m: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % m as u64) as usize
        };
        let k = CHUNK_LEN;
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            2048,
            3000,
            4096,
            5 * k + 17,
            16 * k,
            16 * k + 1,
            64 * k - 1,
            (1 << 20) + 59,
            3 << 20,
        ] {
            let data = input(len);
            let want = *blake3::hash(&data).as_bytes();
            assert_eq!(by_pieces(&data, &[]), Some(want), "{len} whole");
            // Every single cut near chunk boundaries and at random places; then several
            // cuts, some pieces shorter than a chunk, some empty.
            let mut cuts: Vec<Vec<usize>> = [1, 59, 1023, 1024, 1025, 2047, 2048, 4096, 65 * k]
                .iter()
                .filter(|&&c| c <= len)
                .map(|&c| vec![c])
                .collect();
            for _ in 0..20 {
                let mut c: Vec<usize> = (0..1 + next(8)).map(|_| next(len + 1)).collect();
                if next(2) == 0 {
                    // Pieces as a tensor's: a short prefix, then a fixed size.
                    let prefix = 1 + next(300);
                    let piece = [k, 3000, 1 << 17][next(3)];
                    c = (0..)
                        .map(|i| prefix + i * piece)
                        .take_while(|&x| x < len)
                        .collect();
                }
                c.sort_unstable();
                cuts.push(c);
            }
            for c in cuts {
                assert_eq!(by_pieces(&data, &c), Some(want), "{len} cut at {c:?}");
            }
        }
    }

    #[test]
    fn pieces_that_do_not_tile_are_refused() {
        let data = input(10_000);
        let total = data.len() as u64;
        let piece = |a: usize, b: usize| hash_piece(total, a as u64, &data[a..b]);
        // A gap inside a chunk, a missing whole chunk, a doubled piece.
        assert_eq!(
            combine(total, vec![piece(0, 500), piece(600, 10_000)]),
            None
        );
        assert_eq!(
            combine(total, vec![piece(0, 3000), piece(5000, 10_000)]),
            None
        );
        assert_eq!(
            combine(
                total,
                vec![piece(0, 5000), piece(5000, 10_000), piece(5000, 10_000)]
            ),
            None
        );
        assert_eq!(combine(total, vec![]), None);
        let small = input(100);
        assert_eq!(
            combine(100, vec![hash_piece(100, 0, &small[..40])]),
            None,
            "a short single chunk"
        );
    }
}
