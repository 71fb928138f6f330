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

/// A change to how the account signs in, told to its holder so that a change
/// they did not make is noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityChange {
    PasswordChanged,
    PasswordReset,
    TwoFactorEnabled,
    TwoFactorDisabled,
    RecoveryCodesReplaced,
}

pub fn security_alert(to: &str, name: &str, locale: &str, change: SecurityChange) -> Email {
    let french = french(locale);
    let what = match (change, french) {
        (SecurityChange::PasswordChanged, false) => "Your password was changed",
        (SecurityChange::PasswordChanged, true) => "Votre mot de passe a été modifié",
        (SecurityChange::PasswordReset, false) => "Your password was reset with an emailed link",
        (SecurityChange::PasswordReset, true) => {
            "Votre mot de passe a été réinitialisé par un lien envoyé par email"
        }
        (SecurityChange::TwoFactorEnabled, false) => "Two-factor authentication was turned on",
        (SecurityChange::TwoFactorEnabled, true) => {
            "L'authentification à deux facteurs a été activée"
        }
        (SecurityChange::TwoFactorDisabled, false) => "Two-factor authentication was turned off",
        (SecurityChange::TwoFactorDisabled, true) => {
            "L'authentification à deux facteurs a été désactivée"
        }
        (SecurityChange::RecoveryCodesReplaced, false) => "Your recovery codes were replaced",
        (SecurityChange::RecoveryCodesReplaced, true) => "Vos codes de secours ont été remplacés",
    };
    let (subject, body_text) = if french {
        (
            format!("Sécurité du compte : {}", what.to_lowercase()),
            format!(
                "Bonjour {name},\n\n{what}.\n\nSi c'est vous, il n'y a rien à faire. Sinon, \
                 réinitialisez votre mot de passe tout de suite et contactez le support.\n"
            ),
        )
    } else {
        (
            format!("Account security: {}", what.to_lowercase()),
            format!(
                "Hello {name},\n\n{what}.\n\nIf this was you, there is nothing to do. If not, \
                 reset your password now and contact support.\n"
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
            invoice_number,
            amount_minor,
            currency,
            reason,
            ..
        } => {
            let amount = money(*amount_minor, currency);
            if fr {
                let what = invoice_number.as_ref().map_or_else(
                    || "le crédit de votre compte".to_owned(),
                    |n| format!("la facture {n}"),
                );
                let reason = reason
                    .as_ref()
                    .map(|r| format!(" Motif donné par votre banque : {r}."))
                    .unwrap_or_default();
                (
                    "Votre paiement a échoué".to_owned(),
                    format!(
                        "Votre paiement de {amount} pour {what} n'a pas abouti.{reason} Rien ne \
                         vous a été débité. Vous pouvez réessayer depuis la page Facturation, \
                         avec une autre carte si besoin."
                    ),
                )
            } else {
                let what = invoice_number.as_ref().map_or_else(
                    || "your account credit".to_owned(),
                    |n| format!("invoice {n}"),
                );
                let reason = reason
                    .as_ref()
                    .map(|r| format!(" Your bank's reason: {r}."))
                    .unwrap_or_default();
                (
                    "Your payment failed".to_owned(),
                    format!(
                        "Your payment of {amount} for {what} did not go through.{reason} Nothing \
                         was charged. You can try again from the Billing page, with another card \
                         if need be."
                    ),
                )
            }
        }
        Notice::SuspensionWarning {
            invoices,
            owed,
            suspend_at,
            ..
        } => {
            let numbers = invoices.join(", ");
            let when = day(*suspend_at, fr);
            if fr {
                (
                    "Facture impayée".to_owned(),
                    format!(
                        "La date d'échéance de votre facture {numbers} est passée : {owed} \
                         restent dus. Sans paiement, vos serveurs seront suspendus le {when}. \
                         Vous pouvez créditer votre compte ou payer la facture depuis la console."
                    ),
                )
            } else {
                (
                    "Your invoice is overdue".to_owned(),
                    format!(
                        "Your invoice {numbers} is past its due date: {owed} is still owed. \
                         Unless it is paid, your servers will be suspended on {when}. You can \
                         top up your account or pay the invoice from the console."
                    ),
                )
            }
        }
        Notice::Suspended {
            owed, terminate_at, ..
        } => {
            let when = day(*terminate_at, fr);
            if fr {
                (
                    "Vos serveurs sont suspendus".to_owned(),
                    format!(
                        "Vos factures en retard ({owed}) n'ont pas été payées : vos serveurs ont \
                         été arrêtés et suspendus. Leurs disques et adresses sont conservés. Dès \
                         le paiement, ils redémarrent automatiquement. Sans paiement, ils seront \
                         supprimés le {when}."
                    ),
                )
            } else {
                (
                    "Your servers are suspended".to_owned(),
                    format!(
                        "Your overdue invoices ({owed}) were not paid: your servers were stopped \
                         and suspended. Their disks and addresses are kept. They start again by \
                         themselves once you pay. Unless you do, they will be deleted on {when}."
                    ),
                )
            }
        }
        Notice::TerminationWarning {
            owed, terminate_at, ..
        } => {
            let when = day(*terminate_at, fr);
            if fr {
                (
                    "Vos serveurs vont être supprimés".to_owned(),
                    format!(
                        "Sans paiement de vos factures en retard ({owed}), vos serveurs suspendus \
                         et leurs disques seront définitivement supprimés le {when}."
                    ),
                )
            } else {
                (
                    "Your servers will be deleted".to_owned(),
                    format!(
                        "Unless your overdue invoices ({owed}) are paid, your suspended servers \
                         and their disks will be deleted for good on {when}."
                    ),
                )
            }
        }
        Notice::Terminated { owed, .. } => {
            if fr {
                (
                    "Vos serveurs ont été supprimés".to_owned(),
                    format!(
                        "Vos factures en retard n'ayant pas été payées, vos serveurs ont été \
                         supprimés. {owed} restent dus."
                    ),
                )
            } else {
                (
                    "Your servers were deleted".to_owned(),
                    format!(
                        "As your overdue invoices were not paid, your servers were deleted. \
                         {owed} is still owed."
                    ),
                )
            }
        }
        Notice::Restored { .. } => {
            if fr {
                (
                    "Vos serveurs redémarrent".to_owned(),
                    "Merci pour votre paiement : vos factures sont réglées et vos serveurs \
                     suspendus redémarrent."
                        .to_owned(),
                )
            } else {
                (
                    "Your servers are starting again".to_owned(),
                    "Thank you for your payment: your invoices are settled and your suspended \
                     servers are starting again."
                        .to_owned(),
                )
            }
        }
        Notice::TicketReply {
            subject,
            author_name,
            ..
        } => {
            if fr {
                (
                    format!("Nouvelle réponse : {subject}"),
                    format!("{author_name} a répondu à la demande « {subject} »."),
                )
            } else {
                (
                    format!("New reply: {subject}"),
                    format!("{author_name} replied to the ticket \"{subject}\"."),
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
    // A reply is quoted in the email, with the way back to the ticket.
    let quoted = if let Notice::TicketReply { reply, url, .. } = notice {
        let open = if fr {
            "Pour répondre, ouvrez la demande :"
        } else {
            "To answer, open the ticket:"
        };
        format!("\n\n{reply}\n\n{open}\n\n{url}")
    } else {
        String::new()
    };
    NoticeTexts {
        email_body: format!("{greeting} {name},\n\n{body}{quoted}\n\n--\n{footer}\n"),
        subject: title.clone(),
        title,
        body,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::ids::{DunningCaseId, InstanceId, TicketId};

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
    fn a_ticket_reply_is_quoted_in_the_email_only() {
        let reply = Notice::TicketReply {
            ticket_id: TicketId::new(),
            subject: "Disk full".to_owned(),
            author_name: "Support".to_owned(),
            reply: "Try `df -h`.".to_owned(),
            url: "https://x/tickets/1".to_owned(),
        };
        let en = notice(&reply, "Ada", "en");
        let fr = notice(&reply, "Ada", "fr");
        for texts in [&en, &fr] {
            assert!(texts.subject.contains("Disk full"));
            assert!(texts.email_body.contains("Try `df -h`."));
            assert!(texts.email_body.contains("https://x/tickets/1"));
            assert!(!texts.body.contains("Try `df -h`."));
        }
        assert!(fr.body.contains("a répondu"));
        assert!(en.body.contains("replied"));
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
            &Notice::Restored {
                case_id: DunningCaseId::new(),
            },
            "Ada",
            "en",
        );
        assert!(suspended.email_body.contains("cannot be turned off"));
    }

    #[test]
    fn a_failed_payment_names_the_amount_and_the_invoice_in_either_language() {
        let failure = Notice::PaymentFailed {
            event: "evt_1".to_owned(),
            invoice_id: None,
            invoice_number: Some("2026-000007".to_owned()),
            amount_minor: 1234,
            currency: "EUR".to_owned(),
            reason: Some("card declined".to_owned()),
        };
        for locale in ["en", "fr"] {
            let texts = notice(&failure, "Ada", locale);
            for part in ["12.34 EUR", "2026-000007", "card declined", "Ada"] {
                assert!(texts.email_body.contains(part), "{locale}: {part}");
            }
        }
        assert_ne!(
            notice(&failure, "Ada", "fr").subject,
            notice(&failure, "Ada", "en").subject
        );
    }

    #[test]
    fn amounts_have_two_decimals_and_dunning_notices_carry_their_dates() {
        assert_eq!(money(1205, "EUR"), "12.05 EUR");
        assert_eq!(money(-7, "USD"), "-0.07 USD");
        let at = Utc
            .with_ymd_and_hms(2026, 4, 8, 10, 0, 0)
            .single()
            .expect("a date");
        let overdue = Notice::SuspensionWarning {
            case_id: DunningCaseId::new(),
            invoices: vec!["2026-000001".to_owned()],
            owed: "1.00 EUR".to_owned(),
            suspend_at: at,
        };
        let warning = Notice::TerminationWarning {
            case_id: DunningCaseId::new(),
            owed: "1.00 EUR".to_owned(),
            terminate_at: at,
        };
        assert!(notice(&overdue, "Ada", "en").body.contains("2026-04-08"));
        assert!(notice(&overdue, "Ada", "fr").body.contains("08/04/2026"));
        for locale in ["en", "fr"] {
            assert!(notice(&overdue, "Ada", locale).body.contains("2026-000001"));
            assert!(notice(&warning, "Ada", locale).body.contains("1.00 EUR"));
        }
    }
}
