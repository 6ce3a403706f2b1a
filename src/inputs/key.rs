//! The input key of a service at a revision: a digest over what its build is a function of.
//! Pure: the git object ids come from [`super::git`].
//!
//! The key is the sha256 of this text (lines end with `\n`):
//!
//! ```text
//! monoship-inputs-v1
//! image.repository <spec.image.repository>
//! build.template <sha256 of spec.build.template as JSON>
//! path <path> tree <id>      (a directory)
//! path <path> blob <id>      (a file or a symlink)
//! path <path> absent         (not in the commit)
//! ```
//!
//! with one `path` line per entry of `source.paths`, normalized (no `./`, no trailing `/`) and
//! sorted; with no paths, one line for the whole tree, `path . tree <root tree id>`. Git ids are
//! content addresses: an equal id means equal content under that path.

use sha2::{Digest, Sha256};

use super::git::PathObject;
use crate::api::ServiceBuildSpec;

/// First line of the keyed text; a new format gets a new version.
pub const KEY_VERSION: &str = "monoship-inputs-v1";
/// How many paths a message names before it counts the rest.
const NAMED_PATHS: usize = 6;

/// The input key of one build, and the objects it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputKey {
    /// `sha256:` and 64 hex digits.
    pub key: String,
    /// Each normalized path and the object found there.
    pub paths: Vec<(String, PathObject)>,
}

impl InputKey {
    /// The inputs compared, for messages: `services/orange (tree 1a2b3c4d5e6f), go.mod (blob …)`.
    pub fn describe(&self) -> String {
        let mut named: Vec<String> = self
            .paths
            .iter()
            .take(NAMED_PATHS)
            .map(|(path, object)| match object {
                PathObject::Tree(id) => format!("{path} (tree {})", short_id(id)),
                PathObject::Blob(id) => format!("{path} (blob {})", short_id(id)),
                PathObject::Submodule(id) => format!("{path} (submodule {})", short_id(id)),
                PathObject::Absent => format!("{path} (absent)"),
            })
            .collect();
        if self.paths.len() > NAMED_PATHS {
            named.push(format!("{} more", self.paths.len() - NAMED_PATHS));
        }
        format!(
            "{}, the build template and the image repository",
            named.join(", ")
        )
    }
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The paths to read for `paths` (as in `source.paths`): normalized, sorted, without
/// duplicates; `.` (the whole tree) when empty. `None` names the first path that leaves the
/// repository (admission refuses those; this guards objects admitted before the rule).
pub fn normalize(paths: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(paths.len().max(1));
    for path in paths {
        let trimmed = path.trim_end_matches('/');
        let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
        let segments: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
        if path.starts_with('/') || segments.contains(&"..") {
            return Err(format!(
                "source.paths entry {path:?} is not a path inside the repository"
            ));
        }
        let normalized: Vec<&str> = segments.into_iter().filter(|s| *s != ".").collect();
        out.push(if normalized.is_empty() {
            ".".to_owned()
        } else {
            normalized.join("/")
        });
    }
    if out.is_empty() {
        out.push(".".to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The input key of `spec` for the objects found at its normalized paths. A submodule is not
/// content of this repository: its inputs cannot be known, and the build runs.
pub fn input_key(
    spec: &ServiceBuildSpec,
    objects: Vec<(String, PathObject)>,
) -> Result<InputKey, String> {
    if let Some((path, _)) = objects
        .iter()
        .find(|(_, o)| matches!(o, PathObject::Submodule(_)))
    {
        return Err(format!(
            "{path} is a git submodule, whose content is not in this repository"
        ));
    }
    let template = serde_json::to_vec(&spec.build.template).unwrap_or_default();
    let mut text = format!(
        "{KEY_VERSION}\nimage.repository {}\nbuild.template sha256:{}\n",
        spec.image.repository,
        hex(&Sha256::digest(&template))
    );
    for (path, object) in &objects {
        let line = match object {
            PathObject::Tree(id) => format!("path {path} tree {id}\n"),
            PathObject::Blob(id) => format!("path {path} blob {id}\n"),
            PathObject::Absent | PathObject::Submodule(_) => format!("path {path} absent\n"),
        };
        text.push_str(&line);
    }
    Ok(InputKey {
        key: format!("sha256:{}", hex(&Sha256::digest(text.as_bytes()))),
        paths: objects,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures::Fixture;

    #[test]
    fn paths_are_normalized_sorted_and_kept_inside_the_repository() {
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(normalize(&[]).unwrap(), vec!["."]);
        assert_eq!(
            normalize(&paths(&["./services/b/", "go.mod", "services/b", "."])).unwrap(),
            vec![".", "go.mod", "services/b"]
        );
        assert_eq!(normalize(&paths(&["a//b/./c"])).unwrap(), vec!["a/b/c"]);
        assert!(normalize(&paths(&["../x"])).is_err());
        assert!(normalize(&paths(&["a/../../x"])).is_err());
        assert!(normalize(&paths(&["/etc"])).is_err());
    }

    #[test]
    fn the_key_is_the_documented_sha256_and_moves_with_every_input() {
        let spec = Fixture::new().spec;
        let tree = |id: &str| ("services/banana".to_owned(), PathObject::Tree(id.into()));
        let a = input_key(&spec, vec![tree("aa")]).unwrap();
        let template = serde_json::to_vec(&spec.build.template).unwrap();
        let text = format!(
            "monoship-inputs-v1\nimage.repository {}\nbuild.template sha256:{}\npath services/banana tree aa\n",
            spec.image.repository,
            hex(&Sha256::digest(&template))
        );
        assert_eq!(
            a.key,
            format!("sha256:{}", hex(&Sha256::digest(text.as_bytes())))
        );
        assert_eq!(a, input_key(&spec, vec![tree("aa")]).unwrap(), "stable");
        assert_ne!(a.key, input_key(&spec, vec![tree("ab")]).unwrap().key);
        let absent = ("services/banana".to_owned(), PathObject::Absent);
        assert_ne!(a.key, input_key(&spec, vec![absent]).unwrap().key);
        let mut other = spec.clone();
        other.image.repository.push_str("-2");
        assert_ne!(a.key, input_key(&other, vec![tree("aa")]).unwrap().key);
        let mut other = spec.clone();
        if let Some(pod) = other.build.template.spec.as_mut() {
            pod.containers[0].args = Some(vec!["--release".into()]);
        }
        assert_ne!(a.key, input_key(&other, vec![tree("aa")]).unwrap().key);
        let submodule = ("vendor/x".to_owned(), PathObject::Submodule("cc".into()));
        let refused = input_key(&spec, vec![tree("aa"), submodule]).unwrap_err();
        assert!(refused.contains("vendor/x is a git submodule"), "{refused}");
        assert_eq!(
            a.describe(),
            "services/banana (tree aa), the build template and the image repository"
        );
    }
}
