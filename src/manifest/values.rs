//! Value syntax of manifest fields with Celery semantics: durations, crontab expressions,
//! time zones, and next fire times.
//!
//! Owns: parsing `every:` durations and 5-field cron expressions exactly as Celery's
//! `crontab` reads them (day-of-month AND day-of-week, Sunday = 0, weekday and month
//! names, no `L`/`W`/`#`), IANA time zones, and computing fire times in a time zone. Lives
//! in `manifest` so that `validate` and `desired` both use it without importing each
//! other (`desired::schedule` re-exports it).
//! Must not know: manifest objects, Redis, or how schedules are stored.

use chrono::{DateTime, Utc};

/// The time zone of a cluster that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// Parses a duration such as `30s`, `5m`, `1h30m` or `2d` into seconds.
///
/// # Errors
/// A message saying what was expected when the text is not such a duration or is zero.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected a duration such as `30s`, `5m`, `1h30m` or `1d` (units d, h, m, s, largest first)";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration: {EXPECTED}"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_rank = 0u8;
    for ch in t.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let (mult, rank) = match ch {
            'd' => (86_400u64, 1u8),
            'h' => (3_600, 2),
            'm' => (60, 3),
            's' => (1, 4),
            _ => return Err(format!("invalid duration `{text}`: {EXPECTED}")),
        };
        if digits.is_empty() || rank <= last_rank {
            return Err(format!("invalid duration `{text}`: {EXPECTED}"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("duration `{text}` is too large"))?;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
        digits.clear();
        last_rank = rank;
    }
    if !digits.is_empty() {
        return Err(format!(
            "invalid duration `{text}`: a number needs a unit; {EXPECTED}"
        ));
    }
    if total == 0 {
        return Err(format!("duration `{text}` must be longer than zero"));
    }
    Ok(total)
}

/// The canonical spelling of a duration in seconds (`5400` → `1h30m`).
pub fn format_duration(mut secs: u64) -> String {
    let mut out = String::new();
    for (unit, size) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// A validated crontab in Celery's field order and syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crontab {
    pub minute: String,
    pub hour: String,
    pub day_of_month: String,
    pub month_of_year: String,
    pub day_of_week: String,
    /// Shared: croner keeps a bit set of every year (about 10 KB per pattern), and a
    /// fleet repeats a few expressions across thousands of schedules.
    cron: std::sync::Arc<Cron>,
    /// [`Crontab::min_period_secs`], computed once when parsed (it walks 200 fires, and
    /// validation and compilation ask for it for every schedule).
    min_period: Option<u64>,
}

impl Crontab {
    /// The expression in cron field order, normalised (whitespace folded, Sunday as 0).
    pub fn expression(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week
        )
    }

    /// The next `n` fire times strictly after `now`, in `tz`.
    pub fn next_fire_times(&self, tz: Tz, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        self.fire_times_after(tz, now).take(n).collect()
    }

    /// The shortest gap between consecutive fire times (in UTC, over the 200 fires after
    /// 2026-01-01): what a `grace` may not exceed. `None` when it never fires.
    pub fn min_period_secs(&self) -> Option<u64> {
        self.min_period
    }

    /// Every fire time strictly after `now`, in `tz`, in order.
    pub fn fire_times_after(
        &self,
        tz: Tz,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Tz>> + '_ {
        self.cron.iter_after(now.with_timezone(&tz))
    }
}

const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_base: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_base: 1,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        names_base: 0,
    },
];

fn field_value(f: &Field, tok: &str) -> Result<u32, String> {
    if let Ok(n) = tok.parse::<u32>() {
        if n < f.min || n > f.max {
            return Err(format!(
                "{} value `{tok}` is out of range {}-{}",
                f.name, f.min, f.max
            ));
        }
        return Ok(n);
    }
    let lower = tok.to_ascii_lowercase();
    if f.names.iter().all(|n| *n != lower) {
        if let Some(c) = tok
            .chars()
            .find(|c| matches!(c.to_ascii_uppercase(), 'L' | 'W' | '#' | '?'))
        {
            return Err(format!(
                "{} value `{tok}` uses `{c}`, which Celery's crontab does not support",
                f.name
            ));
        }
    }
    match f.names.iter().position(|n| *n == lower) {
        Some(i) => Ok(u32::try_from(i).unwrap_or(0) + f.names_base),
        None if f.names.is_empty() => Err(format!("{} value `{tok}` is not a number", f.name)),
        None => Err(format!(
            "{} value `{tok}` is neither a number nor a name ({})",
            f.name,
            f.names.join(", ")
        )),
    }
}

/// Splits `item` into its range and optional step (`1-5/2` → (`1-5`, Some(2))).
fn split_step<'a>(f: &Field, item: &'a str) -> Result<(&'a str, Option<u32>), String> {
    match item.split_once('/') {
        Some((r, s)) => {
            let step: u32 = s
                .parse()
                .map_err(|_| format!("{} step `{s}` is not a number", f.name))?;
            if step == 0 {
                return Err(format!("{} step must be at least 1", f.name));
            }
            if !(r == "*" || r.contains('-')) {
                return Err(format!(
                    "{} `{item}`: Celery only accepts a step after `*` or a range (`*/5`, `0-30/5`)",
                    f.name
                ));
            }
            Ok((r, Some(step)))
        }
        None => Ok((item, None)),
    }
}

/// Day-of-week, expanded to the days it matches (7 is Sunday, like 0) and written back
/// as `*` or a sorted list of days and ranges: `5-7` → `0,5-6`.
fn check_day_of_week(f: &Field, text: &str) -> Result<String, String> {
    let mut days = std::collections::BTreeSet::new();
    for item in text.split(',') {
        let (range, step) = split_step(f, item)?;
        let (lo, hi) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            (field_value(f, a)?, field_value(f, b)?)
        } else if range.is_empty() {
            return Err(format!("{} has an empty item in `{text}`", f.name));
        } else {
            let v = field_value(f, range)?;
            (v, v)
        };
        if lo > hi {
            return Err(format!("{} range `{range}` runs backwards", f.name));
        }
        let step = usize::try_from(step.unwrap_or(1)).unwrap_or(1);
        days.extend((lo..=hi).step_by(step).map(|d| d % 7));
    }
    if days.len() == 7 {
        return Ok("*".into());
    }
    let days: Vec<u32> = days.into_iter().collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut j = i;
        while j + 1 < days.len() && days[j + 1] == days[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", days[i], days[j])
        } else {
            days[i].to_string()
        });
        i = j + 1;
    }
    Ok(parts.join(","))
}

/// Checks one field against Celery's crontab syntax and returns it normalised.
fn check_field(f: &Field, text: &str) -> Result<String, String> {
    if f.name == "day-of-week" {
        return check_day_of_week(f, text);
    }
    let mut parts = Vec::new();
    for item in text.split(',') {
        let (range, step) = split_step(f, item)?;
        let norm_range = if range == "*" {
            "*".to_string()
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (field_value(f, a)?, field_value(f, b)?);
            if a > b {
                return Err(format!("{} range `{range}` runs backwards", f.name));
            }
            format!("{a}-{b}")
        } else if range.is_empty() {
            return Err(format!("{} has an empty item in `{text}`", f.name));
        } else {
            let v = field_value(f, range)?;
            v.to_string()
        };
        parts.push(match step {
            Some(s) => format!("{norm_range}/{s}"),
            None => norm_range,
        });
    }
    Ok(parts.join(","))
}

/// Parses a 5-field cron expression with Celery crontab semantics.
///
/// # Errors
/// A message naming the offending field and what was expected.
pub fn parse_cron(expr: &str) -> Result<Crontab, String> {
    // Parsing is costly (croner builds bit sets, then probes for a next occurrence) and a
    // fleet repeats a few expressions across thousands of schedules (validate and
    // compile each parse every one): remember the answers per thread.
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Result<Crontab, String>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    if let Some(hit) = CACHE.with(|c| c.borrow().get(expr).cloned()) {
        return hit;
    }
    let parsed = parse_cron_uncached(expr);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(expr.to_string(), parsed.clone());
    });
    parsed
}

fn parse_cron_uncached(expr: &str) -> Result<Crontab, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "cron expression `{expr}` has {} fields; expected 5: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    }
    let mut norm = Vec::with_capacity(5);
    for (f, text) in FIELDS.iter().zip(&fields) {
        norm.push(check_field(f, text)?);
    }
    let pattern = norm.join(" ");
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .dom_and_dow(true)
        .build()
        .parse(&pattern)
        .map_err(|e| format!("cron expression `{expr}` is invalid: {e}"))?;
    // A pattern such as `0 0 31 2 *` parses but never fires; Celery rejects it.
    let probe = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
    if cron
        .iter_after(probe.with_timezone(&chrono_tz::UTC))
        .next()
        .is_none()
        || cron.find_next_occurrence(&Utc::now(), false).is_err()
    {
        return Err(format!(
            "cron expression `{expr}` never fires (no such date)"
        ));
    }
    let min_period = min_period_of(&cron);
    let mut it = norm.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(Crontab {
        minute: next(),
        hour: next(),
        day_of_month: next(),
        month_of_year: next(),
        day_of_week: next(),
        cron: std::sync::Arc::new(cron),
        min_period,
    })
}

/// The shortest gap between consecutive fire times over the 200 fires after 2026-01-01
/// (UTC).
fn min_period_of(cron: &Cron) -> Option<u64> {
    let start = DateTime::<Utc>::from_timestamp(1_767_225_600, 0)?;
    let times: Vec<i64> = cron
        .iter_after(start.with_timezone(&chrono_tz::UTC))
        .take(200)
        .map(|t| t.timestamp())
        .collect();
    times
        .windows(2)
        .filter_map(|w| u64::try_from(w[1] - w[0]).ok())
        .min()
}

/// Parses an IANA time zone name.
///
/// # Errors
/// A message with a suggestion when the name is unknown.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        let hint = super::did_you_mean(name, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_else(|| "; expected an IANA name such as `UTC` or `Europe/Berlin`".into());
        format!("unknown time zone `{name}`{hint}")
    })
}

/// The default `grace` of a schedule firing every `period_secs`: 10 % of it, bounded to
/// 1 minute – 1 hour and to the period itself.
pub fn default_grace_secs(period_secs: u64) -> u64 {
    (period_secs / 10).clamp(60, 3600).min(period_secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("5m1h").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1w").is_err());
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(86_401), "1d1s");
    }

    #[test]
    fn cron_follows_celery_fields() {
        let c = parse_cron("*/15  3 * * mon-fri").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.expression(), "*/15 3 * * 1-5");
        let sunday = parse_cron("0 3 * * 7").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sunday.day_of_week, "0");
        assert!(parse_cron("0 3 * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("0 0 L * *").is_err());
        assert!(parse_cron("0 0 31 2 *").is_err());
        assert!(parse_cron("5/10 * * * *").is_err());
        assert!(parse_cron("0 0 * * 5#3").is_err());
    }

    #[test]
    fn sunday_as_seven_inside_ranges_and_names_with_l_or_w() {
        let dow = |e: &str| {
            parse_cron(e)
                .map(|c| c.day_of_week)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(dow("0 3 * * 5-7"), "0,5-6");
        assert_eq!(dow("0 3 * * 6-7"), "0,6");
        assert_eq!(dow("0 3 * * 7-7"), "0");
        assert_eq!(dow("0 3 * * 0-7"), "*");
        assert_eq!(dow("0 3 * * */2"), "0,2,4,6");
        assert_eq!(dow("0 3 * * Wed,FRI"), "3,5");
        assert_eq!(dow("0 3 * * mon-fri"), "1-5");
        let jul = parse_cron("0 3 * JUL *")
            .map(|c| c.month_of_year)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jul, "7");
    }

    #[test]
    fn day_of_month_and_day_of_week_must_both_match() {
        // Celery ANDs the fields: the 13th only when it is a Friday.
        let c = parse_cron("0 0 13 * fri").unwrap_or_else(|e| panic!("{e}"));
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let next = c.next_fire_times(chrono_tz::UTC, now, 2);
        let days: Vec<String> = next
            .iter()
            .map(|d| d.format("%Y-%m-%d %a").to_string())
            .collect();
        assert_eq!(days, vec!["2026-02-13 Fri", "2026-03-13 Fri"]);
    }

    #[test]
    fn fire_times_are_in_the_schedule_time_zone() {
        let c = parse_cron("0 3 * * *").unwrap_or_else(|e| panic!("{e}"));
        let now = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let tz = parse_timezone("Europe/Berlin").unwrap_or_else(|e| panic!("{e}"));
        let next = c.next_fire_times(tz, now, 1);
        assert_eq!(next[0].to_rfc3339(), "2026-06-02T03:00:00+02:00");
    }

    #[test]
    fn unknown_time_zones_get_a_suggestion() {
        let e = parse_timezone("Europe/Berln").err().unwrap_or_default();
        assert!(e.contains("Europe/Berlin"), "{e}");
    }
}
