//! Pieces of one output file written by several threads without spinning on each other:
//! a tmpfs write holds the file's inode lock while it allocates and fills its pages, and
//! a second writer spun on that lock (4–6 % of a 46 MB `get`'s CPU, BENCHMARKS.md eleventh
//! session). A thread that finds the file busy keeps its piece (its buffer, swapped for a
//! second one of its own: no copy) and goes on decoding; it writes the kept piece with its
//! next one, or at [`PieceWriter::finish`].

use std::fs::File;
use std::io;
use std::sync::{Mutex, TryLockError};

/// Writes pieces of `file` at their offsets from the threads of the current rayon pool.
pub(crate) struct PieceWriter<'f> {
    file: &'f File,
    /// Held while writing: one writer at a time (the kernel's lock allows no more).
    writing: Mutex<()>,
    /// Per pool thread: a piece kept back while the file was busy.
    kept: Vec<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    at: u64,
    /// The piece is its first `len` bytes.
    bytes: Vec<u8>,
    len: usize,
    full: bool,
}

impl<'f> PieceWriter<'f> {
    pub(crate) fn new(file: &'f File) -> Self {
        Self {
            file,
            writing: Mutex::new(()),
            kept: (0..rayon::current_num_threads())
                .map(|_| Mutex::default())
                .collect(),
        }
    }

    /// Writes the first `n` bytes of `buf` at `at`, now or (if another thread is writing)
    /// with this thread's next piece or at [`Self::finish`]: then `buf` is kept and the
    /// thread's other buffer left in its place.
    pub(crate) fn write(&self, at: u64, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        let bytes = &buf[..n];
        let Some(slot) = rayon::current_thread_index().and_then(|i| self.kept.get(i)) else {
            let _w = lock(&self.writing);
            return write_at(self.file, bytes, at);
        };
        let mut kept = lock(slot);
        let _w = match self.writing.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) if !kept.full => {
                std::mem::swap(&mut kept.bytes, buf);
                (kept.at, kept.len, kept.full) = (at, n, true);
                return Ok(());
            }
            Err(TryLockError::WouldBlock) => lock(&self.writing),
        };
        if kept.full {
            kept.full = false;
            write_at(self.file, &kept.bytes[..kept.len], kept.at)?;
        }
        write_at(self.file, bytes, at)
    }

    /// Writes the pieces still kept back; every piece is in the file after this.
    pub(crate) fn finish(&self) -> io::Result<()> {
        for slot in &self.kept {
            let mut kept = lock(slot);
            if kept.full {
                kept.full = false;
                write_at(self.file, &kept.bytes[..kept.len], kept.at)?;
            }
        }
        Ok(())
    }
}

/// A lock whose holder panicked still guards plain bytes.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes all of `bytes` at `offset` of `file`, leaving its file position alone (threads
/// write pieces of one file at once).
pub(crate) fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(bytes, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let (mut bytes, mut offset) = (bytes, offset);
        while !bytes.is_empty() {
            match file.seek_write(bytes, offset)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => {
                    bytes = &bytes[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (file, bytes, offset);
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    use super::*;

    #[test]
    fn kept_pieces_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let (n, piece) = (64, 1000);
        let want: Vec<u8> = (0..n * piece).map(|i| (i * 7 % 251) as u8).collect();
        let slice = |k: usize| &want[k * piece..(k + 1) * piece];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            let w = PieceWriter::new(&file);
            {
                // The file busy: every thread's first piece is kept back.
                let _busy = w.writing.lock().unwrap();
                rayon::broadcast(|c| {
                    let mut buf = slice(c.index()).to_vec();
                    buf.extend_from_slice(b"past the piece");
                    w.write((c.index() * piece) as u64, &mut buf, piece)
                })
                .into_iter()
                .for_each(|r| r.unwrap());
                assert!(w.kept.iter().all(|k| k.lock().unwrap().full));
            }
            // Written with the next piece of the same thread, or at the end.
            (3..n).into_par_iter().for_each(|k| {
                w.write((k * piece) as u64, &mut slice(k).to_vec(), piece)
                    .unwrap()
            });
            w.finish().unwrap();
            assert!(w.kept.iter().all(|k| !k.lock().unwrap().full));
        });
        // From outside the pool: written at once.
        PieceWriter::new(&file)
            .write(0, &mut slice(0).to_vec(), piece)
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }
}
