//! Where a repository lives, from the text of `-r` / `STRATA_REPOSITORY`, and the backend
//! options of `-o KEY=VALUE`: parsing and checking only, so that every malformed location
//! or option is refused with a reason before any request is made.
use super::BackendError;
use super::fault::Faults;
use std::path::PathBuf;
use std::time::Duration;

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// A directory: a plain path, or `local:PATH`.
    Local(PathBuf),
    /// `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`, `s3:http://...`, or `s3:HOST/BUCKET[/PREFIX]`
    /// (https).
    S3 {
        /// `http://HOST[:PORT]` or `https://HOST[:PORT]`.
        endpoint: String,
        bucket: String,
        prefix: String,
    },
    /// `gs:BUCKET:/PREFIX`.
    Gcs { bucket: String, prefix: String },
    /// `azure:CONTAINER:/PREFIX`.
    Azure { container: String, prefix: String },
    /// `memory:`: an empty store that lives as long as the process.
    Memory,
}

/// Schemes of other tools that strata does not read, refused rather than taken as a
/// directory name.
const UNSUPPORTED: [&str; 5] = ["sftp", "rest", "b2", "swift", "rclone"];

impl Location {
    pub(crate) fn parse(text: &str) -> Result<Location, BackendError> {
        let bad = |reason: &str| BackendError::InvalidLocation {
            location: text.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = text.split_once(':') else {
            return Ok(Location::Local(text.into()));
        };
        match scheme {
            "local" if rest.is_empty() => Err(bad("no directory after `local:`")),
            "local" => Ok(Location::Local(rest.into())),
            "memory" if rest.is_empty() => Ok(Location::Memory),
            "memory" => Err(bad("`memory:` takes nothing after the colon")),
            "s3" => parse_s3(rest).map_err(|r| bad(&r)),
            "gs" => {
                let (bucket, prefix) =
                    bucket_and_prefix(rest, "gs:BUCKET:/PREFIX").map_err(|r| bad(&r))?;
                check_bucket(&bucket, 3, 222, "._-").map_err(|r| bad(&r))?;
                Ok(Location::Gcs { bucket, prefix })
            }
            "azure" => {
                let (container, prefix) =
                    bucket_and_prefix(rest, "azure:CONTAINER:/PREFIX").map_err(|r| bad(&r))?;
                check_bucket(&container, 3, 63, "-").map_err(|r| bad(&r))?;
                Ok(Location::Azure { container, prefix })
            }
            s if UNSUPPORTED.contains(&s) => Err(bad(&format!(
                "`{s}:` repositories are not supported (use local:, s3:, gs: or azure:)"
            ))),
            _ => Ok(Location::Local(text.into())),
        }
    }

    /// The location as messages and the key cache name it: its canonical text.
    pub(crate) fn describe(&self) -> String {
        let joined = |head: String, prefix: &str| match prefix {
            "" => head,
            p => format!("{head}/{p}"),
        };
        match self {
            Location::Local(path) => path.display().to_string(),
            Location::S3 {
                endpoint,
                bucket,
                prefix,
            } => joined(format!("s3:{endpoint}/{bucket}"), prefix),
            Location::Gcs { bucket, prefix } => format!("gs:{bucket}:/{prefix}"),
            Location::Azure { container, prefix } => format!("azure:{container}:/{prefix}"),
            Location::Memory => "memory:".into(),
        }
    }
}

fn parse_s3(rest: &str) -> Result<Location, String> {
    let (scheme, rest) = match rest.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((s, _)) => return Err(format!("unknown scheme `{s}://` (use http or https)")),
        None => ("https", rest),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    check_host(host)?;
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err("no bucket: use s3:https://HOST[:PORT]/BUCKET[/PREFIX]".into());
    }
    check_bucket(bucket, 3, 63, ".-")?;
    Ok(Location::S3 {
        endpoint: format!("{scheme}://{host}"),
        bucket: bucket.to_string(),
        prefix: check_prefix(prefix)?,
    })
}

/// `BUCKET:/PREFIX`, `BUCKET:/` or `BUCKET`.
fn bucket_and_prefix(rest: &str, form: &str) -> Result<(String, String), String> {
    let (bucket, prefix) = match rest.split_once(':') {
        Some((bucket, path)) => match path.strip_prefix('/') {
            Some(prefix) => (bucket, prefix),
            None => return Err(format!("the prefix must start with `/`: {form}")),
        },
        None => (rest, ""),
    };
    Ok((bucket.to_string(), check_prefix(prefix)?))
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !name_ok {
        return Err(format!("invalid host {host:?}"));
    }
    match port.map(str::parse::<u16>) {
        Some(Err(_)) | Some(Ok(0)) => Err(format!("invalid port in {host:?}")),
        _ => Ok(()),
    }
}

/// A bucket or container name: `min..=max` lowercase letters, digits and `extra`,
/// beginning and ending with a letter or digit.
fn check_bucket(name: &str, min: usize, max: usize, extra: &str) -> Result<(), String> {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (min..=max).contains(&name.len())
        && (name.bytes())
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.as_bytes().contains(&b))
        && edge(name.bytes().next())
        && edge(name.bytes().last());
    match ok {
        true => Ok(()),
        false => Err(format!(
            "invalid bucket or container name {name:?} ({min} to {max} lowercase letters, \
             digits and {extra:?}, starting and ending with a letter or digit)"
        )),
    }
}

/// A prefix without leading or trailing slashes, empty segments, `.` or `..`.
fn check_prefix(prefix: &str) -> Result<String, String> {
    let prefix = prefix.trim_end_matches('/');
    let bad_segment = |s: &str| s.is_empty() || s == "." || s == "..";
    if !prefix.is_empty() && prefix.split('/').any(bad_segment) {
        return Err(format!(
            "invalid prefix {prefix:?} (no empty, `.` or `..` segments)"
        ));
    }
    Ok(prefix.to_string())
}

/// The `-o KEY=VALUE` options, checked: unknown keys and malformed values are refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Options {
    /// `s3.region` (else `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub s3_region: Option<String>,
    /// `s3.path-style=false`: the bucket in the host name rather than in the path.
    pub s3_virtual_host: bool,
    /// `s3.storage-class`, e.g. `STANDARD_IA`.
    pub s3_storage_class: Option<String>,
    /// `gs.endpoint`, e.g. an emulator's URL.
    pub gs_endpoint: Option<String>,
    /// `gs.anonymous=true`: requests to Google Cloud Storage go unsigned (an emulator, or a
    /// bucket anyone may read), and no credentials are looked for.
    pub gs_anonymous: bool,
    /// `azure.endpoint` (default `https://ACCOUNT.blob.core.windows.net`).
    pub azure_endpoint: Option<String>,
    /// `timeout`: how long one request may take, e.g. `30s`.
    pub timeout: Option<Duration>,
    /// `retries`: attempts in all for a request that fails transiently.
    pub attempts: Option<u32>,
    /// `connections`: requests in flight at once (see `Backend::connections`).
    pub connections: Option<usize>,
    pub faults: Faults,
}

/// The keys `-o` accepts, for the message that refuses others.
const KEYS: &str = "s3.region, s3.path-style, s3.storage-class, gs.endpoint, gs.anonymous, \
                    azure.endpoint, timeout, retries, connections, fault.latency-ms, \
                    fault.jitter-ms, fault.transient, \
                    fault.fail-write, fault.seed";

impl Options {
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<Options, BackendError> {
        let mut o = Options::default();
        for (key, value) in pairs {
            o.set(key, value)
                .map_err(|reason| BackendError::InvalidLocation {
                    location: format!("-o {key}={value}"),
                    reason,
                })?;
        }
        Ok(o)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let number = |what: &str| format!("{key} must be {what}");
        let millis = |v: &str| {
            (v.parse::<u64>())
                .map(Duration::from_millis)
                .map_err(|_| number("a number of milliseconds"))
        };
        let flag = |v: &str| v.parse::<bool>().map_err(|_| number("true or false"));
        match key {
            "s3.region" => self.s3_region = Some(value.to_string()),
            "s3.path-style" => self.s3_virtual_host = !flag(value)?,
            "s3.storage-class" => self.s3_storage_class = Some(value.to_string()),
            "gs.endpoint" => self.gs_endpoint = Some(value.to_string()),
            "gs.anonymous" => self.gs_anonymous = flag(value)?,
            "azure.endpoint" => self.azure_endpoint = Some(value.to_string()),
            "timeout" => {
                self.timeout = Some(
                    humantime::parse_duration(value).map_err(|_| number("a duration, e.g. 30s"))?,
                )
            }
            "retries" => {
                self.attempts = Some(
                    (value.parse().ok())
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| number("a number of attempts (at least 1)"))?,
                )
            }
            "connections" => {
                self.connections = Some(
                    (value.parse().ok())
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| number("a number of connections from 1 to 256"))?,
                )
            }
            "fault.latency-ms" => self.faults.latency = millis(value)?,
            "fault.jitter-ms" => self.faults.jitter = millis(value)?,
            "fault.transient" => {
                self.faults.transient = (value.parse().ok())
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| number("a share from 0 to 1"))?
            }
            "fault.fail-write" => {
                self.faults.fail_write = Some(
                    value
                        .parse()
                        .map_err(|_| number("a write's number, from 1"))?,
                )
            }
            "fault.seed" => self.faults.seed = value.parse().map_err(|_| number("a number"))?,
            _ => return Err(format!("unknown option (known: {KEYS})")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str, bucket: &str, prefix: &str) -> Location {
        Location::S3 {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn locations_parse() {
        let table = [
            ("/srv/repo", Location::Local("/srv/repo".into())),
            ("relative/dir", Location::Local("relative/dir".into())),
            ("local:/srv/repo", Location::Local("/srv/repo".into())),
            ("local:s3:odd", Location::Local("s3:odd".into())),
            ("./s3:odd", Location::Local("./s3:odd".into())),
            ("memory:", Location::Memory),
            (
                "s3:https://minio.lan:9000/backups/host/a",
                s3("https://minio.lan:9000", "backups", "host/a"),
            ),
            (
                "s3:http://127.0.0.1:5000/bkt",
                s3("http://127.0.0.1:5000", "bkt", ""),
            ),
            (
                "s3:http://127.0.0.1:5000/bkt/",
                s3("http://127.0.0.1:5000", "bkt", ""),
            ),
            (
                "s3:s3.amazonaws.com/my.bucket/p/",
                s3("https://s3.amazonaws.com", "my.bucket", "p"),
            ),
            (
                "gs:bucket-1:/a/b",
                Location::Gcs {
                    bucket: "bucket-1".into(),
                    prefix: "a/b".into(),
                },
            ),
            (
                "gs:bucket_1",
                Location::Gcs {
                    bucket: "bucket_1".into(),
                    prefix: "".into(),
                },
            ),
            (
                "azure:box:/",
                Location::Azure {
                    container: "box".into(),
                    prefix: "".into(),
                },
            ),
        ];
        for (text, want) in table {
            assert_eq!(Location::parse(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn malformed_locations_are_refused_with_a_reason() {
        let table = [
            ("s3:", "invalid host"),
            ("s3:http://", "invalid host"),
            ("s3:http://host:99999/b", "invalid port"),
            ("s3:http://host:0/bkt", "invalid port"),
            ("s3:ftp://host/bkt", "unknown scheme"),
            ("s3:https://host", "no bucket"),
            ("s3:https://host/", "no bucket"),
            ("s3:https://host/Upper", "invalid bucket"),
            ("s3:https://host/ab", "invalid bucket"),
            ("s3:https://host/-bkt", "invalid bucket"),
            ("s3:https://host/bkt/a//b", "invalid prefix"),
            ("s3:https://host/bkt/../x", "invalid prefix"),
            ("s3:https://ho st/bkt", "invalid host"),
            ("gs:bkt:prefix", "must start with `/`"),
            ("gs::/x", "invalid bucket"),
            ("azure:Box:/", "invalid bucket"),
            ("azure:a_b:/", "invalid bucket"),
            ("memory:x", "takes nothing"),
            ("local:", "no directory"),
            ("sftp:host:/x", "not supported"),
        ];
        for (text, reason) in table {
            let err = Location::parse(text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(reason), "{text}: {msg}");
            assert!(msg.contains(&format!("{text:?}")), "{text}: {msg}");
        }
    }

    #[test]
    fn locations_describe_themselves_canonically() {
        for (text, canonical) in [
            (
                "s3:http://127.0.0.1:5000/bkt/p/",
                "s3:http://127.0.0.1:5000/bkt/p",
            ),
            ("s3:s3.amazonaws.com/bkt", "s3:https://s3.amazonaws.com/bkt"),
            ("gs:bkt", "gs:bkt:/"),
            ("azure:box:/a/", "azure:box:/a"),
            ("local:/srv/r", "/srv/r"),
        ] {
            let parsed = Location::parse(text).unwrap();
            assert_eq!(parsed.describe(), canonical);
            assert_eq!(Location::parse(canonical).unwrap(), parsed);
        }
    }

    fn opts(pairs: &[(&str, &str)]) -> Result<Options, BackendError> {
        let pairs: Vec<(String, String)> = (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::parse(&pairs)
    }

    #[test]
    fn options_parse_and_refuse_unknown_keys_and_bad_values() {
        let o = opts(&[
            ("s3.region", "eu-west-1"),
            ("s3.path-style", "false"),
            ("gs.anonymous", "true"),
            ("timeout", "30s"),
            ("fault.latency-ms", "30"),
            ("fault.transient", "0.05"),
            ("fault.fail-write", "7"),
            ("fault.seed", "42"),
        ])
        .unwrap();
        assert_eq!(o.s3_region.as_deref(), Some("eu-west-1"));
        assert!(o.s3_virtual_host && o.gs_anonymous);
        assert_eq!(o.timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.faults.latency, Duration::from_millis(30));
        assert_eq!(o.faults.transient, 0.05);
        assert_eq!((o.faults.fail_write, o.faults.seed), (Some(7), 42));
        assert!(o.faults.any());
        assert!(!opts(&[]).unwrap().s3_virtual_host);
        assert!(!opts(&[("fault.seed", "3")]).unwrap().faults.any());
        for (k, v, reason) in [
            ("s3.colour", "red", "unknown option"),
            ("fault.transient", "1.5", "a share from 0 to 1"),
            ("fault.latency-ms", "-3", "milliseconds"),
            ("s3.path-style", "yes", "true or false"),
            ("gs.anonymous", "1", "true or false"),
            ("retries", "0", "at least 1"),
            ("timeout", "soon", "a duration"),
        ] {
            let msg = opts(&[(k, v)]).unwrap_err().to_string();
            assert!(msg.contains(reason) && msg.contains(k), "{k}={v}: {msg}");
        }
    }
}
