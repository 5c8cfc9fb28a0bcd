//! What CloudFormation would make of the template with given parameters: the conditions it
//! would evaluate, the resources it would create, the values it would pass, the rules it would
//! enforce. Enough of CloudFormation's functions for this template, no more.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Template, reference};

/// What CloudFormation would make of the template deployed in `region` with `parameters` (every
/// other parameter at its default): which conditions hold, whether the rules let it deploy.
pub(super) struct Deploy<'a> {
    template: &'a Template,
    region: &'a str,
    pub(super) parameters: BTreeMap<&'a str, &'a str>,
}

impl<'a> Deploy<'a> {
    pub(super) fn new(
        template: &'a Template,
        region: &'a str,
        parameters: &[(&'a str, &'a str)],
    ) -> Self {
        Self {
            template,
            region,
            parameters: parameters.iter().copied().collect(),
        }
    }

    fn value(&self, value: &Value) -> String {
        match (reference(value), value) {
            (Some("AWS::Region"), _) => self.region.to_owned(),
            (Some(name), _) => match self.parameters.get(name) {
                Some(given) => (*given).to_owned(),
                None => match &self.template.0["Parameters"][name]["Default"] {
                    Value::String(default) => default.clone(),
                    Value::Number(default) => default.to_string(),
                    other => panic!("parameter {name} has no usable default: {other}"),
                },
            },
            (None, Value::String(literal)) => literal.clone(),
            (None, other) => panic!("not a value this evaluator knows: {other}"),
        }
    }

    pub(super) fn holds(&self, condition: &Value) -> bool {
        let operands = |function: &str| condition[function].as_array().expect(function);
        if let Some(name) = condition.get("Condition").and_then(Value::as_str) {
            self.holds(&self.template.0["Conditions"][name])
        } else if condition.get("Fn::Equals").is_some() {
            let [left, right] = operands("Fn::Equals").as_slice() else {
                panic!("Fn::Equals takes two values: {condition}");
            };
            self.value(left) == self.value(right)
        } else if condition.get("Fn::Not").is_some() {
            !self.holds(&operands("Fn::Not")[0])
        } else if condition.get("Fn::And").is_some() {
            operands("Fn::And").iter().all(|part| self.holds(part))
        } else if condition.get("Fn::Or").is_some() {
            operands("Fn::Or").iter().any(|part| self.holds(part))
        } else {
            panic!("not a condition this evaluator knows: {condition}")
        }
    }

    /// `value` with every `Fn::If` in it replaced by the branch this deploy takes.
    pub(super) fn chosen(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => match map.get("Fn::If").and_then(Value::as_array) {
                Some(parts) if parts.len() == 3 => {
                    let condition = json!({ "Condition": parts[0] });
                    self.chosen(&parts[if self.holds(&condition) { 1 } else { 2 }])
                }
                _ => Value::Object(
                    map.iter()
                        .map(|(key, item)| (key.clone(), self.chosen(item)))
                        .collect(),
                ),
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.chosen(item)).collect())
            }
            other => other.clone(),
        }
    }

    /// Whether a resource or an output (its `Condition`, if any) would exist.
    pub(super) fn makes(&self, declaration: &Value) -> bool {
        declaration["Condition"]
            .as_str()
            .is_none_or(|name| self.holds(&json!({ "Condition": name })))
    }

    /// Whether every rule whose condition holds has all its assertions hold.
    pub(super) fn accepted(&self) -> bool {
        let rules = self.template.0["Rules"].as_object().expect("Rules");
        rules.values().all(|rule| {
            rule.get("RuleCondition")
                .is_some_and(|condition| !self.holds(condition))
                || rule["Assertions"]
                    .as_array()
                    .expect("Assertions")
                    .iter()
                    .all(|assertion| self.holds(&assertion["Assert"]))
        })
    }
}
