//! The `monoship` binary: parses the command line and starts things. The work is in the library.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use monoship::build::BuildSettings;
use monoship::controller::{self, Settings};

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
    Run(RunArgs),
    /// Print the ServiceBuild CustomResourceDefinition as YAML.
    Crd,
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
    /// Image of the init container that fetches the source commit (needs sh and git).
    #[arg(long, env = "MONOSHIP_CHECKOUT_IMAGE", default_value = monoship::DEFAULT_CHECKOUT_IMAGE)]
    checkout_image: String,
    /// This replica's name, in Events and the leader Lease.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match serde_yaml::to_string(&monoship::ServiceBuild::crd()) {
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
            match runtime.block_on(run(args)) {
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
    monoship::telemetry::init(matches!(args.log_format, LogFormat::Json))?;
    monoship::install_crypto_provider();
    let client = kube::Client::try_default().await?;
    let settings = Settings {
        namespace: args.namespace,
        insecure_registries: args.insecure_registries,
        build: BuildSettings {
            checkout_image: args.checkout_image,
        },
        instance: args.pod_name,
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    let health = monoship::telemetry::Health::default();
    tokio::spawn(monoship::telemetry::serve(listener, health.clone()));
    health.set_ready(true);
    controller::run(client, settings, monoship::telemetry::shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}
