//! Unit tests of [`super::LocalLoyalty`] and the loyalty rules.

use super::*;
use crate::types::Currency;

#[test]
fn tiers_follow_thresholds() {
    assert_eq!(Tier::for_qualifying_miles(0), Tier::Regular);
    assert_eq!(Tier::for_qualifying_miles(24_999), Tier::Regular);
    assert_eq!(Tier::for_qualifying_miles(25_000), Tier::Gold);
    assert_eq!(Tier::for_qualifying_miles(49_999), Tier::Gold);
    assert_eq!(Tier::for_qualifying_miles(50_000), Tier::Platinum);
    assert_eq!(Tier::for_qualifying_miles(75_000), Tier::PlatinumPro);
    assert_eq!(Tier::for_qualifying_miles(100_000), Tier::ExecutivePlatinum);
    assert_eq!(Tier::for_qualifying_miles(124_999), Tier::ExecutivePlatinum);
    assert_eq!(Tier::for_qualifying_miles(125_000), Tier::ConciergeKey);
    assert_eq!(Tier::for_qualifying_miles(u64::MAX), Tier::ConciergeKey);
    for t in Tier::ALL {
        assert_eq!(Tier::for_qualifying_miles(t.threshold()), t);
    }
}

#[test]
fn miles_per_tier() {
    // $100.00 = 500 base miles
    let expect = [500, 700, 800, 900, 1100, 1100];
    for (t, m) in Tier::ALL.iter().zip(expect) {
        assert_eq!(miles_for_usd_minor(10_000, *t), m, "{t}");
    }
    assert_eq!(miles_for_usd_minor(19, Tier::Regular), 0);
    assert_eq!(miles_for_usd_minor(20, Tier::Regular), 1);
    assert_eq!(miles_for_usd_minor(-500, Tier::Gold), 0);
    // INR 8300.00 = $100
    let usd = to_usd_minor(&Money::new(830_000, Currency::inr())).unwrap();
    assert_eq!(miles_for_usd_minor(usd, Tier::Regular), 500);
}

#[test]
fn reads_the_v1_record_format() {
    let raw = br#"{"v":1,"record":{"id":"12345678","first_name":"Ada","last_name":"L","email":"a@b.c","balance":5,"qualifying_miles":30000,"created_at":"2026-01-01T00:00:00Z"}}"#;
    // The first shape kept balances in the account record; they are now
    // derived from the entries, and the old fields are ignored.
    let acc: AccountRecord = decode(raw).unwrap();
    assert_eq!(acc.email, "a@b.c");
    assert_eq!(acc.create_key, None);
    let raw = br#"{"v":1,"record":{"id":"12345678","first_name":"Ada","last_name":"L","email":"a@b.c","created_at":"2026-01-01T00:00:00Z","create_key":"signup"}}"#;
    let acc: AccountRecord = decode(raw).unwrap();
    assert_eq!(acc.create_key.as_deref(), Some("signup"));
    let raw = br#"{"v":1,"record":{"entry":{"key":"k","account_id":"12345678","kind":{"award":{"amount":{"minor":100,"currency":"USD"},"usd_minor":100}},"miles":5,"tier":"platinum_pro","balance_after":5,"state":"applied","clamped_miles":0,"created_at":"2026-01-01T00:00:00Z","reversed_at":null}}}"#;
    assert!(
        matches!(decode::<EntryRecord>(raw).unwrap(), EntryRecord::Entry(e) if e.tier == Tier::PlatinumPro)
    );
    let raw = br#"{"v":1,"record":{"entry":{"key":"k","account_id":"1","kind":"redemption","miles":5,"tier":"regular","balance_after":0,"state":"reversed","clamped_miles":0,"created_at":"2026-01-01T00:00:00Z","reversed_at":"2026-01-02T00:00:00Z"}}}"#;
    assert!(
        matches!(decode::<EntryRecord>(raw).unwrap(), EntryRecord::Entry(e) if e.kind == EntryKind::Redemption)
    );
    assert!(decode::<EntryRecord>(br#"{"v":0,"record":null}"#).is_err());
}

fn entry(kind: EntryKind, miles: u64, state: EntryState, clamped_miles: u64) -> LoyaltyEntry {
    LoyaltyEntry {
        key: format!("{kind:?}{miles}{state:?}"),
        account_id: AccountId("12345678".into()),
        kind,
        miles,
        tier: Tier::Regular,
        balance_after: 0,
        state,
        clamped_miles,
        created_at: DateTime::<Utc>::default(),
        reversed_at: None,
    }
}

#[test]
fn counters_do_not_depend_on_the_order_of_entries() {
    let award = || EntryKind::Award {
        amount: Money::new(10_000, Currency::usd()),
        usd_minor: 10_000,
    };
    // Earn 500, spend 400, reverse the award (400 already spent stay),
    // earn 300, spend 100 and give that back.
    let entries = [
        entry(award(), 500, EntryState::Reversed, 400),
        entry(EntryKind::Redemption, 400, EntryState::Applied, 0),
        entry(award(), 300, EntryState::Applied, 0),
        entry(EntryKind::Redemption, 100, EntryState::Reversed, 0),
    ];
    let expected = (300, 300);
    for rotation in 0..entries.len() {
        let mut c = Counters::default();
        for e in entries.iter().cycle().skip(rotation).take(entries.len()) {
            c.add(e);
        }
        assert_eq!((c.balance(), c.qualifying_miles()), expected);
    }
    // Removing what was added leaves nothing.
    let mut c = Counters::default();
    entries.iter().for_each(|e| c.add(e));
    entries.iter().rev().for_each(|e| c.remove(e));
    assert_eq!(c, Counters::default());
}

#[test]
fn names_and_emails_are_checked() {
    assert_eq!(check_name("first name", "  Ada ").unwrap(), "Ada");
    assert!(check_name("first name", " ").is_err());
    assert!(check_name("first name", &"x".repeat(101)).is_err());
    assert!(normalize_email("x@y").is_ok());
    assert!(normalize_email("xy").is_err());
}
