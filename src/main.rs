//! The `hapair` binary: one executable, several roles (subcommands).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

#[derive(clap::Args)]
struct OperatorArgs {
    /// The agent sidecar's image when an HAPair's spec.agentImage is absent.
    #[arg(long, env = "HAPAIR_AGENT_IMAGE", default_value = hapair::controller::resources::DEFAULT_AGENT_IMAGE)]
    agent_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "HAPAIR_NAMESPACE")]
    namespace: Option<String>,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_tracing();
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

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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

/// Runs the controller until SIGINT/SIGTERM. Leader election is not implemented yet: run one
/// replica.
fn operator(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("cannot build a Kubernetes client (KUBECONFIG or in-cluster): {e}")
        })?;
        hapair::controller::run(client, args.namespace, args.agent_image).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
