//! The loyalty programme as a member sees it: enroll, and read one account
//! (tier, miles, history) by its number plus the member's last name. A wrong
//! number and a wrong name give the same `404`; the account's email is
//! shown masked, and an enrollment refused because the email is taken does
//! not say by which account.

use crate::api::{json_response, ApiError};
use crate::body::Body;
use crate::query::Params;
use crate::routes::{decode_value, Req};
use crate::state::AppState;
use booking_domain::loyalty::{AccountId, CreateAccount, LoyaltyAccount, Tier};
use hyper::{Response, StatusCode};
use serde_json::json;

/// Most characters of an account number looked up.
const MAX_ID_LEN: usize = 32;

pub(crate) fn account_json(account: &LoyaltyAccount) -> serde_json::Value {
    let next = Tier::ALL
        .iter()
        .find(|t| t.threshold() > account.qualifying_miles)
        .map(|t| {
            json!({
                "tier": t,
                "name": t.name(),
                "miles_needed": t.threshold() - account.qualifying_miles,
            })
        });
    json!({
        "id": account.id,
        "first_name": account.first_name,
        "last_name": account.last_name,
        "email": super::mask_email(&account.email),
        "balance": account.balance,
        "qualifying_miles": account.qualifying_miles,
        "tier": account.tier,
        "tier_name": account.tier.name(),
        "earn_multiplier": account.tier.multiplier_tenths() as f64 / 10.0,
        "next_tier": next,
        "created_at": account.created_at,
    })
}

/// `POST /api/loyalty` with an `Idempotency-Key`: opens an account; `201`.
pub async fn enroll(state: &AppState, mut req: Req) -> Result<Response<Body>, ApiError> {
    let key = req.idempotency_key()?;
    let value = req.json_value(state).await?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object {first_name, last_name, email}".into(),
        ));
    }
    let request: CreateAccount = decode_value(value)?;
    let account = state
        .services
        .loyalty
        .create_account(&format!("enroll:{key}"), &request)
        .await?;
    tracing::info!(account = %account.id, "loyalty account opened");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "account": account_json(&account) }),
    ))
}

/// `GET /api/loyalty/{id}?last_name=`: the account and its history.
pub async fn account(state: &AppState, req: &Req) -> Result<Response<Body>, ApiError> {
    let mut p = Params::new(&req.query);
    let last_name = p.required("last_name");
    ApiError::check("invalid loyalty lookup", p.errors)?;
    let last_name = last_name.unwrap_or_default();
    let not_found =
        || ApiError::NotFound("no loyalty account matches this number and last name".into());
    let id = req.param(0).trim();
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(not_found());
    }
    let id = AccountId(id.to_string());
    let account = match state.services.loyalty.account(&id).await {
        Ok(a) => a,
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(_) => return Err(not_found()),
    };
    if account.last_name.trim().to_lowercase() != last_name.trim().to_lowercase() {
        return Err(not_found());
    }
    let mut history = state.services.loyalty.history(&account.id).await?;
    history.sort_by_key(|e| std::cmp::Reverse(e.created_at));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "account": account_json(&account), "history": history }),
    ))
}
