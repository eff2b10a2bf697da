//! Message type and code (RFC 7252 §3, §5.8, §5.9, §12.1; RFC 8132 for FETCH/PATCH/iPATCH).

use std::fmt;

/// The two-bit message type of the CoAP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Confirmable: the peer acknowledges it (ACK) or rejects it (RST).
    Con = 0,
    /// Non-confirmable: fire and forget.
    Non = 1,
    /// Acknowledgement of a CON, possibly carrying a piggybacked response.
    Ack = 2,
    /// Reset: the peer could not process a message.
    Rst = 3,
}

impl MessageType {
    /// The type encoded in the two low bits of `bits`.
    pub const fn from_bits(bits: u8) -> MessageType {
        match bits & 0b11 {
            0 => MessageType::Con,
            1 => MessageType::Non,
            2 => MessageType::Ack,
            _ => MessageType::Rst,
        }
    }
}

/// A CoAP code, `class.detail` packed as `ccc ddddd` in one byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

impl Code {
    /// The code `class.detail`; class is 0..=7, detail 0..=31 (higher bits are dropped).
    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 0x07) << 5) | (detail & 0x1f))
    }

    /// The class: 0 request or empty, 2 success, 4 client error, 5 server error.
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail within the class.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// A request method (0.01 to 0.31).
    pub fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }

    /// A response (classes 2 to 5).
    pub fn is_response(self) -> bool {
        (2..=5).contains(&self.class())
    }

    /// The empty message code 0.00.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Snake-case name of the code, as used in the MQTT JSON `codeMsg`; `"unknown"` for
    /// codes this gateway has no name for.
    pub fn name(self) -> &'static str {
        match self {
            Code::EMPTY => "empty",
            Code::GET => "get",
            Code::POST => "post",
            Code::PUT => "put",
            Code::DELETE => "delete",
            Code::FETCH => "fetch",
            Code::PATCH => "patch",
            Code::IPATCH => "ipatch",
            Code::CREATED => "created",
            Code::DELETED => "deleted",
            Code::VALID => "valid",
            Code::CHANGED => "changed",
            Code::CONTENT => "content",
            Code::CONTINUE => "continue",
            Code::BAD_REQUEST => "bad_request",
            Code::UNAUTHORIZED => "unauthorized",
            Code::BAD_OPTION => "bad_option",
            Code::FORBIDDEN => "forbidden",
            Code::NOT_FOUND => "not_found",
            Code::METHOD_NOT_ALLOWED => "method_not_allowed",
            Code::NOT_ACCEPTABLE => "not_acceptable",
            Code::REQUEST_ENTITY_INCOMPLETE => "request_entity_incomplete",
            Code::CONFLICT => "conflict",
            Code::PRECONDITION_FAILED => "precondition_failed",
            Code::REQUEST_ENTITY_TOO_LARGE => "request_entity_too_large",
            Code::UNSUPPORTED_CONTENT_FORMAT => "unsupported_content_format",
            Code::INTERNAL_SERVER_ERROR => "internal_server_error",
            Code::NOT_IMPLEMENTED => "not_implemented",
            Code::BAD_GATEWAY => "bad_gateway",
            Code::SERVICE_UNAVAILABLE => "service_unavailable",
            Code::GATEWAY_TIMEOUT => "gateway_timeout",
            Code::PROXYING_NOT_SUPPORTED => "proxying_not_supported",
            _ => "unknown",
        }
    }

    /// 0.00 Empty message.
    pub const EMPTY: Code = Code::new(0, 0);
    /// 0.01 GET.
    pub const GET: Code = Code::new(0, 1);
    /// 0.02 POST.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// 0.05 FETCH (RFC 8132).
    pub const FETCH: Code = Code::new(0, 5);
    /// 0.06 PATCH (RFC 8132).
    pub const PATCH: Code = Code::new(0, 6);
    /// 0.07 iPATCH (RFC 8132).
    pub const IPATCH: Code = Code::new(0, 7);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Code = Code::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959).
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option.
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.09 Conflict (RFC 8132).
    pub const CONFLICT: Code = Code::new(4, 9);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    /// 5.02 Bad Gateway.
    pub const BAD_GATEWAY: Code = Code::new(5, 2);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    /// 5.04 Gateway Timeout.
    pub const GATEWAY_TIMEOUT: Code = Code::new(5, 4);
    /// 5.05 Proxying Not Supported.
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);
}

impl fmt::Display for Code {
    /// `class.detail` with a two-digit detail, e.g. `2.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    /// `2.05 content`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_fields_and_text() {
        assert_eq!(Code::CONTENT.0, 0x45);
        assert_eq!(Code::CONTINUE.0, 0x5f);
        assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.0, 0x8d);
        assert_eq!((Code::NOT_FOUND.class(), Code::NOT_FOUND.detail()), (4, 4));
        assert_eq!(Code::CONTENT.to_string(), "2.05");
        assert_eq!(Code::BAD_REQUEST.to_string(), "4.00");
        assert_eq!(format!("{:?}", Code::CONTENT), "2.05 content");
        assert_eq!(format!("{:?}", Code(0xff)), "7.31 unknown");
    }

    #[test]
    fn code_names() {
        assert_eq!(Code::CHANGED.name(), "changed");
        assert_eq!(Code::BAD_REQUEST.name(), "bad_request");
        assert_eq!(
            Code::UNSUPPORTED_CONTENT_FORMAT.name(),
            "unsupported_content_format"
        );
        assert_eq!(
            Code::PROXYING_NOT_SUPPORTED.name(),
            "proxying_not_supported"
        );
        assert_eq!(Code::IPATCH.name(), "ipatch");
        assert_eq!(Code::EMPTY.name(), "empty");
        assert_eq!(Code::new(2, 6).name(), "unknown");
        assert_eq!(Code::new(3, 0).name(), "unknown");
    }

    #[test]
    fn code_kinds() {
        assert!(Code::GET.is_request() && !Code::GET.is_response() && !Code::GET.is_empty());
        assert!(Code::CONTENT.is_response() && !Code::CONTENT.is_request());
        assert!(Code::GATEWAY_TIMEOUT.is_response());
        assert!(Code::EMPTY.is_empty() && !Code::EMPTY.is_request());
        assert!(!Code::new(1, 0).is_response() && !Code::new(6, 0).is_response());
    }

    #[test]
    fn message_type_bits() {
        for ty in [
            MessageType::Con,
            MessageType::Non,
            MessageType::Ack,
            MessageType::Rst,
        ] {
            assert_eq!(MessageType::from_bits(ty as u8), ty);
        }
    }
}
