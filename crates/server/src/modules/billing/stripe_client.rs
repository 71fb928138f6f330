//! Stripe's REST API, the calls we make (no SDK): Checkout Sessions and
//! refunds, form-encoded with the secret key as a bearer token. The key is a
//! [`SecretString`]: it is never logged, and Stripe's error answers are
//! passed on as a 502 with Stripe's own message, which never holds it.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::payments::{Checkout, CheckoutRequest, PaymentProvider, ProviderRefund, Purpose};
use crate::error::{Error, Result};

/// How long one call to Stripe may take; admins' refunds wait on it.
const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct StripeClient {
    http: reqwest::Client,
    /// `https://api.stripe.com`, without a trailing slash.
    base: String,
    key: SecretString,
}

#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    status: Option<String>,
}

/// Stripe's error answer: `{"error": {"type", "code", "message", …}}`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

impl StripeClient {
    pub fn new(base: &str, key: SecretString) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<T> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose_secret())
            .form(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|err| {
            tracing::warn!(error = %err.without_url(), path, "Stripe cannot be reached");
            Error::Upstream("The payment provider cannot be reached; try again later.".to_owned())
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|err| {
            Error::Upstream(format!(
                "The payment provider's answer was cut: {}",
                err.without_url()
            ))
        })?;
        if !status.is_success() {
            let answer = serde_json::from_slice::<ErrorAnswer>(&body).ok();
            let kind = answer.as_ref().and_then(|a| a.error.kind.clone());
            let message = answer
                .and_then(|a| a.error.message)
                .unwrap_or_else(|| format!("HTTP {status}"));
            tracing::warn!(%status, kind, message, path, "Stripe refused a request");
            return Err(Error::Upstream(format!(
                "The payment provider refused the request: {message}"
            )));
        }
        serde_json::from_slice(&body).map_err(|err| {
            Error::Upstream(format!(
                "The payment provider answered something unexpected: {err}"
            ))
        })
    }
}

/// The form of a Checkout Session in payment mode for one priced line. The
/// account and purpose go both on the session (for `checkout.session.*`
/// events) and on its PaymentIntent (for `payment_intent.*` events).
fn checkout_form(request: &CheckoutRequest) -> Vec<(String, String)> {
    let mut metadata = vec![("account_id", request.account.to_string())];
    match request.purpose {
        Purpose::TopUp => metadata.push(("purpose", "top_up".to_owned())),
        Purpose::Invoice(id) => {
            metadata.push(("purpose", "invoice".to_owned()));
            metadata.push(("invoice_id", id.to_string()));
        }
    }
    let mut form: Vec<(String, String)> = vec![
        ("mode".into(), "payment".into()),
        ("success_url".into(), request.success_url.clone()),
        ("cancel_url".into(), request.cancel_url.clone()),
        ("client_reference_id".into(), request.account.to_string()),
        ("line_items[0][quantity]".into(), "1".into()),
        (
            "line_items[0][price_data][currency]".into(),
            request.currency.to_ascii_lowercase(),
        ),
        (
            "line_items[0][price_data][unit_amount]".into(),
            request.amount_minor.to_string(),
        ),
        (
            "line_items[0][price_data][product_data][name]".into(),
            request.description.clone(),
        ),
    ];
    for (key, value) in metadata {
        form.push((format!("metadata[{key}]"), value.clone()));
        form.push((format!("payment_intent_data[metadata][{key}]"), value));
    }
    form
}

#[async_trait::async_trait]
impl PaymentProvider for StripeClient {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout> {
        let session: Session = self
            .post("/v1/checkout/sessions", &checkout_form(request), None)
            .await?;
        let checkout_url = session.url.ok_or_else(|| {
            Error::Upstream("The payment provider gave no checkout page.".to_owned())
        })?;
        Ok(Checkout {
            checkout_url,
            session_id: session.id,
        })
    }

    async fn refund(&self, refund: &ProviderRefund) -> Result<String> {
        let form = [
            ("payment_intent".to_owned(), refund.payment_ref.clone()),
            ("amount".to_owned(), refund.amount_minor.to_string()),
        ];
        let answer: Refund = self
            .post("/v1/refunds", &form, Some(&refund.idempotency_key))
            .await?;
        if matches!(answer.status.as_deref(), Some("failed" | "canceled")) {
            return Err(Error::Upstream(format!(
                "The payment provider could not refund ({}).",
                answer.status.unwrap_or_default()
            )));
        }
        Ok(answer.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{InvoiceId, UserId};

    #[test]
    fn an_invoice_checkout_names_the_account_and_invoice_on_session_and_payment() {
        let account = UserId::new();
        let invoice = InvoiceId::new();
        let form = checkout_form(&CheckoutRequest {
            account,
            amount_minor: 4800,
            currency: "EUR".to_owned(),
            description: "Invoice 2026-000001".to_owned(),
            purpose: Purpose::Invoice(invoice),
            success_url: "https://cloud.example/ok".to_owned(),
            cancel_url: "https://cloud.example/ko".to_owned(),
        });
        let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("mode"), Some("payment"));
        assert_eq!(get("line_items[0][price_data][currency]"), Some("eur"));
        assert_eq!(get("line_items[0][price_data][unit_amount]"), Some("4800"));
        assert_eq!(
            get("client_reference_id"),
            Some(account.to_string().as_str())
        );
        for prefix in ["metadata", "payment_intent_data[metadata]"] {
            assert_eq!(
                get(&format!("{prefix}[invoice_id]")),
                Some(invoice.to_string().as_str())
            );
            assert_eq!(get(&format!("{prefix}[purpose]")), Some("invoice"));
        }
    }
}
