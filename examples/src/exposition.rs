//! A small, strict reader of the Prometheus and `OpenMetrics` text exposition format, to check a
//! scrape and read its values: every sample must belong to the family its `# TYPE` line
//! announced, label values are unescaped, a series appears once, and an `OpenMetrics` scrape
//! ends with `# EOF`.

use std::collections::{BTreeMap, BTreeSet};

/// One sample: a series and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name, such as `kache_events_total`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Family name → its type (`counter`, `gauge` ...), from the `# TYPE` lines.
    pub families: BTreeMap<String, String>,
    /// Family name → its help text.
    pub help: BTreeMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Whether the text ended with `# EOF` (`OpenMetrics`).
    pub eof: bool,
}

const TYPES: [&str; 9] = [
    "counter",
    "gauge",
    "histogram",
    "summary",
    "info",
    "stateset",
    "gaugehistogram",
    "unknown",
    "untyped",
];

impl Exposition {
    /// Parses `text`.
    ///
    /// # Errors
    /// The first line that breaks the format, with its number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        let mut family: Option<(String, String)> = None;
        let mut seen = BTreeSet::new();
        for (number, line) in text.lines().enumerate() {
            let fail = |what: &str| format!("line {}: {what}: {line:?}", number + 1);
            if out.eof {
                return Err(fail("text after # EOF"));
            }
            if line == "# EOF" {
                out.eof = true;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| fail("bad TYPE"))?;
                if !valid_name(name) || !TYPES.contains(&kind) {
                    return Err(fail("bad TYPE"));
                }
                if out
                    .families
                    .insert(name.to_owned(), kind.to_owned())
                    .is_some()
                {
                    return Err(fail("a family announced twice"));
                }
                family = Some((name.to_owned(), kind.to_owned()));
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                out.help.insert(name.to_owned(), help.to_owned());
            } else if line.starts_with("# UNIT ") || line.is_empty() {
            } else if line.starts_with('#') {
                return Err(fail("unknown comment"));
            } else {
                let sample = parse_sample(line).map_err(|e| fail(&e))?;
                let (name, kind) = family
                    .as_ref()
                    .ok_or_else(|| fail("a sample before any TYPE"))?;
                if !belongs(&sample.name, name, kind) {
                    return Err(fail(&format!("not a sample of the {kind} {name}")));
                }
                if kind == "counter" && (sample.value.is_nan() || sample.value < 0.0) {
                    return Err(fail("a counter below zero"));
                }
                if !seen.insert((sample.name.clone(), sample.labels.clone())) {
                    return Err(fail("a series given twice"));
                }
                out.samples.push(sample);
            }
        }
        Ok(out)
    }

    /// The value of the series `name` with exactly `labels`.
    #[must_use]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
    }

    /// The samples named `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// Whether a sample named `sample` belongs to the family `family` of type `kind`.
fn belongs(sample: &str, family: &str, kind: &str) -> bool {
    let Some(suffix) = sample.strip_prefix(family) else {
        return false;
    };
    match kind {
        "counter" => ["", "_total", "_created"].contains(&suffix),
        "histogram" | "gaugehistogram" => {
            ["_bucket", "_sum", "_count", "_created", "_gsum", "_gcount"].contains(&suffix)
        }
        "summary" => ["", "_sum", "_count", "_created"].contains(&suffix),
        "info" => suffix == "_info" || suffix.is_empty(),
        _ => suffix.is_empty(),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or_else(|| "no value".to_owned())?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("a bad metric name".to_owned());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest
                .split_once("=\"")
                .ok_or_else(|| "a bad label".to_owned())?;
            if !valid_name(key) || key.contains(':') {
                return Err(format!("a bad label name {key:?}"));
            }
            let (value, after) = unescape(after)?;
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key:?} twice"));
            }
            rest = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or_else(|| "no space before the value".to_owned())?
        .split(' ');
    let value = match fields.next().unwrap_or_default() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number
            .parse()
            .map_err(|_| format!("a bad value {number:?}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<f64>()
            .map_err(|_| format!("a bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".to_owned());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and the text after the quote.
fn unescape(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => return Err(format!("a bad escape {other:?}")),
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value".to_owned())
}

#[cfg(test)]
mod tests {
    use super::Exposition;

    #[test]
    fn reads_families_samples_and_escaped_labels() {
        let text = "# HELP x_events Events.\n# TYPE x_events counter\n\
                    x_events_total{cache=\"a\\\"b\",type=\"init\"} 3\n\
                    # TYPE x_age_seconds gauge\n# UNIT x_age_seconds seconds\n\
                    x_age_seconds{cache=\"a\"} 0.25\n# EOF\n";
        let scrape = Exposition::parse(text).unwrap();
        assert!(scrape.eof);
        assert_eq!(scrape.families["x_events"], "counter");
        assert_eq!(
            scrape.value("x_events_total", &[("cache", "a\"b"), ("type", "init")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("x_age_seconds", &[("cache", "a")]), Some(0.25));
        assert_eq!(
            scrape
                .matching("x_events_total", &[("type", "init")])
                .count(),
            1
        );
    }

    #[test]
    fn rejects_what_breaks_the_format() {
        for bad in [
            "x 1\n",                          // no TYPE
            "# TYPE x counter\nx_total -1\n", // a negative counter
            "# TYPE x gauge\ny 1\n",          // another family's sample
            "# TYPE x gauge\nx{a=\"1} 1\n",   // unterminated label
            "# TYPE x gauge\nx 1\nx 2\n",     // a series twice
            "# TYPE x gauge\nx one\n",        // not a number
            "# EOF\n# TYPE x gauge\n",        // after EOF
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad:?}");
        }
    }
}
