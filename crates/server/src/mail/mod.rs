//! Email. Every message goes to the outbox table first and is delivered by a
//! `send_email` job: over SMTP when a server is configured, otherwise into
//! the log, with the message kept for admins to read (`GET /admin/outbox`),
//! so the embedded default works without a mail server.
//!
//! Links that carry a one-time token (verification, password reset) are for
//! the recipient only: the outbox shows them masked, the log never has them,
//! and the stored copy loses them once the message is delivered or logged.
//!
//! Delivery is at least once: a worker that dies after the SMTP server
//! accepted a message but before marking it sent will send it again.

pub mod outbox;
pub mod templates;

use std::time::Duration;

use anyhow::Context as _;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;

use crate::config::{Config, SmtpTls};

const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A message ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub body_text: String,
}

/// How a message left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Smtp,
    Logged,
}

#[derive(Clone)]
pub struct Mailer {
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("smtp", &self.smtp.is_some())
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let from = config
            .mail_from
            .parse()
            .with_context(|| format!("mail_from {:?} is not an address", config.mail_from))?;
        let smtp = match &config.smtp_host {
            None => None,
            Some(host) => {
                let builder = match config.smtp_tls {
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
                };
                let mut builder = builder.port(config.smtp_port).timeout(Some(SMTP_TIMEOUT));
                if let Some(username) = &config.smtp_username {
                    let password = config
                        .smtp_password
                        .as_ref()
                        .map(|p| p.expose_secret().to_owned())
                        .unwrap_or_default();
                    builder = builder.credentials(Credentials::new(username.clone(), password));
                }
                Some(builder.build())
            }
        };
        Ok(Self { smtp, from })
    }

    pub fn uses_smtp(&self) -> bool {
        self.smtp.is_some()
    }

    pub async fn deliver(&self, email: &Email) -> anyhow::Result<Delivery> {
        let Some(smtp) = &self.smtp else {
            tracing::info!(
                to = email.to,
                subject = email.subject,
                body = redact_tokens(&email.body_text),
                "email (no SMTP server configured; kept in the outbox)"
            );
            return Ok(Delivery::Logged);
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(email
                .to
                .parse()
                .with_context(|| format!("{:?} is not an address", email.to))?)
            .subject(&email.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(email.body_text.clone())
            .context("building the message")?;
        smtp.send(message).await.context("SMTP delivery")?;
        Ok(Delivery::Smtp)
    }
}

/// Where a link's one-time token starts.
const TOKEN_PARAMETER: &str = "token=";
const REDACTED: &str = "[redacted]";

/// `text` with the value of every `token=` link parameter masked.
pub fn redact_tokens(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(TOKEN_PARAMETER) {
        let value_start = at + TOKEN_PARAMETER.len();
        redacted.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let value_len = value
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(value.len());
        if value_len > 0 {
            redacted.push_str(REDACTED);
        }
        rest = &value[value_len..];
    }
    redacted.push_str(rest);
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_values_are_masked_and_the_rest_is_kept() {
        assert_eq!(
            redact_tokens("Open https://x/reset-password?token=aB3_-x9 now.\nOr ?token=zz&a=1"),
            "Open https://x/reset-password?token=[redacted] now.\nOr ?token=[redacted]&a=1"
        );
        assert_eq!(
            redact_tokens("no link, token= alone"),
            "no link, token= alone"
        );
        assert_eq!(
            redact_tokens("ends with token=abc"),
            "ends with token=[redacted]"
        );
    }
}
