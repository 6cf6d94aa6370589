//! The one little-endian byte reader of every parser of a binary structure (the `.mcz`
//! index, store objects): reads past the end are a typed error, never a panic, and
//! nothing is allocated from a count it has not checked.

/// A read past the end of the bytes.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("needs {needed} bytes at {at}, has {len}")]
pub struct Truncated {
    /// Bytes the read needs.
    pub needed: usize,
    /// Where the read starts.
    pub at: usize,
    /// Bytes there are.
    pub len: usize,
}

/// Reads fields front to back from a byte slice.
#[derive(Clone, Debug)]
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let s = self
            .bytes
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or(Truncated {
                needed: n,
                at: self.pos,
                len: self.bytes.len(),
            })?;
        self.pos += n;
        Ok(s)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_refuses_reads_past_the_end() {
        let mut r = ByteReader::new(&[1, 2, 0, 3, 0, 0, 0, 9]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.remaining(), 1);
        assert_eq!(
            r.u64(),
            Err(Truncated {
                needed: 8,
                at: 7,
                len: 8
            })
        );
        assert_eq!(r.take(usize::MAX).unwrap_err().needed, usize::MAX);
        assert_eq!(r.pos(), 7);
    }
}
