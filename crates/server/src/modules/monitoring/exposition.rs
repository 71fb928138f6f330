//! The Prometheus text format for figures read from the database, rendered
//! per application rather than through the process-wide recorder: several
//! servers share one process in tests, and each must report its own.

use std::fmt::Write as _;

#[derive(Debug)]
pub struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    pub fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: "gauge",
            help,
            samples: Vec::new(),
        }
    }

    /// A counter's name ends in `_total`, as Prometheus' conventions (and
    /// `promtool check metrics`) want.
    pub fn counter(name: &'static str, help: &'static str) -> Self {
        debug_assert!(name.ends_with("_total"));
        Self {
            name,
            kind: "counter",
            help,
            samples: Vec::new(),
        }
    }

    #[must_use]
    pub fn sample(mut self, labels: &[(&'static str, &str)], value: f64) -> Self {
        let labels = labels
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        self.samples.push((labels, value));
        self
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (index, (name, value)) in labels.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
}

/// Label values escape backslashes, double quotes and line feeds.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_help_type_and_escaped_labels() {
        let mut out = String::new();
        Family::gauge("vmcloud_x", "An x.")
            .sample(&[("node", "a\"b\\c\nd")], 2.0)
            .sample(&[], 0.5)
            .render(&mut out);
        assert_eq!(
            out,
            "# HELP vmcloud_x An x.\n# TYPE vmcloud_x gauge\nvmcloud_x{node=\"a\\\"b\\\\c\\nd\"} 2\nvmcloud_x 0.5\n"
        );
    }
}
