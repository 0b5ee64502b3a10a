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
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
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
    }
}
