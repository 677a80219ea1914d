//! Conditions and status writes.
//!
//! Every condition carries the `observedGeneration` it describes; its
//! `lastTransitionTime` changes only when its status does. Status is written
//! by server-side apply with force, and only when it differs from what the
//! object already has, so reconciling an unchanged object writes nothing.

use std::fmt::Debug;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::resources::FIELD_MANAGER;

/// Now, to the second (what the API server stores), so that a condition
/// read back compares equal to the one written.
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// A condition; keeps the transition time of `previous` (the object's
/// current conditions) when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    let mut message: String = message.into();
    if message.len() > 32 * 1024 {
        let mut cut = 32 * 1024;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Writes `status` to `object` by server-side apply (force) unless
/// `current` already equals it. Returns whether it wrote.
///
/// `lists` names the status's list fields. When one of them goes from
/// non-empty to empty the status is written with a JSON merge patch
/// instead: Kubernetes before 1.21 (structured-merge-diff v4.0) turns a list
/// whose every item an applier dropped into `null`, which the CRD schema
/// then rejects.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    status: &S,
    lists: &[&str],
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let mut status = serde_json::to_value(status).expect("status serializes");
    let current = current.map(|c| serde_json::to_value(c).expect("status serializes"));
    let non_empty = |v: Option<&serde_json::Value>, list: &str| {
        v.and_then(|v| v.get(list))
            .and_then(|l| l.as_array())
            .is_some_and(|a| !a.is_empty())
    };
    let clears_list = lists
        .iter()
        .any(|l| non_empty(current.as_ref(), l) && !non_empty(Some(&status), l));
    if clears_list {
        if let Some(map) = status.as_object_mut() {
            for list in lists {
                map.entry(list.to_string())
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            }
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        api.patch_status(
            &object.name_any(),
            &params,
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
        return Ok(true);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let old = Time(Timestamp::from_second(1_000_000).unwrap());
        let previous = vec![Condition {
            type_: "Valid".into(),
            status: "True".into(),
            reason: "A".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: old.clone(),
        }];
        let same = condition(&previous, "Valid", "True", "B", "other", Some(2));
        assert_eq!(same.last_transition_time, old);
        let flipped = condition(&previous, "Valid", "False", "B", "x", Some(2));
        assert_ne!(flipped.last_transition_time, old);
        assert_eq!(flipped.observed_generation, Some(2));
    }
}
