//! `hapair-kv`: the replicated key/value demo application (see `hapair::kv`).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hapair-kv",
    version,
    about = "Replicated key/value demo application for an HAPair member (reads the agent's role file)"
)]
struct Cli {
    #[command(flatten)]
    kv: hapair::kv::KvArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    hapair::kv::run(cli.kv).await?;
    Ok(())
}
