//! Compiled value matchers: what one value of a detection item tests against
//! one value found in the event.
//!
//! Strings are compared case-insensitively unless `cased` (or an encoding
//! whose output is case-significant) says otherwise. For that, the event value
//! is lowercased once per item into a reused buffer, and every case-insensitive
//! needle is stored lowercased, so no allocation happens per comparison.

use std::net::IpAddr;

use chrono::{Datelike, Timelike};
use ipnet::IpNet;
use memchr::memmem;
use regex::Regex;
use serde_json::Value;

use crate::pattern::TextToken;
use crate::timestamp::parse_timestamp;

/// Where in the string a plain needle must occur.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The whole value.
    Exact,
    /// At the start.
    Prefix,
    /// At the end.
    Suffix,
    /// Anywhere.
    Contains,
}

/// A compiled Sigma string.
#[derive(Debug, Clone)]
pub struct StringMatcher {
    case_sensitive: bool,
    form: StringForm,
    /// The longest literal run, lowercased: every match contains it.
    needle: Option<String>,
}

#[derive(Debug, Clone)]
enum StringForm {
    /// `*`: any string.
    Any,
    /// A literal at a position; lowercased when case-insensitive.
    Plain {
        position: Position,
        text: String,
        finder: Option<Box<memmem::Finder<'static>>>,
    },
    /// Anything with `?` or inner `*`.
    Glob(Regex),
}

/// Lowercases `text` as every case-insensitive needle is lowercased.
pub fn lowercase(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    lowercase_into(text, &mut out);
    out
}

/// Lowercases `text` into `buf` (cleared first), character by character.
pub fn lowercase_into(text: &str, buf: &mut String) {
    buf.clear();
    if text.is_ascii() {
        buf.push_str(text);
        buf.make_ascii_lowercase();
    } else {
        buf.extend(text.chars().flat_map(char::to_lowercase));
    }
}

/// True when lowercasing may change `text` (any non-ASCII text is folded,
/// since title-case and other letters change without being upper case).
pub fn needs_lowercasing(text: &str) -> bool {
    !text.is_ascii() || text.bytes().any(|b| b.is_ascii_uppercase())
}

impl StringMatcher {
    /// Compiles a token sequence.
    pub fn new(tokens: Vec<TextToken>, case_sensitive: bool) -> Result<Self, String> {
        // Collapse runs of `*`, which mean the same as one.
        let mut normalized: Vec<TextToken> = Vec::with_capacity(tokens.len());
        for token in tokens {
            if token == TextToken::AnyRun && normalized.last() == Some(&TextToken::AnyRun) {
                continue;
            }
            normalized.push(token);
        }
        let fold = |s: &str| {
            if case_sensitive {
                s.to_owned()
            } else {
                lowercase(s)
            }
        };
        let needle = normalized
            .iter()
            .filter_map(|t| match t {
                TextToken::Literal(s) if !s.is_empty() => Some(lowercase(s)),
                _ => None,
            })
            .max_by_key(String::len);
        use TextToken::{AnyRun, Literal};
        let plain = |position, text: &str| {
            let text = fold(text);
            let finder = (position == Position::Contains)
                .then(|| Box::new(memmem::Finder::new(text.as_bytes()).into_owned()));
            StringForm::Plain {
                position,
                text,
                finder,
            }
        };
        let form = match normalized.as_slice() {
            [] => plain(Position::Exact, ""),
            [AnyRun] => StringForm::Any,
            [Literal(s)] => plain(Position::Exact, s),
            [AnyRun, Literal(s)] => plain(Position::Suffix, s),
            [Literal(s), AnyRun] => plain(Position::Prefix, s),
            [AnyRun, Literal(s), AnyRun] => plain(Position::Contains, s),
            tokens => StringForm::Glob(glob_regex(tokens, case_sensitive)?),
        };
        Ok(StringMatcher {
            case_sensitive,
            form,
            needle,
        })
    }

    /// True when matching wants the lowercased value.
    pub fn wants_lowercase(&self) -> bool {
        !self.case_sensitive && matches!(self.form, StringForm::Plain { .. })
    }

    /// The longest literal every match contains, lowercased.
    pub fn needle(&self) -> Option<&str> {
        self.needle.as_deref()
    }

    /// The literal and its position, when the pattern is a case-insensitive
    /// plain `contains`: such patterns can be grouped into one automaton.
    pub fn insensitive_contains(&self) -> Option<&str> {
        match &self.form {
            StringForm::Plain {
                position: Position::Contains,
                text,
                ..
            } if !self.case_sensitive && !text.is_empty() => Some(text),
            _ => None,
        }
    }

    /// Tests the value's text; `lower` is its lowercased form when wanted.
    pub fn matches(&self, text: &str, lower: &str) -> bool {
        match &self.form {
            StringForm::Any => true,
            StringForm::Glob(regex) => regex.is_match(text),
            StringForm::Plain {
                position,
                text: needle,
                finder,
            } => {
                let hay = if self.case_sensitive { text } else { lower };
                match position {
                    Position::Exact => hay == needle,
                    Position::Prefix => hay.starts_with(needle.as_str()),
                    Position::Suffix => hay.ends_with(needle.as_str()),
                    Position::Contains => finder
                        .as_ref()
                        .is_some_and(|f| f.find(hay.as_bytes()).is_some()),
                }
            }
        }
    }
}

fn glob_regex(tokens: &[TextToken], case_sensitive: bool) -> Result<Regex, String> {
    let mut source = String::from(if case_sensitive { "(?s)^" } else { "(?si)^" });
    for token in tokens {
        match token {
            TextToken::Literal(s) => source.push_str(&regex::escape(s)),
            TextToken::AnyRun => source.push_str(".*"),
            TextToken::AnyChar => source.push('.'),
        }
    }
    source.push('$');
    Regex::new(&source).map_err(|err| format!("cannot compile wildcard pattern: {err}"))
}

/// A numeric comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Comparison {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Comparison {
    /// Applies the comparison `lhs <op> rhs`.
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            Comparison::Eq => lhs == rhs,
            Comparison::Gt => lhs > rhs,
            Comparison::Gte => lhs >= rhs,
            Comparison::Lt => lhs < rhs,
            Comparison::Lte => lhs <= rhs,
        }
    }
}

/// The part of a timestamp the time modifiers extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePart {
    /// 0..=59.
    Minute,
    /// 0..=23.
    Hour,
    /// Day of the month, 1..=31.
    Day,
    /// ISO week number, 1..=53.
    Week,
    /// 1..=12.
    Month,
    /// The year.
    Year,
}

/// One compiled value of a detection item.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    /// A Sigma string (wildcards, position, case).
    String(StringMatcher),
    /// A number: equal to a numeric value or a numeric string.
    Number(NumberMatcher),
    /// A boolean: equal to a boolean, or to the text `true`/`false`.
    Bool(bool),
    /// `null`: a null value (absence is handled by the item).
    Null,
    /// `gt`, `gte`, `lt`, `lte` against a number.
    Compare(Comparison, f64),
    /// `re`: an unanchored regular expression.
    Regex(Regex),
    /// `cidr`: an IP address within a network.
    Cidr(IpNet),
    /// A time modifier: the part of a timestamp compared with a number.
    TimePart(TimePart, Comparison, f64),
    /// `neq`: the inner matcher does not hold.
    Not(Box<ValueMatcher>),
    /// The alternatives one value expanded into, under `all`.
    AnyOf(Vec<ValueMatcher>),
}

impl ValueMatcher {
    /// The lowercased literal every match contains, if any (for the prefilter).
    pub fn needle(&self) -> Option<&str> {
        match self {
            ValueMatcher::String(s) => s.needle(),
            ValueMatcher::Number(n) => n.digits.as_deref(),
            _ => None,
        }
    }

    /// True when matching wants the lowercased text of the value.
    pub fn wants_lowercase(&self) -> bool {
        match self {
            ValueMatcher::String(s) => s.wants_lowercase(),
            ValueMatcher::Not(inner) => inner.wants_lowercase(),
            ValueMatcher::AnyOf(alternatives) => {
                alternatives.iter().any(ValueMatcher::wants_lowercase)
            }
            _ => false,
        }
    }

    /// Tests one event value; `text` is its rendering as text (`None` for
    /// null, objects) and `lower` that text lowercased when wanted.
    pub fn matches(&self, value: &Value, text: Option<&str>, lower: &str) -> bool {
        match self {
            ValueMatcher::String(s) => text.is_some_and(|t| s.matches(t, lower)),
            ValueMatcher::Number(n) => n.matches(value),
            ValueMatcher::Bool(b) => match value {
                Value::Bool(v) => v == b,
                Value::String(s) => s.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
                _ => false,
            },
            ValueMatcher::Null => value.is_null(),
            ValueMatcher::Compare(op, n) => numeric(value).is_some_and(|v| op.holds(v, *n)),
            ValueMatcher::Regex(regex) => text.is_some_and(|t| regex.is_match(t)),
            ValueMatcher::Cidr(net) => text
                .and_then(|t| t.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| net.contains(&ip)),
            ValueMatcher::TimePart(part, op, n) => parse_timestamp(value).is_some_and(|t| {
                let actual = match part {
                    TimePart::Minute => t.minute(),
                    TimePart::Hour => t.hour(),
                    TimePart::Day => t.day(),
                    TimePart::Week => t.iso_week().week(),
                    TimePart::Month => t.month(),
                    TimePart::Year => t.year() as u32,
                };
                op.holds(f64::from(actual), *n)
            }),
            ValueMatcher::Not(inner) => !value.is_null() && !inner.matches(value, text, lower),
            ValueMatcher::AnyOf(alternatives) => {
                alternatives.iter().any(|m| m.matches(value, text, lower))
            }
        }
    }
}

/// Equality with a number.
#[derive(Debug, Clone)]
pub struct NumberMatcher {
    value: f64,
    /// The decimal digits every matching value's text contains (for the
    /// prefilter): set for integers from 0 to 10^15.
    digits: Option<String>,
}

/// Integers up to this are exact in `f64` and never printed with an exponent.
const EXACT_INTEGER_LIMIT: f64 = 1e15;

impl NumberMatcher {
    /// Matches values equal to `value`.
    pub fn new(value: f64) -> NumberMatcher {
        let digits = (value >= 0.0 && value.fract() == 0.0 && value < EXACT_INTEGER_LIMIT)
            .then(|| format!("{}", value as u64));
        NumberMatcher { value, digits }
    }

    /// A JSON number equal to the value, or a string holding it in plain
    /// decimal notation (surrounding spaces, a sign, leading zeros and a
    /// fraction allowed; no exponent, so its text always contains the digits).
    pub fn matches(&self, value: &Value) -> bool {
        match value {
            Value::Number(n) => n.as_f64() == Some(self.value),
            Value::String(s) => {
                let s = s.trim();
                !s.contains(['e', 'E']) && s.parse::<f64>().ok() == Some(self.value)
            }
            _ => false,
        }
    }
}

/// The numeric reading of a value: a number, or a string that parses as one.
fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::SigmaString;
    use serde_json::json;

    fn string(pattern: &str, cased: bool) -> StringMatcher {
        StringMatcher::new(SigmaString::parse(pattern).into_text().unwrap(), cased).unwrap()
    }

    fn test(m: &StringMatcher, text: &str) -> bool {
        m.matches(text, &lowercase(text))
    }

    #[test]
    fn forms() {
        assert!(test(&string("abc", false), "ABC"));
        assert!(!test(&string("abc", false), "abcd"));
        assert!(test(&string("abc*", false), "abcd"));
        assert!(test(&string("*bcd", false), "ABCD"));
        assert!(test(&string("*bc*", false), "aBCd"));
        assert!(test(&string("a?c", false), "abc"));
        assert!(!test(&string("a?c", false), "ac"));
        assert!(test(&string("a*c*e", false), "AbCdE"));
        assert!(!test(&string("a*c*e", false), "AbCdEf"));
        assert!(test(&string("*", false), ""));
        assert!(test(&string("", false), ""));
        assert!(!test(&string("", false), "x"));
        assert!(test(&string("a**b", false), "ab"));
    }

    #[test]
    fn case_sensitivity() {
        assert!(!test(&string("abc", true), "ABC"));
        assert!(test(&string("ABC", true), "ABC"));
        assert!(!test(&string("*B?*", true), "abc"));
        assert!(test(&string("*b?*", true), "abc"));
    }

    #[test]
    fn unicode_case_folding() {
        assert!(test(&string("*ÄRGER*", false), "großer ärger"));
        assert!(test(&string("привет", false), "ПРИВЕТ"));
        assert!(test(&string("п?ивет", false), "ПРИВЕТ"));
        assert!(test(&string("straße", false), "STRAßE"));
    }

    #[test]
    fn escaped_wildcards_are_literal() {
        let m = string(r"what\?", false);
        assert!(test(&m, "what?"));
        assert!(!test(&m, "whatx"));
        let m = string(r"*\**", false);
        assert!(test(&m, "a*b"));
        assert!(!test(&m, "ab"));
    }

    #[test]
    fn numbers_and_strings() {
        let n = ValueMatcher::Number(NumberMatcher::new(4688.0));
        assert!(n.matches(&json!(4688), None, ""));
        assert!(n.matches(&json!("4688"), Some("4688"), ""));
        assert!(n.matches(&json!(4688.0), None, ""));
        assert!(!n.matches(&json!("4689"), Some("4689"), ""));
        assert!(!n.matches(&json!(null), None, ""));
        assert!(n.matches(&json!(" 04688.0 "), None, ""));
        assert!(!n.matches(&json!("4.688e3"), None, ""));
        assert_eq!(n.needle(), Some("4688"));
        assert_eq!(
            ValueMatcher::Number(NumberMatcher::new(-1.0)).needle(),
            None
        );
        assert_eq!(ValueMatcher::Number(NumberMatcher::new(0.5)).needle(), None);
    }

    #[test]
    fn needle_is_longest_literal() {
        assert_eq!(string("*ab*cdef?g", false).needle(), Some("cdef"));
        assert_eq!(string("*", false).needle(), None);
        assert_eq!(string("ABC", true).needle(), Some("abc"));
    }
}
