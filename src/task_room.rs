//! A bound on background tasks of one kind: a task takes a place before it is spawned and gives
//! it back when it ends, however it ends (its future dropped unpolled by a runtime shutting down
//! included). Past the bound no task is spawned, so an outage of the store they wait on holds
//! bounded memory and tasks.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Room for `most` tasks at once, process-wide.
pub struct TaskRoom {
    taken: AtomicUsize,
    most: usize,
}

/// One task's place in a `TaskRoom`, given back when dropped.
pub struct TaskPlace(&'static TaskRoom);

impl TaskRoom {
    pub const fn new(most: usize) -> TaskRoom {
        TaskRoom {
            taken: AtomicUsize::new(0),
            most,
        }
    }

    /// A place, if one is free.
    pub fn take(&'static self) -> Option<TaskPlace> {
        if self.taken.fetch_add(1, Ordering::Relaxed) >= self.most {
            self.taken.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(TaskPlace(self))
    }

    /// Whether no more than half the places are taken.
    pub fn at_most_half_full(&self) -> bool {
        self.taken.load(Ordering::Relaxed) <= self.most / 2
    }
}

impl Drop for TaskPlace {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_come_back_when_dropped() {
        static ROOM: TaskRoom = TaskRoom::new(2);
        let first = ROOM.take().expect("room for one");
        let second = ROOM.take().expect("room for two");
        assert!(ROOM.take().is_none(), "no room for a third");
        assert!(!ROOM.at_most_half_full());
        drop(first);
        assert!(ROOM.at_most_half_full());
        let third = ROOM.take().expect("a place given back is taken again");
        drop((second, third));
        assert!(ROOM.take().is_some());
    }
}
