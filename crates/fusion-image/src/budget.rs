//! A process-wide budget for decoded image memory: however many threads decode at once, the
//! decoded pixels held together stay under it (sixteen in-budget 8000² PNGs decoded in
//! parallel used to take all memory). A decode waits until its bytes fit.

use std::sync::{Condvar, Mutex, OnceLock};

/// Default budget: 2 GiB, or `FUSION_DECODE_BUDGET_MB` MiB.
pub const DEFAULT_DECODE_BUDGET: u64 = 2 << 30;

#[derive(Debug)]
struct Budget {
    /// (total, reserved now, most ever reserved at once)
    state: Mutex<(u64, u64, u64)>,
    freed: Condvar,
}

fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let total = std::env::var("FUSION_DECODE_BUDGET_MB")
            .ok()
            .and_then(|mb| mb.trim().parse::<u64>().ok())
            .map_or(DEFAULT_DECODE_BUDGET, |mb| mb.saturating_mul(1 << 20));
        Budget {
            state: Mutex::new((total, 0, 0)),
            freed: Condvar::new(),
        }
    })
}

/// Sets the budget in bytes for decodes that start from now on.
pub fn set_decode_budget(bytes: u64) {
    let mut state = budget().state.lock().unwrap_or_else(|p| p.into_inner());
    state.0 = bytes;
    budget().freed.notify_all();
}

/// (budget, most bytes ever held at once) of this process.
pub fn decode_budget_usage() -> (u64, u64) {
    let state = budget().state.lock().unwrap_or_else(|p| p.into_inner());
    (state.0, state.2)
}

thread_local! {
    /// Bytes the shares alive on this thread hold (what waiting cannot free).
    static HELD_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Decoded bytes held against the budget; returned when dropped.
#[derive(Debug)]
pub struct BudgetShare(u64);

impl BudgetShare {
    /// Waits until `bytes` fit under the budget, or says that they never will (over the
    /// whole budget, or over what this thread's own shares leave of it).
    pub(crate) fn reserve(bytes: u64) -> Result<Self, u64> {
        let budget = budget();
        let held_here = HELD_HERE.with(std::cell::Cell::get);
        let mut state = budget.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if bytes.saturating_add(held_here) > state.0 {
                return Err(state.0);
            }
            if state.1 + bytes <= state.0 {
                state.1 += bytes;
                state.2 = state.2.max(state.1);
                HELD_HERE.with(|h| h.set(held_here + bytes));
                return Ok(Self(bytes));
            }
            state = budget.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        HELD_HERE.with(|h| h.set(h.get().saturating_sub(self.0)));
        let budget = budget();
        let mut state = budget.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 = state.1.saturating_sub(self.0);
        budget.freed.notify_all();
    }
}
