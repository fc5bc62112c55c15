//! Reading a Prometheus / OpenMetrics text exposition the way a scraper does, so tests compare
//! whole samples (name, exact label set, value) instead of searching the text: a substring check
//! for `} 1` also accepts `} 10`, and one for a label set accepts a sample with more labels.

use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of an exposition, in the order they appear.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text; comment lines (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) and blank lines are
    /// skipped. Any other line that is not a well-formed sample is an error naming the line.
    pub fn parse(text: &str) -> Result<Exposition> {
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_sample(line).with_context(|| format!("line {}: {line:?}", n + 1))?);
        }
        Ok(Exposition { samples })
    }

    /// The value of the sample named `name` whose labels are exactly `labels`; `None` when there
    /// is no such sample. Panics if the exposition holds it twice (a broken exposition).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want);
        let first = found.next()?;
        assert!(
            found.next().is_none(),
            "{name}{want:?} appears more than once"
        );
        Some(first.value)
    }

    /// Every sample named `name`, whatever its labels.
    pub fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(['{', ' '])
        .context("no value after the metric name")?;
    let name = &line[..name_end];
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name {name:?}"
    );
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().context("no value")?;
    let value = parse_value(value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    ensure!(fields.next().is_none(), "text after the timestamp");
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (the opening brace already consumed); returns what follows `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let eq = s.find('=').context("label without '='")?;
        let key = s[..eq].trim();
        ensure!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name {key:?}"
        );
        let mut chars = s[eq + 1..].char_indices();
        ensure!(
            matches!(chars.next(), Some((_, '"'))),
            "label {key} value is not quoted"
        );
        let mut value = String::new();
        let close = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => bail!("bad escape in label {key}: {other:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => bail!("label {key} value is not closed"),
            }
        };
        ensure!(
            labels.insert(key.to_string(), value).is_none(),
            "label {key} given twice"
        );
        s = &s[eq + 1 + close + 1..];
        s = s.trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else {
            ensure!(s.starts_with('}'), "expected ',' or '}}' after label {key}");
        }
    }
}

fn parse_value(v: &str) -> Result<f64> {
    Ok(match v {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().with_context(|| format!("bad value {v:?}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP reqs Requests.\n# TYPE reqs counter\n\
        reqs_total{outcome=\"ok\"} 10\n\
        reqs_total{outcome=\"ok\",extra=\"x\"} 1\n\
        reqs_total{outcome=\"refused\"} 1\n\
        up 1\n\
        info{version=\"a,b} \\\"q\\\" \\\\\"} 1 1700000000\n\
        ratio 2.5e-1\n\
        # EOF\n";

    #[test]
    fn compares_whole_values_and_exact_label_sets() {
        let e = Exposition::parse(TEXT).unwrap();
        assert_eq!(e.value("reqs_total", &[("outcome", "ok")]), Some(10.0));
        assert_ne!(
            e.value("reqs_total", &[("outcome", "ok")]),
            Some(1.0),
            "`}} 1` is not `}} 10`"
        );
        assert_eq!(
            e.value("reqs_total", &[("outcome", "ok"), ("extra", "x")]),
            Some(1.0)
        );
        assert_eq!(e.value("reqs_total", &[("outcome", "refused")]), Some(1.0));
        assert_eq!(e.value("reqs_total", &[("outcome", "nope")]), None);
        assert_eq!(e.value("up", &[]), Some(1.0));
        assert_eq!(e.value("ratio", &[]), Some(0.25));
        assert_eq!(e.value("info", &[("version", "a,b} \"q\" \\")]), Some(1.0));
        assert_eq!(e.named("reqs_total").len(), 3);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "x{a=\"1\" 1",
            "x{a=1} 1",
            "x 1 2 3",
            "x{a=\"1\",a=\"2\"} 1",
            "x one",
            "x",
            "{a=\"1\"} 1",
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
