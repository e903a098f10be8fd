//! The C allocator's own account of the agent's heap (glibc's
//! `mallinfo2(3)`) and `malloc_trim(3)`, which hands freed pages back to the
//! kernel. RSS alone cannot tell a leak from memory the allocator holds
//! after a busy hour: `in_use` is what the program has allocated and not
//! freed, `held` what the allocator has from the kernel.

/// The heap as glibc sees it, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heap {
    /// Allocated and not freed (arena chunks in use and mmapped blocks).
    pub in_use: u64,
    /// Taken from the kernel (arenas and mmapped blocks), used or free.
    pub held: u64,
}

/// The heap now; `None` where the C library is not glibc.
pub fn heap() -> Option<Heap> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 takes no argument and returns a plain struct; it
        // locks each arena in turn, so it is safe from any thread.
        let m = unsafe { libc::mallinfo2() };
        Some(Heap {
            in_use: (m.uordblks + m.hblkhd) as u64,
            held: (m.arena + m.hblkhd) as u64,
        })
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

/// Returns the free pages of every arena to the kernel; true if any were.
pub fn trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim(0) only releases free memory of the arenas,
        // under their locks; any thread may call it.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_use_follows_an_allocation() {
        let before = heap().expect("glibc").in_use;
        // large against what the other tests' threads allocate meanwhile
        let v: Vec<u8> = vec![1; 64 << 20];
        let during = heap().unwrap().in_use;
        assert!(during >= before + (32 << 20), "{before} -> {during}");
        drop(v);
        let after = heap().unwrap();
        assert!(after.in_use + (32 << 20) < during, "{during} -> {after:?}");
        assert!(after.held >= after.in_use);
        trim();
    }
}
