//! A JSON document as a stream of records, one object at a time: NDJSON, objects one after another (pretty or
//! not), one object, or an array of objects, after an optional byte order mark. Only the record being read is held,
//! so a large array streams. Anything else (a bare number, an array of numbers, an array cut short) is an error that
//! says what was found and where.

use std::io::BufRead;

/// One record: the line it starts on and its bytes, a whole JSON object.
#[derive(Debug)]
pub struct Record {
    pub line: u64,
    pub bytes: Vec<u8>,
}

/// Why a document is not records; the message names the line.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {what}")]
    NotRecords { line: u64, what: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Objects one after another: NDJSON, or one or more (pretty-printed) objects.
    Objects,
    /// `[ {…}, {…} ]`; `opened` is the line of its `[`.
    Array {
        opened: u64,
        first: bool,
    },
    Done,
}

/// The records of one document, in order.
pub struct Records<R> {
    input: R,
    line: u64,
    shape: Shape,
    /// Elements of an array read so far, for messages.
    index: u64,
}

impl<R: BufRead> Records<R> {
    pub fn new(mut input: R) -> Result<Self, SplitError> {
        let bom = input.fill_buf()?.starts_with(b"\xEF\xBB\xBF");
        if bom {
            input.consume(3);
        }
        let mut records = Self { input, line: 1, shape: Shape::Objects, index: 0 };
        match records.peek()? {
            Some(b'[') => {
                records.input.consume(1);
                records.shape = Shape::Array { opened: records.line, first: true };
            }
            Some(b'{') => {}
            None => records.shape = Shape::Done,
            Some(other) => {
                return Err(records.not_records(format!(
                    "the document is {}, not records (objects, one after another or in an array)",
                    kind(other)
                )));
            }
        }
        Ok(records)
    }

    /// The next record, or `None` at the end of the document.
    pub fn next_record(&mut self) -> Result<Option<Record>, SplitError> {
        match self.shape {
            Shape::Done => Ok(None),
            Shape::Objects => match self.peek()? {
                None => {
                    self.shape = Shape::Done;
                    Ok(None)
                }
                Some(b'{') => self.object().map(Some),
                Some(other) => {
                    Err(self.not_records(format!("{} where a record (an object) should start", kind(other))))
                }
            },
            Shape::Array { opened, first } => {
                let mut next = self.peek()?;
                if next == Some(b']') {
                    self.input.consume(1);
                    return match self.peek()? {
                        None => {
                            self.shape = Shape::Done;
                            Ok(None)
                        }
                        Some(_) => Err(self.not_records("text after the array's closing `]`".to_string())),
                    };
                }
                if !first && next.is_some() {
                    if next != Some(b',') {
                        return Err(
                            self.not_records(format!("expected `,` or `]` after element {} of the array", self.index))
                        );
                    }
                    self.input.consume(1);
                    next = self.peek()?;
                }
                self.shape = Shape::Array { opened, first: false };
                match next {
                    None => Err(SplitError::NotRecords {
                        line: self.line,
                        what: format!(
                            "the document ends inside the array opened on line {opened}: it has no closing `]` (is the file cut short?)"
                        ),
                    }),
                    Some(b'{') => self.object().map(Some),
                    Some(other) => Err(self.not_records(format!(
                        "element {} of the array is {}, not a record (an object)",
                        self.index + 1,
                        kind(other)
                    ))),
                }
            }
        }
    }

    /// Skips whitespace; the next byte, not consumed, or `None` at the end.
    fn peek(&mut self) -> Result<Option<u8>, SplitError> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            self.line += buf[..blank].iter().filter(|b| **b == b'\n').count() as u64;
            let next = buf.get(blank).copied();
            self.input.consume(blank);
            if next.is_some() {
                return Ok(next);
            }
        }
    }

    /// Reads the object that starts at the next byte (a `{`), to its matching `}`.
    fn object(&mut self) -> Result<Record, SplitError> {
        let line = self.line;
        let mut bytes = Vec::new();
        let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Err(SplitError::NotRecords {
                    line,
                    what: "the record that starts here is not closed: the document ends inside it (is the file cut short?)"
                        .to_string(),
                });
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if b == b'\n' {
                    self.line += 1;
                }
                if in_string {
                    match b {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let taken = end.unwrap_or(buf.len());
            bytes.extend_from_slice(&buf[..taken]);
            self.input.consume(taken);
            if end.is_some() {
                self.index += 1;
                return Ok(Record { line, bytes });
            }
        }
    }

    fn not_records(&self, what: String) -> SplitError {
        SplitError::NotRecords { line: self.line, what }
    }
}

/// What a JSON value starting with `first` is, for messages.
fn kind(first: u8) -> &'static str {
    match first {
        b'"' => "a string",
        b'[' => "an array",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "not JSON",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Result<Vec<(u64, String)>, String> {
        let mut records = Records::new(text.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(r) = records.next_record().map_err(|e| e.to_string())? {
            out.push((r.line, String::from_utf8(r.bytes).unwrap()));
        }
        Ok(out)
    }

    #[test]
    fn every_shape_of_records_splits_into_objects_with_their_lines() {
        let objects = Ok(vec![(2, "{\n  \"a\": 1\n}".to_string()), (5, "{\"a\": \"}{\\\"\"}".to_string())]);
        assert_eq!(split("[\n{\n  \"a\": 1\n},\n  {\"a\": \"}{\\\"\"}\n]\n"), objects);
        assert_eq!(split("\u{feff}\n{\n  \"a\": 1\n}  \n{\"a\": \"}{\\\"\"}"), objects);
        assert_eq!(
            split("{\"a\":1}\n{\"a\":[1,{}]}\n"),
            Ok(vec![(1, "{\"a\":1}".into()), (2, "{\"a\":[1,{}]}".into())])
        );
        assert_eq!(split("[]"), Ok(vec![]));
        assert_eq!(split("  \n"), Ok(vec![]));
    }

    #[test]
    fn what_is_not_records_is_named_with_its_line() {
        let err = |text| split(text).unwrap_err();
        assert_eq!(
            err("42"),
            "line 1: the document is a number, not records (objects, one after another or in an array)"
        );
        assert_eq!(err("[\n1, 2]"), "line 2: element 1 of the array is a number, not a record (an object)");
        assert_eq!(
            err("[\n{\"a\": 1},\n{\"a\": 2}\n"),
            "line 4: the document ends inside the array opened on line 1: it has no closing `]` (is the file cut short?)"
        );
        assert_eq!(
            err("[{\"a\": 1},\n{\"a\": "),
            "line 2: the record that starts here is not closed: the document ends inside it (is the file cut short?)"
        );
        assert_eq!(err("[{\"a\": 1} {\"a\": 2}]"), "line 1: expected `,` or `]` after element 1 of the array");
        assert_eq!(err("[{\"a\": 1}] x"), "line 1: text after the array's closing `]`");
        assert_eq!(err("{\"a\": 1}\nnull\n"), "line 2: null where a record (an object) should start");
    }
}
