//! `%name%` placeholders of the `expand` modifier.
//!
//! One parser serves both places that fill placeholders: the pipelines'
//! `value_placeholders`/`wildcard_placeholders` transformations and the
//! compiler, which fills what is left from the pipelines' `vars`. A name is
//! one or more letters, digits, `_` or `-` (SigmaHQ writes `%DC-MACHINE-NAME%`) between two `%`. The
//! specification's escape `\%` is a literal `%` ("`\%plain%name%` handles
//! `%plain` as plain value"); `\\` stays an escaped backslash for the Sigma
//! string parser that sees the text next, so `C:\\%dir%` is a path followed by
//! a placeholder. Any other `%` is literal text.

/// One piece of an `expand` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text in Sigma string syntax (wildcards and escapes kept), with every
    /// `\%` already turned into `%`.
    Literal(String),
    /// A placeholder's name, without the `%` signs.
    Placeholder(&'a str),
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// Splits an `expand` value into literal text and placeholders.
pub fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\\%") {
            literal.push('%');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("\\\\") {
            literal.push_str("\\\\");
            rest = after;
        } else if let Some(name) = placeholder_at(rest) {
            if !literal.is_empty() {
                out.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            out.push(Piece::Placeholder(name));
            rest = &rest[name.len() + 2..];
        } else {
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        out.push(Piece::Literal(literal));
    }
    out
}

/// The name of the placeholder `text` starts with, if it starts with one.
fn placeholder_at(text: &str) -> Option<&str> {
    let body = text.strip_prefix('%')?;
    let end = body.find(|c: char| !is_name_char(c))?;
    (end > 0 && body[end..].starts_with('%')).then(|| &body[..end])
}

/// True when the value names at least one placeholder.
pub fn has_placeholders(text: &str) -> bool {
    pieces(text)
        .iter()
        .any(|p| matches!(p, Piece::Placeholder(_)))
}

/// Escapes `text` (Sigma string syntax) for an `expand` value: each `%`
/// becomes `\%`, and a trailing odd run of backslashes gets one more, so
/// that a value ending in `\` does not escape the `%` of a placeholder that
/// follows it (in Sigma syntax a lone trailing `\` and `\\` are both one
/// literal backslash).
pub fn escape(text: &str) -> String {
    let mut out = text.replace('%', "\\%");
    let trailing = out.len() - out.trim_end_matches('\\').len();
    if trailing % 2 == 1 {
        out.push('\\');
    }
    out
}

/// Every combination of the pieces with each placeholder replaced by each of
/// its values, as `expand` text (literals re-escaped). `values` returns
/// `None` to keep a placeholder as it is.
pub fn substitute<E>(
    pieces: &[Piece<'_>],
    mut values: impl FnMut(&str) -> Result<Option<Vec<String>>, E>,
) -> Result<Vec<String>, E> {
    let mut results = vec![String::new()];
    for piece in pieces {
        let options: Vec<String> = match piece {
            Piece::Literal(text) => vec![escape(text)],
            Piece::Placeholder(name) => match values(name)? {
                Some(values) => values.iter().map(|v| escape(v)).collect(),
                None => vec![format!("%{name}%")],
            },
        };
        results = results
            .iter()
            .flat_map(|r| options.iter().map(move |o| format!("{r}{o}")))
            .collect();
    }
    Ok(results)
}

/// The text of a value without placeholders, as a plain Sigma string: the
/// `\%` escapes of `expand` syntax resolved.
pub fn unescape(text: &str) -> String {
    pieces(text)
        .into_iter()
        .map(|piece| match piece {
            Piece::Literal(text) => text,
            Piece::Placeholder(name) => format!("%{name}%"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Piece<'_> {
        Piece::Literal(s.to_owned())
    }

    #[test]
    fn splits_names_and_escapes() {
        assert_eq!(
            pieces(r"\%plain%name%"),
            vec![lit("%plain"), Piece::Placeholder("name")]
        );
        assert_eq!(
            pieces(r"CORP\\%admins%"),
            vec![lit(r"CORP\\"), Piece::Placeholder("admins")]
        );
        assert_eq!(pieces("100% sure"), vec![lit("100% sure")]);
        assert_eq!(pieces("%%"), vec![lit("%%")]);
        assert_eq!(
            pieces("srv-%site%-%role%"),
            vec![
                lit("srv-"),
                Piece::Placeholder("site"),
                lit("-"),
                Piece::Placeholder("role")
            ]
        );
        assert!(has_placeholders("a%b%"));
        assert!(!has_placeholders(r"a\%b%"));
    }

    #[test]
    fn substitution_multiplies_and_keeps_unknown_names() {
        let p = pieces("%a%-%b%");
        let out = substitute::<()>(&p, |name| {
            Ok((name == "a").then(|| vec!["1".to_owned(), "2".to_owned()]))
        })
        .unwrap();
        assert_eq!(out, vec!["1-%b%", "2-%b%"]);
        // A value holding `%` stays literal.
        let out = substitute::<()>(&pieces("%a%"), |_| Ok(Some(vec!["50%x%".into()]))).unwrap();
        assert_eq!(out, vec![r"50\%x\%"]);
        assert_eq!(unescape(&out[0]), "50%x%");
        // A value ending in a backslash does not swallow the next `%`.
        let pieces = pieces("%domain%%user%");
        let out = substitute::<()>(&pieces, |name| {
            Ok(Some(vec![
                if name == "domain" { r"CORP\" } else { "alice" }.to_owned(),
            ]))
        })
        .unwrap();
        assert_eq!(out, vec![r"CORP\\alice"]);
        assert_eq!(unescape(&out[0]), r"CORP\\alice");
        assert_eq!(escape(r"a\\"), r"a\\");
    }
}
