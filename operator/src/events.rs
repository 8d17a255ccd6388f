//! Events on the operator's resources: written when they can be, never fatal.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

/// Publishes an event about `object` for `action`; one that cannot be written is logged.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    action: &str,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(
            object = %format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any()),
            "cannot publish the {reason} event: {error}"
        );
    }
}
