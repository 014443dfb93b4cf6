//! `celeroot audit export`: the event stream (docs/state.md, "events") as JSON or CSV,
//! for auditors: who applied what, when, and why.

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};

use super::{live, Cli, CommandError, ErrorKind, Ui, EXIT_OK};

/// The audit log: every reconcile attempt, deploy, reported drift and restore.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Json,
    Csv,
}

/// Export the events kept in Redis, oldest first: who applied what, when, and why
/// (`intentional`, `corrective`, `failed`, ...).
///
/// Exit status: 0 (also when there are none), 1 on a bad flag or an error.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// From when: an RFC 3339 time (2026-12-01T08:00:00Z), a date (2026-12-01, midnight
    /// UTC) or a duration back from now (7d). Default: everything kept.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Until when, the same forms. Default: now.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditFormat::Json)]
    pub output: AuditFormat,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// The most events one export reads.
const MAX_EVENTS: usize = 1_000_000;

/// The CSV columns, in order (an event's other fields are in the JSON export only).
const COLUMNS: &[&str] = &[
    "id",
    "ts",
    "actor",
    "kind",
    "result",
    "revision",
    "rev",
    "generation",
    "summary",
    "writes",
    "corrective_writes",
    "release",
    "error",
];

pub(super) fn when(
    flag: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, CommandError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(secs) = crate::manifest::values::parse_duration(text) {
        let back = chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
        return Ok(now - back);
    }
    Err(CommandError::usage(format!(
        "invalid {flag} {text:?}: expected an RFC 3339 time (2026-12-01T08:00:00Z), a date (2026-12-01) or a duration back from now (7d)"
    )))
}

pub(super) fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

pub fn run(ui: &Ui, cli: &Cli, a: &AuditArgs) -> Result<u8, CommandError> {
    match &a.command {
        AuditCommand::Export(x) => export(ui, cli, x),
    }
}

fn export(ui: &Ui, cli: &Cli, a: &ExportArgs) -> Result<u8, CommandError> {
    let now = super::now()?;
    let since = a
        .since
        .as_deref()
        .map(|t| when("--since", t, now))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|t| when("--until", t, now))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if u < s {
            return Err(CommandError::usage(format!(
                "--until {} is before --since {}",
                u.to_rfc3339(),
                s.to_rfc3339()
            )));
        }
    }
    let cluster = super::observe::cluster_name(ui, cli, &a.cluster)?;
    let mut store = live::connect(cli, &cluster)?;
    let events = store.events_between(since.map_or(0, millis), until.map(millis), MAX_EVENTS)?;
    match a.output {
        AuditFormat::Json => {
            let doc = crate::contract::AuditExport {
                format_version: crate::contract::OUTPUT_FORMAT_VERSION,
                cluster,
                since: since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                until: until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                events: events
                    .iter()
                    .map(crate::contract::EventRecord::of)
                    .collect(),
            };
            outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        AuditFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let fail = |e: csv::Error| CommandError::new(ErrorKind::Failed, format!("CSV: {e}"));
            w.write_record(COLUMNS).map_err(fail)?;
            for e in &events {
                let row: Vec<&str> = COLUMNS
                    .iter()
                    .map(|c| match *c {
                        "id" => e.id.as_str(),
                        c => e.fields.get(c).map_or("", String::as_str),
                    })
                    .collect();
                w.write_record(&row).map_err(fail)?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| CommandError::new(ErrorKind::Failed, format!("CSV: {e}")))?;
            out!("{}", String::from_utf8_lossy(&bytes));
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_dates_or_durations_back() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = |s: &str| when("--since", s, now).map(|d| d.to_rfc3339());
        assert_eq!(t("2026-12-01").unwrap(), "2026-12-01T00:00:00+00:00");
        assert_eq!(t("7d").unwrap(), "2026-11-27T12:00:00+00:00");
        assert_eq!(
            t("2026-12-01T08:30:00+01:00").unwrap(),
            "2026-12-01T07:30:00+00:00"
        );
        assert!(t("yesterday").is_err());
    }

    #[test]
    fn events_get_numbers_and_camel_case() {
        let e = crate::state::StoredEvent {
            id: "1-0".into(),
            fields: [
                ("corrective_writes", "2"),
                ("summary", r#"{"add":1,"change":0,"remove":0}"#),
                ("kind", "corrective"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        let j = serde_json::to_value(crate::contract::EventRecord::of(&e)).unwrap_or_default();
        assert_eq!(j["correctiveWrites"], 2);
        assert_eq!(j["summary"]["add"], 1);
        assert_eq!(j["kind"], "corrective");
    }
}
