//! Who a generation runs for, once the API layer has checked the credential: nobody (anonymous
//! use), the static `server.api_key`, or a user (through an API key or an access token).

use crate::store::User;

/// The caller of a `/v1`, `/ws` or conversation request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credential, where none is required.
    Anonymous,
    /// The static `server.api_key`.
    StaticKey,
    /// A user, through one of their API keys (`api_key_id`) or an access token (`None`).
    User {
        /// The account, as stored when the request arrived.
        user: User,
        /// The API key used, if any.
        api_key_id: Option<i64>,
    },
}

impl Principal {
    /// The user behind the request, if any.
    pub fn user_id(&self) -> Option<i64> {
        match self {
            Principal::User { user, .. } => Some(user.id),
            _ => None,
        }
    }

    /// The API key the request came with, if any.
    pub fn api_key_id(&self) -> Option<i64> {
        match self {
            Principal::User { api_key_id, .. } => *api_key_id,
            _ => None,
        }
    }
}
