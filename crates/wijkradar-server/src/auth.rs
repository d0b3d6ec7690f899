//! Who is calling: the organisation and role from the client certificate
//! that mutual TLS already verified against the aggregator's CA.

use tonic::Request;
use wijkradar_pki::{Identity, Role, identity_from_der};

use crate::error::ApiError;

/// The caller's identity, if its certificate's role is `role`.
pub fn authorize<T>(req: &Request<T>, role: Role) -> Result<Identity, ApiError> {
    let certs = req.peer_certs().ok_or(ApiError::Unauthenticated)?;
    let leaf = certs.first().ok_or(ApiError::Unauthenticated)?;
    let identity = identity_from_der(leaf.as_ref()).map_err(|e| {
        tracing::warn!(reason = %e, "refused a certificate without a usable identity");
        ApiError::Unauthenticated
    })?;
    if identity.role != role {
        tracing::warn!(caller = %identity, wanted = role.as_str(), "refused a call outside the caller's role");
        let action = match role {
            Role::Partner => "submit signals",
            Role::Analyst => "query figures",
        };
        return Err(ApiError::PermissionDenied(format!(
            "a certificate with role {} may not {action}",
            identity.role.as_str()
        )));
    }
    Ok(identity)
}
