//! Conformance checks of the overdue listing ([`SagaFilter::overdue`]):
//! a saga flagged overdue is listed while it runs or is paused, leaves
//! the list when it finishes or goes stuck, and comes back when a stuck
//! one is retried.

use super::event;
use super::sample_record;
use crate::machine::{PauseMark, SagaStatus};
use crate::store::{PageCursor, SagaFilter, SagaRecord, Store};

async fn write<S: Store>(store: &S, r: &mut SagaRecord) {
    r.revision += 1;
    store.update(r, &[event(&r.id, r.revision)]).await.unwrap();
}

/// Every overdue saga matching `filter`, walking pages of `limit`.
async fn overdue<S: Store>(store: &S, filter: SagaFilter, limit: usize) -> Vec<String> {
    let filter = SagaFilter {
        overdue: true,
        ..filter
    };
    let mut out = Vec::new();
    let mut cursor: Option<PageCursor> = None;
    loop {
        let page = store
            .list_page(&filter, cursor.as_ref(), limit)
            .await
            .unwrap();
        assert!(page.records.len() <= limit);
        assert!(page.records.iter().all(|r| r.is_overdue()));
        out.extend(page.records.iter().map(|r| r.id.as_str().to_string()));
        match page.next {
            Some(c) => cursor = Some(PageCursor::parse(&c.to_string()).unwrap()),
            None => return out,
        }
    }
}

/// Six sagas; the overdue ones are listed newest first, page by page, by
/// definition and by status, through pause, finish, stuck, retry and purge.
pub async fn overdue_sagas_are_listed_until_they_finish<S: Store>(store: S) {
    let mut rs: Vec<SagaRecord> = (0..6)
        .map(|i| {
            let mut r = sample_record(&format!("o{i}"), Some(&format!("ok{i}")));
            r.created_at_ms = 1_000 + i as u64 * 10;
            r.definition = if i % 2 == 0 { "even" } else { "odd" }.into();
            r
        })
        .collect();
    for r in &rs {
        store.create(r, &[]).await.unwrap();
    }
    let all = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(overdue(&store, SagaFilter::default(), 10).await.is_empty());
    // The deadline passes after the pivot: flagged, status unchanged.
    for i in [0, 1, 2, 4, 5] {
        rs[i].state.overdue = true;
        write(&store, &mut rs[i]).await;
    }
    assert_eq!(
        overdue(&store, SagaFilter::default(), 2).await,
        all(&["o5", "o4", "o2", "o1", "o0"])
    );
    let even = SagaFilter {
        definition: Some("even".into()),
        ..SagaFilter::default()
    };
    assert_eq!(overdue(&store, even, 1).await, all(&["o4", "o2", "o0"]));
    // Paused: still overdue, listed under its status `paused`.
    rs[2].state.paused = Some(PauseMark {
        operator: "ops".into(),
        reason: "look".into(),
        at_ms: 5,
    });
    write(&store, &mut rs[2]).await;
    let paused = SagaFilter {
        statuses: vec![SagaStatus::Paused],
        ..SagaFilter::default()
    };
    assert_eq!(overdue(&store, paused, 10).await, all(&["o2"]));
    // Finished or stuck: out. A stuck one retried: back in.
    rs[0].state.status = SagaStatus::Completed;
    write(&store, &mut rs[0]).await;
    rs[5].state.status = SagaStatus::Stuck;
    write(&store, &mut rs[5]).await;
    assert_eq!(
        overdue(&store, SagaFilter::default(), 10).await,
        all(&["o4", "o2", "o1"])
    );
    rs[5].state.status = SagaStatus::Running;
    write(&store, &mut rs[5]).await;
    assert_eq!(
        overdue(&store, SagaFilter::default(), 3).await,
        all(&["o5", "o4", "o2", "o1"])
    );
    // A window of creation times.
    let window = SagaFilter {
        created_after_ms: Some(1_010),
        created_before_ms: Some(1_045),
        ..SagaFilter::default()
    };
    assert_eq!(overdue(&store, window, 10).await, all(&["o4", "o2", "o1"]));
    // A purged (finished) overdue saga is gone; the others stay.
    assert_eq!(store.purge(&[rs[0].id.clone()], 9_000).await.unwrap(), 1);
    assert_eq!(
        overdue(&store, SagaFilter::default(), 10).await,
        all(&["o5", "o4", "o2", "o1"])
    );
}

/// A paused saga is not terminal: [`Store::list_active`] returns it (a
/// reopened engine loads it and keeps it parked until it is resumed).
pub async fn a_paused_saga_is_active<S: Store>(store: S) {
    let mut r = sample_record("p1", Some("pk1"));
    store.create(&r, &[]).await.unwrap();
    r.state.paused = Some(PauseMark {
        operator: "ops".into(),
        reason: "look".into(),
        at_ms: 5,
    });
    write(&store, &mut r).await;
    assert_eq!(r.status(), SagaStatus::Paused);
    let active: Vec<String> = store
        .list_active()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id.to_string())
        .collect();
    assert_eq!(active, vec!["p1".to_string()], "a paused saga is active");
}
