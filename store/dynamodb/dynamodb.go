// Package dynamodb is the store driver over Amazon DynamoDB, for
// deployments on AWS that want several idem processes (or a restart on
// another machine) to share checkpoints, completion marks, state,
// on-failure records and idempotency claims without running a database:
// one on-demand table holds everything.
//
// # Atomicity
//
// Commit sends the whole store.Write as one TransactWriteItems: the
// checkpoint, the mapping's progress, its completion marks, its state and
// its on-failure records, conditioned on the checkpoint not moving
// backwards and, under a lease, on the lease's fencing token. DynamoDB
// applies a transaction whole or not at all, so a refused condition
// (store.ErrCheckpointBackwards, store.ErrFenced) leaves nothing written.
// A Write is never split over several transactions. Each transaction
// carries a ClientRequestToken, so the SDK's retries of a request whose
// answer was lost do not apply it twice. A transaction is durable when
// DynamoDB answers: it is written to several availability zones first.
//
// # The transaction limit
//
// DynamoDB takes at most 100 items and 4 MB in one transaction
// (MaxTransactItems, MaxTransactBytes). A Write needs one item for its
// checkpoint, one for its progress or range claim, one for its fence, one
// per distinct completion mark, record-claim release and state key, and
// one per on-failure batch.
//
//   - Records keyed by identity (the default) are recorded by their
//     mapping's progress, one item whatever the batch: batchSize is not
//     limited by this store.
//   - Records keyed by their payload (idempotency.key) need a mark each, an
//     item that lookups find by its key: a batch of n such records needs up
//     to n+ReservedItems items, so such a mapping's batchSize may be at most
//     MaxPayloadKeyBatch (95). CheckBatch refuses more with a *BatchError,
//     and servers call it for every mapping at start (idem validate
//     too): "mappings[0].batchSize: 200 records with payload keys need up
//     to 205 transaction items; the dynamodb store allows 100".
//   - State is an item per key: a Write whose functions wrote more
//     distinct state keys than the transaction has room for, or a value
//     above MaxStateValue, cannot commit. The engine then commits fewer of
//     the batch's records (store.ErrWriteTooLarge), and sends a record
//     whose own writes cannot fit to the on-failure destination.
//
// Commit refuses a Write that does not fit, before anything is sent, with
// an error wrapping ErrTooLarge that says what it holds. An on-failure
// batch whose compressed JSON is above 64 KB is written first to items of
// its own, which nothing refers to until the transaction that commits its
// one item in the Write lands; so any discarded batch fits. The Store
// implements store.TxLimiter, with MaxWriteItems 100.
//
// # Table layout
//
// One table (WithTable, default "idem"), created if absent with on-demand
// billing (PAY_PER_REQUEST), a string partition key pk, a string sort key
// sk, no index, and time to live on the attribute expiration. Names inside
// keys (mappings, streams, shards, scopes, destinations, state namespaces
// and keys) are escaped: '%', '#', control characters and bytes of invalid
// UTF-8 as %XX, so keys whose parts concatenate alike stay apart; a key
// longer than DynamoDB allows (2048 bytes for pk, 1024 for sk) is replaced
// by <kind>h#<hex SHA-256 of it>. Times are 20-digit Unix nanoseconds
// (strings, which order as the times do and keep every digit: DynamoDB
// Local and emulators compute numbers in float64); expiration is Unix
// seconds, the number DynamoDB's TTL reads.
//
//	checkpoint of a mapping's shard
//	  pk cp#<mapping>#<stream>#<shard>   sk cp
//	  seq        the sequence as the source spelled it (absent when empty)
//	  ord        its order key, 6-digit length of its digits without leading zeros, then them: the commit's condition is ord <= the new one's
//	  processed, skipped, discarded, lost   numbers
//	progress and range claim of one mapping of a scope over a shard
//	  pk pg#<scope>#<stream>#<shard>     sk m#<mapping>
//	  mapping    the mapping, escaped
//	  progress   high water, ",seq" per sequence above it, then "|" and the escaped filter when there is one (absent: no progress)
//	  range      "first:last:lease end" while the mapping holds a range claim ("" once a commit ended it)
//	  v          version, new at every write
//	range claims' lock of that scope and shard
//	  pk pg#<scope>#<stream>#<shard>     sk v
//	  ver        moved on by every ClaimRange, which is conditioned on the one it read
//	completion mark and record claim of an idempotency key (store.MarkKey)
//	  pk k#<32 hex digits>               sk k
//	  exp        the mark's expiry (absent: no mark)
//	  owner      hex of the owner that claimed the key last
//	  l_<owner>  that owner's lease end (00000000000000000000 once it released it)
//	  v          version, new at every write; expiration
//	idempotency claim (store.Claims: Invoke API keys, journaled steps, shard leases)
//	  pk c#<32 hex digits>               sk c
//	  status INPROGRESS or COMPLETED, token, validation (hex SHA-256 of the payload), data (the result),
//	  in_progress_expiration (lease end, Unix ms), expiration
//	state value
//	  pk s#<namespace>#<key>             sk s
//	  val        the value (absent for an empty value)
//	on-failure batch (see Failures)
//	  pk f#<destination>                 sk <20-digit ns>#<16 hex digits>#<4 digits>
//	  shard, count, records (gzip-compressed JSON) or chunks (the number of its spilled chunks)
//	spilled chunk of a large on-failure batch
//	  pk fc#<destination>#<batch's sk>   sk <6 digits>
//	  records    a piece of the batch's gzip-compressed JSON
//
// A mark and its key's record claim share one item: the commit's Put of
// the mark replaces the claim, and a release (store.Write.Release) sets
// its owner's lease attribute to 0, so that a release by an owner that no
// longer holds the claim changes nothing, without a condition (a failed
// condition would cancel the whole commit). The mapping's item holds both
// its progress and its range claim, so a commit that ends the claim
// writes one item. No write removes an attribute: updates set them
// (minidyn's REMOVE is broken, and an empty binary corrupts its item).
//
// # Expiry
//
// Completion marks, record claims and idempotency claims carry
// expiration, so DynamoDB deletes them on its own: one grace period
// (WithExpiryGrace, default one hour) after a mark's expiry or a lease's
// end, and at a completed claim's expiry (neverExpires, the year 9999,
// for one kept for good). DynamoDB deletes lazily, days later at times,
// and emulators never: whether a mark or a claim is live is always
// decided from its timestamps and the now the caller passes, never from
// its presence, so an expired item not yet deleted counts as absent.
// Checkpoints, progress, state and on-failure records never expire.
//
// A claim's fencing token is its old token plus one or, for a key without
// a record (never claimed, or deleted by TTL), this host's clock in Unix
// microseconds: above any token a record deleted at least a grace period
// earlier held, as long as hosts' clocks agree within the grace.
//
// # Powertools' idempotency layout
//
// Idempotency claims use the attributes of Powertools for AWS Lambda's
// idempotency table, with Powertools' meanings: status (INPROGRESS,
// COMPLETED), expiration (Unix seconds, the TTL), in_progress_expiration
// (Unix milliseconds: the lease), validation (the payload hash) and data
// (the result, a string when it is UTF-8), plus token, idem's fencing
// token. It costs nothing, and the records read the same in the console.
// A Powertools table cannot be shared with idem, though, nor its
// in-flight records taken over: Powertools keys a record by id,
// "<function>#<MD5 of the key's JSON>", in a table whose only key is id,
// while idem keys it by the SHA-256 of its scope and key (store.MarkKeyOf)
// and keeps only that hash, so a key written by one is never found by the
// other, and Powertools' records have no fencing token. A team moving from
// Powertools lets its table's records expire and gives idem a table of its
// own: New refuses a table whose keys are not pk and sk, naming
// Powertools.
//
// # Leases and fencing
//
// Processes sharing the table take shard leases as idempotency claims
// (conditional writes on the claim's item, whose token increases with
// every acquisition), and every Commit, ClaimRecords and ClaimRange under
// a lease carries a ConditionCheck of the claim's token in its
// transaction: a process that lost its lease can never write after it.
//
// # Concurrency and retries
//
// ClaimRecords and ClaimRange read, then write conditioned on what they
// read (an item's version); when another writer changed an item in
// between, they read it again and decide again. A write that DynamoDB
// refused because another transaction held one of its items
// (TransactionConflict: a lease's Extend racing a commit fenced by that
// lease, say) is sent again a few times after a jittered pause of a few
// milliseconds; it applied nothing. The SDK's own retryer retries
// throttling and server errors, which on-demand tables see in bursts.
// These are the exceptions to store.Driver's one attempt.
//
// # Clock
//
// Store.Time is the Date header of a DynamoDB answer, to the second:
// processes sharing the table compare their clocks with it at start.
//
// # Earlier versions
//
// The store is newer than FNV-1a mark keys (store.LegacyKeyed): no table
// holds any, so it does not implement LegacyKeyed, and store.LegacyOf
// looks nothing up.
package dynamodb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem/internal/awsconfig"
	"github.com/idem-run/idem/store"
)

// DefaultTable is the table New uses without WithTable.
const DefaultTable = "idem"

// DefaultExpiryGrace is how long after their logical expiry marks and
// leases keep their items, without WithExpiryGrace.
const DefaultExpiryGrace = time.Hour

// Store is the DynamoDB store.Driver and store.Claims. It is safe for
// concurrent use; concurrent Commits are concurrent requests. After Close
// its methods return errors wrapping store.ErrClosed.
type Store struct {
	api    api
	table  *string
	grace  time.Duration
	log    *slog.Logger
	closed atomic.Bool
}

var (
	_ store.Driver     = (*Store)(nil)
	_ store.Claims     = (*Store)(nil)
	_ store.ClaimTaker = (*Store)(nil)
	_ store.Clock      = (*Store)(nil)
	_ store.TxLimiter  = (*Store)(nil)
)

// api is the part of *dynamodb.Client a Store calls.
type api interface {
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTimeToLive(context.Context, *dynamodb.DescribeTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error)
	UpdateTimeToLive(context.Context, *dynamodb.UpdateTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	BatchGetItem(context.Context, *dynamodb.BatchGetItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	BatchWriteItem(context.Context, *dynamodb.BatchWriteItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
	TransactWriteItems(context.Context, *dynamodb.TransactWriteItemsInput, ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
}

var _ api = (*dynamodb.Client)(nil)

// Option configures New.
type Option func(*options)

type options struct {
	client   *dynamodb.Client
	table    string
	region   string
	endpoint string
	grace    time.Duration
	log      *slog.Logger
}

// WithTable sets the table's name (default DefaultTable). Deployments that
// must not share records use tables of their own.
func WithTable(name string) Option { return func(o *options) { o.table = name } }

// WithRegion sets the AWS region; otherwise the SDK's default chain
// (AWS_REGION, the shared config file) decides, and us-east-1 is used with
// WithEndpoint when it finds none.
func WithRegion(region string) Option { return func(o *options) { o.region = region } }

// WithEndpoint sends requests to url instead of DynamoDB's endpoint for
// the region: DynamoDB Local, another emulator, or a VPC endpoint. When no
// credentials are configured (no AWS_ACCESS_KEY_ID, AWS_PROFILE or shared
// credentials file), static dummy credentials are used, as local emulators
// accept any. This is the Kinesis source's rule.
func WithEndpoint(url string) Option { return func(o *options) { o.endpoint = url } }

// WithClient makes the Store use client, configured by the caller
// (credentials, region, endpoint, retries, middleware). WithRegion and
// WithEndpoint are then ignored.
func WithClient(client *dynamodb.Client) Option { return func(o *options) { o.client = client } }

// WithExpiryGrace sets how long after a mark's expiry or a lease's end its
// item keeps its expiration (default DefaultExpiryGrace; negative counts
// as 0). Expiry is always decided from timestamps; the grace only has to
// exceed the clock skew between idem's hosts, and it bounds how long a
// lapsed lease that nobody took over may still be extended.
func WithExpiryGrace(d time.Duration) Option { return func(o *options) { o.grace = max(d, 0) } }

// WithLogger sets where New reports a table whose time to live it could
// not enable (default slog.Default()). The Store logs nothing else.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// NewClient returns a DynamoDB client made as New makes its own: the SDK's
// default configuration chain, with region and endpoint when they are not
// empty (see WithRegion and WithEndpoint).
func NewClient(ctx context.Context, region, endpoint string) (*dynamodb.Client, error) {
	cfg, err := awsconfig.Load(ctx, region, endpoint)
	if err != nil {
		return nil, fmt.Errorf("dynamodb store: %w", err)
	}
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	}), nil
}

// New opens the store in its table, creating the table if it does not
// exist (on-demand billing) and waiting until it is active, and enables
// its time to live on expiration. A table whose keys are not pk and sk
// (strings) is refused. A time to live that cannot be read or enabled
// (no permission, or an emulator without it) is logged as a warning:
// expiry is decided from timestamps, and only the space of expired items
// depends on it. ctx bounds those first calls only.
func New(ctx context.Context, opts ...Option) (*Store, error) {
	o := options{table: DefaultTable, grace: DefaultExpiryGrace}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if !validTable(o.table) {
		return nil, fmt.Errorf("dynamodb store: table name %q must be 3 to 255 of A-Z a-z 0-9 _ - .", o.table)
	}
	client := o.client
	if client == nil {
		c, err := NewClient(ctx, o.region, o.endpoint)
		if err != nil {
			return nil, err
		}
		client = c
	}
	return open(ctx, client, o)
}

func open(ctx context.Context, client api, o options) (*Store, error) {
	s := &Store{api: client, table: aws.String(o.table), grace: o.grace, log: o.log}
	if err := s.ensureTable(ctx); err != nil {
		return nil, err
	}
	s.ensureTTL(ctx)
	return s, nil
}

// validTable accepts DynamoDB's table names.
func validTable(name string) bool {
	if len(name) < 3 || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// ValidTable reports whether name is a DynamoDB table name: 3 to 255 of
// A-Z a-z 0-9 _ - and '.'. Configuration checks it before anything opens.
func ValidTable(name string) bool { return validTable(name) }

// Attribute names of the key and of the time to live.
const (
	attrPK         = "pk"
	attrSK         = "sk"
	attrExpiration = "expiration"
)

// ensureTable creates the table unless it exists, waits until it is
// active, and checks its keys.
func (s *Store) ensureTable(ctx context.Context) error {
	wrap := func(err error) error { return fmt.Errorf("dynamodb store: table %s: %w", *s.table, err) }
	out, err := s.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: s.table})
	if _, missing := errors.AsType[*types.ResourceNotFoundException](err); missing {
		_, err = s.api.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:   s.table,
			BillingMode: types.BillingModePayPerRequest,
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(attrPK), AttributeType: types.ScalarAttributeTypeS},
				{AttributeName: aws.String(attrSK), AttributeType: types.ScalarAttributeTypeS},
			},
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(attrSK), KeyType: types.KeyTypeRange},
			},
		})
		// Another process creating it at once is as good.
		if _, inUse := errors.AsType[*types.ResourceInUseException](err); err != nil && !inUse {
			return wrap(fmt.Errorf("creating it: %w", err))
		}
		out, err = s.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: s.table})
	}
	for err == nil && out.Table != nil && (out.Table.TableStatus == types.TableStatusCreating || out.Table.TableStatus == types.TableStatusUpdating) {
		select {
		case <-ctx.Done():
			return wrap(fmt.Errorf("waiting for it to become active: %w", ctx.Err()))
		case <-time.After(500 * time.Millisecond):
		}
		out, err = s.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: s.table})
	}
	if err != nil {
		return wrap(err)
	}
	if out.Table == nil {
		return wrap(errors.New("DescribeTable answered no table"))
	}
	if st := out.Table.TableStatus; st != "" && st != types.TableStatusActive {
		return wrap(fmt.Errorf("status %s, not ACTIVE", st))
	}
	if err := checkKeys(out.Table); err != nil {
		return wrap(err)
	}
	return nil
}

// checkKeys refuses a table whose keys are not pk and sk, strings: a
// Powertools idempotency table (key id), or a table of something else.
func checkKeys(t *types.TableDescription) error {
	var hash, rng string
	for _, k := range t.KeySchema {
		switch k.KeyType {
		case types.KeyTypeHash:
			hash = aws.ToString(k.AttributeName)
		case types.KeyTypeRange:
			rng = aws.ToString(k.AttributeName)
		}
	}
	if hash != attrPK || rng != attrSK {
		return fmt.Errorf("its key is (%q, %q), not (pk, sk): it is not an idem table (a Powertools idempotency table's key is id); give idem a table of its own", hash, rng)
	}
	for _, a := range t.AttributeDefinitions {
		if n := aws.ToString(a.AttributeName); (n == attrPK || n == attrSK) && a.AttributeType != "" && a.AttributeType != types.ScalarAttributeTypeS {
			return fmt.Errorf("its key attribute %s has type %s, not S", n, a.AttributeType)
		}
	}
	return nil
}

// ensureTTL enables the table's time to live on expiration, or warns.
func (s *Store) ensureTTL(ctx context.Context) {
	warn := func(msg string, err error) {
		s.log.Warn("dynamodb store: "+msg+"; expired marks and claims still count as absent, but DynamoDB will not delete them, "+
			"so the table grows: enable time to live on the attribute expiration", "table", *s.table, "error", err)
	}
	d, err := s.api.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: s.table})
	if err != nil {
		warn("could not read the table's time to live (an emulator without it, or no dynamodb:DescribeTimeToLive permission)", err)
		return
	}
	if t := d.TimeToLiveDescription; t != nil {
		switch t.TimeToLiveStatus {
		case types.TimeToLiveStatusEnabled, types.TimeToLiveStatusEnabling:
			if a := aws.ToString(t.AttributeName); a != attrExpiration {
				warn("the table's time to live is on "+a+", not on expiration", nil)
			}
			return
		}
	}
	_, err = s.api.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{TableName: s.table,
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(attrExpiration), Enabled: aws.Bool(true)}})
	if err != nil {
		warn("could not enable the table's time to live (no dynamodb:UpdateTimeToLive permission?)", err)
	}
}

// Close makes further calls fail with store.ErrClosed. The client holds
// no connections that need closing. It is safe to call more than once.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// Table returns the name of the table the Store keeps its items in.
func (s *Store) Table() string { return *s.table }

// enter returns an error wrapping store.ErrClosed after Close.
func (s *Store) enter(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("dynamodb store: %s: %w", op, store.ErrClosed)
	}
	return nil
}

// MaxWriteItems implements store.TxLimiter: a Write may touch at most
// MaxTransactItems items.
func (s *Store) MaxWriteItems() int { return MaxTransactItems }

// Time returns the time in the Date header of a DynamoDB answer (to the
// second, plus half a second for the truncation), the clock processes
// sharing the table compare theirs with; see store.Clock.
func (s *Store) Time(ctx context.Context) (time.Time, error) {
	if err := s.enter("time"); err != nil {
		return time.Time{}, err
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey("clock", "clock")})
	if err != nil {
		return time.Time{}, fmt.Errorf("dynamodb store: server time: %w", err)
	}
	t, ok := awsmiddleware.GetServerTime(out.ResultMetadata)
	if !ok {
		return time.Time{}, errors.New("dynamodb store: server time: the answer had no Date header")
	}
	return t.Add(500 * time.Millisecond), nil
}

// Key encodings.

// appendEscaped appends s with '%', '#', control characters and bytes of
// invalid UTF-8 written %XX: injective, and valid UTF-8 with no '#', so
// parts joined by '#' stay apart.
func appendEscaped(b []byte, s string) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || r < 0x20 || r == 0x7f || r == '%' || r == '#' {
			b = append(b, '%', hexDigits[s[i]>>4], hexDigits[s[i]&15])
			i++
			continue
		}
		b = append(b, s[i:i+n]...)
		i += n
	}
	return b
}

// unescape reverses appendEscaped.
func unescape(s string) (string, error) {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("corrupt escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("corrupt escape in %q", s)
		}
		b = append(b, byte(v))
		i += 2
	}
	return string(b), nil
}

// Limits of key attributes' values.
const (
	maxPKBytes = 2048
	maxSKBytes = 1024
)

// joinKey is kind, then '#' and each part escaped; a result longer than
// limit is kind + "h#" and the SHA-256 of it, in hex.
func joinKey(limit int, kind string, parts ...string) string {
	b := make([]byte, 0, 64)
	b = append(b, kind...)
	for _, p := range parts {
		b = append(b, '#')
		b = appendEscaped(b, p)
	}
	if len(b) > limit {
		sum := sha256.Sum256(b)
		return kind + "h#" + hex.EncodeToString(sum[:])
	}
	return string(b)
}

func checkpointPK(k store.CheckpointKey) string {
	return joinKey(maxPKBytes, "cp", k.Mapping, k.Stream, k.Shard)
}

func progressPK(k store.ProgressKey) string {
	return joinKey(maxPKBytes, "pg", k.Scope, k.Stream, k.Shard)
}

func mappingSK(mapping string) string { return joinKey(maxSKBytes, "m", mapping) }

func statePK(namespace, key string) string { return joinKey(maxPKBytes, "s", namespace, key) }

func markPK(k store.MarkKey) string { return "k#" + hex.EncodeToString(k[:]) }

func claimPK(k store.MarkKey) string { return "c#" + hex.EncodeToString(k[:]) }

// Sort keys of single items.
const (
	skCheckpoint = "cp"
	skVersion    = "v"
	skMark       = "k"
	skClaim      = "c"
	skState      = "s"
)

func itemKey(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrPK: str(pk), attrSK: str(sk)}
}

// Attribute values.

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func unum(n uint64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatUint(n, 10)}
}

func bin(b []byte) types.AttributeValue { return &types.AttributeValueMemberB{Value: b} }

// getS returns item[name] as a string, and whether it is one.
func getS(item map[string]types.AttributeValue, name string) (string, bool) {
	v, ok := item[name].(*types.AttributeValueMemberS)
	if !ok {
		return "", false
	}
	return v.Value, true
}

// getB returns item[name], binary, or a string as its bytes.
func getB(item map[string]types.AttributeValue, name string) ([]byte, bool) {
	switch v := item[name].(type) {
	case *types.AttributeValueMemberB:
		return v.Value, true
	case *types.AttributeValueMemberS:
		return []byte(v.Value), true
	}
	return nil, false
}

// getU returns item[name] as an unsigned number.
func getU(item map[string]types.AttributeValue, name string) (uint64, bool, error) {
	v, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v.Value, 10, 64)
	if err != nil {
		// A number written as 1e+21 or 1.0 by another tool.
		f, _, ferr := big.ParseFloat(v.Value, 10, 128, big.ToNearestEven)
		if ferr != nil || f.Sign() < 0 {
			return 0, true, fmt.Errorf("attribute %s: corrupt number %q", name, v.Value)
		}
		n, _ = f.Uint64()
	}
	return n, true, nil
}

// getI returns item[name] as a signed number.
func getI(item map[string]types.AttributeValue, name string) (int64, bool, error) {
	v, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v.Value, 10, 64)
	if err != nil {
		f, _, ferr := big.ParseFloat(v.Value, 10, 128, big.ToNearestEven)
		if ferr != nil {
			return 0, true, fmt.Errorf("attribute %s: corrupt number %q", name, v.Value)
		}
		n, _ = f.Int64()
	}
	return n, true, nil
}

// Times.

// nanos spells t as 20 digits of Unix nanoseconds, which compare as
// strings as the times do; the zero time and times before 1970 are 0.
func nanos(t time.Time) string {
	var n int64
	if !t.IsZero() && t.After(time.Unix(0, 0)) {
		n = t.UnixNano()
	}
	b := make([]byte, 0, 20)
	s := strconv.FormatInt(n, 10)
	for range 20 - len(s) {
		b = append(b, '0')
	}
	return string(append(b, s...))
}

// fromNanos reads what nanos wrote; 0 is the zero time.
func fromNanos(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("corrupt time %q", s)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, n), nil
}

// epochSeconds is t in Unix seconds, rounded up, for expiration.
func epochSeconds(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return max(s, 1)
}

// epochMillis is t in Unix milliseconds, rounded up.
func epochMillis(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Sub(time.UnixMilli(ms)) > 0 {
		ms++
	}
	return max(ms, 0)
}

// gcExpiration is the expiration of an item whose mark or lease ends at t:
// one grace later.
func (s *Store) gcExpiration(t time.Time) types.AttributeValue {
	return num(epochSeconds(t.Add(s.grace)))
}

// newVersion is a fresh value for an item's version attribute.
func newVersion() types.AttributeValue {
	var b [8]byte
	rand.Read(b[:])
	return str(hex.EncodeToString(b[:]))
}

// requestToken is a fresh ClientRequestToken for a transaction.
func requestToken() *string {
	var b [16]byte
	rand.Read(b[:])
	return aws.String(hex.EncodeToString(b[:]))
}

// maxAttempts bounds the read-decide-write rounds of ClaimRecords,
// ClaimRange and the claims that another writer may change in between.
const maxAttempts = 16

// pause waits a jittered few milliseconds before attempt (from 1) of a
// round another writer's transaction conflicted with.
func pause(ctx context.Context, attempt int) error {
	d := time.Duration(mrand.Int64N(int64(attempt)*int64(2*time.Millisecond) + 1))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// conditionFailed reports whether err cancelled a transaction because
// the condition of its item i failed.
func conditionFailed(err error, i int) bool {
	tce, ok := errors.AsType[*types.TransactionCanceledException](err)
	return ok && i >= 0 && i < len(tce.CancellationReasons) && aws.ToString(tce.CancellationReasons[i].Code) == "ConditionalCheckFailed"
}

// cancellation reads a TransactionCanceledException: the index of the
// first item whose condition failed (-1 for none), and whether any item
// was cancelled by a conflicting transaction or throttling.
func cancellation(err error) (failed int, conflict, ok bool) {
	tce, ok := errors.AsType[*types.TransactionCanceledException](err)
	if !ok {
		return -1, false, false
	}
	failed = -1
	for i, r := range tce.CancellationReasons {
		switch aws.ToString(r.Code) {
		case "ConditionalCheckFailed":
			if failed < 0 {
				failed = i
			}
		case "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded":
			conflict = true
		}
	}
	return failed, conflict, true
}

// maxConflicts bounds the attempts of a write that keeps racing
// transactions on its items.
const maxConflicts = 5

// conflicted reports whether err is DynamoDB's refusal of a write that
// raced another transaction on one of its items, and nothing else: the
// write applied nothing, and may be sent again at once.
func conflicted(err error) bool {
	if _, ok := errors.AsType[*types.TransactionConflictException](err); ok {
		return true
	}
	failed, conflict, ok := cancellation(err)
	return ok && conflict && failed < 0
}

// again runs write until it succeeds, fails other than by a conflict
// (conflicted), or has been tried maxConflicts times, with a jittered
// pause of a few milliseconds between tries. A transaction in flight
// holds its items for milliseconds: a shard lease's Extend, say, races
// the commits fenced by that lease.
func again(ctx context.Context, write func() error) error {
	for attempt := 1; ; attempt++ {
		err := write()
		if err == nil || !conflicted(err) || attempt == maxConflicts {
			return err
		}
		if pause(ctx, attempt) != nil {
			return err
		}
	}
}

// fenceCheck is the ConditionCheck of a fence: the claim of f.Key holds
// exactly f.Token.
func (s *Store) fenceCheck(f *store.Fence) types.TransactWriteItem {
	return types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{
		TableName:                s.table,
		Key:                      itemKey(claimPK(f.Key), skClaim),
		ConditionExpression:      aws.String("#tok = :tok"),
		ExpressionAttributeNames: map[string]string{"#tok": attrToken},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":tok": unum(f.Token),
		},
	}}
}

// fenced returns the error of a fence f that does not hold, with the token
// the claim holds, read for the message.
func (s *Store) fenced(ctx context.Context, f *store.Fence) error {
	held := "none"
	if out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(claimPK(f.Key), skClaim),
		ConsistentRead: aws.Bool(true)}); err == nil {
		if t, ok, _ := getU(out.Item, attrToken); ok {
			held = strconv.FormatUint(t, 10)
		}
	}
	return fmt.Errorf("%w: fence %x token %d (held: %s)", store.ErrFenced, f.Key[:], f.Token, held)
}

// checkFence reads the claim of f.Key and returns an error wrapping
// store.ErrFenced unless it holds f.Token.
func (s *Store) checkFence(ctx context.Context, f *store.Fence) error {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(claimPK(f.Key), skClaim),
		ConsistentRead: aws.Bool(true)})
	if err != nil {
		return err
	}
	t, ok, err := getU(out.Item, attrToken)
	if err != nil {
		return err
	}
	if !ok || t != f.Token {
		held := "none"
		if ok {
			held = strconv.FormatUint(t, 10)
		}
		return fmt.Errorf("%w: fence %x token %d (held: %s)", store.ErrFenced, f.Key[:], f.Token, held)
	}
	return nil
}
