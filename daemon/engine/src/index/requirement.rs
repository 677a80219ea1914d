//! The necessary condition of each rule, in conjunctive form, that the
//! prefilter indexes: a few clauses that must all hold, each a set of
//! triggers of which at least one must hold.

use crate::compile::{CompiledIdentifier, CompiledItem, CompiledRule, CondNode, ItemTest};

/// Literal triggers longer than this are not more selective in practice.
const NEEDLE_SCORE_CAP: usize = 24;

/// At most this many clauses are indexed per rule: the most selective ones.
const MAX_CLAUSES: usize = 3;

/// Where a trigger looks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// One field.
    Field(String),
    /// Any value of the event (keyword searches).
    AnyValue,
}

/// One way a clause can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub(crate) scope: Scope,
    /// `None`: the field's presence is enough.
    pub(crate) needle: Option<String>,
}

/// A disjunction of triggers.
pub(crate) type Clause = Vec<Trigger>;

/// Higher is more selective: the weakest trigger decides.
fn score(clause: &Clause) -> usize {
    clause
        .iter()
        .map(|t| {
            1 + t
                .needle
                .as_ref()
                .map_or(0, |n| n.len().min(NEEDLE_SCORE_CAP))
        })
        .min()
        .unwrap_or(0)
}

/// Orders clauses from most to least selective.
fn selectivity(clause: &Clause) -> (usize, std::cmp::Reverse<usize>) {
    (score(clause), std::cmp::Reverse(clause.len()))
}

/// A necessary condition: all clauses hold. No clause means none could be
/// derived: the rule is always evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Requirement {
    pub(crate) clauses: Vec<Clause>,
}

impl Requirement {
    fn always() -> Requirement {
        Requirement::default()
    }

    fn clause(clause: Clause) -> Requirement {
        Requirement {
            clauses: vec![clause],
        }
    }

    pub(crate) fn is_always(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The single most selective clause.
    fn best_clause(&self) -> Option<&Clause> {
        self.clauses.iter().max_by_key(|c| selectivity(c))
    }

    /// Conjunction: the most selective clauses of all operands.
    fn and(requirements: impl IntoIterator<Item = Requirement>) -> Requirement {
        let mut clauses: Vec<Clause> = requirements.into_iter().flat_map(|r| r.clauses).collect();
        clauses.sort_by_key(|c| std::cmp::Reverse(selectivity(c)));
        clauses.truncate(MAX_CLAUSES);
        Requirement { clauses }
    }

    /// Disjunction: one clause, the union of each operand's best clause.
    fn or(requirements: impl IntoIterator<Item = Requirement>) -> Requirement {
        let mut union = Vec::new();
        for requirement in requirements {
            match requirement.best_clause() {
                Some(clause) => union.extend(clause.iter().cloned()),
                None => return Requirement::always(),
            }
        }
        if union.is_empty() {
            Requirement::always()
        } else {
            Requirement::clause(union)
        }
    }
}

fn item_requirement(item: &CompiledItem) -> Requirement {
    let scope = match &item.field {
        Some(field) => Scope::Field(field.name().to_owned()),
        None => Scope::AnyValue,
    };
    let presence = || match &scope {
        Scope::Field(_) => Requirement::clause(vec![Trigger {
            scope: scope.clone(),
            needle: None,
        }]),
        // Every event has some value.
        Scope::AnyValue => Requirement::always(),
    };
    let needle = |n: &str| Trigger {
        scope: scope.clone(),
        needle: Some(n.to_owned()),
    };
    match &item.test {
        ItemTest::Exists(true) | ItemTest::FieldRef { .. } => presence(),
        ItemTest::Exists(false) => Requirement::always(),
        ItemTest::Values {
            matches_absent: true,
            ..
        } => Requirement::always(),
        ItemTest::Values {
            all: true,
            matchers,
            ..
        } => {
            // Every value must match: each literal is a clause of its own.
            let clauses: Vec<Requirement> = matchers
                .iter()
                .filter_map(|m| m.needle())
                .map(|n| Requirement::clause(vec![needle(n)]))
                .collect();
            if clauses.is_empty() {
                presence()
            } else {
                Requirement::and(clauses)
            }
        }
        ItemTest::Values {
            all: false,
            matchers,
            grouped,
            ..
        } => {
            let own: Option<Vec<&str>> = matchers.iter().map(|m| m.needle()).collect();
            match own {
                Some(own) => {
                    let grouped = grouped.iter().flat_map(|set| set.needles.iter());
                    let triggers: Clause = own
                        .into_iter()
                        .chain(grouped.map(String::as_str))
                        .map(needle)
                        .collect();
                    if triggers.is_empty() {
                        presence()
                    } else {
                        Requirement::clause(triggers)
                    }
                }
                None => presence(),
            }
        }
    }
}

fn identifier_requirement(identifier: &CompiledIdentifier) -> Requirement {
    let mut selections = identifier
        .selections
        .iter()
        .map(|items| Requirement::and(items.iter().map(item_requirement)));
    if identifier.selections.len() == 1 {
        selections.next().unwrap_or_default()
    } else {
        Requirement::or(selections)
    }
}

fn condition_requirement(node: &CondNode, identifiers: &[Requirement]) -> Requirement {
    match node {
        CondNode::Identifier(i) => identifiers[*i].clone(),
        CondNode::Not(_) => Requirement::always(),
        CondNode::And(nodes) => {
            Requirement::and(nodes.iter().map(|n| condition_requirement(n, identifiers)))
        }
        CondNode::Or(nodes) => {
            Requirement::or(nodes.iter().map(|n| condition_requirement(n, identifiers)))
        }
        CondNode::AtLeast(_, ids) => Requirement::or(ids.iter().map(|i| identifiers[*i].clone())),
    }
}

/// The necessary condition of a rule; no clause when none can be derived.
pub(crate) fn rule_requirement(rule: &CompiledRule) -> Requirement {
    let identifiers: Vec<Requirement> = rule
        .identifiers
        .iter()
        .map(identifier_requirement)
        .collect();
    condition_requirement(&rule.condition, &identifiers)
}
