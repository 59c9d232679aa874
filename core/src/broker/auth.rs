//! Authentication and authorization: decisions the port makes, asked for by the engine.
//!
//! Simple user name/password checks and MQTT 5 enhanced authentication (the AUTH exchange) go
//! through one trait, [`Authenticator`]. Access control per topic is a second trait,
//! [`Authorizer`]. Both may answer [`AuthDecision::Pending`] when the answer needs I/O (an HTTP
//! callout): the port then calls `Broker::resolve_auth` when it has one. An access check of a
//! PUBLISH or SUBSCRIBE may likewise answer [`AccessDecision::Pending`] through
//! [`Authorizer::check`]: the engine keeps the packet, stops reading that connection and goes on
//! when the port calls `Broker::resolve_access`. Checks per delivery ([`Access::Receive`]) are
//! always answered at once.

use alloc::boxed::Box;

use super::ConnId;

use crate::ProtocolVersion;
use crate::codec::ReasonCode;

/// Who is connecting, as far as the CONNECT packet says.
#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo<'a> {
    /// Client identifier (after assignment, if the client sent none).
    pub client_id: &'a str,
    /// User name, if given.
    pub username: Option<&'a str>,
    /// Password, if given.
    pub password: Option<&'a [u8]>,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// The port's name for the listener the connection arrived on (0 if it has only one).
    pub listener: u16,
    /// The connection, for a port that answers [`AuthDecision::Pending`] and resolves it later.
    pub conn: ConnId,
}

/// One step of an authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Let the client in. `username` replaces the one from CONNECT when given (for example a
    /// TLS certificate's CN); `data` is sent back as Authentication Data (enhanced auth).
    Allow {
        /// Identity to use for authorization, if different from the CONNECT user name.
        username: Option<Box<str>>,
        /// Final Authentication Data for the client (enhanced auth only).
        data: Option<Box<[u8]>>,
    },
    /// Enhanced auth: send an AUTH packet with reason 0x18 and this data, await the answer.
    Continue {
        /// Authentication Data for the client.
        data: Box<[u8]>,
    },
    /// Refuse: CONNACK (or DISCONNECT during re-authentication) with this reason code, such as
    /// 0x86 bad user name or password, 0x87 not authorized, 0x8C bad authentication method.
    Deny(ReasonCode),
    /// The answer needs I/O; the port calls `Broker::resolve_auth` with it later.
    Pending,
}

impl AuthDecision {
    /// Let the client in with its CONNECT identity.
    pub const fn allow() -> Self {
        AuthDecision::Allow {
            username: None,
            data: None,
        }
    }
}

/// Decides who may connect.
pub trait Authenticator {
    /// A CONNECT without an Authentication Method: check user name, password, client id.
    fn authenticate(&mut self, info: &ConnectInfo<'_>) -> AuthDecision;

    /// The first step of MQTT 5 enhanced authentication with `method` (CONNECT) or of a
    /// re-authentication (AUTH 0x19). The default refuses every method with 0x8C.
    fn start_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        let _ = (info, method, data);
        AuthDecision::Deny(ReasonCode::BAD_AUTHENTICATION_METHOD)
    }

    /// A further step of enhanced authentication: the client's AUTH 0x18 with its data.
    fn continue_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        let _ = (info, method, data);
        AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED)
    }
}

/// The identity of a connected client, for authorization.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// User name, as authenticated.
    pub username: Option<&'a str>,
    /// Listener the client connected through.
    pub listener: u16,
    /// The client's connection, if it is connected (a session can receive while offline).
    pub conn: Option<ConnId>,
}

/// The answer to an access check that may need I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDecision {
    /// Go ahead.
    Allow,
    /// Refuse (SUBACK 0x87, PUBACK/PUBREC 0x87, or dropped, as the protocol version allows).
    Deny,
    /// The answer needs I/O: the engine keeps the packet and pauses the connection until the
    /// port calls `Broker::resolve_access` for it.
    Pending,
}

impl From<bool> for AccessDecision {
    fn from(allowed: bool) -> Self {
        if allowed {
            AccessDecision::Allow
        } else {
            AccessDecision::Deny
        }
    }
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Publish to a topic name.
    Publish,
    /// Subscribe to a topic filter.
    Subscribe,
    /// Receive a message published to a topic name (checked per delivery).
    Receive,
}

/// Decides what a connected client may do.
pub trait Authorizer {
    /// Whether `client` may perform `access` on `topic` (a name, or a filter for Subscribe).
    /// It must answer at once: it is called for every delivery ([`Access::Receive`]).
    fn authorize(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> bool;

    /// The check of an incoming PUBLISH ([`Access::Publish`]) or of one SUBSCRIBE filter
    /// ([`Access::Subscribe`]), which may be left [`AccessDecision::Pending`] while the port
    /// asks elsewhere. The default answers with [`Authorizer::authorize`].
    fn check(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> AccessDecision {
        self.authorize(client, access, topic).into()
    }
}

/// Lets everyone in: the default for a broker with anonymous access and no ACL.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&mut self, _: &ConnectInfo<'_>) -> AuthDecision {
        AuthDecision::allow()
    }
}

impl Authorizer for AllowAll {
    fn authorize(&self, _: &ClientInfo<'_>, _: Access, _: &str) -> bool {
        true
    }
}
