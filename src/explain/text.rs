//! The text form of an [`Explanation`]: the verdict first, then what
//! decided it, one fact per line.

use std::fmt::Write as _;

use super::model::{
    ClientCertCheck, DestinationInfo, Direction, Explanation, RequestKind, ServerTlsInfo,
};

/// Renders `ex` for a terminal.
pub fn render(ex: &Explanation) -> String {
    let mut out = String::new();
    let dir = match ex.direction {
        Direction::Outbound => "outbound",
        Direction::Inbound => "inbound",
    };
    let _ = writeln!(out, "{dir} {}", ex.request.target);
    let r = &ex.request;
    let how = match r.kind {
        RequestKind::Http => "plain HTTP from the app",
        RequestKind::Connect => "CONNECT tunnel from the app",
        RequestKind::Tls => "TLS",
        RequestKind::Plaintext => "plain text",
    };
    let mut req = match (&r.method, &r.host) {
        (Some(m), Some(h)) => format!("{m} {h}:{}", r.port),
        (None, Some(h)) => format!("{h}:{}", r.port),
        (_, None) => format!("port {}", r.port),
    };
    if let Some(p) = &r.path {
        let _ = write!(req, " {p}");
    }
    if let Some(s) = &r.sni {
        let _ = write!(req, " (SNI {s})");
    }
    kv(&mut out, 2, "request", &format!("{req}, {how}"));
    match (&ex.refusal, &ex.destination) {
        (Some(f), _) => {
            let mut head = String::from("REFUSED");
            match (f.status, &f.alert) {
                (Some(s), _) => {
                    let _ = write!(head, " ({s} {})", f.code);
                }
                (None, Some(a)) if *a == f.code => {
                    let _ = write!(head, " (TLS alert {a})");
                }
                (None, Some(a)) => {
                    let _ = write!(head, " (TLS alert {a}; {})", f.code);
                }
                (None, None) => {
                    let _ = write!(head, " (connection closed, {})", f.code);
                }
            }
            kv(&mut out, 2, "result", &format!("{head}: {}", f.reason));
            if let Some(s) = &f.suggestion {
                kv(&mut out, 2, "fix", s);
            }
        }
        (None, Some(d)) => {
            let passthrough = ex
                .server_tls
                .as_ref()
                .is_some_and(|t| t.mode == "PASSTHROUGH");
            let how = match &d.tls {
                Some(t) => format!("over TLS ({})", t.mode),
                None if passthrough => "with the client's TLS passed through".into(),
                None if r.kind == RequestKind::Connect => {
                    "through the CONNECT tunnel (the app's bytes as they are)".into()
                }
                None => "in plain text".into(),
            };
            kv(
                &mut out,
                2,
                "result",
                &format!("SERVED: to {}:{} {how}", d.host, d.port),
            );
        }
        (None, None) => kv(&mut out, 2, "result", "not served"),
    }
    // Under ALLOW (the default) plain text is not a question: the line
    // is printed under REQUIRE only (JSON has it always).
    if let Some(p) = ex.tls_policy.as_ref().filter(|p| p.mode != "ALLOW") {
        kv(
            &mut out,
            2,
            "tls policy",
            &format!("{} {}: {}", p.mode, p.decision, p.detail),
        );
    }
    if !ex.matched.is_empty() {
        out.push_str("matched\n");
        for m in &ex.matched {
            kv(&mut out, 2, &m.kind, &m.at);
            kv(&mut out, 2, "", &m.detail);
        }
    }
    if let Some(l) = &ex.listener {
        let mut s = format!("port {}", l.port);
        if let Some(b) = &l.bind {
            let _ = write!(s, " on {b}");
        }
        s.push_str(if l.tls { ", TLS" } else { ", plain text" });
        if l.permissive {
            s.push_str(" (PERMISSIVE: plain text too)");
        }
        if l.mesh {
            s.push_str(", mesh inbound");
        }
        let _ = write!(s, ", {} server(s)", l.servers);
        kv(&mut out, 0, "listener", &s);
    }
    if let Some(s) = &ex.server {
        kv(&mut out, 0, "server", &s.at);
        kv(&mut out, 2, "protocol", &s.protocol);
        kv(&mut out, 2, "hosts", &s.hosts.join(", "));
        kv(&mut out, 2, "chosen by", &s.selected_by);
    }
    if let Some(t) = &ex.server_tls {
        server_tls(&mut out, t);
    }
    if let Some(c) = &ex.client_certificate {
        client_cert(&mut out, c);
    }
    if let Some(rt) = &ex.route {
        let mut s = rt.at.clone();
        if let Some(i) = rt.index {
            let _ = write!(s, ", http route {i}");
        }
        if let Some(n) = &rt.name {
            let _ = write!(s, " {n:?}");
        }
        kv(&mut out, 0, "route", &s);
        kv(&mut out, 2, "action", &rt.action);
        if let Some(rw) = &rt.rewrite {
            kv(&mut out, 2, "rewrite", rw);
        }
        if let Some(f) = &rt.fault {
            kv(&mut out, 2, "fault", f);
        }
        kv(
            &mut out,
            2,
            "timeout",
            rt.timeout.as_deref().unwrap_or("none"),
        );
        if let Some(r) = &rt.retries {
            let mut s = format!("{} attempt(s)", r.attempts);
            if let Some(p) = &r.per_try_timeout {
                let _ = write!(s, ", {p} per try");
            }
            if !r.retry_on.is_empty() {
                let _ = write!(s, ", on {}", r.retry_on.join(","));
            }
            if !r.retriable_status_codes.is_empty() {
                let codes: Vec<String> = r
                    .retriable_status_codes
                    .iter()
                    .map(u16::to_string)
                    .collect();
                let _ = write!(s, " (statuses {})", codes.join(", "));
            }
            kv(&mut out, 2, "retries", &s);
        }
    }
    if let Some(d) = &ex.destination {
        destination(&mut out, d);
    }
    if !ex.left_out.is_empty() {
        out.push_str("left out\n");
        for e in &ex.left_out {
            let _ = writeln!(out, "  - {e}");
        }
    }
    if !ex.notes.is_empty() {
        out.push_str("notes\n");
        for n in &ex.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

fn server_tls(out: &mut String, t: &ServerTlsInfo) {
    kv(out, 0, "server TLS", &format!("{} ({})", t.mode, t.at));
    for c in &t.certificates {
        kv(out, 2, "certificate", &c.source);
        let mut s = format!(
            "subject {:?}, SANs [{}], notAfter {}",
            c.subject,
            c.sans.join(", "),
            c.not_after
        );
        if let Some(covers) = c.covers_sni {
            s.push_str(if covers {
                ", covers the SNI"
            } else {
                ", does NOT cover the SNI"
            });
        }
        kv(out, 2, "", &s);
    }
    let mut cc = t.client_certificate.clone();
    if let Some(ca) = &t.client_ca {
        let _ = write!(cc, ", verified against {ca}");
    }
    if !t.client_subject_alt_names.is_empty() {
        let _ = write!(
            cc,
            ", SANs allowed: {}",
            t.client_subject_alt_names.join(", ")
        );
    }
    if t.insecure_skip_verify {
        cc.push_str(", insecureSkipVerify");
    }
    kv(out, 2, "client cert", &cc);
    kv(
        out,
        2,
        "versions",
        &format!("{} – {}", t.min_version, t.max_version),
    );
}

fn client_cert(out: &mut String, c: &ClientCertCheck) {
    let verdict = match c.accepted {
        Some(true) => "ACCEPTED".to_string(),
        Some(false) => format!("REJECTED ({})", c.reason.as_deref().unwrap_or("?")),
        None => "not examined".to_string(),
    };
    kv(
        out,
        0,
        "client certificate",
        &format!("{}: {verdict}", c.file),
    );
    kv(
        out,
        2,
        "",
        &format!(
            "subject {:?}, SANs [{}], notAfter {}",
            c.subject,
            c.sans.join(", "),
            c.not_after
        ),
    );
    if let Some(d) = &c.detail {
        kv(out, 2, "", d);
    }
}

fn destination(out: &mut String, d: &DestinationInfo) {
    let kind = match d.kind.as_str() {
        "registered" => "ServiceEntry",
        "ruleOnly" => "no ServiceEntry; the DestinationRule's TLS",
        "passthrough" => "no ServiceEntry; ALLOW_ANY passthrough",
        "host" => "no ServiceEntry; by DNS",
        "defaultEndpoint" => "the Sidecar's defaultEndpoint",
        other => other,
    };
    let mut s = format!("{}:{} ({kind}", d.host, d.port);
    if let Some(p) = &d.protocol {
        let _ = write!(s, ", {p}");
    }
    if let Some(r) = &d.resolution {
        let _ = write!(s, ", resolution {r}");
    }
    if d.http2 {
        s.push_str(", HTTP/2");
    }
    s.push(')');
    kv(out, 0, "destination", &s);
    kv(out, 2, "endpoints", &d.endpoints.join(", "));
    match &d.tls {
        None => kv(out, 2, "TLS", "none (plain text from meshgate)"),
        Some(t) => {
            kv(out, 2, "TLS", &format!("{} ({})", t.mode, t.at));
            kv(out, 4, "SNI", &t.sni);
            kv(out, 4, "expected SANs", &t.expected_sans.join(", "));
            kv(out, 4, "CA", &t.ca);
            kv(
                out,
                4,
                "client cert",
                t.client_certificate.as_deref().unwrap_or("none"),
            );
            if let Some(c) = &t.crl {
                kv(out, 4, "CRL", c);
            }
            kv(
                out,
                4,
                "versions",
                &format!("{} – {}", t.min_version, t.max_version),
            );
        }
    }
    if let Some(p) = &d.pool {
        let per_conn = match p.max_requests_per_connection {
            0 => "unlimited".to_string(),
            n => n.to_string(),
        };
        kv(
            out,
            2,
            "pool",
            &format!(
                "connect timeout {}, idle {}, max connections {}, pending {}, requests {}, per connection {per_conn}",
                p.connect_timeout,
                p.idle_timeout,
                p.max_connections,
                p.http1_max_pending_requests,
                p.http2_max_requests
            ),
        );
        if let Some(o) = &p.outlier_detection {
            kv(out, 2, "outliers", o);
        }
    }
}

/// `key` padded to a column, then `value`.
fn kv(out: &mut String, indent: usize, key: &str, value: &str) {
    let width = 18usize.saturating_sub(indent);
    let _ = writeln!(out, "{:indent$}{key:<width$} {value}", "");
}
