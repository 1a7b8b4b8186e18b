//! Keeping the replica count: restoring dead or vanished replicas, removing surplus
//! ones, creating missing ones.

use std::collections::BTreeSet;

use super::{Reconciler, Replica};
use crate::docker::containers::{self, ContainerShape};
use crate::docker::{labels, DockerError};
use crate::service::record::Revision;

impl Reconciler {
    /// Counts a restart for each replica of the target seen last pass and gone now.
    pub(super) fn count_vanished(&mut self, cur: &[Replica], n: u32) {
        let vanished: Vec<u32> = self
            .seen
            .iter()
            .filter(|(slot, id)| **slot < n && !cur.iter().any(|r| &r.id == *id))
            .map(|(slot, _)| *slot)
            .collect();
        for slot in vanished {
            tracing::warn!(slot, "replica removed out of band; recreating it");
            self.count_restart(slot);
        }
        self.seen.clear();
    }

    /// Starts dead replicas again (old ones too: they serve until replaced). Returns
    /// those still there, and whether anything changed.
    pub(super) async fn restore_dead(
        &mut self,
        replicas: Vec<Replica>,
    ) -> Result<(Vec<Replica>, bool), DockerError> {
        let mut changed = false;
        let mut kept = Vec::with_capacity(replicas.len());
        for r in replicas {
            if r.running {
                kept.push(r);
                continue;
            }
            changed = true;
            if self.restore(&r).await? {
                kept.push(r);
            }
        }
        Ok((kept, changed))
    }

    /// Removes replicas of the target with a duplicate or out-of-range slot (scale
    /// down: highest slots go).
    pub(super) async fn trim_surplus(
        &mut self,
        mut cur: Vec<Replica>,
        n: u32,
    ) -> Result<(Vec<Replica>, bool), DockerError> {
        cur.sort_by_key(|r| (r.slot.unwrap_or(u32::MAX), r.id.clone()));
        let mut slots = BTreeSet::new();
        let mut changed = false;
        let mut kept = Vec::with_capacity(cur.len());
        for r in cur {
            match r.slot {
                Some(s) if s < n && slots.insert(s) => kept.push(r),
                _ => {
                    tracing::info!(container = %r.name, "removing a surplus replica");
                    self.remove(&r).await?;
                    changed = true;
                }
            }
        }
        for r in &kept {
            if let Some(slot) = r.slot {
                self.seen.insert(slot, r.id.clone());
            }
        }
        Ok((kept, changed))
    }

    /// Removes old replicas beyond what the target still needs (those whose slot the
    /// target already fills go first).
    pub(super) async fn trim_old(
        &mut self,
        mut stale: Vec<Replica>,
        cur: &[Replica],
        n: u32,
    ) -> Result<(Vec<Replica>, bool), DockerError> {
        let filled: BTreeSet<u32> = cur.iter().filter_map(|r| r.slot).collect();
        let wanted = (n as usize).saturating_sub(cur.len());
        stale.sort_by_key(|r| {
            let covered = r.slot.is_none_or(|s| s >= n || filled.contains(&s));
            (covered, r.slot.unwrap_or(u32::MAX))
        });
        let mut changed = false;
        while stale.len() > wanted {
            if let Some(r) = stale.pop() {
                tracing::info!(container = %r.name, "removing a surplus replica of another revision");
                self.remove(&r).await?;
                changed = true;
            }
        }
        Ok((stale, changed))
    }

    /// Creates replicas for slots that neither the target nor an old replica fills
    /// (scale up, first deploy, restoring a removed replica).
    pub(super) async fn fill_missing(
        &mut self,
        target: &Revision,
        cur: &[Replica],
        stale: &[Replica],
        n: u32,
    ) -> Result<bool, DockerError> {
        let held: BTreeSet<u32> = cur.iter().chain(stale).filter_map(|r| r.slot).collect();
        let missing: Vec<u32> = (0..n).filter(|s| !held.contains(s)).collect();
        if missing.is_empty() {
            return Ok(false);
        }
        containers::ensure_image(&self.ctx.config.engine, &target.spec.get().image).await?;
        for slot in missing {
            let id = self.create(target, slot).await?;
            self.seen.insert(slot, id);
        }
        Ok(true)
    }

    /// Starts a dead replica again (recreated when it will not start). True when the
    /// container was kept.
    pub(super) async fn restore(&mut self, r: &Replica) -> Result<bool, DockerError> {
        let code = r.inspect.state.as_ref().and_then(|s| s.exit_code);
        if let Some(slot) = r.slot {
            self.count_restart(slot);
        }
        let engine = &self.ctx.config.engine;
        match containers::start(engine, &r.id).await {
            Ok(()) => {
                tracing::warn!(container = %r.name, exit_code = ?code, "replica had stopped; started again");
                Ok(true)
            }
            Err(e) if e.is_unavailable() => Err(e),
            Err(e) => {
                tracing::warn!(container = %r.name, error = %e, "replica will not start; recreating it");
                containers::remove(engine, &r.id).await?;
                Ok(false)
            }
        }
    }

    pub(super) fn count_restart(&mut self, slot: u32) {
        *self.restarts.entry(slot).or_default() += 1;
        self.total_restarts += 1;
        metrics::counter!("ris_agent_service_restarts_total", "service" => self.service.to_string())
            .increment(1);
    }

    pub(super) async fn remove(&mut self, r: &Replica) -> Result<(), DockerError> {
        containers::remove(&self.ctx.config.engine, &r.id).await?;
        if let Some(slot) = r.slot {
            if self.seen.get(&slot) == Some(&r.id) {
                self.seen.remove(&slot);
            }
        }
        Ok(())
    }

    pub(super) async fn create(&self, target: &Revision, slot: u32) -> Result<String, DockerError> {
        let spec = target.spec.get();
        let owner = &self.ctx.config.owner;
        let name = format!(
            "ris-{}-{}-{slot}-{}",
            self.service,
            owner.agent_id.chars().rev().take(6).collect::<String>(),
            crate::executor::docker::short_id()
        );
        let shape = ContainerShape {
            name: name.clone(),
            image: spec.image.clone(),
            command: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: spec.env.clone(),
            ports: spec.ports.clone(),
            health_check: spec.health_check.clone(),
            limits: spec.limits,
            labels: owner.labels(&[
                (labels::SERVICE, self.service.to_string()),
                (labels::REVISION, target.revision.to_string()),
                (labels::HASH, target.spec.container_hash()),
                (labels::SLOT, slot.to_string()),
            ]),
        };
        let id = containers::create_and_start(&self.ctx.config.engine, &shape).await?;
        tracing::info!(container = %name, revision = target.revision, slot, "replica started");
        Ok(id)
    }
}
