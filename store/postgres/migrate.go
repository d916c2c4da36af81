package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// codeBackwards is the SQLSTATE put_checkpoint raises when a checkpoint
// would move backwards (a code of idem's own, outside PostgreSQL's
// classes).
const codeBackwards = "IDM01"

// codeFenced is the SQLSTATE check_fence raises when a Write's fence no
// longer holds its lease.
const codeFenced = "IDM02"

// codeSessionLost is the SQLSTATE commit_gate raises when the lock
// session that held a commit's record claims has ended, and
// check_unclaimed when a key a commit marks under its MarkOwner, and no
// claim of its process holds, is claimed elsewhere or marked.
const codeSessionLost = "IDM03"

// migrations are applied in order; migration i brings the schema to version
// i+1. They are append-only: a released migration is never edited, a change
// is a new one. "{s}" stands for the quoted schema name.
var migrations = []string{
	// 1: the tables, and the two functions whose logic must run next to
	// the rows they lock.
	`
CREATE TABLE {s}.checkpoints (
	mapping    text        NOT NULL,
	stream     text        NOT NULL,
	shard      text        NOT NULL,
	sequence   text        NOT NULL,
	processed  bigint      NOT NULL,
	skipped    bigint      NOT NULL,
	discarded  bigint      NOT NULL,
	lost       bigint      NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (mapping, stream, shard)
);

CREATE TABLE {s}.progress (
	scope      text   NOT NULL,
	stream     text   NOT NULL,
	shard      text   NOT NULL,
	high_water text   NOT NULL,
	above      text[] NOT NULL,
	PRIMARY KEY (scope, stream, shard)
);

CREATE TABLE {s}.marks (
	key     bytea       PRIMARY KEY,
	expires timestamptz NOT NULL
);
CREATE INDEX marks_expires ON {s}.marks (expires);

CREATE TABLE {s}.state (
	namespace text  NOT NULL,
	key       text  NOT NULL,
	value     bytea NOT NULL,
	PRIMARY KEY (namespace, key)
);

CREATE TABLE {s}.failures (
	id          bigserial   PRIMARY KEY,
	destination text        NOT NULL,
	metadata    bytea       NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failures_destination ON {s}.failures (destination, id);

CREATE TABLE {s}.failure_records (
	failure_id    bigint      NOT NULL REFERENCES {s}.failures (id) ON DELETE CASCADE,
	position      integer     NOT NULL,
	stream        text        NOT NULL,
	shard         text        NOT NULL,
	sequence      text        NOT NULL,
	partition_key text        NOT NULL,
	data          bytea       NOT NULL,
	arrival_time  timestamptz,
	PRIMARY KEY (failure_id, position)
);

CREATE SEQUENCE {s}.claim_tokens;

CREATE TABLE {s}.claims (
	key          bytea       PRIMARY KEY,
	status       text        NOT NULL CHECK (status IN ('ACQUIRED', 'COMPLETED')),
	token        bigint      NOT NULL,
	payload_hash bytea       NOT NULL,
	lease_until  timestamptz NOT NULL,
	expires      timestamptz,
	result       bytea
);
CREATE INDEX claims_completed_expires ON {s}.claims (expires) WHERE status = 'COMPLETED';
CREATE INDEX claims_acquired_lease ON {s}.claims (lease_until) WHERE status = 'ACQUIRED';

-- put_checkpoint upserts a checkpoint unless it would move backwards as a
-- number; then it raises IDM01 (DETAIL: the stored sequence), which aborts
-- the transaction and so the whole Write.
CREATE FUNCTION {s}.put_checkpoint(p_mapping text, p_stream text, p_shard text, p_sequence text,
	p_processed bigint, p_skipped bigint, p_discarded bigint, p_lost bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
	v_stored text;
BEGIN
	INSERT INTO {s}.checkpoints AS c (mapping, stream, shard, sequence, processed, skipped, discarded, lost)
	VALUES (p_mapping, p_stream, p_shard, p_sequence, p_processed, p_skipped, p_discarded, p_lost)
	ON CONFLICT (mapping, stream, shard) DO UPDATE SET
		sequence = EXCLUDED.sequence, processed = EXCLUDED.processed, skipped = EXCLUDED.skipped,
		discarded = EXCLUDED.discarded, lost = EXCLUDED.lost, updated_at = now()
	WHERE coalesce(nullif(c.sequence, '')::numeric, 0) <= coalesce(nullif(EXCLUDED.sequence, '')::numeric, 0);
	IF NOT FOUND THEN
		-- The upsert locked the row: this read sees the version it refused.
		SELECT c.sequence INTO v_stored FROM {s}.checkpoints c
		WHERE c.mapping = p_mapping AND c.stream = p_stream AND c.shard = p_shard;
		RAISE EXCEPTION USING ERRCODE = 'IDM01',
			MESSAGE = format('checkpoint would move backwards from %s to %s', v_stored, p_sequence),
			DETAIL = v_stored;
	END IF;
END
$fn$;

-- claim takes key unless its record still counts at p_now (completed and
-- unexpired, or in progress under a running lease). It returns the new
-- record with r_acquired true, or the one in the way with r_acquired false.
-- The upsert locks the row in both cases, so the second read sees what
-- refused it.
CREATE FUNCTION {s}.claim(p_key bytea, p_payload_hash bytea, p_lease_until timestamptz, p_now timestamptz)
RETURNS TABLE (r_acquired boolean, r_status text, r_token bigint, r_payload_hash bytea,
	r_lease_until timestamptz, r_expires timestamptz, r_result bytea)
LANGUAGE plpgsql AS $fn$
BEGIN
	RETURN QUERY
	INSERT INTO {s}.claims AS c (key, status, token, payload_hash, lease_until, expires, result)
	VALUES (p_key, 'ACQUIRED', nextval('{s}.claim_tokens'), p_payload_hash, p_lease_until, NULL, NULL)
	ON CONFLICT (key) DO UPDATE SET
		status = 'ACQUIRED', token = EXCLUDED.token, payload_hash = EXCLUDED.payload_hash,
		lease_until = EXCLUDED.lease_until, expires = NULL, result = NULL
	WHERE NOT ((c.status = 'COMPLETED' AND (c.expires IS NULL OR p_now < c.expires))
		OR (c.status = 'ACQUIRED' AND p_now < c.lease_until))
	RETURNING true, c.status, c.token, c.payload_hash, c.lease_until, c.expires, c.result;
	IF NOT FOUND THEN
		RETURN QUERY
		SELECT false, c.status, c.token, c.payload_hash, c.lease_until, c.expires, c.result
		FROM {s}.claims c WHERE c.key = p_key;
	END IF;
END
$fn$;
`,
	// 2: check_fence, the first statement of a fenced Write.
	`
-- check_fence raises IDM02 unless the claims record of p_key holds
-- p_token (whatever its lease time). It locks the row FOR SHARE until the
-- transaction ends, so no claim can take the key over between the check
-- and the commit of the Write it guards.
CREATE FUNCTION {s}.check_fence(p_key bytea, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
	v_token bigint;
BEGIN
	SELECT c.token INTO v_token FROM {s}.claims c WHERE c.key = p_key FOR SHARE;
	IF v_token IS DISTINCT FROM p_token THEN
		RAISE EXCEPTION USING ERRCODE = 'IDM02',
			MESSAGE = format('fenced: the lease is no longer held by token %s', p_token),
			DETAIL = coalesce(v_token::text, 'none');
	END IF;
END
$fn$;
`,
	// 3: progress per mapping, with the mapping's filter; record claims.
	`
-- Each mapping keeps its own progress row, so writers never overwrite
-- each other's; the rows written before are the scope-wide one, mapping ''.
ALTER TABLE {s}.progress
	ADD COLUMN mapping text NOT NULL DEFAULT '',
	ADD COLUMN filter  text NOT NULL DEFAULT '';
ALTER TABLE {s}.progress DROP CONSTRAINT progress_pkey;
ALTER TABLE {s}.progress ADD PRIMARY KEY (scope, stream, shard, mapping);

-- record_claims holds the claims of records that are running (RecordClaims).
-- A commit deletes them, so the table stays as small as the work in
-- flight; no index on lease_until, so that renewing a lease is a HOT update.
CREATE TABLE {s}.record_claims (
	key         bytea       PRIMARY KEY,
	owner       bytea       NOT NULL,
	lease_until timestamptz NOT NULL
);

-- claim_records claims p_keys for p_owner, in window order with prefix
-- semantics (store.RecordClaims), in one call. It checks the fence first
-- (check_fence raises IDM02, and nothing is claimed). It then upserts
-- every key not completed in key order, which locks rows in one order for
-- every caller (no deadlocks): a row is taken when free, expired, or
-- already p_owner's, and a row held by another owner stays locked but
-- unchanged. Reading the rows again then tells each key's status in window
-- order; keys after the first one held elsewhere, and keys a mark
-- committed meanwhile, get back the claim they had before (p_owner's
-- earlier lease, or none). r_status has one entry per key: 1 acquired,
-- 2 held by another owner, 3 completed; the caller ignores those after
-- r_held, the position (from 1) of the first key held elsewhere, whose
-- lease ends at r_held_until.
CREATE FUNCTION {s}.claim_records(p_keys bytea[], p_owner bytea, p_lease_until timestamptz, p_now timestamptz,
	p_marks boolean, p_fence_key bytea, p_fence_token bigint)
RETURNS TABLE (r_status smallint[], r_held integer, r_held_until timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
	v_n      integer := coalesce(cardinality(p_keys), 0);
	v_done   boolean[];
	v_prev   timestamptz[];
	v_status smallint[];
	v_held   bigint;
	v_late   boolean;
BEGIN
	IF p_fence_key IS NOT NULL THEN
		PERFORM {s}.check_fence(p_fence_key, p_fence_token);
	END IF;
	IF v_n = 0 THEN
		RETURN QUERY SELECT '{}'::smallint[], NULL::integer, NULL::timestamptz;
		RETURN;
	END IF;
	-- Each key before: completed or not, and p_owner's earlier lease.
	SELECT array_agg(m.key IS NOT NULL ORDER BY u.ord), array_agg(c.lease_until ORDER BY u.ord)
	INTO v_done, v_prev
	FROM unnest(p_keys) WITH ORDINALITY AS u (k, ord)
	LEFT JOIN {s}.marks m ON p_marks AND m.key = u.k AND m.expires > p_now
	LEFT JOIN {s}.record_claims c ON c.key = u.k AND c.owner = p_owner;

	INSERT INTO {s}.record_claims AS c (key, owner, lease_until)
	SELECT DISTINCT u.k, p_owner, p_lease_until FROM unnest(p_keys, v_done) AS u (k, done)
	WHERE NOT u.done ORDER BY 1
	ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
	WHERE c.owner = EXCLUDED.owner OR c.lease_until <= p_now;

	-- Each key now, with the rows locked: a mark read now was committed
	-- before its commit could end a claim this call holds.
	SELECT array_agg((CASE WHEN u.done OR m.key IS NOT NULL THEN 3 WHEN c.owner = p_owner THEN 1 ELSE 2 END)::smallint ORDER BY u.ord),
		min(u.ord) FILTER (WHERE NOT u.done AND m.key IS NULL AND c.owner IS DISTINCT FROM p_owner),
		coalesce(bool_or(NOT u.done AND m.key IS NOT NULL), false)
	INTO v_status, v_held, v_late
	FROM unnest(p_keys, v_done) WITH ORDINALITY AS u (k, done, ord)
	LEFT JOIN {s}.marks m ON p_marks AND NOT u.done AND m.key = u.k AND m.expires > p_now
	LEFT JOIN {s}.record_claims c ON NOT u.done AND c.key = u.k;

	IF v_held IS NOT NULL OR v_late THEN
		WITH x AS (
			SELECT DISTINCT ON (u.k) u.k, u.ord, u.st, u.prev
			FROM unnest(p_keys, v_done, v_status, v_prev) WITH ORDINALITY AS u (k, done, st, prev, ord)
			WHERE NOT u.done
			ORDER BY u.k, u.ord
		), undo AS (
			SELECT x.k, CASE WHEN x.st = 3 THEN NULL ELSE x.prev END AS prev FROM x
			WHERE x.st = 3 OR (x.st = 1 AND x.ord > coalesce(v_held, v_n + 1))
		), restored AS (
			UPDATE {s}.record_claims c SET lease_until = undo.prev FROM undo
			WHERE c.key = undo.k AND c.owner = p_owner AND undo.prev IS NOT NULL
			RETURNING c.key
		)
		DELETE FROM {s}.record_claims c USING undo
		WHERE c.key = undo.k AND c.owner = p_owner AND undo.prev IS NULL;
	END IF;

	RETURN QUERY SELECT v_status, v_held::integer,
		(SELECT c.lease_until FROM {s}.record_claims c WHERE v_held IS NOT NULL AND c.key = p_keys[v_held]);
END
$fn$;
`,
	// 4: range claims; record and range claims off the WAL's flush.
	`
-- Claims are leases over work in flight: losing them in a PostgreSQL
-- crash lets the records they guard run a second time concurrently, and
-- nothing else (completion commits durably, through Commit, and a record
-- already completed is skipped by its mark or progress). So claims are not
-- worth a WAL flush per window: their tables are UNLOGGED (no WAL at all;
-- a crash or an immediate shutdown empties them, and they are empty on a
-- streaming replica promoted by a failover), and the functions that take
-- them commit asynchronously (synchronous_commit off for their own
-- transaction only, so they are acknowledged before the flush).
ALTER TABLE {s}.record_claims SET UNLOGGED;

-- range_claims holds, per scope, stream and shard, each mapping's range of
-- sequences being run (store.RangeClaim): one row per mapping, replaced by
-- its next claim and deleted by the commit that ends it (EndRange), so the
-- table stays as small as the shards being read. Sequences are numeric, so
-- ranges compare as numbers; no index but the key, and room on each page,
-- so that replacing a range is a HOT update.
CREATE UNLOGGED TABLE {s}.range_claims (
	scope       text        NOT NULL,
	stream      text        NOT NULL,
	shard       text        NOT NULL,
	mapping     text        NOT NULL,
	seq_from    numeric     NOT NULL,
	seq_to      numeric     NOT NULL,
	lease_until timestamptz NOT NULL,
	PRIMARY KEY (scope, stream, shard, mapping)
) WITH (fillfactor = 50);

-- claim_range claims [p_from, p_to] of a shard for p_mapping of p_scope, in
-- one call: it checks the fence first (check_fence raises IDM02, and
-- nothing is claimed), then takes a transaction-scoped advisory lock on the
-- scope, stream and shard, so that two claimers never both pass the
-- overlap check (a hash collision only makes unrelated shards wait for
-- each other). If another mapping's range there is live at p_now and
-- overlaps, it returns one row whose r_held_until is the earliest such
-- lease end, and writes nothing. Otherwise it replaces p_mapping's range
-- and returns every mapping's progress of the scope over the shard, read
-- after the write, r_held_until NULL (no rows: no progress yet). The
-- empty sequence counts as 0. Like claim_records, it commits
-- asynchronously.
CREATE FUNCTION {s}.claim_range(p_scope text, p_stream text, p_shard text, p_mapping text,
	p_from text, p_to text, p_lease_until timestamptz, p_now timestamptz,
	p_fence_key bytea, p_fence_token bigint)
RETURNS TABLE (r_held_until timestamptz, r_mapping text, r_high_water text, r_above text[], r_filter text)
LANGUAGE plpgsql AS $fn$
DECLARE
	v_from numeric := coalesce(nullif(p_from, '')::numeric, 0);
	v_to   numeric := coalesce(nullif(p_to, '')::numeric, 0);
	v_held timestamptz;
BEGIN
	PERFORM set_config('synchronous_commit', 'off', true);
	IF p_fence_key IS NOT NULL THEN
		PERFORM {s}.check_fence(p_fence_key, p_fence_token);
	END IF;
	PERFORM pg_advisory_xact_lock(hashtextextended(
		format('idem/range/%s/%s/%s/%s', '{s}', p_scope, p_stream, p_shard), 0));

	SELECT min(r.lease_until) INTO v_held FROM {s}.range_claims r
	WHERE r.scope = p_scope AND r.stream = p_stream AND r.shard = p_shard AND r.mapping <> p_mapping
		AND r.lease_until > p_now AND r.seq_from <= v_to AND r.seq_to >= v_from;
	IF v_held IS NOT NULL THEN
		RETURN QUERY SELECT v_held, NULL::text, NULL::text, NULL::text[], NULL::text;
		RETURN;
	END IF;

	INSERT INTO {s}.range_claims AS r (scope, stream, shard, mapping, seq_from, seq_to, lease_until)
	VALUES (p_scope, p_stream, p_shard, p_mapping, v_from, v_to, p_lease_until)
	ON CONFLICT (scope, stream, shard, mapping) DO UPDATE SET
		seq_from = EXCLUDED.seq_from, seq_to = EXCLUDED.seq_to, lease_until = EXCLUDED.lease_until;

	RETURN QUERY SELECT NULL::timestamptz, p.mapping, p.high_water, p.above, p.filter FROM {s}.progress p
	WHERE p.scope = p_scope AND p.stream = p_stream AND p.shard = p_shard;
END
$fn$;

-- claim_records as in version 3, committing asynchronously (see above).
CREATE OR REPLACE FUNCTION {s}.claim_records(p_keys bytea[], p_owner bytea, p_lease_until timestamptz, p_now timestamptz,
	p_marks boolean, p_fence_key bytea, p_fence_token bigint)
RETURNS TABLE (r_status smallint[], r_held integer, r_held_until timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
	v_n      integer := coalesce(cardinality(p_keys), 0);
	v_done   boolean[];
	v_prev   timestamptz[];
	v_status smallint[];
	v_held   bigint;
	v_late   boolean;
BEGIN
	-- The claims may be lost in a crash anyway (see above): the call's
	-- transaction does not wait for the WAL flush.
	PERFORM set_config('synchronous_commit', 'off', true);
	IF p_fence_key IS NOT NULL THEN
		PERFORM {s}.check_fence(p_fence_key, p_fence_token);
	END IF;
	IF v_n = 0 THEN
		RETURN QUERY SELECT '{}'::smallint[], NULL::integer, NULL::timestamptz;
		RETURN;
	END IF;
	-- Each key before: completed or not, and p_owner's earlier lease.
	SELECT array_agg(m.key IS NOT NULL ORDER BY u.ord), array_agg(c.lease_until ORDER BY u.ord)
	INTO v_done, v_prev
	FROM unnest(p_keys) WITH ORDINALITY AS u (k, ord)
	LEFT JOIN {s}.marks m ON p_marks AND m.key = u.k AND m.expires > p_now
	LEFT JOIN {s}.record_claims c ON c.key = u.k AND c.owner = p_owner;

	INSERT INTO {s}.record_claims AS c (key, owner, lease_until)
	SELECT DISTINCT u.k, p_owner, p_lease_until FROM unnest(p_keys, v_done) AS u (k, done)
	WHERE NOT u.done ORDER BY 1
	ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
	WHERE c.owner = EXCLUDED.owner OR c.lease_until <= p_now;

	-- Each key now, with the rows locked: a mark read now was committed
	-- before its commit could end a claim this call holds.
	SELECT array_agg((CASE WHEN u.done OR m.key IS NOT NULL THEN 3 WHEN c.owner = p_owner THEN 1 ELSE 2 END)::smallint ORDER BY u.ord),
		min(u.ord) FILTER (WHERE NOT u.done AND m.key IS NULL AND c.owner IS DISTINCT FROM p_owner),
		coalesce(bool_or(NOT u.done AND m.key IS NOT NULL), false)
	INTO v_status, v_held, v_late
	FROM unnest(p_keys, v_done) WITH ORDINALITY AS u (k, done, ord)
	LEFT JOIN {s}.marks m ON p_marks AND NOT u.done AND m.key = u.k AND m.expires > p_now
	LEFT JOIN {s}.record_claims c ON NOT u.done AND c.key = u.k;

	IF v_held IS NOT NULL OR v_late THEN
		WITH x AS (
			SELECT DISTINCT ON (u.k) u.k, u.ord, u.st, u.prev
			FROM unnest(p_keys, v_done, v_status, v_prev) WITH ORDINALITY AS u (k, done, st, prev, ord)
			WHERE NOT u.done
			ORDER BY u.k, u.ord
		), undo AS (
			SELECT x.k, CASE WHEN x.st = 3 THEN NULL ELSE x.prev END AS prev FROM x
			WHERE x.st = 3 OR (x.st = 1 AND x.ord > coalesce(v_held, v_n + 1))
		), restored AS (
			UPDATE {s}.record_claims c SET lease_until = undo.prev FROM undo
			WHERE c.key = undo.k AND c.owner = p_owner AND undo.prev IS NOT NULL
			RETURNING c.key
		)
		DELETE FROM {s}.record_claims c USING undo
		WHERE c.key = undo.k AND c.owner = p_owner AND undo.prev IS NULL;
	END IF;

	RETURN QUERY SELECT v_status, v_held::integer,
		(SELECT c.lease_until FROM {s}.record_claims c WHERE v_held IS NOT NULL AND c.key = p_keys[v_held]);
END
$fn$;
`,
	// 5: claim_records in two passes over the keys instead of four.
	`
-- prev_lease keeps, while claim_records runs, the lease the owner held
-- before the call renewed it, so that the rare undo (keys past the one
-- held elsewhere, keys completed meanwhile) can give it back without a
-- read of every key before the upsert. It means nothing outside the call.
ALTER TABLE {s}.record_claims ADD COLUMN prev_lease timestamptz;

-- claim_records as in version 4, in fewer passes over the keys: the upsert
-- of every key (in key order, so rows are locked in one order by every
-- caller; completed keys included, as the mark lookup comes after the
-- locks anyway) returns the keys it took and the owner's lease it
-- replaced; then one read, with the rows locked, looks the marks up (one
-- index probe per key, whatever the statistics say of marks) and tells
-- each key's status in window order. Only when a key is held elsewhere or
-- completed does a third statement give back what the upsert took past
-- the held key, and the claims of completed keys (p_owner's earlier
-- lease, or none).
CREATE OR REPLACE FUNCTION {s}.claim_records(p_keys bytea[], p_owner bytea, p_lease_until timestamptz, p_now timestamptz,
	p_marks boolean, p_fence_key bytea, p_fence_token bigint)
RETURNS TABLE (r_status smallint[], r_held integer, r_held_until timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
	v_n      integer := coalesce(cardinality(p_keys), 0);
	v_got    bytea[];
	v_prev   timestamptz[];
	v_status smallint[];
	v_held   bigint;
	v_undo   boolean;
BEGIN
	-- The claims may be lost in a crash anyway (see version 4): the call's
	-- transaction does not wait for the WAL flush.
	PERFORM set_config('synchronous_commit', 'off', true);
	IF p_fence_key IS NOT NULL THEN
		PERFORM {s}.check_fence(p_fence_key, p_fence_token);
	END IF;
	IF v_n = 0 THEN
		RETURN QUERY SELECT '{}'::smallint[], NULL::integer, NULL::timestamptz;
		RETURN;
	END IF;

	-- A row is taken when free, expired, or already p_owner's; a row held
	-- by another owner stays locked but unchanged, and is not returned.
	WITH up AS (
		INSERT INTO {s}.record_claims AS c (key, owner, lease_until)
		SELECT DISTINCT u.k, p_owner, p_lease_until FROM unnest(p_keys) AS u (k) ORDER BY 1
		ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until,
			prev_lease = CASE WHEN c.owner = EXCLUDED.owner THEN c.lease_until END
		WHERE c.owner = EXCLUDED.owner OR c.lease_until <= p_now
		RETURNING c.key, c.prev_lease
	)
	SELECT array_agg(up.key), array_agg(up.prev_lease) INTO v_got, v_prev FROM up;

	-- Each key now, with the rows locked: this statement's snapshot sees a
	-- mark committed before its commit could end a claim this call holds.
	-- The marks are found by key alone, in a materialized CTE the expiry
	-- test cannot be pushed into: a scan of marks_expires, which matches
	-- nearly every mark, is never an option for the planner.
	WITH found AS MATERIALIZED (
		SELECT m.key, m.expires FROM {s}.marks m WHERE p_marks AND m.key = ANY(p_keys)
	)
	SELECT array_agg((CASE WHEN d.key IS NOT NULL THEN 3 WHEN g.key IS NOT NULL THEN 1 ELSE 2 END)::smallint ORDER BY u.ord),
		min(u.ord) FILTER (WHERE d.key IS NULL AND g.key IS NULL),
		coalesce(bool_or(d.key IS NOT NULL AND g.key IS NOT NULL), false)
	INTO v_status, v_held, v_undo
	FROM unnest(p_keys) WITH ORDINALITY AS u (k, ord)
	LEFT JOIN unnest(v_got) AS g (key) ON g.key = u.k
	LEFT JOIN found d ON d.key = u.k AND d.expires > p_now;

	IF v_held IS NOT NULL OR v_undo THEN
		-- A key's first place decides (a repeat after the held key keeps
		-- the claim its first place took); a completed key has status 3
		-- at every place.
		WITH first AS (
			SELECT u.k, min(u.ord) AS ord FROM unnest(p_keys) WITH ORDINALITY AS u (k, ord) GROUP BY u.k
		), undo AS (
			SELECT g.key, CASE WHEN v_status[f.ord] = 3 THEN NULL ELSE g.prev END AS prev
			FROM unnest(v_got, v_prev) AS g (key, prev) JOIN first f ON f.k = g.key
			WHERE v_status[f.ord] = 3 OR f.ord > coalesce(v_held, v_n + 1)
		), restored AS (
			UPDATE {s}.record_claims c SET lease_until = undo.prev, prev_lease = NULL FROM undo
			WHERE c.key = undo.key AND c.owner = p_owner AND undo.prev IS NOT NULL
			RETURNING c.key
		)
		DELETE FROM {s}.record_claims c USING undo
		WHERE c.key = undo.key AND c.owner = p_owner AND undo.prev IS NULL;
	END IF;

	RETURN QUERY SELECT v_status, v_held::integer,
		(SELECT c.lease_until FROM {s}.record_claims c WHERE v_held IS NOT NULL AND c.key = p_keys[v_held]);
END
$fn$;
`,
	// 6: store.MarkKeyOf became SHA-256 (issue 15). Marks and claims
	// records written before keep their FNV-1a keys, which cannot be
	// recomputed from the rows, until they expire; legacy_keys holds when
	// the last of them does (a record that never expires counts as the
	// year 9999), and callers look legacy keys up until then
	// (store.LegacyKeyed). A schema this version creates gets no row.
	// Record claims are left out: they guard runs of processes of the
	// earlier version, which an upgrade stops first.
	`
CREATE TABLE {s}.legacy_keys (
	only_row boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
	until    timestamptz NOT NULL
);
INSERT INTO {s}.legacy_keys (until)
SELECT max(u.t) FROM (
	SELECT max(m.expires) FROM {s}.marks m
	UNION ALL
	SELECT max(CASE WHEN c.status = 'COMPLETED' THEN coalesce(c.expires, '9999-12-31 00:00:00+00') ELSE c.lease_until END)
	FROM {s}.claims c
) AS u (t)
HAVING max(u.t) IS NOT NULL;
`,
	// 7: a batch's checkpoint and its progress in one call, whose
	// statements are planned once per session: the store forces custom
	// plans (New), which made put_checkpoint plan its upsert at every
	// call, the costliest statement of a batch that writes its effects in
	// one. Upserts by primary key have one plan whatever the tables hold,
	// so a generic plan is never worse. p_scope NULL: no progress.
	`
ALTER FUNCTION {s}.put_checkpoint(text, text, text, text, bigint, bigint, bigint, bigint)
	SET plan_cache_mode = force_generic_plan;
CREATE FUNCTION {s}.put_checkpoint_progress(p_mapping text, p_stream text, p_shard text, p_sequence text,
	p_processed bigint, p_skipped bigint, p_discarded bigint, p_lost bigint,
	p_scope text, p_progress_stream text, p_progress_shard text, p_progress_mapping text,
	p_high_water text, p_above text[], p_filter text) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
	PERFORM {s}.put_checkpoint(p_mapping, p_stream, p_shard, p_sequence, p_processed, p_skipped, p_discarded, p_lost);
	IF p_scope IS NOT NULL THEN
		INSERT INTO {s}.progress (scope, stream, shard, mapping, high_water, above, filter)
		VALUES (p_scope, p_progress_stream, p_progress_shard, p_progress_mapping, p_high_water, p_above, p_filter)
		ON CONFLICT (scope, stream, shard, mapping) DO UPDATE SET
			high_water = EXCLUDED.high_water, above = EXCLUDED.above, filter = EXCLUDED.filter;
	END IF;
END
$fn$;
`,
	// 8: record claims as advisory locks of one session per process
	// (locks.go). A row a key, upserted at the claim and deleted at the
	// commit, cost more of the server's time than anything else a payload
	// key does; a lock lives in shared memory and writes nothing.
	// The function and table of the row claims are dropped: a process of
	// an earlier version still running against this schema, which would
	// claim keys where this one no longer looks, fails at its next claim
	// instead of running a record this one runs too.
	`
DROP FUNCTION IF EXISTS {s}.claim_records(bytea[], bytea, timestamptz, timestamptz, boolean, bytea, bigint);
DROP TABLE IF EXISTS {s}.record_claims;

-- claim_locks releases the caller's session-level advisory locks
-- p_unlock (claims that ended since the session's last call), then tries,
-- without waiting, the lock of each p_locks entry that is not NULL, and
-- returns one boolean for each entry: taken or not. Session locks are
-- counted, so a lock both let go and taken again stays held once.
CREATE FUNCTION {s}.claim_locks(p_locks bigint[], p_unlock bigint[]) RETURNS boolean[]
LANGUAGE plpgsql AS $fn$
DECLARE
	v_got boolean[];
BEGIN
	PERFORM pg_advisory_unlock(u.l) FROM unnest(p_unlock) AS u (l);
	SELECT coalesce(array_agg(u.l IS NOT NULL AND pg_try_advisory_lock(u.l) ORDER BY u.ord), '{}') INTO v_got
	FROM unnest(p_locks) WITH ORDINALITY AS u (l, ord);
	RETURN v_got;
END
$fn$;

-- marks_of checks the fence (check_fence raises IDM02), then returns,
-- for each of p_keys, whether it holds a mark live at p_now. Called after
-- the keys' locks were taken, its snapshot sees every mark committed
-- before its owner let the lock go. Its one statement can only probe the
-- marks' primary key, so it is planned once a session, and never as a
-- scan of the table, which a plan made while the table was small would
-- keep doing as it grows.
CREATE FUNCTION {s}.marks_of(p_keys bytea[], p_now timestamptz, p_fence_key bytea, p_fence_token bigint)
RETURNS boolean[]
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
	v_marked boolean[];
BEGIN
	IF p_fence_key IS NOT NULL THEN
		PERFORM {s}.check_fence(p_fence_key, p_fence_token);
	END IF;
	SELECT coalesce(array_agg(EXISTS (SELECT 1 FROM {s}.marks m WHERE m.key = u.k AND m.expires > p_now) ORDER BY u.ord), '{}')
	INTO v_marked FROM unnest(p_keys) WITH ORDINALITY AS u (k, ord);
	RETURN v_marked;
END
$fn$;
`,
	// 9: commits gated by their lock session (locks.go, commitGate). A
	// lock session registers in lock_sessions, with two random locks:
	// its liveness lock, which it holds while it lives, and its gate,
	// which each commit that ends its claims takes, shared, in its own
	// transaction, before it checks the liveness lock (commit_gate: IDM03
	// if the session has ended). A claimer, after it took its keys' locks,
	// looks for sessions that have ended (their liveness lock free): if
	// one's gate is taken, a commit of it is in flight, and may mark the
	// keys just taken, so the claimer takes none of them this time; if it
	// is free, no commit of that session can land any more, and its row
	// goes. So a run under a claim lost with its session never commits
	// beside a run that another process began once the key was free. The
	// cost is a lock or two a call, not a key. claim_locks of version 8
	// stays, for processes of that version still running; their commits
	// are not gated.
	`
CREATE UNLOGGED TABLE {s}.lock_sessions (
	live      bigint      PRIMARY KEY,
	gate      bigint      NOT NULL,
	opened_at timestamptz NOT NULL DEFAULT now()
);

-- claim_locks as in version 8; then, if a session of lock_sessions other
-- than the caller's (p_live) has ended and has a commit in flight (its
-- gate is taken), every lock this call took is let go again and reported
-- not taken. An ended session with no commit in flight loses its row.
CREATE FUNCTION {s}.claim_locks(p_locks bigint[], p_unlock bigint[], p_live bigint) RETURNS boolean[]
LANGUAGE plpgsql AS $fn$
DECLARE
	v_got boolean[];
	v_ended record;
BEGIN
	PERFORM pg_advisory_unlock(u.l) FROM unnest(p_unlock) AS u (l);
	SELECT coalesce(array_agg(u.l IS NOT NULL AND pg_try_advisory_lock(u.l) ORDER BY u.ord), '{}') INTO v_got
	FROM unnest(p_locks) WITH ORDINALITY AS u (l, ord);
	FOR v_ended IN SELECT ls.live, ls.gate FROM {s}.lock_sessions ls WHERE ls.live <> p_live LOOP
		CONTINUE WHEN NOT pg_try_advisory_xact_lock_shared(v_ended.live); -- it lives
		IF NOT pg_try_advisory_xact_lock(v_ended.gate) THEN
			PERFORM pg_advisory_unlock(u.l) FROM unnest(p_locks) WITH ORDINALITY AS u (l, ord) WHERE v_got[u.ord];
			RETURN array_fill(false, ARRAY[cardinality(p_locks)]);
		END IF;
		DELETE FROM {s}.lock_sessions ls WHERE ls.ctid IN (
			SELECT d.ctid FROM {s}.lock_sessions d WHERE d.live = v_ended.live FOR UPDATE SKIP LOCKED);
	END LOOP;
	RETURN v_got;
END
$fn$;

-- commit_gate takes the gate of the lock session whose claims the
-- commit ends, shared, until the transaction ends, then raises IDM03
-- unless that session still holds its liveness lock.
CREATE FUNCTION {s}.commit_gate(p_gate bigint, p_live bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
	PERFORM pg_advisory_xact_lock_shared(p_gate);
	IF pg_try_advisory_xact_lock_shared(p_live) THEN
		RAISE EXCEPTION USING ERRCODE = 'IDM03',
			MESSAGE = 'the lock session that held the record claims of this commit has ended';
	END IF;
END
$fn$;
`,
	// 10: marks under a hash index on their key, not a primary key. A
	// mark is written once, by a commit that held its key's claim, and
	// only looked up by equality, so the btree's order and uniqueness
	// bought nothing and cost most of what a payload key costs the
	// server: inserting into the hash index and probing it cost about
	// half of the btree's upsert and probe (BENCHMARKS.md). A key marked
	// again (a record run again once its mark expired, or by two owners
	// in one process whose lease ran out) gets a row of its own; lookups
	// ask whether any live row exists, and the purge deletes rows, not
	// keys. A process of an earlier version still running fails at its
	// next commit (its upsert needs the primary key) rather than run on
	// a layout it does not know.
	`
ALTER TABLE {s}.marks DROP CONSTRAINT marks_pkey;
CREATE INDEX marks_key ON {s}.marks USING hash (key);
`,
	// 11: commits conditional on their owner's record claims
	// (store.Write.MarkOwner). A key such a commit marks that no claim of
	// its process holds must be neither claimed nor marked, which only the
	// database can tell: check_unclaimed checks it in the commit's
	// transaction, before the marks, and raises IDM03 otherwise, as
	// commit_gate does for a lost session. (A key another owner of the
	// process claims is refused in memory, and one the commit's owner
	// claims passes there: the engine's commits never call it.) It needs
	// a function: only PL/pgSQL raises an error of idem's own code.
	// Processes of version 10 still running never call it; their commits
	// mark keys whoever holds them, as before.
	`
-- check_unclaimed raises IDM03 unless each of p_keys is neither claimed
-- nor marked: its record claim's lock (p_locks, in the same places) is
-- held by no session, and no row of marks holds it, expired or not. It
-- takes those locks, until the transaction ends, before it reads the
-- marks, in a statement of its own: its snapshot then sees every mark
-- committed before its claim's lock was let go, and no claimer takes the
-- key while the commit may still land. As in marks_of, the marks' lookup
-- can only probe their index.
CREATE FUNCTION {s}.check_unclaimed(p_keys bytea[], p_locks bigint[]) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
DECLARE
	v_key bytea;
BEGIN
	SELECT u.k INTO v_key FROM unnest(p_keys, p_locks) AS u (k, l)
	WHERE NOT pg_try_advisory_xact_lock(u.l) LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'IDM03',
			MESSAGE = format('mark %s: its record is claimed by another session', encode(v_key, 'hex'));
	END IF;
	SELECT u.k INTO v_key FROM unnest(p_keys) AS u (k)
	WHERE EXISTS (SELECT 1 FROM {s}.marks m WHERE m.key = u.k) LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'IDM03',
			MESSAGE = format('mark %s: it was marked already, under another claim', encode(v_key, 'hex'));
	END IF;
END
$fn$;
`,
}

// lockKey is the advisory lock that serializes migrations of one schema
// across processes; other schemas take other locks.
func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("idem/migrate/" + schema))
	return int64(h.Sum64())
}

// migrate brings schema up to the latest version in one transaction that
// holds the schema's advisory lock: processes starting at once wait for
// each other, and the later ones find nothing to do.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema, ident string) (err error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: migrating schema %q: %w", schema, err) }
	tx, err := pool.Begin(ctx)
	if err != nil {
		return wrap(err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	// Wait for another process's migration however long it takes, whatever
	// lock_timeout WithLeaseTTL set.
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
		return wrap(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(schema)); err != nil {
		return wrap(err)
	}
	setup := "CREATE SCHEMA IF NOT EXISTS " + ident + ";\n" +
		"CREATE TABLE IF NOT EXISTS " + ident + ".schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
	if _, err := tx.Exec(ctx, setup); err != nil {
		return wrap(err)
	}
	var version int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+ident+".schema_migrations").Scan(&version); err != nil {
		return wrap(err)
	}
	if version > len(migrations) {
		return wrap(fmt.Errorf("the schema is at version %d, newer than this idem knows (%d): upgrade idem", version, len(migrations)))
	}
	for v := version + 1; v <= len(migrations); v++ {
		if _, err := tx.Exec(ctx, strings.ReplaceAll(migrations[v-1], "{s}", ident)); err != nil {
			return wrap(fmt.Errorf("version %d: %w", v, err))
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+ident+".schema_migrations (version) VALUES ($1)", v); err != nil {
			return wrap(fmt.Errorf("recording version %d: %w", v, err))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap(err)
	}
	return nil
}

// queries are the statements the driver runs, with the schema filled in.
type queries struct {
	checkpoint, deleteCheckpoint, progress, scopeProgress, completed, state, now string

	putCheckpoint, putMarks, putState, deleteState, putFailure, endRange string

	claimLocks, commitGate, checkUnclaimed, registerSession, unregisterSession, marksOf, unlock, claimRange string

	claim, complete, release, extend, claimHeld, lookup, checkFence string

	failures string

	purgeMarks, purgeCompletedClaims, purgeAbandonedClaims, purgeRangeClaims string
}

func newQueries(ident string) queries {
	r := strings.NewReplacer("{s}", ident)
	return queries{
		checkpoint:       r.Replace(`SELECT sequence, processed, skipped, discarded, lost FROM {s}.checkpoints WHERE mapping = $1 AND stream = $2 AND shard = $3`),
		deleteCheckpoint: r.Replace(`DELETE FROM {s}.checkpoints WHERE mapping = $1 AND stream = $2 AND shard = $3`),
		progress:         r.Replace(`SELECT high_water, above, filter FROM {s}.progress WHERE scope = $1 AND stream = $2 AND shard = $3 AND mapping = $4`),
		scopeProgress:    r.Replace(`SELECT mapping, high_water, above, filter FROM {s}.progress WHERE scope = $1 AND stream = $2 AND shard = $3`),
		now:              `SELECT now()`,
		completed:        r.Replace(`SELECT key FROM {s}.marks WHERE key = ANY($1::bytea[]) AND expires > $2`),
		state:            r.Replace(`SELECT value FROM {s}.state WHERE namespace = $1 AND key = $2`),

		putCheckpoint: r.Replace(`SELECT {s}.put_checkpoint_progress($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`),
		putMarks:      r.Replace(`INSERT INTO {s}.marks (key, expires) SELECT * FROM unnest($1::bytea[], $2::timestamptz[])`),
		putState: r.Replace(`INSERT INTO {s}.state (namespace, key, value) SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value`),
		deleteState: r.Replace(`DELETE FROM {s}.state WHERE (namespace, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))`),
		putFailure: r.Replace(`WITH f AS (INSERT INTO {s}.failures (destination, metadata) VALUES ($1, $2) RETURNING id)
INSERT INTO {s}.failure_records (failure_id, position, stream, shard, sequence, partition_key, data, arrival_time)
SELECT f.id, r.ord - 1, r.stream, r.shard, r.sequence, r.partition_key, r.data, r.arrival_time
FROM f, unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::timestamptz[])
	WITH ORDINALITY AS r (stream, shard, sequence, partition_key, data, arrival_time, ord)`),
		endRange: r.Replace(`DELETE FROM {s}.range_claims WHERE scope = $1 AND stream = $2 AND shard = $3 AND mapping = $4`),

		claimLocks:        r.Replace(`SELECT {s}.claim_locks($1, $2, $3)`),
		commitGate:        r.Replace(`SELECT {s}.commit_gate($1, $2)`),
		checkUnclaimed:    r.Replace(`SELECT {s}.check_unclaimed($1, $2)`),
		registerSession:   r.Replace(`INSERT INTO {s}.lock_sessions (live, gate) VALUES ($1, $2)`),
		unregisterSession: r.Replace(`DELETE FROM {s}.lock_sessions WHERE live = $1`),
		marksOf:           r.Replace(`SELECT {s}.marks_of($1, $2, $3, $4)`),
		unlock:            `SELECT count(pg_advisory_unlock(u.l)) FROM unnest($1::bigint[]) AS u (l)`,
		claimRange:        r.Replace(`SELECT r_held_until, r_mapping, r_high_water, r_above, r_filter FROM {s}.claim_range($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`),

		claim:      r.Replace(`SELECT r_acquired, r_status, r_token, r_payload_hash, r_lease_until, r_expires, r_result FROM {s}.claim($1, $2, $3, $4)`),
		complete:   r.Replace(`UPDATE {s}.claims SET status = 'COMPLETED', result = $3, expires = $4 WHERE key = $1 AND token = $2`),
		release:    r.Replace(`UPDATE {s}.claims SET lease_until = 'epoch' WHERE key = $1 AND token = $2 AND status = 'ACQUIRED'`),
		extend:     r.Replace(`UPDATE {s}.claims SET lease_until = $3 WHERE key = $1 AND token = $2 AND status = 'ACQUIRED'`),
		checkFence: r.Replace(`SELECT {s}.check_fence($1, $2)`),
		claimHeld:  r.Replace(`SELECT status FROM {s}.claims WHERE key = $1 AND token = $2`),
		lookup: r.Replace(`SELECT status, token, payload_hash, lease_until, expires, result FROM {s}.claims
WHERE key = $1 AND ((status = 'COMPLETED' AND (expires IS NULL OR expires > $2)) OR (status = 'ACQUIRED' AND lease_until > $2))`),

		failures: r.Replace(`WITH f AS (
	SELECT id, metadata, created_at FROM {s}.failures WHERE destination = $1 AND id > $2 ORDER BY id LIMIT $3)
SELECT f.id, f.metadata, f.created_at, r.stream, r.shard, r.sequence, r.partition_key, r.data, r.arrival_time
FROM f LEFT JOIN {s}.failure_records r ON r.failure_id = f.id
ORDER BY f.id, r.position`),

		purgeMarks: r.Replace(`DELETE FROM {s}.marks WHERE ctid = ANY(ARRAY(
	SELECT ctid FROM {s}.marks WHERE expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`),
		purgeCompletedClaims: r.Replace(`DELETE FROM {s}.claims WHERE key IN (
	SELECT key FROM {s}.claims WHERE status = 'COMPLETED' AND expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`),
		purgeAbandonedClaims: r.Replace(`DELETE FROM {s}.claims WHERE key IN (
	SELECT key FROM {s}.claims WHERE status = 'ACQUIRED' AND lease_until <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`),
		purgeRangeClaims: r.Replace(`DELETE FROM {s}.range_claims WHERE (scope, stream, shard, mapping) IN (
	SELECT scope, stream, shard, mapping FROM {s}.range_claims WHERE lease_until <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`),
	}
}

// errNoRows reports whether err is pgx's "no rows".
func errNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
