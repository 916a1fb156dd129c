//! A log's header line: which protocol, how many columns, and where each
//! value of a document is. Columns are found by name, never by position.

use std::path::Path;

use super::ParseError;
use super::split::trim_cr;
use crate::flow::doc::{self, Columns, TcpCols, TcpDir, UdpDir};

/// Which log a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `log_tcp_complete`.
    Tcp,
    /// `log_udp_complete`.
    Udp,
}

impl Protocol {
    /// The protocol named by a log file name (`log_tcp_complete[.gz]`).
    pub fn from_file_name(path: &Path) -> Option<Protocol> {
        let name = path.file_name()?.to_str()?;
        let name = name.strip_suffix(".gz").unwrap_or(name);
        match name {
            "log_tcp_complete" => Some(Protocol::Tcp),
            "log_udp_complete" => Some(Protocol::Udp),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A parsed header: the column count and where each needed column is. Read
/// it once per log; the rows after it are parsed with
/// [`Parser::parse_lines`](super::Parser::parse_lines).
#[derive(Clone, Debug)]
pub struct Header {
    /// Columns every row must have.
    pub(super) ncols: usize,
    /// Fields needed for the threshold test (both byte columns).
    pub(super) filter_upto: usize,
    /// Fields needed for the documents: columns after these are only
    /// counted.
    pub(super) split_upto: usize,
    pub(super) columns: Columns,
}

pub(super) const NO_HEADER: &str = "no header line: the first line does not start with '#' \
                         (Tstat before 2.4 wrote headerless logs; they are not supported)";

/// Column names of a header line, in order; an error when the line is not a
/// Tstat header.
fn header_names(line: &str) -> Result<Vec<&str>, String> {
    if !line.starts_with('#') {
        return Err(NO_HEADER.into());
    }
    let mut names = Vec::new();
    for tok in line.split(' ') {
        let name = tok.rsplit('#').next().unwrap_or(tok);
        let name = name.split(':').next().unwrap_or(name);
        if name.is_empty() {
            return Err(format!("malformed header token '{tok}'"));
        }
        names.push(name);
    }
    Ok(names)
}

impl Header {
    /// The header of log `name` from its first line (without its newline; a
    /// CR at its end is ignored). The error names `name`.
    pub fn from_line(line: &[u8], name: &str, proto: Protocol) -> Result<Header, ParseError> {
        let line = trim_cr(line);
        let text = std::str::from_utf8(line).map_err(|_| ParseError::Header {
            path: name.to_string(),
            msg: "the first line is not valid UTF-8, so it is no Tstat header".into(),
        })?;
        Header::parse(text, proto).map_err(|msg| ParseError::Header {
            path: name.to_string(),
            msg,
        })
    }

    fn parse(line: &str, proto: Protocol) -> Result<Header, String> {
        let names = header_names(line)?;
        let find = |n: &str| names.iter().position(|&x| x == n);
        let mut missing: Vec<String> = Vec::new();
        let mut need = |n: String| -> usize {
            match find(&n) {
                Some(i) => i,
                None => {
                    missing.push(n);
                    0
                }
            }
        };
        let columns = match proto {
            Protocol::Tcp => {
                if find("first_abs").is_some() {
                    return Err(
                        "this is a Tstat 2.4 log (its header has 'first_abs'; 'first' \
                                and 'last' are relative times): Tstat 2.4 logs are not supported"
                            .into(),
                    );
                }
                let durat = need("durat".into());
                let first = need("first".into());
                let last = need("last".into());
                let mut dir = |p: &str| TcpDir {
                    ip: need(format!("{p}_ip")),
                    port: need(format!("{p}_port")),
                    bytes: need(format!("{p}_bytes_uniq")),
                    pkts: need(format!("{p}_pkts_data")),
                    pkts_retx: find(&format!("{p}_pkts_retx")),
                    fields: doc::tcp_fields(|suffix| find(&format!("{p}_{suffix}"))),
                };
                let dirs = [dir("c"), dir("s")];
                let pair = |a: &str, b: &str| Some((find(a)?, find(b)?));
                Columns::Tcp(Box::new(TcpCols {
                    durat,
                    first,
                    last,
                    mss: pair("c_mss", "s_mss"),
                    sack: pair("c_sack_cnt", "s_sack_cnt"),
                    dirs,
                }))
            }
            Protocol::Udp => {
                let mut dir = |p: &str| UdpDir {
                    ip: need(format!("{p}_ip")),
                    port: need(format!("{p}_port")),
                    first_abs: need(format!("{p}_first_abs")),
                    durat: need(format!("{p}_durat")),
                    bytes: need(format!("{p}_bytes_all")),
                    pkts: need(format!("{p}_pkts_all")),
                };
                Columns::Udp([dir("c"), dir("s")])
            }
        };
        if !missing.is_empty() {
            return Err(format!(
                "header lacks column{} {} needed for {} flows",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                proto.as_str()
            ));
        }
        let [c, s] = columns.byte_columns();
        Ok(Header {
            ncols: names.len(),
            filter_upto: c.max(s) + 1,
            split_upto: columns.last_column() + 1,
            columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_cut_at_colon_and_hash() {
        let names = header_names("#15#c_ip:1 c_port:2 durat:31").unwrap();
        assert_eq!(names, ["c_ip", "c_port", "durat"]);
        assert!(header_names("1.2.3.4 80").is_err());
    }

    #[test]
    fn tstat_24_is_refused() {
        let e = Header::parse(
            "#c_ip:1 durat:89 first:90 last:91 first_abs:98",
            Protocol::Tcp,
        )
        .unwrap_err();
        assert!(e.contains("2.4"), "{e}");
    }

    #[test]
    fn missing_core_columns_are_named() {
        let e = Header::parse("#c_ip:1 c_port:2", Protocol::Udp).unwrap_err();
        assert!(e.contains("s_ip") && e.contains("c_durat"), "{e}");
    }
}
