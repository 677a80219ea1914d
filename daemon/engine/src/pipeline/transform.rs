//! Transformations, and the working copy of a rule they operate on.
//!
//! A rule is copied into a [`WorkRule`] that carries, beside the rule model,
//! what pipeline processing tracks: the ids of the processing items applied
//! to the rule and to each detection item, which items produced which field
//! names, and the pipeline state. The public rule model stays unchanged.

use std::collections::{HashMap, HashSet};

use regex::Regex;

use crate::condition::{self, Condition, OfTarget, Quantifier};
use crate::placeholder;
use crate::rule::{
    CorrelationRule, DetectionItem, DetectionSection, FilterRule, LogSource, Modifier, RuleMeta,
    SearchIdentifier, SigmaRule, SigmaValue,
};

use super::ProcessingItem;
use super::conditions::{FieldTarget, State, StateValue};

/// A selection may grow to at most this many alternatives when one-to-many
/// mappings multiply (each such item turns one selection into several).
const MAX_SELECTIONS: usize = 4096;

/// What every processing item can see beside the rule.
pub(crate) struct ApplyContext<'a> {
    /// The merged `vars` of the pipeline set (for `value_placeholders`).
    pub(crate) vars: &'a HashMap<String, Vec<String>>,
}

/// The kind of rule document being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleKind {
    Detection,
    Filter,
    Correlation,
}

/// A detection item with the ids of the processing items that changed it.
#[derive(Debug, Clone)]
pub(crate) struct WorkItem {
    pub(crate) item: DetectionItem,
    pub(crate) applied: HashSet<String>,
}

impl WorkItem {
    fn new(item: DetectionItem) -> Self {
        WorkItem {
            item,
            applied: HashSet::new(),
        }
    }

    fn mark(&mut self, id: Option<&str>) {
        if let Some(id) = id {
            self.applied.insert(id.to_owned());
        }
    }

    /// The field names this item's `fieldref` values refer to.
    pub(crate) fn fieldref_names(&self) -> impl Iterator<Item = &str> {
        let refs = self.item.modifiers.contains(&Modifier::FieldRef);
        self.item.values.iter().filter_map(move |v| match v {
            SigmaValue::String(s) if refs => Some(s.as_str()),
            _ => None,
        })
    }
}

/// A search identifier of the working copy.
#[derive(Debug, Clone)]
pub(crate) struct WorkIdentifier {
    pub(crate) name: String,
    /// OR of selections, each an AND of items.
    pub(crate) selections: Vec<Vec<WorkItem>>,
}

/// A rule document being processed, with its tracking.
#[derive(Debug, Clone)]
pub(crate) struct WorkRule {
    pub(crate) kind: RuleKind,
    pub(crate) meta: RuleMeta,
    pub(crate) identifiers: Vec<WorkIdentifier>,
    pub(crate) conditions: Vec<String>,
    /// `filter.rules` of a filter.
    filter_rules: Vec<String>,
    /// The correlation itself (its `meta` is in [`WorkRule::meta`]).
    correlation: Option<CorrelationRule>,
    /// For a correlation: the log sources of the rules it references.
    pub(crate) referenced_logsources: Vec<LogSource>,
    /// Ids of the processing items applied to the rule.
    pub(crate) applied: HashSet<String>,
    /// Field name to the ids of the items that produced it.
    pub(crate) field_applied: HashMap<String, HashSet<String>>,
    /// The pipeline state (`set_state`), per rule as in pySigma.
    pub(crate) state: State,
}

fn work_identifiers(section: &DetectionSection) -> Vec<WorkIdentifier> {
    section
        .identifiers
        .iter()
        .map(|identifier| WorkIdentifier {
            name: identifier.name.clone(),
            selections: identifier
                .selections
                .iter()
                .map(|items| items.iter().cloned().map(WorkItem::new).collect())
                .collect(),
        })
        .collect()
}

impl WorkRule {
    fn blank(kind: RuleKind, meta: RuleMeta) -> Self {
        WorkRule {
            kind,
            meta,
            identifiers: Vec::new(),
            conditions: Vec::new(),
            filter_rules: Vec::new(),
            correlation: None,
            referenced_logsources: Vec::new(),
            applied: HashSet::new(),
            field_applied: HashMap::new(),
            state: State::new(),
        }
    }

    pub(crate) fn from_rule(rule: &SigmaRule) -> Self {
        WorkRule {
            identifiers: work_identifiers(&rule.detection),
            conditions: rule.detection.conditions.clone(),
            ..WorkRule::blank(RuleKind::Detection, rule.meta.clone())
        }
    }

    pub(crate) fn from_filter(filter: &FilterRule) -> Self {
        WorkRule {
            identifiers: work_identifiers(&filter.detection),
            conditions: filter.detection.conditions.clone(),
            filter_rules: filter.rules.clone(),
            ..WorkRule::blank(RuleKind::Filter, filter.meta.clone())
        }
    }

    pub(crate) fn from_correlation(
        correlation: &CorrelationRule,
        referenced_logsources: Vec<LogSource>,
    ) -> Self {
        WorkRule {
            correlation: Some(correlation.clone()),
            referenced_logsources,
            ..WorkRule::blank(RuleKind::Correlation, correlation.meta.clone())
        }
    }

    fn detection(self) -> (RuleMeta, DetectionSection) {
        let identifiers = self
            .identifiers
            .into_iter()
            .map(|identifier| SearchIdentifier {
                name: identifier.name,
                selections: identifier
                    .selections
                    .into_iter()
                    .map(|items| items.into_iter().map(|w| w.item).collect())
                    .collect(),
            })
            .collect();
        (
            self.meta,
            DetectionSection {
                identifiers,
                conditions: self.conditions,
            },
        )
    }

    pub(crate) fn into_rule(self) -> SigmaRule {
        let (meta, detection) = self.detection();
        SigmaRule { meta, detection }
    }

    pub(crate) fn into_filter(mut self) -> FilterRule {
        let rules = std::mem::take(&mut self.filter_rules);
        let (meta, detection) = self.detection();
        FilterRule {
            meta,
            rules,
            detection,
        }
    }

    pub(crate) fn into_correlation(self) -> CorrelationRule {
        let mut correlation = self.correlation.expect("a correlation work rule");
        correlation.meta = self.meta;
        correlation
    }

    /// Every detection item of the rule.
    pub(crate) fn items(&self) -> impl Iterator<Item = &WorkItem> {
        self.identifiers
            .iter()
            .flat_map(|i| i.selections.iter().flatten())
    }
}

/// Modifiers whose values are not plain strings or numbers (regular
/// expressions, networks, field references, comparisons, ...): value
/// transformations and string conditions leave such items alone, as pySigma
/// does with its typed values.
pub(crate) fn is_plain_item(item: &DetectionItem) -> bool {
    !item.modifiers.iter().any(|m| {
        use Modifier::*;
        matches!(
            m,
            Re | ReInsensitive
                | ReMultiline
                | ReDotAll
                | Cidr
                | Exists
                | FieldRef
                | Gt
                | Gte
                | Lt
                | Lte
                | Minute
                | Hour
                | Day
                | Week
                | Month
                | Year
        )
    })
}

fn number(value: &SigmaValue) -> Option<f64> {
    match value {
        SigmaValue::Integer(i) => Some(*i as f64),
        SigmaValue::Float(f) => Some(*f),
        _ => None,
    }
}

/// Equality of values of the same type (numbers compare numerically).
pub(crate) fn same_value(a: &SigmaValue, b: &SigmaValue) -> bool {
    match (a, b) {
        (SigmaValue::String(x), SigmaValue::String(y)) => x == y,
        (SigmaValue::Bool(x), SigmaValue::Bool(y)) => x == y,
        (SigmaValue::Null, SigmaValue::Null) => true,
        (x, y) => matches!((number(x), number(y)), (Some(p), Some(q)) if p == q),
    }
}

/// The text of a number as pySigma renders it.
fn number_text(value: &SigmaValue) -> Option<String> {
    match value {
        SigmaValue::Integer(i) => Some(i.to_string()),
        SigmaValue::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// `field_name_mapping` target(s) of a source field.
pub(crate) type FieldMap = HashMap<String, Vec<String>>;

/// `add_condition` parameters.
#[derive(Debug, Clone)]
pub(crate) struct AddCondition {
    pub(crate) name: Option<String>,
    pub(crate) items: Vec<DetectionItem>,
    pub(crate) template: bool,
    pub(crate) negated: bool,
}

/// `replace_string` parameters.
#[derive(Debug, Clone)]
pub(crate) struct ReplaceString {
    pub(crate) regex: Regex,
    /// The replacement in `regex` crate syntax (converted from Python's).
    pub(crate) replacement: String,
    pub(crate) skip_special: bool,
    pub(crate) interpret_special: bool,
}

/// `convert_type` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetType {
    Str,
    Num,
}

/// `include` / `exclude` of the placeholder transformations.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlaceholderFilter {
    pub(crate) include: Option<Vec<String>>,
    pub(crate) exclude: Option<Vec<String>>,
}

impl PlaceholderFilter {
    fn handles(&self, name: &str) -> bool {
        match (&self.include, &self.exclude) {
            (Some(include), _) => include.iter().any(|n| n == name),
            (None, Some(exclude)) => !exclude.iter().any(|n| n == name),
            (None, None) => true,
        }
    }
}

/// `case` method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaseMethod {
    Lower,
    Upper,
    Snake,
}

/// What a processing item does.
#[derive(Debug, Clone)]
pub(crate) enum Transformation {
    /// `field_name_mapping`: exact names to one or several names.
    FieldNameMapping(FieldMap),
    /// `field_name_prefix_mapping`: the first matching prefix is replaced.
    FieldNamePrefixMapping(Vec<(String, Vec<String>)>),
    /// `field_name_prefix`.
    FieldNamePrefix(String),
    /// `field_name_suffix`.
    FieldNameSuffix(String),
    /// `drop_detection_item`.
    DropDetectionItem,
    /// `add_condition`.
    AddCondition(AddCondition),
    /// `change_logsource`: the whole log source is replaced.
    ChangeLogsource(LogSource),
    /// `replace_string`.
    ReplaceString(ReplaceString),
    /// `map_string`.
    MapString(HashMap<String, Vec<String>>),
    /// `set_value`.
    SetValue(SigmaValue),
    /// `convert_type`.
    ConvertType(TargetType),
    /// `value_placeholders`.
    ValuePlaceholders(PlaceholderFilter),
    /// `wildcard_placeholders`.
    WildcardPlaceholders(PlaceholderFilter),
    /// `set_state`.
    SetState { key: String, val: StateValue },
    /// `rule_failure`.
    RuleFailure(String),
    /// `detection_item_failure`.
    DetectionItemFailure(String),
    /// `case`.
    Case(CaseMethod),
    /// `nest`: processing items applied in turn.
    Nest(Vec<ProcessingItem>),
    /// Transformations that only change what a query backend outputs
    /// (`add_field`, `remove_field`, `set_field`, `set_custom_attribute`).
    Ignored,
}

/// What becomes of a detection item.
enum Outcome {
    /// Kept (possibly changed in place).
    Keep,
    /// Removed from its selection.
    Drop,
    /// Replaced by an OR of items (one-to-many field mapping).
    Alternatives(Vec<WorkItem>),
}

impl ProcessingItem {
    /// Applies the item to the rule when its rule conditions hold.
    pub(crate) fn apply(
        &self,
        rule: &mut WorkRule,
        context: &ApplyContext<'_>,
    ) -> Result<(), String> {
        if !self.rule_conditions.matches(|c| c.matches(rule)) {
            return Ok(());
        }
        if let Some(id) = &self.id {
            rule.applied.insert(id.clone());
        }
        self.transformation.apply(self, rule, context)
    }

    /// Detection item and field name conditions, for item transformations.
    fn item_matches(&self, item: &WorkItem, state: &State) -> bool {
        self.detection_item_conditions
            .matches(|c| c.matches(item, state))
            && self.field_name_conditions.matches(|c| {
                c.matches(
                    &FieldTarget::Item {
                        item,
                        with_refs: true,
                    },
                    state,
                )
            })
    }

    /// Field name conditions on the item's own field only.
    fn field_matches(&self, item: &WorkItem, state: &State) -> bool {
        self.field_name_conditions.matches(|c| {
            c.matches(
                &FieldTarget::Item {
                    item,
                    with_refs: false,
                },
                state,
            )
        })
    }

    /// Field name conditions on a bare field name.
    fn name_matches(
        &self,
        name: &str,
        tracking: &HashMap<String, HashSet<String>>,
        state: &State,
    ) -> bool {
        self.field_name_conditions.matches(|c| {
            c.matches(
                &FieldTarget::Name {
                    name: Some(name),
                    tracking,
                },
                state,
            )
        })
    }
}

impl Transformation {
    fn apply(
        &self,
        item: &ProcessingItem,
        rule: &mut WorkRule,
        context: &ApplyContext<'_>,
    ) -> Result<(), String> {
        let id = item.id.as_deref();
        match self {
            Transformation::FieldNameMapping(_)
            | Transformation::FieldNamePrefixMapping(_)
            | Transformation::FieldNamePrefix(_)
            | Transformation::FieldNameSuffix(_) => self.map_fields(item, rule),
            Transformation::DropDetectionItem => {
                let state = &rule.state;
                let emptied = map_items(&mut rule.identifiers, |w| {
                    Ok(if item.item_matches(w, state) {
                        Outcome::Drop
                    } else {
                        Outcome::Keep
                    })
                })?;
                prune_conditions(rule, &emptied)
            }
            Transformation::AddCondition(add) => {
                if rule.kind == RuleKind::Detection {
                    add_condition(add, id, rule);
                }
                Ok(())
            }
            Transformation::ChangeLogsource(logsource) => {
                rule.meta.logsource = logsource.clone();
                Ok(())
            }
            Transformation::SetState { key, val } => {
                rule.state.insert(key.clone(), val.clone());
                Ok(())
            }
            Transformation::RuleFailure(message) => Err(message.clone()),
            Transformation::DetectionItemFailure(message) => {
                let state = &rule.state;
                if rule.items().any(|w| item.item_matches(w, state)) {
                    Err(message.clone())
                } else {
                    Ok(())
                }
            }
            Transformation::Nest(items) => {
                for nested in items {
                    nested.apply(rule, context)?;
                }
                Ok(())
            }
            Transformation::Ignored => Ok(()),
            Transformation::ReplaceString(_)
            | Transformation::MapString(_)
            | Transformation::SetValue(_)
            | Transformation::ConvertType(_)
            | Transformation::ValuePlaceholders(_)
            | Transformation::WildcardPlaceholders(_)
            | Transformation::Case(_) => {
                let state = &rule.state;
                map_items(&mut rule.identifiers, |w| {
                    if item.item_matches(w, state) && self.change_values(&mut w.item, context)? {
                        w.mark(id);
                    }
                    Ok(Outcome::Keep)
                })?;
                Ok(())
            }
        }
    }

    /// The new name(s) of a field, or `None` when this transformation leaves it.
    fn map_name(&self, name: &str) -> Option<Vec<String>> {
        match self {
            Transformation::FieldNameMapping(mapping) => mapping.get(name).cloned(),
            Transformation::FieldNamePrefixMapping(mapping) => {
                mapping.iter().find_map(|(prefix, targets)| {
                    let rest = name.strip_prefix(prefix.as_str())?;
                    Some(targets.iter().map(|t| format!("{t}{rest}")).collect())
                })
            }
            Transformation::FieldNamePrefix(prefix) => Some(vec![format!("{prefix}{name}")]),
            Transformation::FieldNameSuffix(suffix) => Some(vec![format!("{name}{suffix}")]),
            _ => None,
        }
    }

    /// Field name transformations: detection items (their field and their
    /// `fieldref` values) or the fields of a correlation.
    fn map_fields(&self, item: &ProcessingItem, rule: &mut WorkRule) -> Result<(), String> {
        let id = item.id.as_deref();
        if rule.kind == RuleKind::Correlation {
            return self.map_correlation_fields(item, rule);
        }
        let WorkRule {
            identifiers,
            field_applied,
            state,
            ..
        } = rule;
        let emptied = map_items(identifiers, |w| {
            if !item.item_matches(w, state) {
                return Ok(Outcome::Keep);
            }
            // Field references in values.
            if w.item.modifiers.contains(&Modifier::FieldRef) {
                let mut changed = false;
                let mut values = Vec::with_capacity(w.item.values.len());
                for value in &w.item.values {
                    if let SigmaValue::String(name) = value
                        && item.name_matches(name, field_applied, state)
                        && let Some(targets) = self.map_name(name)
                    {
                        track(field_applied, name, &targets, id);
                        values.extend(targets.into_iter().map(SigmaValue::String));
                        changed = true;
                    } else {
                        values.push(value.clone());
                    }
                }
                if changed {
                    w.item.values = values;
                    w.mark(id);
                }
            }
            // The item's own field (keyword items have none).
            let Some(field) = w.item.field.clone() else {
                return Ok(Outcome::Keep);
            };
            let Some(mut targets) = self.map_name(&field) else {
                return Ok(Outcome::Keep);
            };
            if !item.field_matches(w, state) {
                return Ok(Outcome::Keep);
            }
            track(field_applied, &field, &targets, id);
            Ok(match targets.len() {
                0 => Outcome::Drop,
                1 => {
                    w.item.field = targets.pop();
                    w.mark(id);
                    Outcome::Keep
                }
                _ => Outcome::Alternatives(
                    targets
                        .into_iter()
                        .map(|target| {
                            let mut copy = w.clone();
                            copy.item.field = Some(target);
                            copy.mark(id);
                            copy
                        })
                        .collect(),
                ),
            })
        })?;
        prune_conditions(rule, &emptied)
    }

    /// Field mappings of a correlation: `group-by` (alias names excepted),
    /// alias mappings and `condition.field`. Alias mappings and the
    /// condition field must map to a single name.
    fn map_correlation_fields(
        &self,
        item: &ProcessingItem,
        rule: &mut WorkRule,
    ) -> Result<(), String> {
        let id = item.id.as_deref();
        let WorkRule {
            correlation,
            field_applied,
            state,
            ..
        } = rule;
        let Some(correlation) = correlation else {
            return Ok(());
        };
        let mut single = |name: &mut String, what: &str| -> Result<(), String> {
            if !item.name_matches(name, field_applied, state) {
                return Ok(());
            }
            if let Some(targets) = self.map_name(name) {
                if targets.len() != 1 {
                    return Err(format!(
                        "field name mapping can't be applied to the correlation {what} '{name}' \
                         because it results in {} field names",
                        targets.len()
                    ));
                }
                track(field_applied, name, &targets, id);
                *name = targets[0].clone();
            }
            Ok(())
        };
        let aliases: HashSet<String> = correlation
            .aliases
            .iter()
            .map(|(alias, _)| alias.clone())
            .collect();
        for (_, pairs) in &mut correlation.aliases {
            for (_, field) in pairs {
                single(field, "alias mapping")?;
            }
        }
        if let Some(field) = &mut correlation.condition.field {
            single(field, "condition field")?;
        }
        let mut group_by = Vec::with_capacity(correlation.group_by.len());
        for name in &correlation.group_by {
            if !aliases.contains(name)
                && item.name_matches(name, field_applied, state)
                && let Some(targets) = self.map_name(name)
            {
                track(field_applied, name, &targets, id);
                group_by.extend(targets);
            } else {
                group_by.push(name.clone());
            }
        }
        correlation.group_by = group_by;
        Ok(())
    }

    /// Value transformations on one item; true when the item was processed.
    fn change_values(
        &self,
        item: &mut DetectionItem,
        context: &ApplyContext<'_>,
    ) -> Result<bool, String> {
        if let Transformation::SetValue(value) = self {
            // The item becomes a plain comparison with the value, as in
            // pySigma, where modifiers were already applied to the old value.
            item.values = vec![value.clone()];
            item.modifiers.clear();
            return Ok(true);
        }
        if !is_plain_item(item) {
            return Ok(false);
        }
        match self {
            Transformation::ReplaceString(replace) => {
                let mut processed = false;
                for value in &mut item.values {
                    let text = match &*value {
                        SigmaValue::String(s) => s.clone(),
                        other => match number_text(other) {
                            Some(text) => text,
                            None => continue,
                        },
                    };
                    processed = true;
                    let replaced = replace.apply(&text);
                    if replaced != text || matches!(value, SigmaValue::String(_)) {
                        *value = SigmaValue::String(replaced);
                    }
                }
                Ok(processed)
            }
            Transformation::MapString(mapping) => {
                let mut processed = false;
                let mut values = Vec::with_capacity(item.values.len());
                for value in item.values.drain(..) {
                    match &value {
                        SigmaValue::String(s) if mapping.contains_key(s) => {
                            processed = true;
                            values.extend(mapping[s].iter().cloned().map(SigmaValue::String));
                        }
                        _ => values.push(value),
                    }
                }
                item.values = values;
                Ok(processed)
            }
            Transformation::ConvertType(target) => {
                let mut processed = false;
                for value in &mut item.values {
                    if matches!(value, SigmaValue::Null) {
                        continue;
                    }
                    processed = true;
                    *value = convert(value, *target)?;
                }
                Ok(processed)
            }
            Transformation::Case(method) => {
                let mut processed = false;
                for value in &mut item.values {
                    if let SigmaValue::String(s) = value {
                        processed = true;
                        *s = change_case(s, *method);
                    }
                }
                Ok(processed)
            }
            Transformation::ValuePlaceholders(filter) => {
                replace_placeholders(item, filter, |name| {
                    context.vars.get(name).cloned().ok_or_else(|| {
                        format!("placeholder replacement variable '{name}' doesn't exist")
                    })
                })
            }
            Transformation::WildcardPlaceholders(filter) => {
                replace_placeholders(item, filter, |_| Ok(vec!["*".to_owned()]))
            }
            _ => Ok(false),
        }
    }
}

/// Records that `item` mapped `source` to `targets` (pySigma's
/// `track_field_processing_items`).
fn track(
    tracking: &mut HashMap<String, HashSet<String>>,
    source: &str,
    targets: &[String],
    item: Option<&str>,
) {
    if targets.len() == 1 && targets[0] == source {
        return;
    }
    let mut ids = tracking.remove(source).unwrap_or_default();
    if let Some(item) = item {
        ids.insert(item.to_owned());
    }
    for target in targets {
        tracking.insert(target.clone(), ids.clone());
    }
}

/// Runs `f` on every detection item and rebuilds the selections: dropped
/// items leave their selection, alternatives multiply it (a selection is an
/// AND, so an item that became an OR of k items turns it into k selections).
/// A selection that loses all its items leaves its identifier; the names of
/// identifiers that lose all their selections are returned (and removed).
fn map_items(
    identifiers: &mut Vec<WorkIdentifier>,
    mut f: impl FnMut(&mut WorkItem) -> Result<Outcome, String>,
) -> Result<Vec<String>, String> {
    let mut emptied = Vec::new();
    for identifier in identifiers.iter_mut() {
        let had_selections = !identifier.selections.is_empty();
        let mut selections = Vec::with_capacity(identifier.selections.len());
        for selection in std::mem::take(&mut identifier.selections) {
            let had_items = !selection.is_empty();
            let mut partial: Vec<Vec<WorkItem>> = vec![Vec::with_capacity(selection.len())];
            for mut work in selection {
                match f(&mut work)? {
                    Outcome::Keep => {
                        if let Some((last, rest)) = partial.split_last_mut() {
                            for alternative in rest {
                                alternative.push(work.clone());
                            }
                            last.push(work);
                        }
                    }
                    Outcome::Drop => {}
                    Outcome::Alternatives(options) if options.is_empty() => {}
                    Outcome::Alternatives(options) => {
                        let count = partial.len() * options.len();
                        if count > MAX_SELECTIONS {
                            return Err(format!(
                                "detection '{}': one-to-many field mappings would make {count} \
                                 selections (at most {MAX_SELECTIONS})",
                                identifier.name
                            ));
                        }
                        let mut next = Vec::with_capacity(count);
                        for alternative in &partial {
                            for option in &options {
                                let mut grown = alternative.clone();
                                grown.push(option.clone());
                                next.push(grown);
                            }
                        }
                        partial = next;
                    }
                }
            }
            selections.extend(
                partial
                    .into_iter()
                    .filter(|items| !(had_items && items.is_empty())),
            );
        }
        identifier.selections = selections;
        if had_selections && identifier.selections.is_empty() {
            emptied.push(identifier.name.clone());
        }
    }
    identifiers.retain(|identifier| !emptied.contains(&identifier.name));
    Ok(emptied)
}

/// Removes identifiers that lost every item from the conditions, as pySigma
/// drops empty detections: an operand of `and`/`or` disappears, `not` of it
/// disappears, an `of` whose identifiers are all gone disappears.
fn prune_conditions(rule: &mut WorkRule, emptied: &[String]) -> Result<(), String> {
    if emptied.is_empty() {
        return Ok(());
    }
    let remaining: Vec<&str> = rule.identifiers.iter().map(|i| i.name.as_str()).collect();
    let mut conditions = Vec::with_capacity(rule.conditions.len());
    for text in &rule.conditions {
        let parsed = condition::parse(text).map_err(|err| format!("condition '{text}': {err}"))?;
        if let Some(pruned) = prune(&parsed, emptied, &remaining) {
            conditions.push(render(&pruned));
        }
    }
    if conditions.is_empty() {
        return Err(format!(
            "every detection item the condition uses was dropped ({})",
            emptied.join(", ")
        ));
    }
    rule.conditions = conditions;
    Ok(())
}

fn prune(condition: &Condition, emptied: &[String], remaining: &[&str]) -> Option<Condition> {
    let operands = |items: &[Condition]| -> Vec<Condition> {
        items
            .iter()
            .filter_map(|c| prune(c, emptied, remaining))
            .collect()
    };
    match condition {
        Condition::Identifier(name) => (!emptied.contains(name)).then(|| condition.clone()),
        Condition::Not(inner) => {
            prune(inner, emptied, remaining).map(|c| Condition::Not(Box::new(c)))
        }
        Condition::And(items) => collapse(operands(items), Condition::And),
        Condition::Or(items) => collapse(operands(items), Condition::Or),
        Condition::Of { target, .. } => {
            let covers = |name: &str| match target {
                OfTarget::Them => !name.starts_with('_'),
                OfTarget::Pattern(pattern) => condition::pattern_matches(pattern, name),
            };
            let any_left = remaining.iter().any(|n| covers(n));
            let any_emptied = emptied.iter().any(|n| covers(n));
            (any_left || !any_emptied).then(|| condition.clone())
        }
    }
}

fn collapse(
    mut operands: Vec<Condition>,
    wrap: fn(Vec<Condition>) -> Condition,
) -> Option<Condition> {
    match operands.len() {
        0 => None,
        1 => operands.pop(),
        _ => Some(wrap(operands)),
    }
}

/// A condition as text the condition parser reads back.
fn render(condition: &Condition) -> String {
    let join = |items: &[Condition], op: &str| {
        let parts: Vec<String> = items.iter().map(render).collect();
        format!("({})", parts.join(op))
    };
    match condition {
        Condition::Identifier(name) => name.clone(),
        Condition::And(items) => join(items, " and "),
        Condition::Or(items) => join(items, " or "),
        Condition::Not(inner) => format!("not ({})", render(inner)),
        Condition::Of { quantifier, target } => {
            let quantifier = match quantifier {
                Quantifier::All => "all".to_owned(),
                Quantifier::AtLeast(n) => n.to_string(),
            };
            let target = match target {
                OfTarget::Them => "them",
                OfTarget::Pattern(pattern) => pattern.as_str(),
            };
            format!("({quantifier} of {target})")
        }
    }
}

/// `add_condition`: a new search identifier ANDed with every condition.
fn add_condition(add: &AddCondition, id: Option<&str>, rule: &mut WorkRule) {
    let name = match &add.name {
        Some(name) => name.clone(),
        None => (1..)
            .map(|n| format!("_cond_{n}"))
            .find(|candidate| rule.identifiers.iter().all(|i| &i.name != candidate))
            .expect("an unused name"),
    };
    let items: Vec<WorkItem> = add
        .items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if add.template {
                for value in &mut item.values {
                    if let SigmaValue::String(text) = value {
                        *text = substitute_template(text, &rule.meta.logsource);
                    }
                }
            }
            let mut work = WorkItem::new(item);
            work.mark(id);
            work
        })
        .collect();
    match rule.identifiers.iter_mut().find(|i| i.name == name) {
        // pySigma replaces a detection of the same name.
        Some(existing) => existing.selections = vec![items],
        None => rule.identifiers.push(WorkIdentifier {
            name: name.clone(),
            selections: vec![items],
        }),
    }
    let negation = if add.negated { "not " } else { "" };
    for condition in &mut rule.conditions {
        *condition = format!("{negation}{name} and ({condition})");
    }
}

/// Python `string.Template.safe_substitute` with `category`, `product` and
/// `service` (a missing log source field becomes `None`, as in pySigma).
fn substitute_template(text: &str, logsource: &LogSource) -> String {
    let lookup = |name: &str| -> Option<String> {
        let value = match name {
            "category" => &logsource.category,
            "product" => &logsource.product,
            "service" => &logsource.service,
            _ => return None,
        };
        Some(value.clone().unwrap_or_else(|| "None".to_owned()))
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (name, consumed) = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], end)
        };
        match lookup(name) {
            Some(value) if consumed > 0 => {
                out.push_str(&value);
                rest = &rest[consumed..];
            }
            _ => out.push('$'),
        }
    }
    out.push_str(rest);
    out
}

fn convert(value: &SigmaValue, target: TargetType) -> Result<SigmaValue, String> {
    Ok(match (target, value) {
        (TargetType::Str, SigmaValue::Bool(b)) => SigmaValue::String(b.to_string()),
        (TargetType::Str, other) => match number_text(other) {
            Some(text) => SigmaValue::String(text),
            None => other.clone(),
        },
        (TargetType::Num, SigmaValue::String(text)) => {
            let trimmed = text.trim();
            if let Ok(i) = trimmed.parse::<i64>() {
                SigmaValue::Integer(i)
            } else if let Ok(f) = trimmed.parse::<f64>()
                && f.is_finite()
            {
                SigmaValue::Float(f)
            } else {
                return Err(format!("value '{text}' can't be converted to number"));
            }
        }
        (TargetType::Num, SigmaValue::Bool(b)) => {
            return Err(format!("value '{b}' can't be converted to number"));
        }
        (TargetType::Num, other) => other.clone(),
    })
}

fn change_case(text: &str, method: CaseMethod) -> String {
    match method {
        CaseMethod::Lower => text.to_lowercase(),
        CaseMethod::Upper => text.to_uppercase(),
        CaseMethod::Snake => {
            let mut out = String::with_capacity(text.len() + 4);
            let mut previous: Option<char> = None;
            for c in text.chars() {
                if c.is_uppercase()
                    && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
                previous = Some(c);
            }
            out
        }
    }
}

/// Replaces handled `%name%` placeholders of an `expand` item's values with
/// each of their replacements (several placeholders multiply). The `expand`
/// modifier is removed once no placeholder is left.
fn replace_placeholders(
    item: &mut DetectionItem,
    filter: &PlaceholderFilter,
    replacements: impl Fn(&str) -> Result<Vec<String>, String>,
) -> Result<bool, String> {
    if !item.modifiers.contains(&Modifier::Expand) {
        return Ok(false);
    }
    let mut processed = false;
    let mut values = Vec::with_capacity(item.values.len());
    for value in item.values.drain(..) {
        let SigmaValue::String(text) = &value else {
            values.push(value);
            continue;
        };
        let pieces = placeholder::pieces(text);
        let mut handled = false;
        let filled = placeholder::substitute(&pieces, |name| {
            if filter.handles(name) {
                handled = true;
                replacements(name).map(Some)
            } else {
                Ok(None)
            }
        })?;
        if !handled {
            values.push(value);
            continue;
        }
        processed = true;
        values.extend(filled.into_iter().map(SigmaValue::String));
    }
    let left = values
        .iter()
        .any(|v| matches!(v, SigmaValue::String(s) if placeholder::has_placeholders(s)));
    if processed && !left {
        item.modifiers.retain(|m| *m != Modifier::Expand);
        // Without `expand`, a value is a plain Sigma string: resolve `\%`.
        for value in &mut values {
            if let SigmaValue::String(text) = value {
                *text = placeholder::unescape(text);
            }
        }
    }
    item.values = values;
    Ok(processed)
}

/// A piece of a Sigma string: literal text or a wildcard.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Wildcard(char),
}

/// Splits a Sigma string into literal text (escapes resolved) and wildcards.
fn split_sigma(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    current.push(next);
                    chars.next();
                }
                _ => current.push('\\'),
            },
            '*' | '?' => {
                if !current.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut current)));
                }
                pieces.push(Piece::Wildcard(c));
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        pieces.push(Piece::Text(current));
    }
    pieces
}

/// Escapes literal text for a Sigma string; `before_wildcard` tells whether
/// a wildcard follows it (a trailing backslash must then be escaped).
fn escape_sigma(text: &str, before_wildcard: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '*' | '?' => {
                out.push('\\');
                out.push(c);
            }
            '\\' => {
                let next = chars.get(i + 1);
                let needs = match next {
                    Some(n) => matches!(n, '*' | '?' | '\\'),
                    None => before_wildcard,
                };
                out.push('\\');
                if needs {
                    out.push('\\');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

impl ReplaceString {
    fn apply(&self, text: &str) -> String {
        if !self.skip_special {
            return self
                .regex
                .replace_all(text, self.replacement.as_str())
                .into_owned();
        }
        let pieces = split_sigma(text);
        let mut out = String::with_capacity(text.len());
        for (i, piece) in pieces.iter().enumerate() {
            match piece {
                Piece::Wildcard(c) => out.push(*c),
                Piece::Text(literal) => {
                    let replaced = self.regex.replace_all(literal, self.replacement.as_str());
                    if self.interpret_special {
                        out.push_str(&replaced);
                    } else {
                        let before_wildcard = matches!(pieces.get(i + 1), Some(Piece::Wildcard(_)));
                        out.push_str(&escape_sigma(&replaced, before_wildcard));
                    }
                }
            }
        }
        out
    }
}

/// Converts a Python `re.sub` replacement (`\1`, `\g<name>`, `\n`, ...) to
/// the `regex` crate's syntax (`${1}`, `${name}`, `$$` for a dollar).
pub(crate) fn python_replacement(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                None => return Err("bad escape (end of replacement)".into()),
                Some('0') => out.push('\0'),
                Some(d) if d.is_ascii_digit() => {
                    let mut group = d.to_string();
                    if let Some(&e) = chars.peek()
                        && e.is_ascii_digit()
                    {
                        group.push(e);
                        chars.next();
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                Some('g') => {
                    if chars.next() != Some('<') {
                        return Err("missing '<' after \\g".into());
                    }
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('>') => break,
                            Some(c) => name.push(c),
                            None => return Err("missing '>' after \\g<".into()),
                        }
                    }
                    if name.is_empty() {
                        return Err("empty group name after \\g".into());
                    }
                    out.push_str(&format!("${{{name}}}"));
                }
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('f') => out.push('\x0c'),
                Some('v') => out.push('\x0b'),
                Some('a') => out.push('\x07'),
                Some('b') => out.push('\x08'),
                Some('\\') => out.push('\\'),
                Some(d) if d.is_ascii_alphabetic() => {
                    return Err(format!("bad escape \\{d} in replacement"));
                }
                Some(d) => {
                    out.push('\\');
                    out.push(d);
                }
            },
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_replacements_convert() {
        assert_eq!(python_replacement(r"\1-\g<name>").unwrap(), "${1}-${name}");
        assert_eq!(python_replacement("a$b").unwrap(), "a$$b");
        assert_eq!(python_replacement(r"C:\\x").unwrap(), r"C:\x");
        assert_eq!(python_replacement(r"\*").unwrap(), r"\*");
        assert!(python_replacement(r"\q").is_err());
        assert!(python_replacement(r"\g<x").is_err());
    }

    #[test]
    fn sigma_strings_split_and_escape() {
        assert_eq!(
            split_sigma(r"C:\Win*\a\*b?"),
            vec![
                Piece::Text(r"C:\Win".into()),
                Piece::Wildcard('*'),
                Piece::Text(r"\a*b".into()),
                Piece::Wildcard('?'),
            ]
        );
        assert_eq!(escape_sigma(r"\a*b", false), r"\a\*b");
        assert_eq!(escape_sigma(r"dir\", true), r"dir\\");
        assert_eq!(escape_sigma(r"dir\", false), r"dir\");
    }

    #[test]
    fn templates_substitute_logsource() {
        let logsource = LogSource {
            category: Some("process_creation".into()),
            product: Some("windows".into()),
            service: None,
            custom: Vec::new(),
        };
        assert_eq!(
            substitute_template("$product-${category}/$service $$x $other", &logsource),
            "windows-process_creation/None $x $other"
        );
    }

    #[test]
    fn conditions_prune_and_render() {
        let pruned = |text: &str, emptied: &[&str], remaining: &[&str]| {
            let emptied: Vec<String> = emptied.iter().map(|s| s.to_string()).collect();
            prune(&condition::parse(text).unwrap(), &emptied, remaining).map(|c| render(&c))
        };
        assert_eq!(
            pruned("sel and not filter", &["filter"], &["sel"]).as_deref(),
            Some("sel")
        );
        assert_eq!(
            pruned("a and (b or c)", &["b"], &["a", "c"]).as_deref(),
            Some("(a and c)")
        );
        assert_eq!(
            pruned("all of sel_* and not f", &["sel_x"], &["sel_y", "f"]).as_deref(),
            Some("((all of sel_*) and not (f))")
        );
        assert_eq!(pruned("1 of sel_*", &["sel_x"], &["f"]), None);
        assert_eq!(pruned("x", &["x"], &[]), None);
    }

    #[test]
    fn case_methods() {
        assert_eq!(
            change_case("CommandLine", CaseMethod::Snake),
            "command_line"
        );
        assert_eq!(change_case("Abc", CaseMethod::Upper), "ABC");
        assert_eq!(change_case("AbC", CaseMethod::Lower), "abc");
    }
}
