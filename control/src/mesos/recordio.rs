//! RecordIO, the framing of the Mesos operator API's event stream (`docs/recordio.md` in
//! apache/mesos): each record is its decimal byte length, a line feed, then that many bytes.
//!
//! The decoder takes the stream in whatever pieces the network delivers (proxies may move the
//! chunk boundaries), hands out whole records, and refuses a stream that is not RecordIO, or
//! whose record would be larger than it is willing to hold, instead of buffering without end.

/// What is wrong with a RecordIO stream. After any of these the stream is out of step and the
/// caller must drop the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("a record length is not a decimal number: {line:?}")]
    BadLength { line: String },
    #[error("a record of {size} bytes is larger than the {limit} bytes accepted")]
    TooLarge { size: u64, limit: usize },
    #[error("the stream ended inside a record ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
    #[error("the stream ended inside a record length")]
    TruncatedLength,
}

/// The longest length line accepted: `u64::MAX` has 20 digits.
const MAX_LENGTH_DIGITS: usize = 20;

/// An incremental RecordIO decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    at: usize,
    /// The length of the record being read, once its length line has been read.
    want: Option<usize>,
    limit: usize,
}

impl Decoder {
    /// A decoder that refuses records longer than `limit` bytes.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            at: 0,
            want: None,
            limit,
        }
    }

    /// Adds bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 64 * 1024 && self.at * 2 > self.buf.len() {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole record, `None` until more bytes are pushed.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordIoError> {
        loop {
            let unread = &self.buf[self.at..];
            match self.want {
                Some(want) => {
                    if unread.len() < want {
                        return Ok(None);
                    }
                    let record = unread[..want].to_vec();
                    self.at += want;
                    self.want = None;
                    return Ok(Some(record));
                }
                None => {
                    let Some(lf) = unread.iter().position(|b| *b == b'\n') else {
                        if unread.len() > MAX_LENGTH_DIGITS {
                            return Err(bad_length(unread));
                        }
                        return Ok(None);
                    };
                    let line = &unread[..lf];
                    self.at += lf + 1;
                    // The docs' reader skips empty length lines; so does this one.
                    if line.is_empty() || line == b"\r" {
                        continue;
                    }
                    self.want = Some(self.length(line)?);
                }
            }
        }
    }

    /// Says whether the stream may end here: an end inside a record is an error.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        let unread = self.buf.len() - self.at;
        match self.want {
            Some(want) => Err(RecordIoError::Truncated { have: unread, want }),
            None if self.buf[self.at..].iter().any(|b| !b.is_ascii_whitespace()) => {
                Err(RecordIoError::TruncatedLength)
            }
            None => Ok(()),
        }
    }

    fn length(&self, line: &[u8]) -> Result<usize, RecordIoError> {
        if line.len() > MAX_LENGTH_DIGITS || !line.iter().all(u8::is_ascii_digit) {
            return Err(bad_length(line));
        }
        let size: u64 = std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_length(line))?;
        match usize::try_from(size) {
            Ok(n) if n <= self.limit => Ok(n),
            _ => Err(RecordIoError::TooLarge {
                size,
                limit: self.limit,
            }),
        }
    }
}

fn bad_length(line: &[u8]) -> RecordIoError {
    let shown = &line[..line.len().min(32)];
    RecordIoError::BadLength {
        line: String::from_utf8_lossy(shown).into_owned(),
    }
}

/// Frames one record (what the master writes; the tests' fake master uses it).
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", record.len()).into_bytes();
    out.extend_from_slice(record);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let records: Vec<Vec<u8>> = vec![
            br#"{"type":"SUBSCRIBED","subscribed":{"heartbeat_interval_seconds":15.0}}"#.to_vec(),
            br#"{"type":"HEARTBEAT"}"#.to_vec(),
            Vec::new(),
            "{\"name\":\"caf\u{e9} \u{1f600}\"}".as_bytes().to_vec(),
        ];
        (records.iter().flat_map(|r| encode(r)).collect(), records)
    }

    fn decode_in_pieces(bytes: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            d.push(chunk);
            while let Some(r) = d.next_record().unwrap() {
                out.push(r);
            }
        }
        d.finish().unwrap();
        out
    }

    #[test]
    fn records_come_out_whole_wherever_the_chunks_break() {
        let (bytes, records) = stream();
        for piece in 1..=bytes.len() {
            assert_eq!(
                decode_in_pieces(&bytes, piece),
                records,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn empty_length_lines_are_skipped_as_the_docs_reader_does() {
        let mut bytes = b"\n\r\n".to_vec();
        bytes.extend(encode(b"{}"));
        bytes.extend(b"\n");
        bytes.extend(encode(b"[]"));
        assert_eq!(
            decode_in_pieces(&bytes, 3),
            [b"{}".to_vec(), b"[]".to_vec()]
        );
    }

    #[test]
    fn a_stream_cut_mid_record_or_mid_length_is_an_error_at_its_end() {
        let mut d = Decoder::new(100);
        d.push(b"20\n{\"type\":");
        assert_eq!(d.next_record(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(RecordIoError::Truncated { have: 8, want: 20 })
        );
        let mut d = Decoder::new(100);
        d.push(b"2");
        assert_eq!(d.next_record(), Ok(None));
        assert_eq!(d.finish(), Err(RecordIoError::TruncatedLength));
    }

    #[test]
    fn garbage_and_oversized_records_are_refused_without_buffering_them() {
        let mut d = Decoder::new(100);
        d.push(b"{\"type\":\"HEARTBEAT\"}\n");
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::BadLength { .. })
        ));
        // No line feed in sight: refused once longer than any length could be.
        let mut d = Decoder::new(100);
        d.push(&[b'7'; 40]);
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::BadLength { .. })
        ));
        let mut d = Decoder::new(100);
        d.push(b"101\n");
        assert_eq!(
            d.next_record(),
            Err(RecordIoError::TooLarge {
                size: 101,
                limit: 100
            })
        );
        let mut d = Decoder::new(100);
        d.push(b"99999999999999999999\n");
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::BadLength { .. } | RecordIoError::TooLarge { .. })
        ));
        let mut d = Decoder::new(100);
        d.push(b"-1\n");
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::BadLength { .. })
        ));
    }

    #[test]
    fn a_long_stream_does_not_keep_what_it_has_read() {
        let mut d = Decoder::new(1 << 20);
        let record = vec![b'x'; 1000];
        for _ in 0..1000 {
            d.push(&encode(&record));
            assert_eq!(d.next_record().unwrap().as_deref(), Some(&record[..]));
        }
        assert!(d.buf.capacity() < 64 * 1024, "{}", d.buf.capacity());
    }
}
