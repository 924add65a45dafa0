//! The loyalty participant through its public API on a real sled
//! database: accounts once per key and email, award/redeem/reverse by key,
//! tombstones, clamped reversals, tiers and multipliers.

#[path = "participants_support/mod.rs"]
mod support;
use support::*;

#[tokio::test]
async fn accounts_are_created_once_per_key_and_email() {
    let (_dir, db) = temp_db();
    let loy: Arc<dyn Loyalty> = Arc::new(LocalLoyalty::open(&db).unwrap());
    let a1 = loy
        .create_account("signup-1", &member("grace@example.com"))
        .await
        .unwrap();
    let a2 = loy
        .create_account("signup-1", &member("grace@example.com"))
        .await
        .unwrap();
    assert_eq!(a1, a2);
    assert_eq!(a1.id.0.len(), 8);
    assert!(a1.id.0.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        (a1.balance, a1.qualifying_miles, a1.tier),
        (0, 0, Tier::Regular)
    );
    assert_eq!(loy.account(&a1.id).await.unwrap(), a1);
    assert_eq!(
        loy.account_by_email("GRACE@example.com").await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(
        loy.create_account("signup-2", &member("Grace@Example.com"))
            .await,
        Err(LoyaltyError::EmailInUse {
            account_id: a1.id.clone()
        })
    );
    let bad = CreateAccount {
        first_name: " ".into(),
        ..member("x@example.com")
    };
    assert!(matches!(
        loy.create_account("signup-3", &bad).await,
        Err(LoyaltyError::InvalidRequest { .. })
    ));
    assert_eq!(loy.all_accounts().await.unwrap(), vec![a1]);

    let nobody = AccountId("00000000".into());
    let err = loy.account(&nobody).await.unwrap_err();
    assert_eq!(
        err,
        LoyaltyError::UnknownAccount {
            account_id: nobody.clone()
        }
    );
    assert!(err.is_rejection());
    assert!(matches!(
        loy.award("a", &nobody, &usd(100)).await,
        Err(LoyaltyError::UnknownAccount { .. })
    ));
    assert!(matches!(
        loy.history(&nobody).await,
        Err(LoyaltyError::UnknownAccount { .. })
    ));
}

#[tokio::test]
async fn award_redeem_reverse_twice_equal_once() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();

    // $100.00 at Regular = 500 miles.
    let w1 = loy
        .award("saga-1/miles", &acc.id, &usd(10_000))
        .await
        .unwrap();
    let w2 = loy
        .award("saga-1/miles", &acc.id, &usd(10_000))
        .await
        .unwrap();
    assert_eq!(w1, w2);
    assert_eq!(w1.miles, 500);
    assert_eq!(w1.tier, Tier::Regular);
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (500, 500));

    let r1 = loy.redeem("spend-1", &acc.id, 200).await.unwrap();
    let r2 = loy.redeem("spend-1", &acc.id, 200).await.unwrap();
    assert_eq!(r1, r2);
    assert_eq!(r1.kind, EntryKind::Redemption);
    assert_eq!(r1.balance_after, 300);
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (300, 500));

    // Reversing the redemption gives the miles back, once.
    let x1 = loy.reverse("spend-1").await.unwrap();
    let x2 = loy.reverse("spend-1").await.unwrap();
    assert_eq!(x1, x2);
    assert!(matches!(&x1, ReverseOutcome::Reversed(e) if e.state == EntryState::Reversed));
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (500, 500));

    // Reversing the award takes its miles off both counters, once.
    let y1 = loy.reverse("saga-1/miles").await.unwrap();
    let y2 = loy.reverse("saga-1/miles").await.unwrap();
    assert_eq!(y1, y2);
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));

    // After their reversal, late replays do not apply.
    assert_eq!(
        loy.award("saga-1/miles", &acc.id, &usd(10_000)).await,
        Err(LoyaltyError::AlreadyCompensated {
            key: "saga-1/miles".into()
        })
    );
    assert_eq!(
        loy.redeem("spend-1", &acc.id, 200).await,
        Err(LoyaltyError::AlreadyCompensated {
            key: "spend-1".into()
        })
    );
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));

    let history = loy.history(&acc.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].key, "saga-1/miles");
    assert_eq!(history[1].key, "spend-1");
    assert!(history.iter().all(|e| e.state == EntryState::Reversed));
}

#[tokio::test]
async fn reverse_before_award_leaves_a_tombstone_that_refuses_it() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();
    assert_eq!(loy.entry("late").await.unwrap(), EntryLookup::Unknown);
    assert_eq!(
        loy.reverse("late").await.unwrap(),
        ReverseOutcome::NothingToReverse
    );
    assert_eq!(
        loy.reverse("late").await.unwrap(),
        ReverseOutcome::NothingToReverse
    );
    assert_eq!(loy.entry("late").await.unwrap(), EntryLookup::Tombstone);
    let err = loy.award("late", &acc.id, &usd(10_000)).await.unwrap_err();
    assert_eq!(err, LoyaltyError::AlreadyCompensated { key: "late".into() });
    assert!(err.is_rejection());
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));
    assert!(loy.history(&acc.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn reversing_a_spent_award_clamps_the_balance_and_records_it() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();
    loy.award("earn", &acc.id, &usd(10_000)).await.unwrap(); // 500
    loy.redeem("spend", &acc.id, 400).await.unwrap(); // balance 100
    match loy.reverse("earn").await.unwrap() {
        ReverseOutcome::Reversed(e) => assert_eq!(e.clamped_miles, 400),
        other => panic!("expected a reversal, got {other:?}"),
    }
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!((a.balance, a.qualifying_miles), (0, 0));
}

#[tokio::test]
async fn tiers_and_multipliers() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let expected = [
        (Tier::Regular, 0u64, 500u64),
        (Tier::Gold, 25_000, 700),
        (Tier::Platinum, 50_000, 800),
        (Tier::PlatinumPro, 75_000, 900),
        (Tier::ExecutivePlatinum, 100_000, 1_100),
        (Tier::ConciergeKey, 125_000, 1_100),
    ];
    for (i, (tier, threshold, miles_per_100_usd)) in expected.into_iter().enumerate() {
        assert_eq!(tier.threshold(), threshold);
        // Two members: one a mile short of the threshold, one exactly at it.
        // At Regular, 20 cents earn one mile.
        let short = loy
            .create_account(&format!("short-{i}"), &member(&format!("s{i}@example.com")))
            .await
            .unwrap();
        let at = loy
            .create_account(&format!("at-{i}"), &member(&format!("a{i}@example.com")))
            .await
            .unwrap();
        if threshold > 0 {
            let cents = i64::try_from(threshold).unwrap() * 20;
            let e = loy
                .award(&format!("short-{i}/earn"), &short.id, &usd(cents - 20))
                .await
                .unwrap();
            assert_eq!(e.miles, threshold - 1);
            let e = loy
                .award(&format!("at-{i}/earn"), &at.id, &usd(cents))
                .await
                .unwrap();
            assert_eq!(e.miles, threshold);
            let below = loy.account(&short.id).await.unwrap().tier;
            assert!(below < tier, "{below} should be below {tier}");
        }
        let a = loy.account(&at.id).await.unwrap();
        assert_eq!(a.tier, tier);
        // The next $100 earns at the new tier's multiplier.
        let e = loy
            .award(&format!("at-{i}/next"), &at.id, &usd(10_000))
            .await
            .unwrap();
        assert_eq!(e.tier, tier);
        assert_eq!(e.miles, miles_per_100_usd, "{tier}");
    }
    // Rupees earn at the fixed rate: INR 8,300.00 = $100 = 500 miles.
    let m = loy
        .create_account("inr", &member("inr@example.com"))
        .await
        .unwrap();
    let e = loy
        .award("inr/earn", &m.id, &Money::new(830_000, Currency::inr()))
        .await
        .unwrap();
    assert_eq!(e.miles, 500);
    assert!(matches!(
        loy.award("xyz", &m.id, &Money::new(100, Currency("XYZ".into())))
            .await,
        Err(LoyaltyError::InvalidAmount { .. })
    ));
    assert!(matches!(
        loy.award("neg", &m.id, &usd(-100)).await,
        Err(LoyaltyError::InvalidAmount { .. })
    ));
}

#[tokio::test]
async fn redeeming_never_lowers_a_tier() {
    let (_dir, db) = temp_db();
    let loy = LocalLoyalty::open(&db).unwrap();
    let acc = loy
        .create_account("signup", &member("g@example.com"))
        .await
        .unwrap();
    loy.award("earn", &acc.id, &usd(500_000)).await.unwrap(); // 25,000 miles
    assert_eq!(loy.account(&acc.id).await.unwrap().tier, Tier::Gold);

    let err = loy.redeem("too-much", &acc.id, 25_001).await.unwrap_err();
    assert_eq!(
        err,
        LoyaltyError::InsufficientMiles {
            balance: 25_000,
            requested: 25_001
        }
    );
    assert!(err.is_rejection());
    assert_eq!(
        loy.entry("too-much").await.unwrap(),
        EntryLookup::Refused { error: err.clone() }
    );
    // Remembered: the same key gets the same refusal even once the miles
    // are there; reversing it has nothing to undo.
    loy.award("earn-more", &acc.id, &usd(20)).await.unwrap(); // 1 mile
    assert_eq!(
        loy.redeem("too-much", &acc.id, 25_001).await,
        Err(err.clone())
    );
    assert_eq!(
        loy.reverse("too-much").await.unwrap(),
        ReverseOutcome::NothingToReverse
    );
    assert_eq!(
        loy.redeem("too-much", &acc.id, 5).await,
        Err(LoyaltyError::KeyReused {
            key: "too-much".into()
        })
    );
    loy.redeem("one", &acc.id, 1).await.unwrap();

    loy.redeem("all", &acc.id, 25_000).await.unwrap();
    let a = loy.account(&acc.id).await.unwrap();
    assert_eq!(a.balance, 0);
    assert_eq!(
        a.qualifying_miles, 25_001,
        "redeeming keeps qualifying miles"
    );
    assert_eq!(a.tier, Tier::Gold, "redeeming keeps the tier");
    assert!(matches!(
        loy.redeem("zero", &acc.id, 0).await,
        Err(LoyaltyError::InvalidRequest { .. })
    ));
    assert!(matches!(
        loy.redeem("more", &acc.id, 1).await,
        Err(LoyaltyError::InsufficientMiles { balance: 0, .. })
    ));
    // Reusing a key for a different request is refused.
    assert_eq!(
        loy.redeem("all", &acc.id, 10).await,
        Err(LoyaltyError::KeyReused { key: "all".into() })
    );
}

// ---------------------------------------------------------------- durability
