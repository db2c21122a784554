//! Payments credited once, for what was paid: given an invoice, when the
//! gateway's reports come (in any order, re-sent, with or without their
//! transaction hash), then the wallet holds the greatest total reported per
//! gateway payment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::domain::aggregate::Aggregate;
use crate::domain::deposit::{DepositPaid, DepositPaidV1};
use crate::domain::ids::AccountId;
use crate::domain::wallet::{DepositOutcome, Payment};

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn owner() -> Owner {
    Owner::Account(AccountId(Uuid::from_u128(1)))
}

/// What a notification names its transaction by: its `payin_hash`, or, when
/// it has none, the gateway's payment id.
fn report(gateway_payment: &str, hash: Option<&str>, total_micros: i64) -> PaymentReport {
    let tx = Payment::new("btc", hash.unwrap_or(gateway_payment)).unwrap();
    PaymentReport::new(gateway_payment, tx, Micros(total_micros)).unwrap()
}

/// Every stream a payment decision reads, folded as the log would have them.
struct Given {
    id: DepositId,
    guards: BTreeMap<String, PaymentGuard>,
    deposit: Deposit,
    wallet: Wallet,
    credits: Vec<(Micros, DepositOutcome)>,
}

impl Given {
    /// An invoice of `invoice_micros`, nothing paid.
    fn invoice(invoice_micros: i64) -> Given {
        let id = DepositId(Uuid::from_u128(60));
        let events = deposit::request(
            &Deposit::default(),
            id,
            owner(),
            Micros(invoice_micros),
            t0(),
        )
        .unwrap();
        Given {
            id,
            guards: BTreeMap::new(),
            deposit: Deposit::from_events(&events),
            wallet: Wallet::default(),
            credits: Vec::new(),
        }
    }

    /// When the gateway reports `report`: decide, and apply what was decided.
    fn when(&mut self, report: &PaymentReport) -> PaymentDecision {
        let stream = report.transaction.stream().as_str().to_owned();
        let guard = self.guards.entry(stream).or_default();
        let decision =
            record_payment(guard, &self.deposit, &self.wallet, self.id, report, t0()).unwrap();
        if let PaymentDecision::Credit {
            guard: guard_events,
            deposit,
            wallet,
            ..
        } = &decision
        {
            guard_events.iter().for_each(|e| guard.apply(e));
            deposit.iter().for_each(|e| self.deposit.apply(e));
            for event in wallet {
                self.wallet.apply(event);
                if let WalletEvent::WalletDepositCredited(e) = event {
                    self.credits.push((e.entry.amount, e.outcome));
                }
            }
        }
        decision
    }

    fn credited(&self) -> Micros {
        self.wallet.available
    }
}

#[test]
fn partial_then_finished_then_finished_without_a_hash_twice_credits_what_was_paid() {
    // Given a $5.00 invoice,
    let mut given = Given::invoice(5_000_000);
    // when the gateway reports $2 paid (tx1), then $5 in all (tx2), then the
    // same `finished` again without its hash, twice,
    given.when(&report("5077125051", Some("tx1"), 2_000_000));
    given.when(&report("5077125051", Some("tx2"), 5_000_000));
    let resent = report("5077125051", None, 5_000_000);
    assert_eq!(given.when(&resent), PaymentDecision::AlreadyCredited);
    assert_eq!(given.when(&resent), PaymentDecision::AlreadyCredited);
    // then $5 is credited (it was $12): $2, then the $3 that completed it.
    assert_eq!(given.credited(), Micros(5_000_000));
    assert_eq!(
        given.credits,
        [
            (Micros(2_000_000), DepositOutcome::Partial),
            (Micros(3_000_000), DepositOutcome::Exact),
        ]
    );
    assert_eq!(given.deposit.paid, Micros(5_000_000));
}

#[test]
fn a_report_without_its_hash_first_and_with_it_later_credits_once() {
    let mut given = Given::invoice(7_000_000);
    given.when(&report("42", None, 7_000_000));
    assert_eq!(
        given.when(&report("42", Some("f00dfeed"), 7_000_000)),
        PaymentDecision::AlreadyCredited
    );
    assert_eq!(given.credited(), Micros(7_000_000));
}

#[test]
fn a_finished_reported_before_its_partial_credits_the_total_once() {
    let mut given = Given::invoice(5_000_000);
    given.when(&report("9", Some("tx2"), 5_000_000));
    assert_eq!(
        given.when(&report("9", Some("tx1"), 2_000_000)),
        PaymentDecision::AlreadyCredited
    );
    assert_eq!(given.credited(), Micros(5_000_000));
}

#[test]
fn an_over_payment_is_credited_in_full_and_two_gateway_payments_each_count() {
    let mut given = Given::invoice(5_000_000);
    given.when(&report("1", Some("a"), 3_000_000));
    given.when(&report("1", Some("a"), 6_500_000));
    // A second payment at the gateway for the same invoice: money that arrived.
    given.when(&report("2", Some("b"), 1_000_000));
    assert_eq!(given.credited(), Micros(7_500_000));
    assert_eq!(
        given.credits,
        [
            (Micros(3_000_000), DepositOutcome::Partial),
            (Micros(3_500_000), DepositOutcome::Over),
            (Micros(1_000_000), DepositOutcome::Partial),
        ]
    );
}

#[test]
fn a_transaction_credited_to_another_deposit_credits_nothing_here() {
    let mut given = Given::invoice(5_000_000);
    let tx = report("1", Some("shared"), 5_000_000);
    let elsewhere = PaymentRecorded {
        payment: tx.transaction.clone(),
        deposit: DepositId(Uuid::from_u128(61)),
        at: t0(),
    };
    given.guards.insert(
        tx.transaction.stream().as_str().to_owned(),
        PaymentGuard::from_events(&[PaymentEvent::PaymentRecorded(elsewhere)]),
    );
    assert_eq!(given.when(&tx), PaymentDecision::AlreadyCredited);
    assert_eq!(given.credited(), Micros::ZERO);
}

#[test]
fn credits_recorded_before_gateway_payments_were_told_apart_count_against_them() {
    // Given a credit of $5 written by schema version 1 (no gateway payment),
    let mut given = Given::invoice(5_000_000);
    let v1 = DepositPaidV1 {
        deposit: given.id,
        payment: Payment::new("btc", "5077125051").unwrap(),
        paid: Micros(5_000_000),
        at: t0(),
    };
    given
        .deposit
        .apply(&DepositEvent::DepositPaid(DepositPaid::from(v1)));
    // when the gateway re-sends the payment with its hash, or reports more,
    assert_eq!(
        given.when(&report("5077125051", Some("h"), 5_000_000)),
        PaymentDecision::AlreadyCredited
    );
    given.when(&report("5077125051", Some("h"), 6_000_000));
    // then only the increase is new money.
    assert_eq!(given.credited(), Micros(1_000_000));
}

/// One notification of a test sequence: which of the payment's successive
/// states it reports (a cumulative total and the hash of its last
/// transaction), and whether it carries the hash.
#[derive(Clone, Debug)]
struct Notification {
    state: usize,
    with_hash: bool,
}

/// A payment's successive states: totals that grow (the customer sends more),
/// each with a transaction hash (several may share one).
fn progression() -> impl Strategy<Value = Vec<(i64, u8)>> {
    proptest::collection::vec((1i64..4_000_000, 0u8..3), 1..5).prop_map(|steps| {
        let mut total = 0;
        steps
            .into_iter()
            .map(|(more, hash)| {
                total += more;
                (total, hash)
            })
            .collect()
    })
}

fn notifications(states: usize) -> impl Strategy<Value = Vec<Notification>> {
    proptest::collection::vec(
        (0..states, any::<bool>()).prop_map(|(state, with_hash)| Notification { state, with_hash }),
        0..12,
    )
}

proptest! {
    /// Whatever notifications of one payment come, in whatever order, however
    /// often, with or without their hash: credited == the greatest total
    /// reported (over-payments credited in full, as the rules say).
    #[test]
    fn credited_is_the_greatest_total_reported(
        (states, sent) in progression().prop_flat_map(|states| {
            let n = states.len();
            (Just(states), notifications(n))
        }),
        invoice_micros in 1i64..10_000_000,
    ) {
        let mut given = Given::invoice(invoice_micros);
        let mut greatest = 0;
        for notification in &sent {
            let (total, hash) = states[notification.state];
            let hash = format!("tx{hash}");
            let hash = notification.with_hash.then_some(hash.as_str());
            given.when(&report("5077125051", hash, total));
            greatest = greatest.max(total);
            prop_assert_eq!(given.credited(), Micros(greatest));
        }
        prop_assert_eq!(given.deposit.paid, Micros(greatest));
    }
}
