//! Dotenv files (`.env.production`): `KEY=VALUE` lines, as the dotenv
//! libraries read them, not Docker's literal `--env-file` (which would keep
//! the quotes in the value). `#` starts a comment line; `export ` is allowed
//! before a key; an unquoted value is trimmed and ends at ` #`; single
//! quotes are literal; double quotes take `\n`, `\t`, `\"`, `\\` and may
//! span lines. A bad line is an error with file:line:column.

use std::path::Path;

use crate::config::{ConfigError, Source};

/// Largest env file read (it is configuration, not data).
pub const MAX_FILE: u64 = 1 << 20;

/// Parses dotenv text into ordered pairs (a later key overrides an earlier one when applied).
pub fn parse(file: &Path, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let src = Source { file, text };
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map(|i| pos + i).unwrap_or(text.len());
        let line = &text[pos..line_end];
        let lead = line.len() - line.trim_start().len();
        let body = line.trim();
        if body.is_empty() || body.starts_with('#') {
            pos = line_end + 1;
            continue;
        }
        let mut start = pos + lead;
        let mut rest = &text[start..line_end];
        if let Some(r) = rest.strip_prefix("export ") {
            let skipped = rest.len() - r.trim_start().len();
            start += skipped;
            rest = &text[start..line_end];
        }
        // Errors never quote the line: a file given by mistake (a key, a
        // credentials file) must not end up in a CI log.
        let Some(eq) = rest.find('=') else {
            return Err(src.error(start..start, "expected KEY=VALUE (a dotenv line)"));
        };
        let key = rest[..eq].trim_end();
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !valid {
            return Err(src.error(
                start..start,
                "expected KEY=VALUE with KEY a variable name (letters, digits, `_` and `.`, not starting with a digit)",
            ));
        }
        let vstart = start + eq + 1;
        let after = &text[vstart..];
        let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
        let v0 = vstart + spaces;
        let (value, next) = match text[v0..].chars().next() {
            Some(q @ ('"' | '\'')) => {
                let (value, close) = quoted(&text[v0 + 1..], q)
                    .ok_or_else(|| src.error(v0..v0, format!("this {q} quote is never closed")))?;
                let close = v0 + 1 + close;
                // After the closing quote only a comment may follow.
                let tail_end = text[close..].find('\n').map(|i| close + i).unwrap_or(text.len());
                let tail = text[close..tail_end].trim();
                if !tail.is_empty() && !tail.starts_with('#') {
                    return Err(src.error(close..close, "unexpected text after the closing quote"));
                }
                (value, tail_end + 1)
            }
            _ => {
                let raw = &text[v0..line_end];
                let raw = match raw.find(" #").or_else(|| raw.find("\t#")) {
                    Some(i) => &raw[..i],
                    None => raw,
                };
                (raw.trim().trim_end_matches('\r').to_string(), line_end + 1)
            }
        };
        out.push((key.to_string(), value));
        pos = next;
    }
    Ok(out)
}

/// The value inside quotes up to the closing `q`, and the offset just past it.
fn quoted(s: &str, q: char) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        if c == q {
            return Some((out, i + 1));
        }
        if c == '\\' && q == '"' {
            let (_, e) = it.next()?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                other => out.push(other),
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Reads and parses a dotenv file (bounded).
pub fn load(path: &Path) -> crate::Result<Vec<(String, String)>> {
    let bytes = crate::image::read_regular(path, MAX_FILE)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(crate::Error::format(
            path.display().to_string(),
            format!("larger than {} KiB: an env file is configuration", MAX_FILE >> 10),
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| crate::Error::format(path.display().to_string(), "not UTF-8 text: an env file is text"))?;
    parse(path, &text).map_err(crate::Error::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Result<Vec<(String, String)>, ConfigError> {
        parse(Path::new(".env"), t)
    }

    #[test]
    fn reads_the_dotenv_forms() {
        let v = p("# comment\n\nA=1\nexport B = two words  # note\nC='lit $x \\n'\nD=\"a\\nb \\\"q\\\"\"\nE=\nF=\"multi\nline\"\nG=x#y\n")
            .unwrap();
        let m: Vec<(&str, &str)> = v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            m,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "lit $x \\n"),
                ("D", "a\nb \"q\""),
                ("E", ""),
                ("F", "multi\nline"),
                ("G", "x#y"),
            ]
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = p("A=1\n  just words\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        let e = p("A=1\nB=\"open\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("never closed"), "{e}");
        let e = p("1A=x\n").unwrap_err();
        assert!(e.message.contains("variable name") && !e.message.contains("1A"), "{e}");
        let e = p("A='x' y\n").unwrap_err();
        assert!(e.message.contains("after the closing quote"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = p(&s);
        }

        #[test]
        fn plain_pairs_round_trip(k in "[A-Z_][A-Z0-9_]{0,10}", v in "[a-zA-Z0-9:/@._-]{0,30}") {
            let got = p(&format!("{k}={v}\n")).unwrap();
            proptest::prop_assert_eq!(got, vec![(k, v)]);
        }
    }
}
