//! LwM2M semantics without transport: registration parameters and object lists
//! ([`registration`]), paths ([`path`]) and object definitions ([`object`]).
//!
//! Inputs are query option values and payload bytes; outputs are plain values. Nothing
//! here knows about CoAP messages, sockets or the clock.

pub mod object;
pub mod object_lists;
pub mod path;
pub mod registration;

pub use object::{
    parse_object_xml, Definitions, LoadReport, ObjectDef, ObjectError, Operations, Registry,
    ResourceDef, ResourceType, VersionPin,
};
pub use object_lists::ObjectLists;
pub use path::{Path, PathError};
pub use registration::{
    parse_object_list, parse_query, Binding, Limits, ObjectLink, ObjectList, RegisterQuery,
    Registration, RegistrationError, UpdateOutcome, Version,
};
