//! Byte buffers kept by each thread for the next tensor of the same or smaller size: a
//! fresh tensor-sized `Vec` is new memory from the kernel each time (mapped, page faults,
//! pages zeroed, unmapped when dropped), which cost about a third of `add`'s CPU on a
//! 46 MB fine-tune (`perf`, BENCHMARKS.md).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers above this are given back to the allocator rather than kept.
const KEEP_BYTES: usize = 64 << 20;
/// Buffers kept per thread.
const KEEP_COUNT: usize = 2;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A `Vec<u8>` from this thread's pool, returned to the pool of the thread that drops it.
pub(crate) struct ScratchVec(Vec<u8>);

impl ScratchVec {
    /// An empty buffer (with the capacity of an earlier one, if the pool has one).
    pub(crate) fn take() -> Self {
        let mut v = Self::pop();
        v.0.clear();
        v
    }

    /// A buffer of the pool as it was left (its bytes and length), or a new one.
    fn pop() -> Self {
        Self(POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default())
    }

    /// A buffer of `len` bytes whose contents are unspecified (zeros, or bytes of an
    /// earlier use): for outputs that are overwritten whole. `None` if the memory cannot
    /// be had (a hostile length), rather than aborting.
    pub(crate) fn with_len(len: usize) -> Option<Self> {
        let mut v = Self::pop();
        if v.0.len() < len {
            v.0.try_reserve_exact(len - v.0.len()).ok()?;
            v.0.resize(len, 0);
        }
        v.0.truncate(len);
        Some(v)
    }

    /// The buffer itself, no longer returned to the pool.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl Deref for ScratchVec {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for ScratchVec {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for ScratchVec {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 || v.capacity() > KEEP_BYTES {
            return;
        }
        // A thread being torn down has no pool any more: the buffer is simply freed.
        let _ = POOL.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < KEEP_COUNT {
                    p.push(v);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let mut a = ScratchVec::take();
        a.extend_from_slice(&[1, 2, 3]);
        let cap = a.capacity();
        let ptr = a.as_ptr();
        drop(a);
        let b = ScratchVec::with_len(2).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b.as_ptr(), b.capacity()), (ptr, cap));
        drop(b);
        // Taken empty, whatever the last use left in it.
        let mut d = ScratchVec::take();
        assert!(d.is_empty());
        d.push(9);
        assert_eq!(d[..], [9]);
        drop(d);
        let c = ScratchVec::with_len(10).unwrap();
        assert!(ScratchVec::with_len(usize::MAX).is_none());
        assert_eq!(c.len(), 10);
        assert_eq!(c.into_vec().len(), 10);
    }
}
