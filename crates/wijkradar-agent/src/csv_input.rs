//! Opening a CSV as partners and CBS write them: comma or semicolon
//! separated (Dutch Excel writes semicolons), with or without a UTF-8 byte
//! order mark. Streams: only the first buffer is looked at before parsing.

use std::io::{BufRead, BufReader, Read};

/// A CSV reader whose delimiter is taken from the header line.
pub fn reader<R: Read>(input: R) -> std::io::Result<csv::Reader<BufReader<R>>> {
    let mut buffered = BufReader::with_capacity(64 * 1024, input);
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
