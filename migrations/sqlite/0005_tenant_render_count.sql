-- The number of renders each tenant has submitted, kept by the `renders`
-- projection in the same transaction as its other rows, so that an
-- unfiltered `GET /v1/renders` answers its `total` without counting.
-- A read model's new column is filled by replaying: the projection is
-- emptied and its checkpoint set to 0 here, and the runner rebuilds it.
ALTER TABLE rm_tenants ADD COLUMN renders_total INTEGER NOT NULL DEFAULT 0;
DELETE FROM rm_renders;
DELETE FROM rm_tasks;
DELETE FROM rm_frames;
DELETE FROM rm_tenants;
DELETE FROM rm_tenant_usage;
UPDATE projection_checkpoints SET position = 0, last_recorded_at = NULL WHERE name = 'renders';
