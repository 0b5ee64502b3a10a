//! `hapair-kv`: the replicated key/value demo application (see `hapair::kv`).

use clap::Parser;
use hapair::telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "hapair-kv",
    version,
    about = "Replicated key/value demo application for an HAPair member (reads the agent's role file)"
)]
struct Cli {
    #[command(flatten)]
    kv: hapair::kv::KvArgs,
    /// Log as text (coloured only on a terminal) or one JSON object a line; level from RUST_LOG.
    #[arg(long, env = "HAPAIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The shared setup: no colour codes in a container's log.
    hapair::telemetry::init(cli.log_format);
    hapair::kv::run(cli.kv).await?;
    Ok(())
}
