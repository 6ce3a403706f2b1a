//! The little object validation this server does: every container of a pod (template) needs
//! an `image`, as kube-apiserver demands. A server-side apply that drops the last owner of a
//! container's image therefore fails with 422, as on a real server.

use serde_json::Value;

use super::store::{ApiError, ResourceDef};

/// Path from the object root to its pod spec, by kind.
fn pod_spec_path(def: &ResourceDef) -> Option<&'static [&'static str]> {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => Some(&["spec"]),
        ("", "PodTemplate") => Some(&["template", "spec"]),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => Some(&["spec", "template", "spec"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// 422 `Required value` for every container (or init container) without an image, in
/// kube-apiserver's words: `Deployment.apps "x" is invalid: spec.template.spec.containers[0].image:
/// Required value` (several causes are listed in brackets).
pub fn validate(def: &ResourceDef, name: &str, object: &Value) -> Result<(), ApiError> {
    let Some(path) = pod_spec_path(def) else {
        return Ok(());
    };
    let mut node = object;
    for key in path {
        match node.get(key) {
            Some(next) => node = next,
            None => return Ok(()),
        }
    }
    let mut causes = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(items) = node.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, container) in items.iter().enumerate() {
            let image = container.get("image").and_then(Value::as_str).unwrap_or("");
            if image.is_empty() {
                causes.push(format!("{}.{list}[{i}].image", path.join(".")));
            }
        }
    }
    let detail = match causes.as_slice() {
        [] => return Ok(()),
        [one] => format!("{one}: Required value"),
        many => format!(
            "[{}]",
            many.iter()
                .map(|c| format!("{c}: Required value"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut error = ApiError::new(
        422,
        "Invalid",
        format!("{} \"{name}\" is invalid: {detail}", def.qualified_kind()),
    );
    let causes: Vec<Value> = causes
        .iter()
        .map(|field| serde_json::json!({"reason": "FieldValueRequired", "message": "Required value", "field": field}))
        .collect();
    error.details = Some(
        serde_json::json!({"name": name, "group": def.group, "kind": def.kind, "causes": causes}),
    );
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_container_without_an_image_is_invalid() {
        let def = ResourceDef::new("apps", "v1", "deployments", "Deployment");
        let ok =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        assert!(validate(&def, "d", &ok).is_ok());
        let one = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x"}, {"name": "b"}]}}}});
        let e = validate(&def, "d", &one).unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            e.message,
            r#"Deployment.apps "d" is invalid: spec.template.spec.containers[1].image: Required value"#
        );
        let two = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b", "image": ""}]}}}});
        assert_eq!(
            validate(&def, "d", &two).unwrap_err().message,
            r#"Deployment.apps "d" is invalid: [spec.template.spec.containers[0].image: Required value, spec.template.spec.containers[1].image: Required value]"#
        );
        let cronjob = ResourceDef::new("batch", "v1", "cronjobs", "CronJob");
        let bare = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}}});
        assert_eq!(
            validate(&cronjob, "c", &bare).unwrap_err().message,
            r#"CronJob.batch "c" is invalid: spec.jobTemplate.spec.template.spec.containers[0].image: Required value"#
        );
        let configmap = ResourceDef::new("", "v1", "configmaps", "ConfigMap");
        assert!(validate(&configmap, "c", &bare).is_ok());
    }
}
