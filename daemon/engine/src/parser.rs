//! Reading Sigma YAML documents into the [`rule`](crate::rule) model.
//!
//! Handles multi-document files with `action: global | reset | repeat`, and
//! recognises detection, filter and correlation documents.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use yaml_serde::{Mapping, Value};

use crate::condition;
use crate::error::RuleError;
use crate::rule::{
    CompareOp, CorrelationCondition, CorrelationRule, CorrelationType, DetectionItem,
    DetectionSection, FilterRule, LogSource, Modifier, Origin, RuleMeta, SearchIdentifier,
    SigmaRule, SigmaValue,
};

/// Every rule document read from a file or directory.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Detection rules.
    pub rules: Vec<SigmaRule>,
    /// Filter (meta) rules.
    pub filters: Vec<FilterRule>,
    /// Correlation rules.
    pub correlations: Vec<CorrelationRule>,
}

impl RuleSet {
    /// Number of rule documents of every kind.
    pub fn len(&self) -> usize {
        self.rules.len() + self.filters.len() + self.correlations.len()
    }

    /// True when no rule document was read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of detection rules.
    pub fn detection_rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of correlation rules.
    pub fn correlation_rule_count(&self) -> usize {
        self.correlations.len()
    }

    /// Number of filter rules.
    pub fn filter_rule_count(&self) -> usize {
        self.filters.len()
    }

    /// Moves every document of `other` into this set.
    pub fn extend(&mut self, other: RuleSet) {
        self.rules.extend(other.rules);
        self.filters.extend(other.filters);
        self.correlations.extend(other.correlations);
    }
}

/// The outcome of loading rules: what could be read, and what could not.
#[derive(Debug, Clone, Default)]
pub struct LoadedRules {
    /// The documents that parsed.
    pub rule_set: RuleSet,
    /// One entry per file or document that could not be read or parsed.
    pub errors: Vec<RuleError>,
    /// Paths left out without failing the load: directories reached a
    /// second time through a symbolic link (a loop, or two links to one
    /// directory), files reached a second time.
    pub warnings: Vec<String>,
    /// The content hash of the files read (see [`RulesDigest`]); empty for
    /// text parsed with [`parse_rules`].
    pub digest: String,
}

/// Loads a rule file, or every `.yml`/`.yaml` file below a directory
/// (recursively, in path order). Never panics: problems are reported in
/// [`LoadedRules::errors`].
pub fn load_rules(path: &Path) -> LoadedRules {
    let mut loaded = LoadedRules::default();
    let files = match rule_files(path) {
        Ok(found) => {
            loaded.warnings = found.skipped;
            found.files
        }
        Err(err) => {
            loaded.errors.push(RuleError::new(path, None, err));
            return loaded;
        }
    };
    let mut digest = RulesDigest::default();
    for file in files {
        match fs::read_to_string(&file) {
            Ok(text) => {
                digest.add(relative_name(path, &file), &text);
                let parsed = parse_rules(&text, &file);
                loaded.rule_set.extend(parsed.rule_set);
                loaded.errors.extend(parsed.errors);
            }
            Err(err) => loaded.errors.push(RuleError::new(
                &file,
                None,
                format!("cannot read file: {err}"),
            )),
        }
    }
    loaded.digest = digest.finish();
    loaded
}

/// The content hash of the rule files under `path`, as [`load_rules`]
/// computes it, without parsing them.
pub fn rules_digest(path: &Path) -> Result<String, String> {
    let mut digest = RulesDigest::default();
    for file in rule_files(path)?.files {
        let text = fs::read_to_string(&file)
            .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
        digest.add(relative_name(path, &file), &text);
    }
    Ok(digest.finish())
}

/// The name a file is hashed under: its path below the rules root with `/`
/// separators, or its file name when the root is the file itself.
fn relative_name(root: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new(file.file_name().unwrap_or_default()));
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The content hash of a rule set: SHA-256 over each file, in name order, as
/// `name NUL length NUL content`. Anyone holding the same files by the same
/// names (the operator holds them as ConfigMap keys) computes the same hash.
#[derive(Debug, Default)]
pub struct RulesDigest {
    files: Vec<(String, Vec<u8>)>,
}

impl RulesDigest {
    /// Adds one file.
    pub fn add(&mut self, name: impl Into<String>, content: &str) {
        self.files.push((name.into(), content.as_bytes().to_vec()));
    }

    /// The lowercase hex SHA-256.
    pub fn finish(mut self) -> String {
        use sha2::{Digest, Sha256};
        self.files.sort();
        let mut hasher = Sha256::new();
        for (name, content) in &self.files {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(content.len().to_string().as_bytes());
            hasher.update([0]);
            hasher.update(content);
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The rule files below a path, and what was left out.
struct RuleFiles {
    files: Vec<PathBuf>,
    skipped: Vec<String>,
}

/// Walks the rules path, following symbolic links but reading each real
/// directory and file once (by canonical path): a link back to a parent
/// would otherwise load the same rules again on every lap, and multiply
/// every detection. The walk is breadth first in name order, so the path
/// kept for a file reached twice (and so the rules hash) does not depend on
/// the order the file system lists entries in.
fn rule_files(path: &Path) -> Result<RuleFiles, String> {
    let meta = fs::metadata(path).map_err(|err| format!("cannot read rules path: {err}"))?;
    if meta.is_file() {
        return Ok(RuleFiles {
            files: vec![path.to_path_buf()],
            skipped: Vec::new(),
        });
    }
    let canonical = |p: &Path| {
        fs::canonicalize(p).map_err(|err| format!("cannot resolve {}: {err}", p.display()))
    };
    let mut seen_dirs = std::collections::HashSet::from([canonical(path)?]);
    let mut seen_files = std::collections::HashSet::new();
    let mut found = RuleFiles {
        files: Vec::new(),
        skipped: Vec::new(),
    };
    let mut pending = std::collections::VecDeque::from([path.to_path_buf()]);
    while let Some(dir) = pending.pop_front() {
        let mut entries = fs::read_dir(&dir)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            // Hidden entries are skipped: a Kubernetes ConfigMap volume holds
            // every file twice, once under `..data/` and once as a link to it.
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let entry_path = entry.path();
            if entry_path.is_dir() {
                let real = canonical(&entry_path)?;
                if seen_dirs.insert(real.clone()) {
                    pending.push_back(entry_path);
                } else {
                    found.skipped.push(format!(
                        "{}: skipped, it leads to {} which is already read (a symbolic link loop or a second link)",
                        entry_path.display(),
                        real.display()
                    ));
                }
            } else if is_rule_file(&entry_path) {
                let real = canonical(&entry_path)?;
                if seen_files.insert(real.clone()) {
                    found.files.push(entry_path);
                } else {
                    found.skipped.push(format!(
                        "{}: skipped, it is {} which is already read",
                        entry_path.display(),
                        real.display()
                    ));
                }
            }
        }
    }
    found.files.sort();
    found.skipped.sort();
    Ok(found)
}

fn is_rule_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|ext| ext.to_str()),
        Some("yml" | "yaml")
    )
}

/// Parses the YAML text of one file, which may hold several documents.
pub fn parse_rules(text: &str, file: &Path) -> LoadedRules {
    let mut loaded = LoadedRules::default();
    let mut global: Option<Mapping> = None;
    let mut previous: Option<Mapping> = None;
    for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            document: index,
        };
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(err) => {
                loaded.errors.push(RuleError::new(
                    file,
                    None,
                    format!("invalid YAML (document {}): {err}", index + 1),
                ));
                // A syntax error leaves the stream in an unknown state.
                break;
            }
        };
        let mut map = match value {
            Value::Null => continue,
            Value::Mapping(map) => map,
            _ => {
                loaded.errors.push(RuleError::new(
                    file,
                    None,
                    format!("document {} is not a YAML mapping", index + 1),
                ));
                continue;
            }
        };
        match map.remove("action") {
            None => {}
            Some(Value::String(action)) => match action.as_str() {
                "global" => {
                    global = Some(map);
                    continue;
                }
                "reset" => {
                    global = None;
                    previous = None;
                    continue;
                }
                "repeat" => match &previous {
                    Some(prev) => map = merged(prev.clone(), map),
                    None => {
                        loaded.errors.push(RuleError::new(
                            file,
                            None,
                            format!(
                                "document {}: 'action: repeat' without a previous document",
                                index + 1
                            ),
                        ));
                        continue;
                    }
                },
                other => {
                    loaded.errors.push(RuleError::new(
                        file,
                        None,
                        format!("document {}: unknown action '{other}'", index + 1),
                    ));
                    continue;
                }
            },
            Some(_) => {
                loaded.errors.push(RuleError::new(
                    file,
                    None,
                    format!("document {}: 'action' must be a string", index + 1),
                ));
                continue;
            }
        }
        let document_map = match &global {
            Some(global) => merged(global.clone(), map.clone()),
            None => map.clone(),
        };
        previous = Some(map);
        if let Err(err) = parse_document(document_map, origin, &mut loaded.rule_set) {
            loaded.errors.push(err);
        }
    }
    loaded
}

/// Deep-merges `overlay` into `base`: maps merge key by key, anything else is replaced.
fn merged(mut base: Mapping, overlay: Mapping) -> Mapping {
    for (key, value) in overlay {
        let combined = match (base.remove(&key), value) {
            (Some(Value::Mapping(old)), Value::Mapping(new)) => Value::Mapping(merged(old, new)),
            (_, new) => new,
        };
        base.insert(key, combined);
    }
    base
}

fn parse_document(map: Mapping, origin: Origin, set: &mut RuleSet) -> Result<(), RuleError> {
    let file = origin.file.clone();
    let label = map
        .get("title")
        .and_then(Value::as_str)
        .or_else(|| map.get("id").and_then(Value::as_str))
        .map(str::to_owned);
    let fail = |reason: String| RuleError::new(&file, label.clone(), reason);
    let meta = parse_meta(&map, origin).map_err(&fail)?;
    if let Some(correlation) = map.get("correlation") {
        let rule = parse_correlation(meta, correlation).map_err(&fail)?;
        set.correlations.push(rule);
    } else if let Some(filter) = map.get("filter") {
        let rule = parse_filter(meta, filter).map_err(&fail)?;
        set.filters.push(rule);
    } else {
        let detection = map
            .get("detection")
            .ok_or_else(|| fail("missing 'detection' section".into()))?;
        let detection = parse_detection_section(detection).map_err(&fail)?;
        set.rules.push(SigmaRule { meta, detection });
    }
    Ok(())
}

fn parse_meta(map: &Mapping, origin: Origin) -> Result<RuleMeta, String> {
    let title = optional_string(map, "title")?.ok_or("missing 'title'")?;
    let logsource = match map.get("logsource") {
        None | Some(Value::Null) => LogSource::default(),
        Some(Value::Mapping(ls)) => LogSource {
            category: optional_string(ls, "category")?,
            product: optional_string(ls, "product")?,
            service: optional_string(ls, "service")?,
            custom: custom_logsource_keys(ls),
        },
        Some(_) => return Err("'logsource' must be a mapping".into()),
    };
    Ok(RuleMeta {
        title,
        id: optional_string(map, "id")?,
        name: optional_string(map, "name")?,
        status: optional_string(map, "status")?,
        description: optional_string(map, "description")?,
        author: optional_string(map, "author")?,
        level: optional_string(map, "level")?,
        tags: string_list(map, "tags")?,
        references: string_list(map, "references")?,
        falsepositives: string_list(map, "falsepositives")?,
        date: optional_string(map, "date")?,
        modified: optional_string(map, "modified")?,
        logsource,
        origin,
    })
}

/// The keys of a `logsource` section beyond the three standard ones and the
/// free-text `definition`, with scalar values.
fn custom_logsource_keys(section: &Mapping) -> Vec<(String, String)> {
    section
        .iter()
        .filter_map(|(key, value)| Some((key.as_str()?, scalar_text(value)?)))
        .filter(|(key, _)| !matches!(*key, "category" | "product" | "service" | "definition"))
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

/// A scalar rendered as text; `None` for null, mappings and sequences.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn optional_string(map: &Mapping, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => scalar_text(value)
            .map(Some)
            .ok_or_else(|| format!("'{key}' must be a scalar")),
    }
}

fn string_list(map: &Mapping, key: &str) -> Result<Vec<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| scalar_text(item).ok_or_else(|| format!("'{key}' must list scalars")))
            .collect(),
        Some(value) => scalar_text(value)
            .map(|s| vec![s])
            .ok_or_else(|| format!("'{key}' must be a list")),
    }
}

fn parse_detection_section(value: &Value) -> Result<DetectionSection, String> {
    let map = value.as_mapping().ok_or("'detection' must be a mapping")?;
    let mut section = DetectionSection::default();
    for (key, value) in map {
        let key = key
            .as_str()
            .ok_or("detection keys must be strings")?
            .to_owned();
        match key.as_str() {
            "condition" => {
                section.conditions = match value {
                    Value::String(s) => vec![s.clone()],
                    Value::Sequence(items) => items
                        .iter()
                        .map(|c| {
                            c.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| "'condition' list must hold strings".to_owned())
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err("'condition' must be a string or a list".into()),
                };
            }
            // Deprecated in Sigma 2; correlation rules replace it.
            "timeframe" => {}
            _ => {
                let selections = parse_search_identifier(value)
                    .map_err(|err| format!("detection '{key}': {err}"))?;
                section.identifiers.push(SearchIdentifier {
                    name: key,
                    selections,
                });
            }
        }
    }
    if section.conditions.is_empty() {
        return Err("missing 'condition' in detection".into());
    }
    for text in &section.conditions {
        condition::parse(text).map_err(|err| format!("condition '{text}': {err}"))?;
    }
    Ok(section)
}

fn parse_search_identifier(value: &Value) -> Result<Vec<Vec<DetectionItem>>, String> {
    match value {
        Value::Mapping(map) => Ok(vec![parse_selection(map)?]),
        Value::Sequence(items)
            if items.iter().all(|item| item.is_mapping()) && !items.is_empty() =>
        {
            items
                .iter()
                .map(|item| parse_selection(item.as_mapping().expect("checked above")))
                .collect()
        }
        Value::Sequence(items) => {
            let values = items
                .iter()
                .map(parse_value)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![vec![DetectionItem {
                field: None,
                modifiers: Vec::new(),
                values,
            }]])
        }
        scalar => Ok(vec![vec![DetectionItem {
            field: None,
            modifiers: Vec::new(),
            values: vec![parse_value(scalar)?],
        }]]),
    }
}

fn parse_selection(map: &Mapping) -> Result<Vec<DetectionItem>, String> {
    map.iter()
        .map(|(key, value)| {
            let key = key.as_str().ok_or("selection keys must be strings")?;
            let mut parts = key.split('|');
            let field = parts.next().unwrap_or_default();
            let modifiers = parts
                .map(str::parse::<Modifier>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| format!("field '{key}': {err}"))?;
            let values = match value {
                Value::Sequence(items) => items
                    .iter()
                    .map(parse_value)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| format!("field '{key}': {err}"))?,
                scalar => vec![parse_value(scalar).map_err(|err| format!("field '{key}': {err}"))?],
            };
            Ok(DetectionItem {
                field: (!field.is_empty()).then(|| field.to_owned()),
                modifiers,
                values,
            })
        })
        .collect()
}

fn parse_value(value: &Value) -> Result<SigmaValue, String> {
    Ok(match value {
        Value::Null => SigmaValue::Null,
        Value::Bool(b) => SigmaValue::Bool(*b),
        Value::String(s) => SigmaValue::String(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SigmaValue::Integer(i),
            None => SigmaValue::Float(n.as_f64().ok_or("number out of range")?),
        },
        Value::Tagged(tagged) => parse_value(&tagged.value)?,
        Value::Sequence(_) => return Err("nested lists are not allowed as values".into()),
        Value::Mapping(_) => return Err("a mapping is not allowed as a value".into()),
    })
}

fn parse_filter(meta: RuleMeta, value: &Value) -> Result<FilterRule, String> {
    let map = value.as_mapping().ok_or("'filter' must be a mapping")?;
    let rules = string_list(map, "rules")?;
    // The filter's own detection section: every key but `rules`.
    let mut detection = map.clone();
    detection.remove("rules");
    let detection = parse_detection_section(&Value::Mapping(detection))?;
    Ok(FilterRule {
        meta,
        rules,
        detection,
    })
}

fn parse_correlation(meta: RuleMeta, value: &Value) -> Result<CorrelationRule, String> {
    let map = value
        .as_mapping()
        .ok_or("'correlation' must be a mapping")?;
    let type_name = optional_string(map, "type")?.ok_or("correlation: missing 'type'")?;
    let correlation_type: CorrelationType = type_name.parse()?;
    let rules = string_list(map, "rules")?;
    if rules.is_empty() {
        return Err("correlation: 'rules' must name at least one rule".into());
    }
    let group_by = string_list(map, "group-by")?;
    let timespan = optional_string(map, "timespan")?
        .or(optional_string(map, "timeframe")?)
        .ok_or("correlation: missing 'timespan'")?;
    let timespan_secs = parse_timespan(&timespan)?;
    let condition = match map.get("condition") {
        None | Some(Value::Null) => CorrelationCondition::default(),
        Some(Value::Mapping(cond)) => parse_correlation_condition(cond)?,
        Some(_) => return Err("correlation: 'condition' must be a mapping".into()),
    };
    let needs_condition = !matches!(
        correlation_type,
        CorrelationType::Temporal | CorrelationType::TemporalOrdered
    );
    if needs_condition && condition.bounds.is_empty() {
        return Err(format!(
            "correlation: type '{type_name}' needs a 'condition' with a comparison"
        ));
    }
    let needs_field = !matches!(
        correlation_type,
        CorrelationType::EventCount | CorrelationType::Temporal | CorrelationType::TemporalOrdered
    );
    if needs_field && condition.field.is_none() {
        return Err(format!(
            "correlation: type '{type_name}' needs 'condition.field'"
        ));
    }
    let mut aliases = Vec::new();
    if let Some(alias_map) = map.get("aliases") {
        let alias_map = alias_map
            .as_mapping()
            .ok_or("correlation: 'aliases' must be a mapping")?;
        for (alias, mapping) in alias_map {
            let alias = alias
                .as_str()
                .ok_or("correlation: alias names must be strings")?;
            let mapping = mapping
                .as_mapping()
                .ok_or_else(|| format!("correlation: alias '{alias}' must map rules to fields"))?;
            let pairs = mapping
                .iter()
                .map(
                    |(rule, field)| match (scalar_text(rule), scalar_text(field)) {
                        (Some(rule), Some(field)) => Ok((rule, field)),
                        _ => Err(format!(
                            "correlation: alias '{alias}' must map rules to fields"
                        )),
                    },
                )
                .collect::<Result<Vec<_>, _>>()?;
            aliases.push((alias.to_owned(), pairs));
        }
    }
    let generate = match map.get("generate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("correlation: 'generate' must be a boolean".into()),
    };
    Ok(CorrelationRule {
        meta,
        correlation_type,
        rules,
        group_by,
        timespan_secs,
        condition,
        aliases,
        generate,
    })
}

fn parse_correlation_condition(map: &Mapping) -> Result<CorrelationCondition, String> {
    let mut condition = CorrelationCondition::default();
    for (key, value) in map {
        let key = key
            .as_str()
            .ok_or("correlation condition keys must be strings")?;
        let op = match key {
            "field" => {
                condition.field = Some(
                    scalar_text(value).ok_or("correlation condition 'field' must be a string")?,
                );
                continue;
            }
            "percentile" => {
                let p = value
                    .as_f64()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or("correlation 'percentile' must be a number from 0 to 100")?;
                condition.percentile = Some(p);
                continue;
            }
            "gt" => CompareOp::Gt,
            "gte" => CompareOp::Gte,
            "lt" => CompareOp::Lt,
            "lte" => CompareOp::Lte,
            "eq" => CompareOp::Eq,
            "neq" => CompareOp::Neq,
            other => return Err(format!("unknown correlation condition operator '{other}'")),
        };
        let bound = value
            .as_f64()
            .ok_or_else(|| format!("correlation condition '{key}' must be a number"))?;
        condition.bounds.push((op, bound));
    }
    Ok(condition)
}

/// Parses a Sigma timespan such as `30s`, `5m`, `1h`, `2d`, `1w` into seconds.
pub fn parse_timespan(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("timespan '{text}' has no unit (s, m, h, d, w)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("timespan '{text}' must start with a number"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(format!("timespan '{text}' has an unknown unit '{unit}'")),
    };
    number
        .checked_mul(factor)
        .filter(|secs| *secs > 0)
        .ok_or_else(|| format!("timespan '{text}' is out of range"))
}
