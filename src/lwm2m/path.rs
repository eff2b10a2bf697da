//! LwM2M paths: `/Object/Instance/Resource/ResourceInstance`, each level a 16-bit ID.

use std::fmt;

/// Most levels in a path: object, instance, resource, resource instance.
pub const MAX_PATH_DEPTH: usize = 4;

/// Why a path string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path has more than [`MAX_PATH_DEPTH`] levels.
    #[error("path has more than {MAX_PATH_DEPTH} levels")]
    TooDeep,
    /// A level is empty, not a decimal number, or above 65535.
    #[error("path level {0:?} is not a number in 0..=65535")]
    BadLevel(String),
}

/// An LwM2M path of 0 (the root `/`) to 4 levels; displayed with a leading slash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path {
    ids: [u16; MAX_PATH_DEPTH],
    len: u8,
}

impl Path {
    /// The root path `/`.
    pub const ROOT: Path = Path {
        ids: [0; MAX_PATH_DEPTH],
        len: 0,
    };

    /// Parses `"/3/0/1"`, `"3/0"`, `"/3/0/"` or `"/"`; the leading and one trailing slash
    /// are optional.
    pub fn parse(s: &str) -> Result<Path, PathError> {
        let s = s.strip_prefix('/').unwrap_or(s);
        let mut path = Path::ROOT;
        if s.is_empty() {
            return Ok(path);
        }
        let s = s.strip_suffix('/').unwrap_or(s);
        for level in s.split('/') {
            if usize::from(path.len) == MAX_PATH_DEPTH {
                return Err(PathError::TooDeep);
            }
            if level.is_empty() || !level.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PathError::BadLevel(level.to_owned()));
            }
            let id = level
                .parse()
                .map_err(|_| PathError::BadLevel(level.to_owned()))?;
            path.ids[usize::from(path.len)] = id;
            path.len += 1;
        }
        Ok(path)
    }

    /// A path from IDs; `None` when more than [`MAX_PATH_DEPTH`] are given.
    pub fn from_ids(ids: &[u16]) -> Option<Path> {
        if ids.len() > MAX_PATH_DEPTH {
            return None;
        }
        let mut path = Path::ROOT;
        path.ids[..ids.len()].copy_from_slice(ids);
        path.len = ids.len() as u8;
        Some(path)
    }

    /// The levels, object ID first.
    pub fn ids(&self) -> &[u16] {
        &self.ids[..usize::from(self.len)]
    }

    /// Number of levels (0 for the root).
    pub fn depth(&self) -> usize {
        usize::from(self.len)
    }

    /// Object ID, unless this is the root.
    pub fn object(&self) -> Option<u16> {
        self.ids().first().copied()
    }

    /// Object instance ID, when the path has one.
    pub fn instance(&self) -> Option<u16> {
        self.ids().get(1).copied()
    }

    /// Resource ID, when the path has one.
    pub fn resource(&self) -> Option<u16> {
        self.ids().get(2).copied()
    }

    /// Resource instance ID, when the path has one.
    pub fn resource_instance(&self) -> Option<u16> {
        self.ids().get(3).copied()
    }

    /// This path with one more level; `None` when it already has [`MAX_PATH_DEPTH`].
    pub fn child(&self, id: u16) -> Option<Path> {
        let mut path = *self;
        *path.ids.get_mut(usize::from(self.len))? = id;
        path.len += 1;
        Some(path)
    }

    /// True when `other` equals this path or lies below it.
    pub fn contains(&self, other: &Path) -> bool {
        other.ids().starts_with(self.ids())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("/");
        }
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        Path::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for (input, ids, shown) in [
            ("/3/0/1", &[3u16, 0, 1][..], "/3/0/1"),
            ("3/0", &[3, 0], "/3/0"),
            ("/3/0/", &[3, 0], "/3/0"),
            ("/", &[], "/"),
            ("", &[], "/"),
            ("/65535/1/2/3", &[65535, 1, 2, 3], "/65535/1/2/3"),
        ] {
            let p = Path::parse(input).expect(input);
            assert_eq!(p.ids(), ids, "{input}");
            assert_eq!(p.to_string(), shown);
        }
        let p = Path::parse("/3303/0/5700").expect("path");
        assert_eq!(
            (
                p.object(),
                p.instance(),
                p.resource(),
                p.resource_instance()
            ),
            (Some(3303), Some(0), Some(5700), None)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Path::parse("/1/2/3/4/5"), Err(PathError::TooDeep));
        for bad in [
            "/65536", "/a", "//1", "/1//2", "/-1", "/+1", "/1 ", "//", "/1.0",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn child_and_contains() {
        let obj = Path::parse("/3").expect("path");
        let res = Path::parse("/3/0/9").expect("path");
        assert!(obj.contains(&res) && !res.contains(&obj) && Path::ROOT.contains(&obj));
        assert_eq!(obj.child(0).and_then(|p| p.child(9)), Some(res));
        assert_eq!(Path::parse("/1/2/3/4").expect("path").child(5), None);
        assert_eq!(
            Path::from_ids(&[3, 0]),
            Some(Path::parse("3/0").expect("path"))
        );
        assert_eq!(Path::from_ids(&[1, 2, 3, 4, 5]), None);
    }
}
