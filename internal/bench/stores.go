package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/dynamodb"
	stembedded "github.com/idem-run/idem/store/embedded"
	"github.com/idem-run/idem/store/postgres"
	"github.com/idem-run/idem/store/redis"
)

// storeKind names the store Config.Store selects, for the report.
func storeKind(spec string) string {
	switch {
	case spec == "" || spec == "embedded":
		return "embedded"
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return "postgres"
	case strings.HasPrefix(spec, "redis://"):
		return "redis"
	case strings.HasPrefix(spec, "dynamodb://"):
		return "dynamodb"
	}
	return ""
}

// checkStore refuses a Store setting no scenario can use.
func checkStore(spec string) error {
	if storeKind(spec) == "" {
		return fmt.Errorf("store %q: want embedded, a postgres:// DSN, a redis://host:port[/db] URL or a dynamodb://[host:port][/table][?region=R] URL", spec)
	}
	if storeKind(spec) == "dynamodb" {
		if _, err := dynamodb.ParseURL(spec); err != nil {
			return err
		}
	}
	return nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// redisOptions parses redis://host:port[/db].
func redisOptions(spec string) (addr string, db int, err error) {
	u, err := url.Parse(spec)
	if err != nil {
		return "", 0, fmt.Errorf("store %q: %w", spec, err)
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if db, err = strconv.Atoi(p); err != nil {
			return "", 0, fmt.Errorf("store %q: database %q is not a number", spec, p)
		}
	}
	return u.Host, db, nil
}

// openStore opens a fresh, empty store of the configured kind for one
// scenario: the embedded store over db, or a new schema or key prefix in
// the shared server. cleanup removes what the scenario wrote.
func openStore(ctx context.Context, spec string, db *pebbledb.DB) (st store.Driver, cleanup func(), err error) {
	switch storeKind(spec) {
	case "postgres":
		schema := "idem_bench_" + randomSuffix()
		pg, err := postgres.New(ctx, spec, postgres.WithSchema(schema), postgres.WithLogger(discardLogger()))
		if err != nil {
			return nil, nil, err
		}
		return pg, func() {
			pg.Close()
			if conn, err := pgx.Connect(context.Background(), spec); err == nil {
				conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
				conn.Close(context.Background())
			}
		}, nil
	case "redis":
		addr, n, err := redisOptions(spec)
		if err != nil {
			return nil, nil, err
		}
		prefix := "idem-bench-" + randomSuffix()
		rs, err := redis.New(ctx, redis.WithAddr(addr), redis.WithDB(n), redis.WithPrefix(prefix), redis.WithLogger(discardLogger()))
		if err != nil {
			return nil, nil, err
		}
		return rs, func() {
			rs.Close()
			deleteRedisPrefix(addr, n, "{"+prefix+"}:*")
		}, nil
	case "dynamodb":
		// A table of its own per scenario, named after the URL's, deleted
		// after.
		u, err := dynamodb.ParseURL(spec)
		if err != nil {
			return nil, nil, err
		}
		u.Table = benchTable(u.Table, "")
		client, err := dynamodb.NewClient(ctx, u.Region, u.Endpoint)
		if err != nil {
			return nil, nil, err
		}
		ds, err := dynamodb.New(ctx, dynamodb.WithClient(client), dynamodb.WithTable(u.Table), dynamodb.WithLogger(discardLogger()))
		if err != nil {
			return nil, nil, err
		}
		return ds, func() {
			ds.Close()
			client.DeleteTable(context.Background(), &awsddb.DeleteTableInput{TableName: aws.String(u.Table)})
		}, nil
	}
	return stembedded.New(db), func() {}, nil
}

// benchTable names a fresh table after base: base, kind, a random suffix.
func benchTable(base, kind string) string {
	name := base + "-bench-" + kind + randomSuffix()
	if len(name) > 255 {
		name = name[len(name)-255:]
	}
	return name
}

func deleteRedisPrefix(addr string, db int, match string) {
	ctx := context.Background()
	c := goredis.NewClient(&goredis.Options{Addr: addr, DB: db})
	defer c.Close()
	iter := c.Scan(ctx, 0, match, 1000).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

// baseline is the idempotency store a Powertools-style library keeps: one
// durable write to claim a record and one to complete it, on the same kind
// of store idem's scenarios use.
type baseline interface {
	claim(ctx context.Context, key string) error
	complete(ctx context.Context, key string) error
	close()
}

func newBaseline(ctx context.Context, spec, dir string) (baseline, error) {
	switch storeKind(spec) {
	case "postgres":
		return newPGBaseline(ctx, spec)
	case "dynamodb":
		return newDynamoBaseline(ctx, spec)
	case "redis":
		addr, n, err := redisOptions(spec)
		if err != nil {
			return nil, err
		}
		return &redisBaseline{c: goredis.NewClient(&goredis.Options{Addr: addr, DB: n}), addr: addr, db: n, prefix: "idem-bench-baseline-" + randomSuffix() + ":"}, nil
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	return &pebbleBaseline{db: db}, nil
}

type pebbleBaseline struct{ db *pebble.DB }

func (p *pebbleBaseline) claim(_ context.Context, key string) error {
	return p.db.Set([]byte(key), []byte("INPROGRESS"), pebble.Sync)
}

func (p *pebbleBaseline) complete(_ context.Context, key string) error {
	return p.db.Set([]byte(key), []byte("COMPLETED"), pebble.Sync)
}

func (p *pebbleBaseline) close() { p.db.Close() }

// pgBaseline claims with an INSERT that takes an absent or expired key and
// completes with an UPDATE, each its own committed transaction.
type pgBaseline struct {
	pool   *pgxpool.Pool
	table  string
	dsn    string
	schema string
}

func newPGBaseline(ctx context.Context, dsn string) (*pgBaseline, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, err
	}
	schema := "idem_bench_baseline_" + randomSuffix()
	table := pgx.Identifier{schema, "idempotency"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()+"; CREATE TABLE "+table+
		" (key text PRIMARY KEY, status text NOT NULL, expires timestamptz NOT NULL)"); err != nil {
		pool.Close()
		return nil, err
	}
	return &pgBaseline{pool: pool, table: table, dsn: dsn, schema: schema}, nil
}

func (p *pgBaseline) claim(ctx context.Context, key string) error {
	tag, err := p.pool.Exec(ctx, "INSERT INTO "+p.table+" (key, status, expires) VALUES ($1, 'INPROGRESS', now() + interval '1 hour') "+
		"ON CONFLICT (key) DO UPDATE SET status = 'INPROGRESS', expires = excluded.expires WHERE "+p.table+".expires < now()", key)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("key %s is already claimed", key)
	}
	return err
}

func (p *pgBaseline) complete(ctx context.Context, key string) error {
	_, err := p.pool.Exec(ctx, "UPDATE "+p.table+" SET status = 'COMPLETED', expires = now() + interval '1 day' WHERE key = $1", key)
	return err
}

func (p *pgBaseline) close() {
	p.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{p.schema}.Sanitize()+" CASCADE")
	p.pool.Close()
}

// redisBaseline claims with SET NX and completes with SET, as a Redis
// idempotency store does.
type redisBaseline struct {
	c      *goredis.Client
	addr   string
	db     int
	prefix string
}

func (r *redisBaseline) claim(ctx context.Context, key string) error {
	ok, err := r.c.SetNX(ctx, r.prefix+key, "INPROGRESS", 0).Result()
	if err == nil && !ok {
		err = fmt.Errorf("key %s is already claimed", key)
	}
	return err
}

func (r *redisBaseline) complete(ctx context.Context, key string) error {
	return r.c.Set(ctx, r.prefix+key, "COMPLETED", 0).Err()
}

func (r *redisBaseline) close() {
	r.c.Close()
	deleteRedisPrefix(r.addr, r.db, r.prefix+"*")
}

// dynamoBaseline is Powertools' idempotency table: a table keyed by id, a
// conditional PutItem to claim a record (absent, or expired) and an
// UpdateItem to complete it, each a durable write of its own.
type dynamoBaseline struct {
	client *awsddb.Client
	table  *string
}

func newDynamoBaseline(ctx context.Context, spec string) (*dynamoBaseline, error) {
	u, err := dynamodb.ParseURL(spec)
	if err != nil {
		return nil, err
	}
	client, err := dynamodb.NewClient(ctx, u.Region, u.Endpoint)
	if err != nil {
		return nil, err
	}
	b := &dynamoBaseline{client: client, table: aws.String(benchTable(u.Table, "baseline-"))}
	if _, err := client.CreateTable(ctx, &awsddb.CreateTableInput{
		TableName: b.table, BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
	}); err != nil {
		return nil, err
	}
	for {
		out, err := client.DescribeTable(ctx, &awsddb.DescribeTableInput{TableName: b.table})
		if err != nil {
			b.close()
			return nil, err
		}
		if st := out.Table.TableStatus; st != ddbtypes.TableStatusCreating {
			return b, nil
		}
		select {
		case <-ctx.Done():
			b.close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (d *dynamoBaseline) claim(ctx context.Context, key string) error {
	now := time.Now()
	_, err := d.client.PutItem(ctx, &awsddb.PutItemInput{
		TableName: d.table,
		Item: map[string]ddbtypes.AttributeValue{
			"id":                     &ddbtypes.AttributeValueMemberS{Value: key},
			"status":                 &ddbtypes.AttributeValueMemberS{Value: "INPROGRESS"},
			"expiration":             &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(now.Add(time.Hour).Unix(), 10)},
			"in_progress_expiration": &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(now.Add(time.Minute).UnixMilli(), 10)},
		},
		ConditionExpression:      aws.String("attribute_not_exists(#id) OR #exp < :now"),
		ExpressionAttributeNames: map[string]string{"#id": "id", "#exp": "expiration"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":now": &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(now.Unix(), 10)},
		},
	})
	return err
}

func (d *dynamoBaseline) complete(ctx context.Context, key string) error {
	_, err := d.client.UpdateItem(ctx, &awsddb.UpdateItemInput{
		TableName:                d.table,
		Key:                      map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: key}},
		UpdateExpression:         aws.String("SET #st = :done, #exp = :exp"),
		ExpressionAttributeNames: map[string]string{"#st": "status", "#exp": "expiration"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":done": &ddbtypes.AttributeValueMemberS{Value: "COMPLETED"},
			":exp":  &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(time.Now().Add(24*time.Hour).Unix(), 10)},
		},
	})
	return err
}

func (d *dynamoBaseline) close() {
	d.client.DeleteTable(context.Background(), &awsddb.DeleteTableInput{TableName: d.table})
}

// prefillMarks commits n live completion marks into st, under a
// checkpoint of their own, in commits of 1,000 marks (on DynamoDB, of as
// many as one transaction holds beside the checkpoint:
// dynamodb.MaxPayloadKeyBatch). Their keys are in a scope of their own,
// so no scenario's record finds one.
//
// It first asks st when its legacy-keyed records expire
// (store.LegacyKeyed), as the first engine started on the store would
// have while it was empty: a store fixes that answer when first asked,
// from the marks it holds then, which it cannot tell from an earlier
// version's. Asked after the prefill, the store would take the prefill's
// marks for legacy ones, and every claim would look the window's keys up
// a second time, under their legacy keys, for as long as they live.
func prefillMarks(ctx context.Context, st store.Driver, n int, kind string) error {
	if _, err := store.LegacyOf(ctx, st); err != nil {
		return fmt.Errorf("prefilling the store with %d marks: %w", n, err)
	}
	batch := 1000
	if kind == "dynamodb" {
		batch = dynamodb.MaxPayloadKeyBatch
	}
	expires := time.Now().Add(24 * time.Hour)
	w := store.Write{Checkpoint: store.CheckpointKey{Mapping: "bench-prefill", Stream: "prefill", Shard: "0"}}
	for i := 0; i < n; i += batch {
		w.Marks = w.Marks[:0]
		for j := i; j < min(i+batch, n); j++ {
			w.Marks = append(w.Marks, store.Mark{Key: store.MarkKeyOf("bench-prefill", strconv.Itoa(j)), Expires: expires})
		}
		w.NewCheckpoint = store.Checkpoint{Sequence: idem.SequenceOf(uint64(i + 1))}
		if err := st.Commit(ctx, &w); err != nil {
			return fmt.Errorf("prefilling the store with %d marks: %w", n, err)
		}
	}
	return nil
}
