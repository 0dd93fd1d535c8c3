-- carrierfeeds ledger: least-privilege application role 'carrierfeeds_app' (schema public).
-- Run as the owner of the ledger tables after `carrierfeeds db upgrade`; give the role
-- LOGIN and a password, or grant it to the login role the pipeline uses.
DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'carrierfeeds_app') THEN CREATE ROLE carrierfeeds_app NOLOGIN; END IF; END $$;
GRANT USAGE ON SCHEMA public TO carrierfeeds_app;
REVOKE ALL ON public.runs, public.run_events, public.interchanges, public.deliveries, public.delivery_outcomes, public.audit_events, public.authorisations, public.purge_checkpoints, public.acknowledgments, public.resends, public.disclosures, public.disclosed_members, public.feed_lifecycle, public.notice_sends, public.reconciliations, public.discrepancies, public.discrepancy_events, public.control_counters, public.chain_head, public.alembic_version FROM carrierfeeds_app;
GRANT SELECT, INSERT ON public.runs, public.run_events, public.interchanges, public.deliveries, public.delivery_outcomes, public.audit_events, public.authorisations, public.purge_checkpoints, public.acknowledgments, public.resends, public.disclosures, public.disclosed_members, public.feed_lifecycle, public.notice_sends, public.reconciliations, public.discrepancies, public.discrepancy_events TO carrierfeeds_app;
GRANT SELECT, INSERT, UPDATE ON public.control_counters, public.chain_head TO carrierfeeds_app;
GRANT SELECT ON public.alembic_version TO carrierfeeds_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO carrierfeeds_app;
