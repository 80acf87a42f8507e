//! The `context` filter: exact comparison of the non-empty expected attributes.

use crate::event::Event;
use crate::manifest::ContextFilter;

/// Expected context attributes.
#[derive(Debug, Clone)]
pub struct CompiledContextFilter {
    expected: Vec<(Attribute, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Attribute {
    Type,
    Subject,
    Source,
    DataContentType,
}

impl CompiledContextFilter {
    /// Keeps the non-empty attributes Argo compares: type, subject, source, datacontenttype.
    pub fn new(c: &ContextFilter) -> Self {
        let expected = [
            (Attribute::Type, &c.kind),
            (Attribute::Subject, &c.subject),
            (Attribute::Source, &c.source),
            (Attribute::DataContentType, &c.datacontenttype),
        ]
        .into_iter()
        .filter_map(|(a, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (a, v.clone())))
        .collect();
        Self { expected }
    }

    /// Whether every expected attribute equals the event's. As in Argo, a filter that
    /// expects nothing does not pass.
    pub fn matches(&self, event: &Event) -> bool {
        !self.expected.is_empty()
            && self.expected.iter().all(|(attr, want)| {
                let actual = match attr {
                    Attribute::Type => &event.kind,
                    Attribute::Subject => &event.subject,
                    Attribute::Source => &event.source,
                    Attribute::DataContentType => &event.datacontenttype,
                };
                actual == want
            })
    }
}
