//! Opening a CSV as partners and CBS write them: comma or semicolon
//! separated (Dutch Excel writes semicolons), with or without a UTF-8 byte
//! order mark. Streams: only the first buffer is looked at before parsing.
//! Line ends are made LF first: the csv crate miscounts lines after CR LF.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

/// Wraps the input: turns CR LF (and a lone CR) into LF, so that the CSV
/// parser counts lines right (it miscounts after CR LF), and stops at an
/// overlong line, remembering which.
pub(crate) struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    pending_cr: bool,
    line: u64,
    since_newline: usize,
    exceeded: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Lines<R> {
    pub(crate) fn new(inner: R, exceeded: Rc<Cell<Option<u64>>>) -> Lines<R> {
        Lines {
            inner,
            buf: vec![0; 64 * 1024],
            pending_cr: false,
            line: 1,
            since_newline: 0,
            exceeded,
        }
    }

    fn push(&mut self, out: &mut [u8], w: &mut usize, b: u8) -> std::io::Result<()> {
        out[*w] = b;
        *w += 1;
        if b == b'\n' {
            self.line += 1;
            self.since_newline = 0;
        } else {
            self.since_newline += 1;
            if self.since_newline > crate::export::MAX_LINE_BYTES {
                self.exceeded.set(Some(self.line));
                return Err(std::io::Error::other("line too long"));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.len() < 2 {
            return Err(std::io::Error::other("read buffer too small"));
        }
        loop {
            let want = (out.len() - 1).min(self.buf.len());
            let n = self.inner.read(&mut self.buf[..want])?;
            let mut w = 0;
            if n == 0 {
                if std::mem::take(&mut self.pending_cr) {
                    self.push(out, &mut w, b'\n')?;
                }
                return Ok(w);
            }
            for i in 0..n {
                let b = self.buf[i];
                if std::mem::take(&mut self.pending_cr) {
                    self.push(out, &mut w, b'\n')?;
                    if b == b'\n' {
                        continue;
                    }
                }
                if b == b'\r' {
                    self.pending_cr = true;
                } else {
                    self.push(out, &mut w, b)?;
                }
            }
            if w > 0 {
                return Ok(w);
            }
        }
    }
}

/// A CSV reader whose delimiter is taken from the header line.
pub fn reader<R: Read>(input: R) -> std::io::Result<csv::Reader<BufReader<Lines<R>>>> {
    let mut buffered = BufReader::with_capacity(64 * 1024, Lines::new(input, Rc::default()));
    let head = buffered.fill_buf()?;
    let bom = head.starts_with(b"\xEF\xBB\xBF");
    let header = head[if bom { 3 } else { 0 }..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let delimiter = if header.contains(&b';') { b';' } else { b',' };
    if bom {
        buffered.consume(3);
    }
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(buffered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_delimiter_from_the_header_and_skips_a_bom() {
        let mut r = reader("\u{feff}a;b\n1;2\n".as_bytes()).unwrap();
        assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>(), ["a", "b"]);
        let mut r = reader("a,b\n1,2;3\n".as_bytes()).unwrap();
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(row.iter().collect::<Vec<_>>(), ["1", "2;3"]);
    }
}
