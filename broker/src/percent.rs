//! Percent-encoding for URI components (AMQP userinfo and vhost, management API paths).

/// Encodes every byte except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`),
/// so `/` in a vhost becomes `%2F` and `@`/`:` in a password cannot break the URI.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_reserved_and_non_ascii() {
        assert_eq!(super::encode("ris.acme-1_~"), "ris.acme-1_~");
        assert_eq!(super::encode("/"), "%2F");
        assert_eq!(super::encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
    }
}
