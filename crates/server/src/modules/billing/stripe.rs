//! Stripe webhooks: the `Stripe-Signature` check (ours, no SDK) and the
//! events that move money. Each event is booked at most once: its ledger
//! row carries the idempotency key `stripe:{event id}`, so Stripe's retries
//! and replays are harmless.

use hmac::{Hmac, Mac as _};
use sea_orm::ActiveValue::Set;
use sea_orm::EntityTrait as _;
use sea_orm::sea_query::OnConflict;
use serde::Deserialize;
use sha2::Sha256;

use super::Services;
use crate::db::entities::transaction::{self, TransactionKind};
use crate::db::entities::user;
use crate::error::{Error, Result};
use crate::ids::{TransactionId, UserId};

/// How far a signature's timestamp may be from our clock, in seconds
/// (Stripe's libraries use the same five minutes).
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches the payload")]
    Mismatch,
}

/// Checks a `Stripe-Signature` header (`t=…,v1=…[,v1=…]`) against the raw
/// payload: the timestamp must be within `tolerance_secs` of `now`, and one
/// of the `v1` signatures (several while a secret is rotated) must be the
/// HMAC-SHA256 of `{t}.{payload}` under `secret`, compared in constant time.
pub fn verify_signature(
    payload: &[u8],
    header: &str,
    secret: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(SignatureError::Malformed);
    };
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let matches = signatures.iter().any(|signature| {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac.verify_slice(signature).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// A completed Checkout Session of a top-up, as we create them: the
/// account in `client_reference_id`, the amount paid and its currency.
#[derive(Debug, Deserialize)]
struct CompletedCheckout {
    id: String,
    client_reference_id: Option<UserId>,
    amount_total: Option<i64>,
    currency: Option<String>,
    payment_status: Option<String>,
}

/// Verifies and books a webhook delivery. A bad or stale signature is a
/// 400 and changes nothing; an event of a kind we do not act on is
/// acknowledged.
pub async fn handle_webhook(
    services: &Services,
    secret: Option<&[u8]>,
    signature: Option<&str>,
    payload: &[u8],
) -> Result<()> {
    let secret = secret.ok_or_else(|| {
        Error::Unavailable("Stripe webhooks are not configured on this platform.".to_owned())
    })?;
    let now = services.clock.now().timestamp();
    verify_signature(
        payload,
        signature.unwrap_or_default(),
        secret,
        now,
        TOLERANCE_SECS,
    )
    .map_err(|err| Error::BadRequest(format!("Invalid Stripe-Signature: {err}.")))?;
    let event: Event = serde_json::from_slice(payload)
        .map_err(|err| Error::BadRequest(format!("Not a Stripe event: {err}.")))?;
    match event.kind.as_str() {
        "checkout.session.completed" => {
            let session: CompletedCheckout = serde_json::from_value(event.data.object)
                .map_err(|err| Error::BadRequest(format!("Not a Checkout Session: {err}.")))?;
            credit_top_up(services, &event.id, session).await
        }
        other => {
            tracing::info!(event = event.id, kind = other, "Stripe event ignored");
            Ok(())
        }
    }
}

async fn credit_top_up(services: &Services, event: &str, session: CompletedCheckout) -> Result<()> {
    let (Some(user), Some(amount), Some(currency)) = (
        session.client_reference_id,
        session.amount_total.filter(|a| *a > 0),
        session.currency.map(|c| c.to_ascii_uppercase()),
    ) else {
        tracing::warn!(
            event,
            session = session.id,
            "a Checkout Session without account or amount"
        );
        return Ok(());
    };
    if session.payment_status.as_deref() != Some("paid") {
        return Ok(());
    }
    if user::Entity::find_by_id(user)
        .one(services.db.writer())
        .await?
        .is_none()
    {
        tracing::warn!(event, session = session.id, %user, "a top-up for an unknown account");
        return Ok(());
    }
    let now = crate::db::entities::now();
    transaction::Entity::insert(transaction::ActiveModel {
        id: Set(TransactionId::new()),
        user_id: Set(user),
        kind: Set(TransactionKind::TopUp),
        amount_minor: Set(amount),
        currency: Set(currency),
        invoice_id: Set(None),
        instance_id: Set(None),
        provider: Set(Some("stripe".to_owned())),
        provider_ref: Set(Some(session.id)),
        idempotency_key: Set(Some(format!("stripe:{event}"))),
        usage_hour: Set(None),
        description: Set("Top-up by card".to_owned()),
        created_by: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    // The event (its key) or the session (provider, provider_ref) booked
    // already: a replay, nothing to do.
    .on_conflict(OnConflict::new().do_nothing().to_owned())
    .try_insert()
    .exec_without_returning(services.db.writer())
    .await?;
    super::credit_arrived(services, user).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], timestamp: i64, payload: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    const NOW: i64 = 1_775_000_000;
    const PAYLOAD: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn a_signature_of_the_payload_at_a_recent_time_is_accepted() {
        let header = format!("t={NOW},v1={}", sign(b"whsec_a", NOW, PAYLOAD));
        assert_eq!(
            verify_signature(PAYLOAD, &header, b"whsec_a", NOW + 10, 300),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_signatures_may_match_while_secrets_rotate() {
        let header = format!(
            "t={NOW},v1={},v0=ignored,v1={}",
            sign(b"whsec_old", NOW, PAYLOAD),
            sign(b"whsec_new", NOW, PAYLOAD)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, b"whsec_new", NOW, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, b"whsec_old", NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn wrong_secrets_payloads_and_times_are_refused() {
        let header = format!("t={NOW},v1={}", sign(b"whsec_a", NOW, PAYLOAD));
        assert_eq!(
            verify_signature(PAYLOAD, &header, b"whsec_b", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(br#"{"id":"evt_2"}"#, &header, b"whsec_a", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, b"whsec_a", NOW + 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, b"whsec_a", NOW - 301, 300),
            Err(SignatureError::Stale)
        );
        // A signature made for another timestamp does not travel with a new one.
        let moved = format!("t={},v1={}", NOW + 5, sign(b"whsec_a", NOW, PAYLOAD));
        assert_eq!(
            verify_signature(PAYLOAD, &moved, b"whsec_a", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        for malformed in ["", "v1=00", &format!("t={NOW}"), "t=soon,v1=00"] {
            assert_eq!(
                verify_signature(PAYLOAD, malformed, b"whsec_a", NOW, 300),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
    }
}
