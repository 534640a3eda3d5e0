//! The token check the registry makes on every request: an RS256 JWT signed by the trusted key,
//! for the right issuer and audience, in its time window, granting pull on exactly the names the
//! request needs (access records match names exactly: `path/*` is a literal name).

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use jsonwebtoken::{Algorithm, Validation};

use super::state::State;
use crate::registry::token::{Access, Claims};
use crate::sync::lock;

/// Checks the bearer token as the registry does: signature and `kid`, `iss`, `aud`, `exp`/`nbf`
/// with 60 s of leeway, and every access record in `needed`, by its exact name.
pub(super) fn authorize(req: &HttpRequest, state: &State, needed: &[Access]) -> Result<(), String> {
    let header = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or("Authorization is not a Bearer token")?;
    let jwt_header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad JWT: {e}"))?;
    if jwt_header.alg != Algorithm::RS256 {
        return Err(format!("algorithm {:?} is not RS256", jwt_header.alg));
    }
    if jwt_header.kid.as_deref() != Some(state.trusted.kid.as_str()) {
        return Err("kid names no trusted key".into());
    }
    // A token seen before needs no second signature check (a 2-core benchmark machine cannot
    // spare the registry's own crypto); its time window and scope are checked every time.
    let cached = lock(&state.verified).get(token).cloned();
    let claims = match cached {
        Some(claims) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if now > claims.exp + LEEWAY_S || now + LEEWAY_S < claims.nbf {
                return Err("token refused: expired or not yet valid".into());
            }
            claims
        }
        None => {
            let claims = verify(token, state)?;
            let mut verified = lock(&state.verified);
            if verified.len() >= 10_000 {
                verified.clear();
            }
            verified.insert(token.to_string(), claims.clone());
            claims
        }
    };
    for needed in needed {
        let granted = claims.access.iter().any(|a| {
            a.kind == needed.kind && a.name == needed.name && a.actions.iter().any(|x| x == "pull")
        });
        if !granted {
            return Err(format!("token grants no pull on {}", needed.name));
        }
    }
    Ok(())
}

/// The registry checks `exp` and `nbf` with this much leeway.
const LEEWAY_S: i64 = 60;

/// Signature, issuer, audience and time window.
fn verify(token: &str, state: &State) -> Result<Claims, String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = LEEWAY_S as u64;
    validation.validate_nbf = true;
    validation.set_audience(&[state.trusted.audience.as_str()]);
    validation.set_issuer(&[state.trusted.issuer.as_str()]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud"]);
    jsonwebtoken::decode::<Claims>(token, &state.decoding_key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("token refused: {e}"))
}
