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
}
