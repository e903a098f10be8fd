//! The lifecycle operations every front end calls: create, start, stop,
//! kill, restart, remove.

use super::error::{Error, Result};
use super::query::ContainerView;
use super::registry::Entry;
use super::{blocking, Supervisor};
use crate::model::{Action, ContainerSpec, State};
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
    /// Creates and starts a container. On any failure nothing is left behind.
    pub async fn create(self: &Arc<Self>, spec: ContainerSpec) -> Result<ContainerView> {
        crate::model::spec::validate(&spec)?;
        let name = spec.name.clone();
        self.registry.reserve(&name)?;
        // its own task: a caller that goes away mid-create (a pull can take
        // minutes) must not leave the name reserved or the container unwatched
        let me = self.clone();
        tokio::spawn(async move { me.create_reserved(spec).await })
            .await
            .unwrap_or(Err(Error::Panicked("create")))
    }

    /// The create of a reserved name: the image (pulled from its registry
    /// when not here yet), then the container.
    async fn create_reserved(self: &Arc<Self>, spec: ContainerSpec) -> Result<ContainerView> {
        let name = spec.name.clone();
        let (pulled, _gc) = match self.image_held(&spec.image).await {
            Ok(x) => x,
            Err(e) => {
                self.registry.settle(&name, None);
                return Err(e.into());
            }
        };
        let me = self.clone();
        let entry = blocking("create", move || {
            let res = me.create_blocking(spec, pulled);
            let entry = res.as_ref().ok().map(|rec| Entry::new(rec.clone()));
            me.registry.settle(&name, entry.clone());
            let rec = res?;
            me.count_state(None, Some(State::Running));
            me.restart_counter(&rec);
            me.events.emit(&name, Action::Create, None, None);
            me.events.emit(&name, Action::Start, None, None);
            Ok(entry.expect("made with the record"))
        })
        .await?;
        self.watch(entry.clone());
        Ok(self.view(&entry))
    }

    /// A registry image, pulled when not here (no lock held while it
    /// downloads), and the hold that keeps prunes off from now until the
    /// container's record names the layers (re-pulled if a prune took them
    /// in between); other images are resolved by the create, under the hold.
    async fn image_held(
        &self,
        image: &str,
    ) -> std::result::Result<
        (
            Option<crate::image::Image>,
            tokio::sync::OwnedRwLockReadGuard<()>,
        ),
        crate::image::ImageError,
    > {
        let crate::image::Reference::Registry(r) = crate::image::parse_reference(image)? else {
            return Ok((None, self.images.hold().await));
        };
        let img = self.images.get_or_pull(&r).await?;
        let gc = self.images.hold().await;
        if img.layers.iter().all(|l| l.is_dir()) {
            return Ok((Some(img), gc));
        }
        Ok((Some(self.images.get_or_pull(&r).await?), gc))
    }

    /// Starts a created or exited container again.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<ContainerView> {
        let e = self.registry.get(name)?;
        let _g = e.op.lock().await;
        let from = e.state();
        if from == State::Running {
            return Err(Error::AlreadyRunning(name.to_string()));
        }
        self.run_again(&e, false).await?;
        self.watch(e.clone());
        Ok(self.view(&e))
    }

    /// Starts the next run of `e`, persists and announces it (the caller
    /// holds its op lock); `restart`: a restart by the policy.
    pub(super) async fn run_again(self: &Arc<Self>, e: &Arc<Entry>, restart: bool) -> Result<()> {
        let (me, e2) = (self.clone(), e.clone());
        blocking("start", move || {
            let mut r = e2.rec();
            let from = r.state();
            if restart {
                r.count_restart();
            }
            let res = me.start_run(&mut r);
            // a failed start changes nothing but the count of restarts tried
            if res.is_ok() || restart {
                let mut held = e2.rec.lock().unwrap();
                *held = r.clone();
                // written under the record's lock: saves of one container
                // land in the order of its changes
                if res.is_ok() {
                    me.persist(&held);
                }
            }
            res?;
            me.count_state(Some(from), Some(State::Running));
            if restart {
                me.restart_counter(&r).inc();
            }
            let action = if restart {
                Action::Restart
            } else {
                Action::Start
            };
            me.events.emit(r.name(), action, None, None);
            Ok(())
        })
        .await
    }

    /// Sends `sig` to the container's process.
    fn signal(&self, e: &Entry, sig: i32) -> Result<()> {
        let r = e.rec();
        let Some(run) = r.running() else {
            return Err(Error::NotRunning(r.name().to_string()));
        };
        // gone already: its exit is on its way
        self.runtime.signal(run.init, sig)?;
        Ok(())
    }

    /// Whether the container is no longer running within `timeout`.
    pub(super) async fn wait_exit(&self, e: &Entry, timeout: Duration) -> bool {
        let mut rx = e.exits.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if e.state() != State::Running {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return e.state() != State::Running;
            }
        }
    }

    /// Marks the container as stopped by the operator (the restart policy
    /// leaves it down), persists that and announces `event` (action, signal).
    async fn request_stop(self: &Arc<Self>, e: &Arc<Entry>, event: Option<(Action, Option<i32>)>) {
        let (me, e2) = (self.clone(), e.clone());
        let _ = blocking("save", move || {
            let r = {
                let mut r = e2.rec.lock().unwrap();
                r.request_stop();
                me.persist(&r);
                r.clone()
            };
            if let Some((action, signal)) = event {
                me.events.emit(r.name(), action, None, signal);
            }
            Ok(())
        })
        .await;
    }

    /// SIGTERM, then SIGKILL after `timeout`.
    pub async fn stop(self: &Arc<Self>, name: &str, timeout: Duration) -> Result<ContainerView> {
        let e = self.registry.get(name)?;
        let _g = e.op.lock().await;
        if e.state() == State::Running {
            self.request_stop(&e, Some((Action::Stop, None))).await;
            self.signal_if_running(&e, libc::SIGTERM)?;
            if !self.wait_exit(&e, timeout).await {
                self.kill_and_wait(&e, name).await?;
            }
        }
        Ok(self.view(&e))
    }

    /// [`Self::signal`], where a container that has just exited by itself
    /// (after the caller saw it running) is what the caller wanted anyway.
    fn signal_if_running(&self, e: &Entry, sig: i32) -> Result<()> {
        match self.signal(e, sig) {
            Err(Error::NotRunning(_)) => Ok(()),
            other => other,
        }
    }

    async fn kill_and_wait(&self, e: &Arc<Entry>, name: &str) -> Result<()> {
        self.signal_if_running(e, libc::SIGKILL)?;
        match self.wait_exit(e, Duration::from_secs(10)).await {
            true => Ok(()),
            false => Err(Error::DidNotExit(name.to_string())),
        }
    }

    pub async fn kill(self: &Arc<Self>, name: &str, sig: i32) -> Result<ContainerView> {
        let e = self.registry.get(name)?;
        if e.state() != State::Running {
            return Err(Error::NotRunning(name.to_string()));
        }
        self.request_stop(&e, Some((Action::Kill, Some(sig)))).await;
        self.signal(&e, sig)?;
        Ok(self.view(&e))
    }

    pub async fn restart(self: &Arc<Self>, name: &str, timeout: Duration) -> Result<ContainerView> {
        self.stop(name, timeout).await?;
        self.start(name).await
    }

    /// Removes a container; a running one only with `force` (SIGKILL first).
    pub async fn remove(self: &Arc<Self>, name: &str, force: bool) -> Result<()> {
        let e = self.registry.get(name)?;
        let _g = e.op.lock().await;
        if e.state() == State::Running {
            if !force {
                return Err(Error::Running(name.to_string()));
            }
            self.request_stop(&e, None).await;
            self.kill_and_wait(&e, name).await?;
        }
        let rec = e.rec();
        let me = self.clone();
        blocking("remove", move || {
            let f = rec.facts();
            me.teardown(rec.name(), &f.cgroup_parent, &f.net, f.userns_base, true);
            me.registry.remove(rec.name());
            me.count_state(Some(rec.state()), None);
            me.forget_restarts(&rec);
            me.events.emit(rec.name(), Action::Destroy, None, None);
            Ok(())
        })
        .await
    }
}
