//! Helpers the benchmarks share: flags and the machine's CPU time.

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].parse().expect("a number"))
        .unwrap_or(default)
}

/// The word after a `--flag` on the command line.
pub struct FlagValue<'a> {
    pub flag: &'a str,
    pub text: &'a str,
}

impl FlagValue<'_> {
    /// The value as a number; panics naming the flag when it is not one.
    pub fn number<T: std::str::FromStr>(&self) -> T {
        self.text
            .parse()
            .unwrap_or_else(|_| panic!("{} needs a number, not {:?}", self.flag, self.text))
    }

    /// The value as a comma-separated list of numbers (`3000,30000`).
    pub fn list<T: std::str::FromStr>(&self) -> Vec<T> {
        self.text
            .split(',')
            .map(|t| {
                t.trim().parse().unwrap_or_else(|_| {
                    panic!(
                        "{} takes numbers separated by commas, not {:?}",
                        self.flag, self.text
                    )
                })
            })
            .collect()
    }
}

/// Hands every word of the command line, with the word after it, to `set` (which picks out the
/// flags it knows by `FlagValue::flag`).
pub fn each_flag(mut set: impl FnMut(FlagValue)) {
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        set(FlagValue {
            flag: &pair[0],
            text: &pair[1],
        });
    }
}

/// The whole machine's (busy, softirq) CPU seconds so far, from /proc/stat.
pub fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let f: Vec<f64> = stat
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ((f.iter().sum::<f64>() - f[3] - f[4]) / hz, f[6] / hz)
}
