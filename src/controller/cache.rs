//! What the controller watches and keeps: every ServiceBuild in a reflector store, as much of it
//! as a reconcile reads, and the metadata of build Jobs, only to wake their owners (a reconcile
//! reads its Job from the API server).
//!
//! Both are read without `metadata.managedFields`, and ServiceBuilds without the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation: no reconcile reads them, and
//! at 1000 ServiceBuilds the managed fields were two thirds of the store, and most of a fresh
//! controller's initial lists. They are skipped while the API server's answer is parsed, so not
//! even an initial list holds them. The store still holds the whole spec of a ServiceBuild (the
//! build template makes the Job) and the whole status (a reconcile starts from it and writes it
//! back).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::{Stream, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector::store::Writer};
use kube::{Client, Resource};
use serde::{Deserialize, Deserializer};

use crate::api::Monorepo;
use crate::api::{SERVICEBUILD_LABEL, ServiceBuild, ServiceBuildSpec, ServiceBuildStatus};

/// The annotation `kubectl apply` keeps the whole last applied object in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The API objects the controller watches, in one namespace or all.
pub struct Watches {
    servicebuilds: Api<Watched>,
    jobs: Api<WatchedJob>,
}

impl Watches {
    pub fn new(client: &Client, namespace: Option<&str>) -> Self {
        match namespace {
            Some(ns) => Self {
                servicebuilds: Api::namespaced(client.clone(), ns),
                jobs: Api::namespaced(client.clone(), ns),
            },
            None => Self {
                servicebuilds: Api::all(client.clone()),
                jobs: Api::all(client.clone()),
            },
        }
    }

    /// A controller on ServiceBuilds that owns build Jobs, as `Controller::new(..).owns(..)`
    /// builds it, with ServiceBuilds read as [`Watched`] and Jobs as [`WatchedJob`], and a
    /// ServiceBuild's changes waking a reconcile only as [`wakes`] says. Its store fills as the
    /// watch runs, with every change.
    /// Each event of the ServiceBuild watch is shown to `observe` before the store has it.
    pub fn controller(
        &self,
        observe: impl Fn(&Event<ServiceBuild>) + Send + 'static,
    ) -> Controller<ServiceBuild> {
        let (store, writer) = reflector::store();
        let servicebuilds = servicebuild_events(
            watcher::watcher(
                self.servicebuilds.clone(),
                watcher::Config::default().any_semantic(),
            ),
            writer,
            observe,
        )
        .predicate_filter(wakes, PredicateConfig::default());
        let jobs = watcher::watcher(
            self.jobs.clone(),
            watcher::Config::default().labels(SERVICEBUILD_LABEL),
        )
        .touched_objects();
        Controller::for_stream(servicebuilds, store).owns_stream(jobs)
    }
}

/// The ServiceBuilds of `events`, kept in `writer`'s store as they arrive; each event is shown
/// to `observe` first.
fn servicebuild_events(
    events: impl Stream<Item = watcher::Result<Event<Watched>>> + Send + 'static,
    writer: Writer<ServiceBuild>,
    observe: impl Fn(&Event<ServiceBuild>) + Send + 'static,
) -> impl Stream<Item = watcher::Result<ServiceBuild>> + Send + 'static {
    events
        .map_ok(|event| match event {
            Event::Apply(sb) => Event::Apply(sb.0),
            Event::Delete(sb) => Event::Delete(sb.0),
            Event::Init => Event::Init,
            Event::InitApply(sb) => Event::InitApply(sb.0),
            Event::InitDone => Event::InitDone,
        })
        .inspect_ok(observe)
        .reflect(writer)
        .applied_objects()
}

/// The Monorepo the ServiceBuild of `event` follows, if it follows one.
pub fn followed(event: &Event<ServiceBuild>) -> Option<ObjectRef<Monorepo>> {
    let sb = match event {
        Event::Apply(sb) | Event::InitApply(sb) | Event::Delete(sb) => sb,
        Event::Init | Event::InitDone => return None,
    };
    let name = &sb.spec.source.monorepo_ref.as_ref()?.name;
    Some(ObjectRef::new(name).within(sb.metadata.namespace.as_deref()?))
}

/// What of a ServiceBuild wakes a reconcile when it changes: its spec (by its generation), its
/// annotations (the rebuild annotation) and its deletion. Not its status: every status write
/// of the controller's own would wake one more reconcile with nothing to do, since each
/// reconcile ends by scheduling the next look itself (a requeue), and Job changes wake their
/// owner. A ServiceBuild seen for the first time, or not seen for an hour, always wakes one.
fn wakes(sb: &ServiceBuild) -> Option<u64> {
    let meta = &sb.metadata;
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond())
        .hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    Some(hasher.finish())
}

/// A ServiceBuild as the watch reads it: without managed fields or the last applied
/// configuration (see the module docs).
#[derive(Clone, Debug)]
pub struct Watched(pub ServiceBuild);

impl Resource for Watched {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ServiceBuild::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        ServiceBuild::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        ServiceBuild::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        ServiceBuild::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

impl<'de> Deserialize<'de> for Watched {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Read {
            metadata: Meta,
            spec: ServiceBuildSpec,
            status: Option<ServiceBuildStatus>,
        }
        let Read {
            metadata,
            spec,
            status,
        } = Read::deserialize(deserializer)?;
        Ok(Self(ServiceBuild {
            metadata: metadata.into(),
            spec,
            status,
        }))
    }
}

/// A Job's metadata, read with the API server's metadata-only media type (as
/// `Controller::owns` reads it) and without managed fields.
#[derive(Clone, Debug)]
pub struct WatchedJob(ObjectMeta);

impl Resource for WatchedJob {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Job::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Job::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Job::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Job::plural(dt)
    }
    fn metadata_api() -> bool {
        true
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0
    }
}

impl<'de> Deserialize<'de> for WatchedJob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Read {
            metadata: Meta,
        }
        let Read { metadata } = Read::deserialize(deserializer)?;
        Ok(Self(metadata.into()))
    }
}

/// `ObjectMeta` without `managedFields`: serde skips the fields a struct does not name without
/// building them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<Meta> for ObjectMeta {
    fn from(meta: Meta) -> Self {
        let mut annotations = meta.annotations;
        if let Some(annotations) = annotations.as_mut() {
            annotations.remove(LAST_APPLIED_ANNOTATION);
        }
        ObjectMeta {
            annotations,
            creation_timestamp: meta.creation_timestamp,
            deletion_grace_period_seconds: meta.deletion_grace_period_seconds,
            deletion_timestamp: meta.deletion_timestamp,
            finalizers: meta.finalizers,
            generate_name: meta.generate_name,
            generation: meta.generation,
            labels: meta.labels,
            managed_fields: None,
            name: meta.name,
            namespace: meta.namespace,
            owner_references: meta.owner_references,
            resource_version: meta.resource_version,
            self_link: meta.self_link,
            uid: meta.uid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    fn servicebuild() -> serde_json::Value {
        json!({
            "apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild",
            "metadata": {
                "name": "banana", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2025-01-02T03:04:05Z",
                "labels": {"team": "fruit"},
                "annotations": {
                    "monoship.dev/rebuild": "2",
                    LAST_APPLIED_ANNOTATION: "{\"a\":\"whole object\"}"
                },
                "finalizers": ["example.org/keep"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-0"}],
                "managedFields": [{
                    "manager": "kubectl", "operation": "Apply", "apiVersion": "monoship.dev/v1alpha1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:source": {}}}
                }]
            },
            "spec": {
                "source": {"repository": "file:///r", "revision": "1".repeat(40)},
                "build": {"template": {"spec": {"containers": [{"name": "b", "image": "x"}]}}},
                "image": {"repository": "r.example/x"}
            },
            "status": {"phase": "Promoted", "observedGeneration": 3}
        })
    }

    /// Everything a reconcile reads is there; the managed fields and the last applied
    /// configuration are not.
    #[test]
    fn a_watched_servicebuild_is_the_servicebuild_without_what_no_reconcile_reads() {
        let value = servicebuild();
        let full: ServiceBuild = serde_json::from_value(value.clone()).unwrap();
        let Watched(watched) = serde_json::from_value(value).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        assert_eq!(watched.metadata.managed_fields, None);
        let mut expected = full.clone();
        expected.metadata.managed_fields = None;
        if let Some(annotations) = expected.metadata.annotations.as_mut() {
            annotations.remove(LAST_APPLIED_ANNOTATION);
        }
        assert_eq!(
            serde_json::to_value(&watched).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
        assert_eq!(
            watched.annotations().get("monoship.dev/rebuild"),
            Some(&"2".to_owned())
        );
        assert_eq!(
            Watched::url_path(&(), Some("shop")),
            ServiceBuild::url_path(&(), Some("shop"))
        );
    }

    /// A status write wakes no reconcile; a spec change, the rebuild annotation, a deletion
    /// and a finalizer do.
    #[test]
    fn only_what_a_reconcile_acts_on_wakes_one() {
        let Watched(sb) = serde_json::from_value(servicebuild()).unwrap();
        let key = |sb: &ServiceBuild| wakes(sb).unwrap();
        let mut status = sb.clone();
        status.status = None;
        status.metadata.resource_version = Some("43".into());
        assert_eq!(key(&status), key(&sb));
        let mut changes = Vec::new();
        let mut spec = sb.clone();
        spec.metadata.generation = Some(4);
        changes.push(spec);
        let mut rebuild = sb.clone();
        if let Some(a) = rebuild.metadata.annotations.as_mut() {
            a.insert("monoship.dev/rebuild".into(), "3".into());
        }
        changes.push(rebuild);
        let mut deleted = sb.clone();
        deleted.metadata.deletion_timestamp = sb.metadata.creation_timestamp.clone();
        changes.push(deleted);
        let mut finalized = sb.clone();
        finalized.metadata.finalizers = None;
        changes.push(finalized);
        for changed in &changes {
            assert_ne!(key(changed), key(&sb));
        }
    }

    /// A Job is read as its metadata only, from a full Job or from the metadata-only form.
    #[test]
    fn a_watched_job_is_its_metadata_without_managed_fields() {
        let metadata = json!({
            "name": "banana-1", "namespace": "shop", "uid": "j-1", "resourceVersion": "7",
            "labels": {SERVICEBUILD_LABEL: "banana"},
            "ownerReferences": [{"apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild",
                                 "name": "banana", "uid": "u-1", "controller": true}],
            "managedFields": [{"manager": "monoship", "operation": "Update",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
        });
        let full = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
                          "spec": {"template": {"spec": {"containers": [{"name": "b"}]}}},
                          "status": {"succeeded": 1}});
        let partial = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                             "metadata": metadata});
        for value in [full, partial] {
            let job: WatchedJob = serde_json::from_value(value).unwrap();
            assert_eq!(job.meta().managed_fields, None);
            assert_eq!(job.meta().name.as_deref(), Some("banana-1"));
            assert_eq!(job.owner_references()[0].uid, "u-1");
        }
        assert!(WatchedJob::metadata_api());
        assert_eq!(
            WatchedJob::url_path(&(), Some("shop")),
            Job::url_path(&(), Some("shop"))
        );
    }

    #[test]
    fn a_servicebuild_without_status_or_annotations_is_read() {
        let mut value = servicebuild();
        value.as_object_mut().unwrap().remove("status");
        value["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        let Watched(watched) = serde_json::from_value(value).unwrap();
        assert_eq!(watched.status, None);
        assert_eq!(watched.metadata.annotations, None);
        assert_eq!(watched.metadata.name.as_deref(), Some("banana"));
    }
}
