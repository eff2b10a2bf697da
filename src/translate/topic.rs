//! MQTT topic templating: the `mountpoint` prefix with `${endpoint_name}` and
//! `${peerhost}` substituted, followed by a translator topic such as `up/resp`.

/// One piece of a parsed mountpoint template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as is.
    Literal(String),
    /// `${endpoint_name}`.
    Endpoint,
    /// `${peerhost}`.
    Peerhost,
}

/// A mountpoint template, parsed once from configuration.
///
/// Placeholders other than `${endpoint_name}` and `${peerhost}` are kept as literal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mountpoint {
    parts: Vec<Part>,
}

/// The placeholder values and the remainder of a topic matched against a [`Mountpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicMatch<'t> {
    /// The `${endpoint_name}` level, when the template has one.
    pub endpoint: Option<&'t str>,
    /// The `${peerhost}` level, when the template has one.
    pub peerhost: Option<&'t str>,
    /// What follows the mountpoint, e.g. `dn` or `dn/read`.
    pub rest: &'t str,
}

impl Mountpoint {
    /// Parses a template such as `lwm2m/${endpoint_name}/`.
    pub fn parse(template: &str) -> Mountpoint {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let placeholder = match &rest[start + 2..start + len] {
                "endpoint_name" => Part::Endpoint,
                "peerhost" => Part::Peerhost,
                _ => {
                    literal.push_str(&rest[..start + len + 1]);
                    rest = &rest[start + len + 1..];
                    continue;
                }
            };
            literal.push_str(&rest[..start]);
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(placeholder);
            rest = &rest[start + len + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Mountpoint { parts }
    }

    /// Clears `out` and writes the topic: the mountpoint with placeholders substituted,
    /// then `suffix` (e.g. `up/resp`).
    pub fn topic(&self, out: &mut String, endpoint: &str, peerhost: &str, suffix: &str) {
        out.clear();
        self.append_topic(out, endpoint, peerhost, suffix);
    }

    /// Appends the topic of [`Mountpoint::topic`] to `out` (a topic arena).
    pub fn append_topic(&self, out: &mut String, endpoint: &str, peerhost: &str, suffix: &str) {
        for part in &self.parts {
            out.push_str(match part {
                Part::Literal(s) => s,
                Part::Endpoint => endpoint,
                Part::Peerhost => peerhost,
            });
        }
        out.push_str(suffix);
    }

    /// The subscription filter for `suffix` (e.g. `dn/#`) across all devices: every topic
    /// level holding a placeholder becomes `+`.
    pub fn filter(&self, suffix: &str) -> String {
        const MARK: char = '\0';
        let mut rendered = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => rendered.push_str(s),
                Part::Endpoint | Part::Peerhost => rendered.push(MARK),
            }
        }
        let mut filter: String = rendered
            .split('/')
            .map(|level| if level.contains(MARK) { "+" } else { level })
            .collect::<Vec<_>>()
            .join("/");
        filter.push_str(suffix);
        filter
    }

    /// Matches a topic against the mountpoint and returns the placeholder values and what
    /// follows. A placeholder value never spans a `/`.
    pub fn match_topic<'t>(&self, topic: &'t str) -> Option<TopicMatch<'t>> {
        let mut m = TopicMatch {
            endpoint: None,
            peerhost: None,
            rest: topic,
        };
        for (i, part) in self.parts.iter().enumerate() {
            let value = match part {
                Part::Literal(s) => {
                    m.rest = m.rest.strip_prefix(s.as_str())?;
                    continue;
                }
                _ => {
                    let level_end = m.rest.find('/').unwrap_or(m.rest.len());
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(next)) => {
                            let first = next.split('/').next().unwrap_or_default();
                            if first.is_empty() {
                                level_end
                            } else {
                                m.rest[..level_end].find(first)?
                            }
                        }
                        _ => level_end,
                    };
                    let (value, rest) = m.rest.split_at(end);
                    m.rest = rest;
                    value
                }
            };
            if value.is_empty() {
                return None;
            }
            match part {
                Part::Endpoint => m.endpoint = Some(value),
                _ => m.peerhost = Some(value),
            }
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(template: &str, suffix: &str) -> String {
        let mut out = String::from("stale");
        Mountpoint::parse(template).topic(&mut out, "ep1", "10.0.0.7", suffix);
        out
    }

    #[test]
    fn substitutes_placeholders() {
        assert_eq!(
            topic("lwm2m/${endpoint_name}/", "up/resp"),
            "lwm2m/ep1/up/resp"
        );
        assert_eq!(
            topic("gw/${peerhost}/${endpoint_name}/", "up/notify"),
            "gw/10.0.0.7/ep1/up/notify"
        );
        assert_eq!(topic("", "up/resp"), "up/resp");
        assert_eq!(topic("x-${endpoint_name}-y/", "dn"), "x-ep1-y/dn");
        assert_eq!(
            topic("a/${unknown}/${endpoint_name", "/s"),
            "a/${unknown}/${endpoint_name/s"
        );
    }

    #[test]
    fn subscription_filter() {
        let mp = Mountpoint::parse("lwm2m/${endpoint_name}/");
        assert_eq!(mp.filter("dn/#"), "lwm2m/+/dn/#");
        let mp = Mountpoint::parse("gw/${peerhost}/dev-${endpoint_name}/");
        assert_eq!(mp.filter("dn/#"), "gw/+/+/dn/#");
        assert_eq!(Mountpoint::parse("fixed/").filter("dn/#"), "fixed/dn/#");
    }

    #[test]
    fn matches_topics() {
        let mp = Mountpoint::parse("lwm2m/${endpoint_name}/");
        assert_eq!(
            mp.match_topic("lwm2m/ep1/dn/read"),
            Some(TopicMatch {
                endpoint: Some("ep1"),
                peerhost: None,
                rest: "dn/read"
            })
        );
        assert_eq!(mp.match_topic("lwm2m//dn"), None);
        assert_eq!(mp.match_topic("other/ep1/dn"), None);

        let mp = Mountpoint::parse("gw/${peerhost}/dev-${endpoint_name}-x/");
        let m = mp.match_topic("gw/::1/dev-ep-7-x/dn").expect("match");
        assert_eq!(
            (m.peerhost, m.endpoint, m.rest),
            (Some("::1"), Some("ep-7"), "dn")
        );
        assert_eq!(mp.match_topic("gw/::1/dev-ep/x-/dn"), None);
    }
}
