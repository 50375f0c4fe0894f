//! Sequential reading of the complete lines of an events file, for the store's index and
//! for `replay`: large reads, no per-line system call, and a partial last line (one another
//! process is still writing, or a torn one) left unvisited.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// How much of the file one read takes.
const READ_CHUNK: usize = 8 << 20;

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanEnd {
    /// The offset just after the last complete line.
    pub end: u64,
    /// Bytes after it: a line without its `\n` yet.
    pub trailing: u64,
}

#[derive(Debug)]
pub enum ScanError<E> {
    Io(std::io::Error),
    Visit(E),
}

/// Calls `visit(offset, line)` for every complete line from byte `from` on, in order; `line`
/// excludes its `\n`. Stops at the first error of `visit`.
pub fn scan_lines<E>(
    file: &File,
    from: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<ScanEnd, ScanError<E>> {
    let length = file.metadata().map_err(ScanError::Io)?.len();
    let expected = usize::try_from(length.saturating_sub(from)).unwrap_or(READ_CHUNK);
    let mut buffer = vec![0u8; expected.clamp(4096, READ_CHUNK)];
    let mut filled = 0usize;
    let mut buffer_offset = from;
    loop {
        if filled == buffer.len() {
            // A single line longer than the buffer: make room for it.
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = file.read_at(&mut buffer[filled..], buffer_offset + filled as u64).map_err(ScanError::Io)?;
        if read == 0 {
            return Ok(ScanEnd { end: buffer_offset, trailing: filled as u64 });
        }
        filled += read;
        let mut start = 0usize;
        for newline in memchr::memchr_iter(b'\n', &buffer[..filled]) {
            visit(buffer_offset + start as u64, &buffer[start..newline]).map_err(ScanError::Visit)?;
            start = newline + 1;
        }
        buffer.copy_within(start..filled, 0);
        filled -= start;
        buffer_offset += start as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn visits_complete_lines_and_reports_the_partial_one() {
        let mut file = tempfile::tempfile().unwrap();
        let long = "x".repeat(10_000);
        write!(file, "a\n{long}\nbc\npartial").unwrap();
        let mut seen = Vec::new();
        let end = scan_lines::<()>(&file, 0, |offset, line| {
            seen.push((offset, line.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(0, 1), (2, 10_000), (10_003, 2)]);
        assert_eq!(end, ScanEnd { end: 10_006, trailing: 7 });
        let mut from_middle = Vec::new();
        scan_lines::<()>(&file, 10_003, |offset, _| {
            from_middle.push(offset);
            Ok(())
        })
        .unwrap();
        assert_eq!(from_middle, vec![10_003]);
    }
}
