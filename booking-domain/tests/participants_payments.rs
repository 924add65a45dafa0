//! The payments participant through its public API on a real sled
//! database: authorize, capture, refund and void by key, tombstones, test
//! cards and their declines, card validation, and what it stores.

#[path = "participants_support/mod.rs"]
mod support;
use support::*;

#[tokio::test]
async fn authorize_capture_refund_twice_equal_once() {
    let (_dir, db) = temp_db();
    let pay: Arc<dyn Payments> = Arc::new(payments(&db));
    let a1 = pay
        .authorize("saga-1/pay", &auth("4242 4242 4242 4242", 22_620))
        .await
        .unwrap();
    let a2 = pay
        .authorize("saga-1/pay", &auth("4242-4242-4242-4242", 22_620))
        .await
        .unwrap();
    assert_eq!(a1, a2, "same key, same authorization");
    assert!(a1.authorization_id.starts_with("auth_"));
    assert_eq!(a1.status, PaymentStatus::Authorized);
    assert_eq!(a1.brand, CardBrand::Visa);
    assert_eq!(a1.last4, "4242");
    assert_eq!(pay.history("ada@example.com").await.unwrap().len(), 1);

    let c1 = pay.capture("saga-1/pay").await.unwrap();
    let c2 = pay.capture("saga-1/pay").await.unwrap();
    assert_eq!(c1, c2);
    assert_eq!(c1.status, PaymentStatus::Captured);
    assert_eq!(c1.authorization_id, a1.authorization_id);

    let r1 = pay.void_or_refund("saga-1/pay").await.unwrap();
    let r2 = pay.void_or_refund("saga-1/pay").await.unwrap();
    assert_eq!(r1, r2);
    assert!(matches!(&r1, VoidOutcome::Refunded(p) if p.status == PaymentStatus::Refunded));

    // After the refund a late authorize or capture does not apply.
    assert_eq!(
        pay.authorize("saga-1/pay", &auth("4242424242424242", 22_620))
            .await,
        Err(PaymentError::AlreadyCompensated {
            key: "saga-1/pay".into()
        })
    );
    assert_eq!(
        pay.capture("saga-1/pay").await,
        Err(PaymentError::AlreadyCompensated {
            key: "saga-1/pay".into()
        })
    );
    let history = pay.history("ADA@example.com").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, PaymentStatus::Refunded);
}

#[tokio::test]
async fn an_uncaptured_authorization_is_voided() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    pay.authorize("k", &auth("5555 5555 5555 4444", 1_000))
        .await
        .unwrap();
    let v1 = pay.void_or_refund("k").await.unwrap();
    let v2 = pay.void_or_refund("k").await.unwrap();
    assert_eq!(v1, v2);
    match v1 {
        VoidOutcome::Voided(p) => {
            assert_eq!(p.status, PaymentStatus::Voided);
            assert_eq!(p.brand, CardBrand::Mastercard);
            assert_eq!(p.last4, "4444");
        }
        other => panic!("expected a void, got {other:?}"),
    }
    assert!(pay.capture("k").await.unwrap_err().is_rejection());
}

#[tokio::test]
async fn void_before_authorize_leaves_a_tombstone_that_refuses_it() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    assert_eq!(pay.get("late").await.unwrap(), PaymentLookup::Unknown);
    assert_eq!(
        pay.void_or_refund("late").await.unwrap(),
        VoidOutcome::NothingToUndo
    );
    assert_eq!(
        pay.void_or_refund("late").await.unwrap(),
        VoidOutcome::NothingToUndo
    );
    assert_eq!(pay.get("late").await.unwrap(), PaymentLookup::Tombstone);
    let err = pay
        .authorize("late", &auth("4242424242424242", 5_000))
        .await
        .unwrap_err();
    assert_eq!(err, PaymentError::AlreadyCompensated { key: "late".into() });
    assert!(err.is_rejection());
    assert!(pay.history("ada@example.com").await.unwrap().is_empty());
    assert!(pay.all_payments().await.unwrap().is_empty());
    assert_eq!(
        pay.capture("never").await,
        Err(PaymentError::UnknownPayment {
            key: "never".into()
        })
    );
}

#[tokio::test]
async fn test_cards_decline_with_their_reasons() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    let expected = [
        ("4000 0000 0000 9995", DeclineReason::InsufficientFunds),
        ("4000 0000 0000 0002", DeclineReason::CardDeclined),
        ("4000 0000 0000 0069", DeclineReason::ExpiredCard),
    ];
    for (i, (number, reason)) in expected.iter().enumerate() {
        let key = format!("decline-{i}");
        // The expiry date is in the future: 0069 still declines as expired.
        let err = pay.authorize(&key, &auth(number, 1_000)).await.unwrap_err();
        assert_eq!(err, PaymentError::Declined { reason: *reason }, "{number}");
        assert!(err.is_rejection() && err.is_decline());
        // A retry gets the same answer, and no second record.
        assert_eq!(pay.authorize(&key, &auth(number, 1_000)).await, Err(err));
        assert_eq!(
            pay.capture(&key).await,
            Err(PaymentError::Declined { reason: *reason })
        );
        assert_eq!(
            pay.void_or_refund(&key).await.unwrap(),
            VoidOutcome::NothingToUndo
        );
        let rec = pay.get(&key).await.unwrap();
        assert!(
            matches!(&rec, PaymentLookup::Payment(p) if p.status == PaymentStatus::Declined && p.decline_reason == Some(*reason)),
            "{rec:?}"
        );
    }
    let history = pay.history("ada@example.com").await.unwrap();
    assert_eq!(history.len(), 3, "declines are in the history, once each");
    assert_eq!(history[0].key, "decline-0");
    assert_eq!(history[2].key, "decline-2");

    // The published list agrees with what the participant does.
    for (i, t) in TEST_CARDS.iter().enumerate() {
        let result = pay
            .authorize(&format!("listed-{i}"), &auth(t.number, 1_000))
            .await;
        match t.decline {
            None => {
                let p = result.unwrap();
                assert_eq!(p.brand, t.brand);
                let expected = if t.needs_confirmation {
                    PaymentStatus::RequiresConfirmation
                } else {
                    PaymentStatus::Authorized
                };
                assert_eq!(p.status, expected, "{}", t.number);
            }
            Some(reason) => assert_eq!(result, Err(PaymentError::Declined { reason })),
        }
    }
    let amex = TEST_CARDS
        .iter()
        .find(|t| t.brand == CardBrand::Amex)
        .unwrap();
    assert_eq!(amex.decline, None);
}

#[tokio::test]
async fn invalid_card_data_is_a_typed_validation_error_and_stores_nothing() {
    let (_dir, db) = temp_db();
    let pay = payments(&db);
    let cases: Vec<(CardDetails, CardProblem)> = vec![
        (card("4242 4242 4242 4241"), CardProblem::LuhnCheckFailed),
        (card("4242 4242 4242 424x"), CardProblem::NumberNotDigits),
        (
            card("4242 4242 42"),
            CardProblem::NumberLength { digits: 10 },
        ),
        (
            card("4242 4242 4242 4242 4242"),
            CardProblem::NumberLength { digits: 20 },
        ),
        (
            CardDetails {
                exp_month: 2,
                exp_year: 2026,
                ..card("4242424242424242")
            },
            CardProblem::Expired {
                month: 2,
                year: 2026,
            },
        ),
        (
            CardDetails {
                exp_month: 13,
                ..card("4242424242424242")
            },
            CardProblem::ExpiryMonth { month: 13 },
        ),
        (
            CardDetails {
                cvc: "12".into(),
                ..card("4242424242424242")
            },
            CardProblem::Cvc,
        ),
        (
            CardDetails {
                cvc: "12345".into(),
                ..card("4242424242424242")
            },
            CardProblem::Cvc,
        ),
        (
            CardDetails {
                cvc: "12a".into(),
                ..card("4242424242424242")
            },
            CardProblem::Cvc,
        ),
        (
            CardDetails {
                holder_name: "  ".into(),
                ..card("4242424242424242")
            },
            CardProblem::HolderName,
        ),
    ];
    for (i, (c, problem)) in cases.into_iter().enumerate() {
        let request = AuthorizeRequest {
            customer_email: "ada@example.com".into(),
            card: c,
            amount: usd(1_000),
        };
        let err = pay
            .authorize(&format!("bad-{i}"), &request)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            PaymentError::InvalidCard {
                problem: problem.clone()
            }
        );
        assert!(err.is_rejection() && !err.is_decline());
    }
    // The current month is still valid; 12 digits and a 3 digit CVC are fine.
    let this_month = AuthorizeRequest {
        card: CardDetails {
            exp_month: 3,
            exp_year: 2026,
            cvc: "123".into(),
            ..card("4242424242424242")
        },
        ..auth("", 1_000)
    };
    pay.authorize("ok-now", &this_month).await.unwrap();
    // Bad amounts and emails are refused too.
    assert!(matches!(
        pay.authorize("zero", &auth("4242424242424242", 0)).await,
        Err(PaymentError::InvalidRequest { .. })
    ));
    let mut bad_email = auth("4242424242424242", 100);
    bad_email.customer_email = "not-an-email".into();
    assert!(matches!(
        pay.authorize("email", &bad_email).await,
        Err(PaymentError::InvalidRequest { .. })
    ));
    // A key reused for a different payment is refused.
    assert_eq!(
        pay.authorize("ok-now", &auth("4242424242424242", 2_000))
            .await,
        Err(PaymentError::KeyReused {
            key: "ok-now".into()
        })
    );
    let all = pay.all_payments().await.unwrap();
    assert_eq!(all.len(), 1, "only the valid payment is stored");
}

fn files_under(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn only_brand_and_last_four_are_stored() {
    let (dir, db) = temp_db();
    let pay = payments(&db);
    let number = "5555 5555 5555 4444";
    let p = pay.authorize("k1", &auth(number, 12_300)).await.unwrap();
    pay.capture("k1").await.unwrap();
    let _ = pay.authorize("k2", &auth("4000-0000-0000-9995", 500)).await;
    assert_eq!((p.brand, p.last4.as_str()), (CardBrand::Mastercard, "4444"));

    let full_forms: [&[u8]; 4] = [
        b"5555555555554444",
        b"5555 5555 5555 4444",
        b"4000000000009995",
        b"4000-0000-0000-9995",
    ];
    // Every key and value of every tree.
    let mut tree_bytes = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            tree_bytes.extend_from_slice(&k);
            tree_bytes.push(b'\n');
            tree_bytes.extend_from_slice(&v);
            tree_bytes.push(b'\n');
        }
    }
    assert!(contains(&tree_bytes, b"\"last4\":\"4444\""));
    for form in full_forms {
        assert!(!contains(&tree_bytes, form), "full number stored");
    }
    assert!(!contains(&tree_bytes, b"9071"), "CVC stored");
    assert!(!contains(&tree_bytes, b"cvc"), "a CVC field stored");

    // And the raw files sled wrote to disk.
    db.flush().unwrap();
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    assert!(
        files.iter().any(|f| contains(f, b"ada@example.com")),
        "the scan must see what sled stored"
    );
    for bytes in &files {
        for form in full_forms {
            assert!(!contains(bytes, form), "full number on disk");
        }
        assert!(!contains(bytes, b"\"9071\""), "CVC on disk");
    }
}

// ---------------------------------------------------------------- loyalty
