//! The cancellation saga on local participants: each step's effect, the fee
//! rule, asking twice, the refusals, and the compensation when the refund is
//! refused for good; plus the payments participant's refund on its own.

use async_trait::async_trait;
use booking_domain::booking_saga::{
    booking_definition, check_consistency, start_booking, BookingRecord, BookingRequest,
    BookingServices, BookingStatus, Passenger,
};
use booking_domain::cancellation::{
    cancellation_definition, record_of_saga, start_cancellation, CancelError, CancelRefusal,
    CancellationData, CANCELLATION_STEPS,
};
use booking_domain::catalog::{Catalog, Flight};
use booking_domain::inventory::{HoldLookup, HoldState};
use booking_domain::loyalty::{CreateAccount, EntryLookup, EntryState};
use booking_domain::payments::{
    AuthorizeRequest, CardDetails, LocalPayments, PaymentError, PaymentLookup, PaymentRecord,
    PaymentStatus, Payments, RefundRecord, RefundRequest, VoidOutcome,
};
use booking_domain::{Cabin, Money};
use chrono::{Datelike, Days, Duration, NaiveDate, Utc};
use saga_engine::{Engine, EventKind, MemoryStore, SagaId, SagaStatus};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Local payments whose refunds can be made to fail for good.
struct RefusingRefunds {
    inner: LocalPayments,
    refuse: AtomicBool,
}

#[async_trait]
impl Payments for RefusingRefunds {
    async fn authorize(
        &self,
        key: &str,
        r: &AuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        self.inner.authorize(key, r).await
    }
    async fn capture(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        self.inner.capture(key).await
    }
    async fn void_or_refund(&self, key: &str) -> Result<VoidOutcome, PaymentError> {
        self.inner.void_or_refund(key).await
    }
    async fn get(&self, key: &str) -> Result<PaymentLookup, PaymentError> {
        self.inner.get(key).await
    }
    async fn history(&self, email: &str) -> Result<Vec<PaymentRecord>, PaymentError> {
        self.inner.history(email).await
    }
    async fn all_payments(&self) -> Result<Vec<PaymentRecord>, PaymentError> {
        self.inner.all_payments().await
    }
    async fn tokenize(
        &self,
        key: &str,
        r: &booking_domain::payments::TokenizeRequest,
    ) -> Result<booking_domain::payments::CardToken, PaymentError> {
        self.inner.tokenize(key, r).await
    }
    async fn authorize_token(
        &self,
        key: &str,
        r: &booking_domain::payments::TokenAuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        self.inner.authorize_token(key, r).await
    }
    async fn confirm_authorization(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        self.inner.confirm_authorization(key).await
    }
    async fn forget_card(&self, token: &str) -> Result<(), PaymentError> {
        self.inner.forget_card(token).await
    }
    async fn cards_held(&self) -> Result<u64, PaymentError> {
        self.inner.cards_held().await
    }
    async fn refund(&self, key: &str, r: &RefundRequest) -> Result<RefundRecord, PaymentError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(PaymentError::InvalidRequest {
                reason: "the processor refuses refunds today".into(),
            });
        }
        self.inner.refund(key, r).await
    }
}

struct World {
    engine: Engine,
    services: BookingServices,
    payments: Arc<RefusingRefunds>,
    flight: Flight,
    date: NaiveDate,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default_dataset());
    let flight = catalog
        .flights()
        .into_iter()
        .find(|f| f.economy.is_some())
        .unwrap()
        .clone();
    let mut date = Utc::now().date_naive() + Days::new(7);
    while date.weekday() != flight.weekday {
        date = date + Days::new(1);
    }
    let mut services = BookingServices::local(&db, catalog).unwrap();
    let payments = Arc::new(RefusingRefunds {
        inner: LocalPayments::open(&db).unwrap(),
        refuse: AtomicBool::new(false),
    });
    services.payments = payments.clone();
    let engine = Engine::builder(MemoryStore::new())
        .register(booking_definition(&services))
        .register(cancellation_definition(&services))
        .open()
        .await
        .unwrap();
    World {
        engine,
        services,
        payments,
        flight,
        date,
        _dir: dir,
    }
}

impl World {
    async fn member(&self) -> String {
        let a = CreateAccount {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
        };
        let acct = self.services.loyalty.create_account("enroll", &a).await;
        acct.unwrap().id.0
    }

    fn request(&self, loyalty_id: Option<String>) -> BookingRequest {
        BookingRequest {
            hold: false,
            flight_id: self.flight.id.0.clone(),
            date: self.date,
            cabin: Cabin::Economy,
            passengers: vec![
                Passenger {
                    first_name: "Ada".into(),
                    last_name: "Lovelace".into(),
                    date_of_birth: None,
                },
                Passenger {
                    first_name: "Byron".into(),
                    last_name: "Lovelace".into(),
                    date_of_birth: None,
                },
            ],
            email: "ada@example.com".into(),
            loyalty_id,
            phone: None,
            card: CardDetails {
                number: "4242424242424242".into(),
                exp_month: 12,
                exp_year: Utc::now().year() as u32 + 3,
                cvc: "123".into(),
                holder_name: "Ada Lovelace".into(),
            },
            redeem_miles: 0,
            faults: BTreeMap::new(),
            return_flight_id: None,
            return_date: None,
        }
    }

    async fn seats_left(&self) -> u32 {
        let inv = &self.services.inventory;
        inv.seats_left(&self.flight.id, self.date, Cabin::Economy)
            .await
            .unwrap()
    }

    /// A confirmed booking (with miles when `member`).
    async fn booked(&self, member: bool, key: &str) -> BookingRecord {
        let loyalty = if member {
            Some(self.member().await)
        } else {
            None
        };
        let id = start_booking(&self.engine, &self.services, &self.request(loyalty), key)
            .await
            .unwrap();
        let rec = self.engine.wait(&id).await.unwrap();
        assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
        record_of_saga(&self.services, &id).unwrap()
    }

    async fn cancel(
        &self,
        b: &BookingRecord,
        at: chrono::DateTime<Utc>,
    ) -> (SagaId, CancellationData, SagaStatus) {
        let id = start_cancellation(&self.engine, &self.services, b, at)
            .await
            .unwrap();
        let rec = self.engine.wait(&id).await.unwrap();
        (id, rec.data_as().unwrap(), rec.status())
    }

    async fn steps(&self, id: &SagaId, compensated: bool) -> Vec<String> {
        let h = self.engine.history(id).await.unwrap();
        h.into_iter()
            .filter_map(|e| match e.kind {
                EventKind::StepSucceeded { step, .. } if !compensated => Some(step),
                EventKind::StepCompensated { step, .. } if compensated => Some(step),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_within_a_day_refunds_all_frees_the_seats_and_takes_back_the_miles() {
    let w = world().await;
    let before = w.seats_left().await;
    let b = w.booked(true, "b1").await;
    assert_eq!(w.seats_left().await, before - 2);
    let acct = w
        .services
        .loyalty
        .account(b.loyalty_id.as_ref().unwrap())
        .await
        .unwrap();
    assert!(acct.balance > 0);

    let (id, d, status) = w.cancel(&b, Utc::now()).await;
    assert_eq!(status, SagaStatus::Completed);
    assert_eq!(w.steps(&id, false).await, CANCELLATION_STEPS);
    assert_eq!(d.refund, b.total, "full refund within 24 hours");
    assert_eq!(d.fee.minor, 0);
    assert_eq!(d.seats_released, Some(2));
    assert_eq!(d.miles_reversed, Some(acct.balance));
    assert_eq!(w.seats_left().await, before, "seats are back on sale");
    let pay_key = format!("{}:authorize_payment", b.saga_id);
    match w.services.payments.get(&pay_key).await.unwrap() {
        PaymentLookup::Payment(p) => assert_eq!(p.status, PaymentStatus::Refunded),
        other => panic!("{other:?}"),
    }
    let refund_key = format!("{id}:refund_payment");
    match w.services.payments.get(&refund_key).await.unwrap() {
        PaymentLookup::Refund(r) => {
            assert_eq!(r.amount, b.total);
            assert_eq!(r.payment_key, pay_key);
        }
        other => panic!("{other:?}"),
    }
    let after = w.services.loyalty.account(&acct.id).await.unwrap();
    assert_eq!((after.balance, after.qualifying_miles), (0, 0));
    let award = w
        .services
        .loyalty
        .entry(&format!("{}:award_miles", b.saga_id))
        .await
        .unwrap();
    assert!(matches!(award, EntryLookup::Entry(e) if e.state == EntryState::Reversed));
    let rec = record_of_saga(&w.services, &b.saga_id).unwrap();
    assert_eq!(rec.status, BookingStatus::Cancelled);
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_day_the_fare_rule_fee_is_kept_in_integer_minor_units() {
    let w = world().await;
    let b = w.booked(false, "b1").await;
    let at = b.created_at + Duration::hours(25);
    let (id, d, status) = w.cancel(&b, at).await;
    assert_eq!(status, SagaStatus::Completed);
    let fee = b.total.minor * 20 / 100;
    assert_eq!(d.fee, Money::new(fee, b.total.currency.clone()));
    assert_eq!(d.refund.minor, b.total.minor - fee);
    assert_eq!(d.refund.minor + d.fee.minor, b.total.minor);
    match w
        .services
        .payments
        .get(&format!("{id}:refund_payment"))
        .await
        .unwrap()
    {
        PaymentLookup::Refund(r) => assert_eq!(r.amount, d.refund),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.miles_reversed, None,
        "no loyalty account, no miles touched"
    );
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_twice_cancels_once_and_a_cancelled_booking_is_refused() {
    let w = world().await;
    let before = w.seats_left().await;
    let b = w.booked(true, "b1").await;
    let now = Utc::now();
    let (first, second) = tokio::join!(
        start_cancellation(&w.engine, &w.services, &b, now),
        start_cancellation(&w.engine, &w.services, &b, now + Duration::seconds(1)),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second, "two requests, one cancellation");
    assert_eq!(
        w.engine.wait(&first).await.unwrap().status(),
        SagaStatus::Completed
    );
    // Asked again once done: the same cancellation, nothing new.
    let again = start_cancellation(&w.engine, &w.services, &b, Utc::now())
        .await
        .unwrap();
    assert_eq!(again, first);
    let cancellations = w.engine.list(None, 100).await.unwrap();
    assert_eq!(
        cancellations
            .iter()
            .filter(|r| r.definition == "cancellation")
            .count(),
        1
    );
    assert_eq!(
        w.seats_left().await,
        before,
        "seats released once, not twice"
    );
    // The record as it is now is refused by the check.
    let now_cancelled = record_of_saga(&w.services, &b.saga_id).unwrap();
    let err =
        booking_domain::cancellation::check_cancellable(&w.services, &now_cancelled, Utc::now());
    assert_eq!(
        err,
        Err(CancelRefusal::AlreadyCancelled {
            reference: b.reference.clone()
        })
    );
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_flight_or_an_unconfirmed_booking_is_refused_with_its_reason() {
    let w = world().await;
    let b = w.booked(false, "b1").await;
    let departure = b.date.and_time(w.flight.departure).and_utc();
    let err = start_cancellation(&w.engine, &w.services, &b, departure + Duration::minutes(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CancelError::Refused(CancelRefusal::Departed { flight_no, departure: d }) if *flight_no == w.flight.flight_no && *d == departure),
        "{err:?}"
    );
    assert!(err.to_string().contains("departed"), "{err}");
    // A minute before departure it is still allowed.
    let ok = start_cancellation(&w.engine, &w.services, &b, departure - Duration::minutes(1)).await;
    assert!(ok.is_ok(), "{ok:?}");
    // A declined booking made no record: not confirmed.
    let mut req = w.request(None);
    req.card.number = "4000000000000002".into();
    let id = start_booking(&w.engine, &w.services, &req, "declined")
        .await
        .unwrap();
    assert_eq!(
        w.engine.wait(&id).await.unwrap().status(),
        SagaStatus::Compensated
    );
    let err = record_of_saga(&w.services, &id).unwrap_err();
    assert!(
        matches!(err, CancelError::Refused(CancelRefusal::NotConfirmed)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_refused_for_good_leaves_the_booking_as_it_was() {
    let w = world().await;
    let before = w.seats_left().await;
    let b = w.booked(true, "b1").await;
    let acct = w
        .services
        .loyalty
        .account(b.loyalty_id.as_ref().unwrap())
        .await
        .unwrap();
    w.payments.refuse.store(true, Ordering::SeqCst);
    let (id, _, status) = w.cancel(&b, Utc::now()).await;
    assert_eq!(status, SagaStatus::Compensated);
    assert_eq!(w.steps(&id, false).await, ["verify_booking"]);
    // A refused step made no effect and is not compensated; the one before it is.
    assert_eq!(w.steps(&id, true).await, ["verify_booking"]);
    let refund_key = format!("{id}:refund_payment");
    assert_eq!(
        w.services.payments.get(&refund_key).await.unwrap(),
        PaymentLookup::Unknown
    );
    // Nothing changed: confirmed, seats sold, payment captured, miles kept.
    assert_eq!(
        record_of_saga(&w.services, &b.saga_id).unwrap().status,
        BookingStatus::Confirmed
    );
    assert_eq!(w.seats_left().await, before - 2);
    let hold = w
        .services
        .inventory
        .hold_status(&format!("{}:reserve_seat", b.saga_id))
        .await
        .unwrap();
    assert!(matches!(hold, HoldLookup::Hold(h) if h.state == HoldState::Confirmed));
    match w
        .services
        .payments
        .get(&format!("{}:authorize_payment", b.saga_id))
        .await
        .unwrap()
    {
        PaymentLookup::Payment(p) => assert_eq!(p.status, PaymentStatus::Captured),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.services.loyalty.account(&acct.id).await.unwrap().balance,
        acct.balance
    );
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );
    // Asked again once the processor is back: a new attempt, which succeeds.
    w.payments.refuse.store(false, Ordering::SeqCst);
    let (again, d, status) = w.cancel(&b, Utc::now()).await;
    assert_ne!(again, id);
    assert_eq!(status, SagaStatus::Completed);
    assert_eq!(d.refund, b.total);
    assert_eq!(w.seats_left().await, before);
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payments_refund_gives_back_at_most_what_was_captured_once() {
    let w = world().await;
    let b = w.booked(false, "b1").await;
    let pay_key = format!("{}:authorize_payment", b.saga_id);
    let p = &w.services.payments;
    let req = |minor: i64| RefundRequest {
        payment_key: pay_key.clone(),
        amount: Money::new(minor, b.total.currency.clone()),
    };
    let over = p.refund("r1", &req(b.total.minor + 1)).await.unwrap_err();
    assert!(
        matches!(over, PaymentError::InvalidRequest { .. }),
        "{over:?}"
    );
    let zero = p.refund("r1", &req(0)).await.unwrap_err();
    assert!(
        matches!(zero, PaymentError::InvalidRequest { .. }),
        "{zero:?}"
    );
    let unknown = RefundRequest {
        payment_key: "nope".into(),
        amount: b.total.clone(),
    };
    assert!(matches!(
        p.refund("r1", &unknown).await,
        Err(PaymentError::UnknownPayment { .. })
    ));
    let first = p.refund("r1", &req(100)).await.unwrap();
    assert_eq!(
        p.refund("r1", &req(100)).await.unwrap(),
        first,
        "a replay returns the same refund"
    );
    assert!(matches!(
        p.refund("r1", &req(200)).await,
        Err(PaymentError::KeyReused { .. })
    ));
    let second = p.refund("r2", &req(100)).await.unwrap_err();
    assert!(
        matches!(second, PaymentError::AlreadyCompensated { .. }),
        "one refund per payment: {second:?}"
    );
    // A refund is not voidable, and is not listed as a payment.
    assert!(p.void_or_refund("r1").await.is_err());
    assert_eq!(p.all_payments().await.unwrap().len(), 1);
}

// ---------- pay with miles (the booking saga's redeem_miles step) ----------

impl World {
    /// A member with miles earned by a first booking: (account id, balance).
    async fn member_with_miles(&self) -> (String, u64) {
        let b = self.booked(true, "earn").await;
        let id = b.loyalty_id.unwrap();
        (
            id.0.clone(),
            self.services.loyalty.account(&id).await.unwrap().balance,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miles_pay_part_of_the_fare_the_card_pays_the_rest_and_the_tier_stays() {
    let w = world().await;
    let (acct, balance) = w.member_with_miles().await;
    let id = booking_domain::loyalty::AccountId(acct.clone());
    let before = w.services.loyalty.account(&id).await.unwrap();
    assert!(balance >= 500, "{balance}");
    let mut req = w.request(Some(acct.clone()));
    req.redeem_miles = 500;
    req.email = "ada@example.com".into();
    let booking = start_booking(&w.engine, &w.services, &req, "miles")
        .await
        .unwrap();
    let rec = w.engine.wait(&booking).await.unwrap();
    assert_eq!(rec.status(), SagaStatus::Completed, "{:?}", rec.state);
    let d: booking_domain::booking_saga::BookingData = rec.data_as().unwrap();
    // The shown price (the one pricing function) and the charge agree.
    let quoted = booking_domain::pricing::pay_with_miles(&d.price, 500).unwrap();
    assert_eq!(d.miles_payment.as_ref(), Some(&quoted));
    assert!(quoted.discount.minor > 0 && quoted.discount.minor <= d.price.base.minor);
    assert_eq!(
        quoted.charge.minor,
        d.price.total.minor - quoted.discount.minor
    );
    match w
        .services
        .payments
        .get(&format!("{booking}:authorize_payment"))
        .await
        .unwrap()
    {
        PaymentLookup::Payment(p) => assert_eq!(p.amount, quoted.charge, "card charged the rest"),
        other => panic!("{other:?}"),
    }
    let record = record_of_saga(&w.services, &booking).unwrap();
    assert_eq!(record.total, quoted.charge);
    let after = w.services.loyalty.account(&id).await.unwrap();
    let earned = d.miles_awarded.unwrap();
    assert_eq!(after.balance, before.balance - 500 + earned);
    assert_eq!(
        after.qualifying_miles,
        before.qualifying_miles + earned,
        "redemption never lowers qualifying miles"
    );
    assert!(after.tier >= before.tier);
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );

    // Cancelled: the card part is refunded, the miles come back.
    let (_, c, status) = w.cancel(&record, Utc::now()).await;
    assert_eq!(status, SagaStatus::Completed);
    assert_eq!(c.refund, quoted.charge);
    assert_eq!(c.miles_recredited, Some(500));
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_credits_the_redeemed_miles_back() {
    let w = world().await;
    let (acct, balance) = w.member_with_miles().await;
    let mut req = w.request(Some(acct.clone()));
    req.redeem_miles = 300;
    req.card.number = "4000000000000002".into();
    let id = start_booking(&w.engine, &w.services, &req, "declined")
        .await
        .unwrap();
    assert_eq!(
        w.engine.wait(&id).await.unwrap().status(),
        SagaStatus::Compensated
    );
    assert_eq!(
        w.steps(&id, true).await,
        ["redeem_miles", "reserve_return_seat", "reserve_seat"]
    );
    let acct = w
        .services
        .loyalty
        .account(&booking_domain::loyalty::AccountId(acct))
        .await
        .unwrap();
    assert_eq!(acct.balance, balance, "miles credited back");
    assert_eq!(
        check_consistency(&w.engine, &w.services).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redemptions_beyond_the_base_fare_the_balance_or_without_an_account_are_refused() {
    let w = world().await;
    let (acct, balance) = w.member_with_miles().await;
    let field_errors = |e: booking_domain::booking_saga::BookingError| match e {
        booking_domain::booking_saga::BookingError::Invalid(v) => v.0,
        other => panic!("{other:?}"),
    };
    let mut req = w.request(None);
    req.redeem_miles = 100;
    let errs = field_errors(
        start_booking(&w.engine, &w.services, &req, "n1")
            .await
            .unwrap_err(),
    );
    assert!(
        errs.iter()
            .any(|f| f.field == "redeem_miles" && f.message.contains("loyalty_id")),
        "{errs:?}"
    );
    let mut req = w.request(Some(acct.clone()));
    req.redeem_miles = balance + 1;
    let errs = field_errors(
        start_booking(&w.engine, &w.services, &req, "n2")
            .await
            .unwrap_err(),
    );
    assert!(
        errs.iter()
            .any(|f| f.field == "redeem_miles" && f.message.contains("has")),
        "{errs:?}"
    );
    // Over the base fare, checked by the pricing function itself.
    let price = booking_domain::pricing::price(w.flight.economy.as_ref().unwrap(), 2).unwrap();
    let over = booking_domain::pricing::pay_with_miles(&price, 100_000_000).unwrap_err();
    assert!(
        matches!(
            over,
            booking_domain::pricing::PricingError::RedemptionOverBase { .. }
        ),
        "{over:?}"
    );
    let booking_domain::pricing::PricingError::RedemptionOverBase { most_miles, .. } = over else {
        unreachable!()
    };
    assert!(
        booking_domain::pricing::pay_with_miles(&price, most_miles)
            .unwrap()
            .discount
            .minor
            <= price.base.minor
    );
    assert_eq!(
        w.engine.list(None, 100).await.unwrap().len(),
        1,
        "nothing started but the first booking"
    );
}
