//! Containers as local processes, shared by the [`crate::jobrunner`] (Jobs on the in-process
//! API server) and the envtest [`crate::envtest::kubelet`] (pods on a real one).
//!
//! A pod's init containers run in order, then its **first container**, each one's `command` +
//! `args` as a local process (no image, no shell unless the command is one), with the
//! environment made of `PATH` and `HOME` of the test process, the container's `env` entries
//! that have a literal `value` (`$(VAR)` references in command/args are expanded from those),
//! `MONOSHIP_WORKSPACE` when the run has a workspace, then the run's `extra_env` (which wins on
//! clashes). Each container's `terminationMessagePath` (default `/dev/termination-log`) is a
//! temporary file of the run's own, which the container sees wherever its environment or
//! arguments name the path (as `$MONOSHIP_DIGEST_FILE` does); what it wrote there, at most 4096
//! bytes, is its termination message. The first failure ends the run. Output lines go to stderr (see
//! [`crate::jobrunner::echo_to_stderr`]) and to `tracing`.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

static ECHO: AtomicBool = AtomicBool::new(true);

pub(crate) fn set_echo(on: bool) {
    ECHO.store(on, Ordering::Relaxed);
}

macro_rules! echo {
    ($($arg:tt)*) => {
        if $crate::process::echoing() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use echo;

pub(crate) fn echoing() -> bool {
    ECHO.load(Ordering::Relaxed)
}

/// Where and how a pod's containers run.
pub(crate) struct Run<'a> {
    /// The working directory.
    pub workdir: &'a Path,
    /// Exported as `MONOSHIP_WORKSPACE` when set (the pod's `/workspace` volume).
    pub workspace: Option<&'a Path>,
    pub extra_env: &'a [(String, String)],
    /// Prefix of output lines, e.g. `[job ns/name]`.
    pub label: &'a str,
    /// Processes still running then are killed.
    pub deadline: Option<tokio::time::Instant>,
}

/// Why a container stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The process exited; `detail` is how (`exit status: 1`).
    Exited,
    /// It could not start (no command, no such program).
    StartError,
    /// The run's deadline killed it.
    Deadline,
}

/// How one container ended, with what a kubelet reports in `state.terminated`.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    pub name: String,
    pub stop: Stop,
    /// `0` on success; `128 + signal` when killed by one.
    pub exit_code: i32,
    pub detail: String,
    /// What the container wrote to its `terminationMessagePath` (at most 4096 bytes), or with
    /// `terminationMessagePolicy: FallbackToLogsOnError` and a failure, its last output.
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

impl Exit {
    pub fn succeeded(&self) -> bool {
        self.stop == Stop::Exited && self.exit_code == 0
    }
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Expand `$(VAR)` references like the kubelet does for command and args.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// Run the init containers in order, then the first container; the first failure ends the run.
/// Returns each container that ran, in order; `None` when cancelled.
pub(crate) async fn run_pod(
    pod: &PodSpec,
    run: &Run<'_>,
    cancel: &mut oneshot::Receiver<()>,
) -> Option<Vec<Exit>> {
    let steps = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.first());
    let messages = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!("no directory for termination messages: {e}");
            return Some(Vec::new());
        }
    };
    let mut exits = Vec::new();
    for container in steps {
        let message_file = local_message_file(messages.path(), container);
        let exit = run_container(container, run, &message_file, cancel).await?;
        let ok = exit.succeeded();
        exits.push(exit);
        if !ok {
            break;
        }
    }
    Some(exits)
}

const MESSAGE_LIMIT: u64 = 4096;
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

fn message_path(container: &Container) -> &str {
    container
        .termination_message_path
        .as_deref()
        .unwrap_or("/dev/termination-log")
}

/// Where a container's `terminationMessagePath` is on this machine: a file of the run's own,
/// created empty before the container starts (a kubelet mounts such a file at the path; nothing
/// is ever written under `/dev` here). The container's environment and arguments see this file
/// wherever they name the path.
fn local_message_file(dir: &Path, container: &Container) -> std::path::PathBuf {
    let file = dir.join(format!("{}.termination-log", container.name));
    if let Err(e) = std::fs::write(&file, b"") {
        tracing::warn!("cannot create {}: {e}", file.display());
    }
    file
}

/// The termination message as a kubelet reads it: the file at `terminationMessagePath` (here
/// `file`), at most 4096 bytes; or with `terminationMessagePolicy: FallbackToLogsOnError` and a
/// failure, the end of the output.
fn termination_message(
    container: &Container,
    file: &Path,
    failed: bool,
    output: &Mutex<VecDeque<String>>,
) -> Option<String> {
    use std::io::Read as _;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(file) {
        let mut bytes = Vec::new();
        let _ = file.take(MESSAGE_LIMIT).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if text.is_empty() && failed && fallback {
        let lines = lock(output);
        let mut tail = lines.iter().cloned().collect::<Vec<_>>().join("\n");
        if tail.len() > FALLBACK_BYTES {
            let mut cut = tail.len() - FALLBACK_BYTES;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail = tail.split_off(cut);
        }
        text = tail;
    }
    (!text.is_empty()).then_some(text)
}

/// `containerStatuses` entries for `containers` as a kubelet reports them: `terminated` (exit
/// code, reason `Completed`/`Error`/`StartError`, times, the termination message) for those
/// that ran, `waiting` for the others.
pub(crate) fn container_statuses(containers: &[Container], exits: &[Exit]) -> serde_json::Value {
    use serde_json::json;
    containers
        .iter()
        .map(|c| {
            let state = match exits.iter().find(|e| e.name == c.name) {
                Some(exit) => {
                    let reason = match (exit.succeeded(), &exit.stop) {
                        (true, _) => "Completed",
                        (false, Stop::StartError) => "StartError",
                        (false, _) => "Error",
                    };
                    let mut terminated = json!({
                        "exitCode": exit.exit_code, "reason": reason,
                        "startedAt": exit.started_at, "finishedAt": exit.finished_at,
                        "containerID": format!("local://{}", c.name)
                    });
                    if let Some(message) = &exit.message {
                        terminated["message"] = json!(message);
                    }
                    json!({"terminated": terminated})
                }
                None => json!({"waiting": {"reason": "PodInitializing"}}),
            };
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                   "ready": false, "restartCount": 0, "started": false, "state": state})
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run one container's command; `None` when cancelled (the process is killed).
async fn run_container(
    container: &Container,
    run: &Run<'_>,
    message_file: &Path,
    cancel: &mut oneshot::Receiver<()>,
) -> Option<Exit> {
    let label = format!("{}[{}]", run.label, container.name);
    let label = label.as_str();
    let started_at = now();
    // The container sees its termination message file wherever it names the path.
    let (path, local) = (message_path(container), message_file.to_string_lossy());
    let mounted = |value: &str| value.replace(path, &local);
    let exit = |stop: Stop, exit_code: i32, detail: String, message: Option<String>| Exit {
        name: container.name.clone(),
        stop,
        exit_code,
        detail,
        message,
        started_at: started_at.clone(),
        finished_at: now(),
    };
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_deref().map(|v| (e.name.clone(), mounted(v))))
        .collect();
    let argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|a| expand(&mounted(a), &env))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        let detail = format!(
            "container {} has no command (images are not run)",
            container.name
        );
        return Some(exit(Stop::StartError, 128, detail, None));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .current_dir(run.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for k in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(env.iter().cloned());
    if let Some(workspace) = run.workspace {
        cmd.env("MONOSHIP_WORKSPACE", workspace);
    }
    cmd.envs(run.extra_env.iter().cloned());
    echo!("{label} running {argv:?} in {}", run.workdir.display());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let detail = format!("cannot start {program:?}: {e}");
            return Some(exit(Stop::StartError, 128, detail, None));
        }
    };
    let output = Arc::new(Mutex::new(VecDeque::new()));
    let mut readers = Vec::new();
    for (stream, tag) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            "stdout",
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            "stderr",
        ),
    ] {
        if let Some(stream) = stream {
            let label = label.to_string();
            let output = output.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!("{label} {tag}: {line}");
                    echo!("{label} {tag}: {line}");
                    let mut kept = lock(&output);
                    kept.push_back(line);
                    if kept.len() > FALLBACK_LINES {
                        kept.pop_front();
                    }
                }
            }));
        }
    }
    let sleep = async {
        match run.deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => {
            for reader in readers {
                let _ = reader.await;
            }
            Some(match status {
                Ok(s) => {
                    let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
                    let message = termination_message(container, message_file, code != 0, &output);
                    exit(Stop::Exited, code, s.to_string(), message)
                }
                Err(e) => exit(Stop::StartError, 128, format!("waiting for the process failed: {e}"), None),
            })
        }
        _ = sleep => {
            let _ = child.kill().await;
            Some(exit(Stop::Deadline, 137, "killed at the deadline".into(), None))
        }
        _ = cancel => {
            let _ = child.kill().await;
            None
        }
    }
}
