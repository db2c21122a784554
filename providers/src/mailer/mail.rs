//! The transactional mails and their plain-text rendering.

use chrono::{DateTime, Utc};
use lettre::message::header::{self, ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{Address, Message};
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::money::Micros;

use super::redact::redact_address;
use super::MailError;

/// Days of notice a policy change needs (the published privacy policy).
pub const POLICY_NOTICE_DAYS: i64 = 14;

/// A recipient. Shown redacted by `Debug` and `Display` (`a***@example.com`);
/// the full address only through [`Recipient::address`].
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient(Address);

impl Recipient {
    pub fn parse(address: &str) -> Result<Recipient, MailError> {
        address
            .trim()
            .parse::<Address>()
            .map(Recipient)
            .map_err(|_| MailError::InvalidAddress)
    }

    /// The full address (for the envelope only; never for logs).
    pub fn address(&self) -> &str {
        self.0.as_ref()
    }

    pub fn redacted(&self) -> String {
        redact_address(self.0.as_ref())
    }
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient({})", self.redacted())
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The kinds of mail, for the failure report and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MailKind {
    Verification,
    DepositConfirmation,
    DeletionScheduled,
    DeletionDone,
    PolicyChange,
    PasswordReset,
    EmailChanged,
    RegistrationAttempt,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Verification => "verification",
            MailKind::DepositConfirmation => "deposit_confirmation",
            MailKind::DeletionScheduled => "deletion_scheduled",
            MailKind::DeletionDone => "deletion_done",
            MailKind::PolicyChange => "policy_change",
            MailKind::PasswordReset => "password_reset",
            MailKind::EmailChanged => "email_changed",
            MailKind::RegistrationAttempt => "registration_attempt",
        }
    }
}

impl std::fmt::Display for MailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transactional mail. `Debug` shows the kind and the redacted recipient only.
#[derive(Clone, PartialEq, Eq)]
pub enum Mail {
    /// Confirms an address: a link `<public_url>/verify?token=TOKEN` and the
    /// token on a line of its own.
    Verification {
        to: Recipient,
        token: String,
        expires_at: Option<DateTime<Utc>>,
    },
    /// A deposit was credited.
    DepositConfirmation {
        to: Recipient,
        deposit: DepositId,
        invoiced: Micros,
        credited: Micros,
        /// Paid after the invoice expired.
        late: bool,
        /// When the account's deletion is due, if one is pending: the credit
        /// moves to unclaimed balances then with the rest, and the mail says so.
        deletion_due_at: Option<DateTime<Utc>>,
    },
    /// The account is disabled and will be deleted at `effective_at`; the
    /// wallet's `forfeit_balance` (available when the deletion was asked)
    /// moves to unclaimed balances then.
    DeletionScheduled {
        to: Recipient,
        effective_at: DateTime<Utc>,
        forfeit_balance: Micros,
    },
    /// The account's personal data is gone (sent before the address is).
    DeletionDone { to: Recipient },
    /// A policy change, announced at least [`POLICY_NOTICE_DAYS`] ahead.
    PolicyChange {
        to: Recipient,
        title: String,
        summary: String,
        effective_at: DateTime<Utc>,
        url: Option<String>,
    },
    /// A password reset: a link `<public_url>/password-reset?token=TOKEN` and
    /// the token on a line of its own, valid until `expires_at`, once.
    PasswordReset {
        to: Recipient,
        token: String,
        expires_at: DateTime<Utc>,
    },
    /// To the old address after an e-mail change: a link
    /// `<public_url>/email-undo?token=TOKEN` and the token on a line of its
    /// own, which undo the change until `expires_at`.
    EmailChanged {
        to: Recipient,
        token: String,
        expires_at: DateTime<Utc>,
    },
    /// To an account's address: someone tried to register with it.
    RegistrationAttempt { to: Recipient },
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("kind", &self.kind())
            .field("to", self.to())
            .finish_non_exhaustive()
    }
}

/// What every mail needs from the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailSettings {
    /// The sender, e.g. `Nexus <no-reply@nexus.example>`.
    pub from: String,
    /// The public root of the service; links are made under it.
    pub public_url: String,
    /// The service's name in subjects and signatures.
    pub service_name: String,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            from: "Nexus <no-reply@nexus.localhost>".into(),
            public_url: "http://127.0.0.1:8080".into(),
            service_name: "Nexus".into(),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One line of printable text: no control characters.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

fn minute(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The body of [`Mail::DeletionScheduled`] after the greeting: when the data
/// goes, what the balance becomes, and how to withdraw the request (the sender
/// takes no replies).
fn deletion_scheduled(
    settings: &MailSettings,
    effective_at: DateTime<Utc>,
    forfeit_balance: Micros,
) -> String {
    let service = one_line(&settings.service_name);
    let root = one_line(settings.public_url.trim_end_matches('/'));
    let (date, deadline) = (day(effective_at), minute(effective_at));
    let mut text = format!(
        "we received your request to delete your {service} account. The account is \
         disabled now, and its personal data will be deleted for good on {date}.\n\n"
    );
    if forfeit_balance.is_positive() {
        text.push_str(&format!(
            "Your wallet's balance of {forfeit_balance} USD is forfeited, as you confirmed: \
             when the account is deleted, it moves to unclaimed balances and can no longer \
             be spent. So does any payment that reaches the account before then.\n\n"
        ));
    }
    text.push_str(&format!(
        "To keep your account, withdraw the request before {deadline}: send \
         DELETE {root}/v1/me/deletion with your e-mail address and password as the JSON \
         body ({{\"email\": \"...\", \"password\": \"...\"}}), or from a session you \
         are still signed in with. The account then works again as before"
    ));
    text.push_str(if forfeit_balance.is_positive() {
        ", with its balance.\n\n"
    } else {
        ".\n\n"
    });
    text.push_str(
        "Transaction records are kept for 7 years, as the law requires, without your \
         personal data.\n\n\
         If you did not ask for this, withdraw the request as above at once, then change \
         your password. This address receives no replies.\n",
    );
    text
}

impl Mail {
    pub fn to(&self) -> &Recipient {
        match self {
            Mail::Verification { to, .. }
            | Mail::DepositConfirmation { to, .. }
            | Mail::DeletionScheduled { to, .. }
            | Mail::DeletionDone { to }
            | Mail::PolicyChange { to, .. }
            | Mail::PasswordReset { to, .. }
            | Mail::EmailChanged { to, .. }
            | Mail::RegistrationAttempt { to } => to,
        }
    }

    pub fn kind(&self) -> MailKind {
        match self {
            Mail::Verification { .. } => MailKind::Verification,
            Mail::DepositConfirmation { .. } => MailKind::DepositConfirmation,
            Mail::DeletionScheduled { .. } => MailKind::DeletionScheduled,
            Mail::DeletionDone { .. } => MailKind::DeletionDone,
            Mail::PolicyChange { .. } => MailKind::PolicyChange,
            Mail::PasswordReset { .. } => MailKind::PasswordReset,
            Mail::EmailChanged { .. } => MailKind::EmailChanged,
            Mail::RegistrationAttempt { .. } => MailKind::RegistrationAttempt,
        }
    }

    /// Secrets besides the address that must never reach a log.
    pub(crate) fn secret(&self) -> Option<&str> {
        match self {
            Mail::Verification { token, .. }
            | Mail::PasswordReset { token, .. }
            | Mail::EmailChanged { token, .. } => Some(token),
            _ => None,
        }
    }

    /// The link a mail that carries a token opens: the verification link, the
    /// password-reset link, the undo of an e-mail change.
    pub fn link(&self, settings: &MailSettings) -> Option<String> {
        let (path, token) = match self {
            Mail::Verification { token, .. } => ("verify", token),
            Mail::PasswordReset { token, .. } => ("password-reset", token),
            Mail::EmailChanged { token, .. } => ("email-undo", token),
            _ => return None,
        };
        Some(format!(
            "{}/{path}?token={}",
            settings.public_url.trim_end_matches('/'),
            query_escape(token)
        ))
    }

    /// The verification link, for a verification mail.
    pub fn verification_link(&self, settings: &MailSettings) -> Option<String> {
        match self {
            Mail::Verification { .. } => self.link(settings),
            _ => None,
        }
    }

    /// Checks what can be checked before queueing.
    pub(crate) fn validate(&self, now: DateTime<Utc>) -> Result<(), MailError> {
        match self {
            Mail::Verification { token, .. }
            | Mail::PasswordReset { token, .. }
            | Mail::EmailChanged { token, .. }
                if token.trim().is_empty() =>
            {
                Err(MailError::Render(format!(
                    "a {} mail needs a token",
                    self.kind()
                )))
            }
            Mail::PolicyChange { effective_at, .. }
                if *effective_at - now < chrono::Duration::days(POLICY_NOTICE_DAYS) =>
            {
                Err(MailError::NoticeTooShort)
            }
            _ => Ok(()),
        }
    }

    pub fn subject(&self, settings: &MailSettings) -> String {
        let service = one_line(&settings.service_name);
        match self {
            Mail::Verification { .. } => format!("Confirm your e-mail address for {service}"),
            Mail::DepositConfirmation { credited, .. } => {
                format!("{service}: deposit of {credited} USD credited")
            }
            Mail::DeletionScheduled { .. } => format!("{service}: your account will be deleted"),
            Mail::DeletionDone { .. } => format!("{service}: your account has been deleted"),
            Mail::PolicyChange {
                title,
                effective_at,
                ..
            } => format!(
                "{service}: {} (from {})",
                one_line(title),
                day(*effective_at)
            ),
            Mail::PasswordReset { .. } => format!("{service}: reset your password"),
            Mail::EmailChanged { .. } => {
                format!("{service}: the e-mail address of your account was changed")
            }
            Mail::RegistrationAttempt { .. } => {
                format!("{service}: someone tried to register with your address")
            }
        }
    }

    /// The plain-text body (LF line ends; the message has CRLF).
    pub fn body(&self, settings: &MailSettings) -> String {
        let service = one_line(&settings.service_name);
        let mut text = String::from("Hello,\n\n");
        match self {
            Mail::Verification {
                token, expires_at, ..
            } => {
                let link = self.verification_link(settings).unwrap_or_default();
                text.push_str(&format!(
                    "please confirm your e-mail address for {service} by opening this link:\n\n\
                     {link}\n\n\
                     or by entering this code:\n\n\
                     {token}\n\n"
                ));
                if let Some(at) = expires_at {
                    text.push_str(&format!("The code is valid until {}.\n", minute(*at)));
                }
                text.push_str(
                    "If you did not register, ignore this message: nothing happens \
                     without the confirmation.\n",
                );
            }
            Mail::DepositConfirmation {
                deposit,
                invoiced,
                credited,
                late,
                deletion_due_at,
                ..
            } => {
                text.push_str(&format!(
                    "we credited {credited} USD to your {service} wallet.\n\n\
                     Deposit:  {deposit}\n\
                     Invoiced: {invoiced} USD\n\
                     Credited: {credited} USD\n"
                ));
                match credited.cmp(invoiced) {
                    std::cmp::Ordering::Less => text.push_str(
                        "\nLess than the invoice arrived; all of it is credited. \
                         You can top up with a new deposit.\n",
                    ),
                    std::cmp::Ordering::Greater => {
                        text.push_str("\nMore than the invoice arrived; all of it is credited.\n")
                    }
                    std::cmp::Ordering::Equal => {}
                }
                if *late {
                    text.push_str(
                        "\nThe payment arrived after the invoice expired; it is credited \
                         all the same.\n",
                    );
                }
                if let Some(due) = deletion_due_at {
                    let root = one_line(settings.public_url.trim_end_matches('/'));
                    text.push_str(&format!(
                        "\nYour account's deletion is pending: on {} this money moves to \
                         unclaimed balances with the rest of your wallet and can no longer be \
                         spent. To keep it, withdraw the request before {}: send DELETE \
                         {root}/v1/me/deletion with your e-mail address and password as the \
                         JSON body, or from a session you are still signed in with.\n",
                        day(*due),
                        minute(*due)
                    ));
                }
            }
            Mail::DeletionScheduled {
                effective_at,
                forfeit_balance,
                ..
            } => text.push_str(&deletion_scheduled(
                settings,
                *effective_at,
                *forfeit_balance,
            )),
            Mail::DeletionDone { .. } => {
                text.push_str(&format!(
                    "your {service} account and its personal data have been deleted. \
                     This is the last message we send to this address.\n\n\
                     Transaction records are kept for 7 years, as the law requires, \
                     without your personal data.\n"
                ));
            }
            Mail::PolicyChange {
                title,
                summary,
                effective_at,
                url,
                ..
            } => {
                text.push_str(&format!(
                    "we are changing our terms: {}. The change takes effect on {}.\n\n\
                     {}\n",
                    one_line(title),
                    day(*effective_at),
                    summary.trim()
                ));
                if let Some(url) = url {
                    text.push_str(&format!("\nThe full text: {}\n", one_line(url)));
                }
            }
            Mail::PasswordReset {
                token, expires_at, ..
            } => {
                let link = self.link(settings).unwrap_or_default();
                text.push_str(&format!(
                    "someone asked to reset the password of your {service} account. To \
                     choose a new password, open this link:\n\n\
                     {link}\n\n\
                     or enter this code:\n\n\
                     {token}\n\n\
                     The code works once, until {}. Setting a new password signs out \
                     every session of the account.\n\n\
                     If you did not ask for this, ignore this message: your password \
                     stays as it is.\n",
                    minute(*expires_at)
                ));
            }
            Mail::EmailChanged {
                token, expires_at, ..
            } => {
                let link = self.link(settings).unwrap_or_default();
                text.push_str(&format!(
                    "the e-mail address of your {service} account was changed from this \
                     address to another one. If you made the change, there is nothing \
                     to do.\n\n\
                     If you did not, undo it by opening this link:\n\n\
                     {link}\n\n\
                     or by entering this code:\n\n\
                     {token}\n\n\
                     The code works once, until {}. Undoing sets this address back, \
                     asks you for a new password and signs out every session of the \
                     account.\n",
                    minute(*expires_at)
                ));
            }
            Mail::RegistrationAttempt { .. } => {
                text.push_str(&format!(
                    "someone tried to register a new {service} account with this address. \
                     It already belongs to your account, so nothing was created and \
                     nothing changed.\n\n\
                     If it was you, sign in, or reset your password if you forgot it. \
                     If it was not, you need not do anything.\n"
                ));
            }
        }
        text.push_str(&format!("\n-- \nThe {service} team\n"));
        text
    }

    /// The RFC 5322 message, with a random `Message-ID`.
    pub fn message(&self, settings: &MailSettings) -> Result<Message, MailError> {
        self.message_with_id(settings, &uuid::Uuid::new_v4().simple().to_string())
    }

    /// The RFC 5322 message whose `Message-ID` is `<local@sender's domain>`
    /// (`local`: letters, digits and hyphens; the mailer passes the mail id, so
    /// a mail sent again after a crash keeps its `Message-ID`).
    pub fn message_with_id(
        &self,
        settings: &MailSettings,
        local: &str,
    ) -> Result<Message, MailError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|_| MailError::Config("the sender address is not valid".into()))?;
        if local.is_empty()
            || !local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(MailError::Render(
                "a Message-ID part is letters, digits and hyphens".into(),
            ));
        }
        let message_id = format!("<{local}@{}>", from.email.domain());
        let body = self.body(settings);
        let builder = Message::builder()
            .from(from)
            .to(Mailbox::new(None, self.to().0.clone()))
            .subject(self.subject(settings))
            .message_id(Some(message_id))
            .header(header::MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN);
        // Plain ASCII lines up to RFC 5322's 998 octets go as 7bit, so links
        // stay whole and readable; anything else is encoded by lettre.
        let plain = body.is_ascii()
            && !body.bytes().any(|b| b == 0 || b == b'\r')
            && body.lines().all(|l| l.len() <= 998);
        let body = if plain {
            Body::dangerous_pre_encoded(
                body.replace('\n', "\r\n").into_bytes(),
                ContentTransferEncoding::SevenBit,
            )
        } else {
            Body::new(body)
        };
        builder
            .body(body)
            .map_err(|e| MailError::Render(e.to_string()))
    }
}

#[cfg(test)]
mod address_tests {
    use super::Recipient;
    use nexus_core::domain::account::Email;
    use proptest::prelude::*;

    proptest! {
        /// Registration and the mailer agree: an address an account can be
        /// opened with can be sent its verification mail.
        #[test]
        fn every_address_an_account_takes_can_be_mailed(
            raw in "[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~()<>\\[\\],;:\"é -]{1,12}@[a-zA-Z0-9.é_\\[\\]:-]{1,16}"
        ) {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert!(Recipient::parse(email.as_str()).is_ok(), "{:?}", email.as_str());
            }
        }
    }

    #[test]
    fn the_addresses_of_the_registration_table_can_be_mailed() {
        for raw in [
            "alice@example.com",
            "a.b+tag@sub.example.co.uk",
            "o'brien+x-y_z@mail-1.example.org",
            "ÉLodie@exämple.de",
        ] {
            let email = Email::parse(raw).unwrap();
            assert!(Recipient::parse(email.as_str()).is_ok(), "{raw}");
        }
    }
}

#[cfg(test)]
mod recovery_mail_tests {
    use super::*;
    use crate::mailer::MailId;

    const TOKEN: &str = "0190000000007000800000000000000a.vT0k3n_Q8s-2xYz9LmNoPqRsTuVwXyZ0123456";

    fn settings() -> MailSettings {
        MailSettings {
            public_url: "https://nexus.test/".into(),
            ..MailSettings::default()
        }
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    fn to() -> Recipient {
        Recipient::parse("alice@example.com").unwrap()
    }

    #[test]
    fn a_reset_and_an_undo_carry_their_link_and_their_token_on_a_line_of_its_own() {
        for (mail, link, subject) in [
            (
                Mail::PasswordReset {
                    to: to(),
                    token: TOKEN.into(),
                    expires_at: at(),
                },
                format!("https://nexus.test/password-reset?token={TOKEN}"),
                "Nexus: reset your password",
            ),
            (
                Mail::EmailChanged {
                    to: to(),
                    token: TOKEN.into(),
                    expires_at: at(),
                },
                format!("https://nexus.test/email-undo?token={TOKEN}"),
                "Nexus: the e-mail address of your account was changed",
            ),
        ] {
            let body = mail.body(&settings());
            let lines: Vec<&str> = body.lines().collect();
            assert!(lines.contains(&link.as_str()), "{body}");
            assert!(lines.contains(&TOKEN), "{body}");
            assert!(body.contains("2030-03-17 17:46 UTC"), "{body}");
            assert_eq!(mail.subject(&settings()), subject);
            assert_eq!(mail.link(&settings()), Some(link));
            assert_eq!(mail.secret(), Some(TOKEN));
            assert!(!format!("{mail:?}").contains(TOKEN));
            assert!(!format!("{mail:?}").contains("alice@"));
            mail.message(&settings()).unwrap();
        }
    }

    #[test]
    fn a_recovery_mail_needs_a_token() {
        let mail = Mail::PasswordReset {
            to: to(),
            token: " ".into(),
            expires_at: at(),
        };
        assert!(matches!(mail.validate(at()), Err(MailError::Render(_))));
    }

    #[test]
    fn the_notice_of_a_registration_attempt_names_no_secret_and_goes_once_an_hour() {
        let mail = Mail::RegistrationAttempt { to: to() };
        assert_eq!(mail.kind(), MailKind::RegistrationAttempt);
        assert_eq!(mail.secret(), None);
        assert_eq!(mail.link(&settings()), None);
        assert!(mail
            .body(&settings())
            .contains("someone tried to register a new Nexus account with this address"));
        let account = uuid::Uuid::from_u128(7);
        assert_eq!(
            MailId::for_registration_attempt(account, 10),
            MailId::for_registration_attempt(account, 10)
        );
        assert_ne!(
            MailId::for_registration_attempt(account, 10),
            MailId::for_registration_attempt(account, 11)
        );
    }
}

#[cfg(test)]
mod deletion_mail_tests {
    use super::*;

    fn settings() -> MailSettings {
        MailSettings {
            public_url: "https://nexus.test/".into(),
            ..MailSettings::default()
        }
    }

    fn scheduled(forfeit_micros: i64) -> Mail {
        Mail::DeletionScheduled {
            to: Recipient::parse("alice@example.com").unwrap(),
            // 2030-03-17 17:46 UTC
            effective_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            forfeit_balance: Micros(forfeit_micros),
        }
    }

    /// Every mail the service sends, with a balance where one can be named.
    fn every_mail() -> Vec<Mail> {
        let to = Recipient::parse("alice@example.com").unwrap();
        let at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let token = "0190000000007000800000000000000a.t0k3n".to_owned();
        vec![
            Mail::Verification {
                to: to.clone(),
                token: token.clone(),
                expires_at: Some(at),
            },
            Mail::DepositConfirmation {
                to: to.clone(),
                deposit: DepositId(uuid::Uuid::from_u128(1)),
                invoiced: Micros(10_000_000),
                credited: Micros(9_000_000),
                late: true,
                deletion_due_at: None,
            },
            Mail::DepositConfirmation {
                to: to.clone(),
                deposit: DepositId(uuid::Uuid::from_u128(2)),
                invoiced: Micros(5_000_000),
                credited: Micros(5_000_000),
                late: false,
                deletion_due_at: Some(at),
            },
            scheduled(9_610_000),
            scheduled(0),
            Mail::DeletionDone { to: to.clone() },
            Mail::PolicyChange {
                to: to.clone(),
                title: "New terms".into(),
                summary: "What changes.".into(),
                effective_at: at,
                url: None,
            },
            Mail::PasswordReset {
                to: to.clone(),
                token: token.clone(),
                expires_at: at,
            },
            Mail::EmailChanged {
                to: to.clone(),
                token,
                expires_at: at,
            },
            Mail::RegistrationAttempt { to },
        ]
    }

    /// Given a deletion pending, when a deposit is credited, then its mail
    /// says the money will move to unclaimed balances and how to keep it;
    /// without one, it says nothing of the kind.
    #[test]
    fn a_deposit_mail_while_a_deletion_is_pending_warns_of_the_forfeit() {
        let at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let deposit = |deletion_due_at| Mail::DepositConfirmation {
            to: Recipient::parse("alice@example.com").unwrap(),
            deposit: DepositId(uuid::Uuid::from_u128(2)),
            invoiced: Micros(5_000_000),
            credited: Micros(5_000_000),
            late: false,
            deletion_due_at,
        };
        let body = deposit(Some(at)).body(&settings());
        assert!(
            body.contains("deletion is pending: on 2030-03-17"),
            "{body}"
        );
        assert!(body.contains("moves to unclaimed balances"), "{body}");
        assert!(
            body.contains("withdraw the request before 2030-03-17 17:46 UTC"),
            "{body}"
        );
        assert!(body.contains("/v1/me/deletion"), "{body}");
        let plain = deposit(None).body(&settings());
        assert!(!plain.contains("unclaimed"), "{plain}");
    }

    #[test]
    fn the_deletion_mail_states_the_forfeited_balance_and_how_to_withdraw() {
        let body = scheduled(9_610_000).body(&settings());
        assert!(body.contains("deleted for good on 2030-03-17"), "{body}");
        assert!(
            body.contains("balance of 9.610000 USD is forfeited"),
            "{body}"
        );
        assert!(body.contains("moves to unclaimed balances"), "{body}");
        assert!(
            body.contains("withdraw the request before 2030-03-17 17:46 UTC"),
            "{body}"
        );
        assert!(
            body.contains("DELETE https://nexus.test/v1/me/deletion"),
            "{body}"
        );
        assert!(body.contains("with its balance"), "{body}");
        scheduled(9_610_000).message(&settings()).unwrap();
        // Nothing on the wallet: nothing said about a balance.
        let empty = scheduled(0).body(&settings());
        assert!(!empty.contains("USD"), "{empty}");
        assert!(!empty.contains("balance"), "{empty}");
        assert!(
            empty.contains("withdraw the request before 2030-03-17 17:46 UTC"),
            "{empty}"
        );
    }

    #[test]
    fn no_mail_asks_for_a_reply_from_the_no_reply_sender() {
        for mail in every_mail() {
            let body = mail.body(&settings()).to_lowercase();
            for words in ["reply to", "replying", "respond to this", "answer this"] {
                assert!(!body.contains(words), "{:?}: {body}", mail.kind());
            }
        }
    }
}
