//! Plain-text tables for people: aligned columns, relative times.

use std::time::SystemTime;
use tabbify_wire::Timestamp;

/// Renders rows under a header with columns padded to their widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut text = line(header.to_vec());
    text.push('\n');
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
        text.push('\n');
    }
    text
}

/// "3s ago", "5m ago", "2h ago", "4d ago"; "-" for the epoch.
pub fn ago(t: Timestamp, now: SystemTime) -> String {
    if t.unix_ms() == 0 {
        return "-".into();
    }
    let secs = now
        .duration_since(t.to_system_time())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn aligns_columns() {
        let t = render(
            &["NAME", "ULA"],
            &[
                vec!["a".into(), "fd00::1".into()],
                vec!["longer".into(), "x".into()],
            ],
        );
        assert_eq!(t, "NAME    ULA\na       fd00::1\nlonger  x\n");
    }

    #[test]
    fn relative_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| Timestamp((1_000_000 - s) * 1000);
        assert_eq!(ago(at(5), now), "5s ago");
        assert_eq!(ago(at(120), now), "2m ago");
        assert_eq!(ago(at(7200), now), "2h ago");
        assert_eq!(ago(at(3 * 86400), now), "3d ago");
        assert_eq!(ago(Timestamp(0), now), "-");
    }
}
