//! An intrusive doubly linked list over block ids: the allocator's free blocks in reuse order.
//!
//! Links live in two arrays indexed by block id, so push, pop and removal from the middle (a cached
//! free block matched again) are all O(1) and allocate nothing.

/// The "no block" link.
const NIL: u32 = u32::MAX;

/// A doubly linked list of distinct block ids in `0..capacity`.
#[derive(Debug, Clone)]
pub(super) struct FreeList {
    prev: Vec<u32>,
    next: Vec<u32>,
    linked: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeList {
    /// A list holding every id of `0..n`, in order. `n` must be below `u32::MAX`.
    pub(super) fn full(n: usize) -> Self {
        debug_assert!(n < NIL as usize);
        let mut list = FreeList {
            prev: vec![NIL; n],
            next: vec![NIL; n],
            linked: vec![false; n],
            head: NIL,
            tail: NIL,
            len: 0,
        };
        for id in 0..n as u32 {
            list.push_back(id);
        }
        list
    }

    /// Number of ids in the list.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether `id` is in the list.
    pub(super) fn contains(&self, id: u32) -> bool {
        self.linked.get(id as usize).copied().unwrap_or(false)
    }

    /// Inserts `id` (not in the list) at the front: it is popped first.
    pub(super) fn push_front(&mut self, id: u32) {
        debug_assert!(!self.contains(id));
        self.link(id, NIL, self.head);
    }

    /// Inserts `id` (not in the list) at the back: it is popped last.
    pub(super) fn push_back(&mut self, id: u32) {
        debug_assert!(!self.contains(id));
        self.link(id, self.tail, NIL);
    }

    /// Removes and returns the front id.
    pub(super) fn pop_front(&mut self) -> Option<u32> {
        let id = self.head;
        (id != NIL).then(|| {
            self.remove(id);
            id
        })
    }

    /// Removes `id` from wherever it is; returns whether it was in the list.
    pub(super) fn remove(&mut self, id: u32) -> bool {
        if !self.contains(id) {
            return false;
        }
        let i = id as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        match p {
            NIL => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.prev[n as usize] = p,
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
        self.linked[i] = false;
        self.len -= 1;
        true
    }

    /// The ids from front to back (O(len); for invariant checks).
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            let id = cur;
            (id != NIL).then(|| {
                cur = self.next[id as usize];
                id
            })
        })
        .take(self.linked.len())
    }

    /// Checks the links: forward walk matches `len`, back links mirror forward ones, `linked` flags
    /// agree with membership. O(capacity); for tests.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut prev = NIL;
        let mut count = 0;
        for id in self.iter() {
            if !self.linked[id as usize] {
                return Err(format!(
                    "block {id} is in the free list but not flagged linked"
                ));
            }
            if self.prev[id as usize] != prev {
                return Err(format!("block {id} has a bad back link"));
            }
            prev = id;
            count += 1;
        }
        if prev != self.tail {
            return Err(format!("free list tail {} != last block {prev}", self.tail));
        }
        let flagged = self.linked.iter().filter(|&&l| l).count();
        if count != self.len || flagged != self.len {
            return Err(format!(
                "free list len {} but walked {count} and {flagged} are flagged",
                self.len
            ));
        }
        Ok(())
    }

    /// Splices `id` between `prev` and `next` (adjacent, or NIL at an end).
    fn link(&mut self, id: u32, prev: u32, next: u32) {
        let i = id as usize;
        self.prev[i] = prev;
        self.next[i] = next;
        self.linked[i] = true;
        match prev {
            NIL => self.head = id,
            p => self.next[p as usize] = id,
        }
        match next {
            NIL => self.tail = id,
            n => self.prev[n as usize] = id,
        }
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &FreeList) -> Vec<u32> {
        list.iter().collect()
    }

    #[test]
    fn full_list_pops_in_order() {
        let mut l = FreeList::full(3);
        assert_eq!(ids(&l), [0, 1, 2]);
        assert_eq!(l.pop_front(), Some(0));
        assert_eq!(l.pop_front(), Some(1));
        assert_eq!(l.pop_front(), Some(2));
        assert_eq!(l.pop_front(), None);
        assert_eq!(l.len(), 0);
        l.check().unwrap();
    }

    #[test]
    fn push_and_remove_anywhere() {
        let mut l = FreeList::full(5);
        assert!(l.remove(2));
        assert!(!l.remove(2));
        assert!(l.remove(0));
        assert!(l.remove(4));
        assert_eq!(ids(&l), [1, 3]);
        l.push_front(4);
        l.push_back(0);
        assert_eq!(ids(&l), [4, 1, 3, 0]);
        assert!(l.remove(3));
        assert_eq!(ids(&l), [4, 1, 0]);
        assert!(l.contains(1) && !l.contains(2) && !l.contains(9));
        l.check().unwrap();
        assert!(l.remove(4) && l.remove(1) && l.remove(0));
        assert_eq!(ids(&l), Vec::<u32>::new());
        l.push_back(2);
        assert_eq!(ids(&l), [2]);
        l.check().unwrap();
    }
}
