//! Schedules in words ("every night at 1:30am", "weekly") as cron expressions.

use super::error::ComposeError;
use regex::Captures;

/// The cron expression of a schedule phrase matched by [`super::phrases::SCHEDULE`].
pub(super) fn cron_of(captures: &Captures<'_>) -> Result<String, ComposeError> {
    let when = captures[1].to_ascii_lowercase();
    let when = when.split_whitespace().collect::<Vec<_>>().join(" ");
    let explicit_hour = captures.get(2).is_some();
    let (hour, minute) = time_of(captures, &when)?;
    let weekday = DAYS
        .iter()
        .position(|day| when.contains(day))
        .map(|day| day.to_string());
    Ok(if when.contains("hour") {
        format!("{minute} * * * *")
    } else if let Some(day) = weekday {
        format!("{minute} {hour} * * {day}")
    } else if when.contains("week") {
        format!("{minute} {hour} * * 1")
    } else if when.contains("night") && !explicit_hour {
        // Nightly: 03:00 UTC unless a time is given.
        format!("{minute} 3 * * *")
    } else {
        format!("{minute} {hour} * * *")
    })
}

/// The days of the week, from Sunday (0 in cron).
const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// The hour (24-hour clock) and minute the captures give; 06:00 for a
/// morning, else midnight, when no time is given.
fn time_of(captures: &Captures<'_>, when: &str) -> Result<(u32, u32), ComposeError> {
    let bad_time = || ComposeError::BadTime(captures[0].to_string());
    let mut hour: u32 = match captures.get(2) {
        Some(hour) => hour.as_str().parse().map_err(|_| bad_time())?,
        None if when.contains("morning") => 6,
        None => 0,
    };
    let minute: u32 = match captures.get(3) {
        Some(minute) => minute.as_str().parse().map_err(|_| bad_time())?,
        None => 0,
    };
    match captures.get(4).map(|m| m.as_str().to_ascii_lowercase()) {
        Some(suffix) if suffix == "pm" && hour < 12 => hour += 12,
        Some(suffix) if suffix == "am" && hour == 12 => hour = 0,
        _ => {}
    }
    if hour > 23 || minute > 59 {
        return Err(bad_time());
    }
    Ok((hour, minute))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::phrases::SCHEDULE;

    #[test]
    fn times_become_cron() {
        let cron = |text: &str| {
            let captures = SCHEDULE.captures(text).expect("a schedule");
            cron_of(&captures)
        };
        assert_eq!(cron("every night").unwrap(), "0 3 * * *");
        assert_eq!(cron("every night at 1:30am").unwrap(), "30 1 * * *");
        assert_eq!(cron("daily at 6pm").unwrap(), "0 18 * * *");
        assert_eq!(cron("every hour").unwrap(), "0 * * * *");
        assert_eq!(cron("every friday at 17").unwrap(), "0 17 * * 5");
        assert_eq!(cron("weekly").unwrap(), "0 0 * * 1");
        assert!(matches!(cron("daily at 25"), Err(ComposeError::BadTime(_))));
    }
}
