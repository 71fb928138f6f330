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
}
