use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

/// monoship: image promotion for monorepos.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ServiceBuild CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match serde_yaml::to_string(&monoship::ServiceBuild::crd()) {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("monoship: cannot render the CRD: {error}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
