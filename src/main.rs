//! The `monoship` binary: parses the command line and starts things. The work is in the library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use monoship::act::origin::Allowlist;
use monoship::app::Options;
use monoship::build::BuildSettings;
use monoship::controller::{GitCacheSettings, Settings};
use monoship::lease::{self, LeaseSettings};
use monoship::pipeline::observe::Policy;
use monoship::targets::nomad::NomadAllowlist;
use tokio_util::sync::CancellationToken;

/// monoship: build each service of a monorepo per commit, and promote an image only when its
/// digest changed.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (kubeconfig, or in-cluster configuration).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML: both, or the one named.
    Crd {
        #[arg(value_enum)]
        which: Option<CrdKind>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CrdKind {
    Servicebuild,
    Monorepo,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch ServiceBuilds in this namespace only (default: all namespaces).
    #[arg(long, env = "MONOSHIP_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "MONOSHIP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, env = "MONOSHIP_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// A registry (HOST:PORT) spoken to over plain HTTP. Repeatable; the env var takes a
    /// comma-separated list.
    #[arg(
        long = "insecure-registry",
        env = "MONOSHIP_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// A Nomad address (URL) that targets may name: a target's nomad.address is allowed when
    /// its scheme, host and port (default 80/443) equal an entry's. Repeatable; the env var
    /// takes a comma-separated list. None given: every address is allowed; a shared cluster
    /// should set it.
    #[arg(
        long = "nomad-allowed-addresses",
        env = "MONOSHIP_NOMAD_ALLOWED_ADDRESSES",
        value_delimiter = ','
    )]
    nomad_allowed_addresses: Vec<String>,
    /// Image of the init container that fetches the source commit (needs sh and git).
    #[arg(long, env = "MONOSHIP_CHECKOUT_IMAGE", default_value = monoship::DEFAULT_CHECKOUT_IMAGE)]
    checkout_image: String,
    /// This replica's name, in Events and the leader Lease.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Elect a leader on a Lease, so that several replicas can run and only one acts.
    #[arg(long, env = "MONOSHIP_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "MONOSHIP_LEASE_NAME", default_value = "monoship")]
    lease_name: String,
    /// Namespace of the leader Lease (default: this pod's namespace).
    #[arg(long, env = "MONOSHIP_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long the Lease holds without renewal.
    #[arg(long, env = "MONOSHIP_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How long the leader retries renewal before it stops acting.
    #[arg(long, env = "MONOSHIP_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often the leader renews, and a standby tries to acquire.
    #[arg(long, env = "MONOSHIP_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// Let ServiceBuilds pin Kubernetes targets in any namespace. Off, a target outside the
    /// ServiceBuild's namespace is refused unless that namespace's
    /// `monoship.dev/accept-targets-from` annotation names the ServiceBuild's namespace.
    #[arg(long, env = "MONOSHIP_ALLOW_CROSS_NAMESPACE_TARGETS")]
    allow_cross_namespace_targets: bool,
    /// Refuse build templates that set a serviceAccountName or ask for a ServiceAccount token.
    #[arg(long, env = "MONOSHIP_NO_BUILD_SERVICE_ACCOUNT")]
    no_build_service_account: bool,
    /// At most this many ServiceBuilds are reconciled at once (0: no limit).
    #[arg(long, env = "MONOSHIP_CONCURRENCY", default_value_t = monoship::controller::DEFAULT_CONCURRENCY)]
    concurrency: u16,
    /// Directory where fetched commits are kept to compute input keys (an emptyDir in the
    /// chart). Default: `monoship-git` in the system's temporary directory.
    #[arg(long, env = "MONOSHIP_GIT_CACHE_DIR")]
    git_cache_dir: Option<std::path::PathBuf>,
    /// Most bytes the git cache keeps on disk; least recently used repositories go first.
    #[arg(long, env = "MONOSHIP_GIT_CACHE_MAX_BYTES", default_value_t = 1 << 30)]
    git_cache_max_bytes: u64,
    /// Git fetches that run at once.
    #[arg(long, env = "MONOSHIP_PARALLEL_FETCHES", default_value_t = monoship::inputs::fetcher::DEFAULT_PARALLEL_FETCHES)]
    parallel_fetches: usize,
    /// An origin (URL: scheme, host, port) that ServiceBuilds and Monorepos may make monoship
    /// read git from. Repeatable; the env var takes a comma-separated list. None given: every
    /// origin; a shared cluster should set it (a repository elsewhere is still built, never
    /// read by the controller).
    #[arg(
        long = "git-allowed-origins",
        env = "MONOSHIP_GIT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    git_allowed_origins: Vec<String>,
    /// Do not read build inputs from git: every new revision builds (no build is skipped).
    #[arg(long, env = "MONOSHIP_NO_INPUT_KEYS")]
    no_input_keys: bool,
    /// How often a settled ServiceBuild is checked for drifted targets.
    #[arg(long, env = "MONOSHIP_RESYNC_PERIOD", default_value = "10m", value_parser = parse_duration)]
    resync_period: Duration,
}

/// `15s`, `2m`, `1h 30m` (jiff's friendly format).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|error| format!("{text:?} is not a duration like 15s or 2m: {error}"))?;
    Duration::try_from(duration).map_err(|_| format!("{text:?} must not be negative"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { which } => match match which {
            None => monoship::api::crds_yaml(),
            Some(CrdKind::Servicebuild) => {
                monoship::api::crd_yaml(monoship::api::CrdKind::ServiceBuild)
            }
            Some(CrdKind::Monorepo) => monoship::api::crd_yaml(monoship::api::CrdKind::Monorepo),
        } {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("monoship: cannot render the CRD: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("monoship: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "monoship stopped");
                    eprintln!("monoship: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let nomad_allowed_addresses = NomadAllowlist::parse(&args.nomad_allowed_addresses)
        .map_err(|error| format!("--nomad-allowed-addresses: {error}"))?;
    let git_allowed_origins = Allowlist::parse(&args.git_allowed_origins)
        .map_err(|error| format!("--git-allowed-origins: {error}"))?;
    monoship::telemetry::init(matches!(args.log_format, LogFormat::Json))?;
    monoship::install_crypto_provider();
    let config = kube::Config::infer().await?;
    let client = kube::Client::try_from(config.clone())?;
    let election = if args.leader_election {
        let identity = args
            .pod_name
            .clone()
            .ok_or("--leader-election needs this replica's name: set POD_NAME or --pod-name")?;
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        if args.renew_deadline >= args.lease_duration {
            return Err("--renew-deadline must be shorter than --lease-duration".into());
        }
        if args.retry_period >= args.renew_deadline {
            return Err("--retry-period must be shorter than --renew-deadline".into());
        }
        Some(LeaseSettings {
            name: args.lease_name.clone(),
            namespace,
            identity,
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        })
    } else {
        None
    };
    // The Lease gets a client of its own whose every request is bounded by the renew
    // deadline; the controller's client keeps long reads for its watches.
    let lease_client = match &election {
        Some(lease_settings) => Some(kube::Client::try_from(lease::client_config(
            config,
            lease_settings,
        ))?),
        None => None,
    };
    let settings = Settings {
        namespace: args.namespace,
        insecure_registries: args.insecure_registries,
        build: BuildSettings {
            checkout_image: args.checkout_image,
        },
        instance: args.pod_name,
        resync: args.resync_period,
        concurrency: args.concurrency,
        policy: Policy {
            allow_cross_namespace_targets: args.allow_cross_namespace_targets,
            forbid_build_service_account: args.no_build_service_account,
        },
        nomad_allowed_addresses,
        git_cache: (!args.no_input_keys).then(|| GitCacheSettings {
            dir: args
                .git_cache_dir
                .unwrap_or_else(|| std::env::temp_dir().join("monoship-git")),
            max_bytes: args.git_cache_max_bytes,
            parallel_fetches: args.parallel_fetches,
            allow_credentials_over_http: false,
            allowed_origins: git_allowed_origins,
        }),
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            monoship::telemetry::shutdown_signal().await;
            shutdown.cancel();
        });
    }
    let options = Options {
        settings,
        endpoints: Some(listener),
        election,
        lease_client,
        metrics: Default::default(),
    };
    monoship::app::run(client, options, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}
