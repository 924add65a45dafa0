//! Damaged files: random bytes of a sled store are flipped, 200 times, and
//! every trial must end with all acknowledged data present or a clear
//! refusal naming the data directory. Zero panics, zero silent losses.
//!
//! sled 0.34 can open a damaged database "fine" with records missing; the
//! store's high-water mark (a mark inside sled plus a side file, compared
//! at open) is what turns that into a refusal.

use saga_engine::store::conformance::sample_record;
use saga_engine::{SagaEvent, SledStore, Store, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn sled_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            sled_files(&p, out);
        } else if p.file_name().unwrap() != saga_engine::store::HWM_FILE {
            let len = e.metadata().unwrap().len();
            if len > 0 {
                out.push((p, len));
            }
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Intact,
    Refused(String),
    /// An error at read time rather than at open: detected, not silent.
    DetectedLate(String),
    SilentLoss(String),
    Panicked,
}

async fn verify(dir: &Path, expected: &BTreeMap<String, (u64, usize)>) -> Outcome {
    let store = match SledStore::open(dir) {
        Ok(s) => s,
        Err(e @ StoreError::Damaged { .. }) | Err(e @ StoreError::Io(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&dir.display().to_string()),
                "a refusal must name the data directory: {msg}"
            );
            return Outcome::Refused(msg);
        }
        Err(e) => return Outcome::DetectedLate(e.to_string()),
    };
    for (id, (revision, events)) in expected {
        let id = saga_engine::SagaId::parse(id).unwrap();
        match store.get(&id).await {
            Ok(Some(r)) if r.revision == *revision => {}
            Ok(Some(r)) => {
                return Outcome::SilentLoss(format!(
                    "{id} at revision {} not {revision}",
                    r.revision
                ))
            }
            Ok(None) => return Outcome::SilentLoss(format!("{id} missing")),
            Err(e) => return Outcome::DetectedLate(e.to_string()),
        }
        match store.history(&id).await {
            Ok(h) if h.len() == *events => {}
            Ok(h) => {
                return Outcome::SilentLoss(format!("{id} has {} events not {events}", h.len()))
            }
            Err(e) => return Outcome::DetectedLate(e.to_string()),
        }
    }
    Outcome::Intact
}

#[test]
fn flipped_bytes_never_go_unnoticed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let template = root.path().join("template");
    let mut expected = BTreeMap::new();
    rt.block_on(async {
        let store = SledStore::open(&template).unwrap();
        for i in 0..120 {
            let mut r = sample_record(&format!("saga{i:03}"), Some(&format!("key{i}")));
            store.create(&r, &[]).await.unwrap();
            for rev in 1..=(i % 4) as u64 {
                r.revision = rev;
                let e = SagaEvent {
                    saga_id: r.id.clone(),
                    seq: rev,
                    at_ms: rev,
                    kind: saga_engine::EventKind::Resumed,
                };
                store.update(&r, &[e]).await.unwrap();
            }
            expected.insert(r.id.to_string(), (r.revision, (i % 4) as usize));
        }
    });

    // Control: an undamaged copy opens with everything in it.
    let control = root.path().join("control");
    copy_dir(&template, &control);
    match rt.block_on(verify(&control, &expected)) {
        Outcome::Intact => {}
        other => panic!("an undamaged store must open intact: {other:?}"),
    }

    let trials = 200;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for t in 0..trials {
        let dir = root.path().join(format!("trial{t}"));
        copy_dir(&template, &dir);
        let mut files = Vec::new();
        sled_files(&dir, &mut files);
        let total: u64 = files.iter().map(|f| f.1).sum();
        let mut at = rand::random::<u64>() % total;
        let (file, offset) = files
            .iter()
            .find_map(|(p, len)| {
                if at < *len {
                    Some((p.clone(), at))
                } else {
                    at -= len;
                    None
                }
            })
            .unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[offset as usize] ^= 1 << (rand::random::<u8>() % 8);
        std::fs::write(&file, bytes).unwrap();

        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(verify(&dir, &expected))
        }))
        .unwrap_or(Outcome::Panicked);
        if let Outcome::Refused(m) | Outcome::DetectedLate(m) = &outcome {
            let short: String = m
                .replace(&dir.display().to_string(), "DIR")
                .chars()
                .take(90)
                .collect();
            *reasons.entry(short).or_default() += 1;
        }
        let name = match &outcome {
            Outcome::Intact => "intact",
            Outcome::Refused(_) => "refused",
            Outcome::DetectedLate(_) => "detected_late",
            Outcome::SilentLoss(_) => "silent_loss",
            Outcome::Panicked => "panicked",
        };
        *counts.entry(name).or_default() += 1;
        match &outcome {
            Outcome::SilentLoss(what) => failures.push(format!(
                "trial {t}: flipped {}@{offset}: silent loss: {what}",
                file.display()
            )),
            Outcome::Panicked => failures.push(format!(
                "trial {t}: flipped {}@{offset}: panicked",
                file.display()
            )),
            _ => {}
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("corruption: {trials} trials: {counts:?}");
    for (r, n) in &reasons {
        eprintln!("  {n:4} x {r}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
