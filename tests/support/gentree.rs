//! Generator of realistic Tstat 3.0 log trees for benchmarks and memory tests.
//!
//! Shared by `examples/gen-tree.rs` (the command-line front end used by
//! `scripts/bench.sh`) and `tests/memory.rs` (which needs a large directory
//! without shipping one), through `#[path = ...] mod gentree;`.
//!
//! What it writes mimics real Tstat 3.0–3.1.4 output (tstat-formats.md §3–§5
//! and the fixtures under `tests/fixtures/`): the 130-column `#15#` TCP header
//! and the 19-column UDP header, `YYYY_MM_DD_HH_MM.out` directories one hour
//! apart, IPv4 and compressed IPv6 addresses, `-`/`---`/`- - 0.0 0.0`
//! placeholders, `%f` epoch-millisecond times, TCP `durat` in ms, UDP
//! durations in seconds, one-sided UDP flows with `s_first_abs = 0.000000`,
//! and heavy-tailed byte counts with about 0.1% of flows above 20 GB.
//!
//! It is deterministic for a given seed (its own splitmix64, no crate), and
//! streams rows through a `BufWriter`, so multi-gigabyte trees need no memory.
//! It must never produce a row whose field count differs from its header, or a
//! `-` in a numeric column: every row is meant to parse, so the counts in
//! [`Summary`] are exact expectations for `tstat-parse`.

#![allow(dead_code)] // each includer uses a different part of this module

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The Tstat 3.0–3.1.4 `log_tcp_complete` header (`#15#`, 130 columns).
pub const TCP_HEADER: &str = "#15#c_ip:1 c_port:2 c_pkts_all:3 c_rst_cnt:4 c_ack_cnt:5 c_ack_cnt_p:6 c_bytes_uniq:7 c_pkts_data:8 c_bytes_all:9 c_pkts_retx:10 c_bytes_retx:11 c_pkts_ooo:12 c_syn_cnt:13 c_fin_cnt:14 s_ip:15 s_port:16 s_pkts_all:17 s_rst_cnt:18 s_ack_cnt:19 s_ack_cnt_p:20 s_bytes_uniq:21 s_pkts_data:22 s_bytes_all:23 s_pkts_retx:24 s_bytes_retx:25 s_pkts_ooo:26 s_syn_cnt:27 s_fin_cnt:28 first:29 last:30 durat:31 c_first:32 s_first:33 c_last:34 s_last:35 c_first_ack:36 s_first_ack:37 c_isint:38 s_isint:39 c_iscrypto:40 s_iscrypto:41 con_t:42 p2p_t:43 http_t:44 c_rtt_avg:45 c_rtt_min:46 c_rtt_max:47 c_rtt_std:48 c_rtt_cnt:49 c_ttl_min:50 c_ttl_max:51 s_rtt_avg:52 s_rtt_min:53 s_rtt_max:54 s_rtt_std:55 s_rtt_cnt:56 s_ttl_min:57 s_ttl_max:58 p2p_st:59 ed2k_data:60 ed2k_sig:61 ed2k_c2s:62 ed2k_c2c:63 ed2k_chat:64 c_f1323_opt:65 c_tm_opt:66 c_win_scl:67 c_sack_opt:68 c_sack_cnt:69 c_mss:70 c_mss_max:71 c_mss_min:72 c_win_max:73 c_win_min:74 c_win_0:75 c_cwin_max:76 c_cwin_min:77 c_cwin_ini:78 c_pkts_rto:79 c_pkts_fs:80 c_pkts_reor:81 c_pkts_dup:82 c_pkts_unk:83 c_pkts_fc:84 c_pkts_unrto:85 c_pkts_unfs:86 c_syn_retx:87 s_f1323_opt:88 s_tm_opt:89 s_win_scl:90 s_sack_opt:91 s_sack_cnt:92 s_mss:93 s_mss_max:94 s_mss_min:95 s_win_max:96 s_win_min:97 s_win_0:98 s_cwin_max:99 s_cwin_min:100 s_cwin_ini:101 s_pkts_rto:102 s_pkts_fs:103 s_pkts_reor:104 s_pkts_dup:105 s_pkts_unk:106 s_pkts_fc:107 s_pkts_unrto:108 s_pkts_unfs:109 s_syn_retx:110 http_req_cnt:111 http_res_cnt:112 http_res:113 c_pkts_push:114 s_pkts_push:115 c_tls_SNI:116 s_tls_SCN:117 c_npnalpn:118 s_npnalpn:119 c_tls_sesid:120 c_last_handshakeT:121 s_last_handshakeT:122 c_appdataT:123 s_appdataT:124 c_appdataB:125 s_appdataB:126 fqdn:127 dns_rslv:128 req_tm:129 res_tm:130";

/// The Tstat 3.0–3.2.0 `log_udp_complete` header (19 columns).
pub const UDP_HEADER: &str = "#c_ip:1 c_port:2 c_first_abs:3 c_durat:4 c_bytes_all:5 c_pkts_all:6 c_isint:7 c_iscrypto:8 c_type:9 s_ip:10 s_port:11 s_first_abs:12 s_durat:13 s_bytes_all:14 s_pkts_all:15 s_isint:16 s_iscrypto:17 s_type:18 fqdn:19";

/// Number of columns of [`TCP_HEADER`].
pub const TCP_COLUMNS: usize = 130;
/// Number of columns of [`UDP_HEADER`].
pub const UDP_COLUMNS: usize = 19;

/// Flows with a side above this many bytes are "elephants" (0.1% of flows).
pub const ELEPHANT_BYTES: u64 = 20_000_000_000;
/// The default `--bytes` threshold of tstat-parse/tstat_send (25 GB).
pub const DEFAULT_THRESHOLD: u64 = 25_000_000_000;

/// First directory's time: 2026-03-01 00:00 UTC, like the synthetic fixtures.
pub const DEFAULT_START_EPOCH: u64 = 1_772_323_200;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Number of `.out` directories, one hour apart.
    pub dirs: u32,
    /// `log_tcp_complete` rows per directory (0: no TCP file).
    pub tcp_rows: u64,
    /// `log_udp_complete` rows per directory (0: no UDP file).
    pub udp_rows: u64,
    /// PRNG seed; the same seed gives byte-identical trees.
    pub seed: u64,
    /// Epoch seconds of the first directory (named in UTC).
    pub start_epoch: u64,
    /// Age given to the log files' mtimes, so tstat-find sees them settled.
    /// `None` leaves the mtimes alone.
    pub mtime_age: Option<Duration>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            dirs: 1,
            tcp_rows: 1000,
            udp_rows: 1000,
            seed: 1,
            start_epoch: DEFAULT_START_EPOCH,
            mtime_age: Some(Duration::from_secs(86_400)),
        }
    }
}

/// What was generated; exact expectations for the parser.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Directories written, in name (= chronological) order.
    pub dirs: Vec<PathBuf>,
    /// TCP rows written in total.
    pub tcp_rows: u64,
    /// UDP rows written in total.
    pub udp_rows: u64,
    /// Bytes written in total (headers included).
    pub bytes: u64,
    /// Flows (rows) with a side above [`ELEPHANT_BYTES`].
    pub elephants: u64,
    /// Flow documents (directions) whose byte count is at least
    /// [`DEFAULT_THRESHOLD`]: the line count of `tstat-parse --bytes 25G`.
    pub docs_at_default_threshold: u64,
}

impl Summary {
    /// All rows, TCP and UDP.
    pub fn rows(&self) -> u64 {
        self.tcp_rows + self.udp_rows
    }
}

/// Generates a tree under `root` (created if missing). Existing directories
/// of the same names are overwritten.
pub fn generate_tree(root: &Path, cfg: &GenConfig) -> io::Result<Summary> {
    fs::create_dir_all(root)?;
    let mut rng = Rng::new(cfg.seed);
    let mut sum = Summary::default();
    for d in 0..cfg.dirs {
        let dir_start = cfg.start_epoch + u64::from(d) * 3600;
        let dir = root.join(format!("{}.out", dir_name(dir_start)));
        fs::create_dir_all(&dir)?;
        // One stream per directory and file kind, so a directory's content
        // does not depend on how many rows the other file has.
        let mut files = Vec::new();
        if cfg.tcp_rows > 0 {
            let path = dir.join("log_tcp_complete");
            let mut r = rng.fork(2 * u64::from(d));
            let w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            let st = write_tcp(w, &mut r, cfg.tcp_rows, dir_start * 1000)?;
            sum.tcp_rows += cfg.tcp_rows;
            sum.add(&st);
            files.push(path);
        }
        if cfg.udp_rows > 0 {
            let path = dir.join("log_udp_complete");
            let mut r = rng.fork(2 * u64::from(d) + 1);
            let w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            let st = write_udp(w, &mut r, cfg.udp_rows, dir_start * 1000)?;
            sum.udp_rows += cfg.udp_rows;
            sum.add(&st);
            files.push(path);
        }
        if let Some(age) = cfg.mtime_age {
            let when = SystemTime::now() - age;
            for f in &files {
                File::options().write(true).open(f)?.set_modified(when)?;
            }
        }
        sum.dirs.push(dir);
    }
    // Keep the PRNG used so a future per-tree draw does not alias a fork.
    let _ = rng.next_u64();
    Ok(sum)
}

/// Counters of one written file.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStats {
    /// Bytes written.
    pub bytes: u64,
    /// Rows with a side above [`ELEPHANT_BYTES`].
    pub elephants: u64,
    /// Directions at or above [`DEFAULT_THRESHOLD`].
    pub docs_at_default_threshold: u64,
}

impl Summary {
    fn add(&mut self, st: &FileStats) {
        self.bytes += st.bytes;
        self.elephants += st.elephants;
        self.docs_at_default_threshold += st.docs_at_default_threshold;
    }
}

/// Directory name (`YYYY_MM_DD_HH_MM`, UTC) for epoch seconds.
pub fn dir_name(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

// ---------------------------------------------------------------------------
// PRNG

/// splitmix64: tiny, fast, good enough for synthetic data, fully determined
/// by its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// An independent stream derived from this one's seed and `n`.
    pub fn fork(&self, n: u64) -> Rng {
        let mut r = Rng(self.0 ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        r.next_u64();
        r
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and log-space sigma.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Log-uniform in `[lo, hi)`.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo * (hi / lo).powf(self.unit())
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// Line building

/// A reusable row buffer with the few formatters Tstat's printf uses.
struct Line {
    buf: Vec<u8>,
    itoa: itoa::Buffer,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: Vec::with_capacity(1024),
            itoa: itoa::Buffer::new(),
        }
    }

    /// A field separator (Tstat separates by single spaces).
    fn sp(&mut self) {
        self.buf.push(b' ');
    }

    /// `%lu` and friends.
    fn int(&mut self, v: u64) -> &mut Self {
        let s = self.itoa.format(v);
        self.buf.extend_from_slice(s.as_bytes());
        self.sp();
        self
    }

    /// `%f` of a non-negative value given in millionths.
    fn fix6(&mut self, micros: u64) -> &mut Self {
        let s = self.itoa.format(micros / 1_000_000);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(b'.');
        let frac = micros % 1_000_000;
        let s = self.itoa.format(frac);
        for _ in s.len()..6 {
            self.buf.push(b'0');
        }
        self.buf.extend_from_slice(s.as_bytes());
        self.sp();
        self
    }

    /// `%f` of a non-negative float.
    fn f6(&mut self, v: f64) -> &mut Self {
        self.fix6((v.max(0.0) * 1e6).round() as u64)
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.buf.extend_from_slice(s.as_bytes());
        self.sp();
        self
    }

    fn ipv4(&mut self, a: [u8; 4]) -> &mut Self {
        for (i, o) in a.iter().enumerate() {
            if i > 0 {
                self.buf.push(b'.');
            }
            let s = self.itoa.format(*o);
            self.buf.extend_from_slice(s.as_bytes());
        }
        self.sp();
        self
    }

    /// Lowercase hex without leading zeros, as `inet_ntop` prints a group.
    fn hex(&mut self, v: u16) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let d = (v >> shift) & 0xf;
            if d != 0 || started || shift == 0 {
                self.buf.push(DIGITS[d as usize]);
                started = true;
            }
        }
    }

    fn ip(&mut self, ip: &Ip) -> &mut Self {
        match ip {
            Ip::V4(a) => self.ipv4(*a),
            Ip::V6 { head, tail } => {
                // Groups are non-zero, so this is inet_ntop's compressed form:
                // HEAD groups, "::" for the zero run, TAIL groups.
                for (i, g) in head.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b':');
                    }
                    self.hex(*g);
                }
                self.buf.extend_from_slice(b"::");
                for (i, g) in tail.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b':');
                    }
                    self.hex(*g);
                }
                self.sp();
                self
            }
        }
    }

    /// Ends the row: the last separator becomes the newline.
    fn finish(&mut self) -> &[u8] {
        if let Some(last) = self.buf.last_mut() {
            *last = b'\n';
        }
        &self.buf
    }
}

/// An address: IPv4, or IPv6 written as `head::tail` with non-zero groups.
enum Ip {
    V4([u8; 4]),
    V6 { head: Vec<u16>, tail: Vec<u16> },
}

fn nz16(rng: &mut Rng) -> u16 {
    (rng.next_u64() as u16) | 1
}

fn public_v4(rng: &mut Rng) -> Ip {
    loop {
        let a = rng.range(1, 223) as u8;
        if a == 10 || a == 127 || a == 100 || a == 172 || a == 192 {
            continue;
        }
        return Ip::V4([
            a,
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.range(1, 254) as u8,
        ]);
    }
}

fn private_v4(rng: &mut Rng) -> Ip {
    if rng.chance(0.5) {
        Ip::V4([192, 168, rng.below(256) as u8, rng.range(1, 254) as u8])
    } else {
        Ip::V4([
            10,
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.range(1, 254) as u8,
        ])
    }
}

fn global_v6(rng: &mut Rng) -> Ip {
    let prefix: u16 = rng.pick(&[0x2001, 0x2600, 0x2a00, 0x2607, 0x2620]);
    Ip::V6 {
        head: vec![prefix, nz16(rng), nz16(rng), nz16(rng)],
        tail: vec![nz16(rng)],
    }
}

fn link_local_v6(rng: &mut Rng) -> Ip {
    Ip::V6 {
        head: vec![0xfe80],
        tail: vec![nz16(rng), nz16(rng), nz16(rng), nz16(rng)],
    }
}

/// Names seen in research-network flow logs, plus generic web names.
const HOSTS: &[&str] = &[
    "perfsonar.ucar.edu",
    "dtn01.es.net",
    "dtn02.nersc.gov",
    "data.example.org",
    "www.github.com",
    "raw.githubusercontent.com",
    "grafana.com",
    "fonts.gstatic.com",
    "cdn.jsdelivr.net",
    "globus.org",
    "transfer.api.globus.org",
    "xrootd.cern.ch",
    "eospublic.cern.ch",
    "fts3.cern.ch",
    "osg-htc.org",
    "stash.osgconnect.net",
    "desktop.client.ott.sky.com",
    "updates.example.edu",
    "ps-latency.internet2.edu",
    "s3.us-west-2.amazonaws.com",
];

fn host(rng: &mut Rng) -> &'static str {
    rng.pick(HOSTS)
}

/// Byte count with a heavy tail; `None` for an elephant roll.
fn flow_bytes(rng: &mut Rng, median: f64, sigma: f64) -> u64 {
    rng.lognormal(median, sigma).min(15e9) as u64
}

fn elephant_bytes(rng: &mut Rng) -> u64 {
    rng.log_uniform(20.5e9, 400e9) as u64
}

fn segments(bytes: u64, seg: u64) -> u64 {
    bytes.div_ceil(seg)
}

// ---------------------------------------------------------------------------
// TCP

/// One direction of a TCP flow, as Tstat counts it.
struct TcpSide {
    bytes_uniq: u64,
    pkts_data: u64,
    pkts_retx: u64,
    bytes_retx: u64,
    mss: u64,
}

fn tcp_side(rng: &mut Rng, bytes_uniq: u64, mss: u64) -> TcpSide {
    let seg = mss.saturating_sub(rng.below(40)).max(536);
    let pkts_data = segments(bytes_uniq, seg);
    let pkts_retx = if pkts_data > 0 && rng.chance(0.2) {
        let rate = rng.log_uniform(1e-5, 2e-2);
        ((pkts_data as f64 * rate) as u64).clamp(1, pkts_data)
    } else {
        0
    };
    // Tstat prints bytes_retx with %u.
    let bytes_retx = (pkts_retx * seg).min(u64::from(u32::MAX));
    TcpSide {
        bytes_uniq,
        pkts_data,
        pkts_retx,
        bytes_retx,
        mss,
    }
}

/// Writes a `log_tcp_complete` with `n` rows whose flows end during the hour
/// starting at `hour_ms` (epoch ms), in flow-end order as Tstat writes them.
pub fn write_tcp<W: Write>(mut w: W, rng: &mut Rng, n: u64, hour_ms: u64) -> io::Result<FileStats> {
    let mut st = FileStats::default();
    let mut line = Line::new();
    w.write_all(TCP_HEADER.as_bytes())?;
    w.write_all(b"\n")?;
    st.bytes += TCP_HEADER.len() as u64 + 1;
    for i in 0..n {
        line.buf.clear();
        tcp_row(&mut line, rng, i, n, hour_ms, &mut st);
        let row = line.finish();
        w.write_all(row)?;
        st.bytes += row.len() as u64;
    }
    w.flush()?;
    Ok(st)
}

fn tcp_row(line: &mut Line, rng: &mut Rng, i: u64, n: u64, hour_ms: u64, st: &mut FileStats) {
    let v6 = rng.chance(0.15);
    let (c_ip, s_ip) = if v6 {
        (global_v6(rng), global_v6(rng))
    } else if rng.chance(0.6) {
        (private_v4(rng), public_v4(rng))
    } else {
        (public_v4(rng), public_v4(rng))
    };
    let c_port = rng.range(32_768, 60_999);
    let s_port = rng.pick(&[443, 443, 443, 443, 80, 22, 2811, 5201, 8443, 1094, 50_000]);
    let s_port = if s_port == 50_000 {
        rng.range(50_000, 51_000)
    } else {
        s_port
    };

    // Kind of flow: failed/empty handshakes, ordinary, elephants.
    let empty = rng.chance(0.03);
    let elephant = !empty && rng.chance(0.001);
    let jumbo = elephant || rng.chance(0.05);
    let c_mss = if jumbo {
        8948
    } else {
        rng.pick(&[1460, 1460, 1460, 1440, 1380, 1220])
    };
    let s_mss = if jumbo {
        8948
    } else {
        rng.pick(&[1460, 1460, 1440, 1400, 1380])
    };
    let (c_bytes, s_bytes) = if empty {
        (0, 0)
    } else if elephant {
        if rng.chance(0.7) {
            (flow_bytes(rng, 20_000.0, 2.0), elephant_bytes(rng))
        } else {
            (elephant_bytes(rng), flow_bytes(rng, 200_000.0, 2.0))
        }
    } else {
        (flow_bytes(rng, 800.0, 1.8), flow_bytes(rng, 4000.0, 2.6))
    };
    let c = tcp_side(rng, c_bytes, c_mss);
    let s = tcp_side(rng, s_bytes, s_mss);
    if c.bytes_uniq > ELEPHANT_BYTES || s.bytes_uniq > ELEPHANT_BYTES {
        st.elephants += 1;
    }
    for side in [&c, &s] {
        if side.bytes_uniq >= DEFAULT_THRESHOLD {
            st.docs_at_default_threshold += 1;
        }
    }

    // Duration (ms): elephants move at 0.5–20 Gb/s, the rest is log-normal;
    // a few single-packet flows have exactly 0.
    let durat_us: u64 = if empty && rng.chance(0.3) || rng.chance(0.003) {
        0
    } else if elephant {
        let rate = rng.log_uniform(0.5e9, 20e9);
        ((c.bytes_uniq + s.bytes_uniq) as f64 * 8.0 / rate * 1e6) as u64
    } else {
        (rng.lognormal(1500.0, 2.0).min(7_200_000.0) * 1000.0) as u64
    };
    // Flows end in order through the hour; the start follows.
    // Times are kept in ns = millionths of the ms Tstat prints with %f.
    let end_ns =
        hour_ms * 1_000_000 + (i * 3_600_000_000) / n.max(1) * 1000 + rng.below(1_000_000_000);
    let durat_ns = if durat_us == 0 {
        0
    } else {
        durat_us * 1000 + rng.below(1000)
    };
    let first_ns = end_ns.saturating_sub(durat_ns);
    let durat = durat_ns as f64 / 1e6;

    // RTT (ms) and relative times.
    let rtt = rng.log_uniform(0.05, 300.0);
    let rel = |rng: &mut Rng, lo: f64| -> f64 {
        if durat == 0.0 {
            0.0
        } else {
            (lo + rng.unit() * (durat - lo).max(0.0)).min(durat)
        }
    };

    let side_core =
        |line: &mut Line, rng: &mut Rng, ip: &Ip, port: u64, me: &TcpSide, other: &TcpSide| {
            let acks = other.pkts_data / 2 + rng.below(3);
            let syn = if empty { rng.range(1, 3) } else { 1 };
            let fin = u64::from(!empty && rng.chance(0.9));
            let rst = u64::from(rng.chance(if empty { 0.5 } else { 0.08 }));
            let pkts_all = me.pkts_data + me.pkts_retx + acks + syn + fin + rst;
            let ack_cnt = pkts_all.saturating_sub(1);
            let ack_p = ack_cnt.saturating_sub(me.pkts_data + me.pkts_retx);
            let ooo = if me.pkts_data > 100 { rng.below(3) } else { 0 };
            line.ip(ip)
                .int(port)
                .int(pkts_all)
                .int(rst)
                .int(ack_cnt)
                .int(ack_p)
                .int(me.bytes_uniq)
                .int(me.pkts_data)
                .int(me.bytes_uniq + me.bytes_retx)
                .int(me.pkts_retx)
                .int(me.bytes_retx)
                .int(ooo)
                .int(syn)
                .int(fin);
        };
    side_core(line, rng, &c_ip, c_port, &c, &s);
    side_core(line, rng, &s_ip, s_port, &s, &c);

    line.fix6(first_ns).fix6(first_ns + durat_ns).fix6(durat_ns);
    let c_first = rel(rng, rtt.min(durat));
    let s_first = rel(rng, (2.0 * rtt).min(durat));
    let c_last = rel(rng, c_first);
    let s_last = rel(rng, s_first);
    line.f6(c_first)
        .f6(s_first)
        .f6(c_last)
        .f6(s_last)
        .f6(rel(rng, 0.0).min(rtt))
        .f6(rel(rng, 0.0).min(rtt * 1.1));
    let internal = u64::from(rng.chance(0.9));
    let tls = !empty && s_port != 80 && rng.chance(0.8);
    let http = !empty && !tls && (s_port == 80 || rng.chance(0.1));
    let con_t: u64 = if tls {
        8192
    } else if http {
        1
    } else {
        0
    };
    line.int(internal).int(rng.below(2)).int(0).int(0);
    line.int(con_t)
        .int(0)
        .int(if http { rng.below(12) } else { 0 });

    // End-to-end block: RTT and TTL per side.
    for (side, ttl_opts) in [(&c, [64u64, 63, 128, 127]), (&s, [50, 58, 38, 254])] {
        let cnt = if side.pkts_data == 0 {
            0
        } else {
            rng.range(1, side.pkts_data.min(50_000))
        };
        if cnt == 0 {
            line.f6(0.0).f6(0.0).f6(0.0).f6(0.0).int(0);
        } else {
            let avg = rtt * (0.8 + 0.4 * rng.unit());
            let min = avg * (0.3 + 0.7 * rng.unit());
            let max = avg * (1.0 + 2.0 * rng.unit());
            let std = if cnt > 1 { (max - min) / 4.0 } else { 0.0 };
            line.f6(avg).f6(min).f6(max).f6(std).int(cnt);
        }
        let ttl = rng.pick(&ttl_opts);
        line.int(ttl).int(ttl + u64::from(rng.chance(0.05)));
    }

    // P2P block: always zero on research links.
    line.int(0).int(0).int(0).int(0).int(0).int(0);

    // Options block, 23 columns per side.
    let ws_both = rng.chance(0.9);
    for side in [&c, &s] {
        let scale = if ws_both {
            rng.pick(&[7u64, 8, 9, 10, 14])
        } else {
            0
        };
        let mss_max = side.bytes_uniq.min(side.mss);
        let mss_min = if side.pkts_data > 1 {
            rng.range(1, mss_max.max(1))
        } else {
            mss_max
        };
        let win_max = rng.range(29_200, 64_240) << scale.min(8);
        let cwin_max = side.bytes_uniq.min(rng.range(1_000, 60_000_000));
        let cwin_min = cwin_max.min(rng.range(0, 1_500));
        let small = |rng: &mut Rng| {
            if side.pkts_retx == 0 {
                0
            } else {
                rng.below(side.pkts_retx + 1)
            }
        };
        line.int(u64::from(ws_both))
            .int(rng.below(2))
            .int(scale)
            .int(1)
            .int(if side.pkts_retx > 0 {
                rng.below(side.pkts_retx * 2 + 1)
            } else {
                0
            })
            .int(side.mss)
            .int(mss_max)
            .int(mss_min)
            .int(win_max)
            .int(rng.range(0, 64_240))
            .int(u64::from(rng.chance(0.01)))
            .int(cwin_max)
            .int(cwin_min)
            .int(cwin_max.min(rng.range(0, 15_000)));
        for _ in 0..8 {
            let v = small(rng);
            line.int(v);
        }
        line.int(0);
    }

    // Layer-7 block (20 columns).
    if http {
        let req = rng.range(1, 5);
        line.int(req)
            .int(req)
            .str(rng.pick(&["200", "200", "304", "301", "404"]));
    } else {
        line.int(0).int(0).str("---");
    }
    line.int(c.pkts_data.min(1_000_000) / 2 + u64::from(!empty))
        .int(s.pkts_data.min(1_000_000) / 2 + u64::from(!empty));
    if tls {
        let sni = if rng.chance(0.85) { host(rng) } else { "-" };
        let scn = if rng.chance(0.7) { host(rng) } else { "-" };
        line.str(sni)
            .str(scn)
            .int(rng.below(8))
            .int(rng.below(8))
            .int(rng.below(2));
        let hs = rel(rng, 0.0);
        line.f6(hs)
            .f6(rel(rng, 0.0))
            .f6(rel(rng, hs))
            .f6(rel(rng, hs));
        line.int(rng.range(200, 2_000))
            .int(rng.range(1_000, 12_000));
    } else {
        line.str("-").str("-").int(0).int(0).int(0);
        line.f6(0.0).f6(0.0).f6(0.0).f6(0.0).int(0).int(0);
    }
    if !empty && rng.chance(0.4) {
        let req_ns = first_ns.saturating_sub(rng.range(1_000_000, 2_000_000_000));
        line.str(host(rng));
        if rng.chance(0.5) {
            line.ipv4([192, 168, rng.below(256) as u8, rng.range(1, 254) as u8]);
        } else {
            let r = private_v4(rng);
            line.ip(&r);
        }
        line.fix6(req_ns);
        if rng.chance(0.0002) {
            line.str("-1000.000000");
        } else {
            line.fix6(req_ns + rng.range(100_000, 80_000_000));
        }
    } else {
        line.str("-").str("-").str("0.0").str("0.0");
    }
}

// ---------------------------------------------------------------------------
// UDP

/// Writes a `log_udp_complete` with `n` rows ending during the hour that
/// starts at `hour_ms`.
pub fn write_udp<W: Write>(mut w: W, rng: &mut Rng, n: u64, hour_ms: u64) -> io::Result<FileStats> {
    let mut st = FileStats::default();
    let mut line = Line::new();
    w.write_all(UDP_HEADER.as_bytes())?;
    w.write_all(b"\n")?;
    st.bytes += UDP_HEADER.len() as u64 + 1;
    for i in 0..n {
        line.buf.clear();
        udp_row(&mut line, rng, i, n, hour_ms, &mut st);
        let row = line.finish();
        w.write_all(row)?;
        st.bytes += row.len() as u64;
    }
    w.flush()?;
    Ok(st)
}

fn udp_row(line: &mut Line, rng: &mut Rng, i: u64, n: u64, hour_ms: u64, st: &mut FileStats) {
    let end_ns =
        hour_ms * 1_000_000 + (i * 3_600_000_000) / n.max(1) * 1000 + rng.below(1_000_000_000);
    let kind = rng.below(100);
    // (client ip, server ip, c_port, s_port, c/s type, c/s bytes, c/s pkts,
    //  c/s duration in µs, one-sided?, fqdn)
    let (c_ip, s_ip, c_port, s_port, c_type, s_type);
    let (c_bytes, s_bytes, c_pkts, s_pkts, c_dur, s_dur);
    let one_sided;
    let mut fqdn = "-";
    if kind < 6 {
        // mDNS / LLMNR multicast: nobody answers (tstat-formats.md §5).
        one_sided = true;
        if rng.chance(0.5) {
            c_ip = link_local_v6(rng);
            s_ip = Ip::V6 {
                head: vec![0xff02],
                tail: vec![rng.pick(&[0xfb, 0xfb, 0x3])],
            };
        } else {
            c_ip = private_v4(rng);
            s_ip = Ip::V4([224, 0, 0, 251]);
        }
        c_port = 5353;
        s_port = 5353;
        c_type = 0;
        s_type = 0;
        c_pkts = rng.range(1, 3);
        c_bytes = c_pkts * rng.range(40, 400);
        c_dur = if c_pkts == 1 {
            0
        } else {
            rng.range(1_000, 3_000_000)
        };
        (s_bytes, s_pkts, s_dur) = (0, 0, 0);
    } else if kind < 31 {
        // DNS.
        let v6 = rng.chance(0.2);
        (c_ip, s_ip) = if v6 {
            (global_v6(rng), global_v6(rng))
        } else {
            (private_v4(rng), public_v4(rng))
        };
        c_port = rng.range(1024, 65_535);
        s_port = 53;
        c_type = 19;
        s_type = 19;
        c_pkts = 1 + u64::from(rng.chance(0.1));
        s_pkts = if rng.chance(0.03) { 0 } else { c_pkts };
        one_sided = s_pkts == 0;
        c_bytes = c_pkts * rng.range(28, 80);
        s_bytes = s_pkts * rng.range(60, 500);
        c_dur = if c_pkts > 1 {
            rng.range(100_000, 5_000_000)
        } else {
            0
        };
        s_dur = if s_pkts > 1 { c_dur } else { 0 };
        if rng.chance(0.7) {
            fqdn = host(rng);
        }
    } else {
        // QUIC (443) and other UDP: heavy-tailed, a few elephants.
        let quic = kind < 70;
        let v6 = rng.chance(0.2);
        (c_ip, s_ip) = if v6 {
            (global_v6(rng), global_v6(rng))
        } else {
            (private_v4(rng), public_v4(rng))
        };
        c_port = rng.range(1024, 65_535);
        s_port = if quic {
            443
        } else {
            rng.pick(&[123, 500, 4500, 1194, 3478, 51_820, 9_000])
        };
        c_type = if quic { 27 } else { rng.pick(&[0, 1, 2, 8]) };
        s_type = c_type;
        let elephant = rng.chance(0.001);
        one_sided = !elephant && rng.chance(0.05);
        c_bytes = if elephant && rng.chance(0.3) {
            elephant_bytes(rng)
        } else {
            flow_bytes(rng, 1_500.0, 2.0).max(20)
        };
        s_bytes = if one_sided {
            0
        } else if elephant && c_bytes < ELEPHANT_BYTES {
            elephant_bytes(rng)
        } else {
            flow_bytes(rng, 6_000.0, 2.6).max(20)
        };
        c_pkts = segments(c_bytes, 1_350).max(1);
        s_pkts = segments(s_bytes, 1_350);
        let secs = if elephant {
            (c_bytes + s_bytes) as f64 * 8.0 / rng.log_uniform(0.3e9, 5e9)
        } else {
            rng.lognormal(2.0, 2.0).min(7_200.0)
        };
        c_dur = if c_pkts > 1 { (secs * 1e6) as u64 } else { 0 };
        s_dur = if s_pkts > 1 {
            (secs * 1e6 * rng.unit()) as u64
        } else {
            0
        };
        if quic && rng.chance(0.6) || rng.chance(0.2) {
            fqdn = host(rng);
        }
    }
    if c_bytes > ELEPHANT_BYTES || s_bytes > ELEPHANT_BYTES {
        st.elephants += 1;
    }
    for b in [c_bytes, s_bytes] {
        if b >= DEFAULT_THRESHOLD {
            st.docs_at_default_threshold += 1;
        }
    }
    // c_first_abs: the flow's first packet; UDP durations are in seconds.
    // c_first_abs is epoch ms (%f, so ns = millionths of a ms); the durations
    // c_dur/s_dur are µs = millionths of the seconds Tstat prints.
    let c_first_ns = end_ns.saturating_sub(c_dur * 1000);
    let internal = u64::from(rng.chance(0.9));
    line.ip(&c_ip)
        .int(c_port)
        .fix6(c_first_ns)
        .fix6(c_dur)
        .int(c_bytes)
        .int(c_pkts)
        .int(internal)
        .int(0)
        .int(c_type);
    line.ip(&s_ip).int(s_port);
    if one_sided {
        line.str("0.000000").str("0.000000");
    } else {
        let s_first_ns = c_first_ns + rng.range(50_000, 300_000_000);
        line.fix6(s_first_ns).fix6(s_dur);
    }
    line.int(s_bytes)
        .int(s_pkts)
        .int(u64::from(rng.chance(0.2)))
        .int(0)
        .int(s_type)
        .str(fqdn);
}
