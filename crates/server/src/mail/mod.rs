//! Email. Every message goes to the outbox table first and is delivered by a
//! `send_email` job: over SMTP when a server is configured, otherwise into
//! the log, with the message kept for admins to read (`GET /admin/outbox`),
//! so the embedded default works without a mail server.
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
                body = email.body_text,
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
