//! logfmt lines (`level=info msg="disk full" retries=3`) as flat events.
//!
//! No maintained Rust logfmt parser exists (the `logfmt` crate is a 2015
//! snapshot without error reporting), so the grammar is implemented here:
//!
//! - pairs are separated by whitespace; a key is a run of bytes other than
//!   whitespace, `=` and `"`;
//! - `key=value`: an unquoted value runs to the next whitespace (an `=`
//!   inside it is kept: `url=/a?b=c`, as real logs write it);
//! - `key="value"`: a quoted value with the escapes of Go's `strconv.Quote`
//!   (`\"`, `\\`, `\n`, `\r`, `\t`, `\uXXXX`, ...), as Go's logfmt encoders
//!   write them;
//! - `key=` is the empty string; a bare `key` is `true`;
//! - every value is a string (`retries=3` gives `"3"`): logfmt has no types;
//! - a key given twice keeps its first value, so text appended to a line
//!   cannot override what the producer wrote.
//!
//! A pair without a key (`=x`, a stray `"..."`), an unterminated quote or a
//! bad escape is a [`super::DecodeError::NotLogfmt`].

use serde_json::{Map, Value};

/// Why a line is not logfmt.
pub(super) type LogfmtError = &'static str;

/// Parses one line into its pairs.
pub(super) fn parse(line: &str) -> Result<Value, LogfmtError> {
    let mut event = Map::new();
    for pair in Pairs::new(line) {
        let (key, value) = pair?;
        let value = value.map_or(Value::Bool(true), Value::String);
        event.entry(key).or_insert(value);
    }
    if event.is_empty() {
        return Err("no key=value pair");
    }
    Ok(Value::Object(event))
}

/// Whether `--input-format auto` takes a line as logfmt: its first token is
/// `key=`, and every token is a `key=value` pair that parses (a bare word
/// would turn free text into keys, hiding its words from keyword rules).
pub(super) fn looks_like_logfmt(line: &str) -> bool {
    let start = line.trim_start();
    let key_len = start.bytes().take_while(|&b| is_key_byte(b)).count();
    key_len > 0
        && start.as_bytes().get(key_len) == Some(&b'=')
        && Pairs::new(line).all(|pair| pair.is_ok_and(|(_, value)| value.is_some()))
}

fn is_key_byte(b: u8) -> bool {
    !b.is_ascii_whitespace() && b != b'=' && b != b'"'
}

/// The pairs of a line, in order; a bare key has no value.
struct Pairs<'a> {
    rest: &'a str,
}

type Pair = (String, Option<String>);

impl<'a> Pairs<'a> {
    fn new(line: &'a str) -> Pairs<'a> {
        Pairs { rest: line }
    }

    fn pair(&mut self) -> Result<Pair, LogfmtError> {
        let key_len = self.rest.bytes().take_while(|&b| is_key_byte(b)).count();
        if key_len == 0 {
            return Err(if self.rest.starts_with('"') {
                "a quoted value without a key"
            } else {
                "a pair without a key"
            });
        }
        let (key, after) = self.rest.split_at(key_len);
        let Some(after) = after.strip_prefix('=') else {
            self.rest = after;
            return Ok((key.to_owned(), None));
        };
        let value = if let Some(quoted) = after.strip_prefix('"') {
            let (value, rest) = unquote(quoted)?;
            if rest.starts_with(|c: char| !c.is_ascii_whitespace()) {
                return Err("text right after a closing quote");
            }
            self.rest = rest;
            value
        } else {
            let end = after
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(after.len());
            let (value, rest) = after.split_at(end);
            if value.contains('"') {
                return Err("a quote inside an unquoted value");
            }
            self.rest = rest;
            value.to_owned()
        };
        Ok((key.to_owned(), Some(value)))
    }
}

impl Iterator for Pairs<'_> {
    type Item = Result<Pair, LogfmtError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rest = self.rest.trim_start();
        if self.rest.is_empty() {
            return None;
        }
        let pair = self.pair();
        if pair.is_err() {
            self.rest = "";
        }
        Some(pair)
    }
}

/// Reads a quoted value after its opening quote: the unescaped text and
/// what follows the closing quote.
fn unquote(text: &str) -> Result<(String, &str), LogfmtError> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[at + 1..])),
            '\\' => {
                let (_, escaped) = chars.next().ok_or("an unterminated quoted value")?;
                let unescaped = match escaped {
                    '"' => '"',
                    '\\' => '\\',
                    '/' => '/',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    'u' => {
                        let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                            .and_then(char::from_u32)
                            .ok_or("a bad \\u escape")?
                    }
                    _ => return Err("an unknown escape in a quoted value"),
                };
                value.push(unescaped);
            }
            c => value.push(c),
        }
    }
    Err("an unterminated quoted value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_quotes_and_bare_keys() {
        assert_eq!(
            parse(r#"level=info msg="disk \"sda\" full\n" retries=3 debug empty= url=/a?b=c"#)
                .unwrap(),
            json!({
                "level": "info",
                "msg": "disk \"sda\" full\n",
                "retries": "3",
                "debug": true,
                "empty": "",
                "url": "/a?b=c",
            })
        );
        assert_eq!(
            parse("  k=\"\\u00e9t\\u00e9\"\tz=1 ").unwrap(),
            json!({"k": "été", "z": "1"})
        );
    }

    #[test]
    fn first_value_of_a_key_wins() {
        assert_eq!(
            parse("user=alice action=login user=root").unwrap(),
            json!({"user": "alice", "action": "login"})
        );
    }

    #[test]
    fn malformed_lines() {
        for (line, reason) in [
            ("=x", "a pair without a key"),
            (r#"a=1 "orphan""#, "a quoted value without a key"),
            (r#"msg="never closed"#, "an unterminated quoted value"),
            (
                r#"msg="bad \q escape""#,
                "an unknown escape in a quoted value",
            ),
            (r#"msg="x"y"#, "text right after a closing quote"),
            (r#"a=b"c"#, "a quote inside an unquoted value"),
            (r#"a="\u12""#, "a bad \\u escape"),
        ] {
            assert_eq!(parse(line), Err(reason), "{line}");
        }
    }

    #[test]
    fn auto_detection_takes_only_whole_pairs() {
        assert!(looks_like_logfmt(
            r#"ts=2024-05-14T08:00:00Z level=warn msg="a b""#
        ));
        assert!(looks_like_logfmt("a=1"));
        assert!(looks_like_logfmt(r#"flag="true""#));
        assert!(!looks_like_logfmt("x=1 is more than y"));
        assert!(!looks_like_logfmt("Error: disk=full"));
        assert!(!looks_like_logfmt(r#"msg="unterminated"#));
        assert!(!looks_like_logfmt("hello world"));
        assert!(!looks_like_logfmt("=x"));
    }
}
