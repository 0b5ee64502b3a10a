//! `hapair operator`'s settings: flags, each with an environment variable (the Helm chart sets
//! them), and their validation. Problems are collected and reported at once; the binary exits
//! with status 2.

use std::net::SocketAddr;

use clap::Args;

use crate::controller::resources::DEFAULT_AGENT_IMAGE;
use crate::telemetry::LogFormat;

const AFTER_HELP: &str = "\
Each flag also reads the environment variable shown. The log level comes from RUST_LOG
(default info). With --leader-elect only the replica holding the Lease acts; one that loses it
exits with status 1 so that it restarts as a candidate. Bad settings exit with status 2.";

/// `hapair operator`: the settings as given.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct OperatorArgs {
    /// The agent sidecar's image when an HAPair's spec.agentImage is absent.
    #[arg(long, env = "HAPAIR_AGENT_IMAGE", default_value = DEFAULT_AGENT_IMAGE)]
    pub agent_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "HAPAIR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where to serve GET /metrics (OpenMetrics), /healthz and /readyz. Port 0 picks a free
    /// port (the log says which).
    #[arg(
        long,
        env = "HAPAIR_METRICS_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Act only while holding the leader-election Lease (run several replicas).
    #[arg(long, env = "HAPAIR_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (in a pod: its own namespace, via the downward
    /// API). Required with --leader-elect.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease; replicas sharing it elect one leader.
    #[arg(long, value_name = "NAME", default_value = "hapair-operator")]
    pub leader_election_lease: String,
    /// Log line format.
    #[arg(long, env = "HAPAIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The leader-election Lease this replica competes for, and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    /// `POD_NAME`, else `<hostname>-<pid>`: unique among the replicas.
    pub identity: String,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub agent_image: String,
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    /// `None`: act without leader election (a single replica).
    pub election: Option<Election>,
}

/// Everything wrong with the settings, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad operator configuration (hapair operator --help lists every setting):\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Validates `args`; `identity` names this replica in the leader-election Lease.
    pub fn new(args: OperatorArgs, identity: String) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        if args.agent_image.trim().is_empty() {
            problems.push("--agent-image (HAPAIR_AGENT_IMAGE) is empty: name an image".into());
        }
        let lease = args.leader_election_lease;
        if args.leader_elect && lease.trim().is_empty() {
            problems.push("--leader-election-lease is empty: name the Lease".into());
        }
        let election_namespace = nonempty(args.leader_election_namespace);
        if args.leader_elect && election_namespace.is_none() {
            problems.push(
                "--leader-elect needs --leader-election-namespace (or POD_NAMESPACE): the \
                 namespace of the leader-election Lease, usually the operator's own"
                    .into(),
            );
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let election = args.leader_elect.then(|| Election {
            namespace: election_namespace.unwrap_or_default(),
            lease,
            identity,
        });
        Ok(Config {
            agent_image: args.agent_image,
            namespace: nonempty(args.namespace),
            metrics_addr: args.metrics_addr,
            election,
        })
    }
}

/// This replica's name in the leader-election Lease: `POD_NAME` in a pod, else `<hostname>-<pid>`.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = hostname::get().map_or_else(
        |_| "unknown-host".to_string(),
        |h| h.to_string_lossy().into_owned(),
    );
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OperatorArgs,
    }

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let args = Cli::try_parse_from(std::iter::once("operator").chain(flags.iter().copied()))
            .unwrap()
            .args;
        Config::new(args, "me".into())
    }

    #[test]
    fn leader_election_needs_a_namespace_and_says_so() {
        if std::env::var_os("POD_NAMESPACE").is_some() {
            return; // the environment supplies the namespace
        }
        let err = config(&["--leader-elect"]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].contains("--leader-election-namespace"),
            "{err}"
        );
    }

    #[test]
    fn leader_election_with_a_namespace_names_the_lease_and_identity() {
        let config = config(&["--leader-elect", "--leader-election-namespace", "ops"]).unwrap();
        let expected = Election {
            namespace: "ops".into(),
            lease: "hapair-operator".into(),
            identity: "me".into(),
        };
        assert_eq!(config.election, Some(expected));
    }

    #[test]
    fn without_leader_election_no_lease_is_used() {
        let config = config(&["--metrics-addr", "127.0.0.1:0"]).unwrap();
        assert_eq!(config.election, None);
        assert_eq!(config.metrics_addr.port(), 0);
    }
}
