//! Merging for strategic-merge patches and server-side apply, plus a simplified model of
//! `metadata.managedFields` (field sets in the `FieldsV1` format).
//!
//! The merge rules are a small, fixed approximation of the Kubernetes schema: lists of maps
//! under well-known field names are merged by key (`containers` by `name`, `conditions` by
//! `type`, ...); every other list is replaced as a whole.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A path to a leaf field, as `FieldsV1` elements: `f:<field>` or `k:{"name":"x"}`.
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// The merge key of the list stored under `field`, judged from one of its items.
pub fn merge_key(field: &str, item: &Value) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "volumeDevices"
        | "imagePullSecrets"
        | "envFrom" => "name",
        "ports" => {
            if item.get("containerPort").is_some() {
                "containerPort"
            } else {
                "port"
            }
        }
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    };
    item.get(key).map(|_| key)
}

/// Is this list a keyed list (all items are maps that carry the merge key)?
fn list_key(field: Option<&str>, items: &[Value]) -> Option<&'static str> {
    let field = field?;
    let first = items.first()?;
    let key = merge_key(field, first)?;
    items
        .iter()
        .all(|i| i.is_object() && i.get(key).is_some())
        .then_some(key)
}

/// Merge `patch` into `target` with strategic-merge semantics: maps merge recursively,
/// `null` deletes, keyed lists merge item by item (an item with `"$patch": "delete"` removes
/// its match), other values replace.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    merge_value(target, patch, None);
}

fn merge_value(target: &mut Value, patch: &Value, field: Option<&str>) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if k.starts_with('$') {
                        continue;
                    }
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_value(t.entry(k.clone()).or_insert(Value::Null), v, Some(k));
                    }
                }
            }
        }
        Value::Array(items) => {
            let key = list_key(field, items);
            match (key, target) {
                (Some(key), Value::Array(existing))
                    if existing.iter().all(|i| i.get(key).is_some()) =>
                {
                    for item in items {
                        let kv = &item[key];
                        let pos = existing.iter().position(|e| &e[key] == kv);
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                existing.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => merge_value(&mut existing[i], item, None),
                            (None, false) => {
                                let mut fresh = Value::Null;
                                merge_value(&mut fresh, item, None);
                                existing.push(fresh);
                            }
                        }
                    }
                }
                (_, target) => {
                    let mut fresh = Vec::with_capacity(items.len());
                    for item in items {
                        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                            continue;
                        }
                        let mut v = Value::Null;
                        merge_value(&mut v, item, None);
                        fresh.push(v);
                    }
                    *target = Value::Array(fresh);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Element for a keyed list item: `k:{"name":"x"}`.
fn key_element(key: &str, value: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    format!("k:{}", Value::Object(m))
}

/// All leaf paths of a (partial) object.
pub fn leaf_paths(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    collect(v, None, &mut prefix, &mut out);
    out
}

/// Add the leaf paths of `v`, found under `field` at `prefix`, to `out`.
pub fn collect(v: &Value, field: Option<&str>, prefix: &mut FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(format!("f:{k}"));
                collect(c, Some(k), prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match list_key(field, items) {
            Some(key) => {
                for item in items {
                    prefix.push(key_element(key, &item[key]));
                    collect(item, None, prefix, out);
                    prefix.pop();
                }
            }
            None => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at a field path, if present.
pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn parse_key(el: &str) -> Option<Map<String, Value>> {
    let json = el.strip_prefix("k:")?;
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let key = parse_key(el)?;
    cur.as_array()?.iter().find(|i| item_matches(i, &key))
}

/// Remove the field at `path`. Removing the merge key of a list item removes the item.
pub fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    // If the leaf is the key field of a keyed list item, drop the whole item.
    if let (Some(item_el), Some(f)) = (parents.last(), last.strip_prefix("f:"))
        && let Some(key) = parse_key(item_el)
        && key.contains_key(f)
    {
        let list_path = &parents[..parents.len() - 1];
        if let Some(Value::Array(items)) = get_path_mut(v, list_path) {
            items.retain(|i| !item_matches(i, &key));
        }
        return;
    }
    let Some(parent) = get_path_mut(v, parents) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Value::Object(m) = parent {
            m.remove(f);
        }
    } else if let (Some(key), Value::Array(items)) = (parse_key(last), parent) {
        items.retain(|i| !item_matches(i, &key));
    }
}

fn get_path_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for el in path {
        cur = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)?
        } else {
            let key = parse_key(el)?;
            cur.as_array_mut()?
                .iter_mut()
                .find(|i| item_matches(i, &key))?
        };
    }
    Some(cur)
}

/// Render a field set in the nested `FieldsV1` JSON form.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let next = cur
                .entry(el.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            match next {
                Value::Object(m) => cur = m,
                _ => unreachable!("just made an object"),
            }
        }
    }
    Value::Object(root)
}

/// Read back a `FieldsV1` tree into leaf paths (`.` markers are ignored).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    walk_v1(v, &mut prefix, &mut out);
    out
}

fn walk_v1(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let children: Vec<_> = v
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, c) in children {
        prefix.push(k.clone());
        walk_v1(c, prefix, out);
        prefix.pop();
    }
}

/// Human readable form of a path, like `.spec.containers[name="app"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(key) = parse_key(el) {
            let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", inner.join(",")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyed_lists_merge_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}], "args": ["x"]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}], "args": ["y"]}}),
        );
        assert_eq!(
            t,
            json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "3"}, {"name": "c", "image": "4"}], "args": ["y"]}})
        );
        strategic_merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(t["spec"]["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn field_sets_round_trip_and_remove() {
        let v = json!({"spec": {"containers": [{"name": "a", "image": "1"}], "replicas": 2}});
        let set = leaf_paths(&v);
        assert_eq!(set.len(), 3);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        let image: FieldPath = vec![
            "f:spec".into(),
            "f:containers".into(),
            r#"k:{"name":"a"}"#.into(),
            "f:image".into(),
        ];
        assert!(set.contains(&image));
        assert_eq!(get_path(&v, &image), Some(&json!("1")));
        let mut w = v.clone();
        let name: FieldPath = vec![
            "f:spec".into(),
            "f:containers".into(),
            r#"k:{"name":"a"}"#.into(),
            "f:name".into(),
        ];
        remove_path(&mut w, &name);
        assert_eq!(w, json!({"spec": {"containers": [], "replicas": 2}}));
        assert_eq!(display_path(&image), r#".spec.containers[name="a"].image"#);
    }
}
