//! The texts of the platform's emails, in the recipient's language.

use crate::mail::Email;

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

/// An amount of minor units in a currency with two decimals: `-12.05 EUR`.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
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
