//! Sharing of object lists between registrations.
//!
//! Devices of one fleet register byte-identical object lists, and a parsed list holds a
//! dozen small allocations; keeping one copy per distinct payload makes an endpoint's
//! object list cost one pointer. The cache is bounded: once full, further distinct lists
//! are parsed into a private copy, so a fleet of unique lists cannot grow it. With a
//! registry, each list's [`ObjectList::pins`] are resolved once, when it is parsed, so
//! typing a device's values never looks at its `ver` attributes again.

use std::sync::Arc;

use ahash::AHashMap;

use super::registration::{parse_object_list, ObjectList, RegistrationError};
use super::Registry;

/// Distinct object lists shared at most: real deployments run a handful of firmware
/// variants, and a cache of unique lists would only add a key per device.
pub const MAX_SHARED_LISTS: usize = 256;

/// Longest payload that is shared: the payload is the key, and larger lists are rare
/// enough that a private copy costs little.
pub const MAX_SHARED_PAYLOAD: usize = 2048;

/// Object lists by the exact payload they were parsed from.
#[derive(Debug, Default)]
pub struct ObjectLists {
    by_payload: AHashMap<Box<[u8]>, Arc<ObjectList>>,
    /// The definitions lists' `ver` attributes are resolved against.
    registry: Option<Arc<Registry>>,
}

impl ObjectLists {
    /// An empty cache; lists get no pins.
    pub fn new() -> ObjectLists {
        ObjectLists::default()
    }

    /// An empty cache resolving each list's `ver` attributes against `registry`.
    pub fn with_registry(registry: Arc<Registry>) -> ObjectLists {
        ObjectLists {
            registry: Some(registry),
            ..ObjectLists::default()
        }
    }

    /// `list` with its pins resolved against the registry, e.g. one restored from the
    /// journal; the same list when it pins nothing.
    pub fn resolve(&self, list: Arc<ObjectList>) -> Arc<ObjectList> {
        let Some(registry) = &self.registry else {
            return list;
        };
        let pins = registry.pins(list.named_versions());
        if pins == list.pins {
            return list;
        }
        let mut resolved = ObjectList::clone(&list);
        resolved.pins = pins;
        Arc::new(resolved)
    }

    /// The list `payload` describes: a shared copy when one is cached, otherwise parsed
    /// (and cached while there is room).
    pub fn get_or_parse(&mut self, payload: &[u8]) -> Result<Arc<ObjectList>, RegistrationError> {
        if let Some(list) = self.by_payload.get(payload) {
            return Ok(Arc::clone(list));
        }
        let mut list = parse_object_list(payload)?;
        if let Some(registry) = &self.registry {
            list.pins = registry.pins(list.named_versions());
        }
        let list = Arc::new(list);
        if self.by_payload.len() < MAX_SHARED_LISTS && payload.len() <= MAX_SHARED_PAYLOAD {
            self.by_payload.insert(payload.into(), Arc::clone(&list));
        }
        Ok(list)
    }

    /// Forgets the lists no registration holds any more; returns how many were dropped.
    pub fn prune(&mut self) -> usize {
        let before = self.by_payload.len();
        self.by_payload
            .retain(|_, list| Arc::strong_count(list) > 1);
        before - self.by_payload.len()
    }

    /// Distinct lists cached.
    pub fn len(&self) -> usize {
        self.by_payload.len()
    }

    /// Nothing cached.
    pub fn is_empty(&self) -> bool {
        self.by_payload.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAKAAMA: &[u8] = b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>";

    #[test]
    fn identical_payloads_share_one_list() {
        let mut lists = ObjectLists::new();
        let a = lists.get_or_parse(WAKAAMA).expect("parses");
        let b = lists.get_or_parse(WAKAAMA).expect("parses");
        assert!(Arc::ptr_eq(&a, &b));
        let other = lists.get_or_parse(b"</3/0>").expect("parses");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(lists.len(), 2);
        assert_eq!(a.links.len(), 2);
    }

    #[test]
    fn unused_lists_are_pruned() {
        let mut lists = ObjectLists::new();
        let kept = lists.get_or_parse(WAKAAMA).expect("parses");
        drop(lists.get_or_parse(b"</3/0>").expect("parses"));
        assert_eq!(lists.prune(), 1);
        assert_eq!(lists.len(), 1);
        assert!(Arc::ptr_eq(
            &kept,
            &lists.get_or_parse(WAKAAMA).expect("parses")
        ));
    }

    #[test]
    fn versions_are_pinned_once_per_list_and_on_restore() {
        let def = |version: &str| crate::lwm2m::ObjectDef {
            id: 3303,
            name: "T".into(),
            version: version.into(),
            multiple: true,
            resources: Vec::new(),
        };
        let registry = Arc::new(Registry::from_defs([def("1.1"), def("1.0")]));
        let mut lists = ObjectLists::with_registry(registry.clone());
        let old = lists
            .get_or_parse(b"</3303>;ver=1.0,</3303/0>")
            .expect("parses");
        assert_eq!(old.pins.len(), 1);
        let serving = lists
            .get_or_parse(b"</3303>;ver=1.1,</3303/0>")
            .expect("parses");
        assert!(serving.pins.is_empty());
        // A list read back from the journal has no pins until resolved; one that pins
        // nothing stays the same allocation.
        let restored = Arc::new(parse_object_list(b"</3303>;ver=1.0").expect("parses"));
        assert!(restored.pins.is_empty());
        assert_eq!(lists.resolve(restored).pins, old.pins);
        assert!(Arc::ptr_eq(&lists.resolve(serving.clone()), &serving));
        assert!(ObjectLists::new()
            .get_or_parse(b"</3303>;ver=1.0")
            .expect("parses")
            .pins
            .is_empty());
    }

    #[test]
    fn bounded_and_falls_back_to_private_copies() {
        let mut lists = ObjectLists::new();
        let held: Vec<_> = (0..MAX_SHARED_LISTS + 10)
            .map(|i| {
                lists
                    .get_or_parse(format!("</3/{i}>").as_bytes())
                    .expect("parses")
            })
            .collect();
        assert_eq!(lists.len(), MAX_SHARED_LISTS);
        let late = format!("</3/{}>", MAX_SHARED_LISTS + 1);
        let a = lists.get_or_parse(late.as_bytes()).expect("parses");
        assert_eq!(a.links[0].path, late[1..late.len() - 1]);
        assert!(!Arc::ptr_eq(&a, &held[MAX_SHARED_LISTS + 1]));
        assert_eq!(
            lists.get_or_parse(b"</x").ok(),
            None,
            "errors are not cached"
        );
        assert_eq!(lists.len(), MAX_SHARED_LISTS);
    }
}
