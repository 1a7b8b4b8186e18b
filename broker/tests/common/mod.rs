//! Test kit shared by the integration tests: a fresh tenant vhost per test, removed at
//! the end even when the test fails, and a bounded wait for deliveries.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 with the management plugin (port 15672), guest/guest.

#![allow(dead_code)] // each test binary uses a different part of the kit

use std::time::Duration;

use futures::StreamExt;
use ris_broker::lapin::message::Delivery;
use ris_broker::lapin::Consumer;
use ris_broker::{deprovision_tenant, provision_tenant, BrokerConfig, Management};
use ris_schemas::ids::TenantName;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A provisioned tenant vhost `ris.t-<8 hex>`, deprovisioned on drop.
pub struct TestTenant {
    pub cfg: BrokerConfig,
    pub mgmt: Management,
    pub tenant: TenantName,
}

impl TestTenant {
    /// A unique tenant name, not provisioned.
    pub fn unique_name() -> TenantName {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        TenantName::parse(&format!("t-{}", &hex[..8])).expect("valid tenant name")
    }

    /// Provisions a fresh tenant.
    pub async fn provision() -> Self {
        let this = Self::unprovisioned();
        provision_tenant(&this.cfg, &this.mgmt, &this.tenant)
            .await
            .expect("provision tenant (is the management plugin enabled?)");
        this
    }

    /// A fresh tenant name with its cleanup guard, not provisioned yet.
    pub fn unprovisioned() -> Self {
        let cfg = BrokerConfig::default();
        let mgmt = Management::new(&cfg).expect("management client");
        Self {
            cfg,
            mgmt,
            tenant: Self::unique_name(),
        }
    }

    pub fn vhost(&self) -> String {
        self.tenant.vhost()
    }

    /// The tenant's broker users.
    pub async fn users(&self) -> Vec<String> {
        let prefix = ris_broker::tenant_user_prefix(&self.tenant);
        self.mgmt.list_users_with_prefix(&prefix).await.unwrap()
    }
}

impl Drop for TestTenant {
    /// Deprovisions on a separate thread and runtime: drop cannot await, and this also
    /// runs when the test panicked.
    fn drop(&mut self) {
        let (cfg, tenant) = (self.cfg.clone(), self.tenant.clone());
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let mgmt = Management::new(&cfg).expect("management client");
                deprovision_tenant(&mgmt, &tenant).await
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of {} failed: {e}", self.tenant),
            Err(_) => eprintln!("cleanup of {} panicked", self.tenant),
        }
    }
}

/// The next delivery of `consumer`, failing the test after [`PATIENCE`].
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer still open")
        .expect("delivery without error")
}

/// A string header of `delivery`, if present.
pub fn header(delivery: &Delivery, name: &str) -> Option<String> {
    use ris_broker::lapin::types::AMQPValue;
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}
