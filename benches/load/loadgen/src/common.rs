//! Options, the monotonic clock shared with Python (`time.monotonic_ns`), and /proc readers.

use std::collections::HashSet;
use std::str::FromStr;

pub struct Opts {
    pairs: Vec<(String, String)>,
    flags: HashSet<String>,
}

impl Opts {
    /// `--key value` pairs (repeatable) and bare `--flag`s.
    pub fn parse(args: &[String]) -> Opts {
        let mut pairs = Vec::new();
        let mut flags = HashSet::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if let Some(k) = a.strip_prefix("--") {
                if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                    pairs.push((k.to_string(), args[i + 1].clone()));
                    i += 2;
                    continue;
                }
                flags.insert(k.to_string());
            } else {
                eprintln!("ignoring stray argument {a}");
            }
            i += 1;
        }
        Opts { pairs, flags }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn num<T: FromStr>(&self, k: &str, default: T) -> T {
        match self.get(k) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{k}: bad value {v:?}"))),
        }
    }

    pub fn flag(&self, k: &str) -> bool {
        self.flags.contains(k)
    }

    pub fn pids(&self, k: &str) -> Vec<i32> {
        self.get(k)
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| die(&format!("--{k}: bad pid {s:?}")))
            })
            .collect()
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("ferrule-loadgen: {msg}");
    std::process::exit(2);
}

/// CLOCK_MONOTONIC in ns: the same clock as Python's time.monotonic_ns().
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) / 1024
}

/// utime + stime (clock ticks) of the given processes; vanished ones count 0.
pub fn cpu_ticks(pids: &[i32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() > 12 {
                    total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    total
}

/// Resident set size (KiB) summed over the given processes.
pub fn rss_kb(pids: &[i32]) -> u64 {
    let pk = page_kb();
    let mut total = 0;
    for pid in pids {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            if let Some(r) = s.split_whitespace().nth(1) {
                total += r.parse::<u64>().unwrap_or(0) * pk;
            }
        }
    }
    total
}

/// (busy, total) jiffies per core from /proc/stat.
pub fn core_busy() -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if let Ok(s) = std::fs::read_to_string("/proc/stat") {
        for line in s.lines() {
            if line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(|c| c.is_ascii_digit())
            {
                let v: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .take(8)
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                let total: u64 = v.iter().sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                out.push((total - idle, total));
            }
        }
    }
    out
}

/// CPU seconds (user + system) used by this process so far.
pub fn self_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Raise the open-files soft limit to the hard limit (1,000 connections need more than 1,024).
pub fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}
