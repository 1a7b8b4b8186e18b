//! A minimal Server-Sent Events reader over a streaming HTTP response: the API's event
//! stream (`/v1/events/stream`) and task output (`/v1/tasks/{id}/output`).

/// One event: its `event:` name (`message` when absent) and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

pub struct SseReader {
    response: reqwest::Response,
    buf: Vec<u8>,
    parser: SseParser,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buf: Vec::new(),
            parser: SseParser::default(),
        }
    }

    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, reqwest::Error> {
        loop {
            while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(event) = self.parser.line(line.trim_end_matches(['\n', '\r'])) {
                    return Ok(Some(event));
                }
            }
            match self.response.chunk().await? {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// The event being read, line by line.
#[derive(Debug, Default)]
pub struct SseParser {
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds one line; a blank line completes an event.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                return None;
            }
            return Some(SseEvent {
                event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// Splits a stream of text chunks into whole lines, keeping a trailing partial line until
/// more arrives (or [`LineBuffer::rest`] takes it).
#[derive(Debug, Default)]
pub struct LineBuffer(String);

impl LineBuffer {
    /// The complete lines `chunk` finishes.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.0.push_str(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.0.find('\n') {
            let line: String = self.0.drain(..=end).collect();
            lines.push(line.trim_end_matches(['\n', '\r']).to_owned());
        }
        lines
    }

    /// What is left, if anything (a last line without a newline).
    pub fn rest(&mut self) -> Option<String> {
        (!self.0.is_empty()).then(|| std::mem::take(&mut self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed() {
        let mut p = SseParser::default();
        assert_eq!(p.line(": keep-alive"), None);
        assert_eq!(p.line("event: stdout"), None);
        assert_eq!(p.line("data: {\"a\":1}"), None);
        assert_eq!(p.line("data:x"), None);
        assert_eq!(
            p.line(""),
            Some(SseEvent {
                event: "stdout".into(),
                data: "{\"a\":1}\nx".into()
            })
        );
        assert_eq!(p.line(""), None);
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut b = LineBuffer::default();
        assert!(b.push("hel").is_empty());
        assert_eq!(b.push("lo\nwor"), ["hello"]);
        assert_eq!(b.push("ld\r\n\nx"), ["world", ""]);
        assert_eq!(b.rest().as_deref(), Some("x"));
        assert_eq!(b.rest(), None);
    }
}
