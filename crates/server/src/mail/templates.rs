//! The texts of the platform's emails, in the recipient's language.

use chrono::{DateTime, Utc};

use crate::mail::Email;
use crate::modules::billing::money::format as money;
use crate::modules::notifications::Notice;

fn french(locale: &str) -> bool {
    locale == "fr"
}

pub fn verify_email(to: &str, name: &str, locale: &str, link: &str) -> Email {
    let (subject, body_text) = if french(locale) {
        (
            "Confirmez votre adresse email".to_owned(),
            format!(
                "Bonjour {name},\n\nConfirmez votre adresse pour pouvoir commander des serveurs :\n\n{link}\n\n\
                 Ce lien est valable 48 heures. Si vous n'avez pas créé de compte, ignorez ce message.\n"
            ),
        )
    } else {
        (
            "Confirm your email address".to_owned(),
            format!(
                "Hello {name},\n\nConfirm your address so you can order servers:\n\n{link}\n\n\
                 This link works for 48 hours. If you did not sign up, ignore this message.\n"
            ),
        )
    };
    Email {
        to: to.to_owned(),
        subject,
        body_text,
    }
}

pub fn reset_password(to: &str, name: &str, locale: &str, link: &str) -> Email {
    let (subject, body_text) = if french(locale) {
        (
            "Réinitialisez votre mot de passe".to_owned(),
            format!(
                "Bonjour {name},\n\nPour choisir un nouveau mot de passe, ouvrez ce lien :\n\n{link}\n\n\
                 Il est valable une heure et ne sert qu'une fois. Si vous n'avez rien demandé, \
                 ignorez ce message : votre mot de passe ne change pas.\n"
            ),
        )
    } else {
        (
            "Reset your password".to_owned(),
            format!(
                "Hello {name},\n\nTo choose a new password, open this link:\n\n{link}\n\n\
                 It works once, for one hour. If you did not ask for this, ignore this message: \
                 your password stays as it is.\n"
            ),
        )
    };
    Email {
        to: to.to_owned(),
        subject,
        body_text,
    }
}

/// What a ticket-reply email says: which ticket, who wrote, and the reply.
#[derive(Clone, Copy, Debug)]
pub struct TicketReply<'a> {
    pub ticket_subject: &'a str,
    pub author_name: &'a str,
    /// The reply as written (Markdown reads fine as plain text).
    pub body: &'a str,
    pub link: &'a str,
}

pub fn ticket_reply(to: &str, name: &str, locale: &str, reply: TicketReply<'_>) -> Email {
    let TicketReply {
        ticket_subject,
        author_name,
        body,
        link,
    } = reply;
    let (subject, body_text) = if french(locale) {
        (
            format!("Nouvelle réponse : {ticket_subject}"),
            format!(
                "Bonjour {name},\n\n{author_name} a répondu à la demande « {ticket_subject} » :\n\n\
                 {body}\n\nPour répondre, ouvrez la demande :\n\n{link}\n"
            ),
        )
    } else {
        (
            format!("New reply: {ticket_subject}"),
            format!(
                "Hello {name},\n\n{author_name} replied to the ticket \"{ticket_subject}\":\n\n\
                 {body}\n\nTo answer, open the ticket:\n\n{link}\n"
            ),
        )
    };
    Email {
        to: to.to_owned(),
        subject,
        body_text,
    }
}

/// What a failed card payment was for, to tell the customer.
#[derive(Debug)]
pub struct PaymentFailure<'a> {
    /// Formatted with its currency: `12.34 EUR`.
    pub amount: &'a str,
    /// The invoice it was to pay; none for a top-up.
    pub invoice_number: Option<&'a str>,
    /// The card issuer's reason, as the provider words it.
    pub reason: Option<&'a str>,
}

pub fn payment_failed(to: &str, name: &str, locale: &str, failure: &PaymentFailure<'_>) -> Email {
    let amount = failure.amount;
    let (subject, body_text) = if french(locale) {
        let what = failure.invoice_number.map_or_else(
            || "le crédit de votre compte".to_owned(),
            |n| format!("la facture {n}"),
        );
        let reason = failure
            .reason
            .map(|r| format!("Motif donné par votre banque : {r}\n\n"))
            .unwrap_or_default();
        (
            "Votre paiement a échoué".to_owned(),
            format!(
                "Bonjour {name},\n\nVotre paiement de {amount} pour {what} n'a pas abouti.\n\n{reason}\
                 Rien ne vous a été débité. Vous pouvez réessayer depuis la page Facturation, \
                 avec une autre carte si besoin.\n"
            ),
        )
    } else {
        let what = failure.invoice_number.map_or_else(
            || "your account credit".to_owned(),
            |n| format!("invoice {n}"),
        );
        let reason = failure
            .reason
            .map(|r| format!("Your bank's reason: {r}\n\n"))
            .unwrap_or_default();
        (
            "Your payment failed".to_owned(),
            format!(
                "Hello {name},\n\nYour payment of {amount} for {what} did not go through.\n\n{reason}\
                 Nothing was charged. You can try again from the Billing page, with another card \
                 if need be.\n"
            ),
        )
    };
    Email {
        to: to.to_owned(),
        subject,
        body_text,
    }
}

/// What a notice says, in one language: the in-app title and body, and the
/// email's subject and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoticeTexts {
    pub title: String,
    pub body: String,
    pub subject: String,
    pub email_body: String,
}

fn day(at: DateTime<Utc>, french: bool) -> String {
    if french {
        at.format("%d/%m/%Y à %H:%M UTC").to_string()
    } else {
        at.format("%Y-%m-%d at %H:%M UTC").to_string()
    }
}

/// The texts of `notice` for a user named `name` who reads `locale`.
pub fn notice(notice: &Notice, name: &str, locale: &str) -> NoticeTexts {
    let fr = french(locale);
    let (title, body) = match notice {
        Notice::InstanceReady {
            name: instance,
            ssh_command,
            ..
        } => {
            let reach = ssh_command.as_deref().map_or_else(String::new, |command| {
                if fr {
                    format!(" Connectez-vous avec : {command}")
                } else {
                    format!(" Connect with: {command}")
                }
            });
            if fr {
                (
                    format!("{instance} est prête"),
                    format!("Votre instance {instance} fonctionne.{reach}"),
                )
            } else {
                (
                    format!("{instance} is ready"),
                    format!("Your instance {instance} is running.{reach}"),
                )
            }
        }
        Notice::InstanceFailed {
            name: instance,
            reason,
            ..
        } => {
            if fr {
                (
                    format!("La création de {instance} a échoué"),
                    format!(
                        "Votre instance {instance} n'a pas pu être créée : {reason}. Vous pouvez \
                         relancer la création depuis la console ou contacter le support."
                    ),
                )
            } else {
                (
                    format!("{instance} could not be created"),
                    format!(
                        "Your instance {instance} could not be created: {reason}. You can retry \
                         from the console or contact support."
                    ),
                )
            }
        }
        Notice::InvoiceIssued {
            number,
            total_minor,
            currency,
            ..
        } => {
            let total = money(*total_minor, currency);
            if fr {
                (
                    format!("Facture {number}"),
                    format!("Votre facture {number} d'un montant de {total} est disponible."),
                )
            } else {
                (
                    format!("Invoice {number}"),
                    format!("Your invoice {number} for {total} is available."),
                )
            }
        }
        Notice::PaymentFailed {
            amount_minor,
            currency,
            reason,
            ..
        } => {
            let amount = money(*amount_minor, currency);
            if fr {
                (
                    "Échec du paiement".to_owned(),
                    format!(
                        "Le paiement de {amount} a échoué : {reason}. Mettez à jour votre moyen \
                         de paiement pour éviter la suspension de vos services."
                    ),
                )
            } else {
                (
                    "Payment failed".to_owned(),
                    format!(
                        "The payment of {amount} failed: {reason}. Update your payment method \
                         to keep your services running."
                    ),
                )
            }
        }
        Notice::SuspensionWarning {
            suspend_at,
            amount_due_minor,
            currency,
        } => {
            let due = money(*amount_due_minor, currency);
            let when = day(*suspend_at, fr);
            if fr {
                (
                    "Suspension prochaine de votre compte".to_owned(),
                    format!(
                        "Votre compte présente un solde dû de {due}. Sans règlement, vos services \
                         seront suspendus le {when}."
                    ),
                )
            } else {
                (
                    "Your account will be suspended".to_owned(),
                    format!(
                        "Your account has {due} due. Unless it is paid, your services will be \
                         suspended on {when}."
                    ),
                )
            }
        }
        Notice::Suspended { reason } => {
            if fr {
                (
                    "Votre compte est suspendu".to_owned(),
                    format!(
                        "Vos services sont suspendus : {reason}. Contactez le support ou réglez \
                         le solde dû pour les rétablir."
                    ),
                )
            } else {
                (
                    "Your account is suspended".to_owned(),
                    format!(
                        "Your services are suspended: {reason}. Contact support or pay the \
                         amount due to restore them."
                    ),
                )
            }
        }
        Notice::TerminationWarning { terminate_at } => {
            let when = day(*terminate_at, fr);
            if fr {
                (
                    "Suppression prochaine de vos services".to_owned(),
                    format!(
                        "Vos services suspendus et leurs données seront supprimés définitivement \
                         le {when}, sauf règlement d'ici là."
                    ),
                )
            } else {
                (
                    "Your services will be terminated".to_owned(),
                    format!(
                        "Your suspended services and their data will be deleted for good on \
                         {when} unless the account is settled by then."
                    ),
                )
            }
        }
        Notice::TicketReply { subject, .. } => {
            if fr {
                (
                    format!("Nouvelle réponse : {subject}"),
                    format!("Une nouvelle réponse a été ajoutée au ticket « {subject} »."),
                )
            } else {
                (
                    format!("New reply: {subject}"),
                    format!("There is a new reply on the ticket \"{subject}\"."),
                )
            }
        }
    };
    let footer = match (notice.topic().is_mandatory(), fr) {
        (true, true) => "Ce message concerne votre compte et ne peut pas être désactivé.",
        (true, false) => "This message is about your account and cannot be turned off.",
        (false, true) => {
            "Vous pouvez désactiver ces emails dans les préférences de notification de votre compte."
        }
        (false, false) => {
            "You can turn these emails off in your account's notification preferences."
        }
    };
    let greeting = if fr { "Bonjour" } else { "Hello" };
    NoticeTexts {
        email_body: format!("{greeting} {name},\n\n{body}\n\n--\n{footer}\n"),
        subject: title.clone(),
        title,
        body,
    }
}

fn email(to: &str, subject: &str, body_text: String) -> Email {
    Email {
        to: to.to_owned(),
        subject: subject.to_owned(),
        body_text,
    }
}

/// Dunning's first reminder: `owed` is the overdue total, `suspend_on` the
/// day the instances are suspended unless it is paid.
pub fn invoice_overdue(
    to: &str,
    name: &str,
    locale: &str,
    numbers: &str,
    owed: &str,
    suspend_on: &str,
) -> Email {
    if french(locale) {
        email(
            to,
            "Facture impayée",
            format!(
                "Bonjour {name},\n\nLa date d'échéance de votre facture {numbers} est passée : \
                 {owed} restent dus.\n\nSans paiement, vos serveurs seront suspendus le \
                 {suspend_on}. Vous pouvez créditer votre compte ou payer la facture depuis la \
                 console.\n"
            ),
        )
    } else {
        email(
            to,
            "Your invoice is overdue",
            format!(
                "Hello {name},\n\nYour invoice {numbers} is past its due date: {owed} is \
                 still owed.\n\nUnless it is paid, your servers will be suspended on \
                 {suspend_on}. You can top up your account or pay the invoice from the \
                 console.\n"
            ),
        )
    }
}

pub fn services_suspended(
    to: &str,
    name: &str,
    locale: &str,
    owed: &str,
    terminate_on: &str,
) -> Email {
    if french(locale) {
        email(
            to,
            "Vos serveurs sont suspendus",
            format!(
                "Bonjour {name},\n\nVos factures en retard ({owed}) n'ont pas été payées : vos \
                 serveurs ont été arrêtés et suspendus. Leurs disques et adresses sont conservés.\n\n\
                 Dès le paiement, ils redémarrent automatiquement. Sans paiement, ils seront \
                 supprimés le {terminate_on}.\n"
            ),
        )
    } else {
        email(
            to,
            "Your servers are suspended",
            format!(
                "Hello {name},\n\nYour overdue invoices ({owed}) were not paid: your servers \
                 were stopped and suspended. Their disks and addresses are kept.\n\nThey start \
                 again by themselves once you pay. Unless you do, they will be deleted on \
                 {terminate_on}.\n"
            ),
        )
    }
}

pub fn termination_warning(
    to: &str,
    name: &str,
    locale: &str,
    owed: &str,
    terminate_on: &str,
) -> Email {
    if french(locale) {
        email(
            to,
            "Vos serveurs vont être supprimés",
            format!(
                "Bonjour {name},\n\nSans paiement de vos factures en retard ({owed}), vos \
                 serveurs suspendus et leurs disques seront définitivement supprimés le \
                 {terminate_on}.\n"
            ),
        )
    } else {
        email(
            to,
            "Your servers will be deleted",
            format!(
                "Hello {name},\n\nUnless your overdue invoices ({owed}) are paid, your \
                 suspended servers and their disks will be deleted for good on \
                 {terminate_on}.\n"
            ),
        )
    }
}

pub fn services_terminated(to: &str, name: &str, locale: &str, owed: &str) -> Email {
    if french(locale) {
        email(
            to,
            "Vos serveurs ont été supprimés",
            format!(
                "Bonjour {name},\n\nVos factures en retard n'ayant pas été payées, vos serveurs \
                 ont été supprimés. {owed} restent dus.\n"
            ),
        )
    } else {
        email(
            to,
            "Your servers were deleted",
            format!(
                "Hello {name},\n\nAs your overdue invoices were not paid, your servers were \
                 deleted. {owed} is still owed.\n"
            ),
        )
    }
}

pub fn services_restored(to: &str, name: &str, locale: &str) -> Email {
    if french(locale) {
        email(
            to,
            "Vos serveurs redémarrent",
            format!(
                "Bonjour {name},\n\nMerci pour votre paiement : vos factures sont réglées et vos \
                 serveurs suspendus redémarrent.\n"
            ),
        )
    } else {
        email(
            to,
            "Your servers are starting again",
            format!(
                "Hello {name},\n\nThank you for your payment: your invoices are settled and \
                 your suspended servers are starting again.\n"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::InstanceId;

    #[test]
    fn the_link_is_in_the_body_in_either_language() {
        for locale in ["en", "fr"] {
            let email = reset_password("a@example.org", "Ada", locale, "https://x/r?token=abc");
            assert!(email.body_text.contains("https://x/r?token=abc"));
            assert!(email.body_text.contains("Ada"));
        }
        assert_ne!(
            verify_email("a@example.org", "Ada", "fr", "l").subject,
            verify_email("a@example.org", "Ada", "en", "l").subject
        );
    }

    #[test]
    fn a_ticket_reply_quotes_the_reply_in_the_recipients_language() {
        let reply = TicketReply {
            ticket_subject: "Disk full",
            author_name: "Support",
            body: "Try `df -h`.",
            link: "https://x/tickets/1",
        };
        let en = ticket_reply("a@example.org", "Ada", "en", reply);
        let fr = ticket_reply("a@example.org", "Ada", "fr", reply);
        for email in [&en, &fr] {
            assert!(email.subject.contains("Disk full"));
            assert!(email.body_text.contains("Try `df -h`."));
            assert!(email.body_text.contains("https://x/tickets/1"));
        }
        assert!(fr.body_text.contains("a répondu"));
        assert!(en.body_text.contains("replied"));
    }

    #[test]
    fn notices_follow_the_locale_and_say_whether_they_can_be_turned_off() {
        let ready = Notice::InstanceReady {
            instance_id: InstanceId::new(),
            name: "web".to_owned(),
            ssh_command: Some("ssh root@203.0.113.9".to_owned()),
        };
        let en = notice(&ready, "Ada", "en");
        let fr = notice(&ready, "Ada", "fr");
        assert_eq!(en.title, "web is ready");
        assert_eq!(fr.title, "web est prête");
        assert!(en.email_body.starts_with("Hello Ada,"));
        assert!(fr.email_body.contains("ssh root@203.0.113.9"));
        assert!(en.email_body.contains("turn these emails off"));
        let suspended = notice(
            &Notice::Suspended {
                reason: "unpaid invoice".to_owned(),
            },
            "Ada",
            "en",
        );
        assert!(suspended.email_body.contains("cannot be turned off"));
    }

    #[test]
    fn a_failed_payment_names_the_amount_and_the_invoice_in_either_language() {
        let failure = PaymentFailure {
            amount: "12.34 EUR",
            invoice_number: Some("2026-000007"),
            reason: Some("card declined"),
        };
        for locale in ["en", "fr"] {
            let email = payment_failed("a@example.org", "Ada", locale, &failure);
            for part in ["12.34 EUR", "2026-000007", "card declined", "Ada"] {
                assert!(email.body_text.contains(part), "{locale}: {part}");
            }
        }
        assert_ne!(
            payment_failed("a@example.org", "Ada", "fr", &failure).subject,
            payment_failed("a@example.org", "Ada", "en", &failure).subject
        );
    }

    #[test]
    fn amounts_have_two_decimals_and_dunning_mails_carry_their_dates() {
        assert_eq!(money(1205, "EUR"), "12.05 EUR");
        assert_eq!(money(-7, "USD"), "-0.07 USD");
        for locale in ["en", "fr"] {
            let mail = invoice_overdue(
                "a@x",
                "Ada",
                locale,
                "2026-000001",
                "1.00 EUR",
                "2026-04-08",
            );
            assert!(
                mail.body_text.contains("2026-000001") && mail.body_text.contains("2026-04-08")
            );
            let mail = termination_warning("a@x", "Ada", locale, "1.00 EUR", "2026-04-19");
            assert!(mail.body_text.contains("2026-04-19") && mail.body_text.contains("1.00 EUR"));
        }
    }
}
