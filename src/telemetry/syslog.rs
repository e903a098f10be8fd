//! RFC 5424 messages for the collector.

use super::logs::Record;
use super::ship::Source;

/// Escapes an RFC 5424 structured-data parameter value.
fn sd_escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// RFC 5424 APP-NAME: printable US-ASCII, at most 48 characters.
fn app_name(v: &str) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(48)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// One record as an RFC 5424 message: facility user, severity info for
/// stdout, err for stderr, notice for events; structured data
/// `[hydra@32473 host= container= app= version= stream= seq=]`.
pub fn rfc5424(r: &Record, src: &Source, host: &str) -> Vec<u8> {
    let (pri, msgid) = match r.stream.as_str() {
        "stderr" => (8 + 3, "log"),
        "event" => (8 + 5, "event"),
        _ => (8 + 6, "log"),
    };
    let app = if src.container.is_empty() {
        "hydra-agent".to_string()
    } else {
        app_name(&src.container)
    };
    let mut m = format!(
        "<{pri}>1 {} {} {app} - {msgid} [hydra@32473 host=\"{}\" container=\"{}\" app=\"{}\" version=\"{}\" stream=\"{}\" seq=\"{}\"",
        r.ts,
        app_name(host),
        sd_escape(host),
        sd_escape(&src.container),
        sd_escape(&src.app),
        sd_escape(&src.version),
        sd_escape(&r.stream),
        r.seq
    );
    if r.partial {
        m.push_str(" partial=\"true\"");
    }
    m.push_str("] ");
    m.push_str(&r.line);
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn rfc5424_escapes_structured_data() {
        let r = Record {
            ts: "2026-01-01T00:00:00.000000Z".into(),
            stream: "stderr".into(),
            line: "bad \"x\"".into(),
            partial: true,
            seq: 7,
            dropped: None,
        };
        let src = Source {
            container: "web".into(),
            app: "a]b".into(),
            version: "v\"1".into(),
            dir: PathBuf::new(),
            generation: String::new(),
        };
        let m = String::from_utf8(rfc5424(&r, &src, "h")).unwrap();
        assert_eq!(
            m,
            "<11>1 2026-01-01T00:00:00.000000Z h web - log [hydra@32473 host=\"h\" container=\"web\" app=\"a\\]b\" version=\"v\\\"1\" stream=\"stderr\" seq=\"7\" partial=\"true\"] bad \"x\""
        );
    }
}
