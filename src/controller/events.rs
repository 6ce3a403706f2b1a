//! Events (events.k8s.io/v1) published the way kube-runtime's `Recorder` publishes them, keeping
//! a few dozen bytes per series instead of every Event whole.
//!
//! kube's Recorder folds a repeat of an Event (same object, reason, type and action) within six
//! minutes of the last one into a series on the first Event: a PATCH of its `series` instead of
//! a new Event. To do so it keeps every Event of the last six minutes whole (over 1 KiB inline
//! each, before its strings) and scans them all on every publish; at 1000 ServiceBuilds that was
//! the largest part of the controller's heap. This recorder folds the same repeats into the same
//! series and keeps, per series, the first Event's name, its count and when it was last seen, for
//! at most [`MAX_SERIES`] series: past that, the series seen longest ago are forgotten, and
//! their next repeat is a new Event.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::pipeline::events::Note;

/// A repeat within this time of the last one joins its series (kube's and client-go's value).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// At most this many series are remembered.
pub const MAX_SERIES: usize = 4096;
/// The action of every Event.
const ACTION: &str = "Reconcile";

/// What makes Events one series: the object they are about, their reason and their type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    reason: &'static str,
    warning: bool,
}

impl Key {
    fn new(note: &Note, regarding: &ObjectReference) -> Self {
        Self {
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
            reason: note.reason,
            warning: note.warning,
        }
    }
}

/// A series: the name of its first Event, how many Events it counts, when the last was seen.
#[derive(Debug)]
struct Seen {
    event: String,
    count: i32,
    last: Instant,
}

/// The series seen in the last [`SERIES_WINDOW`], at most `limit` of them.
#[derive(Debug)]
struct Series {
    seen: HashMap<Key, Seen>,
    limit: usize,
    pruned: Instant,
}

impl Series {
    fn new(limit: usize, now: Instant) -> Self {
        Self {
            seen: HashMap::new(),
            limit,
            pruned: now,
        }
    }

    /// The Event that an Event of `key` published at `now` repeats, and the series' count with
    /// it; `None` when it starts a new series.
    fn repeat(&self, key: &Key, now: Instant) -> Option<(String, i32)> {
        self.seen
            .get(key)
            .filter(|s| now.saturating_duration_since(s.last) < SERIES_WINDOW)
            .map(|s| (s.event.clone(), s.count.saturating_add(1)))
    }

    /// Remember that Event `event` of `key` now counts `count`. Series past the window are
    /// dropped once per window; at the limit, the quarter seen longest ago goes (a quarter at
    /// once, so a busy controller does not scan every series for each new one).
    fn remember(&mut self, key: Key, event: String, count: i32, now: Instant) {
        if now.saturating_duration_since(self.pruned) >= SERIES_WINDOW {
            self.seen
                .retain(|_, s| now.saturating_duration_since(s.last) < SERIES_WINDOW);
            self.seen.shrink_to_fit();
            self.pruned = now;
        }
        if self.seen.len() >= self.limit && !self.seen.contains_key(&key) {
            let mut seen: Vec<Instant> = self.seen.values().map(|s| s.last).collect();
            let quarter = (seen.len() / 4).max(1);
            let (_, cutoff, _) = seen.select_nth_unstable(quarter - 1);
            let cutoff = *cutoff;
            self.seen.retain(|_, s| s.last > cutoff);
        }
        let last = now;
        self.seen.insert(key, Seen { event, count, last });
    }
}

/// Publishes Events about objects as one controller (`reportingController`) and replica
/// (`reportingInstance`).
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<Series>,
}

impl Recorder {
    /// `instance` defaults to `controller`, as with kube's Recorder.
    pub fn new(client: Client, controller: String, instance: Option<String>) -> Self {
        Self::with_limit(client, controller, instance, MAX_SERIES)
    }

    fn with_limit(
        client: Client,
        controller: String,
        instance: Option<String>,
        limit: usize,
    ) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| controller.clone()),
            controller,
            series: Mutex::new(Series::new(limit, Instant::now())),
        }
    }

    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish `note` about `regarding`: a new Event, or the next count of the series it
    /// repeats. Events of cluster-scoped objects go to `default`.
    pub async fn publish(&self, note: &Note, regarding: &ObjectReference) -> kube::Result<()> {
        let key = Key::new(note, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = Timestamp::now();
        let repeat = self.series().repeat(&key, Instant::now());
        let (event, count) = match repeat {
            Some((event, count)) => {
                let series =
                    json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
                api.patch(&event, &PatchParams::default(), &Patch::Merge(&series))
                    .await?;
                (event, count)
            }
            None => {
                let event = self.event(note, regarding, now);
                api.create(&PostParams::default(), &event).await?;
                (event.metadata.name.unwrap_or_default(), 1)
            }
        };
        self.series().remember(key, event, count, Instant::now());
        Ok(())
    }

    /// A new Event, named and filled in as kube's Recorder does.
    fn event(&self, note: &Note, regarding: &ObjectReference, now: Timestamp) -> Event {
        let name = regarding.name.as_deref().unwrap_or(&self.controller);
        Event {
            action: Some(ACTION.to_owned()),
            reason: Some(note.reason.to_owned()),
            note: Some(note.message.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.to_owned()),
            ..Event::default()
        }
    }

    /// How many series are remembered (for tests).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.series().seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoship_testkit::apiserver::ApiServer;

    fn note(reason: &'static str, message: &str) -> Note {
        Note {
            warning: false,
            reason,
            message: message.to_owned(),
        }
    }

    fn regarding(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("monoship.dev/v1alpha1".into()),
            kind: Some("ServiceBuild".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn key(name: &str, reason: &'static str) -> Key {
        Key::new(&note(reason, ""), &regarding(name))
    }

    #[test]
    fn a_repeat_within_the_window_joins_its_series() {
        let start = Instant::now();
        let mut series = Series::new(10, start);
        assert_eq!(series.repeat(&key("a", "Promoted"), start), None);
        series.remember(key("a", "Promoted"), "a.1".into(), 1, start);
        let soon = start + Duration::from_secs(60);
        assert_eq!(
            series.repeat(&key("a", "Promoted"), soon),
            Some(("a.1".into(), 2))
        );
        series.remember(key("a", "Promoted"), "a.1".into(), 2, soon);
        assert_eq!(
            series.repeat(&key("a", "Promoted"), soon),
            Some(("a.1".into(), 3))
        );
        // Another reason, or another object, is another series.
        assert_eq!(series.repeat(&key("a", "TagMoved"), soon), None);
        assert_eq!(series.repeat(&key("b", "Promoted"), soon), None);
        // The window counts from the last Event of the series.
        let late = soon + SERIES_WINDOW;
        assert_eq!(series.repeat(&key("a", "Promoted"), late), None);
    }

    #[test]
    fn series_are_bounded_and_age_out() {
        let start = Instant::now();
        let mut series = Series::new(3, start);
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            series.remember(key(name, "Promoted"), name.into(), 1, at);
        }
        assert_eq!(series.seen.len(), 3);
        let now = start + Duration::from_secs(10);
        assert_eq!(
            series.repeat(&key("a", "Promoted"), now),
            None,
            "the oldest went"
        );
        assert!(series.repeat(&key("d", "Promoted"), now).is_some());
        // A window later, everything older than the window is dropped.
        let later = start + SERIES_WINDOW + Duration::from_secs(5);
        series.remember(key("e", "Promoted"), "e".into(), 1, later);
        assert_eq!(series.seen.len(), 1);
    }

    /// Against an API server: the first Event is created, a repeat patches its series, as
    /// kube's Recorder does.
    #[tokio::test]
    async fn repeats_patch_the_first_event() {
        crate::install_crypto_provider();
        let api = ApiServer::start().await;
        let recorder = Recorder::with_limit(api.client(), "monoship".into(), None, 2);
        let sb = regarding("banana");
        recorder
            .publish(&note("TargetPinned", "pinned the Deployment"), &sb)
            .await
            .unwrap();
        recorder
            .publish(&note("TargetPinned", "pinned the Nomad job"), &sb)
            .await
            .unwrap();
        recorder
            .publish(&note("Promoted", "promoted"), &sb)
            .await
            .unwrap();
        let verbs: Vec<String> = api
            .writes()
            .iter()
            .filter(|w| w.resource == "events")
            .map(|w| w.verb.clone())
            .collect();
        assert_eq!(verbs, ["create", "patch", "create"]);
        let events = api.list_objects("events.k8s.io", "events", Some("shop"));
        assert_eq!(events.len(), 2);
        let pinned = events
            .iter()
            .find(|e| e["reason"] == "TargetPinned")
            .unwrap();
        assert_eq!(pinned["series"]["count"], 2);
        assert_eq!(pinned["note"], "pinned the Deployment");
        assert_eq!(pinned["reportingController"], "monoship");
        assert_eq!(pinned["reportingInstance"], "monoship");
        assert_eq!(pinned["action"], "Reconcile");
        assert_eq!(pinned["type"], "Normal");
        assert_eq!(pinned["regarding"]["name"], "banana");
        assert_eq!(recorder.remembered(), 2);
    }
}
