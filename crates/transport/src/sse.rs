//! Server-Sent Events: an incremental parser for upstream streams and a writer for host streams.

use bytes::{Bytes, BytesMut};

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// Incremental SSE parser (text/event-stream, UTF-8, any of CRLF/LF/CR line ends).
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
    current: Event,
    has_data: bool,
    max_event: usize,
}

impl Parser {
    /// A parser that refuses events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self { max_event, ..Self::default() }
    }

    /// Feeds bytes; returns complete events, or an error if an event is too large.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                if self.buf.len() > self.max_event {
                    return Err(format!("sse line exceeds {} bytes", self.max_event));
                }
                break;
            };
            // A CR at the very end may be half of a CRLF: wait for the next byte.
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                break;
            }
            let line = self.buf.split_to(pos);
            let skip = if self.buf[0] == b'\r' && self.buf.get(1) == Some(&b'\n') { 2 } else { 1 };
            let _ = self.buf.split_to(skip);
            if let Some(event) = self.line(&line)? {
                out.push(event);
            }
        }
        Ok(out)
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<Event>, String> {
        if line.is_empty() {
            if !self.has_data {
                self.current = Event { id: self.current.id.take(), ..Event::default() };
                return Ok(None);
            }
            self.has_data = false;
            let mut event = std::mem::take(&mut self.current);
            if event.data.ends_with('\n') {
                event.data.pop();
            }
            return Ok(Some(event));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => {
                if self.current.data.len() + value.len() > self.max_event {
                    return Err(format!("sse event exceeds {} bytes", self.max_event));
                }
                self.current.data.push_str(value);
                self.current.data.push('\n');
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.current.id = Some(value.to_owned()),
            "retry" => self.current.retry = value.parse().ok(),
            _ => {}
        }
        Ok(None)
    }
}

/// Encodes one `message` event with an optional id.
pub fn encode(id: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"event: message\n");
    // JSON serialized by the gateway never contains raw newlines, but split defensively.
    for line in data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

/// Encodes a priming event: an id, the reconnection delay, and empty data, so a client
/// can resume from it.
pub fn encode_priming(id: &str, retry_ms: u64) -> Bytes {
    Bytes::from(format!("id: {id}\nretry: {retry_ms}\ndata: \n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = Parser::new(1 << 20);
        assert!(p.push(b"id: 1\nevent: message\nda").expect("ok").is_empty());
        let events = p.push(b"ta: {\"a\":1}\n\n: comment\ndata: x\ndata: y\r\n\r\n").expect("ok");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].data, "x\ny");
    }

    #[test]
    fn handles_crlf_split_between_chunks() {
        let mut p = Parser::new(1 << 20);
        assert!(p.push(b"data: a\r").expect("ok").is_empty());
        let events = p.push(b"\n\r\n").expect("ok");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a");
    }

    #[test]
    fn refuses_oversized_events() {
        let mut p = Parser::new(8);
        assert!(p.push(b"data: 0123456789\n").is_err());
    }

    #[test]
    fn round_trips_encoded_events() {
        let mut p = Parser::new(1 << 20);
        let events = p.push(&encode(Some("s-7"), b"{\"x\":2}")).expect("ok");
        assert_eq!(events[0].id.as_deref(), Some("s-7"));
        assert_eq!(events[0].data, "{\"x\":2}");
    }
}
