-- A tenant's audit chain is read under row-level security, and the policy's qual keeps
-- the chain's `coalesce(tenant_id, …)` expression from reaching `audit_log_chain`: every
-- read of a tenant chain's head (one per batch of audited requests) scanned the whole
-- log, 1.6 ms at 7,000 entries and growing with it. Tenant chains are read through
-- `tenant_id = $1` and this index; the platform's chain (read without row-level
-- security) keeps `audit_log_chain`.
CREATE INDEX audit_log_tenant_chain ON audit_log (tenant_id, seq);
