//! Retention policies: which snapshots `forget` keeps and why. Pure logic (no I/O, no clock,
//! no time zone of its own): callers pass the snapshots, the policy, the time zone whose
//! calendar defines hours, days, weeks, months and years, and the current time.
use crate::repo::id::SnapshotId;
use crate::repo::snapshot::Snapshot;
use chrono::{
    DateTime, Datelike, Days, Months, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid count {0:?}: use a whole number, -1 or `unlimited`")]
    Count(String),
    #[error("invalid duration {0:?}: use a number followed by y, m, d or h, e.g. 1y6m or 7d12h")]
    Span(String),
    #[error("invalid --group-by {0:?}: use a comma-separated list of host, paths and tags, or ''")]
    GroupBy(String),
    #[error("no policy: give at least one --keep-* option (or snapshot ids to remove)")]
    Empty,
    #[error("refusing to remove every snapshot of group {0}: none matches the policy")]
    WouldEmptyGroup(String),
}

/// How many buckets a counting rule keeps; `Limit(0)` (the default) turns the rule off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Limit(u32),
    Unlimited,
}

impl Default for Count {
    fn default() -> Count {
        Count::Limit(0)
    }
}

impl Count {
    fn active(self) -> bool {
        self != Count::Limit(0)
    }

    fn use_one(&mut self) {
        if let Count::Limit(n) = self {
            *n -= 1;
        }
    }
}

impl FromStr for Count {
    type Err = PolicyError;
    /// A whole number; `-1` or `unlimited` keeps every bucket.
    fn from_str(s: &str) -> Result<Count, PolicyError> {
        match s {
            "-1" | "unlimited" => Ok(Count::Unlimited),
            _ => s
                .parse()
                .map(Count::Limit)
                .map_err(|_| PolicyError::Count(s.to_string())),
        }
    }
}

/// A count in a configuration file: a whole number (`-1` keeps every bucket) or the text
/// the command line takes.
impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(i64),
            Text(String),
        }
        let text = match Given::deserialize(d)? {
            Given::Number(n) => n.to_string(),
            Given::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A value a configuration file writes as the text the command line takes.
fn from_text<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        from_text(d)
    }
}

impl<'de> Deserialize<'de> for TagList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TagList, D::Error> {
        from_text(d)
    }
}

/// A calendar span as restic writes it (`1y2m3d4h`): years and months are subtracted from
/// the calendar date, days are calendar days, hours are exact hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl FromStr for Span {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Span, PolicyError> {
        let bad = || PolicyError::Span(s.to_string());
        let mut span = Span::default();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let n: u32 = rest[..digits].parse().map_err(|_| bad())?;
            let field = match rest.as_bytes()[digits] {
                b'y' => &mut span.years,
                b'm' => &mut span.months,
                b'd' => &mut span.days,
                b'h' => &mut span.hours,
                _ => return Err(bad()),
            };
            *field = field.checked_add(n).ok_or_else(bad)?;
            rest = &rest[digits + 1..];
        }
        match span == Span::default() {
            true => Err(bad()),
            false => Ok(span),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ];
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{unit}")?;
        }
        Ok(())
    }
}

/// Tags that must all be present (`a,b`); the empty list matches untagged snapshots only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagList(pub Vec<String>);

impl FromStr for TagList {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<TagList, Self::Err> {
        let tags = s.split(',').filter(|t| !t.is_empty()).map(String::from);
        Ok(TagList(tags.collect()))
    }
}

impl TagList {
    fn matches(&self, s: &Snapshot) -> bool {
        match self.0.is_empty() {
            true => s.tags.is_empty(),
            false => self.0.iter().all(|t| s.has_tag(t)),
        }
    }
}

impl fmt::Display for TagList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("no tags"),
            false => write!(f, "tags {}", self.0.join(",")),
        }
    }
}

/// The calendar unit of a counting rule; `Last` puts every snapshot in a bucket of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket of a snapshot taken at local time `t`, `nr`-th newest in its group.
    fn bucket<Tz: TimeZone>(self, t: &DateTime<Tz>, nr: usize) -> i64 {
        let day = i64::from(t.num_days_from_ce());
        match self {
            Period::Last => nr as i64,
            Period::Hourly => day * 24 + i64::from(t.hour()),
            Period::Daily => day,
            Period::Weekly => i64::from(t.iso_week().year()) * 100 + i64::from(t.iso_week().week()),
            Period::Monthly => i64::from(t.year()) * 12 + i64::from(t.month0()),
            Period::Yearly => i64::from(t.year()),
        }
    }
}

/// What to keep. A snapshot is kept when any rule keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
    pub within: Option<Span>,
    pub tags: Vec<TagList>,
}

impl Policy {
    /// True when no rule would keep anything: applying it is refused.
    pub(crate) fn is_empty(&self) -> bool {
        self.counters().iter().all(|c| !c.left.active())
            && self.within.is_none()
            && self.tags.is_empty()
    }

    fn counters(&self) -> [Counter; 6] {
        [
            (Period::Last, self.last),
            (Period::Hourly, self.hourly),
            (Period::Daily, self.daily),
            (Period::Weekly, self.weekly),
            (Period::Monthly, self.monthly),
            (Period::Yearly, self.yearly),
        ]
        .map(|(period, left)| Counter {
            period,
            left,
            last_bucket: None,
        })
    }
}

/// A counting rule while a group is walked newest first.
struct Counter {
    period: Period,
    left: Count,
    last_bucket: Option<i64>,
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The newest snapshot of a bucket of this rule.
    Period(Period),
    /// The group's oldest snapshot, kept because this rule had buckets left over.
    Oldest(Period),
    Within(Span),
    Tags(TagList),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Period(p) => write!(f, "{} snapshot", p.name()),
            Reason::Oldest(p) => write!(f, "oldest {} snapshot", p.name()),
            Reason::Within(span) => write!(f, "within {span}"),
            Reason::Tags(tags) => write!(f, "has {tags}"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which snapshot fields split snapshots into groups that the policy treats separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> GroupBy {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = PolicyError;
    /// `host,paths,tags` in any order and combination; `''` makes one group of everything.
    fn from_str(s: &str) -> Result<GroupBy, PolicyError> {
        let mut by = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for field in s.split(',').filter(|f| !f.is_empty()) {
            match field {
                "host" => by.host = true,
                "paths" => by.paths = true,
                "tags" => by.tags = true,
                _ => return Err(PolicyError::GroupBy(s.to_string())),
            }
        }
        Ok(by)
    }
}

/// What the snapshots of one group share (fields not grouped by are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(s: &Snapshot, by: GroupBy) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            host: by.host.then(|| s.host.clone()),
            paths: by.paths.then(|| sorted(&s.paths)),
            tags: by.tags.then(|| sorted(&s.tags)),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(paths) = &self.paths {
            parts.push(format!("paths {}", paths.join(" ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags {}", tags.join(",")));
        }
        match parts.is_empty() {
            true => f.write_str("(all snapshots)"),
            false => f.write_str(&parts.join(", ")),
        }
    }
}

pub type Entry = (SnapshotId, Snapshot);

#[derive(Debug)]
pub struct Kept<'a> {
    pub snapshot: &'a Entry,
    pub reasons: Vec<Reason>,
}

/// The verdict for one group; both lists are newest first.
#[derive(Debug)]
pub struct Group<'a> {
    pub key: GroupKey,
    pub keep: Vec<Kept<'a>>,
    pub remove: Vec<&'a Entry>,
}

/// Applies `policy` to every group of `snapshots`, passing MongoDB oplog slices by (they
/// are not backups of their own: see `sources::mongodb::retention`). Calendar buckets are
/// those of `tz`; `now` only matters for `within`, which ignores snapshots from the future
/// when it looks for a group's newest snapshot. Groups come sorted by key.
pub(crate) fn apply<'a, Tz: TimeZone>(
    snapshots: &'a [Entry],
    policy: &Policy,
    by: GroupBy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<Vec<Group<'a>>, PolicyError> {
    if policy.is_empty() {
        return Err(PolicyError::Empty);
    }
    let mut groups: BTreeMap<GroupKey, Vec<&Entry>> = BTreeMap::new();
    for entry in snapshots.iter().filter(|(_, s)| !s.is_oplog_slice()) {
        groups
            .entry(GroupKey::of(&entry.1, by))
            .or_default()
            .push(entry);
    }
    groups
        .into_iter()
        .map(|(key, list)| apply_to_group(key, list, policy, tz, now))
        .collect()
}

fn apply_to_group<'a, Tz: TimeZone>(
    key: GroupKey,
    mut list: Vec<&'a Entry>,
    policy: &Policy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<Group<'a>, PolicyError> {
    list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(&b.0)));
    let cutoff = policy
        .within
        .map(|span| cutoff(newest_past(&list, now), span, tz));
    let mut counters = policy.counters();
    let mut group = Group {
        key,
        keep: Vec::new(),
        remove: Vec::new(),
    };
    let oldest = list.len() - 1;
    for (nr, entry) in list.into_iter().enumerate() {
        let mut reasons = fixed_reasons(&entry.1, policy, cutoff);
        let local = entry.1.time.with_timezone(tz);
        for counter in &mut counters {
            reasons.extend(count(counter, &local, nr, nr == oldest));
        }
        match reasons.is_empty() {
            true => group.remove.push(entry),
            false => group.keep.push(Kept {
                snapshot: entry,
                reasons,
            }),
        }
    }
    match group.keep.is_empty() {
        true => Err(PolicyError::WouldEmptyGroup(group.key.to_string())),
        false => Ok(group),
    }
}

/// Reasons that do not depend on the other snapshots: tags, and `within`.
fn fixed_reasons(s: &Snapshot, policy: &Policy, cutoff: Option<DateTime<Utc>>) -> Vec<Reason> {
    let mut reasons: Vec<Reason> = (policy.tags.iter())
        .filter(|tags| tags.matches(s))
        .map(|tags| Reason::Tags(tags.clone()))
        .collect();
    if let (Some(span), Some(cutoff)) = (policy.within, cutoff)
        && s.time > cutoff
    {
        reasons.push(Reason::Within(span));
    }
    reasons
}

/// Feeds one snapshot to a counting rule: it keeps the snapshot when the snapshot opens a
/// new bucket, or is the group's oldest while the rule still has buckets left.
fn count<Tz: TimeZone>(
    counter: &mut Counter,
    local: &DateTime<Tz>,
    nr: usize,
    is_oldest: bool,
) -> Option<Reason> {
    if !counter.left.active() {
        return None;
    }
    let bucket = counter.period.bucket(local, nr);
    let opens = counter.last_bucket != Some(bucket);
    if !opens && !is_oldest {
        return None;
    }
    counter.last_bucket = Some(bucket);
    counter.left.use_one();
    Some(match opens {
        true => Reason::Period(counter.period),
        false => Reason::Oldest(counter.period),
    })
}

/// The time of the newest snapshot that is not in the future (the minimum time when all
/// are, so that `within` then keeps them all). `list` is sorted newest first.
fn newest_past(list: &[&Entry], now: DateTime<Utc>) -> DateTime<Utc> {
    (list.iter())
        .map(|e| e.1.time)
        .find(|t| *t <= now)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `newest` minus `span`: years and months on the calendar of `tz` (a day that does not
/// exist in the target month becomes that month's last day), then calendar days, then hours.
pub(crate) fn cutoff<Tz: TimeZone>(newest: DateTime<Utc>, span: Span, tz: &Tz) -> DateTime<Utc> {
    let local = newest.with_timezone(tz);
    let months = span
        .years
        .checked_mul(12)
        .and_then(|m| m.checked_add(span.months));
    let naive = months
        .and_then(|m| local.naive_local().checked_sub_months(Months::new(m)))
        .and_then(|n| n.checked_sub_days(Days::new(span.days.into())));
    let Some(naive) = naive else {
        return DateTime::<Utc>::MIN_UTC;
    };
    let offset = local.offset().fix();
    let start = in_zone(naive, tz).unwrap_or_else(|| (naive - offset).and_utc());
    start
        .checked_sub_signed(TimeDelta::hours(span.hours.into()))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A local wall-clock time as UTC: the earlier of two when clocks went back, none when the
/// clocks skipped it.
fn in_zone<Tz: TimeZone>(naive: NaiveDateTime, tz: &Tz) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::id::Id;
    use chrono::{FixedOffset, SecondsFormat};

    const NOW: &str = "2030-01-01T00:00:00Z";

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("test time {text:?}: {e}"))
            .with_timezone(&Utc)
    }

    fn show(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// Snapshot number `nr` (its id is `nr` repeated) of `host` and `paths`, from a spec
    /// `TIME` or `TIME #tag,tag`.
    pub(crate) fn snap(nr: usize, spec: &str, host: &str, paths: &[&str]) -> Entry {
        let (time, tags) = spec.split_once(" #").unwrap_or((spec, ""));
        let tags = tags.split(',').filter(|t| !t.is_empty()).map(String::from);
        let snapshot = Snapshot {
            time: utc(time),
            host: host.into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            tags: tags.collect(),
            parent: None,
            original: None,
            tree: crate::repo::id::TreeId(Id::hash_of(b"tree")),
            sources: Vec::new(),
            summary: Default::default(),
            program_version: "test".into(),
        };
        (SnapshotId(Id([nr as u8; 32])), snapshot)
    }

    /// One host and path: a single group under the default grouping.
    fn history(specs: &[&str]) -> Vec<Entry> {
        (specs.iter().enumerate())
            .map(|(nr, spec)| snap(nr + 1, spec, "h", &["/data"]))
            .collect()
    }

    /// A policy from `(rule, value)` pairs, parsed as the command line parses them.
    fn keep(rules: &[(&str, &str)]) -> Policy {
        let mut p = Policy::default();
        for (rule, value) in rules {
            let count = || value.parse::<Count>().unwrap();
            match *rule {
                "last" => p.last = count(),
                "hourly" => p.hourly = count(),
                "daily" => p.daily = count(),
                "weekly" => p.weekly = count(),
                "monthly" => p.monthly = count(),
                "yearly" => p.yearly = count(),
                "within" => p.within = Some(value.parse().unwrap()),
                "tag" => p.tags.push(value.parse().unwrap()),
                other => panic!("test bug: rule {other}"),
            }
        }
        p
    }

    fn zone(hours: i32) -> FixedOffset {
        FixedOffset::east_opt(hours * 3600).unwrap()
    }

    /// (time, "reason, reason") of each kept snapshot, and the times removed; newest first.
    type Verdict = (Vec<(String, String)>, Vec<String>);

    fn verdict(g: &Group) -> Verdict {
        let keep = (g.keep.iter())
            .map(|k| {
                let reasons: Vec<String> = k.reasons.iter().map(Reason::to_string).collect();
                (show(k.snapshot.1.time), reasons.join(", "))
            })
            .collect();
        let remove = g.remove.iter().map(|e| show(e.1.time)).collect();
        (keep, remove)
    }

    struct Case {
        name: &'static str,
        /// `TIME` or `TIME #tags`, any order.
        snapshots: &'static [&'static str],
        policy: &'static [(&'static str, &'static str)],
        /// The time zone's offset from UTC in hours.
        zone: i32,
        /// (time, reasons) of the snapshots kept, newest first; the rest must be removed.
        keep: &'static [(&'static str, &'static str)],
    }

    const CASES: &[Case] = &[
        Case {
            name: "last keeps the N newest",
            snapshots: &[
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
                "2024-01-01T12:00:00Z",
                "2024-01-01T13:00:00Z",
                "2024-01-01T14:00:00Z",
            ],
            policy: &[("last", "3")],
            zone: 0,
            keep: &[
                ("2024-01-01T14:00:00Z", "last snapshot"),
                ("2024-01-01T13:00:00Z", "last snapshot"),
                ("2024-01-01T12:00:00Z", "last snapshot"),
            ],
        },
        Case {
            name: "last -1 keeps everything",
            snapshots: &["2024-01-01T10:00:00Z", "2020-01-01T11:00:00Z"],
            policy: &[("last", "-1")],
            zone: 0,
            keep: &[
                ("2024-01-01T10:00:00Z", "last snapshot"),
                ("2020-01-01T11:00:00Z", "last snapshot"),
            ],
        },
        Case {
            name: "last larger than the history keeps all, none as `oldest`",
            snapshots: &["2024-01-01T10:00:00Z", "2024-01-01T10:00:01Z"],
            policy: &[("last", "10")],
            zone: 0,
            keep: &[
                ("2024-01-01T10:00:01Z", "last snapshot"),
                ("2024-01-01T10:00:00Z", "last snapshot"),
            ],
        },
        Case {
            name: "hourly: the newest of each hour, hours end at :59:59",
            snapshots: &[
                "2024-01-01T09:30:00Z",
                "2024-01-01T10:00:00Z",
                "2024-01-01T10:59:59Z",
                "2024-01-01T11:00:00Z",
                "2024-01-01T11:30:00Z",
            ],
            policy: &[("hourly", "2")],
            zone: 0,
            keep: &[
                ("2024-01-01T11:30:00Z", "hourly snapshot"),
                ("2024-01-01T10:59:59Z", "hourly snapshot"),
            ],
        },
        Case {
            name: "buckets left over keep the oldest snapshot as well",
            snapshots: &["2024-01-01T10:00:00Z", "2024-01-01T10:30:00Z"],
            policy: &[("hourly", "5")],
            zone: 0,
            keep: &[
                ("2024-01-01T10:30:00Z", "hourly snapshot"),
                ("2024-01-01T10:00:00Z", "oldest hourly snapshot"),
            ],
        },
        Case {
            name: "no buckets left: the oldest goes",
            snapshots: &[
                "2024-01-01T10:00:00Z",
                "2024-01-01T12:00:00Z",
                "2024-01-02T10:00:00Z",
            ],
            policy: &[("daily", "2")],
            zone: 0,
            keep: &[
                ("2024-01-02T10:00:00Z", "daily snapshot"),
                ("2024-01-01T12:00:00Z", "daily snapshot"),
            ],
        },
        Case {
            name: "daily: midnight starts a new day",
            snapshots: &[
                "2024-01-01T12:00:00Z",
                "2024-01-01T23:59:59Z",
                "2024-01-02T00:00:00Z",
                "2024-01-02T12:00:00Z",
            ],
            policy: &[("daily", "2")],
            zone: 0,
            keep: &[
                ("2024-01-02T12:00:00Z", "daily snapshot"),
                ("2024-01-01T23:59:59Z", "daily snapshot"),
            ],
        },
        Case {
            name: "daily in UTC: 21:00 and 23:00 share January 1st",
            snapshots: &[
                "2023-12-31T12:00:00Z",
                "2024-01-01T21:00:00Z",
                "2024-01-01T23:00:00Z",
                "2024-01-02T10:00:00Z",
            ],
            policy: &[("daily", "3")],
            zone: 0,
            keep: &[
                ("2024-01-02T10:00:00Z", "daily snapshot"),
                ("2024-01-01T23:00:00Z", "daily snapshot"),
                ("2023-12-31T12:00:00Z", "daily snapshot"),
            ],
        },
        Case {
            name: "daily at UTC+2: 23:00Z is already January 2nd",
            snapshots: &[
                "2023-12-31T12:00:00Z",
                "2024-01-01T21:00:00Z",
                "2024-01-01T23:00:00Z",
                "2024-01-02T10:00:00Z",
            ],
            policy: &[("daily", "3")],
            zone: 2,
            keep: &[
                ("2024-01-02T10:00:00Z", "daily snapshot"),
                ("2024-01-01T21:00:00Z", "daily snapshot"),
                ("2023-12-31T12:00:00Z", "daily snapshot"),
            ],
        },
        Case {
            name: "daily at UTC-5: 03:00Z is still the previous day",
            snapshots: &["2024-03-10T03:00:00Z", "2024-03-10T06:00:00Z"],
            policy: &[("daily", "1")],
            zone: -5,
            keep: &[("2024-03-10T06:00:00Z", "daily snapshot")],
        },
        Case {
            name: "only days with snapshots count",
            snapshots: &[
                "2024-01-01T12:00:00Z",
                "2024-01-05T12:00:00Z",
                "2024-01-10T12:00:00Z",
                "2024-01-20T12:00:00Z",
            ],
            policy: &[("daily", "3")],
            zone: 0,
            keep: &[
                ("2024-01-20T12:00:00Z", "daily snapshot"),
                ("2024-01-10T12:00:00Z", "daily snapshot"),
                ("2024-01-05T12:00:00Z", "daily snapshot"),
            ],
        },
        Case {
            name: "weekly: ISO weeks run Monday to Sunday",
            snapshots: &[
                "2024-01-06T12:00:00Z",
                "2024-01-07T23:59:59Z",
                "2024-01-08T00:00:00Z",
            ],
            policy: &[("weekly", "2")],
            zone: 0,
            keep: &[
                ("2024-01-08T00:00:00Z", "weekly snapshot"),
                ("2024-01-07T23:59:59Z", "weekly snapshot"),
            ],
        },
        Case {
            name: "weekly: ISO week 53 of 2020 spans the new year",
            snapshots: &[
                "2020-12-20T12:00:00Z",
                "2020-12-28T12:00:00Z",
                "2021-01-03T12:00:00Z",
                "2021-01-04T12:00:00Z",
            ],
            policy: &[("weekly", "3")],
            zone: 0,
            keep: &[
                ("2021-01-04T12:00:00Z", "weekly snapshot"),
                ("2021-01-03T12:00:00Z", "weekly snapshot"),
                ("2020-12-20T12:00:00Z", "weekly snapshot"),
            ],
        },
        Case {
            name: "monthly: the newest of each month",
            snapshots: &[
                "2023-12-15T00:00:00Z",
                "2024-01-31T23:59:59Z",
                "2024-02-01T00:00:00Z",
                "2024-02-15T00:00:00Z",
            ],
            policy: &[("monthly", "2")],
            zone: 0,
            keep: &[
                ("2024-02-15T00:00:00Z", "monthly snapshot"),
                ("2024-01-31T23:59:59Z", "monthly snapshot"),
            ],
        },
        Case {
            name: "monthly at UTC+1: 23:30Z on January 31st is in February",
            snapshots: &["2024-01-31T22:30:00Z", "2024-01-31T23:30:00Z"],
            policy: &[("monthly", "2")],
            zone: 1,
            keep: &[
                ("2024-01-31T23:30:00Z", "monthly snapshot"),
                ("2024-01-31T22:30:00Z", "monthly snapshot"),
            ],
        },
        Case {
            name: "yearly: the newest of each year",
            snapshots: &[
                "2022-06-01T00:00:00Z",
                "2023-12-31T23:59:59Z",
                "2024-01-01T00:00:00Z",
            ],
            policy: &[("yearly", "2")],
            zone: 0,
            keep: &[
                ("2024-01-01T00:00:00Z", "yearly snapshot"),
                ("2023-12-31T23:59:59Z", "yearly snapshot"),
            ],
        },
        Case {
            name: "yearly unlimited keeps one a year",
            snapshots: &[
                "2021-03-01T00:00:00Z",
                "2021-06-01T00:00:00Z",
                "2022-06-01T00:00:00Z",
                "2023-06-01T00:00:00Z",
            ],
            policy: &[("yearly", "unlimited")],
            zone: 0,
            keep: &[
                ("2023-06-01T00:00:00Z", "yearly snapshot"),
                ("2022-06-01T00:00:00Z", "yearly snapshot"),
                ("2021-06-01T00:00:00Z", "yearly snapshot"),
                ("2021-03-01T00:00:00Z", "oldest yearly snapshot"),
            ],
        },
        Case {
            name: "within is measured from the newest snapshot, not from now, and excludes the edge",
            snapshots: &[
                "2024-05-09T12:00:00Z",
                "2024-05-09T12:00:01Z",
                "2024-05-10T12:00:00Z",
            ],
            policy: &[("within", "1d")],
            zone: 0,
            keep: &[
                ("2024-05-10T12:00:00Z", "within 1d"),
                ("2024-05-09T12:00:01Z", "within 1d"),
            ],
        },
        Case {
            name: "within 1m from March 31st reaches back to February 29th",
            snapshots: &[
                "2024-02-29T12:00:00Z",
                "2024-02-29T12:00:01Z",
                "2024-03-31T12:00:00Z",
            ],
            policy: &[("within", "1m")],
            zone: 0,
            keep: &[
                ("2024-03-31T12:00:00Z", "within 1m"),
                ("2024-02-29T12:00:01Z", "within 1m"),
            ],
        },
        Case {
            name: "within 1y from February 29th reaches back to February 28th",
            snapshots: &[
                "2023-02-28T00:00:00Z",
                "2023-02-28T00:00:01Z",
                "2024-02-29T00:00:00Z",
            ],
            policy: &[("within", "1y")],
            zone: 0,
            keep: &[
                ("2024-02-29T00:00:00Z", "within 1y"),
                ("2023-02-28T00:00:01Z", "within 1y"),
            ],
        },
        Case {
            name: "within 1d2h subtracts the day and then two hours",
            snapshots: &[
                "2024-05-09T10:00:00Z",
                "2024-05-09T10:00:01Z",
                "2024-05-10T12:00:00Z",
            ],
            policy: &[("within", "1d2h")],
            zone: 0,
            keep: &[
                ("2024-05-10T12:00:00Z", "within 1d2h"),
                ("2024-05-09T10:00:01Z", "within 1d2h"),
            ],
        },
        Case {
            name: "within ignores snapshots from the future when finding the newest",
            snapshots: &[
                "2024-01-01T00:00:00Z",
                "2024-01-05T00:00:00Z",
                "2031-01-01T00:00:00Z",
            ],
            policy: &[("within", "2d")],
            zone: 0,
            keep: &[
                ("2031-01-01T00:00:00Z", "within 2d"),
                ("2024-01-05T00:00:00Z", "within 2d"),
            ],
        },
        Case {
            name: "a tag list needs every tag",
            snapshots: &[
                "2024-01-01T00:00:00Z #a",
                "2024-01-02T00:00:00Z #a,b",
                "2024-01-03T00:00:00Z #b,c,a",
                "2024-01-04T00:00:00Z",
            ],
            policy: &[("tag", "a,b")],
            zone: 0,
            keep: &[
                ("2024-01-03T00:00:00Z", "has tags a,b"),
                ("2024-01-02T00:00:00Z", "has tags a,b"),
            ],
        },
        Case {
            name: "tag lists are alternatives; '' means untagged",
            snapshots: &[
                "2024-01-01T00:00:00Z #x",
                "2024-01-02T00:00:00Z #y",
                "2024-01-03T00:00:00Z",
            ],
            policy: &[("tag", "x"), ("tag", "")],
            zone: 0,
            keep: &[
                ("2024-01-03T00:00:00Z", "has no tags"),
                ("2024-01-01T00:00:00Z", "has tags x"),
            ],
        },
        Case {
            name: "rules combine: any rule keeps, every rule that keeps is named",
            snapshots: &[
                "2024-01-01T08:00:00Z",
                "2024-01-01T20:00:00Z #x",
                "2024-01-02T08:00:00Z",
                "2024-01-03T08:00:00Z",
                "2024-01-03T20:00:00Z",
            ],
            policy: &[
                ("last", "1"),
                ("daily", "2"),
                ("tag", "x"),
                ("within", "1d"),
            ],
            zone: 0,
            keep: &[
                (
                    "2024-01-03T20:00:00Z",
                    "within 1d, last snapshot, daily snapshot",
                ),
                ("2024-01-03T08:00:00Z", "within 1d"),
                ("2024-01-02T08:00:00Z", "daily snapshot"),
                ("2024-01-01T20:00:00Z", "has tags x"),
            ],
        },
        Case {
            name: "a snapshot opening buckets of several rules counts for each",
            snapshots: &[
                "2023-12-30T12:00:00Z",
                "2023-12-31T12:00:00Z",
                "2024-01-01T12:00:00Z",
            ],
            policy: &[("daily", "1"), ("monthly", "1"), ("yearly", "2")],
            zone: 0,
            keep: &[
                (
                    "2024-01-01T12:00:00Z",
                    "daily snapshot, monthly snapshot, yearly snapshot",
                ),
                ("2023-12-31T12:00:00Z", "yearly snapshot"),
            ],
        },
    ];

    #[test]
    fn policy_table() {
        for case in CASES {
            let entries = history(case.snapshots);
            let policy = keep(case.policy);
            let groups = apply(
                &entries,
                &policy,
                GroupBy::default(),
                &zone(case.zone),
                utc(NOW),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(groups.len(), 1, "{}", case.name);
            let (kept, removed) = verdict(&groups[0]);
            let want: Vec<(String, String)> = (case.keep.iter())
                .map(|(t, r)| (t.to_string(), r.to_string()))
                .collect();
            assert_eq!(kept, want, "{}: kept", case.name);
            let mut want_removed: Vec<String> = (entries.iter())
                .map(|e| show(e.1.time))
                .filter(|t| want.iter().all(|(k, _)| k != t))
                .collect();
            want_removed.sort_by(|a, b| b.cmp(a));
            assert_eq!(removed, want_removed, "{}: removed", case.name);
        }
    }

    /// restic's documented example, scaled down: one snapshot a day for three years.
    #[test]
    fn daily_history_keeps_dailies_weeklies_monthlies_and_yearlies() {
        let start = utc("2021-01-01T12:00:00Z");
        let days: Vec<String> = (0..1095)
            .map(|d| show(start + TimeDelta::days(d)))
            .collect();
        assert_eq!(days.last().unwrap(), "2023-12-31T12:00:00Z");
        let specs: Vec<&str> = days.iter().map(String::as_str).collect();
        let entries = history(&specs);
        let policy = keep(&[
            ("daily", "7"),
            ("weekly", "5"),
            ("monthly", "12"),
            ("yearly", "3"),
        ]);
        let groups = apply(&entries, &policy, GroupBy::default(), &Utc, utc(NOW)).unwrap();
        let (kept, removed) = verdict(&groups[0]);
        let dates: Vec<&str> = kept.iter().map(|(t, _)| &t[..10]).collect();
        let mut want = vec!["2023-12-31", "2023-12-30", "2023-12-29", "2023-12-28"];
        want.extend(["2023-12-27", "2023-12-26", "2023-12-25"]); // 7 dailies
        want.extend(["2023-12-24", "2023-12-17", "2023-12-10", "2023-12-03"]); // Sundays
        want.extend([
            "2023-11-30",
            "2023-10-31",
            "2023-09-30",
            "2023-08-31",
            "2023-07-31",
        ]);
        want.extend([
            "2023-06-30",
            "2023-05-31",
            "2023-04-30",
            "2023-03-31",
            "2023-02-28",
        ]);
        want.extend(["2023-01-31", "2022-12-31", "2021-12-31"]);
        assert_eq!(dates, want);
        assert_eq!(removed.len(), 1095 - 24);
        let all_four = "daily snapshot, weekly snapshot, monthly snapshot, yearly snapshot";
        assert_eq!(kept[0].1, all_four);
        assert_eq!(kept[7].1, "weekly snapshot");
        assert_eq!(kept[21].1, "monthly snapshot");
        assert_eq!(kept[22].1, "yearly snapshot");
        assert_eq!(kept[23].1, "yearly snapshot");
    }

    /// The group keys and the short ids (first byte) kept in each, for `last 1`.
    fn newest_per_group(entries: &[Entry], by: &str) -> Vec<(String, Vec<u8>)> {
        let by: GroupBy = by.parse().unwrap();
        let groups = apply(entries, &keep(&[("last", "1")]), by, &Utc, utc(NOW)).unwrap();
        (groups.iter())
            .map(|g| {
                let kept = g.keep.iter().map(|k| k.snapshot.0.0.0[0]).collect();
                (g.key.to_string(), kept)
            })
            .collect()
    }

    #[test]
    fn groups_are_treated_separately() {
        let entries = vec![
            snap(1, "2024-01-01T00:00:00Z #b,a", "alpha", &["/x", "/y"]),
            snap(2, "2024-01-02T00:00:00Z #a,b", "alpha", &["/y", "/x"]),
            snap(3, "2024-01-03T00:00:00Z", "alpha", &["/z"]),
            snap(4, "2024-01-04T00:00:00Z #a", "beta", &["/x", "/y"]),
            snap(5, "2024-01-05T00:00:00Z", "beta", &["/x", "/y"]),
        ];
        let owned = |v: &[(&str, &[u8])]| -> Vec<(String, Vec<u8>)> {
            v.iter()
                .map(|(k, ids)| (k.to_string(), ids.to_vec()))
                .collect()
        };
        assert_eq!(
            newest_per_group(&entries, "host,paths"),
            owned(&[
                ("host alpha, paths /x /y", &[2]),
                ("host alpha, paths /z", &[3]),
                ("host beta, paths /x /y", &[5]),
            ])
        );
        assert_eq!(
            newest_per_group(&entries, "host"),
            owned(&[("host alpha", &[3]), ("host beta", &[5])])
        );
        assert_eq!(
            newest_per_group(&entries, "paths"),
            owned(&[("paths /x /y", &[5]), ("paths /z", &[3])])
        );
        assert_eq!(
            newest_per_group(&entries, "tags"),
            owned(&[("tags ", &[5]), ("tags a", &[4]), ("tags a,b", &[2])])
        );
        assert_eq!(
            newest_per_group(&entries, "tags,host"),
            owned(&[
                ("host alpha, tags ", &[3]),
                ("host alpha, tags a,b", &[2]),
                ("host beta, tags ", &[5]),
                ("host beta, tags a", &[4]),
            ])
        );
        assert_eq!(
            newest_per_group(&entries, ""),
            owned(&[("(all snapshots)", &[5])])
        );
    }

    #[test]
    fn equal_times_are_ordered_by_id() {
        let entries = vec![
            snap(9, "2024-01-01T00:00:00Z", "h", &["/d"]),
            snap(3, "2024-01-01T00:00:00Z", "h", &["/d"]),
        ];
        let groups = apply(
            &entries,
            &keep(&[("last", "1")]),
            GroupBy::default(),
            &Utc,
            utc(NOW),
        );
        let groups = groups.unwrap();
        assert_eq!(groups[0].keep[0].snapshot.0, SnapshotId(Id([3; 32])));
        assert_eq!(groups[0].remove[0].0, SnapshotId(Id([9; 32])));
    }

    #[test]
    fn an_empty_policy_is_refused() {
        let entries = history(&["2024-01-01T00:00:00Z"]);
        for rules in [
            &[][..],
            &[("last", "0")],
            &[("daily", "0"), ("yearly", "0")],
        ] {
            let err = apply(&entries, &keep(rules), GroupBy::default(), &Utc, utc(NOW));
            assert_eq!(err.unwrap_err(), PolicyError::Empty, "{rules:?}");
        }
        assert!(!keep(&[("tag", "")]).is_empty());
        assert!(!keep(&[("within", "1h")]).is_empty());
        assert!(!keep(&[("yearly", "-1")]).is_empty());
    }

    #[test]
    fn a_group_left_empty_is_refused() {
        let entries = vec![
            snap(1, "2024-01-01T00:00:00Z #keep", "a", &["/d"]),
            snap(2, "2024-01-02T00:00:00Z", "b", &["/d"]),
        ];
        let policy = keep(&[("tag", "keep")]);
        let err = apply(&entries, &policy, GroupBy::default(), &Utc, utc(NOW)).unwrap_err();
        assert_eq!(err, PolicyError::WouldEmptyGroup("host b, paths /d".into()));
        let one_group: GroupBy = "".parse().unwrap();
        let groups = apply(&entries, &policy, one_group, &Utc, utc(NOW)).unwrap();
        assert_eq!(groups[0].remove.len(), 1);
    }

    #[test]
    fn within_cutoff_handles_zones_and_extremes() {
        let newest = utc("2024-03-31T01:30:00Z");
        let span = |s: &str| s.parse::<Span>().unwrap();
        // At UTC+3 it is already 04:30 on March 31st; a month earlier is February 29th.
        assert_eq!(
            show(cutoff(newest, span("1m"), &zone(3))),
            "2024-02-29T01:30:00Z"
        );
        // At UTC-2 it is still 23:30 on March 30th; February 30th becomes the 29th.
        assert_eq!(
            show(cutoff(newest, span("1m"), &zone(-2))),
            "2024-03-01T01:30:00Z"
        );
        assert_eq!(
            show(cutoff(newest, span("1y1m1d1h"), &Utc)),
            "2023-02-27T00:30:00Z"
        );
        assert_eq!(
            cutoff(newest, span("300000y"), &Utc),
            DateTime::<Utc>::MIN_UTC
        );
        assert_eq!(
            cutoff(DateTime::<Utc>::MIN_UTC, span("1h"), &Utc),
            DateTime::<Utc>::MIN_UTC
        );
    }

    #[test]
    fn counts_parse() {
        assert_eq!("3".parse(), Ok(Count::Limit(3)));
        assert_eq!("0".parse(), Ok(Count::Limit(0)));
        assert_eq!("-1".parse(), Ok(Count::Unlimited));
        assert_eq!("unlimited".parse(), Ok(Count::Unlimited));
        for bad in ["-2", "", "x", "1.5", "99999999999"] {
            assert_eq!(bad.parse::<Count>(), Err(PolicyError::Count(bad.into())));
        }
    }

    #[test]
    fn spans_parse_and_print() {
        let parsed = "1y2m3d4h".parse::<Span>().unwrap();
        let want = Span {
            years: 1,
            months: 2,
            days: 3,
            hours: 4,
        };
        assert_eq!(parsed, want);
        assert_eq!(parsed.to_string(), "1y2m3d4h");
        assert_eq!("12h3d".parse::<Span>().unwrap().to_string(), "3d12h");
        assert_eq!("0y7d".parse::<Span>().unwrap().to_string(), "7d");
        for bad in [
            "",
            "0d",
            "5",
            "d",
            "1w",
            "1d2",
            "1dü",
            "ü",
            "-1d",
            "4294967296h",
        ] {
            assert_eq!(
                bad.parse::<Span>(),
                Err(PolicyError::Span(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn group_by_and_tag_lists_parse() {
        let by = |s: &str| s.parse::<GroupBy>();
        assert_eq!(by("host,paths"), Ok(GroupBy::default()));
        let all = GroupBy {
            host: true,
            paths: true,
            tags: true,
        };
        assert_eq!(by("tags,host,paths"), Ok(all));
        let none = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        assert_eq!(by(""), Ok(none));
        assert_eq!(
            by("host,time"),
            Err(PolicyError::GroupBy("host,time".into()))
        );
        let tags = |s: &str| s.parse::<TagList>().unwrap().0;
        assert_eq!(tags("a,b"), ["a", "b"]);
        assert!(tags("").is_empty());
    }
}
