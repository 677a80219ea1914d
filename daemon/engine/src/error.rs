//! Errors reported while loading and compiling rules.

use std::fmt;
use std::path::PathBuf;

/// A rule that could not be read, parsed or compiled.
///
/// The message always names the file and, when it is known, the rule (its
/// title, else its id), so a user can find the offending document at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file the rule was read from.
    pub file: PathBuf,
    /// The rule's title (or id) when the document got far enough to have one.
    pub rule: Option<String>,
    /// Why the rule was rejected.
    pub reason: String,
}

impl RuleError {
    /// Builds an error for `file`, optionally naming `rule`.
    pub fn new(file: impl Into<PathBuf>, rule: Option<String>, reason: impl Into<String>) -> Self {
        RuleError {
            file: file.into(),
            rule,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(rule) = &self.rule {
            write!(f, ": rule '{rule}'")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for RuleError {}
