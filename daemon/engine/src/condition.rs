//! The condition language of a detection: `and`, `or`, `not`, parentheses and
//! the quantifiers `1 of`, `any of`, `all of`, `N of` over identifiers or `them`.
//!
//! Precedence, loosest first: `or`, `and`, `not`. Keywords are case-insensitive.

use std::fmt;

/// A parsed condition expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A search identifier by name.
    Identifier(String),
    /// Every operand holds.
    And(Vec<Condition>),
    /// At least one operand holds.
    Or(Vec<Condition>),
    /// The operand does not hold.
    Not(Box<Condition>),
    /// A quantifier over the identifiers a pattern names.
    Of {
        /// How many must hold.
        quantifier: Quantifier,
        /// Which identifiers.
        target: OfTarget,
    },
}

/// How many identifiers of an `of` expression must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// `all of`.
    All,
    /// `1 of`, `any of`, or `N of` with N the count.
    AtLeast(usize),
}

/// The identifiers an `of` expression ranges over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfTarget {
    /// `them`: every identifier except those starting with `_`.
    Them,
    /// A name, possibly with `*` wildcards.
    Pattern(String),
}

/// Why a condition could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError(String);

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConditionError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    Word(&'a str),
}

fn tokenize(text: &str) -> Result<Vec<Token<'_>>, ConditionError> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(tokens);
        };
        match c {
            '(' => {
                tokens.push(Token::Open);
                rest = &rest[1..];
            }
            ')' => {
                tokens.push(Token::Close);
                rest = &rest[1..];
            }
            '|' => {
                return Err(ConditionError(
                    "aggregation expressions ('| count() ...') are not supported; \
                     use a correlation rule"
                        .into(),
                ));
            }
            _ => {
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '|')
                    .unwrap_or(rest.len());
                let word = &rest[..end];
                if !word
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.'))
                {
                    return Err(ConditionError(format!("unexpected characters in '{word}'")));
                }
                tokens.push(Token::Word(word));
                rest = &rest[end..];
            }
        }
    }
}

fn is_keyword(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

fn is_reserved(word: &str) -> bool {
    ["and", "or", "not", "of", "them", "all", "any"]
        .iter()
        .any(|kw| is_keyword(word, kw))
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.pos)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if is_keyword(w, keyword))
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut operands = vec![self.and()?];
        while self.peek_keyword("or") {
            self.pos += 1;
            operands.push(self.and()?);
        }
        Ok(flatten(operands, Condition::Or))
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut operands = vec![self.not()?];
        while self.peek_keyword("and") {
            self.pos += 1;
            operands.push(self.not()?);
        }
        Ok(flatten(operands, Condition::And))
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.peek_keyword("not") {
            self.pos += 1;
            return Ok(Condition::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ConditionError> {
        match self.next() {
            None => Err(ConditionError("unexpected end of condition".into())),
            Some(Token::Close) => Err(ConditionError("unexpected ')'".into())),
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err(ConditionError("missing ')'".into())),
                }
            }
            Some(Token::Word(word)) => {
                if let Some(quantifier) = quantifier(word)? {
                    if !self.peek_keyword("of") {
                        return Err(ConditionError(format!("expected 'of' after '{word}'")));
                    }
                    self.pos += 1;
                    let target = match self.next() {
                        Some(Token::Word(w)) if is_keyword(w, "them") => OfTarget::Them,
                        Some(Token::Word(w)) if !is_reserved(w) => OfTarget::Pattern(w.to_owned()),
                        _ => {
                            return Err(ConditionError(format!(
                                "expected an identifier pattern or 'them' after '{word} of'"
                            )));
                        }
                    };
                    return Ok(Condition::Of { quantifier, target });
                }
                if is_reserved(word) {
                    return Err(ConditionError(format!("unexpected keyword '{word}'")));
                }
                if word.contains('*') {
                    return Err(ConditionError(format!(
                        "wildcard identifier '{word}' is only allowed after 'of'"
                    )));
                }
                Ok(Condition::Identifier(word.to_owned()))
            }
        }
    }
}

fn quantifier(word: &str) -> Result<Option<Quantifier>, ConditionError> {
    if is_keyword(word, "all") {
        return Ok(Some(Quantifier::All));
    }
    if is_keyword(word, "any") {
        return Ok(Some(Quantifier::AtLeast(1)));
    }
    if word.chars().all(|c| c.is_ascii_digit()) {
        let n: usize = word
            .parse()
            .map_err(|_| ConditionError(format!("count '{word}' is out of range")))?;
        if n == 0 {
            return Err(ConditionError("'0 of' is never useful".into()));
        }
        return Ok(Some(Quantifier::AtLeast(n)));
    }
    Ok(None)
}

fn flatten(mut operands: Vec<Condition>, build: fn(Vec<Condition>) -> Condition) -> Condition {
    if operands.len() == 1 {
        operands.pop().expect("one operand")
    } else {
        build(operands)
    }
}

/// Parses a condition expression.
pub fn parse(text: &str) -> Result<Condition, ConditionError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(ConditionError("empty condition".into()));
    }
    let mut parser = Parser { tokens, pos: 0 };
    let condition = parser.or()?;
    match parser.peek() {
        None => Ok(condition),
        Some(Token::Close) => Err(ConditionError("unexpected ')'".into())),
        Some(Token::Open) => Err(ConditionError("unexpected '('".into())),
        Some(Token::Word(w)) => Err(ConditionError(format!(
            "unexpected '{w}' (missing 'and'/'or'?)"
        ))),
    }
}

/// True when `name` matches an `of` pattern with `*` wildcards.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Condition {
        Condition::Identifier(name.into())
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            parse("a or b and c").unwrap(),
            Condition::Or(vec![id("a"), Condition::And(vec![id("b"), id("c")])])
        );
    }

    #[test]
    fn not_binds_tighter_than_and() {
        assert_eq!(
            parse("a and not b or c").unwrap(),
            Condition::Or(vec![
                Condition::And(vec![id("a"), Condition::Not(Box::new(id("b")))]),
                id("c")
            ])
        );
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(
            parse("(a or b) and not (c or d)").unwrap(),
            Condition::And(vec![
                Condition::Or(vec![id("a"), id("b")]),
                Condition::Not(Box::new(Condition::Or(vec![id("c"), id("d")])))
            ])
        );
    }

    #[test]
    fn double_negation_and_case_insensitive_keywords() {
        assert_eq!(
            parse("NOT not a AND b").unwrap(),
            Condition::And(vec![
                Condition::Not(Box::new(Condition::Not(Box::new(id("a"))))),
                id("b")
            ])
        );
    }

    #[test]
    fn quantifiers() {
        let of = |quantifier, target| Condition::Of { quantifier, target };
        assert_eq!(
            parse("1 of selection_*").unwrap(),
            of(
                Quantifier::AtLeast(1),
                OfTarget::Pattern("selection_*".into())
            )
        );
        assert_eq!(
            parse("any of them").unwrap(),
            of(Quantifier::AtLeast(1), OfTarget::Them)
        );
        assert_eq!(
            parse("all of them").unwrap(),
            of(Quantifier::All, OfTarget::Them)
        );
        assert_eq!(
            parse("2 of sel* and not 1 of filter_*").unwrap(),
            Condition::And(vec![
                of(Quantifier::AtLeast(2), OfTarget::Pattern("sel*".into())),
                Condition::Not(Box::new(of(
                    Quantifier::AtLeast(1),
                    OfTarget::Pattern("filter_*".into())
                )))
            ])
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "a and",
            "(a or b",
            "a or b)",
            "a b",
            "1 of",
            "all them",
            "0 of them",
            "sel* and a",
            "selection | count() > 5",
            "a and or b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn identifiers_may_hold_dots_and_dashes() {
        assert_eq!(parse("sel-1.a").unwrap(), id("sel-1.a"));
    }

    #[test]
    fn wildcard_patterns() {
        assert!(pattern_matches("selection_*", "selection_img"));
        assert!(pattern_matches("selection_*", "selection_"));
        assert!(!pattern_matches("selection_*", "selection"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("sel*img*", "sel_x_img_2"));
        assert!(pattern_matches("*_cli", "sel_cli"));
        assert!(!pattern_matches("*_cli", "sel_cli2"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exact2"));
        assert!(!pattern_matches("a*a", "a"));
    }
}
