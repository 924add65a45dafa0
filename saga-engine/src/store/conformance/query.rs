//! Conformance checks of paged listing, search attributes and status
//! counts ([`Store::list_page`], [`Store::status_counts`]).

use super::{event, sample_record};
use crate::machine::SagaStatus;
use crate::store::{CreateOutcome, PageCursor, SagaFilter, SagaRecord, StatusCounts, Store};
use std::future::Future;

/// Runs every query check, each on a fresh store from `make`. Needs
/// retention ([`Store::purge`]) too.
pub async fn run_query<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    pages_walk_every_filter_newest_first(make().await).await;
    counts_follow_creates_status_changes_and_purges(make().await).await;
    purge_removes_attribute_entries(make().await).await;
    a_lost_key_race_is_neither_listed_nor_counted(make().await).await;
    attributes_are_re_taken_at_a_status_change(make().await).await;
    super::overdue::overdue_sagas_are_listed_until_they_finish(make().await).await;
}

const STATUSES: [SagaStatus; 5] = [
    SagaStatus::Running,
    SagaStatus::Compensating,
    SagaStatus::Completed,
    SagaStatus::Compensated,
    SagaStatus::Stuck,
];

/// A record `q{i}` created at `created`, in definition `def`, with a
/// `reference` attribute and (every third) a `colour`.
fn varied(i: usize, created: u64) -> SagaRecord {
    let mut r = sample_record(&format!("q{i:03}"), Some(&format!("qk{i}")));
    r.created_at_ms = created;
    r.updated_at_ms = created;
    r.definition = if i.is_multiple_of(2) { "even" } else { "odd" }.into();
    r.attributes
        .insert("reference".into(), format!("REF{}", i % 4));
    if i.is_multiple_of(3) {
        r.attributes.insert("colour".into(), "blue".into());
    }
    r
}

/// Moves `r` to `status` with one update.
async fn set_status<S: Store>(store: &S, r: &mut SagaRecord, status: SagaStatus) {
    r.revision += 1;
    r.state.status = status;
    store.update(r, &[event(&r.id, r.revision)]).await.unwrap();
}

fn tally(records: &[SagaRecord]) -> StatusCounts {
    let mut c = StatusCounts::new();
    for r in records {
        *c.entry(r.status().as_str().to_string()).or_default() += 1;
    }
    c
}

/// Every page of `filter` at `limit`, concatenated; checks that no page
/// is longer than `limit` and that only the last has no cursor.
async fn walk<S: Store>(store: &S, filter: &SagaFilter, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<PageCursor> = None;
    for _ in 0..1000 {
        let page = store
            .list_page(filter, cursor.as_ref(), limit)
            .await
            .unwrap();
        assert!(page.records.len() <= limit, "a page over its limit");
        out.extend(page.records.iter().map(|r| r.id.as_str().to_string()));
        match page.next {
            // The text form is what clients hand back.
            Some(c) => cursor = Some(PageCursor::parse(&c.to_string()).unwrap()),
            None => return out,
        }
    }
    panic!("paging never ended for {filter:?}");
}

/// 40 sagas (some created in the same millisecond) in every status, two
/// definitions and a few attribute values: walking the pages of each
/// filter at several page sizes yields exactly the matching sagas, newest
/// first (creation time, then id), each once.
pub async fn pages_walk_every_filter_newest_first<S: Store>(store: S) {
    let mut all = Vec::new();
    for i in 0..40 {
        let mut r = varied(i, 1_000 + (i as u64 / 3) * 10);
        assert_eq!(store.create(&r, &[]).await.unwrap(), CreateOutcome::Created);
        let status = STATUSES[i % STATUSES.len()];
        if status != SagaStatus::Running {
            set_status(&store, &mut r, status).await;
        }
        all.push(r);
    }
    let mut expected_order = all.clone();
    expected_order.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    let attr = |n: &str, v: &str| Some((n.to_string(), v.to_string()));
    let filters = [
        SagaFilter::default(),
        SagaFilter {
            statuses: vec![SagaStatus::Stuck],
            ..Default::default()
        },
        SagaFilter {
            statuses: vec![
                SagaStatus::Running,
                SagaStatus::Stuck,
                SagaStatus::Completed,
            ],
            definition: Some("even".into()),
            ..Default::default()
        },
        SagaFilter {
            definition: Some("odd".into()),
            created_after_ms: Some(1_040),
            created_before_ms: Some(1_100),
            ..Default::default()
        },
        SagaFilter {
            attribute: attr("reference", "REF1"),
            ..Default::default()
        },
        SagaFilter {
            attribute: attr("colour", "blue"),
            statuses: vec![SagaStatus::Running, SagaStatus::Completed],
            created_before_ms: Some(1_120),
            ..Default::default()
        },
        SagaFilter {
            attribute: attr("reference", "nope"),
            ..Default::default()
        },
        SagaFilter {
            created_after_ms: Some(5_000),
            ..Default::default()
        },
    ];
    for filter in &filters {
        let want: Vec<String> = expected_order
            .iter()
            .filter(|r| filter.matches(r))
            .map(|r| r.id.as_str().to_string())
            .collect();
        for limit in [1, 3, 7, 100] {
            assert_eq!(
                walk(&store, filter, limit).await,
                want,
                "pages of {filter:?} at limit {limit}"
            );
        }
    }
    // Records come back whole, attributes included.
    let first = store
        .list_page(&SagaFilter::default(), None, 1)
        .await
        .unwrap();
    assert_eq!(first.records, vec![expected_order[0].clone()]);
}

/// The counts equal a tally of the records after creates, every status
/// change (including back out of a terminal one) and purges.
pub async fn counts_follow_creates_status_changes_and_purges<S: Store>(store: S) {
    assert_eq!(store.status_counts().await.unwrap(), StatusCounts::new());
    let mut all = Vec::new();
    for i in 0..12 {
        let r = varied(i, 10 + i as u64);
        store.create(&r, &[]).await.unwrap();
        all.push(r);
    }
    assert_eq!(store.status_counts().await.unwrap(), tally(&all));
    for (i, r) in all.iter_mut().enumerate() {
        set_status(&store, r, STATUSES[i % STATUSES.len()]).await;
        // An update that keeps the status changes no count.
        r.revision += 1;
        store.update(r, &[]).await.unwrap();
    }
    assert_eq!(store.status_counts().await.unwrap(), tally(&all));
    // Out of stuck (an operator retry), and into it.
    let stuck = all
        .iter()
        .position(|r| r.status() == SagaStatus::Stuck)
        .unwrap();
    set_status(&store, &mut all[stuck], SagaStatus::Compensating).await;
    assert_eq!(store.status_counts().await.unwrap(), tally(&all));
    let finished: Vec<_> = all
        .iter()
        .filter(|r| matches!(r.status(), SagaStatus::Completed | SagaStatus::Compensated))
        .map(|r| r.id.clone())
        .collect();
    assert!(!finished.is_empty());
    assert_eq!(store.purge(&finished, 99).await.unwrap(), finished.len());
    all.retain(|r| !finished.contains(&r.id));
    assert_eq!(store.status_counts().await.unwrap(), tally(&all));
    assert_eq!(
        store.status_counts().await.unwrap(),
        tally(&store.list(None, usize::MAX).await.unwrap()),
        "counts and the records disagree"
    );
}

/// A purged saga is found by its attribute no more; a saga created later
/// with the same value is the only one found.
pub async fn purge_removes_attribute_entries<S: Store>(store: S) {
    let by_ref = SagaFilter {
        attribute: Some(("reference".into(), "REF1".into())),
        ..Default::default()
    };
    let mut old = varied(1, 100);
    store.create(&old, &[]).await.unwrap();
    set_status(&store, &mut old, SagaStatus::Completed).await;
    assert_eq!(walk(&store, &by_ref, 10).await, vec!["q001".to_string()]);
    assert_eq!(store.purge(&[old.id.clone()], 200).await.unwrap(), 1);
    assert!(walk(&store, &by_ref, 10).await.is_empty());
    let new = varied(5, 300);
    store.create(&new, &[]).await.unwrap();
    assert_eq!(walk(&store, &by_ref, 10).await, vec!["q005".to_string()]);
}

/// A create that finds its idempotency key taken writes nothing that is
/// listed or counted.
pub async fn a_lost_key_race_is_neither_listed_nor_counted<S: Store>(store: S) {
    let a = varied(1, 100);
    let mut b = varied(2, 200);
    b.idempotency_key = a.idempotency_key.clone();
    store.create(&a, &[]).await.unwrap();
    assert!(matches!(
        store.create(&b, &[]).await.unwrap(),
        CreateOutcome::Existing(_)
    ));
    assert_eq!(
        walk(&store, &SagaFilter::default(), 10).await,
        vec!["q001".to_string()]
    );
    let by_ref = SagaFilter {
        attribute: Some(("reference".into(), "REF2".into())),
        ..Default::default()
    };
    assert!(walk(&store, &by_ref, 10).await.is_empty());
    assert_eq!(store.status_counts().await.unwrap(), tally(&[a]));
}

/// A status change re-indexes the record's attributes: a value changed or
/// added is found, one dropped or replaced is not; a purge removes them.
pub async fn attributes_are_re_taken_at_a_status_change<S: Store>(store: S) {
    let by = |n: &str, v: &str| SagaFilter {
        attribute: Some((n.to_string(), v.to_string())),
        ..Default::default()
    };
    let mut r = varied(3, 100);
    store.create(&r, &[]).await.unwrap();
    assert_eq!(
        walk(&store, &by("colour", "blue"), 10).await,
        vec!["q003".to_string()]
    );
    r.attributes.insert("reference".into(), "LATE".into());
    r.attributes.remove("colour");
    r.attributes.insert("seat".into(), "12C".into());
    set_status(&store, &mut r, SagaStatus::Completed).await;
    assert_eq!(
        walk(&store, &by("reference", "LATE"), 10).await,
        vec!["q003".to_string()]
    );
    assert_eq!(
        walk(&store, &by("seat", "12C"), 10).await,
        vec!["q003".to_string()]
    );
    assert!(walk(&store, &by("reference", "REF3"), 10).await.is_empty());
    assert!(walk(&store, &by("colour", "blue"), 10).await.is_empty());
    assert_eq!(
        store.get(&r.id).await.unwrap().unwrap().attributes,
        r.attributes
    );
    assert_eq!(store.purge(&[r.id.clone()], 500).await.unwrap(), 1);
    for (n, v) in [
        ("reference", "LATE"),
        ("seat", "12C"),
        ("reference", "REF3"),
    ] {
        assert!(
            walk(&store, &by(n, v), 10).await.is_empty(),
            "{n}={v} after purge"
        );
    }
}
