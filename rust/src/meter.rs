//! A worker's allowance, per request: admit from the grant, settle into it, and the rate-limit
//! headers of the answer. The rules (and why this is a kernel) are the twin's,
//! `python/ferrule/_pure/meter.py`; this is the same arithmetic in the same order, so that the
//! floats, and so the headers, come out identical.

/// A bucket as the grant left it: the limit, what would pass then, microseconds until full.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub limit: i64,
    pub remaining: i64,
    pub reset_us: f64,
}

#[derive(Debug)]
pub struct Meter {
    grant_requests: Option<i64>,
    grant_tokens: Option<i64>,
    grant_slots: Option<i64>,
    grant_budget: Option<i64>,
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    taken_s: f64,
    until: f64,
    pub requests: i64,
    pub tokens_in_flight: i64,
    pub tokens_used: i64,
    pub in_flight: i64,
    pub reserved_in_flight: i64,
    pub spent: i64,
    pub exhausted: bool,
    pub returned: bool,
}

/// The view of both buckets for the headers: (left, reset_us) each.
pub type View = (i64, f64, i64, f64);

impl Meter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        requests: Option<i64>,
        tokens: Option<i64>,
        slots: Option<i64>,
        budget_nano: Option<i64>,
        rpm: Option<Bucket>,
        tpm: Option<Bucket>,
        taken_s: f64,
        until: f64,
    ) -> Self {
        Self {
            grant_requests: requests,
            grant_tokens: tokens,
            grant_slots: slots,
            grant_budget: budget_nano,
            rpm,
            tpm,
            taken_s,
            until,
            requests: 0,
            tokens_in_flight: 0,
            tokens_used: 0,
            in_flight: 0,
            reserved_in_flight: 0,
            spent: 0,
            exhausted: false,
            returned: false,
        }
    }

    pub fn take(&mut self, tokens: i64, reserve_nano: i64, now_mono: f64) -> bool {
        if self.returned || now_mono >= self.until {
            return false;
        }
        let over = self.grant_requests.is_some_and(|g| self.requests >= g)
            || self
                .grant_tokens
                .is_some_and(|g| self.tokens_in_flight + self.tokens_used + tokens > g)
            || self.grant_slots.is_some_and(|g| self.in_flight >= g)
            || self
                .grant_budget
                .is_some_and(|g| self.reserved_in_flight + self.spent + reserve_nano > g);
        if over {
            self.exhausted = true;
            return false;
        }
        self.requests += 1;
        self.tokens_in_flight += tokens;
        self.in_flight += 1;
        self.reserved_in_flight += reserve_nano;
        true
    }

    pub fn view(&self, now_s: f64) -> View {
        let left_requests = self.grant_requests.map_or(0, |g| g - self.requests);
        let (rl, rr) = view_of(self.rpm, left_requests, self.taken_s, now_s);
        let left_tokens = self
            .grant_tokens
            .map_or(0, |g| g - (self.tokens_in_flight + self.tokens_used));
        let (tl, tr) = view_of(self.tpm, left_tokens, self.taken_s, now_s);
        (rl, rr, tl, tr)
    }

    pub fn limits(&self) -> (Option<i64>, Option<i64>) {
        (self.rpm.map(|b| b.limit), self.tpm.map(|b| b.limit))
    }

    pub fn settle(&mut self, reserved_nano: i64, tokens: i64, used: i64, cost_nano: i64) -> bool {
        if self.returned {
            return false;
        }
        self.in_flight -= 1;
        self.reserved_in_flight -= reserved_nano;
        self.tokens_in_flight -= tokens;
        self.tokens_used += used;
        self.spent += cost_nano;
        true
    }

    pub fn unused(&self) -> (i64, i64, i64, i64) {
        (
            self.grant_requests.map_or(0, |g| g - self.requests),
            self.grant_tokens
                .map_or(0, |g| g - self.tokens_in_flight - self.tokens_used),
            self.grant_slots.map_or(0, |g| g - self.in_flight),
            self.grant_budget.map_or(0, |g| g - self.reserved_in_flight),
        )
    }
}

fn view_of(bucket: Option<Bucket>, left_here: i64, taken_s: f64, now_s: f64) -> (i64, f64) {
    match bucket {
        None => (0, 0.0),
        Some(b) => {
            let reset = (taken_s - now_s) * 1_000_000.0 + b.reset_us;
            (
                b.remaining + left_here.max(0),
                if reset > 0.0 { reset } else { 0.0 },
            )
        }
    }
}

const O_REQ: [&[u8]; 3] = [
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
];
const O_TOK: [&[u8]; 3] = [
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
];
const A_REQ: [&[u8]; 3] = [
    b"anthropic-ratelimit-requests-limit",
    b"anthropic-ratelimit-requests-remaining",
    b"anthropic-ratelimit-requests-reset",
];
const A_TOK: [&[u8]; 3] = [
    b"anthropic-ratelimit-tokens-limit",
    b"anthropic-ratelimit-tokens-remaining",
    b"anthropic-ratelimit-tokens-reset",
];

/// The twin's `rate_headers`: (name, value) pairs, requests then tokens.
pub fn rate_headers(
    anthropic: bool,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    now_s: f64,
    view: View,
) -> Vec<(&'static [u8], Vec<u8>)> {
    let (rl, rr, tl, tr) = view;
    let mut out = Vec::with_capacity(6);
    for (names, limit, left, reset) in [
        (if anthropic { A_REQ } else { O_REQ }, rpm_limit, rl, rr),
        (if anthropic { A_TOK } else { O_TOK }, tpm_limit, tl, tr),
    ] {
        let Some(limit) = limit else { continue };
        let when = if anthropic {
            rfc3339(now_s + reset / 1_000_000.0).into_bytes()
        } else {
            let ms = (reset / 1000.0).ceil();
            if (0.0..1000.0).contains(&ms) {
                format!("{}ms", ms as i64).into_bytes()
            } else {
                duration_text(reset).into_bytes()
            }
        };
        out.push((
            names[0],
            itoa::Buffer::new().format(limit).as_bytes().to_vec(),
        ));
        out.push((
            names[1],
            itoa::Buffer::new().format(left).as_bytes().to_vec(),
        ));
        out.push((names[2], when));
    }
    out
}

/// OpenAI's reset format, as the twin's `duration_text` (Python's `%g` of a whole number of
/// milliseconds under a minute is its decimal form without trailing zeros).
pub fn duration_text(us: f64) -> String {
    let ms = (us / 1000.0).ceil().max(0.0) as i64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        return format!("{}s", seconds_g(ms));
    }
    format!("{}m{}s", ms / 60_000, seconds_g(ms % 60_000))
}

fn seconds_g(ms: i64) -> String {
    let (whole, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Anthropic's reset format: RFC 3339 in UTC, whole seconds rounded up.
pub fn rfc3339(unix_s: f64) -> String {
    let secs = unix_s.ceil() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(duration_text(12_000.0), "12ms");
        assert_eq!(duration_text(6_500_000.0), "6.5s");
        assert_eq!(duration_text(60_000_000.0), "1m0s");
        assert_eq!(duration_text(61_234_000.0), "1m1.234s");
        assert_eq!(duration_text(-5.0), "0ms");
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_860_800.5), "2026-12-10T00:00:01Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn take_until_the_grant_is_used() {
        let b = Bucket {
            limit: 600,
            remaining: 5,
            reset_us: 1e6,
        };
        let mut m = Meter::new(Some(2), None, Some(5), Some(100), Some(b), None, 10.0, 1.0);
        assert!(m.take(3, 40, 0.5));
        assert!(m.take(3, 40, 0.5));
        assert!(!m.take(3, 0, 0.5) && m.exhausted);
        assert_eq!(m.unused(), (0, 0, 3, 20));
        assert!(m.settle(40, 3, 7, 33));
        assert_eq!((m.in_flight, m.spent, m.tokens_used), (1, 33, 7));
        let (rl, rr, _, _) = m.view(10.5);
        assert_eq!((rl, rr), (5, 500_000.0));
        let h = rate_headers(false, Some(600), None, 10.5, m.view(10.5));
        assert_eq!(h[0], (&b"x-ratelimit-limit-requests"[..], b"600".to_vec()));
        assert_eq!(h[2].1, b"500ms".to_vec());
        m.returned = true;
        assert!(!m.settle(40, 3, 7, 33) && !m.take(1, 1, 0.0));
    }
}
