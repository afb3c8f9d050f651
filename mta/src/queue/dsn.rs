//! Delivery status notifications (RFC 3464 `multipart/report`, RFC 3461 parameters).
//!
//! A report is built by the master's job controller for the recipients of a queue entry
//! whose outcome must be reported ([`RecipientRecord::needs_dsn`]) and queued with
//! `Command::ReportDsn`, which marks them reported in the same log entry. Reports come from
//! the null sender, so no report is ever sent about a report.

use halyard_raft_store::{QueueEntry, RecipientRecord, RecipientState};

/// The original message is returned whole up to this size (unless RET=HDRS); above it only
/// its header is.
const RETURN_FULL_UP_TO: usize = 1 << 20;

/// The enhanced status code at the start of a detail text (`5.1.1 ...`), else a default.
fn status_code(detail: &str, default: &str) -> String {
    let first = detail.split_whitespace().next().unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    if parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        first.to_string()
    } else {
        default.to_string()
    }
}

fn rfc2822_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc2822()
}

/// The report for `rcpts` of `entry`, whose original message is `original`.
pub fn build(
    entry: &QueueEntry,
    rcpts: &[&RecipientRecord],
    original: &[u8],
    hostname: &str,
    now_ms: i64,
) -> Vec<u8> {
    let failed = rcpts
        .iter()
        .any(|r| matches!(r.state, RecipientState::Failed { .. }));
    // A delay report: every recipient in it is still being retried.
    let delayed = !failed && rcpts.iter().any(|r| r.state == RecipientState::Pending);
    let retry_until = rfc2822_date(entry.expires_at_ms);
    let boundary = format!("{}/{}", entry.queue_id, hostname);
    let subject = if failed {
        "Undelivered Mail Returned to Sender"
    } else if delayed {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };
    let mut human = String::new();
    if failed {
        human.push_str(&format!(
            "This is the mail system at {hostname}.\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\r\n"
        ));
    } else if delayed {
        human.push_str(&format!(
            "This is the mail system at {hostname}.\r\n\r\nYour message has not been delivered yet to the recipients below. \
             This is only a warning: the mail system keeps trying until {retry_until} and \
             tells you again only if it gives up. You do not need to send the message again.\r\n\r\n"
        ));
    } else {
        human.push_str(&format!(
            "This is the mail system at {hostname}.\r\n\r\nYour message was delivered to the following recipients.\r\n\r\n"
        ));
    }
    let mut per_rcpt = String::new();
    for r in rcpts {
        let (action, status, diag) = match &r.state {
            RecipientState::Failed { code, detail } => (
                "failed",
                status_code(detail, "5.0.0"),
                format!("smtp; {code} {detail}"),
            ),
            RecipientState::Delivered { detail } => (
                "delivered",
                "2.0.0".to_string(),
                format!("smtp; 250 {detail}"),
            ),
            RecipientState::Pending => (
                "delayed",
                status_code(r.last_error.as_deref().unwrap_or(""), "4.0.0"),
                format!(
                    "smtp; {}",
                    r.last_error.as_deref().unwrap_or("4.0.0 not delivered yet")
                ),
            ),
        };
        human.push_str(&format!(
            "<{}>: {action}: {}\r\n",
            r.spec.address,
            diag.trim_start_matches("smtp; ")
        ));
        per_rcpt.push_str("\r\n");
        if let Some(o) = &r.spec.orcpt {
            per_rcpt.push_str(&format!("Original-Recipient: {o}\r\n"));
        }
        per_rcpt.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {status}\r\nDiagnostic-Code: {diag}\r\n",
            r.spec.address
        ));
        if r.state == RecipientState::Pending {
            per_rcpt.push_str(&format!("Will-Retry-Until: {retry_until}\r\n"));
        }
    }
    // A delay warning carries only the header: the message is not being returned.
    let headers_only = delayed
        || entry.params.get("RET").is_some_and(|r| r == "HDRS")
        || original.len() > RETURN_FULL_UP_TO;
    let header_end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(original.len());
    let (returned_type, returned) = if headers_only {
        ("text/rfc822-headers", &original[..header_end])
    } else {
        ("message/rfc822", original)
    };
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{qid}.dsn@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Description: Notification\r\n\
         \r\n\
         {human}\r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n",
        to = entry.mail_from,
        date = rfc2822_date(now_ms),
        qid = entry.queue_id,
    );
    if let Some(envid) = entry.params.get("ENVID") {
        out.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    out.push_str(&format!(
        "Arrival-Date: {}\r\n{per_rcpt}\r\n--{boundary}\r\nContent-Type: {returned_type}\r\nContent-Description: {}\r\n\r\n",
        rfc2822_date(entry.received_at_ms),
        if headers_only { "Undelivered message headers" } else { "Undelivered message" },
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(returned);
    if !returned.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_raft_store::{BodyRef, RecipientSpec};
    use std::collections::BTreeMap;

    fn entry(params: &[(&str, &str)]) -> QueueEntry {
        QueueEntry {
            queue_id: "Q1".into(),
            mail_from: "sender@example.org".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            recipients: vec![],
            body: BodyRef {
                partition: "primary".into(),
                sha256: "x".into(),
            },
            size: 10,
            received_at_ms: 0,
            expires_at_ms: 0,
            priority: 0,
            meta: None,
        }
    }

    fn rcpt(state: RecipientState) -> RecipientRecord {
        RecipientRecord {
            spec: RecipientSpec {
                address: "rcpt@example.net".into(),
                orcpt: Some("rfc822;alias@example.net".into()),
                notify: vec![],
                channel: "store".into(),
            },
            state,
            attempts: 1,
            next_attempt_ms: 0,
            last_error: None,
            notified: false,
            delay_notified: false,
        }
    }

    #[test]
    fn failure_report_parses_with_its_fields() {
        let r = rcpt(RecipientState::Failed {
            code: 550,
            detail: "5.1.1 no such user".into(),
        });
        let original = b"Subject: hi\r\nFrom: sender@example.org\r\n\r\nbody text\r\n";
        let dsn = build(
            &entry(&[("ENVID", "e-42")]),
            &[&r],
            original,
            "mx.example.org",
            0,
        );
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Original-Envelope-Id: e-42"));
        assert!(text.contains("Original-Recipient: rfc822;alias@example.net"));
        assert!(text.contains("Content-Type: message/rfc822\r\n"));
        assert!(text.contains("\r\n\r\nSubject: hi\r\nFrom: sender@example.org\r\n\r\nbody text"));
        let m = mail_parser::MessageParser::default()
            .parse(&dsn[..])
            .unwrap();
        assert_eq!(m.parts.len(), 4, "multipart with three parts");
        let hdrs = build(&entry(&[("RET", "HDRS")]), &[&r], original, "mx", 0);
        let t = String::from_utf8(hdrs).unwrap();
        assert!(t.contains("text/rfc822-headers") && !t.contains("body text"));
    }

    #[test]
    fn delay_report_says_delayed_and_returns_only_the_header() {
        let mut r = rcpt(RecipientState::Pending);
        r.last_error = Some("4.4.1 connection refused by mx.example.net".into());
        let mut e = entry(&[]);
        e.expires_at_ms = 5 * 86_400_000;
        let original = b"Subject: hi\r\n\r\nbody text\r\n";
        let text = String::from_utf8(build(&e, &[&r], original, "mx", 0)).unwrap();
        assert!(text.contains("Subject: Delayed Mail (still being retried)"));
        assert!(text.contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
        assert!(text.contains("Will-Retry-Until: Tue, 6 Jan 1970"));
        assert!(text.contains("text/rfc822-headers") && !text.contains("body text"));
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_code("4.2.2 mailbox full", "5.0.0"), "4.2.2");
        assert_eq!(status_code("gave up", "5.0.0"), "5.0.0");
        assert_eq!(status_code("5.4.7 gave up", "5.0.0"), "5.4.7");
    }
}
