//! Spare byte buffers for the encoder's coded pieces.
//!
//! A pack codes every chunk of every field into a piece of its own (a few hundred KiB),
//! holds a batch of them until the writer has copied them out, then frees them. Freed in
//! bulk, the allocator hands those pages back to the kernel (glibc trims the heap), and
//! the next batch's pieces fault them in again: a tenth of a one-thread BF16 encode's
//! time. The writer gives each written piece back here instead, and the encoder takes its
//! next pieces from here: the same pages, already mapped.
//!
//! Bounded ([`MAX_SPARE_BYTES`]) and kept from one pack to the next: emptied at the end
//! of each pack, the buffers were freed in bulk again and the next pack faulted them in
//! (a repeated pack of MiniLM E5M2 ran 12 % slower than without the spare buffers).
//! [`release`] (public as `container::release_spare_buffers`) frees them.

use std::sync::Mutex;

/// Most bytes (of capacity) kept spare at once: the coded pieces of the two 16 MiB
/// batches in flight (one written while the next is coded), with room to spare.
const MAX_SPARE_BYTES: usize = 64 << 20;

/// Buffers smaller than this are not kept: the allocator reuses small blocks anyway.
const MIN_SPARE_CAPACITY: usize = 16 << 10;

/// The spare buffers (empty, most recently given back last) and their total capacity.
struct Spare {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

static SPARE: Mutex<Spare> = Mutex::new(Spare {
    buffers: Vec::new(),
    bytes: 0,
});

/// An empty buffer with room for at least `len` bytes: the smallest spare one that is
/// large enough (pieces of different streams differ in size), a fresh one otherwise.
pub(crate) fn buffer(len: usize) -> Vec<u8> {
    match spare(len) {
        Some(mut b) => {
            b.clear();
            b
        }
        None => Vec::with_capacity(len),
    }
}

/// A buffer of exactly `len` bytes, for a caller that overwrites every one of them:
/// a spare one keeps the bytes of its last piece (only what it lacks of `len` is
/// zeroed), a fresh one is zeroed.
pub(crate) fn buffer_filled(len: usize) -> Vec<u8> {
    match spare(len) {
        Some(mut b) => {
            b.resize(len, 0);
            b
        }
        None => vec![0; len],
    }
}

/// The smallest spare buffer with room for `len` bytes (holding a former piece's
/// bytes), if there is one and `len` is worth a spare buffer.
fn spare(len: usize) -> Option<Vec<u8>> {
    if len < MIN_SPARE_CAPACITY {
        return None;
    }
    let mut spare = SPARE.lock().ok()?;
    let best = (spare.buffers.iter().enumerate())
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    let b = spare.buffers.swap_remove(best);
    spare.bytes -= b.capacity();
    Some(b)
}

/// Keeps `buf` (its bytes no longer needed) for a later [`buffer`] or
/// [`buffer_filled`], or frees it when it is small or the spare buffers are at their
/// limit. Its bytes are kept too, so that [`buffer_filled`] need not zero them again.
pub(crate) fn give_back(buf: Vec<u8>) {
    let cap = buf.capacity();
    if cap < MIN_SPARE_CAPACITY {
        return;
    }
    if let Ok(mut spare) = SPARE.lock() {
        if spare.bytes + cap <= MAX_SPARE_BYTES {
            spare.bytes += cap;
            spare.buffers.push(buf);
        }
    }
}

/// Frees every spare buffer.
pub(crate) fn release() {
    let buffers = match SPARE.lock() {
        Ok(mut spare) => {
            spare.bytes = 0;
            std::mem::take(&mut spare.buffers)
        }
        Err(_) => return,
    };
    // Freed outside the lock.
    drop(buffers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_large_enough() {
        let mut b = buffer(MIN_SPARE_CAPACITY * 2);
        b.extend_from_slice(&[7; 100]);
        give_back(b);
        let again = buffer(MIN_SPARE_CAPACITY);
        assert!(again.is_empty());
        assert!(again.capacity() >= MIN_SPARE_CAPACITY);
        let large = buffer(MAX_SPARE_BYTES);
        assert!(large.is_empty() && large.capacity() >= MAX_SPARE_BYTES);
        give_back(large);
        give_back(again);
        release();
        assert!(buffer(1).is_empty());
    }

    #[test]
    fn filled_buffers_have_the_length_asked() {
        for len in [0, 5, MIN_SPARE_CAPACITY, 3 * MIN_SPARE_CAPACITY] {
            let b = buffer_filled(len);
            assert_eq!(b.len(), len);
            give_back(b);
        }
        // A spare buffer with fewer bytes than asked, then with more.
        give_back(vec![9; MIN_SPARE_CAPACITY * 4]);
        let b = buffer_filled(MIN_SPARE_CAPACITY * 2);
        assert_eq!(b.len(), MIN_SPARE_CAPACITY * 2);
        give_back(b);
        let mut short = Vec::with_capacity(MIN_SPARE_CAPACITY * 8);
        short.push(1);
        give_back(short);
        let b = buffer_filled(MIN_SPARE_CAPACITY * 5);
        assert_eq!(b.len(), MIN_SPARE_CAPACITY * 5);
        release();
    }
}
