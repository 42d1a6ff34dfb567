//! Validated image settings that come from flags and from kiln.toml alike:
//! a port, a user, a stop signal. Each is parsed once into its type; the
//! error names where the value came from (`--expose`, `[image] ports`, …).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::{Error, Result};

/// Where a value came from, for the error message (a flag or a kiln.toml field).
pub type Origin = &'static str;

macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            /// The canonical text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        // Serialized as the plain string: the cache key and JSON reports
        // stay what they were when these were strings.
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

/// An exposed port, canonical `PORT/PROTO` (`8080/tcp`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port(String);
string_newtype!(Port);

impl Port {
    /// Parses `PORT` or `PORT/tcp|udp|sctp`, PORT in 1..65535.
    pub fn parse(s: &str, origin: Origin) -> Result<Self> {
        let bad = || {
            Error::invalid(
                origin,
                s,
                "expected PORT or PORT/tcp|udp|sctp with PORT in 1..65535, e.g. 8080 or 53/udp",
            )
        };
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let p: u16 = port.parse().map_err(|_| bad())?;
        if p == 0 || !["tcp", "udp", "sctp"].contains(&proto) {
            return Err(bad());
        }
        Ok(Port(format!("{p}/{proto}")))
    }
}

/// The user a container runs as: `UID[:GID]` or `NAME[:GROUP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(String);
string_newtype!(User);

impl User {
    /// Checks `UID[:GID]` or `NAME[:GROUP]`.
    pub fn parse(s: &str, origin: Origin) -> Result<Self> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && (p.bytes().all(|b| b.is_ascii_digit())
                    || (p.as_bytes()[0].is_ascii_lowercase() || p.as_bytes()[0] == b'_')
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b)))
        };
        let ok = match s.split_once(':') {
            Some((u, g)) => part_ok(u) && part_ok(g),
            None => part_ok(s),
        };
        if ok {
            Ok(User(s.to_string()))
        } else {
            Err(Error::invalid(
                origin,
                s,
                "expected UID[:GID] or NAME[:GROUP], e.g. 65532:65532",
            ))
        }
    }

    /// Numeric (uid, gid) when the user is given by number.
    pub fn ids(&self) -> (Option<u32>, Option<u32>) {
        let (u, g) = self.0.split_once(':').unwrap_or((&self.0, &self.0));
        (u.parse().ok(), g.parse().ok())
    }
}

/// A stop signal: a `SIGTERM`-style name or a number 1..64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal(String);
string_newtype!(Signal);

impl Signal {
    /// Checks a stop signal.
    pub fn parse(s: &str, origin: Origin) -> Result<Self> {
        let named = s.strip_prefix("SIG").is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-')
        });
        let numeric = s.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n));
        if named || numeric {
            Ok(Signal(s.to_string()))
        } else {
            Err(Error::invalid(
                origin,
                s,
                "expected a signal name like SIGTERM or a number 1..64",
            ))
        }
    }
}

/// A duration like `30s`, `1m30s`, `500ms`, `2h`, in nanoseconds.
pub fn parse_duration(s: &str, origin: Origin) -> Result<u64> {
    let bad = || {
        Error::invalid(
            origin,
            s,
            "expected a duration like 30s, 1m30s, 500ms or 2h (units ms, s, m, h)",
        )
    };
    let (mut total, mut rest) = (0u64, s.trim());
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let scale: u64 = match &rest[..unit_len] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(scale)
            .and_then(|x| x.checked_add(total))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// A Docker health check from its parts (exec form, durations as text).
pub fn healthcheck(
    cmd: &crate::config::HealthCmd,
    interval: Option<&str>,
    timeout: Option<&str>,
    start_period: Option<&str>,
    retries: Option<u32>,
    origin: Origin,
) -> Result<crate::oci::Healthcheck> {
    use crate::config::HealthCmd;
    let test = match cmd {
        HealthCmd::Exec(c) if c.is_empty() || c[0].is_empty() => {
            return Err(Error::invalid(
                origin,
                "cmd = []",
                "give the command as a list, e.g. cmd = [\"/usr/local/bin/app\", \"--health\"]",
            ));
        }
        HealthCmd::Shell(s) if s.trim().is_empty() => {
            return Err(Error::invalid(
                origin,
                "cmd = \"\"",
                "give the command, e.g. cmd = [\"/usr/local/bin/app\", \"--health\"]",
            ));
        }
        HealthCmd::Exec(c) => std::iter::once("CMD".to_string()).chain(c.iter().cloned()).collect(),
        // Docker's shell form: the image's /bin/sh runs the string.
        HealthCmd::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
    };
    let d = |v: Option<&str>| v.map(|v| parse_duration(v, origin)).transpose();
    Ok(crate::oci::Healthcheck {
        test,
        interval: d(interval)?.filter(|n| *n > 0),
        timeout: d(timeout)?.filter(|n| *n > 0),
        start_period: d(start_period)?.filter(|n| *n > 0),
        retries: retries.filter(|n| *n > 0).map(u64::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_docker_counts_them() {
        assert_eq!(parse_duration("30s", "x").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("1m30s", "x").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("500ms", "x").unwrap(), 500_000_000);
        for bad in ["", "30", "s", "1d", "-1s", "1.5s"] {
            assert!(parse_duration(bad, "[image] healthcheck").is_err(), "{bad}");
        }
        use crate::config::HealthCmd;
        let h = healthcheck(
            &HealthCmd::Exec(vec!["/app".into(), "--ping".into()]),
            Some("1s"),
            None,
            None,
            Some(3),
            "x",
        )
        .unwrap();
        assert_eq!(h.test, ["CMD", "/app", "--ping"]);
        assert_eq!((h.interval, h.timeout, h.retries), (Some(1_000_000_000), None, Some(3)));
        let h = healthcheck(
            &HealthCmd::Shell("curl -f localhost".into()),
            None,
            None,
            None,
            None,
            "x",
        )
        .unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "curl -f localhost"]);
        assert!(healthcheck(&HealthCmd::Exec(vec![]), None, None, None, None, "x").is_err());
        assert!(healthcheck(&HealthCmd::Shell(" ".into()), None, None, None, None, "x").is_err());
    }

    #[test]
    fn errors_name_their_origin() {
        assert_eq!(Port::parse("53/udp", "--expose").unwrap().as_str(), "53/udp");
        assert_eq!(Port::parse("8080", "--expose").unwrap().as_str(), "8080/tcp");
        let e = Port::parse("0", "[image] ports").unwrap_err().to_string();
        assert!(e.starts_with("invalid [image] ports `0`"), "{e}");
        assert!(User::parse("Root", "--user").is_err());
        assert_eq!(
            User::parse("65532:65532", "u").unwrap().ids(),
            (Some(65532), Some(65532))
        );
        assert!(Signal::parse("SIGTERM", "s").is_ok() && Signal::parse("9", "s").is_ok());
        assert!(
            Signal::parse("TERM", "[image] stop_signal")
                .unwrap_err()
                .to_string()
                .contains("[image] stop_signal")
        );
    }
}
