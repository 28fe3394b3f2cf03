//! W3C Trace Context: the correlation id every audit record carries, taken from the host's
//! `traceparent` (in `_meta` or the HTTP header) or made here, and passed on to upstreams.

/// A trace and the span that caused the current request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, never all zero.
    pub trace_id: String,
    /// The caller's span (16 hex digits), "" when the trace starts here.
    pub parent_id: String,
    /// The trace flags (2 hex digits).
    pub flags: String,
}

impl TraceContext {
    /// Parses a `traceparent` value (version 00, or a later version's first four fields).
    pub fn parse(value: &str) -> Option<TraceContext> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2) || version == "ff" || !hex(trace_id, 32) || !hex(parent_id, 16) || !hex(flags, 2) {
            return None;
        }
        if (version == "00" && parts.next().is_some())
            || trace_id.bytes().all(|b| b == b'0')
            || parent_id.bytes().all(|b| b == b'0')
        {
            return None;
        }
        Some(TraceContext { trace_id: trace_id.to_owned(), parent_id: parent_id.to_owned(), flags: flags.to_owned() })
    }

    /// A new trace, started by the gateway. Its first 48 bits are the time in milliseconds and
    /// the other 80 are random (W3C Trace Context level 2 asks for at least the rightmost 56
    /// random bits, which samplers read): ids made here sort by time, so the audit trail's
    /// correlation index grows at its end instead of dirtying a random page per record (at 32
    /// records a commit that was 2–3× the cost of the commit itself; BENCHMARKS.md).
    pub fn root() -> TraceContext {
        TraceContext {
            trace_id: time_ordered_id(crate::audit::now_ms()),
            parent_id: String::new(),
            flags: "01".to_owned(),
        }
    }

    /// The trace of a legacy session whose host names none: every request of the session
    /// shares it, so a session reads as one interaction.
    pub fn of_session(session_id: &str) -> TraceContext {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("portcullis-session\n{session_id}").as_bytes());
        let mut trace_id = hex::encode(&digest[..16]);
        if trace_id.bytes().all(|b| b == b'0') {
            trace_id.replace_range(31..32, "1");
        }
        TraceContext { trace_id, parent_id: String::new(), flags: "01".to_owned() }
    }

    /// The `traceparent` the gateway sends on, naming its own span as the parent.
    pub fn child_header(&self, span_id: &str) -> String {
        format!("00-{}-{span_id}-{}", self.trace_id, self.flags)
    }
}

/// 32 hex digits: `ms` (its low 48 bits) then 80 random bits; never all zero.
fn time_ordered_id(ms: i64) -> String {
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    let id = ((u128::from(ms as u64) & ((1u128 << 48) - 1)) << 80) | random;
    lower_hex(id.max(1), 32)
}

/// A new span id.
pub fn span_id() -> String {
    lower_hex(u128::from(rand::random::<u64>().max(1)), 16)
}

/// The low `digits` hex digits of `value`, zero-padded, lowercase (as `{:0digits$x}` writes
/// them, without the formatter's machinery: two of these are made per call).
fn lower_hex(value: u128, digits: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..digits).rev().map(|i| char::from(DIGITS[((value >> (4 * i)) & 0xf) as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_read_as_the_formatter_writes_them() {
        for value in [1_u128, 0xf, 0x1234_5678_9abc_def0, u128::from(u64::MAX), u128::MAX, 0xa << 124] {
            assert_eq!(lower_hex(value, 32), format!("{value:032x}"));
            assert_eq!(lower_hex(value & u128::from(u64::MAX), 16), format!("{:016x}", value & u128::from(u64::MAX)));
        }
        assert_eq!(span_id().len(), 16);
    }

    #[test]
    fn parses_valid_traceparents_and_refuses_the_rest() {
        let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            t,
            Some(TraceContext {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
                parent_id: "00f067aa0ba902b7".to_owned(),
                flags: "01".to_owned()
            })
        );
        assert!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn new_trace_ids_sort_by_time_and_keep_80_random_bits() {
        let (a, b) = (time_ordered_id(1_700_000_000_000), time_ordered_id(1_700_000_000_001));
        assert!(a < b, "{a} then {b}");
        assert_eq!(&a[..12], &format!("{:012x}", 1_700_000_000_000_i64));
        assert_eq!(a.len(), 32);
        // Same millisecond: the random part differs.
        assert_ne!(time_ordered_id(1_700_000_000_000), time_ordered_id(1_700_000_000_000));
        assert!(TraceContext::parse(&format!("00-{}-00f067aa0ba902b7-01", time_ordered_id(0))).is_some());
        let root = TraceContext::root().trace_id;
        assert!(root[..12] <= *format!("{:012x}", crate::audit::now_ms()), "{root}");
    }

    #[test]
    fn new_ids_are_well_formed_and_children_name_the_gateway_span() {
        let root = TraceContext::root();
        let span = span_id();
        let child = TraceContext::parse(&root.child_header(&span)).expect("valid");
        assert_eq!((child.trace_id, child.parent_id), (root.trace_id, span));
    }
}
