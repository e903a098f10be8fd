//! Runs async code with its sockets in a simulated host's network
//! namespace: a thread enters the namespace and runs a current-thread
//! runtime, so every socket the future opens lives there.

use std::future::Future;
use std::path::PathBuf;

pub fn block_in<F, Fut, T>(netns: PathBuf, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).expect("open the netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// [`block_in`] from async code (on a blocking thread).
pub async fn run_in<F, Fut, T>(netns: PathBuf, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || block_in(netns, f))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
