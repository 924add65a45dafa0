//! The participant clients against a real role server on loopback: each
//! call, its idempotency, and errors that come back typed.

use super::*;
use crate::roles::{serve_role, Role};
use booking_domain::inventory::HoldState;
use booking_domain::loyalty::{EntryKind, EntryState};
use booking_domain::payments::{CardDetails, DeclineReason, PaymentStatus};
use booking_domain::Currency;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A role server on an ephemeral loopback port, stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start(role: Role) -> Server {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Self::start_on(role, db).await
    }

    async fn start_on(role: Role, db: sled::Db) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_role(role, listener, db, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A loopback URL nobody listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 5, 17).unwrap()
}

fn hold_request(seats: u32) -> HoldRequest {
    HoldRequest {
        flight: FlightId("AA100-3".into()),
        date: date(),
        cabin: Cabin::Economy,
        seats,
    }
}

fn card(number: &str) -> CardDetails {
    CardDetails {
        number: number.into(),
        exp_month: 12,
        exp_year: 2030,
        cvc: "123".into(),
        holder_name: "Ada Lovelace".into(),
    }
}

fn authorize_request(number: &str, minor: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        customer_email: "ada@example.com".into(),
        card: card(number),
        amount: Money::new(minor, Currency::usd()),
    }
}

#[test]
fn base_urls_are_checked() {
    assert!(HttpInventory::new("127.0.0.1:1").is_err(), "no scheme");
    assert!(HttpInventory::new("https://127.0.0.1:1").is_err());
    assert!(HttpInventory::new("http://").is_err());
    assert!(HttpInventory::new("http://h:1/?q=1").is_err());
    let c = HttpPayments::new("http://127.0.0.1:7001/").unwrap();
    assert_eq!(c.base_url(), "http://127.0.0.1:7001");
    let c = HttpLoyalty::new("http://localhost:7003/svc/").unwrap();
    assert_eq!(c.base_url(), "http://localhost:7003/svc");
}

#[tokio::test]
async fn inventory_round_trips_every_method() {
    let server = Server::start(Role::Inventory).await;
    let inv = HttpInventory::new(&server.url()).unwrap();
    let (flight, cabin) = (FlightId("AA100-3".into()), Cabin::Economy);

    let totals = inv.set_capacity(&flight, date(), cabin, 5).await.unwrap();
    assert_eq!(totals.capacity, 5);
    let key = "saga 1:reserve/seat?&%"; // survives the path and the header
    let hold = inv.hold(key, &hold_request(2)).await.unwrap();
    assert_eq!(
        (hold.key.as_str(), hold.seats, hold.state),
        (key, 2, HoldState::Held)
    );
    assert_eq!(inv.seats_left(&flight, date(), cabin).await.unwrap(), 3);
    assert_eq!(
        inv.hold_status(key).await.unwrap(),
        HoldLookup::Hold(hold.clone())
    );
    let confirmed = inv.confirm(key).await.unwrap();
    assert_eq!(confirmed.state, HoldState::Confirmed);
    let totals = inv.totals(&flight, date(), cabin).await.unwrap();
    assert_eq!((totals.capacity, totals.held, totals.confirmed), (5, 0, 2));
    assert_eq!(inv.all_holds().await.unwrap(), vec![confirmed.clone()]);
    let released = inv.release(key).await.unwrap();
    assert!(matches!(released, ReleaseOutcome::Released(h) if h.state == HoldState::Released));
    assert_eq!(inv.seats_left(&flight, date(), cabin).await.unwrap(), 5);
    assert_eq!(
        inv.release("never").await.unwrap(),
        ReleaseOutcome::NothingHeld
    );
    assert_eq!(
        inv.hold_status("never").await.unwrap(),
        HoldLookup::Tombstone
    );
    assert_eq!(inv.hold_status("other").await.unwrap(), HoldLookup::Unknown);
    server.stop().await;
}

#[tokio::test]
async fn payments_round_trip_every_method() {
    let server = Server::start(Role::Payments).await;
    let pay = HttpPayments::new(&server.url()).unwrap();

    let rec = pay
        .authorize("p1", &authorize_request("4242 4242 4242 4242", 12_345))
        .await
        .unwrap();
    assert_eq!(
        (rec.status, rec.last4.as_str()),
        (PaymentStatus::Authorized, "4242")
    );
    assert_eq!(rec.amount, Money::new(12_345, Currency::usd()));
    assert_eq!(
        pay.get("p1").await.unwrap(),
        PaymentLookup::Payment(rec.clone())
    );
    let captured = pay.capture("p1").await.unwrap();
    assert_eq!(captured.status, PaymentStatus::Captured);
    let history = pay.history("ADA@example.com").await.unwrap();
    assert_eq!(history, vec![captured.clone()]);
    assert_eq!(pay.all_payments().await.unwrap(), vec![captured]);
    let refunded = pay.void_or_refund("p1").await.unwrap();
    assert!(matches!(refunded, VoidOutcome::Refunded(r) if r.status == PaymentStatus::Refunded));
    assert_eq!(
        pay.void_or_refund("p2").await.unwrap(),
        VoidOutcome::NothingToUndo
    );
    assert_eq!(pay.get("p2").await.unwrap(), PaymentLookup::Tombstone);
    assert_eq!(pay.get("p3").await.unwrap(), PaymentLookup::Unknown);
    server.stop().await;
}

#[tokio::test]
async fn a_card_is_tokenized_and_authorized_by_token_over_http() {
    use booking_domain::payments::{TokenAuthorizeRequest, TokenizeRequest};
    let server = Server::start(Role::Payments).await;
    let pay = HttpPayments::new(&server.url()).unwrap();
    let request = TokenizeRequest {
        card: card("4242 4242 4242 4242"),
    };
    let token = pay.tokenize("card:1", &request).await.unwrap();
    assert!(token.token.starts_with("tok_"), "{token:?}");
    assert_eq!(token.last4, "4242");
    assert_eq!(pay.tokenize("card:1", &request).await.unwrap(), token);
    assert_eq!(pay.cards_held().await.unwrap(), 1);
    let by_token = TokenAuthorizeRequest {
        customer_email: "ada@example.com".into(),
        token: token.token.clone(),
        amount: Money::new(500, Currency::usd()),
    };
    let rec = pay.authorize_token("t1", &by_token).await.unwrap();
    assert_eq!(rec.status, PaymentStatus::Authorized);
    assert_eq!(pay.cards_held().await.unwrap(), 0, "forgotten once used");
    // A repeat is answered from the record; a new key finds no card.
    assert_eq!(pay.authorize_token("t1", &by_token).await.unwrap(), rec);
    assert_eq!(
        pay.authorize_token("t2", &by_token).await.unwrap_err(),
        PaymentError::UnknownToken
    );
    pay.forget_card("tok_never_issued").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn loyalty_round_trips_every_method() {
    let server = Server::start(Role::Loyalty).await;
    let loy = HttpLoyalty::new(&server.url()).unwrap();

    let request = CreateAccount {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada+miles@example.com".into(),
    };
    let acc = loy.create_account("c1", &request).await.unwrap();
    assert_eq!(loy.account(&acc.id).await.unwrap(), acc);
    assert_eq!(
        loy.account_by_email("ada+miles@example.com").await.unwrap(),
        Some(acc.clone())
    );
    assert_eq!(
        loy.account_by_email("nobody@example.com").await.unwrap(),
        None
    );

    let award = loy
        .award("a1", &acc.id, &Money::new(10_000, Currency::usd()))
        .await
        .unwrap();
    assert_eq!((award.miles, award.balance_after), (500, 500));
    let redeemed = loy.redeem("r1", &acc.id, 200).await.unwrap();
    assert_eq!(
        (redeemed.kind, redeemed.balance_after),
        (EntryKind::Redemption, 300)
    );
    assert_eq!(
        loy.entry("a1").await.unwrap(),
        EntryLookup::Entry(award.clone())
    );
    assert_eq!(loy.history(&acc.id).await.unwrap().len(), 2);
    let reversed = loy.reverse("r1").await.unwrap();
    assert!(matches!(reversed, ReverseOutcome::Reversed(e) if e.state == EntryState::Reversed));
    assert_eq!(loy.account(&acc.id).await.unwrap().balance, 500);
    assert_eq!(
        loy.reverse("x").await.unwrap(),
        ReverseOutcome::NothingToReverse
    );
    assert_eq!(loy.entry("x").await.unwrap(), EntryLookup::Tombstone);
    let all = loy.all_accounts().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].balance, all[0].qualifying_miles), (500, 500));
    server.stop().await;
}

#[tokio::test]
async fn the_same_key_twice_is_applied_once() {
    let inv_server = Server::start(Role::Inventory).await;
    let pay_server = Server::start(Role::Payments).await;
    let loy_server = Server::start(Role::Loyalty).await;
    let inv = HttpInventory::new(&inv_server.url()).unwrap();
    let pay = HttpPayments::new(&pay_server.url()).unwrap();
    let loy = HttpLoyalty::new(&loy_server.url()).unwrap();
    let flight = FlightId("AA100-3".into());

    let first = inv.hold("k", &hold_request(3)).await.unwrap();
    // Two clients, as after an orchestrator restart.
    let again = HttpInventory::new(&inv_server.url())
        .unwrap()
        .hold("k", &hold_request(3))
        .await
        .unwrap();
    assert_eq!(first, again);
    let totals = inv.totals(&flight, date(), Cabin::Economy).await.unwrap();
    assert_eq!(totals.held, 3, "seats taken once");

    let a = pay
        .authorize("k", &authorize_request("4242424242424242", 500))
        .await
        .unwrap();
    let b = pay
        .authorize("k", &authorize_request("4242424242424242", 500))
        .await
        .unwrap();
    assert_eq!(a.authorization_id, b.authorization_id);
    assert_eq!(pay.all_payments().await.unwrap().len(), 1);

    let acc = loy
        .create_account(
            "c",
            &CreateAccount {
                first_name: "Ada".into(),
                last_name: "L".into(),
                email: "a@example.com".into(),
            },
        )
        .await
        .unwrap();
    let usd = Money::new(10_000, Currency::usd());
    let e1 = loy.award("k", &acc.id, &usd).await.unwrap();
    let e2 = loy.award("k", &acc.id, &usd).await.unwrap();
    assert_eq!(e1, e2);
    assert_eq!(
        loy.account(&acc.id).await.unwrap().balance,
        500,
        "awarded once"
    );
    inv_server.stop().await;
    pay_server.stop().await;
    loy_server.stop().await;
}

#[tokio::test]
async fn a_rejection_stays_a_rejection() {
    let inv_server = Server::start(Role::Inventory).await;
    let pay_server = Server::start(Role::Payments).await;
    let loy_server = Server::start(Role::Loyalty).await;
    let inv = HttpInventory::new(&inv_server.url()).unwrap();
    let pay = HttpPayments::new(&pay_server.url()).unwrap();
    let loy = HttpLoyalty::new(&loy_server.url()).unwrap();

    inv.set_capacity(&FlightId("AA100-3".into()), date(), Cabin::Economy, 1)
        .await
        .unwrap();
    let e = inv.hold("k", &hold_request(2)).await.unwrap_err();
    assert_eq!(
        e,
        InventoryError::NotEnoughSeats {
            requested: 2,
            available: 1
        }
    );
    assert!(e.is_rejection());
    let e = inv.hold("k2", &hold_request(0)).await.unwrap_err();
    assert_eq!(e, InventoryError::InvalidSeats { seats: 0 });
    let e = inv.confirm("nope").await.unwrap_err();
    assert_eq!(e, InventoryError::UnknownHold { key: "nope".into() });

    let e = pay
        .authorize("d", &authorize_request("4000 0000 0000 0002", 100))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        PaymentError::Declined {
            reason: DeclineReason::CardDeclined
        }
    );
    assert!(e.is_rejection() && e.is_decline());
    let e = pay
        .authorize("bad", &authorize_request("4242 4242 4242 4241", 100))
        .await
        .unwrap_err();
    assert!(matches!(e, PaymentError::InvalidCard { .. }), "{e:?}");

    let e = loy
        .account(&AccountId("00000000".into()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        LoyaltyError::UnknownAccount {
            account_id: AccountId("00000000".into())
        }
    );
    assert!(e.is_rejection());

    // A client pointed at the wrong participant is refused, not retried.
    let wrong = HttpPayments::new(&inv_server.url()).unwrap();
    let e = wrong.capture("k").await.unwrap_err();
    assert!(
        matches!(&e, PaymentError::InvalidRequest { reason } if reason.contains("no route")),
        "{e:?}"
    );
    assert!(e.is_rejection());
    inv_server.stop().await;
    pay_server.stop().await;
    loy_server.stop().await;
}

#[tokio::test]
async fn a_dead_server_gives_a_retryable_error() {
    let url = dead_url();
    let e = HttpInventory::new(&url)
        .unwrap()
        .confirm("k")
        .await
        .unwrap_err();
    assert!(
        matches!(e, InventoryError::Unavailable { .. }) && e.is_retryable(),
        "{e:?}"
    );
    let e = HttpPayments::new(&url)
        .unwrap()
        .capture("k")
        .await
        .unwrap_err();
    assert!(
        matches!(e, PaymentError::Unavailable { .. }) && e.is_retryable(),
        "{e:?}"
    );
    let e = HttpLoyalty::new(&url)
        .unwrap()
        .reverse("k")
        .await
        .unwrap_err();
    assert!(
        matches!(e, LoyaltyError::Unavailable { .. }) && e.is_retryable(),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out_retryably() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold_open = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let inv = HttpInventory::new(&format!("http://{addr}"))
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let e = inv.release("k").await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold_open.abort();
}

#[tokio::test]
async fn a_restarted_server_is_reached_again_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let server = Server::start_on(Role::Inventory, db).await;
    let addr = server.addr;
    let inv = HttpInventory::new(&server.url()).unwrap();
    inv.hold("k", &hold_request(2)).await.unwrap();
    server.stop().await;

    let e = inv.confirm("k").await.unwrap_err();
    assert!(e.is_retryable(), "down: {e:?}");

    // Same port, same data: the pooled client finds it again.
    let db = sled::open(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_role(Role::Inventory, listener, db, async move {
        let _ = stopped.await;
    }));
    let hold = inv.confirm("k").await.unwrap();
    assert_eq!((hold.seats, hold.state), (2, HoldState::Confirmed));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
