//! The `hapair` binary: one executable, several roles (subcommands).

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Protocol => {
            println!("{}", hapair::protocol::SUMMARY);
            Ok(())
        }
    }
}
