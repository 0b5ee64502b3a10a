//! The agent's settings. The operator sets them as environment variables of the agent container
//! (the pod's identity through the downward API); each one also has a flag for running by hand.
//! Validation collects every problem at once and says what to set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::mailbox;
use crate::protocol::Member;

const AFTER_HELP: &str = "\
Every setting comes from the environment variable shown, as the operator sets it in the agent's
container (POD_NAME, POD_UID and POD_NAMESPACE through the downward API); a flag overrides it.
The agent exits with status 2 and says what to fix when a setting is missing or wrong.";

/// `hapair agent`: the settings as given.
#[derive(Debug, Clone, Default, Args)]
#[command(after_help = AFTER_HELP)]
pub struct AgentArgs {
    /// Name of this pod (downward API: metadata.name). Required.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,
    /// UID of this pod (downward API: metadata.uid). Commands addressed to another UID are
    /// ignored. Required.
    #[arg(long, env = "POD_UID", value_name = "UID")]
    pub pod_uid: Option<String>,
    /// Namespace of this pod and of its Lease (downward API: metadata.namespace). Required.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the HAPair; the member's Lease is `<pair>-<member>`. Required.
    #[arg(long, env = "HAPAIR_PAIR", value_name = "NAME")]
    pub pair: Option<String>,
    /// UID of the HAPair: a record of another pair on the volume is refused. Required.
    #[arg(long, env = "HAPAIR_PAIR_UID", value_name = "UID")]
    pub pair_uid: Option<String>,
    /// Which member this pod is: a or b. Required.
    #[arg(long, env = "HAPAIR_MEMBER", value_name = "a|b")]
    pub member: Option<String>,
    /// The member's volume (the directory holding .hapair/record). Required.
    #[arg(long, env = "HAPAIR_VOLUME", value_name = "DIR")]
    pub volume: Option<PathBuf>,
    /// The role file the application reads (SM, M, SL <peer address>, or X); its directory
    /// must exist.
    #[arg(
        long,
        env = "HAPAIR_ROLE_FILE",
        value_name = "PATH",
        default_value = "/run/hapair/role"
    )]
    pub role_file: PathBuf,
    /// Where a slave receives handover data from: written after SL in the role file.
    #[arg(long, env = "HAPAIR_PEER_ADDRESS", value_name = "ADDRESS")]
    pub peer_address: Option<String>,
    /// The application replies to each role line in `<role file>.applied`; `M` is acknowledged
    /// only once it replied `M` (it then guarantees its standby holds every acknowledged write).
    #[arg(long, env = "HAPAIR_ROLE_HANDSHAKE")]
    pub role_handshake: bool,
    /// Lease duration: the operator declares the member failed after this long without a
    /// renewal.
    #[arg(
        long,
        env = "HAPAIR_LEASE_DURATION",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub lease_duration: u32,
    /// How often the agent renews its Lease.
    #[arg(
        long,
        env = "HAPAIR_RENEW_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 2
    )]
    pub renew_interval: u32,
    /// A processing agent fences itself (role X) after lease duration minus this margin without
    /// a successful renewal, before the operator may promote the peer.
    #[arg(
        long,
        env = "HAPAIR_FENCE_MARGIN",
        value_name = "SECONDS",
        default_value_t = 3
    )]
    pub fence_margin: u32,
}

/// The longest lease duration accepted (an hour: anything longer is a typo, and the Lease field
/// is a 32-bit integer).
const MAX_LEASE_SECONDS: u32 = 3600;

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub pod_name: String,
    pub pod_uid: String,
    pub namespace: String,
    pub pair: String,
    pub pair_uid: String,
    pub member: Member,
    pub volume: PathBuf,
    pub role_file: PathBuf,
    pub peer_address: Option<String>,
    pub role_handshake: bool,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    pub fence_margin: Duration,
}

impl Config {
    /// The member's Lease (its mailbox).
    pub fn lease_name(&self) -> String {
        mailbox::lease_name(&self.pair, self.member)
    }

    /// How long a processing agent may go without a renewal: lease duration − margin.
    pub fn fence_budget(&self) -> Duration {
        self.lease_duration.saturating_sub(self.fence_margin)
    }
}

/// Everything wrong with the settings, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad agent configuration (hapair agent --help lists every setting):\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl TryFrom<AgentArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: AgentArgs) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut need = |value: Option<String>, var: &str, source: &str| -> String {
            match value.filter(|v| !v.trim().is_empty()) {
                Some(v) => v,
                None => {
                    problems.push(format!("{var} is not set: {source}"));
                    String::new()
                }
            }
        };
        let downward = "the operator sets it through the downward API";
        let pod_name = need(
            args.pod_name,
            "POD_NAME",
            &format!("{downward} (metadata.name)"),
        );
        let pod_uid = need(
            args.pod_uid,
            "POD_UID",
            &format!("{downward} (metadata.uid)"),
        );
        let namespace = need(
            args.namespace,
            "POD_NAMESPACE",
            &format!("{downward} (metadata.namespace)"),
        );
        let pair = need(args.pair, "HAPAIR_PAIR", "set it to the HAPair's name");
        let pair_uid = need(
            args.pair_uid,
            "HAPAIR_PAIR_UID",
            "set it to the HAPair's UID",
        );
        let member = need(args.member, "HAPAIR_MEMBER", "set it to a or b");
        let member = parse_member(&member, &mut problems);
        let timing = (args.lease_duration, args.renew_interval, args.fence_margin);
        check_timing(timing, &mut problems);
        let volume = check_volume(args.volume, &mut problems);
        check_role_dir(&args.role_file, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            pod_name,
            pod_uid,
            namespace,
            pair,
            pair_uid,
            member: member.unwrap_or(Member::A),
            volume,
            role_file: args.role_file,
            peer_address: args.peer_address.filter(|p| !p.is_empty()),
            role_handshake: args.role_handshake,
            lease_duration: secs(args.lease_duration),
            renew_interval: secs(args.renew_interval),
            fence_margin: secs(args.fence_margin),
        })
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn parse_member(value: &str, problems: &mut Vec<String>) -> Option<Member> {
    if value.is_empty() {
        return None; // already reported as not set
    }
    value
        .parse()
        .map_err(|e| problems.push(format!("HAPAIR_MEMBER: {e}")))
        .ok()
}

fn check_volume(volume: Option<PathBuf>, problems: &mut Vec<String>) -> PathBuf {
    let Some(volume) = volume.filter(|v| !v.as_os_str().is_empty()) else {
        problems.push("HAPAIR_VOLUME is not set: set it to the member volume's mount path".into());
        return PathBuf::new();
    };
    match std::fs::read_dir(&volume) {
        Ok(_) => {}
        Err(e) => problems.push(format!(
            "HAPAIR_VOLUME={}: cannot read the directory: {e}; check the volume mount",
            volume.display()
        )),
    }
    volume
}

fn check_role_dir(role_file: &Path, problems: &mut Vec<String>) {
    let dir = role_file.parent().filter(|d| !d.as_os_str().is_empty());
    if role_file.file_name().is_none() || dir.is_some_and(|d| !d.is_dir()) {
        problems.push(format!(
            "HAPAIR_ROLE_FILE={}: not a file in an existing directory; mount the shared role \
             directory (an emptyDir) there",
            role_file.display()
        ));
    }
}

/// `(lease duration, renew interval, fence margin)` in seconds.
fn check_timing((duration, renew, margin): (u32, u32, u32), problems: &mut Vec<String>) {
    if duration == 0 || duration > MAX_LEASE_SECONDS {
        problems.push(format!(
            "HAPAIR_LEASE_DURATION={duration}: must be 1 to {MAX_LEASE_SECONDS} seconds"
        ));
    }
    if margin >= duration {
        problems.push(format!(
            "HAPAIR_FENCE_MARGIN={margin} must be less than HAPAIR_LEASE_DURATION={duration}: the \
             agent fences after duration - margin without a renewal"
        ));
        return;
    }
    if renew == 0 || renew >= duration - margin {
        problems.push(format!(
            "HAPAIR_RENEW_INTERVAL={renew}: must be at least 1 and less than \
             HAPAIR_LEASE_DURATION - HAPAIR_FENCE_MARGIN = {}, or a single late renewal fences \
             a healthy member",
            duration - margin
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(dir: &Path) -> AgentArgs {
        AgentArgs {
            pod_name: Some("web-a".into()),
            pod_uid: Some("0b7e1c9a-0000-4000-8000-00000000000a".into()),
            namespace: Some("default".into()),
            pair: Some("web".into()),
            pair_uid: Some("6f1c2d3e-0000-4a4a-8b8b-123456789abc".into()),
            member: Some("a".into()),
            volume: Some(dir.to_path_buf()),
            role_file: dir.join("role"),
            peer_address: None,
            role_handshake: false,
            lease_duration: 10,
            renew_interval: 2,
            fence_margin: 3,
        }
    }

    fn problems(args: AgentArgs) -> String {
        Config::try_from(args).unwrap_err().to_string()
    }

    #[test]
    fn good_settings_make_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::try_from(good(dir.path())).unwrap();
        assert_eq!(config.lease_name(), "web-a");
        assert_eq!(config.fence_budget(), Duration::from_secs(7));
        assert_eq!(config.member, Member::A);
    }

    #[test]
    fn every_missing_setting_is_named_with_where_it_comes_from() {
        let args = AgentArgs {
            role_file: "/tmp/role".into(),
            lease_duration: 10,
            renew_interval: 2,
            fence_margin: 3,
            ..AgentArgs::default()
        };
        let msg = problems(args);
        for var in [
            "POD_NAME",
            "POD_UID",
            "POD_NAMESPACE",
            "HAPAIR_PAIR ",
            "HAPAIR_PAIR_UID",
            "HAPAIR_MEMBER",
            "HAPAIR_VOLUME",
        ] {
            assert!(msg.contains(var), "{var} not named in:\n{msg}");
        }
        assert!(msg.contains("downward API (metadata.uid)"), "{msg}");
    }

    #[test]
    fn a_member_other_than_a_or_b_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let msg = problems(AgentArgs {
            member: Some("c".into()),
            ..good(dir.path())
        });
        assert!(
            msg.contains("HAPAIR_MEMBER: 'c' is not a member: use 'a' or 'b'"),
            "{msg}"
        );
    }

    #[test]
    fn an_unreadable_volume_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let msg = problems(AgentArgs {
            volume: Some(dir.path().join("not-mounted")),
            ..good(dir.path())
        });
        assert!(
            msg.contains("HAPAIR_VOLUME=") && msg.contains("check the volume mount"),
            "{msg}"
        );
    }

    #[test]
    fn a_role_file_in_a_missing_directory_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let msg = problems(AgentArgs {
            role_file: dir.path().join("run").join("role"),
            ..good(dir.path())
        });
        assert!(msg.contains("HAPAIR_ROLE_FILE="), "{msg}");
    }

    #[test]
    fn a_margin_not_below_the_duration_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for margin in [10, 11] {
            let msg = problems(AgentArgs {
                fence_margin: margin,
                ..good(dir.path())
            });
            assert!(
                msg.contains("must be less than HAPAIR_LEASE_DURATION=10"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_renew_interval_not_below_the_fence_budget_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for renew in [0, 7, 8] {
            let msg = problems(AgentArgs {
                renew_interval: renew,
                ..good(dir.path())
            });
            assert!(msg.contains("HAPAIR_RENEW_INTERVAL="), "{renew}: {msg}");
        }
    }

    #[test]
    fn settings_come_from_the_environment_variables() {
        use clap::{CommandFactory, FromArgMatches, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let help = Cli::command().render_long_help().to_string();
        for var in [
            "POD_NAME",
            "POD_UID",
            "POD_NAMESPACE",
            "HAPAIR_PAIR",
            "HAPAIR_PAIR_UID",
            "HAPAIR_MEMBER",
            "HAPAIR_VOLUME",
            "HAPAIR_ROLE_FILE",
            "HAPAIR_PEER_ADDRESS",
            "HAPAIR_ROLE_HANDSHAKE",
            "HAPAIR_LEASE_DURATION",
            "HAPAIR_RENEW_INTERVAL",
            "HAPAIR_FENCE_MARGIN",
        ] {
            assert!(
                help.contains(&format!("[env: {var}")),
                "{var} missing from help"
            );
        }
        let matches = Cli::command()
            .try_get_matches_from(["agent", "--member", "b", "--lease-duration", "4"])
            .unwrap();
        let args = Cli::from_arg_matches(&matches).unwrap().agent;
        assert_eq!(args.member.as_deref(), Some("b"));
        assert_eq!((args.lease_duration, args.fence_margin), (4, 3));
    }
}
