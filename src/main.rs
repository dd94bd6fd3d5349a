fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    dace::cli::main()
}

/// Training allocates and frees the same tens-of-megabyte activation buffers every step. glibc
/// returns such blocks to the kernel (mmap/munmap) and every step then pays page faults to get
/// them back (~20% of a CPU training step); keeping them in the heap avoids that.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
