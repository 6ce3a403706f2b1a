//! A real control plane for tests: etcd, kube-apiserver and kube-controller-manager from
//! `KUBEBUILDER_ASSETS` (the envtest convention: a directory of plain binaries), on free
//! loopback ports, with certificates made for this run.
//!
//! One control plane per test binary, started on first use by [`shared`] and shared by that
//! binary's tests, each in namespaces of its own ([`Envtest::namespace`]). Clients are made per
//! test (a `kube::Client` belongs to the tokio runtime it was first used on): cluster admin
//! ([`Envtest::client`], a client certificate with `O=system:masters`) or a ServiceAccount
//! ([`Envtest::service_account_client`], a token from the TokenRequest API).
//!
//! Nothing outlives the test binary, whether its tests pass, panic or the binary is killed:
//! the three processes are started from one thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG` (SIGKILL), and a small `sh` beside them removes the directory with the
//! certificates and etcd's data once the pipe the test binary holds open closes.
//!
//! Without `KUBEBUILDER_ASSETS`, [`shared`] prints how to get the binaries and returns `None`,
//! and the tests using it return early; `MONOSHIP_REQUIRE_ENVTEST=1` (CI) makes that a failure.

mod certs;
pub mod kubelet;

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// The one line that tells a user without the binaries how to get them.
pub const HOW_TO_GET_ASSETS: &str = "real-server tests skipped: set KUBEBUILDER_ASSETS to a directory holding kube-apiserver, etcd and kube-controller-manager (`setup-envtest use -p path 1.36.x` fetches kube-apiserver and etcd; add kube-controller-manager of the same version beside them), or run `bash tests/run.sh` next to a ../shared/envtest checkout";

const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// A running control plane.
pub struct Envtest {
    /// Certificates, kubeconfigs, logs and etcd's data; removed when the test binary exits.
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// How long etcd and kube-apiserver took until both were ready.
    pub startup: Duration,
    /// Process ids of etcd, kube-apiserver and kube-controller-manager.
    pub pids: Vec<u32>,
    /// Held open for the life of the process: its closing tells the cleaner to remove `dir`.
    _cleanup: ChildStdin,
}

static SHARED: OnceLock<Result<Envtest, String>> = OnceLock::new();
static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

/// The directory named by `KUBEBUILDER_ASSETS`, when it holds the three binaries.
pub fn assets() -> Result<Option<PathBuf>, String> {
    let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    let missing: Vec<_> = BINARIES.iter().filter(|b| !dir.join(b).is_file()).collect();
    if missing.is_empty() {
        Ok(Some(dir))
    } else {
        Err(format!(
            "KUBEBUILDER_ASSETS={} lacks {missing:?}",
            dir.display()
        ))
    }
}

fn required() -> bool {
    std::env::var("MONOSHIP_REQUIRE_ENVTEST").is_ok_and(|v| v == "1" || v == "true")
}

/// The control plane of this test binary, started on first use; `None` (after one line on
/// stderr saying how to get the binaries) when `KUBEBUILDER_ASSETS` is unset. Panics when the
/// control plane cannot start, or when `MONOSHIP_REQUIRE_ENVTEST=1` and there are no binaries.
pub fn shared() -> Option<&'static Envtest> {
    // Clients here use rustls with ring, as monoship does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = SHARED.get_or_init(|| match assets()? {
        Some(dir) => Envtest::start(&dir),
        None => Err(String::new()),
    });
    match started {
        Ok(env) => Some(env),
        Err(e) if e.is_empty() => {
            assert!(
                !required(),
                "MONOSHIP_REQUIRE_ENVTEST=1 but KUBEBUILDER_ASSETS is not set"
            );
            skipped();
            None
        }
        Err(e) => panic!("the envtest control plane did not start: {e}"),
    }
}

/// Say, past the test harness's capture, that this test was skipped, and once how to run it.
fn skipped() {
    static ONCE: OnceLock<()> = OnceLock::new();
    let mut stderr = std::io::stderr();
    ONCE.get_or_init(|| {
        let _ = writeln!(stderr, "{HOW_TO_GET_ASSETS}");
    });
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(stderr, "skipped (no KUBEBUILDER_ASSETS): {test}");
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// A kubeconfig for `server` with the CA at `ca` and the given `user` entry.
fn kubeconfig(server: &str, ca: &Path, user: serde_json::Value) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user", "namespace": "default"}}],
        "current-context": "envtest"
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

async fn client_from(kubeconfig: &str) -> Client {
    let config = Kubeconfig::from_yaml(kubeconfig).expect("a kubeconfig");
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("a client configuration");
    Client::try_from(config).expect("a client")
}

impl Envtest {
    fn start(assets: &Path) -> Result<Self, String> {
        let assets = assets.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        // The processes get SIGKILL when the thread that started them ends (PR_SET_PDEATHSIG
        // follows the thread, not the process), so that thread lives as long as the process.
        std::thread::Builder::new()
            .name("envtest-supervisor".into())
            .spawn(move || {
                let started = supervise(&assets);
                let failed = started.is_err();
                let _ = tx.send(started);
                if failed {
                    return;
                }
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| e.to_string())?;
        rx.recv().map_err(|e| e.to_string())?
    }

    /// The admin kubeconfig (client certificate, `O=system:masters`), e.g. for kubectl.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A cluster-admin client, for the calling test's runtime.
    pub async fn client(&self) -> Client {
        let text = std::fs::read_to_string(self.kubeconfig_path()).expect("the admin kubeconfig");
        client_from(&text).await
    }

    /// A client authenticated as ServiceAccount `namespace/name`, with a token from the
    /// TokenRequest API (valid for an hour), so RBAC applies.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let path = self.service_account_kubeconfig(namespace, name).await;
        let text = std::fs::read_to_string(path).expect("the ServiceAccount's kubeconfig");
        client_from(&text).await
    }

    /// A kubeconfig file for ServiceAccount `namespace/name` (see
    /// [`Envtest::service_account_client`]), for processes such as kubectl.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await, namespace);
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
                .expect("a TokenRequest");
        let answer = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .expect("a token for the ServiceAccount");
        let token = answer.status.map(|s| s.token).unwrap_or_default();
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        let ca = self.dir.join("ca.crt");
        let text = kubeconfig(&self.server, &ca, json!({ "token": token }));
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    /// Create a namespace of this test's own, `<prefix>-<n>`, with `labels`, and wait until
    /// kube-controller-manager has given it its `default` ServiceAccount (without which no pod
    /// can be created in it).
    pub async fn namespace(
        &self,
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> String {
        let n = NAMESPACES.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{n}");
        let labels: serde_json::Map<_, _> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("a namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("the namespace is created");
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while accounts
            .get_opt("default")
            .await
            .expect("get ServiceAccount")
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "kube-controller-manager made no default ServiceAccount in {name} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        name
    }

    /// Resident memory of the three processes, in KiB (from `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Vec<(&'static str, u64)> {
        BINARIES
            .iter()
            .zip(&self.pids)
            .map(|(name, pid)| {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                (*name, rss)
            })
            .collect()
    }
}

/// Start one process whose output goes to `<dir>/<name>.log`, killed when the calling thread
/// ends.
fn spawn(assets: &Path, dir: &Path, name: &str, args: &[String]) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let parent = std::process::id() as libc::pid_t;
    let mut command = Command::new(assets.join(name));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))
}

fn tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Start the three processes and wait until etcd and kube-apiserver are ready.
fn supervise(assets: &Path) -> Result<Envtest, String> {
    let begin = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("monoship-envtest-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    // Removes `dir` once the test binary is gone and its pipe closes (own process group, so a
    // Ctrl-C on the test run does not stop it first).
    let mut cleaner = Command::new("sh")
        .args([
            "-c",
            "cat >/dev/null; sleep 1; rm -rf \"$0\"",
            &dir.to_string_lossy(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the cleaner: {e}"))?;
    let cleanup = cleaner.stdin.take().ok_or("no pipe to the cleaner")?;

    certs::generate(&dir).map_err(|e| format!("certificates: {e}"))?;
    let [etcd_port, peer_port, api_port, kcm_port] =
        [free_port()?, free_port()?, free_port()?, free_port()?];
    let server = format!("https://127.0.0.1:{api_port}");
    let write = |file: &str, text: &str| {
        std::fs::write(dir.join(file), text).map_err(|e| format!("{file}: {e}"))
    };
    let ca = dir.join("ca.crt");
    write(
        "admin.kubeconfig",
        &kubeconfig(
            &server,
            &ca,
            json!({"client-certificate": dir.join("admin.crt"), "client-key": dir.join("admin.key")}),
        ),
    )?;
    write(
        "kcm.kubeconfig",
        &kubeconfig(
            &server,
            &ca,
            json!({"client-certificate": dir.join("kcm.crt"), "client-key": dir.join("kcm.key")}),
        ),
    )?;

    let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let etcd = spawn(
        assets,
        &dir,
        "etcd",
        &[
            "--data-dir".into(),
            path("etcd"),
            "--listen-client-urls".into(),
            etcd_url.clone(),
            "--advertise-client-urls".into(),
            etcd_url.clone(),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--log-level".into(),
            "warn".into(),
        ],
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(wait_for_etcd(&etcd_url))
        .map_err(|e| format!("{e}\n{}", tail(&dir, "etcd")))?;

    let apiserver = spawn(
        assets,
        &dir,
        "kube-apiserver",
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            "--advertise-address=127.0.0.1".into(),
            "--endpoint-reconciler-type=none".into(),
            format!("--tls-cert-file={}", path("apiserver.crt")),
            format!("--tls-private-key-file={}", path("apiserver.key")),
            format!("--client-ca-file={}", path("ca.crt")),
            "--authorization-mode=Node,RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ],
    )?;
    let admin_kubeconfig =
        std::fs::read_to_string(dir.join("admin.kubeconfig")).map_err(|e| e.to_string())?;
    runtime
        .block_on(wait_for_apiserver(&admin_kubeconfig))
        .map_err(|e| format!("{e}\n{}", tail(&dir, "kube-apiserver")))?;
    let startup = begin.elapsed();

    let kcm_kubeconfig = path("kcm.kubeconfig");
    let controller_manager = spawn(
        assets,
        &dir,
        "kube-controller-manager",
        &[
            format!("--kubeconfig={kcm_kubeconfig}"),
            format!("--authentication-kubeconfig={kcm_kubeconfig}"),
            format!("--authorization-kubeconfig={kcm_kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}"),
            "--use-service-account-credentials=true".into(),
            format!("--service-account-private-key-file={}", path("sa.key")),
            format!("--root-ca-file={}", path("ca.crt")),
            format!("--cluster-signing-cert-file={}", path("ca.crt")),
            format!("--cluster-signing-key-file={}", path("ca.key")),
            "--controllers=*".into(),
            "--leader-elect=false".into(),
        ],
    )?;
    drop(runtime);
    let pids = [&etcd, &apiserver, &controller_manager]
        .iter()
        .map(|c| c.id())
        .collect();
    // The children are never waited on: they live exactly as long as this process.
    std::mem::forget((etcd, apiserver, controller_manager, cleaner));
    let _ = writeln!(
        std::io::stderr(),
        "envtest: etcd and kube-apiserver ready at {server} in {:.1} s ({})",
        startup.as_secs_f64(),
        dir.display()
    );
    Ok(Envtest {
        dir,
        server,
        startup,
        pids,
        _cleanup: cleanup,
    })
}

async fn wait_for_etcd(url: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match client.get(format!("{url}/health")).send().await {
            Ok(response) => {
                let body = response.text().await.unwrap_or_default();
                if body.contains("\"health\":\"true\"") {
                    return Ok(());
                }
                last = body;
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("etcd not healthy within 60 s: {last}"))
}

async fn wait_for_apiserver(kubeconfig: &str) -> Result<(), String> {
    let client = client_from(kubeconfig).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("kube-apiserver not ready within 120 s: {last}"))
}
