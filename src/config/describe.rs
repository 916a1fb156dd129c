//! The `--verbose` dump of the validated settings, ini-like, with the
//! password hidden and control characters escaped.

use super::{Endpoint, RabbitConfig, STREAM_OPTIONS};

/// ` value`, or nothing for an empty value (no trailing blank in `key =`).
fn spaced(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(" {}", escaped(value))
    }
}

/// The value with control characters escaped (`\n`, `\t`, `\u{1b}`), so a
/// value from the environment cannot break or forge lines of a dump.
fn escaped(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl RabbitConfig {
    /// An ini-like dump of the validated settings for `--verbose`, with
    /// `password = ***`, ports resolved and defaults filled in, and control
    /// characters escaped. With the password put back it reads as the same
    /// config (used in the tests) unless a value held a control character.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let hosts: Vec<String> = self.endpoints.iter().map(Endpoint::to_string).collect();
        let path = self.path.display().to_string();
        let _ = writeln!(s, "# {} (validated)", escaped(&path));
        let _ = writeln!(s, "[rabbit]");
        let _ = writeln!(s, "host = {}", hosts.join(","));
        // Every host above carries its port; this keeps the dump a valid file.
        let port = self.endpoints.first().map_or(5672, |e| e.port);
        let _ = writeln!(s, "port = {port}");
        let _ = writeln!(s, "username = {}", escaped(&self.username));
        let _ = writeln!(s, "password = ***");
        let _ = writeln!(s, "vhost = {}", escaped(&self.vhost));
        let _ = writeln!(s, "use_ssl = {}", self.tls.is_some());
        let _ = writeln!(s, "queue ={}", spaced(self.queue.as_deref().unwrap_or("")));
        let _ = writeln!(s, "routing_key ={}", spaced(&self.routing_key));
        let _ = writeln!(s, "exchange ={}", spaced(&self.exchange));
        let _ = writeln!(s, "persistent = {}", self.persistent);
        if let Some(st) = &self.stream {
            let _ = writeln!(s, "transport = stream");
            let _ = writeln!(s, "stream = {}", escaped(&st.name));
            let _ = writeln!(s, "stream_port = {}", st.port);
        }
        let q = &self.queue_options;
        if q.is_empty() && self.stream.is_some() {
            // Nothing to say: a stream has no queue to declare.
        } else if q.is_empty() {
            let _ = writeln!(
                s,
                "# [rabbit_queue_options] absent: the queue is checked and created durable if missing"
            );
        } else {
            let _ = writeln!(s, "[rabbit_queue_options]");
            for (k, v) in [
                ("durable", q.durable),
                ("exclusive", q.exclusive),
                ("auto_delete", q.auto_delete),
                ("passive", q.passive),
            ] {
                if let Some(v) = v {
                    let _ = writeln!(s, "{k} = {v}");
                }
            }
            for (k, v) in &q.arguments {
                let _ = writeln!(s, "{k} = {}", escaped(&v.to_string()));
            }
        }
        if let Some(st) = &self.stream {
            let args = st.options.arguments();
            if args.is_empty() {
                let _ = writeln!(
                    s,
                    "# [rabbit_stream_options] absent: a stream created by this program gets the broker's defaults"
                );
            } else {
                let _ = writeln!(s, "[{STREAM_OPTIONS}]");
                for (k, v) in args {
                    let _ = writeln!(s, "{k} = {v}");
                }
            }
        }
        if let Some(t) = &self.tls {
            let _ = writeln!(s, "[ssl_options]");
            for (k, v) in [
                ("ca_certs", &t.ca_certs),
                ("certfile", &t.certfile),
                ("keyfile", &t.keyfile),
            ] {
                if let Some(p) = v {
                    let _ = writeln!(s, "{k} = {}", escaped(&p.display().to_string()));
                }
            }
            if let Some(h) = &t.server_hostname {
                let _ = writeln!(s, "server_hostname = {h}");
            }
            let _ = writeln!(s, "cert_reqs = {}", t.cert_reqs.as_str());
        }
        s
    }
}
