//! What the task types are, without what runs them: a catalog of names,
//! descriptions and signatures that a submission can be checked against.
//! The registry of this process gives one ([`Registry::types`]); a client
//! builds one from the API's `/api/v1/task-types`, where no function is at
//! hand.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Registry, Signature, SpecError};
use crate::model::TaskSpec;

/// One task type as submitters see it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskType {
    /// Name clients submit.
    pub name: String,
    /// One line on what it does.
    #[serde(default)]
    pub description: String,
    /// Its parameters.
    #[serde(flatten)]
    pub signature: Signature,
}

/// Task types by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskTypes {
    types: BTreeMap<String, TaskType>,
}

impl TaskTypes {
    /// A catalog of `types` (a later one of the same name wins).
    pub fn new(types: impl IntoIterator<Item = TaskType>) -> Self {
        Self {
            types: types
                .into_iter()
                .map(|task_type| (task_type.name.clone(), task_type))
                .collect(),
        }
    }

    /// The named type.
    pub fn get(&self, name: &str) -> Option<&TaskType> {
        self.types.get(name)
    }

    /// Every type, by name.
    pub fn iter(&self) -> impl Iterator<Item = &TaskType> {
        self.types.values()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Checks a submission as [`Registry::validate`] does.
    pub fn validate(&self, spec: &TaskSpec) -> Result<(), SpecError> {
        super::check_spec(
            spec,
            |name| self.get(name).map(|t| &t.signature),
            || self.types.keys().cloned().collect::<Vec<_>>().join(", "),
        )
    }
}

impl Registry {
    /// The registered types without their functions.
    pub fn types(&self) -> TaskTypes {
        TaskTypes::new(self.iter().map(|def| TaskType {
            name: def.name.clone(),
            description: def.description.clone(),
            signature: def.signature.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_catalog_checks_submissions_as_the_registry_does() {
        let registry = Registry::with_builtins();
        let catalog = registry.types();
        assert_eq!(catalog.iter().count(), registry.iter().count());
        for spec in [
            TaskSpec::new("nope", vec![]),
            TaskSpec::new("sleep", vec![json!(1)]),
            TaskSpec::new("sleep", vec![json!("x")]),
            TaskSpec::new("noop", vec![]).priority(12),
        ] {
            assert_eq!(
                catalog.validate(&spec).map_err(|e| e.to_string()),
                registry
                    .validate(&spec)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                "{spec:?}"
            );
        }
    }
}
