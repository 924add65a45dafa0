//! Unit tests of [`super`]: the checks of a date of birth and a phone, the
//! redaction of every type, and the seal.

use super::*;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn a_date_of_birth_is_a_real_day_from_1900_to_today() {
    let today = day(2026, 12, 1);
    let ok = |t: &str| DateOfBirth::parse(t, today).map(|d| d.iso());
    assert_eq!(ok("1815-12-10").unwrap_err(), PersonalError::DateTooEarly);
    assert_eq!(ok("1899-12-31").unwrap_err(), PersonalError::DateTooEarly);
    assert_eq!(ok("1900-01-01").unwrap(), "1900-01-01");
    assert_eq!(ok(" 1990-07-04 ").unwrap(), "1990-07-04");
    // 29 February: only in leap years (2000 was one, 1900 and 2023 not).
    assert_eq!(ok("2000-02-29").unwrap(), "2000-02-29");
    assert_eq!(ok("2024-02-29").unwrap(), "2024-02-29");
    assert_eq!(ok("2023-02-29").unwrap_err(), PersonalError::NoSuchDate);
    assert_eq!(ok("1900-02-29").unwrap_err(), PersonalError::NoSuchDate);
    assert_eq!(ok("1990-04-31").unwrap_err(), PersonalError::NoSuchDate);
    assert_eq!(ok("1990-13-01").unwrap_err(), PersonalError::NoSuchDate);
    assert_eq!(ok("1990-00-10").unwrap_err(), PersonalError::NoSuchDate);
    // Today is fine, tomorrow is not.
    assert_eq!(ok("2026-12-01").unwrap(), "2026-12-01");
    assert_eq!(ok("2026-12-02").unwrap_err(), PersonalError::DateInFuture);
    assert_eq!(ok("2100-01-01").unwrap_err(), PersonalError::DateInFuture);
    for bad in [
        "",
        "1990-7-4",
        "04/07/1990",
        "1990-07-04T00:00",
        "19900704",
        "+990-07-04",
        "1990-07-0x",
        "١٩٩٠-07-04",
    ] {
        assert_eq!(ok(bad).unwrap_err(), PersonalError::DateFormat, "{bad:?}");
    }
}

#[test]
fn a_phone_is_plus_and_8_to_15_digits_normalized() {
    let ok = |t: &str| Phone::parse(t).map(|p| p.e164().to_string());
    assert_eq!(ok("+44 20 7946 0958").unwrap(), "+442079460958");
    assert_eq!(ok(" +1-212-555-0100 ").unwrap(), "+12125550100");
    assert_eq!(ok("+12345678").unwrap(), "+12345678");
    assert_eq!(ok("+123456789012345").unwrap(), "+123456789012345");
    assert_eq!(
        ok("+1234567").unwrap_err(),
        PersonalError::PhoneLength { digits: 7 }
    );
    assert_eq!(
        ok("+1234567890123456").unwrap_err(),
        PersonalError::PhoneLength { digits: 16 }
    );
    assert_eq!(
        ok("+").unwrap_err(),
        PersonalError::PhoneLength { digits: 0 }
    );
    for bad in [
        "",
        "442079460958",
        "0044 20 7946 0958",
        "+44 (20) 7946 0958",
        "+44.20.7946.0958",
        "+0 20 7946 0958",
        "+44 20 7946 0958 ext 1",
        "++442079460958",
        "+4 4 2 0 7 9 4 6 0 9 5 8 1 1 1 1 1",
    ] {
        assert!(ok(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        ok("tel:+442079460958").unwrap_err(),
        PersonalError::PhoneFormat
    );
}

#[test]
fn nothing_here_prints_its_value() {
    let today = day(2026, 12, 1);
    let dob = DateOfBirth::parse("1990-07-04", today).unwrap();
    let phone = Phone::parse("+44 20 7946 0958").unwrap();
    assert_eq!(phone.masked(), "+•••••••••958");
    let details = PersonalDetails {
        dates_of_birth: vec![Some(dob), None],
        phone: Some(phone),
    };
    let vault = PersonalVault::ephemeral();
    let sealed = vault.seal(&details).unwrap();
    let shown = format!(
        "{dob:?} {details:?} {sealed:?} {:?} {vault:?}",
        PersonalText::new("+44 20 7946 0958")
    );
    for secret in ["1990", "07-04", "7946", "0958", "442079"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    // Nor do the errors.
    for e in [
        DateOfBirth::parse("2023-02-29", today).unwrap_err(),
        Phone::parse("+44 20 7946 0958 x").unwrap_err(),
    ] {
        assert!(!e.to_string().contains("7946") && !e.to_string().contains("2023"));
    }
    // A non-string input is refused without being quoted.
    let e = serde_json::from_str::<PersonalText>("19900704").unwrap_err();
    assert!(!e.to_string().contains("19900704"), "{e}");
    assert_eq!(
        serde_json::from_str::<PersonalText>("\"x\"")
            .unwrap()
            .as_str(),
        "x"
    );
}

#[test]
fn the_seal_opens_under_its_key_only_and_holds_nothing_in_clear() {
    let today = day(2026, 12, 1);
    let details = PersonalDetails {
        dates_of_birth: vec![Some(DateOfBirth::parse("1990-07-04", today).unwrap())],
        phone: Some(Phone::parse("+442079460958").unwrap()),
    };
    let vault = PersonalVault::ephemeral();
    let sealed = vault.seal(&details).unwrap();
    let stored = serde_json::to_string(&sealed).unwrap();
    for secret in ["1990", "442079460958", "date", "phone"] {
        assert!(!stored.contains(secret), "{secret} in {stored}");
    }
    assert_eq!(vault.open(&sealed).unwrap(), details);
    // Two seals of the same details differ (fresh nonce).
    assert_ne!(
        serde_json::to_string(&vault.seal(&details).unwrap()).unwrap(),
        stored
    );
    // Another key, or a flipped byte: an error, never other details.
    assert!(matches!(
        PersonalVault::ephemeral().open(&sealed),
        Err(PersonalError::Unreadable { .. })
    ));
    let mut v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let s = v["sealed"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", if s.starts_with('0') { "1" } else { "0" }, &s[1..]);
    v["sealed"] = serde_json::json!(flipped);
    let damaged: SealedPersonal = serde_json::from_value(v).unwrap();
    assert!(vault.open(&damaged).is_err());
}

#[cfg(unix)]
#[test]
fn the_key_file_sits_beside_the_card_vaults_and_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let details = PersonalDetails {
        dates_of_birth: vec![],
        phone: Some(Phone::parse("+442079460958").unwrap()),
    };
    let sealed = PersonalVault::load_or_create(dir.path())
        .unwrap()
        .seal(&details)
        .unwrap();
    let path = dir.path().join(PERSONAL_KEY_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Read back after a "restart": the same key opens it.
    let again = PersonalVault::load_or_create(dir.path()).unwrap();
    assert_eq!(again.open(&sealed).unwrap(), details);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(PersonalVault::load_or_create(dir.path()).is_err());
}
