//! Who is calling: the identity in the client certificate that mutual TLS
//! already verified against the aggregator's CA, looked up in the access
//! configuration ([`crate::access`]). Refusals are written to the audit log.

use tonic::Request;
use wijkradar_pki::identity_from_der;

use crate::State;
use crate::access::{Organisation, Role};
use crate::error::ApiError;

/// The caller's organisation, if it holds `role`. An unknown certificate is
/// UNAUTHENTICATED (the reason goes to the server's log and the audit log
/// only); a known one without the role is PERMISSION_DENIED.
pub(crate) fn authorize<T>(
    state: &State,
    req: &Request<T>,
    role: Role,
    call: &str,
) -> Result<Organisation, ApiError> {
    let refuse = |actor: &str, reason: String, error: ApiError| {
        let kind = format!("{call} {}", error.kind());
        state.refusals.record(
            &state.audit,
            actor,
            &kind,
            crate::call_event(call, "", "", Some(reason)),
        );
        Err(error)
    };
    let Some(leaf) = req.peer_certs().and_then(|c| c.first().cloned()) else {
        return refuse(
            "unknown",
            "no client certificate".into(),
            ApiError::Unauthenticated,
        );
    };
    let access = state.access();
    if access.is_revoked(leaf.as_ref()) {
        tracing::warn!("refused a revoked certificate");
        return refuse(
            "unknown",
            "revoked certificate".into(),
            ApiError::NotAuthorised,
        );
    }
    let identity = match identity_from_der(leaf.as_ref()) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(reason = %e, "refused a certificate without a usable identity");
            return refuse("unknown", e.to_string(), ApiError::NotAuthorised);
        }
    };
    let Some(org) = access.find(&identity) else {
        tracing::warn!(certificate = %identity, "refused a certificate that matches no organisation in the access configuration");
        return refuse(
            "unknown",
            format!("certificate {identity} matches no organisation"),
            ApiError::NotAuthorised,
        );
    };
    if !org.has(role) {
        tracing::warn!(organisation = %org.name, wanted = role.as_str(), "refused a call outside the organisation's grants");
        let message = format!("organisation `{}` may not {}", org.name, role.action());
        return refuse(
            &org.name,
            message.clone(),
            ApiError::PermissionDenied(message),
        );
    }
    Ok(org.clone())
}
