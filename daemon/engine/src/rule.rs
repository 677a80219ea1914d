//! The Sigma rule model: what a rule document says, before compilation.
//!
//! The [`parser`](crate::parser) produces these types from YAML; the
//! [`compile`](crate::compile) module turns them into matchers.

use std::path::PathBuf;
use std::str::FromStr;

/// Where a rule document came from, for error messages and output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file the document was read from.
    pub file: PathBuf,
    /// Zero-based position of the document within a multi-document file.
    pub document: usize,
}

/// The `logsource` section of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSource {
    /// `logsource.category`, e.g. `process_creation`.
    pub category: Option<String>,
    /// `logsource.product`, e.g. `windows`.
    pub product: Option<String>,
    /// `logsource.service`, e.g. `security`.
    pub service: Option<String>,
    /// Other keys of the section (not `definition`), e.g. a site-specific
    /// `tenant: emea`, as `(key, value)` in the order written.
    pub custom: Vec<(String, String)>,
}

/// Metadata shared by every kind of rule document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleMeta {
    /// `title`: required by the specification.
    pub title: String,
    /// `id`: a UUID in SigmaHQ rules.
    pub id: Option<String>,
    /// `name`: an alternative unique reference used by correlations and filters.
    pub name: Option<String>,
    /// `status`, e.g. `test` or `stable`.
    pub status: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `author`.
    pub author: Option<String>,
    /// `level`, e.g. `high`.
    pub level: Option<String>,
    /// `tags`, e.g. `attack.t1059`.
    pub tags: Vec<String>,
    /// `references`.
    pub references: Vec<String>,
    /// `falsepositives`.
    pub falsepositives: Vec<String>,
    /// `date`.
    pub date: Option<String>,
    /// `modified`.
    pub modified: Option<String>,
    /// `logsource` (absent on correlation rules).
    pub logsource: LogSource,
    /// Where the document came from.
    pub origin: Origin,
}

impl RuleMeta {
    /// The label used in messages: the title, else the id, else the name.
    pub fn label(&self) -> Option<String> {
        if !self.title.is_empty() {
            Some(self.title.clone())
        } else {
            self.id.clone().or_else(|| self.name.clone())
        }
    }

    /// True when `reference` names this rule by id or name.
    pub fn is_referenced_by(&self, reference: &str) -> bool {
        self.id.as_deref() == Some(reference) || self.name.as_deref() == Some(reference)
    }
}

/// A scalar value in a detection, before modifiers are applied.
#[derive(Debug, Clone, PartialEq)]
pub enum SigmaValue {
    /// A string, possibly with `*`/`?` wildcards and `\` escapes.
    String(String),
    /// An integer.
    Integer(i64),
    /// A floating-point number.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`: the field is absent or null.
    Null,
}

/// A value modifier (`field|modifier: value`), as named by the Sigma specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the modifier of the same name
pub enum Modifier {
    Contains,
    StartsWith,
    EndsWith,
    All,
    Base64,
    Base64Offset,
    /// `wide` or its alias `utf16le`.
    Wide,
    Utf16Be,
    Utf16,
    WinDash,
    Re,
    /// `re` flag `i`: case-insensitive.
    ReInsensitive,
    /// `re` flag `m`: multi-line.
    ReMultiline,
    /// `re` flag `s`: dot matches newline.
    ReDotAll,
    Cidr,
    Exists,
    Expand,
    FieldRef,
    Gt,
    Gte,
    Lt,
    Lte,
    Neq,
    Cased,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl FromStr for Modifier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use Modifier::*;
        Ok(match s {
            "contains" => Contains,
            "startswith" => StartsWith,
            "endswith" => EndsWith,
            "all" => All,
            "base64" => Base64,
            "base64offset" => Base64Offset,
            "wide" | "utf16le" => Wide,
            "utf16be" => Utf16Be,
            "utf16" => Utf16,
            "windash" => WinDash,
            "re" => Re,
            "i" => ReInsensitive,
            "m" => ReMultiline,
            "s" => ReDotAll,
            "cidr" => Cidr,
            "exists" => Exists,
            "expand" => Expand,
            "fieldref" => FieldRef,
            "gt" => Gt,
            "gte" => Gte,
            "lt" => Lt,
            "lte" => Lte,
            "neq" => Neq,
            "cased" => Cased,
            "minute" => Minute,
            "hour" => Hour,
            "day" => Day,
            "week" => Week,
            "month" => Month,
            "year" => Year,
            other => return Err(format!("unknown modifier '{other}'")),
        })
    }
}

/// One `field|modifiers: values` entry of a selection.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionItem {
    /// The field name; `None` for keyword (field-less) searches.
    pub field: Option<String>,
    /// Modifiers in the order written.
    pub modifiers: Vec<Modifier>,
    /// The values; several mean OR, or AND with the `all` modifier.
    pub values: Vec<SigmaValue>,
}

/// A named search identifier of the `detection` section.
///
/// A map is one selection (its items are ANDed); a list of maps is an OR of
/// selections; a list of plain values is a keyword search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchIdentifier {
    /// The identifier's name, as referenced by the condition.
    pub name: String,
    /// OR of selections; each selection is an AND of items.
    pub selections: Vec<Vec<DetectionItem>>,
}

/// The `detection` section of a detection or filter rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectionSection {
    /// Search identifiers in document order.
    pub identifiers: Vec<SearchIdentifier>,
    /// The condition(s); several are ORed.
    pub conditions: Vec<String>,
}

/// A detection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaRule {
    /// Title, id, level, tags and the rest.
    pub meta: RuleMeta,
    /// What to match.
    pub detection: DetectionSection,
}

/// A filter (meta) rule: its condition is applied as `AND NOT` to the rules it names.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterRule {
    /// Title, id and the rest.
    pub meta: RuleMeta,
    /// Ids or names of the rules to filter. Empty means every rule whose
    /// log source matches the filter's.
    pub rules: Vec<String>,
    /// What to exclude.
    pub detection: DetectionSection,
}

/// The kind of aggregation a correlation rule performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the correlation type of the same name
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
    ValueSum,
    ValueAvg,
    ValuePercentile,
    ValueMedian,
}

impl FromStr for CorrelationType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use CorrelationType::*;
        Ok(match s {
            "event_count" => EventCount,
            "value_count" => ValueCount,
            "temporal" => Temporal,
            "temporal_ordered" => TemporalOrdered,
            "value_sum" => ValueSum,
            "value_avg" => ValueAvg,
            "value_percentile" => ValuePercentile,
            "value_median" => ValueMedian,
            other => return Err(format!("unknown correlation type '{other}'")),
        })
    }
}

/// A comparison operator of a correlation condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CompareOp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

/// The `condition` of a correlation rule: every bound must hold (a range is two bounds).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CorrelationCondition {
    /// The field aggregated by value_* correlations.
    pub field: Option<String>,
    /// The bounds, all of which must hold.
    pub bounds: Vec<(CompareOp, f64)>,
    /// The percentile for `value_percentile` (0..=100).
    pub percentile: Option<f64>,
}

/// A correlation rule. Parsed and validated here; evaluated by the correlation engine.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationRule {
    /// Title, id, level, tags and the rest.
    pub meta: RuleMeta,
    /// The aggregation.
    pub correlation_type: CorrelationType,
    /// Ids or names of the rules (or correlations) it correlates.
    pub rules: Vec<String>,
    /// Fields the events are grouped by.
    pub group_by: Vec<String>,
    /// The window length in seconds.
    pub timespan_secs: u64,
    /// When the correlation fires (absent for temporal types means all rules).
    pub condition: CorrelationCondition,
    /// `aliases`: alias name to (rule reference to field name).
    pub aliases: Vec<(String, Vec<(String, String)>)>,
    /// `generate`: also emit the referenced rules' own detections.
    pub generate: bool,
}
