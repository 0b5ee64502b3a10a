//! The `hapair` binary: one executable, several roles (subcommands).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hapair::operator::OperatorArgs;
use hapair::telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "hapair",
    version,
    about = "Two-member HA pair operator for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the protocol's transition table (seed figure 2) as the decision function sees it.
    Protocol,
    /// Print the HAPair CustomResourceDefinition (YAML) generated from the Rust types.
    Crd,
    /// Inspect the priority record on a member's volume (read-only).
    #[command(subcommand)]
    Record(cli::record::RecordCommand),
    /// Run the member agent (sidecar of a member pod): apply the operator's commands, report the
    /// volume's record, renew the member's Lease, fence when it cannot.
    Agent(hapair::agent::AgentArgs),
    /// Run the operator: reconcile every HAPair (pods, volumes, Leases, Services, roles).
    Operator(OperatorArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Operator(args) => args.log_format,
        _ => LogFormat::default(),
    };
    hapair::telemetry::init(log_format);
    match cli.command {
        Command::Protocol => {
            println!("{}", hapair::protocol::SUMMARY);
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", hapair::crd::definition_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Record(command) => cli::record::run(command),
        Command::Agent(args) => agent(args),
        Command::Operator(args) => operator(args),
    }
}

/// Bad settings exit with status 2 and say what to fix; a failed start exits with status 1.
fn agent(args: hapair::agent::AgentArgs) -> anyhow::Result<ExitCode> {
    let config = match hapair::agent::Config::try_from(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hapair agent: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(hapair::agent::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs until SIGINT/SIGTERM. Bad settings exit with status 2 and say what to fix; a failed
/// start, or a lost leader-election Lease, exits with status 1.
fn operator(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let config = match hapair::operator::Config::new(args, hapair::operator::identity()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hapair operator: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(hapair::operator::run(config))?;
    Ok(ExitCode::SUCCESS)
}
