-- Least privilege for prescore on PostgreSQL. Run once as an administrator, e.g.
--   psql "$ADMIN_URL" -v job_password="'...'" -v reader_password="'...'" -f sql/roles.sql
-- then give cron `postgres://prescore_job:...@host/db` and dashboards `prescore_reader`.
--
-- prescore_job    reads the source tables, owns prescore's tables and the results tables.
-- prescore_reader may only SELECT the results and prescore's tables (apps, BI dashboards).

CREATE ROLE prescore_job LOGIN PASSWORD :job_password;
CREATE ROLE prescore_reader LOGIN PASSWORD :reader_password;

-- A schema for everything prescore writes; the job's role owns it.
CREATE SCHEMA IF NOT EXISTS prescore AUTHORIZATION prescore_job;
ALTER ROLE prescore_job SET search_path = prescore, public;
GRANT USAGE ON SCHEMA prescore TO prescore_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE prescore_job IN SCHEMA prescore GRANT SELECT ON TABLES TO prescore_reader;
-- That covers views too: create sql/views/customer_value.sql as prescore_job (it lands in
-- this schema) and the reader may read it.

-- The job reads its sources (adjust to the schemas your SQL reads).
GRANT USAGE ON SCHEMA public TO prescore_job;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO prescore_job;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO prescore_job;

-- Nobody else writes there.
REVOKE CREATE ON SCHEMA prescore FROM PUBLIC;
