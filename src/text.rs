//! Text from images, registries and projects shown on a terminal: control
//! characters are escaped so a hostile label or path cannot rewrite the
//! screen (ANSI escape sequences, carriage returns).

/// `s` with C0/C1 control characters (other than none) written as `\u{..}`
/// escapes; printable text, including non-ASCII, unchanged.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_sequences_only() {
        assert_eq!(escape_controls("plain ü /app"), "plain ü /app");
        assert_eq!(escape_controls("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_controls("x\ry\n"), "x\\u{d}y\\u{a}");
    }
}
