//! Search attributes: a few `name = value` pairs a definition derives from
//! a saga's data, which the store indexes so that an operator can find a
//! saga by them (a booking reference, a hashed e-mail address) without a
//! scan.
//!
//! A definition declares them with
//! [`SagaDefinitionBuilder::search_attribute`] (reading the data as JSON)
//! or [`SagaDefinitionBuilder::search_attribute_typed`] (reading it as the
//! saga's data type). The engine computes them **when the saga is
//! created**, from its input, and **again when it ends** (completed,
//! compensated or stuck), from its final data, so a value a step sets (the
//! booking reference, set by its last step) is found once the saga has
//! ended. They are stored in
//! [`SagaRecord::attributes`](crate::SagaRecord::attributes) and indexed
//! with the record, crash-safely (a status change on every backend
//! re-indexes them). Between those two points they are not recomputed:
//! that would decode the data at every step and rewrite index entries in
//! the middle of a run.
//!
//! Values are indexed as given: never put a secret or a personal detail in
//! clear into one (hash it, see the booking's `email` attribute).

use crate::definition::SagaDefinitionBuilder;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest attribute name or value kept; longer values are not indexed.
pub const MAX_ATTRIBUTE_BYTES: usize = 512;

type JsonFn = Arc<dyn Fn(&serde_json::Value) -> Option<String> + Send + Sync>;
type TypedFn<D> = Arc<dyn Fn(&D) -> Option<String> + Send + Sync>;

/// How one attribute is taken from the data.
pub(crate) enum Extract<D> {
    Json(JsonFn),
    Typed(TypedFn<D>),
}

impl<D> Clone for Extract<D> {
    fn clone(&self) -> Self {
        match self {
            Extract::Json(f) => Extract::Json(f.clone()),
            Extract::Typed(f) => Extract::Typed(f.clone()),
        }
    }
}

/// One declared attribute.
pub(crate) struct SearchAttribute<D> {
    pub(crate) name: String,
    pub(crate) extract: Extract<D>,
}

impl<D> Clone for SearchAttribute<D> {
    fn clone(&self) -> Self {
        SearchAttribute {
            name: self.name.clone(),
            extract: self.extract.clone(),
        }
    }
}

/// The attributes of `data` under `declared`: typed extractors see the data
/// decoded as `D` (decoded once; if it does not decode, they yield nothing
/// and the saga's first step will report the decode error). Empty values
/// and values over [`MAX_ATTRIBUTE_BYTES`] are left out.
pub(crate) fn compute<D: DeserializeOwned>(
    declared: &[SearchAttribute<D>],
    data: &serde_json::Value,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if declared.is_empty() {
        return out;
    }
    let typed: Option<D> = declared
        .iter()
        .any(|a| matches!(a.extract, Extract::Typed(_)))
        .then(|| D::deserialize(data).ok())
        .flatten();
    for a in declared {
        let v = match &a.extract {
            Extract::Json(f) => f(data),
            Extract::Typed(f) => typed.as_ref().and_then(|d| f(d)),
        };
        match v {
            Some(v) if !v.is_empty() && v.len() <= MAX_ATTRIBUTE_BYTES => {
                out.insert(a.name.clone(), v);
            }
            Some(v) if !v.is_empty() => {
                tracing::warn!(attribute = %a.name, bytes = v.len(), "search attribute too long; not indexed");
            }
            _ => {}
        }
    }
    out
}

impl<D: Send + Sync + 'static> SagaDefinitionBuilder<D> {
    /// Declares a search attribute `name`, taken from the saga's data (as
    /// JSON) when the saga is created and again when it ends; `None` (or
    /// an empty string) leaves it out. Declaring a name twice keeps the
    /// last.
    ///
    /// ```
    /// use saga_engine::{SagaDefinition, StepContext, StepError};
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Order { reference: String }
    /// let def = SagaDefinition::<Order>::builder("order", 1)
    ///     .read_only("check", |_: StepContext, o: Order| async move { Ok::<_, StepError>(o) })
    ///     .search_attribute("reference", |data| {
    ///         data.get("reference")?.as_str().map(str::to_string)
    ///     })
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(def.search_attribute_names(), vec!["reference"]);
    /// ```
    pub fn search_attribute<F>(mut self, name: impl Into<String>, extract: F) -> Self
    where
        F: Fn(&serde_json::Value) -> Option<String> + Send + Sync + 'static,
    {
        self.declare(name.into(), Extract::Json(Arc::new(extract)));
        self
    }

    /// Like [`SagaDefinitionBuilder::search_attribute`], with the data
    /// decoded as the saga's data type `D`.
    pub fn search_attribute_typed<F>(mut self, name: impl Into<String>, extract: F) -> Self
    where
        F: Fn(&D) -> Option<String> + Send + Sync + 'static,
    {
        self.declare(name.into(), Extract::Typed(Arc::new(extract)));
        self
    }

    /// Applies `f` to the builder: a way to keep a group of declarations
    /// (a domain's search attributes) in a function of their own.
    pub fn with(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }

    fn declare(&mut self, name: String, extract: Extract<D>) {
        self.attributes.retain(|a| a.name != name);
        self.attributes.push(SearchAttribute { name, extract });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SagaDefinition, StepContext, StepError};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Serialize, Deserialize)]
    struct Order {
        reference: String,
        n: u64,
    }

    fn def() -> SagaDefinition<Order> {
        SagaDefinition::<Order>::builder("order", 1)
            .read_only("check", |_: StepContext, o: Order| async move {
                Ok::<_, StepError>(o)
            })
            .search_attribute("reference", |d| {
                d.get("reference")?.as_str().map(str::to_string)
            })
            .search_attribute_typed("n", |o: &Order| Some(o.n.to_string()))
            .search_attribute_typed("never", |_| None)
            .build()
            .unwrap()
    }

    #[test]
    fn attributes_come_from_the_data_and_skip_what_is_absent() {
        let d = def();
        let got = compute(
            &d.attributes,
            &serde_json::json!({"reference": "ABC123", "n": 7}),
        );
        let want: BTreeMap<String, String> = [("n", "7"), ("reference", "ABC123")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        // Data that does not decode: typed attributes yield nothing.
        let got = compute(&d.attributes, &serde_json::json!({"reference": "X"}));
        assert_eq!(got.keys().collect::<Vec<_>>(), vec!["reference"]);
        let long = "x".repeat(MAX_ATTRIBUTE_BYTES + 1);
        let got = compute(&d.attributes, &serde_json::json!({"reference": long}));
        assert!(got.is_empty());
    }
}
