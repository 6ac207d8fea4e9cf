//! Cost attribution: bytes produced and fetched, and produce and fetch requests, per owning team
//! (the contract's `owner`) and per principal, for the finance side.
//!
//! - **What counts.** Record bytes of contract topics: produced (accepted or not: the gateway
//!   carried them) under the producing principal, fetched under the fetching principal; the
//!   Produce requests and Fetch answers that carried them. Other topics are not a data product and
//!   have no team: they are in `meshgate_bytes_total{topic="_other"}`.
//! - **Bounded labels.** A principal is named only when a contract names it (`producers:` or
//!   `consumers:`); any other is `_other`. Teams come from the policy files.
//! - **Since when.** Totals are kept in hourly buckets for a week ([`KEEP_HOURS`]), so an export
//!   covers whole hours back from now (`--since 24h` sums the current hour and the 23 before it).
//!   `meshgate_chargeback_*_total` counters carry the same figures since the process started.
//! - **Cost.** One lock per Produce request and per Fetch answer that carries a contract topic
//!   (the request's figures are summed first), never per record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Hourly buckets kept.
pub const KEEP_HOURS: u64 = 24 * 7;
/// The label of principals no contract names.
pub const OTHER: &str = "_other";

/// What one (team, principal) used in one hour.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub produce_requests: u64,
    pub fetch_requests: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.produce_requests += o.produce_requests;
        self.fetch_requests += o.fetch_requests;
    }
}

/// One row of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub team: String,
    pub principal: String,
    #[serde(flatten)]
    pub tally: Tally,
}

/// One hour's totals: team → principal → tally.
type Hour = HashMap<Arc<str>, HashMap<Arc<str>, Tally>>;

/// The hourly totals, newest last.
#[derive(Debug, Default)]
pub struct Chargeback {
    hours: Mutex<VecDeque<(u64, Hour)>>,
}

impl Chargeback {
    /// Adds one request's figures, by (team, principal label), at `now_secs`.
    pub fn add(&self, now_secs: u64, principal: &str, by_team: &[(&Arc<str>, Tally)]) {
        if by_team.is_empty() {
            return;
        }
        let hour = now_secs / 3600;
        let mut hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        if hours.back().is_none_or(|(h, _)| *h != hour) {
            hours.push_back((hour, HashMap::new()));
            while hours.front().is_some_and(|(h, _)| *h + KEEP_HOURS <= hour) {
                hours.pop_front();
            }
        }
        let (_, totals) = hours.back_mut().expect("pushed above");
        for (team, t) in by_team {
            let principals = match totals.get_mut(&***team) {
                Some(p) => p,
                None => totals.entry((*team).clone()).or_default(),
            };
            match principals.get_mut(principal) {
                Some(total) => total.add(t),
                None => {
                    principals.insert(Arc::from(principal), *t);
                }
            }
        }
    }

    /// The totals of the hours from `since_secs` (rounded down to its hour) to now, by team and
    /// principal, sorted.
    pub fn since(&self, since_secs: u64) -> Vec<Row> {
        let from = since_secs / 3600;
        let hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum: BTreeMap<(String, String), Tally> = BTreeMap::new();
        for (_, totals) in hours.iter().filter(|(h, _)| *h >= from) {
            for (team, principals) in totals {
                for (principal, t) in principals {
                    sum.entry((team.to_string(), principal.to_string()))
                        .or_default()
                        .add(t);
                }
            }
        }
        sum.into_iter()
            .map(|((team, principal), tally)| Row {
                team,
                principal,
                tally,
            })
            .collect()
    }
}

/// Rows as CSV, with a header line. Teams and principals come from the policy files (or are
/// `_other`); a field holding a comma or a quote is quoted.
pub fn csv(rows: &[Row]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out =
        String::from("team,principal,bytes_in,bytes_out,produce_requests,fetch_requests\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            field(&r.team),
            field(&r.principal),
            r.tally.bytes_in,
            r.tally.bytes_out,
            r.tally.produce_requests,
            r.tally.fetch_requests
        ));
    }
    out
}

/// Why the export could not be fetched from the gateway.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not an admin address (HOST:PORT)")]
    Address(String),
    #[error("{0}: {1}")]
    Transport(String, String),
    #[error("{0}: HTTP {1}: {2}")]
    Status(String, u16, String),
}

/// GETs `path` from a gateway's plain-HTTP admin endpoint (`meshgate chargeback`).
pub async fn fetch(admin: &str, path: &str, token: Option<&str>) -> Result<String, FetchError> {
    use http_body_util::BodyExt as _;
    let url = format!("http://{admin}{path}");
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| FetchError::Address(admin.to_string()))?;
    let mut req = axum::http::Request::get(uri);
    if let Some(t) = token {
        req = req.header(axum::http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| FetchError::Transport(url.clone(), e.to_string()))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client
        .request(req)
        .await
        .map_err(|e| FetchError::Transport(url.clone(), e.to_string()))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), 64 << 20)
        .collect()
        .await
        .map_err(|e| FetchError::Transport(url.clone(), e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(FetchError::Status(
            url,
            status.as_u16(),
            text.trim().to_string(),
        ));
    }
    Ok(text)
}

/// `24h`, `7d`, `90m` or `3600s` (a bare number is seconds) as seconds.
pub fn parse_window(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bytes_in: u64, bytes_out: u64) -> Tally {
        Tally {
            bytes_in,
            bytes_out,
            produce_requests: u64::from(bytes_in > 0),
            fetch_requests: u64::from(bytes_out > 0),
        }
    }

    #[test]
    fn totals_sum_by_team_and_principal_over_the_hours_asked_for() {
        let c = Chargeback::default();
        let (orders, billing): (Arc<str>, Arc<str>) = ("orders-team".into(), "billing".into());
        let h = 1_000 * 3600;
        c.add(h, "User:svc", &[(&orders, t(100, 0))]);
        c.add(
            h + 10,
            "User:svc",
            &[(&orders, t(50, 0)), (&billing, t(7, 0))],
        );
        c.add(h + 3600, "User:svc", &[(&orders, t(1, 0))]);
        c.add(h + 3601, "_other", &[(&orders, t(0, 30))]);
        let all = c.since(h);
        assert_eq!(
            all.iter()
                .map(|r| (
                    r.team.as_str(),
                    r.principal.as_str(),
                    r.tally.bytes_in,
                    r.tally.bytes_out,
                    r.tally.produce_requests
                ))
                .collect::<Vec<_>>(),
            vec![
                ("billing", "User:svc", 7, 0, 1),
                ("orders-team", "User:svc", 151, 0, 3),
                ("orders-team", "_other", 0, 30, 0),
            ]
        );
        // The last hour only.
        assert_eq!(
            c.since(h + 3600)
                .iter()
                .map(|r| r.tally.bytes_in)
                .sum::<u64>(),
            1
        );
        assert!(csv(&all).starts_with("team,principal,bytes_in,bytes_out,produce_requests,fetch_requests\nbilling,User:svc,7,0,1,0\n"));
    }

    #[test]
    fn a_week_is_kept_and_windows_parse() {
        let c = Chargeback::default();
        let team: Arc<str> = "t".into();
        for hour in 0..(KEEP_HOURS + 10) {
            c.add(hour * 3600, "p", &[(&team, t(1, 0))]);
        }
        assert_eq!(c.since(0)[0].tally.bytes_in, KEEP_HOURS);
        assert_eq!(parse_window("24h"), Some(86_400));
        assert_eq!(parse_window("7d"), Some(604_800));
        assert_eq!(parse_window("90m"), Some(5_400));
        assert_eq!(parse_window("42"), Some(42));
        assert_eq!(parse_window("1w"), None);
        assert_eq!(parse_window("h"), None);
        assert_eq!(
            csv(&[Row {
                team: "a,b".into(),
                principal: "q\"".into(),
                tally: Tally::default()
            }])
            .lines()
            .nth(1),
            Some("\"a,b\",\"q\"\"\",0,0,0,0")
        );
    }
}
