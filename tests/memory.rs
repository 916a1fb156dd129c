//! Peak memory stays bounded whatever the directory size (design §3.8, §10):
//! `tstat-parse` and `tstat-chunk` stream rows, they never collect them.
//!
//! One test generates a large directory (300k TCP + 100k UDP rows, ~200 MB, by
//! default; `TSTAT_MEMORY_TCP_ROWS` / `TSTAT_MEMORY_UDP_ROWS` change it) with
//! the same generator as `examples/gen-tree.rs`, then runs, one after the
//! other so the measurements do not disturb each other:
//!
//! - `tstat-parse --bytes 0 DIR | tstat-chunk` (this process sits between the
//!   two, counting lines): every row gives two documents, every 100 documents
//!   one array;
//! - `tstat-parse --bytes 0 DIR` with 16 workers forced
//!   (`TSTAT_PARSE_THREADS=16`): every document, memory independent of the
//!   worker count;
//! - `tstat-parse --bytes 25G DIR`: exactly the directions the generator made
//!   at or above 25 GB;
//!
//! and asserts each program's peak resident set stays at or under 32 MiB.
//! Another test feeds `tstat-chunk` a 200 MB line, which it must refuse
//! within the same bound.
//! The peak is the kernel's own figure: `/usr/bin/time -f %M` (wait4
//! rusage) when present, else `VmHWM` from `/proc/PID/status` polled while
//! the program runs (`TSTAT_MEMORY_POLL=1` forces the latter).

mod common;
#[path = "support/gentree.rs"]
mod gentree;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::run::{Running, command, program};

const PARSE: &str = "tstat-parse";
const CHUNK: &str = "tstat-chunk";
const SEND: &str = "tstat_send";

/// design §10: peak RSS ≤ 32 MB for any directory size.
const RSS_LIMIT_KIB: u64 = 32 * 1024;

const GNU_TIME: &str = "/usr/bin/time";

fn env_rows(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a row count")),
        Err(_) => default,
    }
}

/// A child program whose peak RSS we record.
struct Measured {
    name: String,
    run: Running,
    /// `/usr/bin/time -o` output, when wrapped.
    time_file: Option<PathBuf>,
    stderr_file: PathBuf,
    /// Highest VmHWM seen by polling (KiB), when not wrapped.
    polled_kib: u64,
    status: Option<ExitStatus>,
}

impl Measured {
    /// Starts `bin args` with piped stdout, the given stdin, stderr to a file
    /// in `tmp`.
    fn spawn(tmp: &Path, name: &str, bin: &str, args: &[&str], stdin: Stdio) -> Measured {
        Measured::spawn_env(tmp, name, bin, args, &[], stdin)
    }

    /// `spawn` with extra environment variables.
    fn spawn_env(
        tmp: &Path,
        name: &str,
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Stdio,
    ) -> Measured {
        let stderr_file = tmp.join(format!("{name}.stderr"));
        let time_file = tmp.join(format!("{name}.time"));
        // TSTAT_MEMORY_POLL=1 forces the /proc fallback (to test it).
        let wrap = Path::new(GNU_TIME).exists() && std::env::var_os("TSTAT_MEMORY_POLL").is_none();
        let cmd = if wrap {
            command(GNU_TIME)
                .arg("-f")
                .arg("%M")
                .arg("-o")
                .arg(&time_file)
                .arg(common::run::bin(bin))
        } else {
            program(bin)
        };
        let run = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin_from(stdin)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_file).unwrap())
            .spawn();
        Measured {
            name: name.to_string(),
            run,
            time_file: wrap.then_some(time_file),
            stderr_file,
            polled_kib: 0,
            status: None,
        }
    }

    fn take_stdout(&mut self) -> ChildStdout {
        self.run.take_stdout()
    }

    /// Polls once; true when the program has exited.
    fn poll(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        if self.time_file.is_none()
            && let Some(kib) = vm_hwm_kib(self.run.id())
        {
            self.polled_kib = self.polled_kib.max(kib);
        }
        if let Some(st) = self.run.try_status() {
            self.status = Some(st);
            return true;
        }
        false
    }

    fn peak_kib(&self) -> u64 {
        match &self.time_file {
            Some(f) => {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                // GNU time puts "Command exited with non-zero status N" first
                // when the program fails; the figure is the last line.
                text.lines()
                    .rev()
                    .find_map(|l| l.trim().parse().ok())
                    .unwrap_or_else(|| panic!("{}: no RSS figure in {text:?}", self.name))
            }
            None => self.polled_kib,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }
}

/// `VmHWM` (peak resident set, KiB) of a live process.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for every program (polling their RSS every few ms), with a deadline.
fn wait_all(procs: &mut [&mut Measured], limit: Duration) {
    let t0 = Instant::now();
    loop {
        let mut done = true;
        for p in procs.iter_mut() {
            done &= p.poll();
        }
        if done {
            return;
        }
        // Those still running are killed when their `Measured` is dropped.
        assert!(
            t0.elapsed() <= limit,
            "programs still running after {limit:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads `from` to the end, counting lines, copying to `to` when given.
fn count_lines(mut from: impl Read, mut to: Option<ChildStdin>) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        if let Some(w) = to.as_mut() {
            w.write_all(&buf[..n])?;
        }
    }
    // Dropping `to` closes the next program's stdin: its end of input.
    drop(to);
    Ok(lines)
}

fn assert_ok(p: &Measured) {
    let st = p.status.expect("waited");
    assert!(st.success(), "{} failed: {st}\n{}", p.name, p.stderr());
}

fn assert_bounded(p: &Measured, what: &str) {
    let kib = p.peak_kib();
    eprintln!("memory: {what}: peak RSS {:.1} MiB", kib as f64 / 1024.0);
    assert!(
        kib > 0,
        "{what}: no RSS measured (no /usr/bin/time and /proc unreadable?)"
    );
    assert!(
        kib <= RSS_LIMIT_KIB,
        "{what}: peak RSS {kib} KiB exceeds {RSS_LIMIT_KIB} KiB (design §10: ≤ 32 MB for any directory size)"
    );
}

#[test]
fn parse_and_chunk_stay_under_32_mib_on_a_large_directory() {
    let tcp = env_rows("TSTAT_MEMORY_TCP_ROWS", 300_000);
    let udp = env_rows("TSTAT_MEMORY_UDP_ROWS", 100_000);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    let t0 = Instant::now();
    let cfg = gentree::GenConfig {
        tcp_rows: tcp,
        udp_rows: udp,
        seed: 42,
        ..Default::default()
    };
    let sum = gentree::generate_tree(&root, &cfg).unwrap();
    eprintln!(
        "memory: generated {} rows, {:.1} MB in {:.1?}",
        sum.rows(),
        sum.bytes as f64 / 1e6,
        t0.elapsed()
    );
    let dir = sum.dirs[0].to_str().unwrap().to_string();
    let limit = Duration::from_secs(900);

    // Full output, piped through tstat-chunk by way of this process.
    let t0 = Instant::now();
    let mut parse = Measured::spawn(
        tmp.path(),
        "parse-bytes0",
        PARSE,
        &["--bytes", "0", "-S", "s", &dir],
        Stdio::null(),
    );
    let mut chunk = Measured::spawn(tmp.path(), "chunk", CHUNK, &[], Stdio::piped());
    let chunk_in = chunk.run.stdin();
    let parse_out = parse.take_stdout();
    let chunk_out = chunk.take_stdout();
    let tee = thread::spawn(move || count_lines(parse_out, Some(chunk_in)));
    let sink = thread::spawn(move || count_lines(chunk_out, None));
    wait_all(&mut [&mut parse, &mut chunk], limit);
    let docs = tee.join().unwrap().unwrap();
    let arrays = sink.join().unwrap().unwrap();
    eprintln!(
        "memory: parse --bytes 0 | chunk: {docs} documents, {arrays} arrays in {:.1?}",
        t0.elapsed()
    );
    assert_ok(&parse);
    assert_ok(&chunk);
    assert_eq!(docs, 2 * sum.rows(), "two documents per row");
    assert_eq!(arrays, docs.div_ceil(100), "arrays of 100 documents");
    assert_bounded(&parse, "tstat-parse --bytes 0");
    assert_bounded(&chunk, "tstat-chunk");

    // Many workers forced: the blocks in flight are a fixed budget, so
    // memory does not grow with the worker count.
    let mut parse = Measured::spawn_env(
        tmp.path(),
        "parse-16-threads",
        PARSE,
        &["--bytes", "0", "-S", "s", &dir],
        &[("TSTAT_PARSE_THREADS", "16")],
        Stdio::null(),
    );
    let out = parse.take_stdout();
    let sink = thread::spawn(move || count_lines(out, None));
    wait_all(&mut [&mut parse], limit);
    assert_ok(&parse);
    assert_eq!(
        sink.join().unwrap().unwrap(),
        docs,
        "16 workers give every document"
    );
    assert_bounded(&parse, "tstat-parse --bytes 0 with 16 workers");

    // The driver's parse → chunk path (-N prints the arrays, marks nothing).
    let root_s = root.to_str().unwrap().to_string();
    let mut send = Measured::spawn(
        tmp.path(),
        "send-N",
        SEND,
        &[
            "-N", "-q", "--all", "--bytes", "0", "-S", "s", "-d", &root_s,
        ],
        Stdio::null(),
    );
    let send_out = send.take_stdout();
    let sink = thread::spawn(move || count_lines(send_out, None));
    wait_all(&mut [&mut send], limit);
    assert_ok(&send);
    assert_eq!(
        sink.join().unwrap().unwrap(),
        arrays,
        "tstat_send -N gives the same arrays"
    );
    assert_bounded(&send, "tstat_send -N");

    // Filter path: only the elephants' big directions come out.
    let mut parse = Measured::spawn(
        tmp.path(),
        "parse-bytes25G",
        PARSE,
        &["--bytes", "25G", "-S", "s", &dir],
        Stdio::null(),
    );
    let mut out = parse.take_stdout();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    wait_all(&mut [&mut parse], limit);
    let text = reader.join().unwrap().unwrap();
    assert_ok(&parse);
    let kept: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        kept.len() as u64,
        sum.docs_at_default_threshold,
        "--bytes 25G keeps exactly the generated directions of ≥ 25 GB"
    );
    assert!(sum.docs_at_default_threshold > 0 || sum.rows() < 10_000);
    for d in &kept {
        let bits = d["values"]["num_bits"].as_u64().expect("integer num_bits");
        assert!(bits / 8 >= gentree::DEFAULT_THRESHOLD, "{d}");
    }
    assert_bounded(&parse, "tstat-parse --bytes 25G");
}

/// `tstat-chunk` refuses a 200 MB input line as it streams: it fails with
/// the line number while staying under the bound, stops reading there, and
/// the arrays of the lines before it are written.
#[test]
fn chunk_refuses_a_200_mb_line_within_32_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let mut chunk = Measured::spawn(tmp.path(), "chunk-long-line", CHUNK, &[], Stdio::piped());
    let mut stdin = chunk.run.stdin();
    let out = chunk.take_stdout();
    let writer = thread::spawn(move || -> io::Result<()> {
        let mut head = String::new();
        for i in 0..150 {
            head.push_str(&format!("{{\"i\":{i}}}\n"));
        }
        stdin.write_all(head.as_bytes())?;
        stdin.write_all(b"{\"junk\":\"")?;
        let block = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            stdin.write_all(&block)?;
        }
        stdin.write_all(b"\"}\n{\"i\":999}\n")
    });
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let mut out = out;
        out.read_to_string(&mut s).map(|_| s)
    });
    wait_all(&mut [&mut chunk], Duration::from_secs(300));
    let written = writer.join().unwrap();
    let text = reader.join().unwrap().unwrap();
    let status = chunk.status.expect("waited");
    assert_eq!(status.code(), Some(1), "{}", chunk.stderr());
    assert!(
        chunk
            .stderr()
            .contains("tstat-chunk: error: stdin: line 151: longer than 8388608 bytes"),
        "{}",
        chunk.stderr()
    );
    assert!(
        written.is_err(),
        "tstat-chunk read the whole 200 MB line instead of stopping in it"
    );
    let sizes: Vec<usize> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, [100, 50], "the lines before it are written");
    assert_bounded(&chunk, "tstat-chunk on a 200 MB line");
}

/// The generator's headers are the real Tstat 3.0 ones of the fixtures, so
/// the large tree tests the layout operators have.
#[test]
fn generated_headers_match_the_fixture_headers() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let first_line = |p: PathBuf| {
        let text = std::fs::read_to_string(&p).unwrap();
        text.lines().next().unwrap().to_string()
    };
    assert_eq!(
        first_line(fx.join("netsage/parse_data.out/log_tcp_complete")),
        gentree::TCP_HEADER
    );
    assert_eq!(
        first_line(fx.join("synthetic/2026_03_01_00_00.out/log_udp_complete")),
        gentree::UDP_HEADER
    );
}

/// Every generated row has the header's field count, and the same seed gives
/// the same bytes.
#[test]
fn generated_rows_are_well_formed_and_deterministic() {
    let gen_once = || {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = gentree::GenConfig {
            dirs: 2,
            tcp_rows: 2000,
            udp_rows: 1000,
            seed: 9,
            ..Default::default()
        };
        let sum = gentree::generate_tree(tmp.path(), &cfg).unwrap();
        let names: Vec<String> = sum
            .dirs
            .iter()
            .map(|d| d.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["2026_03_01_00_00.out", "2026_03_01_01_00.out"]);
        let mut all = Vec::new();
        for d in &sum.dirs {
            for (file, cols) in [
                ("log_tcp_complete", gentree::TCP_COLUMNS),
                ("log_udp_complete", gentree::UDP_COLUMNS),
            ] {
                let text = std::fs::read_to_string(d.join(file)).unwrap();
                for (i, l) in text.lines().enumerate() {
                    assert_eq!(l.split(' ').count(), cols, "{file}:{}: {l}", i + 1);
                }
                assert!(text.ends_with('\n'));
                all.extend_from_slice(text.as_bytes());
            }
        }
        assert_eq!(all.len() as u64, sum.bytes);
        all
    };
    assert!(gen_once() == gen_once(), "same seed, same bytes");
}
