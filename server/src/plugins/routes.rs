//! The route table: a radix router (matchit: static segments before parameters, a trailing
//! catch-all) from request paths to route entries. A new table is built on every change and
//! swapped in atomically; requests keep the entry they matched until they finish.

use std::sync::Arc;

/// A route that clashes with one already in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {path} conflicts with {existing}")]
pub struct RouteConflict {
    pub path: String,
    /// The template already present (its owner is for the caller to name).
    pub existing: String,
}

pub struct RouteTable<T> {
    router: matchit::Router<usize>,
    entries: Vec<(Arc<str>, Arc<T>)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            router: matchit::Router::new(),
            entries: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    pub fn insert(&mut self, template: &str, entry: Arc<T>) -> Result<(), RouteConflict> {
        let index = self.entries.len();
        self.router
            .insert(template, index)
            .map_err(|e| RouteConflict {
                path: template.to_string(),
                existing: match e {
                    matchit::InsertError::Conflict { with } => with,
                    other => other.to_string(),
                },
            })?;
        self.entries.push((Arc::from(template), entry));
        Ok(())
    }

    /// The entry for a request path and the template it matched.
    pub fn lookup(&self, path: &str) -> Option<(&Arc<str>, &Arc<T>)> {
        let matched = self.router.at(path).ok()?;
        let (template, entry) = &self.entries[*matched.value];
        Some((template, entry))
    }

    /// Every entry with its template, in insertion order.
    pub fn entries(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<T>)> {
        self.entries.iter().map(|(t, e)| (t, e))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_segments_win_over_parameters_and_catch_all_takes_the_rest() {
        let mut table = RouteTable::default();
        table.insert("/hello/{name}", Arc::new("param")).unwrap();
        table.insert("/hello/world", Arc::new("static")).unwrap();
        table.insert("/files/{*rest}", Arc::new("rest")).unwrap();
        assert_eq!(**table.lookup("/hello/world").unwrap().1, "static");
        assert_eq!(**table.lookup("/hello/bob").unwrap().1, "param");
        assert_eq!(
            table.lookup("/hello/bob").unwrap().0.as_ref(),
            "/hello/{name}"
        );
        assert_eq!(**table.lookup("/files/a/b/c").unwrap().1, "rest");
        assert!(table.lookup("/hello").is_none());
        assert!(table.lookup("/nothing").is_none());
    }

    #[test]
    fn clashing_templates_are_refused_naming_the_other() {
        let mut table = RouteTable::default();
        table.insert("/hello/{name}", Arc::new(1)).unwrap();
        let conflict = table.insert("/hello/{who}", Arc::new(2)).unwrap_err();
        assert_eq!(conflict.existing, "/hello/{name}");
        assert!(table.insert("/hello/{name}", Arc::new(3)).is_err());
        assert_eq!(table.len(), 1);
    }
}
