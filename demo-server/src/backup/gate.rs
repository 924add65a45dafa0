//! The write barrier a backup takes: every write of the saga store and of
//! the participants goes through a shared hold of one [`WriteBarrier`], and
//! a snapshot takes it exclusively, so it reads the database at a point
//! where no write is under way and none starts until it is done.
//!
//! The wrappers ([`GatedStore`], [`GatedInventory`], [`GatedPayments`],
//! [`GatedLoyalty`]) hold the barrier only around their own writes (reads
//! pass), and never while calling another gated object, so a hold is never
//! nested: a snapshot waiting for the barrier cannot deadlock a writer that
//! already holds it. A step action under way when the snapshot starts may
//! still write the booking and promo trees directly; its saga record says
//! the step started and nothing after it, so a server started on the
//! restored copy runs the step again under the same idempotency keys, as
//! after a crash at that point.

use async_trait::async_trait;
use booking_domain::inventory::{
    Hold, HoldLookup, HoldRequest, Inventory, InventoryError, ReleaseOutcome, SeatTotals,
};
use booking_domain::loyalty::{
    AccountId, CreateAccount, EntryLookup, Loyalty, LoyaltyAccount, LoyaltyEntry, LoyaltyError,
    ReverseOutcome,
};
use booking_domain::payments::{
    AuthorizeRequest, CardToken, PaymentError, PaymentLookup, PaymentRecord, Payments,
    RefundRecord, RefundRequest, TokenAuthorizeRequest, TokenizeRequest, VoidOutcome,
};
use booking_domain::types::{Cabin, FlightId, Money};
use chrono::NaiveDate;
use saga_engine::store::CreateOutcome;
use saga_engine::{Resumable, SagaEvent, SagaId, SagaRecord, SagaStatus, Store, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Writers hold it shared; a snapshot holds it exclusively.
#[derive(Debug, Default)]
pub struct WriteBarrier {
    lock: RwLock<()>,
    waiting: AtomicUsize,
}

/// A writer's hold on the barrier (released when dropped).
#[derive(Debug)]
pub struct WriteHold<'a>(#[allow(dead_code)] Option<RwLockReadGuard<'a, ()>>);

/// Counts a writer as waiting while it lives (also if its future is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WriteBarrier {
    /// A new, open barrier.
    pub fn new() -> Arc<WriteBarrier> {
        Arc::new(WriteBarrier::default())
    }

    /// A writer's hold: waits while a snapshot is being taken.
    pub async fn write(&self) -> WriteHold<'_> {
        if saga_engine::sabotage::active(saga_engine::sabotage::BACKUP_NO_BARRIER) {
            return WriteHold(None);
        }
        if let Ok(g) = self.lock.try_read() {
            return WriteHold(Some(g));
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Waiting(&self.waiting);
        WriteHold(Some(self.lock.read().await))
    }

    /// Writers waiting at the barrier right now (for tests and logs).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The snapshot's hold: waits for the writes under way, then holds
    /// every new one back until dropped.
    pub async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock.write().await
    }
}

/// A saga store whose writes wait at the barrier.
pub struct GatedStore {
    inner: Arc<dyn Store>,
    barrier: Arc<WriteBarrier>,
}

impl GatedStore {
    /// `inner` behind `barrier`.
    pub fn new(inner: Arc<dyn Store>, barrier: Arc<WriteBarrier>) -> GatedStore {
        GatedStore { inner, barrier }
    }
}

#[async_trait]
impl Store for GatedStore {
    async fn create(
        &self,
        record: &SagaRecord,
        events: &[SagaEvent],
    ) -> Result<CreateOutcome, StoreError> {
        let _w = self.barrier.write().await;
        self.inner.create(record, events).await
    }
    async fn update(&self, record: &SagaRecord, events: &[SagaEvent]) -> Result<(), StoreError> {
        let _w = self.barrier.write().await;
        self.inner.update(record, events).await
    }
    async fn get(&self, id: &SagaId) -> Result<Option<SagaRecord>, StoreError> {
        self.inner.get(id).await
    }
    // Reads pass through: the wrapped store answers from its indexes (the
    // trait's defaults would read every record).
    async fn list_page(
        &self,
        filter: &saga_engine::store::SagaFilter,
        cursor: Option<&saga_engine::store::PageCursor>,
        limit: usize,
    ) -> Result<saga_engine::store::SagaPage, StoreError> {
        self.inner.list_page(filter, cursor, limit).await
    }
    async fn status_counts(&self) -> Result<saga_engine::store::StatusCounts, StoreError> {
        self.inner.status_counts().await
    }
    async fn definition_pauses(
        &self,
    ) -> Result<std::collections::BTreeMap<String, saga_engine::machine::PauseMark>, StoreError>
    {
        self.inner.definition_pauses().await
    }
    async fn set_definition_pause(
        &self,
        definition: &str,
        mark: Option<&saga_engine::machine::PauseMark>,
    ) -> Result<(), StoreError> {
        let _w = self.barrier.write().await;
        self.inner.set_definition_pause(definition, mark).await
    }
    async fn find_by_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        self.inner.find_by_key(key).await
    }
    async fn history(&self, id: &SagaId) -> Result<Vec<SagaEvent>, StoreError> {
        self.inner.history(id).await
    }
    async fn list_active(&self) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.list_active().await
    }
    async fn list_resumable(&self) -> Result<Resumable, StoreError> {
        self.inner.list_resumable().await
    }
    async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.list(status, limit).await
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    async fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let _w = self.barrier.write().await;
        self.inner.claim(owner, now_ms, ttl_ms, limit).await
    }
    async fn renew(
        &self,
        owner: &str,
        leases: &[(SagaId, u64)],
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Vec<SagaId>, StoreError> {
        let _w = self.barrier.write().await;
        self.inner.renew(owner, leases, now_ms, ttl_ms).await
    }
    async fn release(&self, owner: &str, ids: &[SagaId]) -> Result<(), StoreError> {
        let _w = self.barrier.write().await;
        self.inner.release(owner, ids).await
    }
    async fn finished_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.inner.finished_before(before_ms, limit).await
    }
    async fn purge(&self, ids: &[SagaId], now_ms: u64) -> Result<usize, StoreError> {
        let _w = self.barrier.write().await;
        self.inner.purge(ids, now_ms).await
    }
    async fn forget_keys(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let _w = self.barrier.write().await;
        self.inner.forget_keys(before_ms, limit).await
    }
    fn saga_count(&self) -> Option<u64> {
        self.inner.saga_count()
    }
    async fn durable(&self) -> Result<(), StoreError> {
        self.inner.durable().await
    }
    fn flush_count(&self) -> u64 {
        self.inner.flush_count()
    }
}

/// Seats whose changes wait at the barrier.
pub struct GatedInventory(pub Arc<dyn Inventory>, pub Arc<WriteBarrier>);

#[async_trait]
impl Inventory for GatedInventory {
    async fn hold(&self, key: &str, request: &HoldRequest) -> Result<Hold, InventoryError> {
        let _w = self.1.write().await;
        self.0.hold(key, request).await
    }
    async fn confirm(&self, key: &str) -> Result<Hold, InventoryError> {
        let _w = self.1.write().await;
        self.0.confirm(key).await
    }
    async fn release(&self, key: &str) -> Result<ReleaseOutcome, InventoryError> {
        let _w = self.1.write().await;
        self.0.release(key).await
    }
    async fn seats_left(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<u32, InventoryError> {
        self.0.seats_left(flight, date, cabin).await
    }
    async fn totals(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Result<SeatTotals, InventoryError> {
        self.0.totals(flight, date, cabin).await
    }
    async fn hold_status(&self, key: &str) -> Result<HoldLookup, InventoryError> {
        self.0.hold_status(key).await
    }
    async fn set_capacity(
        &self,
        flight: &FlightId,
        date: NaiveDate,
        cabin: Cabin,
        seats: u32,
    ) -> Result<SeatTotals, InventoryError> {
        let _w = self.1.write().await;
        self.0.set_capacity(flight, date, cabin, seats).await
    }
    async fn all_holds(&self) -> Result<Vec<Hold>, InventoryError> {
        self.0.all_holds().await
    }
}

/// Payments whose changes wait at the barrier.
pub struct GatedPayments(pub Arc<dyn Payments>, pub Arc<WriteBarrier>);

#[async_trait]
impl Payments for GatedPayments {
    async fn authorize(
        &self,
        key: &str,
        request: &AuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        let _w = self.1.write().await;
        self.0.authorize(key, request).await
    }
    async fn capture(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        let _w = self.1.write().await;
        self.0.capture(key).await
    }
    async fn void_or_refund(&self, key: &str) -> Result<VoidOutcome, PaymentError> {
        let _w = self.1.write().await;
        self.0.void_or_refund(key).await
    }
    async fn get(&self, key: &str) -> Result<PaymentLookup, PaymentError> {
        self.0.get(key).await
    }
    async fn history(&self, customer_email: &str) -> Result<Vec<PaymentRecord>, PaymentError> {
        self.0.history(customer_email).await
    }
    async fn all_payments(&self) -> Result<Vec<PaymentRecord>, PaymentError> {
        self.0.all_payments().await
    }
    async fn refund(
        &self,
        key: &str,
        request: &RefundRequest,
    ) -> Result<RefundRecord, PaymentError> {
        let _w = self.1.write().await;
        self.0.refund(key, request).await
    }
    async fn tokenize(
        &self,
        key: &str,
        request: &TokenizeRequest,
    ) -> Result<CardToken, PaymentError> {
        let _w = self.1.write().await;
        self.0.tokenize(key, request).await
    }
    async fn authorize_token(
        &self,
        key: &str,
        request: &TokenAuthorizeRequest,
    ) -> Result<PaymentRecord, PaymentError> {
        let _w = self.1.write().await;
        self.0.authorize_token(key, request).await
    }
    async fn forget_card(&self, token: &str) -> Result<(), PaymentError> {
        let _w = self.1.write().await;
        self.0.forget_card(token).await
    }
    async fn cards_held(&self) -> Result<u64, PaymentError> {
        self.0.cards_held().await
    }
    async fn confirm_authorization(&self, key: &str) -> Result<PaymentRecord, PaymentError> {
        let _w = self.1.write().await;
        self.0.confirm_authorization(key).await
    }
}

/// Miles whose changes wait at the barrier.
pub struct GatedLoyalty(pub Arc<dyn Loyalty>, pub Arc<WriteBarrier>);

#[async_trait]
impl Loyalty for GatedLoyalty {
    async fn create_account(
        &self,
        key: &str,
        request: &CreateAccount,
    ) -> Result<LoyaltyAccount, LoyaltyError> {
        let _w = self.1.write().await;
        self.0.create_account(key, request).await
    }
    async fn account(&self, id: &AccountId) -> Result<LoyaltyAccount, LoyaltyError> {
        self.0.account(id).await
    }
    async fn account_by_email(&self, email: &str) -> Result<Option<LoyaltyAccount>, LoyaltyError> {
        self.0.account_by_email(email).await
    }
    async fn award(
        &self,
        key: &str,
        account_id: &AccountId,
        amount: &Money,
    ) -> Result<LoyaltyEntry, LoyaltyError> {
        let _w = self.1.write().await;
        self.0.award(key, account_id, amount).await
    }
    async fn redeem(
        &self,
        key: &str,
        account_id: &AccountId,
        miles: u64,
    ) -> Result<LoyaltyEntry, LoyaltyError> {
        let _w = self.1.write().await;
        self.0.redeem(key, account_id, miles).await
    }
    async fn reverse(&self, key: &str) -> Result<ReverseOutcome, LoyaltyError> {
        let _w = self.1.write().await;
        self.0.reverse(key).await
    }
    async fn entry(&self, key: &str) -> Result<EntryLookup, LoyaltyError> {
        self.0.entry(key).await
    }
    async fn history(&self, account_id: &AccountId) -> Result<Vec<LoyaltyEntry>, LoyaltyError> {
        self.0.history(account_id).await
    }
    async fn all_accounts(&self) -> Result<Vec<LoyaltyAccount>, LoyaltyError> {
        self.0.all_accounts().await
    }
}
