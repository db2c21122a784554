//! The decisions of two-factor authentication: enrol (start, confirm with a
//! first code), the second factor of a login, and turning it off.

use std::fmt;

use chrono::{DateTime, Utc};

use super::credentials::digests_equal;
use super::events::*;
use super::state::{Account, TwoFactor};
use super::totp::{check_totp, recovery_code_hash, TotpSecretPii, TOTP_SECRET_BYTES};
use super::{AccountError, Sha256Hash};
use crate::domain::codec::Personal;

/// What a caller presents besides the password. Debug never prints the code.
#[derive(Clone, PartialEq, Eq)]
pub enum SecondFactor {
    /// A code from the authenticator app.
    Totp(String),
    /// One of the recovery codes handed out when two-factor was turned on.
    RecoveryCode(String),
}

impl fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecondFactor::Totp(_) => "Totp(<redacted>)",
            SecondFactor::RecoveryCode(_) => "RecoveryCode(<redacted>)",
        })
    }
}

impl SecondFactor {
    /// A code as typed where either kind is taken: [`TOTP_DIGITS`] digits are
    /// a TOTP code, anything else is read as a recovery code.
    ///
    /// [`TOTP_DIGITS`]: super::TOTP_DIGITS
    pub fn from_code(code: &str) -> SecondFactor {
        let code = code.trim();
        if code.len() == super::TOTP_DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit()) {
            SecondFactor::Totp(code.to_owned())
        } else {
            SecondFactor::RecoveryCode(code.to_owned())
        }
    }
}

/// Starts an enrolment with a new secret (20 random bytes); it replaces any
/// pending one. Refused while two-factor is on: turn it off first.
pub fn decide_start_two_factor(
    state: &Account,
    secret: &[u8; TOTP_SECRET_BYTES],
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let account = state.enabled()?;
    if state.two_factor_on() {
        return Err(AccountError::TwoFactorAlreadyEnabled);
    }
    Ok(vec![AccountEvent::TwoFactorEnrolmentStarted(
        TwoFactorEnrolmentStarted {
            account,
            at: now,
            pii: Personal::Plain(TotpSecretPii {
                secret: secret.to_vec(),
            }),
        },
    )])
}

/// Turns two-factor on, given a right code of the pending secret; the recovery
/// codes (made by [`make_recovery_codes`]) are stored by their hashes.
///
/// [`make_recovery_codes`]: super::make_recovery_codes
pub fn decide_confirm_two_factor(
    state: &Account,
    code: &str,
    recovery_code_hashes: &[Sha256Hash],
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.enabled()?;
    let secret = match &state.two_factor {
        TwoFactor::Off => return Err(AccountError::TwoFactorNotPending),
        TwoFactor::On { .. } => return Err(AccountError::TwoFactorAlreadyEnabled),
        TwoFactor::Pending { secret, .. } => secret,
    };
    let secret = secret.plain().ok_or(AccountError::AccountErased)?;
    let step = check_totp(&secret.secret, code, now, state.last_totp_step)
        .ok_or(AccountError::TwoFactorCodeInvalid)?;
    Ok(vec![AccountEvent::TwoFactorEnabled(TwoFactorEnabled {
        at: now,
        step,
        recovery_code_hashes: recovery_code_hashes.to_vec(),
    })])
}

/// After the password was checked: the second factor of a login. Nothing to
/// record while two-factor is off (a code sent anyway is ignored). While it is
/// on: none is [`AccountError::TwoFactorRequired`]; a right TOTP code records
/// its step, a right recovery code records its use (each works once); anything
/// else is [`AccountError::TwoFactorCodeInvalid`].
pub fn decide_second_factor(
    state: &Account,
    factor: Option<&SecondFactor>,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    let TwoFactor::On {
        secret,
        recovery_codes,
        ..
    } = &state.two_factor
    else {
        return Ok(vec![]);
    };
    match factor.ok_or(AccountError::TwoFactorRequired)? {
        SecondFactor::Totp(code) => {
            let secret = secret.plain().ok_or(AccountError::AccountErased)?;
            let step = check_totp(&secret.secret, code, now, state.last_totp_step)
                .ok_or(AccountError::TwoFactorCodeInvalid)?;
            Ok(vec![AccountEvent::TwoFactorStepUsed(TwoFactorStepUsed {
                at: now,
                step,
            })])
        }
        SecondFactor::RecoveryCode(typed) => {
            let typed = recovery_code_hash(typed).ok_or(AccountError::TwoFactorCodeInvalid)?;
            let mut found = false;
            for code in recovery_codes {
                // Every stored hash is compared, in constant time each.
                found |= digests_equal(&code.hash, &typed) && code.used_at.is_none();
            }
            if !found {
                return Err(AccountError::TwoFactorCodeInvalid);
            }
            Ok(vec![AccountEvent::RecoveryCodeUsed(RecoveryCodeUsed {
                at: now,
                code_hash: typed,
            })])
        }
    }
}

/// Turns two-factor off, given a right code (TOTP or recovery); the service
/// checked the password. The code is spent like a login's.
pub fn decide_disable_two_factor(
    state: &Account,
    factor: &SecondFactor,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, AccountError> {
    state.enabled()?;
    if !state.two_factor_on() {
        return Err(AccountError::TwoFactorNotEnabled);
    }
    let mut events = decide_second_factor(state, Some(factor), now)?;
    events.push(AccountEvent::TwoFactorDisabled(TwoFactorDisabled {
        at: now,
    }));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::fixtures::*;
    use crate::domain::account::*;
    use crate::domain::aggregate::given;
    use chrono::Duration;

    const SECRET: [u8; TOTP_SECRET_BYTES] = *b"12345678901234567890";

    fn code_at(at: DateTime<Utc>) -> String {
        totp_code(&SECRET, totp_step(at).unwrap())
    }

    fn hashes() -> Vec<Sha256Hash> {
        let random = std::array::from_fn(|i| [i as u8; RECOVERY_CODE_BYTES]);
        make_recovery_codes(&random).1
    }

    fn first_recovery_code() -> String {
        let random = std::array::from_fn(|i| [i as u8; RECOVERY_CODE_BYTES]);
        make_recovery_codes(&random).0[0].expose().to_owned()
    }

    fn started() -> Vec<AccountEvent> {
        let mut events = verified();
        events.extend(
            decide_start_two_factor(
                &given::<Account>(events.clone()).state().clone(),
                &SECRET,
                t0(),
            )
            .unwrap(),
        );
        events
    }

    /// Two-factor on since t0, with the code of t0's step spent.
    fn enabled() -> Vec<AccountEvent> {
        let mut events = started();
        events.push(AccountEvent::TwoFactorEnabled(TwoFactorEnabled {
            at: t0(),
            step: totp_step(t0()).unwrap(),
            recovery_code_hashes: hashes(),
        }));
        events
    }

    fn later() -> DateTime<Utc> {
        t0() + Duration::minutes(5)
    }

    #[test]
    fn enrolment_seals_the_secret_and_waits_for_a_first_code() {
        let state = given::<Account>(verified())
            .when(|s| decide_start_two_factor(s, &SECRET, t0()))
            .then(vec![AccountEvent::TwoFactorEnrolmentStarted(
                TwoFactorEnrolmentStarted {
                    account: id(),
                    at: t0(),
                    pii: Personal::Plain(TotpSecretPii {
                        secret: SECRET.to_vec(),
                    }),
                },
            )]);
        assert!(!state.two_factor_on());
        assert!(!format!("{state:?}").contains("1234567890"));
        given::<Account>(enabled())
            .when(|s| decide_start_two_factor(s, &SECRET, t0()))
            .then_err(AccountError::TwoFactorAlreadyEnabled);
        let mut disabled = verified();
        disabled.push(deletion_requested(t0()));
        given::<Account>(disabled)
            .when(|s| decide_start_two_factor(s, &SECRET, t0()))
            .then_err(AccountError::AccountDisabled);
    }

    #[test]
    fn confirming_needs_a_right_code_of_the_pending_secret() {
        given::<Account>(started())
            .when(|s| decide_confirm_two_factor(s, "000000", &hashes(), t0()))
            .then_err(AccountError::TwoFactorCodeInvalid);
        given::<Account>(verified())
            .when(|s| decide_confirm_two_factor(s, &code_at(t0()), &hashes(), t0()))
            .then_err(AccountError::TwoFactorNotPending);
        given::<Account>(enabled())
            .when(|s| decide_confirm_two_factor(s, &code_at(later()), &hashes(), later()))
            .then_err(AccountError::TwoFactorAlreadyEnabled);
        let state = given::<Account>(started())
            .when(|s| decide_confirm_two_factor(s, &code_at(t0()), &hashes(), t0()))
            .then(vec![AccountEvent::TwoFactorEnabled(TwoFactorEnabled {
                at: t0(),
                step: totp_step(t0()).unwrap(),
                recovery_code_hashes: hashes(),
            })]);
        assert!(state.two_factor_on());
        assert_eq!(state.last_totp_step, totp_step(t0()));
    }

    #[test]
    fn a_login_needs_a_code_only_while_two_factor_is_on() {
        given::<Account>(verified())
            .when(|s| decide_second_factor(s, None, t0()))
            .then(vec![]);
        given::<Account>(started())
            .when(|s| decide_second_factor(s, None, t0()))
            .then(vec![]);
        given::<Account>(enabled())
            .when(|s| decide_second_factor(s, None, later()))
            .then_err(AccountError::TwoFactorRequired);
        let wrong = SecondFactor::Totp("000000".into());
        given::<Account>(enabled())
            .when(|s| decide_second_factor(s, Some(&wrong), later()))
            .then_err(AccountError::TwoFactorCodeInvalid);
        let right = SecondFactor::Totp(code_at(later()));
        let state = given::<Account>(enabled())
            .when(|s| decide_second_factor(s, Some(&right), later()))
            .then(vec![AccountEvent::TwoFactorStepUsed(TwoFactorStepUsed {
                at: later(),
                step: totp_step(later()).unwrap(),
            })]);
        assert_eq!(state.last_totp_step, totp_step(later()));
    }

    #[test]
    fn a_code_of_a_used_step_is_refused() {
        // The confirming code (t0's step) cannot sign in within the window.
        let replay = SecondFactor::Totp(code_at(t0()));
        given::<Account>(enabled())
            .when(|s| decide_second_factor(s, Some(&replay), t0() + Duration::seconds(20)))
            .then_err(AccountError::TwoFactorCodeInvalid);
        let right = SecondFactor::Totp(code_at(later()));
        let mut events = enabled();
        events.extend(
            decide_second_factor(
                &given::<Account>(events.clone()).state().clone(),
                Some(&right),
                later(),
            )
            .unwrap(),
        );
        given::<Account>(events.clone())
            .when(|s| decide_second_factor(s, Some(&right), later()))
            .then_err(AccountError::TwoFactorCodeInvalid);
        // Nor an earlier step's code, though still inside the ±1 window.
        let earlier = SecondFactor::Totp(code_at(later() - Duration::seconds(30)));
        given::<Account>(events)
            .when(|s| decide_second_factor(s, Some(&earlier), later()))
            .then_err(AccountError::TwoFactorCodeInvalid);
    }

    #[test]
    fn a_recovery_code_works_once() {
        let code = SecondFactor::RecoveryCode(first_recovery_code().to_lowercase());
        let mut events = enabled();
        let used = given::<Account>(events.clone())
            .when(|s| decide_second_factor(s, Some(&code), later()))
            .result()
            .unwrap();
        assert_eq!(
            used,
            vec![AccountEvent::RecoveryCodeUsed(RecoveryCodeUsed {
                at: later(),
                code_hash: hashes()[0],
            })]
        );
        events.extend(used);
        given::<Account>(events.clone())
            .when(|s| decide_second_factor(s, Some(&code), later()))
            .then_err(AccountError::TwoFactorCodeInvalid);
        let unknown = SecondFactor::RecoveryCode("ZZZZ-ZZZZ-ZZZZ-ZZZZ".into());
        given::<Account>(events)
            .when(|s| decide_second_factor(s, Some(&unknown), later()))
            .then_err(AccountError::TwoFactorCodeInvalid);
    }

    #[test]
    fn disabling_needs_a_right_code_and_spends_it() {
        given::<Account>(verified())
            .when(|s| decide_disable_two_factor(s, &SecondFactor::Totp("123456".into()), t0()))
            .then_err(AccountError::TwoFactorNotEnabled);
        given::<Account>(enabled())
            .when(|s| decide_disable_two_factor(s, &SecondFactor::Totp("000000".into()), later()))
            .then_err(AccountError::TwoFactorCodeInvalid);
        let right = SecondFactor::Totp(code_at(later()));
        let state = given::<Account>(enabled())
            .when(|s| decide_disable_two_factor(s, &right, later()))
            .then(vec![
                AccountEvent::TwoFactorStepUsed(TwoFactorStepUsed {
                    at: later(),
                    step: totp_step(later()).unwrap(),
                }),
                AccountEvent::TwoFactorDisabled(TwoFactorDisabled { at: later() }),
            ]);
        assert!(!state.two_factor_on());
        assert_eq!(state.two_factor, TwoFactor::Off);
        let recovery = SecondFactor::RecoveryCode(first_recovery_code());
        given::<Account>(enabled())
            .when(|s| decide_disable_two_factor(s, &recovery, later()))
            .result()
            .unwrap();
        assert_eq!(
            format!("{recovery:?} {right:?}"),
            "RecoveryCode(<redacted>) Totp(<redacted>)"
        );
        assert_eq!(
            SecondFactor::from_code(" 012345 "),
            SecondFactor::Totp("012345".into())
        );
        assert_eq!(
            SecondFactor::from_code("abcd-efgh-ijkl-mnop"),
            SecondFactor::RecoveryCode("abcd-efgh-ijkl-mnop".into())
        );
    }
}
