//! The registration interface (LwM2M Register / Update): query parameters, the CoRE
//! link object list, and the [`Registration`] they produce.
//!
//! Inputs are the raw Uri-Query option values and the payload bytes; nothing here knows
//! about CoAP messages or sockets. Every error carries the CoAP response code the server
//! answers with ([`RegistrationError::response_class`]).

use std::sync::Arc;

use crate::config::GatewayConfig;
use crate::lwm2m::object_lists::ObjectLists;

/// Lifetime assumed when a Register carries no `lt` (LwM2M default, seconds).
pub const DEFAULT_LIFETIME: u32 = 86_400;

/// Most Uri-Query parameters accepted in one Register/Update: real clients send at most
/// about eight; the bound keeps a hostile request from growing the parameter list.
pub const MAX_QUERY_PARAMS: usize = 32;

/// Most links accepted in one object list: a device exposing every object of the OMA
/// registry with a few instances stays well below; the bound caps memory per endpoint.
pub const MAX_OBJECT_LINKS: usize = 1024;

/// Longest accepted endpoint name in bytes: it becomes part of every MQTT topic of the
/// device, and brokers commonly cap topics at a few hundred bytes.
pub const MAX_ENDPOINT_LEN: usize = 255;

/// Longest accepted binding mode: the longest meaningful one (`UQSNT`) has five letters.
pub const MAX_BINDING_LEN: usize = 8;

/// Names of query parameters that are never published (compared case-insensitively).
pub const SECRET_PARAMS: [&str; 6] = [
    "password",
    "secret",
    "token",
    "key",
    "access_token",
    "private_key",
];

/// True when a query parameter of this name must not leave the gateway.
pub fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// An LwM2M enabler version a device registers with (`lwm2m=` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// LwM2M 1.0 (also assumed when `lwm2m` is absent).
    V1_0,
    /// LwM2M 1.1.
    V1_1,
    /// LwM2M 1.2.
    V1_2,
}

impl Version {
    /// The version as it appears on the wire and in MQTT JSON: `"1.0"`, `"1.1"`, `"1.2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses the value of the `lwm2m` parameter; `None` for any other version. `1` is
    /// 1.0, as EMQX reads it (devices built against its gateway send it).
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1" | "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a Register or Update is refused. Each variant maps to a CoAP response code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// A Uri-Query option is not valid UTF-8 (4.00).
    #[error("query parameter is not valid UTF-8")]
    QueryNotUtf8,
    /// A query parameter has no name, e.g. `=1` (4.00).
    #[error("query parameter {0:?} has no name")]
    EmptyParamName(String),
    /// More than [`MAX_QUERY_PARAMS`] query parameters (4.00).
    #[error("more than {MAX_QUERY_PARAMS} query parameters")]
    TooManyParams,
    /// A registration parameter (`ep`, `lt`, `lwm2m`, `b`) is given twice with different values (4.00).
    #[error("parameter `{0}` given twice with different values")]
    DuplicateParam(&'static str),
    /// Register without `ep` (4.00).
    #[error("endpoint name (ep) missing")]
    MissingEndpoint,
    /// The endpoint name cannot be used, e.g. it is empty or holds MQTT wildcards (4.00).
    #[error("endpoint name {name:?} is invalid: {reason}")]
    InvalidEndpoint {
        /// The name as received.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `lt` is not a whole number of seconds that fits 32 bits (4.00).
    #[error("lifetime {0:?} is not a whole number of seconds")]
    InvalidLifetime(String),
    /// `lt` below the configured `lifetime_min` (4.00).
    #[error("lifetime {lifetime} below lifetime_min {min}")]
    LifetimeTooShort {
        /// Requested lifetime, seconds.
        lifetime: u32,
        /// Configured minimum, seconds.
        min: u32,
    },
    /// `lt` above the configured `lifetime_max` (4.00).
    #[error("lifetime {lifetime} above lifetime_max {max}")]
    LifetimeTooLong {
        /// Requested lifetime, seconds.
        lifetime: u32,
        /// Configured maximum, seconds.
        max: u32,
    },
    /// `lwm2m` names a version other than 1.0, 1.1, 1.2 (4.12, as LwM2M 1.1+ prescribes, so
    /// that clients fall back to an older version).
    #[error("unsupported LwM2M version {0:?} (supported: 1.0, 1.1, 1.2)")]
    UnsupportedVersion(String),
    /// `b` is empty, too long or holds letters other than U, S, Q, N, T (4.00).
    #[error("binding mode {0:?} is invalid")]
    InvalidBinding(String),
    /// An Update names a different endpoint than the registration (4.00).
    #[error("update may not change the endpoint name (registered {registered:?}, got {got:?})")]
    EndpointChanged {
        /// The registered name.
        registered: String,
        /// The name in the Update.
        got: String,
    },
    /// An Update names a different LwM2M version than the registration (4.00).
    #[error("update may not change the LwM2M version (registered {registered}, got {got})")]
    VersionChanged {
        /// The registered version.
        registered: Version,
        /// The version in the Update.
        got: Version,
    },
    /// The object list payload is not valid UTF-8 (4.00).
    #[error("object list is not valid UTF-8")]
    ObjectListNotUtf8,
    /// A link of the object list is not `<target>` followed by attributes (4.00).
    #[error("object list link {index} is malformed: {reason}")]
    MalformedLink {
        /// Zero-based position of the link in the payload.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than [`MAX_OBJECT_LINKS`] links (4.13).
    #[error("object list has more than {MAX_OBJECT_LINKS} links")]
    TooManyLinks,
}

impl RegistrationError {
    /// The CoAP response code (class, detail) to answer with, e.g. `(4, 0)` for 4.00.
    pub fn response_class(&self) -> (u8, u8) {
        match self {
            RegistrationError::UnsupportedVersion(_) => (4, 12),
            RegistrationError::TooManyLinks => (4, 13),
            _ => (4, 0),
        }
    }
}

/// Registration query parameters as received (one Uri-Query option each).
///
/// Values are taken verbatim: CoAP carries query parameters already split and unescaped,
/// so no percent-decoding applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterQuery {
    /// `ep`: endpoint client name.
    pub ep: Option<String>,
    /// `lt`: lifetime in seconds.
    pub lifetime: Option<u32>,
    /// `lwm2m`: enabler version.
    pub version: Option<Version>,
    /// `b`: binding mode.
    pub binding: Option<String>,
    /// Every parameter in arrival order, the four above included; a bare `Q` is `("Q", "")`.
    pub params: Vec<(String, String)>,
}

/// Parses Uri-Query option values (`k=v` or bare `k`) of a Register or Update.
///
/// Empty options are skipped. A registration parameter given twice must repeat the same
/// value.
pub fn parse_query<'a>(
    segments: impl Iterator<Item = &'a [u8]>,
) -> Result<RegisterQuery, RegistrationError> {
    let mut q = RegisterQuery::default();
    for seg in segments {
        if seg.is_empty() {
            continue;
        }
        if q.params.len() == MAX_QUERY_PARAMS {
            return Err(RegistrationError::TooManyParams);
        }
        let seg = std::str::from_utf8(seg).map_err(|_| RegistrationError::QueryNotUtf8)?;
        let (name, value) = seg.split_once('=').unwrap_or((seg, ""));
        if name.is_empty() {
            return Err(RegistrationError::EmptyParamName(seg.to_owned()));
        }
        match name {
            "ep" => set_once(&mut q.ep, "ep", value.to_owned())?,
            "lt" => {
                let lt = parse_lifetime(value)?;
                set_once(&mut q.lifetime, "lt", lt)?;
            }
            "lwm2m" => {
                let v = Version::parse(value)
                    .ok_or_else(|| RegistrationError::UnsupportedVersion(value.to_owned()))?;
                set_once(&mut q.version, "lwm2m", v)?;
            }
            "b" => set_once(&mut q.binding, "b", value.to_owned())?,
            _ => {}
        }
        q.params.push((name.to_owned(), value.to_owned()));
    }
    Ok(q)
}

fn set_once<T: PartialEq>(
    slot: &mut Option<T>,
    name: &'static str,
    value: T,
) -> Result<(), RegistrationError> {
    match slot {
        Some(old) if *old != value => Err(RegistrationError::DuplicateParam(name)),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn parse_lifetime(s: &str) -> Result<u32, RegistrationError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RegistrationError::InvalidLifetime(s.to_owned()));
    }
    s.parse()
        .map_err(|_| RegistrationError::InvalidLifetime(s.to_owned()))
}

/// True for the parameters that [`Registration`] keeps in dedicated fields.
fn is_core_param(name: &str) -> bool {
    matches!(name, "ep" | "lt" | "lwm2m" | "b")
}

/// Bounds on what a device may register with (from `[gateway]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Smallest accepted lifetime, seconds.
    pub lifetime_min: u32,
    /// Largest accepted lifetime, seconds.
    pub lifetime_max: u32,
}

impl Limits {
    /// Limits from the validated gateway configuration (lifetimes saturate at `u32::MAX` s).
    pub fn from_config(config: &GatewayConfig) -> Limits {
        let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Limits {
            lifetime_min: secs(config.lifetime_min),
            lifetime_max: secs(config.lifetime_max),
        }
    }

    fn check_lifetime(&self, lifetime: u32) -> Result<u32, RegistrationError> {
        if lifetime < self.lifetime_min {
            Err(RegistrationError::LifetimeTooShort {
                lifetime,
                min: self.lifetime_min,
            })
        } else if lifetime > self.lifetime_max {
            Err(RegistrationError::LifetimeTooLong {
                lifetime,
                max: self.lifetime_max,
            })
        } else {
            Ok(lifetime)
        }
    }
}

impl Default for Limits {
    /// The configuration defaults: 1 s to 86400 s.
    fn default() -> Limits {
        Limits {
            lifetime_min: 1,
            lifetime_max: DEFAULT_LIFETIME,
        }
    }
}

/// What an Update changed, for the caller's timers and publish condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The Update carried an object list, which replaced the stored one.
    pub object_list_updated: bool,
    /// The lifetime changed (the expiry timer restarts on any Update anyway).
    pub lifetime_changed: bool,
    /// The binding mode or queue mode changed.
    pub binding_changed: bool,
}

/// A registered endpoint's parameters.
///
/// Kept for every registered device, so it is compact: the name is shared with the
/// shard's indexes, the binding is inline, and the object list is shared by every device
/// that registered the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Endpoint client name.
    pub ep: Arc<str>,
    /// Lifetime in seconds.
    pub lifetime: u32,
    /// Enabler version.
    pub version: Version,
    /// Binding mode, `"U"` when the device sent none.
    pub binding: Binding,
    /// The device uses queue mode: the binding holds `Q` (LwM2M 1.0: `UQ`, `SQ`, `UQS`),
    /// a bare `Q` parameter came (LwM2M 1.1+), or its `apn` is a configured PSM APN.
    pub queue_mode: bool,
    /// Every other query parameter (not `ep`, `lt`, `lwm2m`, `b`), in arrival order, each
    /// name once (a later value replaces an earlier one).
    pub params: Vec<(String, String)>,
    /// The object list, when a payload came.
    pub object_list: Option<Arc<ObjectList>>,
}

impl Registration {
    /// Builds a registration from a Register request's query and payload.
    ///
    /// `lt` absent means [`DEFAULT_LIFETIME`], clamped into the configured bounds; an
    /// empty payload counts as none.
    pub fn from_register(
        query: RegisterQuery,
        payload: Option<&[u8]>,
        limits: &Limits,
    ) -> Result<Registration, RegistrationError> {
        Registration::build(query, payload, limits, &[], parse_private)
    }

    /// [`Registration::from_register`] taking the object list from `lists`, so devices
    /// sending the same list share one copy; a device whose `apn` is one of `psm_apns`
    /// (lower case) is in queue mode whatever its binding.
    pub fn from_register_shared(
        query: RegisterQuery,
        payload: Option<&[u8]>,
        limits: &Limits,
        psm_apns: &[String],
        lists: &mut ObjectLists,
    ) -> Result<Registration, RegistrationError> {
        Registration::build(query, payload, limits, psm_apns, |p| lists.get_or_parse(p))
    }

    fn build(
        query: RegisterQuery,
        payload: Option<&[u8]>,
        limits: &Limits,
        psm_apns: &[String],
        parse: impl FnOnce(&[u8]) -> Result<Arc<ObjectList>, RegistrationError>,
    ) -> Result<Registration, RegistrationError> {
        let ep = query.ep.ok_or(RegistrationError::MissingEndpoint)?;
        check_endpoint(&ep)?;
        let lifetime = match query.lifetime {
            Some(lt) => limits.check_lifetime(lt)?,
            None => DEFAULT_LIFETIME.clamp(limits.lifetime_min, limits.lifetime_max),
        };
        let binding = match query.binding {
            Some(b) => Binding::parse(b)?,
            None => Binding::UDP,
        };
        let object_list = match payload {
            Some(p) if !p.is_empty() => Some(parse(p)?),
            _ => None,
        };
        let mut reg = Registration {
            ep: ep.into(),
            lifetime,
            version: query.version.unwrap_or(Version::V1_0),
            binding,
            queue_mode: false,
            params: Vec::new(),
            object_list,
        };
        reg.merge_params(query.params);
        reg.queue_mode = reg.compute_queue_mode(psm_apns);
        Ok(reg)
    }

    /// Applies an Update: `lt`, `b` and other parameters may change, a payload replaces the
    /// object list. `ep` and `lwm2m` may be repeated but not changed. Nothing changes when
    /// an error is returned.
    pub fn apply_update(
        &mut self,
        query: RegisterQuery,
        payload: Option<&[u8]>,
        limits: &Limits,
    ) -> Result<UpdateOutcome, RegistrationError> {
        self.update_with(query, payload, limits, &[], parse_private)
    }

    /// [`Registration::apply_update`] taking a new object list from `lists`, with the
    /// queue-mode APNs of [`Registration::from_register_shared`].
    pub fn apply_update_shared(
        &mut self,
        query: RegisterQuery,
        payload: Option<&[u8]>,
        limits: &Limits,
        psm_apns: &[String],
        lists: &mut ObjectLists,
    ) -> Result<UpdateOutcome, RegistrationError> {
        self.update_with(query, payload, limits, psm_apns, |p| lists.get_or_parse(p))
    }

    fn update_with(
        &mut self,
        query: RegisterQuery,
        payload: Option<&[u8]>,
        limits: &Limits,
        psm_apns: &[String],
        parse: impl FnOnce(&[u8]) -> Result<Arc<ObjectList>, RegistrationError>,
    ) -> Result<UpdateOutcome, RegistrationError> {
        if let Some(ep) = query.ep {
            if *ep != *self.ep {
                return Err(RegistrationError::EndpointChanged {
                    registered: self.ep.to_string(),
                    got: ep,
                });
            }
        }
        if let Some(v) = query.version {
            if v != self.version {
                return Err(RegistrationError::VersionChanged {
                    registered: self.version,
                    got: v,
                });
            }
        }
        let lifetime = query
            .lifetime
            .map(|lt| limits.check_lifetime(lt))
            .transpose()?;
        let binding = query.binding.map(Binding::parse).transpose()?;
        let object_list = match payload {
            Some(p) if !p.is_empty() => Some(parse(p)?),
            _ => None,
        };

        let mut outcome = UpdateOutcome::default();
        if let Some(lt) = lifetime {
            outcome.lifetime_changed = lt != self.lifetime;
            self.lifetime = lt;
        }
        if let Some(b) = binding {
            outcome.binding_changed = b != self.binding;
            self.binding = b;
        }
        if let Some(list) = object_list {
            self.object_list = Some(list);
            outcome.object_list_updated = true;
        }
        self.merge_params(query.params);
        let queue_mode = self.compute_queue_mode(psm_apns);
        outcome.binding_changed |= queue_mode != self.queue_mode;
        self.queue_mode = queue_mode;
        Ok(outcome)
    }

    /// The value of a non-registration query parameter, e.g. `sms` or `apn`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn merge_params(&mut self, params: Vec<(String, String)>) {
        for (name, value) in params {
            if is_core_param(&name) {
                continue;
            }
            match self.params.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => self.params.push((name, value)),
            }
        }
    }

    /// Whether the binding or parameters put the device in queue mode: a `Q` in the
    /// binding, a `Q` parameter, or an `apn` equal (ignoring case) to one of `psm_apns`
    /// (given in lower case), an APN whose devices the carrier puts in PSM.
    pub fn compute_queue_mode(&self, psm_apns: &[String]) -> bool {
        self.binding.as_str().contains('Q')
            || self.params.iter().any(|(n, _)| n == "Q")
            || self
                .param("apn")
                .is_some_and(|apn| psm_apns.iter().any(|p| p.eq_ignore_ascii_case(apn)))
    }
}

/// Endpoint names become MQTT topic levels, so they must be non-empty, bounded, and free
/// of topic separators, wildcards and control characters.
fn check_endpoint(ep: &str) -> Result<(), RegistrationError> {
    let reason = if ep.is_empty() {
        "empty"
    } else if ep.len() > MAX_ENDPOINT_LEN {
        "longer than 255 bytes"
    } else if ep.contains(['/', '+', '#']) {
        "contains an MQTT topic separator or wildcard"
    } else if ep.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(RegistrationError::InvalidEndpoint {
        name: ep.to_owned(),
        reason,
    })
}

fn parse_private(payload: &[u8]) -> Result<Arc<ObjectList>, RegistrationError> {
    parse_object_list(payload).map(Arc::new)
}

/// A binding mode (`b`): one to [`MAX_BINDING_LEN`] of the letters U, Q, S, N, T, stored
/// inline in the order received.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding {
    len: u8,
    letters: [u8; MAX_BINDING_LEN],
}

impl Binding {
    /// `U`, assumed when a device sends no binding.
    pub const UDP: Binding = Binding {
        len: 1,
        letters: [b'U', 0, 0, 0, 0, 0, 0, 0],
    };

    /// Validates the value of the `b` parameter.
    pub fn parse(b: String) -> Result<Binding, RegistrationError> {
        if b.is_empty() || b.len() > MAX_BINDING_LEN || !b.bytes().all(|c| b"UQSNT".contains(&c)) {
            return Err(RegistrationError::InvalidBinding(b));
        }
        let mut letters = [0; MAX_BINDING_LEN];
        letters[..b.len()].copy_from_slice(b.as_bytes());
        Ok(Binding {
            len: b.len() as u8,
            letters,
        })
    }

    /// The binding as the device sent it, e.g. `"UQ"`.
    pub fn as_str(&self) -> &str {
        let letters = self
            .letters
            .get(..usize::from(self.len))
            .unwrap_or_default();
        // Only the ASCII letters accepted by `parse` are ever stored.
        std::str::from_utf8(letters).unwrap_or_default()
    }
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Binding {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The objects and object instances a device announces (Register/Update payload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ObjectList {
    /// Root path of the LwM2M objects on the device, `"/"` unless a link with
    /// `rt="oma.lwm2m"` names another one (stored without a trailing slash).
    pub alternate_path: String,
    /// Content formats the device announced on the `rt="oma.lwm2m"` link (`ct`), if any.
    pub content_formats: Vec<u16>,
    /// Object and object instance links in payload order.
    pub links: Vec<ObjectLink>,
    /// The objects named (`ver`) in a version other than the serving one of the registry,
    /// which types their values; set by [`super::ObjectLists`] from its registry, empty
    /// from [`parse_object_list`] alone.
    pub pins: Box<[super::VersionPin]>,
}

impl ObjectList {
    /// The `(object id, version)` pairs the links name with a `ver` attribute.
    pub fn named_versions(&self) -> impl Iterator<Item = (u16, &str)> + '_ {
        self.links.iter().filter_map(|l| {
            let version = l.version.as_deref()?;
            let object = l.path.trim_start_matches('/').split('/').next()?;
            Some((object.parse().ok()?, version))
        })
    }
}

/// One link of an object list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectLink {
    /// Path with the alternate path removed, always starting with `/`, e.g. `/3/0`.
    pub path: String,
    /// The `ver` attribute (object version), unquoted.
    pub version: Option<String>,
}

/// Parses a CoRE link format (RFC 6690) object list.
///
/// Keeps each link's target and its `ver` attribute and drops other attributes. A link
/// with `rt="oma.lwm2m"` sets the alternate path (and the content formats) and is not
/// listed; links under the alternate path have it stripped. Whitespace around links and
/// attributes is tolerated; commas and semicolons inside quotes or `<>` do not split.
pub fn parse_object_list(payload: &[u8]) -> Result<ObjectList, RegistrationError> {
    let text = std::str::from_utf8(payload).map_err(|_| RegistrationError::ObjectListNotUtf8)?;
    let mut list = ObjectList {
        alternate_path: "/".to_owned(),
        ..ObjectList::default()
    };
    let mut alternate: Option<String> = None;
    let mut raw: Vec<ObjectLink> = Vec::new();
    for (index, link) in split_unquoted(text, ',').enumerate() {
        let link = link.trim();
        if link.is_empty() {
            continue;
        }
        let malformed = |reason| RegistrationError::MalformedLink { index, reason };
        let rest = link
            .strip_prefix('<')
            .ok_or_else(|| malformed("does not start with '<'"))?;
        let end = rest.find('>').ok_or_else(|| malformed("no closing '>'"))?;
        let target = rest[..end].trim();
        let mut version = None;
        let mut is_root = false;
        let mut formats = Vec::new();
        for attr in split_unquoted(&rest[end + 1..], ';') {
            let attr = attr.trim();
            let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
            let value = unquote(value.trim());
            match name.trim() {
                "ver" => version = Some(value.to_owned()),
                "rt" => is_root |= value.split_ascii_whitespace().any(|t| t == "oma.lwm2m"),
                "ct" => {
                    formats = value
                        .split_ascii_whitespace()
                        .flat_map(str::parse)
                        .collect()
                }
                _ => {}
            }
        }
        if is_root {
            if alternate.is_none() {
                alternate = Some(normalize_root(target));
                list.content_formats = formats;
            }
            continue;
        }
        if raw.len() == MAX_OBJECT_LINKS {
            return Err(RegistrationError::TooManyLinks);
        }
        raw.push(ObjectLink {
            path: target.to_owned(),
            version,
        });
    }
    if let Some(root) = alternate {
        list.alternate_path = root;
    }
    list.links = raw
        .into_iter()
        .filter_map(|mut link| {
            link.path = strip_root(&list.alternate_path, &link.path)?;
            Some(link)
        })
        .collect();
    Ok(list)
}

/// `"/lwm2m/"` → `"/lwm2m"`, `""` → `"/"`, `"lwm2m"` → `"/lwm2m"`.
fn normalize_root(target: &str) -> String {
    let trimmed = target.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Removes the alternate path from a link target and ensures a leading slash; `None` for
/// the root itself (it names no object).
fn strip_root(root: &str, target: &str) -> Option<String> {
    let path = if root == "/" {
        target
    } else {
        match target.strip_prefix(root) {
            Some("") | Some("/") => return None,
            Some(rest) if rest.starts_with('/') => rest,
            _ => target,
        }
    };
    Some(if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Splits on `sep` outside double quotes (with `\` escapes) and outside `<...>`.
fn split_unquoted(text: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
        for (i, c) in s.char_indices() {
            if escaped {
                escaped = false;
            } else if in_quote {
                match c {
                    '\\' => escaped = true,
                    '"' => in_quote = false,
                    _ => {}
                }
            } else if in_angle {
                in_angle = c != '>';
            } else if c == '"' {
                in_quote = true;
            } else if c == '<' {
                in_angle = true;
            } else if c == sep {
                rest = Some(&s[i + c.len_utf8()..]);
                return Some(&s[..i]);
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
