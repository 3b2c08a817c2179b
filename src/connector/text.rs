//! Small text forms every connector's wire code needs.

/// An identifier as one URL path segment (a GUID, or a name that may hold `@`, `/` or spaces):
/// percent-encoded, a space as `%20` (form encoding's `+` is a literal plus in a path).
pub fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A vendor's text cut to at most `max` bytes (on a character boundary), marked with `…` when
/// cut: error details go into SCIM answers and logs.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_clips() {
        assert_eq!(path_segment("ada@x.com"), "ada%40x.com");
        assert_eq!(path_segment("BI Admins/x"), "BI%20Admins%2Fx");
        assert_eq!(path_segment("a+b"), "a%2Bb");
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééé", 3), "é…");
    }
}
