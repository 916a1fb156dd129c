//! Writes a realistic Tstat 3.0 log tree for benchmarks (design §10).
//!
//!     cargo run --release --example gen-tree -- ROOT --dirs N --tcp ROWS --udp ROWS --seed S
//!
//! Row counts are per directory. Directories are `YYYY_MM_DD_HH_MM.out`, one
//! hour apart from 2026-03-01 00:00 UTC (or `--start EPOCH`); the log files'
//! mtimes are set one day back (`--mtime-age`) so `tstat-find` treats every
//! directory as settled. The same seed always gives the same bytes. A summary
//! goes to stderr; nothing to stdout. The row logic lives in
//! `tests/support/gentree.rs`, shared with `tests/memory.rs`.

#[path = "../tests/support/gentree.rs"]
mod gentree;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

/// Generate a Tstat 3.0 log tree (130-column TCP, 19-column UDP).
#[derive(Parser, Debug)]
#[command(name = "gen-tree")]
struct Args {
    /// Directory to create the `.out` directories in.
    root: PathBuf,
    /// Number of hourly `.out` directories.
    #[arg(long, default_value_t = 1)]
    dirs: u32,
    /// `log_tcp_complete` rows per directory.
    #[arg(long, default_value_t = 500_000)]
    tcp: u64,
    /// `log_udp_complete` rows per directory.
    #[arg(long, default_value_t = 300_000)]
    udp: u64,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Epoch seconds of the first directory (named in UTC).
    #[arg(long, default_value_t = gentree::DEFAULT_START_EPOCH)]
    start: u64,
    /// Age in seconds to give the log files' mtimes (0: leave them as written).
    #[arg(long, default_value_t = 86_400)]
    mtime_age: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = gentree::GenConfig {
        dirs: args.dirs,
        tcp_rows: args.tcp,
        udp_rows: args.udp,
        seed: args.seed,
        start_epoch: args.start,
        mtime_age: (args.mtime_age > 0).then(|| Duration::from_secs(args.mtime_age)),
    };
    let t0 = Instant::now();
    let sum = match gentree::generate_tree(&args.root, &cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gen-tree: {}: {e}", args.root.display());
            return ExitCode::FAILURE;
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let mb = sum.bytes as f64 / 1e6;
    eprintln!(
        "gen-tree: {} dirs, {} rows ({} tcp + {} udp), {:.1} MB in {:.1} s ({:.0} MB/s); \
         {} elephant flows > 20 GB, {} flow documents >= 25 GB (tstat-parse --bytes 25G lines)",
        sum.dirs.len(),
        sum.rows(),
        sum.tcp_rows,
        sum.udp_rows,
        mb,
        secs,
        mb / secs.max(1e-9),
        sum.elephants,
        sum.docs_at_default_threshold,
    );
    if cfg.mtime_age.is_none() {
        eprintln!(
            "gen-tree: hint: mtimes are fresh; use `tstat-find --all` or wait `--settle` seconds"
        );
    }
    if let (Some(first), Some(last)) = (sum.dirs.first(), sum.dirs.last()) {
        eprintln!("gen-tree: {} .. {}", first.display(), last.display());
    }
    ExitCode::SUCCESS
}
