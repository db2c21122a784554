//! The workload of the examples: many concurrent customers, each with a whole
//! history of realistic domain events (see `rebuild_bench.rs`), appended to a
//! real log one command at a time.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nexus_core::domain::account::{
    AccountEmailVerified, AccountEvent, AccountRegistered, AccountVerificationIssued, Email,
    EmailReservationEvent, EmailReserved, LookupKey, RegisteredPii,
};
use nexus_core::domain::anonymous::{AnonymousEvent, AnonymousOrderCreated, AnonymousOrderStarted};
use nexus_core::domain::codec::{DomainEvent, Personal};
use nexus_core::domain::deposit::{
    DepositEvent, DepositPaid, DepositRequested, GatewayPaymentId, PaymentEvent, PaymentRecorded,
};
use nexus_core::domain::ids::{AccountId, AnonymousId, DepositId, OrderId};
use nexus_core::domain::ledger::{Entry, LedgerAccount, Owner, Reason};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{
    CancelReason, Channel, CodePii, CountryCode, DeliveryChannel, OrderCancelled,
    OrderCodeDelivered, OrderCodeErased, OrderCodeReceived, OrderCompleted, OrderDetails,
    OrderEvent, OrderExpired, OrderNumberAssigned, OrderPlaced, PhonePii, ServiceCode,
};
use nexus_core::domain::wallet::{
    DepositOutcome, Payment, VoidReason, WalletCashbackCredited, WalletDepositCredited,
    WalletEvent, WalletHoldCaptured, WalletHoldPlaced, WalletHoldVoided,
};
use nexus_core::log::{
    AnyLog, AppendRequest, EventId, EventStore, ExpectedVersion, NewEvent, StreamName, StreamWrite,
};
use nexus_core::vault::Vault;

const SERVICES: [&str; 8] = ["tg", "wa", "go", "fb", "ig", "tw", "ds", "am"];
const COUNTRIES: [&str; 12] = [
    "DE", "US", "FR", "GB", "IN", "BR", "ID", "PL", "UA", "KZ", "NG", "VN",
];
const PROVIDERS: [&str; 4] = ["herosms", "pvapins", "proxnum", "smscode"];

/// A tiny deterministic random source (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One writer: a sequence of customers, each with their whole history.
pub struct Writer {
    pub log: Arc<AnyLog>,
    pub vault: Arc<Vault>,
    pub lookup: LookupKey,
    pub rng: Rng,
    pub now: DateTime<Utc>,
    pub written: Arc<AtomicU64>,
    pub target: u64,
}

type Write = (StreamName, Vec<NewEvent>);

impl Writer {
    fn encode<E: DomainEvent>(&self, stream: StreamName, events: &[E]) -> Write {
        let events = events
            .iter()
            .map(|e| e.to_new_event(EventId::new(), &self.vault).expect("encode"))
            .collect();
        (stream, events)
    }

    async fn append(&mut self, writes: Vec<Write>) {
        let count: usize = writes.iter().map(|w| w.1.len()).sum();
        let request = AppendRequest {
            writes: writes
                .into_iter()
                .map(|(stream, events)| StreamWrite {
                    stream,
                    expected: ExpectedVersion::Any,
                    events,
                })
                .collect(),
            ..AppendRequest::default()
        };
        self.log.append(request).await.expect("append");
        self.written.fetch_add(count as u64, Ordering::Relaxed);
        self.now += Duration::seconds(1 + self.rng.below(120) as i64);
    }

    fn done(&self) -> bool {
        self.written.load(Ordering::Relaxed) >= self.target
    }

    fn details(&mut self) -> OrderDetails {
        OrderDetails {
            service: ServiceCode::new(SERVICES[self.rng.below(8) as usize]).expect("service"),
            country: CountryCode::new(COUNTRIES[self.rng.below(12) as usize]).expect("country"),
            channel: if self.rng.below(10) == 0 {
                Channel::Voice
            } else {
                Channel::Sms
            },
        }
    }

    pub async fn run(mut self, first: u64, step: u64) {
        let mut n = first;
        while !self.done() {
            if n % 10 == 9 {
                self.anonymous().await;
            } else {
                self.customer(n).await;
            }
            n += step;
        }
    }

    async fn deposit(&mut self, owner: Owner, amount: i64) -> DepositId {
        let deposit = DepositId::new();
        let now = self.now;
        let requested = DepositEvent::DepositRequested(DepositRequested {
            deposit,
            owner,
            amount: Micros(amount),
            at: now,
            expires_at: now + Duration::minutes(60),
        });
        let write = self.encode(deposit.stream(), &[requested]);
        self.append(vec![write]).await;
        self.pay(owner, deposit, amount).await;
        deposit
    }

    async fn pay(&mut self, owner: Owner, deposit: DepositId, amount: i64) {
        let now = self.now;
        let payment =
            Payment::new("eth", &format!("0x{}", uuid::Uuid::new_v4().simple())).expect("payment");
        let reason = match owner {
            Owner::Account(_) => Reason::Deposit,
            Owner::Anonymous(_) => Reason::AnonymousPayment,
        };
        let entry = entry(
            LedgerAccount::CryptoClearing,
            LedgerAccount::Available(owner),
            amount,
            reason,
        );
        let writes = vec![
            self.encode(
                payment.stream(),
                &[PaymentEvent::PaymentRecorded(PaymentRecorded {
                    payment: payment.clone(),
                    deposit,
                    at: now,
                })],
            ),
            self.encode(
                deposit.stream(),
                &[DepositEvent::DepositPaid(DepositPaid {
                    deposit,
                    payment: payment.clone(),
                    paid: Micros(amount),
                    gateway_payment: Some(
                        GatewayPaymentId::new(&uuid::Uuid::new_v4().simple().to_string())
                            .expect("a gateway payment id"),
                    ),
                    at: now,
                })],
            ),
            self.encode(
                owner.wallet_stream(),
                &[WalletEvent::WalletDepositCredited(WalletDepositCredited {
                    deposit,
                    payment,
                    outcome: DepositOutcome::Exact,
                    entry,
                    late: false,
                    at: now,
                })],
            ),
        ];
        self.append(writes).await;
    }

    async fn customer(&mut self, n: u64) {
        let account = AccountId::new();
        let owner = Owner::Account(account);
        let now = self.now;
        let email = Email::parse(&format!("bench{n}@example.com")).expect("email");
        let registered = [
            AccountEvent::AccountRegistered(AccountRegistered {
                account,
                registered_at: now,
                pii: Personal::Plain(RegisteredPii {
                    email: email.as_str().to_owned(),
                    password_hash:
                        "$2b$12$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012".into(),
                }),
            }),
            AccountEvent::AccountVerificationIssued(AccountVerificationIssued {
                token_hash: [7; 32],
                issued_at: now,
                expires_at: now + Duration::hours(24),
            }),
        ];
        let reserved = [EmailReservationEvent::EmailReserved(EmailReserved {
            account,
            at: now,
        })];
        let writes = vec![
            self.encode(self.lookup.email_stream(&email), &reserved),
            self.encode(account.stream(), &registered),
        ];
        self.append(writes).await;
        let verified = [AccountEvent::AccountEmailVerified(AccountEmailVerified {
            token_hash: [7; 32],
            at: self.now,
        })];
        let write = self.encode(account.stream(), &verified);
        self.append(vec![write]).await;

        let mut available = 0i64;
        let orders = 5 + self.rng.below(20);
        for _ in 0..orders {
            if self.done() {
                return;
            }
            let price = 100_000 + 10_000 * self.rng.below(90) as i64;
            if available < price {
                let amount = 10_000_000 + 1_000_000 * self.rng.below(20) as i64;
                self.deposit(owner, amount).await;
                available += amount;
            }
            available -= price;
            if self.order(owner, price, None).await {
                available += price.percent(2);
            } else {
                available += price;
            }
        }
    }

    async fn anonymous(&mut self) {
        let anon = AnonymousId::new();
        let owner = Owner::Anonymous(anon);
        let invoice = DepositId::new();
        let price = 200_000 + 10_000 * self.rng.below(50) as i64;
        let now = self.now;
        let details = self.details();
        let writes = vec![
            self.encode(
                anon.stream(),
                &[AnonymousEvent::AnonymousOrderCreated(
                    AnonymousOrderCreated {
                        anon,
                        invoice,
                        price: Micros(price),
                        at: now,
                        details: Personal::Plain(details.clone()),
                    },
                )],
            ),
            self.encode(
                invoice.stream(),
                &[DepositEvent::DepositRequested(DepositRequested {
                    deposit: invoice,
                    owner,
                    amount: Micros(price),
                    at: now,
                    expires_at: now + Duration::minutes(60),
                })],
            ),
        ];
        self.append(writes).await;
        self.pay(owner, invoice, price).await;
        self.order(owner, price, Some((anon, details))).await;
    }

    /// One order's life; true if it was captured.
    async fn order(
        &mut self,
        owner: Owner,
        price: i64,
        anon: Option<(AnonymousId, OrderDetails)>,
    ) -> bool {
        let order = OrderId::new();
        let now = self.now;
        let hold = entry(
            LedgerAccount::Available(owner),
            LedgerAccount::Held(owner),
            price,
            Reason::Hold,
        );
        let details = match &anon {
            Some((_, details)) => details.clone(),
            None => self.details(),
        };
        let placed = OrderEvent::OrderPlaced(OrderPlaced {
            order,
            owner,
            price: Micros(price),
            placed_at: now,
            expires_at: now + Duration::minutes(20),
            details: Personal::Plain(details),
        });
        let mut writes = vec![
            self.encode(order.stream(), &[placed]),
            self.encode(
                owner.wallet_stream(),
                &[WalletEvent::WalletHoldPlaced(WalletHoldPlaced {
                    order,
                    entry: hold,
                    at: now,
                })],
            ),
        ];
        if let Some((anon, _)) = &anon {
            writes.push(self.encode(
                anon.stream(),
                &[AnonymousEvent::AnonymousOrderStarted(
                    AnonymousOrderStarted {
                        anon: *anon,
                        order,
                        at: now,
                    },
                )],
            ));
        }
        self.append(writes).await;

        let roll = self.rng.below(100);
        if roll < 10 {
            self.void(owner, order, price, CancelReason::NoNumbers)
                .await;
            return false;
        }
        let provider = PROVIDERS[self.rng.below(4) as usize];
        let cost = price * 6 / 10;
        let assigned = OrderEvent::OrderNumberAssigned(OrderNumberAssigned {
            order,
            owner,
            provider: provider.into(),
            provider_cost: Micros(cost),
            at: self.now,
            phone: Personal::Plain(PhonePii {
                phone: format!("49151{:08}", self.rng.below(100_000_000)),
                activation_id: format!("{}", self.rng.below(1 << 40)),
            }),
        });
        let write = self.encode(order.stream(), &[assigned]);
        self.append(vec![write]).await;
        if roll < 20 {
            self.void(owner, order, price, CancelReason::Customer).await;
            return false;
        }
        if roll < 28 {
            let expired = OrderEvent::OrderExpired(OrderExpired {
                order,
                at: self.now,
            });
            let void = self.void_event(owner, order, price, VoidReason::Expired);
            let writes = vec![
                self.encode(order.stream(), &[expired]),
                self.encode(owner.wallet_stream(), &[void]),
            ];
            self.append(writes).await;
            return false;
        }
        let code = OrderEvent::OrderCodeReceived(OrderCodeReceived {
            order,
            sequence: 1,
            at: self.now,
            code: Personal::Plain(CodePii {
                code: "123456".into(),
                text: "Your code is 123456".into(),
            }),
        });
        let write = self.encode(order.stream(), &[code]);
        self.append(vec![write]).await;
        let now = self.now;
        let mut wallet = vec![WalletEvent::WalletHoldCaptured(WalletHoldCaptured {
            order,
            entry: entry(
                LedgerAccount::Held(owner),
                LedgerAccount::Revenue,
                price,
                Reason::Capture,
            ),
            cost: Some(entry(
                LedgerAccount::ProviderCost,
                LedgerAccount::CryptoClearing,
                cost,
                Reason::ProviderCost,
            )),
            at: now,
        })];
        if matches!(owner, Owner::Account(_)) {
            wallet.push(WalletEvent::WalletCashbackCredited(
                WalletCashbackCredited {
                    order,
                    entry: entry(
                        LedgerAccount::CashbackExpense,
                        LedgerAccount::Available(owner),
                        price.percent(2),
                        Reason::Cashback,
                    ),
                    at: now,
                },
            ));
        }
        let delivered = OrderEvent::OrderCodeDelivered(OrderCodeDelivered {
            order,
            sequence: 1,
            via: DeliveryChannel::Api,
            at: now,
        });
        let writes = vec![
            self.encode(order.stream(), &[delivered]),
            self.encode(owner.wallet_stream(), &wallet),
        ];
        self.append(writes).await;
        let closing = [
            OrderEvent::OrderCompleted(OrderCompleted {
                order,
                automatic: false,
                at: self.now,
            }),
            OrderEvent::OrderCodeErased(OrderCodeErased {
                order,
                sequence: 1,
                at: self.now,
            }),
        ];
        let write = self.encode(order.stream(), &closing);
        self.append(vec![write]).await;
        true
    }

    fn void_event(
        &self,
        owner: Owner,
        order: OrderId,
        price: i64,
        reason: VoidReason,
    ) -> WalletEvent {
        WalletEvent::WalletHoldVoided(WalletHoldVoided {
            order,
            entry: entry(
                LedgerAccount::Held(owner),
                LedgerAccount::Available(owner),
                price,
                Reason::Void,
            ),
            reason,
            at: self.now,
        })
    }

    async fn void(&mut self, owner: Owner, order: OrderId, price: i64, reason: CancelReason) {
        let cancelled = OrderEvent::OrderCancelled(OrderCancelled {
            order,
            reason,
            at: self.now,
        });
        let void_reason = match reason {
            CancelReason::Customer => VoidReason::Cancelled,
            CancelReason::NoNumbers => VoidReason::NoNumbers,
        };
        let void = self.void_event(owner, order, price, void_reason);
        let writes = vec![
            self.encode(order.stream(), &[cancelled]),
            self.encode(owner.wallet_stream(), &[void]),
        ];
        self.append(writes).await;
    }
}

trait Percent {
    fn percent(self, p: i64) -> i64;
}

impl Percent for i64 {
    fn percent(self, p: i64) -> i64 {
        self * p / 100
    }
}

fn entry(debit: LedgerAccount, credit: LedgerAccount, amount: i64, reason: Reason) -> Entry {
    Entry::new(debit, credit, Micros(amount), reason).expect("a valid entry")
}
