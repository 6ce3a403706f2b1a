//! The pure part of Nomad targets: the job URL, and finding and changing one task's image in
//! a job's JSON exactly as Nomad returned it.

use reqwest::Url;
use serde_json::Value;

use crate::Error;
use crate::api::NomadTarget;
use crate::conditions::reasons;

/// `job "J" in namespace "N"` and `, region "R"` when set, for messages.
pub(super) fn describe_job(target: &NomadTarget) -> String {
    let region = target
        .region
        .as_deref()
        .map(|r| format!(", region {r:?}"))
        .unwrap_or_default();
    format!(
        "job {:?} in namespace {:?}{region}",
        target.job,
        target.namespace.as_deref().unwrap_or("default"),
    )
}

/// `{address}/v1/job/{job}?namespace=…&region=…`, with the job id as one path segment.
pub(super) fn job_url(target: &NomadTarget) -> Result<Url, Error> {
    let invalid = |detail: String| {
        Error::stalled(
            reasons::INVALID_SPEC,
            format!("nomad.address {:?} {detail}", target.address),
        )
    };
    let mut url = Url::parse(&target.address).map_err(|e| invalid(format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http:// or https:// URL".into()));
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| invalid("cannot be a base URL".into()))?
        .pop_if_empty()
        .extend(["v1", "job", target.job.as_str()]);
    {
        let mut query = url.query_pairs_mut();
        if let Some(namespace) = &target.namespace {
            query.append_pair("namespace", namespace);
        }
        if let Some(region) = &target.region {
            query.append_pair("region", region);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// The job's `JobModifyIndex`.
pub(super) fn job_modify_index(job: &Value, id: &str) -> Result<u64, Error> {
    job.get("JobModifyIndex")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Nomad {
            job: id.to_owned(),
            message: "the job as read has no JobModifyIndex".into(),
        })
}

/// The task object of `target` in `job`.
fn find_task<'a>(job: &'a Value, target: &NomadTarget) -> Result<&'a Value, Error> {
    let groups = job
        .get("TaskGroups")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let group = groups
        .iter()
        .find(|g| g.get("Name").and_then(Value::as_str) == Some(target.group.as_str()))
        .ok_or_else(|| {
            Error::stalled(
                reasons::NOMAD_TASK_NOT_FOUND,
                format!(
                    "Nomad {} has no task group {:?} (groups: {}); check nomad.group",
                    describe_job(target),
                    target.group,
                    names(groups)
                ),
            )
        })?;
    let tasks = group
        .get("Tasks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    tasks
        .iter()
        .find(|t| t.get("Name").and_then(Value::as_str) == Some(target.task.as_str()))
        .ok_or_else(|| {
            Error::stalled(
                reasons::NOMAD_TASK_NOT_FOUND,
                format!(
                    "task group {:?} of Nomad {} has no task {:?} (tasks: {}); check nomad.task",
                    target.group,
                    describe_job(target),
                    target.task,
                    names(tasks)
                ),
            )
        })
}

fn names(items: &[Value]) -> String {
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| i.get("Name").and_then(Value::as_str))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn no_image(target: &NomadTarget, driver: &str) -> Error {
    Error::stalled(
        reasons::NOMAD_NO_IMAGE,
        format!(
            "task {:?} of group {:?} in Nomad {} has no config.image (driver {driver:?}); only tasks of image drivers such as docker or podman can be pinned",
            target.task,
            target.group,
            describe_job(target)
        ),
    )
}

/// `(Config.image, Driver)` of the target's task in `job`.
pub fn find_task_image<'a>(
    job: &'a Value,
    target: &NomadTarget,
) -> Result<(&'a str, &'a str), Error> {
    let task = find_task(job, target)?;
    let driver = task.get("Driver").and_then(Value::as_str).unwrap_or("");
    let image = task
        .get("Config")
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .ok_or_else(|| no_image(target, driver))?;
    Ok((image, driver))
}

/// Sets the target task's `Config.image` in `job` to `image`, touching nothing else.
///
/// Returns the previous image, or `None` (and leaves `job` as it was) when it already was
/// `image`.
pub fn set_task_image(
    job: &mut Value,
    target: &NomadTarget,
    image: &str,
) -> Result<Option<String>, Error> {
    let (current, driver) = find_task_image(job, target)?;
    if current == image {
        return Ok(None);
    }
    let previous = current.to_owned();
    let driver = driver.to_owned();
    let slot = job
        .get_mut("TaskGroups")
        .and_then(Value::as_array_mut)
        .and_then(|groups| {
            groups
                .iter_mut()
                .find(|g| g.get("Name").and_then(Value::as_str) == Some(target.group.as_str()))
        })
        .and_then(|g| g.get_mut("Tasks"))
        .and_then(Value::as_array_mut)
        .and_then(|tasks| {
            tasks
                .iter_mut()
                .find(|t| t.get("Name").and_then(Value::as_str) == Some(target.task.as_str()))
        })
        .and_then(|t| t.get_mut("Config"))
        .and_then(|c| c.get_mut("image"))
        .ok_or_else(|| no_image(target, &driver))?;
    *slot = Value::String(image.to_owned());
    Ok(Some(previous))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::nomad::tests::target;
    use serde_json::json;

    fn job() -> Value {
        json!({
            "ID": "web",
            "Name": "web",
            "JobModifyIndex": 42,
            "Version": 3,
            "SomeFutureField": {"x": [1, 2.5, null]},
            "TaskGroups": [
                {"Name": "other", "Tasks": [{"Name": "server", "Driver": "docker", "Config": {"image": "other:1"}}]},
                {"Name": "frontend", "Count": 2, "Tasks": [
                    {"Name": "sidecar", "Driver": "exec", "Config": {"command": "/bin/true"}},
                    {"Name": "server", "Driver": "docker", "Config": {"image": "reg/web:old", "ports": ["http"]}}
                ]}
            ]
        })
    }

    #[test]
    fn finds_the_task_image_of_the_named_group_and_task() {
        let job = job();
        let (image, driver) = find_task_image(&job, &target()).unwrap();
        assert_eq!((image, driver), ("reg/web:old", "docker"));
        assert_eq!(job_modify_index(&job, "web").unwrap(), 42);
    }

    #[test]
    fn replaces_only_the_image_field() {
        let before = job();
        let mut after = before.clone();
        let previous = set_task_image(&mut after, &target(), "reg/web@sha256:abc").unwrap();
        assert_eq!(previous.as_deref(), Some("reg/web:old"));
        let mut expected = before.clone();
        expected["TaskGroups"][1]["Tasks"][1]["Config"]["image"] = json!("reg/web@sha256:abc");
        assert_eq!(after, expected);
        assert_ne!(after, before);
        // The other group's task of the same name is untouched.
        assert_eq!(after["TaskGroups"][0], before["TaskGroups"][0]);
    }

    #[test]
    fn setting_the_same_image_changes_nothing() {
        let mut job = job();
        let before = job.clone();
        assert_eq!(
            set_task_image(&mut job, &target(), "reg/web:old").unwrap(),
            None
        );
        assert_eq!(job, before);
    }

    #[test]
    fn missing_group_task_and_image_are_stalled_with_their_reasons() {
        let job = job();
        let mut t = target();
        t.group = "backend".into();
        let e = find_task_image(&job, &t).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_TASK_NOT_FOUND);
        assert!(e.to_string().contains("\"backend\""), "{e}");
        assert!(e.to_string().contains("frontend"), "{e}");

        let mut t = target();
        t.task = "worker".into();
        let e = find_task_image(&job, &t).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_TASK_NOT_FOUND);
        assert!(e.to_string().contains("\"worker\"") && e.to_string().contains("\"frontend\""));

        let mut t = target();
        t.task = "sidecar".into();
        let e = find_task_image(&job, &t).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_NO_IMAGE);
        assert!(e.to_string().contains("\"exec\""), "{e}");

        let e = find_task_image(&json!({"TaskGroups": null}), &target()).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_TASK_NOT_FOUND);
        assert!(e.is_stalled());
    }

    #[test]
    fn builds_the_job_url_with_an_encoded_id_and_optional_query() {
        let mut t = target();
        t.job = "a b/c".into();
        t.address = "https://nomad.example.com:4646/prefix/".into();
        let url = job_url(&t).unwrap();
        assert_eq!(
            url.as_str(),
            "https://nomad.example.com:4646/prefix/v1/job/a%20b%2Fc?namespace=apps"
        );
        t.namespace = None;
        t.region = Some("eu".into());
        assert!(
            job_url(&t)
                .unwrap()
                .as_str()
                .ends_with("/v1/job/a%20b%2Fc?region=eu")
        );
        t.region = None;
        assert!(job_url(&t).unwrap().query().is_none());
        t.address = "not a url".into();
        assert_eq!(job_url(&t).unwrap_err().reason(), reasons::INVALID_SPEC);
    }
}
