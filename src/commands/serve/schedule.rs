//! When a plan or a repository job runs: a cron pattern (seconds optional, parsed by
//! `croner`) in a time zone, or a fixed interval (`every 6h`).
use chrono::{DateTime, FixedOffset, Local, TimeZone, Utc};
use std::str::FromStr;
use std::time::Duration;

/// A schedule as a configuration file writes it.
#[derive(Clone, Debug)]
pub enum Schedule {
    Cron(Box<croner::Cron>),
    Every(Duration),
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Schedule, String> {
        if let Some(interval) = text.strip_prefix("every ") {
            let every = humantime::parse_duration(interval.trim())
                .map_err(|e| format!("invalid interval {interval:?}: {e}"))?;
            return match every.is_zero() {
                true => Err("the interval must be longer than zero".to_string()),
                false => Ok(Schedule::Every(every)),
            };
        }
        let cron = text
            .parse::<croner::Cron>()
            .map_err(|e| format!("invalid cron pattern {text:?}: {e}"))?;
        Ok(Schedule::Cron(Box::new(cron)))
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Schedule, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The time zone a cron pattern is read in: `local` (the default), `UTC`, a fixed offset
/// such as `+02:00`, or a named zone of the IANA database such as `Europe/Paris` (its
/// daylight saving time followed).
#[derive(Clone, Copy, Debug, Default)]
pub enum Zone {
    #[default]
    Local,
    Utc,
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl FromStr for Zone {
    type Err = String;
    fn from_str(text: &str) -> Result<Zone, String> {
        match text {
            "local" => Ok(Zone::Local),
            "UTC" | "utc" => Ok(Zone::Utc),
            _ => (text.parse::<FixedOffset>().map(Zone::Fixed))
                .or_else(|_| text.parse::<chrono_tz::Tz>().map(Zone::Named))
                .map_err(|_| {
                    format!(
                        "invalid time zone {text:?}: use local, UTC, an offset like +02:00 \
                         or a zone name like Europe/Paris"
                    )
                }),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Cron(cron) => write!(f, "{cron}"),
            Schedule::Every(every) => write!(f, "every {}", humantime::format_duration(*every)),
        }
    }
}

impl Schedule {
    /// The first time strictly after `after` that the schedule names.
    pub fn next_after(&self, after: DateTime<Utc>, zone: Zone) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(every) => Some(after + chrono::Duration::from_std(*every).ok()?),
            Schedule::Cron(cron) => match zone {
                Zone::Local => next_in(cron, after, &Local),
                Zone::Utc => next_in(cron, after, &Utc),
                Zone::Fixed(offset) => next_in(cron, after, &offset),
                Zone::Named(tz) => next_in(cron, after, &tz),
            },
        }
    }

    /// How long one period of the schedule is, measured after `now`: what "stale" counts in.
    pub fn interval(&self, now: DateTime<Utc>, zone: Zone) -> Option<Duration> {
        let first = self.next_after(now, zone)?;
        let second = self.next_after(first, zone)?;
        (second - first).to_std().ok()
    }
}

fn next_in<Tz: TimeZone>(
    cron: &croner::Cron,
    after: DateTime<Utc>,
    zone: &Tz,
) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(zone);
    let next = cron.find_next_occurrence(&local, false).ok()?;
    Some(next.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn cron_takes_optional_seconds_and_intervals_take_units() {
        let s: Schedule = "*/10 * * * * *".parse().unwrap();
        let next = s.next_after(at("2026-01-01T00:00:05Z"), Zone::Utc);
        assert_eq!(next, Some(at("2026-01-01T00:00:10Z")));
        let s: Schedule = "0 3 * * *".parse().unwrap();
        let next = s.next_after(at("2026-01-01T04:00:00Z"), Zone::Utc);
        assert_eq!(next, Some(at("2026-01-02T03:00:00Z")));
        let s: Schedule = "every 6h".parse().unwrap();
        assert_eq!(
            s.interval(at("2026-01-01T00:00:00Z"), Zone::Utc),
            Some(Duration::from_secs(6 * 3600))
        );
    }

    #[test]
    fn a_fixed_offset_moves_the_cron_hour() {
        let s: Schedule = "0 3 * * *".parse().unwrap();
        let zone: Zone = "+02:00".parse().unwrap();
        let next = s.next_after(at("2026-01-01T00:00:00Z"), zone);
        assert_eq!(next, Some(at("2026-01-01T01:00:00Z")));
    }

    #[test]
    fn a_named_zone_follows_its_daylight_saving_time() {
        let s: Schedule = "0 3 * * *".parse().unwrap();
        let paris: Zone = "Europe/Paris".parse().unwrap();
        let winter = s.next_after(at("2026-01-01T00:00:00Z"), paris);
        assert_eq!(winter, Some(at("2026-01-01T02:00:00Z")), "UTC+1 in winter");
        let summer = s.next_after(at("2026-07-01T00:00:00Z"), paris);
        assert_eq!(summer, Some(at("2026-07-01T01:00:00Z")), "UTC+2 in summer");
    }

    #[test]
    fn bad_patterns_are_refused_with_the_text() {
        let e = "61 * * * *".parse::<Schedule>().unwrap_err();
        assert!(e.contains("61 * * * *"), "{e}");
        assert!("every soon".parse::<Schedule>().is_err());
        assert!("every 0s".parse::<Schedule>().is_err());
        assert!("Mars/Olympus".parse::<Zone>().is_err());
    }
}
