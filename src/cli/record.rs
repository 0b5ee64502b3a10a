//! `hapair record show`: print the priority record on a member's volume, or exactly why it is
//! rejected. It must never write: it opens the record read-only and creates nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use hapair::protocol::Member;
use hapair::store::{self, ReadOutcome, Record, RECORD_DIR, RECORD_FILE};

const EXIT_CODES: &str = "\
Exit codes:
  0  a valid record (of the expected pair and member, when given)
  1  the volume could not be read (the message says why)
  2  bad command line
  3  no record: a fresh volume, or one that lost its data
  4  corrupt record: parse, version, checksum or truncation (the reason is printed)
  5  a valid record of another pair or member (only with --pair-uid or --member)";

#[derive(Subcommand)]
pub enum RecordCommand {
    /// Print the record on a member's volume, or exactly why it is rejected. Never writes.
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    /// The member's volume: the directory that holds .hapair/record.
    volume: PathBuf,
    /// Reject (exit 5) a record of another pair.
    #[arg(long, value_name = "UID")]
    pair_uid: Option<String>,
    /// Reject (exit 5) a record of the other member: a or b.
    #[arg(long, value_name = "a|b")]
    member: Option<Member>,
}

pub fn run(command: RecordCommand) -> anyhow::Result<ExitCode> {
    match command {
        RecordCommand::Show(args) => show(&args),
    }
}

fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let outcome = store::inspect(&args.volume, args.pair_uid.as_deref(), args.member)?;
    let path = args.volume.join(RECORD_DIR).join(RECORD_FILE);
    println!("{}", describe(&outcome, &path));
    Ok(ExitCode::from(exit_code(&outcome)))
}

fn exit_code(outcome: &ReadOutcome) -> u8 {
    match outcome {
        ReadOutcome::Valid(_) => 0,
        ReadOutcome::Missing => 3,
        ReadOutcome::Corrupt { .. } => 4,
        ReadOutcome::WrongPair { .. } => 5,
    }
}

fn describe(outcome: &ReadOutcome, path: &Path) -> String {
    let path = path.display();
    match outcome {
        ReadOutcome::Valid(record) => table(record, &path.to_string()),
        ReadOutcome::Missing => {
            format!("missing: no record at {path} (a fresh volume, or one that lost its data)")
        }
        ReadOutcome::Corrupt { reason, .. } => format!("corrupt: {path}: {reason}"),
        ReadOutcome::WrongPair { reason, .. } => format!("wrong pair: {path}: {reason}"),
    }
}

fn table(record: &Record, path: &str) -> String {
    format!(
        "record    {path}\npair UID  {}\nmember    {}\npriority  {}\nterm      {}\n\
         written   {} ({}; informational, never used for decisions)",
        record.pair_uid,
        record.member,
        record.standing.priority,
        record.standing.term,
        record.written_unix,
        utc(record.written_unix),
    )
}

/// `unix` seconds as an ISO 8601 UTC time (days to civil date: Howard Hinnant's algorithm).
fn utc(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
