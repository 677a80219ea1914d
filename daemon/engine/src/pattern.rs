//! Sigma strings: wildcards, escapes, and the modifiers that transform a value
//! before it is matched (`base64`, `base64offset`, `wide`, `utf16*`, `windash`).
//!
//! A Sigma string is parsed into tokens: literal text, `*` (any run of
//! characters) and `?` (one character). A backslash escapes `*`, `?` and
//! itself; before anything else it is a literal backslash, so Windows paths
//! such as `C:\Windows\` need no escaping.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// One token of a Sigma string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Literal bytes (UTF-8 text until an encoding modifier changes it).
    Literal(Vec<u8>),
    /// `*`: any run of characters, possibly empty.
    AnyRun,
    /// `?`: exactly one character.
    AnyChar,
}

/// A Sigma string value as a token sequence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SigmaString {
    tokens: Vec<Token>,
}

const WINDASH_VARIANTS: [&str; 5] = ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"];
/// Beyond this many dash positions the expansion (5^n variants) is refused.
const WINDASH_MAX_POSITIONS: usize = 4;

impl SigmaString {
    /// Parses a value with wildcards and escapes.
    pub fn parse(text: &str) -> Self {
        let mut out = SigmaString::default();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => out.tokens.push(Token::AnyRun),
                '?' => out.tokens.push(Token::AnyChar),
                '\\' => match chars.peek() {
                    Some(&next @ ('*' | '?' | '\\')) => {
                        chars.next();
                        out.push_literal(next.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    _ => out.push_literal(b"\\"),
                },
                _ => out.push_literal(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out
    }

    /// A string with no wildcards at all.
    pub fn literal(text: &str) -> Self {
        let mut out = SigmaString::default();
        out.push_literal(text.as_bytes());
        out
    }

    /// The tokens, adjacent literals merged.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    fn push_literal(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(Token::Literal(last)) = self.tokens.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.tokens.push(Token::Literal(bytes.to_vec()));
        }
    }

    fn push(&mut self, token: Token) {
        match token {
            Token::Literal(bytes) => self.push_literal(&bytes),
            other => self.tokens.push(other),
        }
    }

    /// True when the string holds `*` or `?`.
    pub fn has_wildcards(&self) -> bool {
        self.tokens.iter().any(|t| !matches!(t, Token::Literal(_)))
    }

    /// The literal bytes when there is no wildcard.
    fn plain_bytes(&self, modifier: &str) -> Result<Vec<u8>, String> {
        if self.has_wildcards() {
            return Err(format!(
                "the '{modifier}' modifier cannot encode a value with wildcards"
            ));
        }
        Ok(self
            .tokens
            .iter()
            .flat_map(|t| match t {
                Token::Literal(bytes) => bytes.clone(),
                _ => Vec::new(),
            })
            .collect())
    }

    /// Wraps in `*` on the left and/or right, as `contains`/`endswith`/`startswith` do.
    pub fn wrap(mut self, left: bool, right: bool) -> Self {
        if left && self.tokens.first() != Some(&Token::AnyRun) {
            self.tokens.insert(0, Token::AnyRun);
        }
        if right && self.tokens.last() != Some(&Token::AnyRun) {
            self.tokens.push(Token::AnyRun);
        }
        self
    }

    fn map_literals(&self, encode: impl Fn(&str) -> Vec<u8>) -> Result<Self, String> {
        let mut out = SigmaString::default();
        for token in &self.tokens {
            match token {
                Token::Literal(bytes) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| "cannot re-encode a value that is not UTF-8 text")?;
                    out.push_literal(&encode(text));
                }
                other => out.push(other.clone()),
            }
        }
        Ok(out)
    }

    /// `wide`/`utf16le`: UTF-16 little-endian.
    pub fn utf16le(&self) -> Result<Self, String> {
        self.map_literals(|s| s.encode_utf16().flat_map(u16::to_le_bytes).collect())
    }

    /// `utf16be`: UTF-16 big-endian.
    pub fn utf16be(&self) -> Result<Self, String> {
        self.map_literals(|s| s.encode_utf16().flat_map(u16::to_be_bytes).collect())
    }

    /// `utf16`: a little-endian byte-order mark, then UTF-16 little-endian.
    pub fn utf16(&self) -> Result<Self, String> {
        let mut out = SigmaString::default();
        out.push_literal(&[0xFF, 0xFE]);
        for token in self.utf16le()?.tokens {
            out.push(token);
        }
        Ok(out)
    }

    /// `base64`: the standard Base64 encoding of the value.
    pub fn base64(&self) -> Result<Self, String> {
        let bytes = self.plain_bytes("base64")?;
        Ok(SigmaString::literal(&BASE64.encode(bytes)))
    }

    /// `base64offset`: the three encodings of the value at byte offsets 0, 1
    /// and 2 within a larger Base64 text, trimmed to the characters that do not
    /// depend on the surrounding bytes.
    pub fn base64offset(&self) -> Result<Vec<Self>, String> {
        let bytes = self.plain_bytes("base64offset")?;
        const START: [usize; 3] = [0, 2, 3];
        const END_TRIM: [usize; 3] = [0, 3, 2];
        let mut variants = Vec::with_capacity(3);
        for offset in 0..3 {
            let mut padded = vec![b' '; offset];
            padded.extend_from_slice(&bytes);
            let encoded = BASE64.encode(&padded);
            let end = encoded.len() - END_TRIM[(bytes.len() + offset) % 3];
            let start = START[offset].min(end);
            variants.push(SigmaString::literal(&encoded[start..end]));
        }
        Ok(variants)
    }

    /// `windash`: every `-` or `/` that starts a command-line switch (not
    /// preceded by a word character, followed by one) in each of its
    /// interchangeable forms: `-`, `/`, en dash, em dash, horizontal bar.
    pub fn windash(&self) -> Result<Vec<Self>, String> {
        // Split the literals into characters so the positions can be expanded.
        let mut units: Vec<Unit> = Vec::new();
        for token in &self.tokens {
            match token {
                Token::Literal(bytes) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| "windash needs a value that is UTF-8 text")?;
                    units.extend(text.chars().map(Unit::Char));
                }
                other => units.push(Unit::Wild(other.clone())),
            }
        }
        let is_word = |unit: Option<&Unit>| matches!(unit, Some(Unit::Char(c)) if c.is_alphanumeric() || *c == '_');
        let positions: Vec<usize> = (0..units.len())
            .filter(|&i| {
                matches!(units[i], Unit::Char('-' | '/'))
                    && !is_word(i.checked_sub(1).and_then(|p| units.get(p)))
                    && is_word(units.get(i + 1))
            })
            .collect();
        if positions.len() > WINDASH_MAX_POSITIONS {
            return Err(format!(
                "windash: {} switch characters would expand to too many variants (at most {WINDASH_MAX_POSITIONS})",
                positions.len()
            ));
        }
        let combinations = WINDASH_VARIANTS.len().pow(positions.len() as u32);
        let mut variants = Vec::with_capacity(combinations);
        for combination in 0..combinations {
            let mut choice = combination;
            let mut out = SigmaString::default();
            let mut next_position = positions.iter().peekable();
            for (i, unit) in units.iter().enumerate() {
                match unit {
                    Unit::Char(c) => {
                        if next_position.peek() == Some(&&i) {
                            next_position.next();
                            let dash = WINDASH_VARIANTS[choice % WINDASH_VARIANTS.len()];
                            choice /= WINDASH_VARIANTS.len();
                            out.push_literal(dash.as_bytes());
                        } else {
                            out.push_literal(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                    }
                    Unit::Wild(token) => out.push(token.clone()),
                }
            }
            variants.push(out);
        }
        Ok(variants)
    }

    /// The tokens as text; fails when an encoding produced bytes that are not UTF-8.
    pub fn into_text(self) -> Result<Vec<TextToken>, String> {
        self.tokens
            .into_iter()
            .map(|token| match token {
                Token::Literal(bytes) => String::from_utf8(bytes)
                    .map(TextToken::Literal)
                    .map_err(|_| {
                        "the encoded value is not valid text; combine the encoding with 'base64' or 'base64offset'"
                            .to_owned()
                    }),
                Token::AnyRun => Ok(TextToken::AnyRun),
                Token::AnyChar => Ok(TextToken::AnyChar),
            })
            .collect()
    }
}

enum Unit {
    Char(char),
    Wild(Token),
}

/// A token of a Sigma string whose literals are text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextToken {
    /// Literal text.
    Literal(String),
    /// `*`.
    AnyRun,
    /// `?`.
    AnyChar,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Token {
        Token::Literal(s.as_bytes().to_vec())
    }

    #[test]
    fn wildcards_and_escapes() {
        assert_eq!(
            SigmaString::parse("a*b?c").tokens(),
            &[lit("a"), Token::AnyRun, lit("b"), Token::AnyChar, lit("c")]
        );
        assert_eq!(SigmaString::parse(r"a\*b\?").tokens(), &[lit("a*b?")]);
        // An escaped backslash before a wildcard keeps the wildcard.
        assert_eq!(
            SigmaString::parse(r"dir\\*").tokens(),
            &[lit("dir\\"), Token::AnyRun]
        );
        // A lone backslash before an ordinary character is literal.
        assert_eq!(
            SigmaString::parse(r"C:\Windows\").tokens(),
            &[lit(r"C:\Windows\")]
        );
        assert_eq!(SigmaString::parse("").tokens(), &[]);
    }

    #[test]
    fn wrap_does_not_double_wildcards() {
        let s = SigmaString::parse("*abc").wrap(true, true);
        assert_eq!(s.tokens(), &[Token::AnyRun, lit("abc"), Token::AnyRun]);
    }

    #[test]
    fn base64_and_offsets() {
        let s = SigmaString::literal("/bin/bash");
        assert_eq!(s.base64().unwrap().tokens(), &[lit("L2Jpbi9iYXNo")]);
        let variants: Vec<_> = s
            .base64offset()
            .unwrap()
            .into_iter()
            .map(|v| v.tokens().to_vec())
            .collect();
        // Reference values from the Sigma specification's example.
        assert_eq!(
            variants,
            vec![
                vec![lit("L2Jpbi9iYXNo")],
                vec![lit("9iaW4vYmFza")],
                vec![lit("vYmluL2Jhc2")]
            ]
        );
        assert!(SigmaString::parse("a*").base64().is_err());
    }

    #[test]
    fn utf16_encodings() {
        let s = SigmaString::literal("ab");
        assert_eq!(
            s.utf16le().unwrap().tokens(),
            &[Token::Literal(b"a\0b\0".to_vec())]
        );
        assert_eq!(
            s.utf16be().unwrap().tokens(),
            &[Token::Literal(b"\0a\0b".to_vec())]
        );
        assert_eq!(
            s.utf16().unwrap().tokens(),
            &[Token::Literal(b"\xff\xfea\0b\0".to_vec())]
        );
        let wide_b64 = s.utf16le().unwrap().base64().unwrap();
        assert_eq!(wide_b64.tokens(), &[lit("YQBiAA==")]);
    }

    #[test]
    fn windash_expands_switches_only() {
        let variants = SigmaString::parse(" -enc ").windash().unwrap();
        let texts: Vec<_> = variants
            .into_iter()
            .map(|v| v.into_text().unwrap())
            .collect();
        assert_eq!(texts.len(), 5);
        assert!(texts.contains(&vec![TextToken::Literal(" /enc ".into())]));
        assert!(texts.contains(&vec![TextToken::Literal(" \u{2014}enc ".into())]));
        // A dash inside a word is not a switch.
        assert_eq!(SigmaString::parse("x-y").windash().unwrap().len(), 1);
        // Two switches: 25 combinations.
        assert_eq!(SigmaString::parse("-a -b").windash().unwrap().len(), 25);
    }
}
