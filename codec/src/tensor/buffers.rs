//! Per-thread field buffers, shared by the encoder and the decoder.

use crate::float_split::{Layout, MAX_FIELDS};

/// Per-thread field buffers, reused across chunks and tensors: a fresh chunk-sized
/// allocation per chunk would cost a page fault per 4 KiB.
#[derive(Default)]
pub(super) struct FieldBuffers {
    /// Encoder: one buffer per field.
    pub(super) bufs: [Vec<u16>; MAX_FIELDS],
    /// Decoder: two buffers per field, for a pair of chunks.
    pub(super) pairs: [[Vec<u16>; 2]; MAX_FIELDS],
    /// Decoder: the same for rANS-coded fields that the merge reads as bytes.
    pub(super) byte_pairs: [[Vec<u8>; 2]; MAX_FIELDS],
}

/// Makes `buf` at least `n` long: buffers only grow, to the longest piece decoded so far.
pub(super) fn grow<T: Copy + Default>(buf: &mut Vec<T>, n: usize) {
    if buf.len() < n {
        buf.resize(n, T::default());
    }
}

thread_local! {
    static FIELD_BUFFERS: std::cell::RefCell<FieldBuffers> = std::cell::RefCell::new(FieldBuffers::default());
}

impl FieldBuffers {
    /// Runs `f` with this thread's buffers (never re-entered: `f` does no nested work).
    pub(super) fn with<R>(f: impl FnOnce(&mut FieldBuffers) -> R) -> R {
        FIELD_BUFFERS.with(|b| f(&mut b.borrow_mut()))
    }

    pub(super) fn split(&mut self, layout: Layout, chunk: &[u8]) -> Vec<&mut [u16]> {
        let n = chunk.len() / layout.element_size();
        let count = layout.field_bits().len();
        let mut views: Vec<&mut [u16]> = self.bufs[..count]
            .iter_mut()
            .map(|b| {
                grow(b, n);
                &mut b[..n]
            })
            .collect();
        layout.split(chunk, &mut views);
        views
    }
}
