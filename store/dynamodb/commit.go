package dynamodb

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// DynamoDB's limits on one transaction.
const (
	// MaxTransactItems is how many items one TransactWriteItems, and so
	// one Write, may touch.
	MaxTransactItems = 100
	// MaxTransactBytes is the aggregate size of one TransactWriteItems.
	MaxTransactBytes = 4 << 20
	// maxItemBytes is the size of one item.
	maxItemBytes = 400 << 10
)

// ReservedItems is how many items of a transaction a batch's Write may
// need besides its marks: its checkpoint, its progress or range claim,
// its fence, a tumbling window's state and one on-failure batch.
const ReservedItems = 5

// MaxPayloadKeyBatch is the largest batchSize of a mapping whose records
// are keyed by their payload (idempotency.key): each record's mark is an
// item of the batch's transaction.
const MaxPayloadKeyBatch = MaxTransactItems - ReservedItems

// MaxStateValue is the largest state value a Write may hold: what one
// item takes besides its key.
const MaxStateValue = maxItemBytes - 4<<10

// ErrTooLarge is wrapped by the errors of Writes that cannot fit one
// DynamoDB transaction (more than MaxTransactItems items, or
// MaxTransactBytes), and by CheckBatch's: nothing of such a Write is sent.
// It wraps store.ErrWriteTooLarge, which the engine acts on.
var ErrTooLarge = fmt.Errorf("dynamodb store: %w (one DynamoDB transaction)", store.ErrWriteTooLarge)

// BatchError is CheckBatch's refusal of a batch size.
type BatchError struct {
	// BatchSize is the refused batch size.
	BatchSize int
	// Items is how many transaction items a batch of that size may need.
	Items int
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("%d records with payload keys need up to %d transaction items; the dynamodb store allows %d (batchSize at most %d)",
		e.BatchSize, e.Items, MaxTransactItems, MaxPayloadKeyBatch)
}

// Unwrap makes a BatchError match ErrTooLarge.
func (e *BatchError) Unwrap() error { return ErrTooLarge }

// BatchItems returns how many transaction items the commit of one batch
// of batchSize records may need: ReservedItems, plus one mark per record
// when they are keyed by their payload. State keys the function writes
// come on top, one per distinct key.
func BatchItems(batchSize int, payloadKeys bool) int {
	if !payloadKeys {
		return ReservedItems
	}
	return ReservedItems + batchSize
}

// CheckBatch returns a *BatchError when the commit of a batch of batchSize
// records may need more than MaxTransactItems items: records keyed by
// their payload with batchSize above MaxPayloadKeyBatch. Configurations
// call it for each mapping before anything starts, and name the setting.
func CheckBatch(batchSize int, payloadKeys bool) error {
	if n := BatchItems(batchSize, payloadKeys); n > MaxTransactItems {
		return &BatchError{BatchSize: batchSize, Items: n}
	}
	return nil
}

// Attribute names.
const (
	attrSeq       = "seq"
	attrOrd       = "ord"
	attrProcessed = "processed"
	attrSkipped   = "skipped"
	attrDiscarded = "discarded"
	attrLost      = "lost"
	attrMapping   = "mapping"
	attrProgress  = "progress"
	attrRange     = "range"
	attrVersion   = "v"
	attrVer       = "ver"
	attrExp       = "exp"
	attrOwner     = "owner"
	attrVal       = "val"
)

// orderKey is the string that orders sequences as the numbers they spell:
// the length of the digits without leading zeros, in 6 digits, then them.
func orderKey(seq idem.Sequence) string {
	t := strings.TrimLeft(string(seq), "0")
	return fmt.Sprintf("%06d", len(t)) + t
}

// Checkpoint returns the checkpoint of key, and false if there is none.
func (s *Store) Checkpoint(ctx context.Context, key store.CheckpointKey) (store.Checkpoint, bool, error) {
	if err := s.enter("checkpoint"); err != nil {
		return store.Checkpoint{}, false, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("dynamodb store: checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(checkpointPK(key), skCheckpoint),
		ConsistentRead: aws.Bool(true)})
	if err != nil {
		return store.Checkpoint{}, false, wrap(err)
	}
	if len(out.Item) == 0 {
		return store.Checkpoint{}, false, nil
	}
	seq, _ := getS(out.Item, attrSeq)
	c := store.Checkpoint{Sequence: idem.Sequence(seq)}
	if !c.Sequence.Valid() {
		return store.Checkpoint{}, false, wrap(fmt.Errorf("corrupt sequence %q", seq))
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{attrProcessed, &c.Processed}, {attrSkipped, &c.Skipped}, {attrDiscarded, &c.Discarded}, {attrLost, &c.Lost}} {
		if *f.dst, _, err = getU(out.Item, f.name); err != nil {
			return store.Checkpoint{}, false, wrap(err)
		}
	}
	return c, true, nil
}

// Progress returns one mapping's completion progress over a shard, the
// zero Progress if there is none: one consistent GetItem of the mapping's
// item.
func (s *Store) Progress(ctx context.Context, key store.ProgressKey) (store.Progress, error) {
	if err := s.enter("progress"); err != nil {
		return store.Progress{}, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("dynamodb store: progress of scope %q mapping %q stream %q shard %s: %w", key.Scope, key.Mapping, key.Stream, key.Shard, err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(progressPK(key), mappingSK(key.Mapping)),
		ConsistentRead: aws.Bool(true)})
	if err != nil {
		return store.Progress{}, wrap(err)
	}
	p, _, err := decodeProgress(out.Item)
	if err != nil {
		return store.Progress{}, wrap(err)
	}
	return p, nil
}

// ScopeProgress returns the progress of every mapping of key.Scope over
// key.Stream and key.Shard: one consistent Query of their items.
// key.Mapping is ignored.
func (s *Store) ScopeProgress(ctx context.Context, key store.ProgressKey) ([]store.MappingProgress, error) {
	if err := s.enter("scope progress"); err != nil {
		return nil, err
	}
	items, err := s.queryPartition(ctx, progressPK(key))
	if err != nil {
		return nil, fmt.Errorf("dynamodb store: progress of scope %q stream %q shard %s: %w", key.Scope, key.Stream, key.Shard, err)
	}
	out, _, _, err := scopeItems(items)
	if err != nil {
		return nil, fmt.Errorf("dynamodb store: progress of scope %q stream %q shard %s: %w", key.Scope, key.Stream, key.Shard, err)
	}
	return out, nil
}

// queryPartition returns every item of partition pk, read consistently.
func (s *Store) queryPartition(ctx context.Context, pk string) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	in := &dynamodb.QueryInput{
		TableName:                 s.table,
		ConsistentRead:            aws.Bool(true),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": attrPK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(pk)},
	}
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return nil, err
		}
		items = append(items, out.Items...)
		if len(out.LastEvaluatedKey) == 0 {
			return items, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// scopeItems reads the items of a progress partition: every mapping's
// progress, the mappings' range claims, and the range claims' version
// ("" when there is none).
func scopeItems(items []map[string]types.AttributeValue) ([]store.MappingProgress, map[string]rangeClaim, string, error) {
	var out []store.MappingProgress
	ranges := map[string]rangeClaim{}
	version := ""
	for _, it := range items {
		sk, _ := getS(it, attrSK)
		if sk == skVersion {
			version, _ = getS(it, attrVer)
			continue
		}
		esc, ok := getS(it, attrMapping)
		if !ok {
			continue // an item EndRange made for a mapping with neither progress nor range
		}
		m, err := unescape(esc)
		if err != nil {
			return nil, nil, "", fmt.Errorf("item %s: %w", sk, err)
		}
		p, has, err := decodeProgress(it)
		if err != nil {
			return nil, nil, "", fmt.Errorf("mapping %q: %w", m, err)
		}
		if has {
			out = append(out, store.MappingProgress{Mapping: m, Progress: p})
		}
		if r, ok := getS(it, attrRange); ok && r != "" {
			rc, err := decodeRange(r)
			if err != nil {
				return nil, nil, "", fmt.Errorf("mapping %q: %w", m, err)
			}
			ranges[m] = rc
		}
	}
	return out, ranges, version, nil
}

// encodeProgress spells p as Redis does: its high water, then ",seq" per
// sequence above it, then "|" and the filter when there is one, escaped
// (appendEscaped) into UTF-8.
func encodeProgress(p *store.Progress) (string, error) {
	if !p.HighWater.Valid() {
		return "", fmt.Errorf("progress high water %q is not a decimal number", p.HighWater)
	}
	b := []byte(p.HighWater)
	for _, q := range p.Above {
		if q == "" || !q.Valid() {
			return "", fmt.Errorf("progress sequence %q is not a decimal number", q)
		}
		b = append(b, ',')
		b = append(b, q...)
	}
	if p.Filter != "" {
		b = append(b, '|')
		b = appendEscaped(b, p.Filter)
	}
	return string(b), nil
}

// decodeProgress reads a mapping item's progress, and whether it has one.
func decodeProgress(item map[string]types.AttributeValue) (store.Progress, bool, error) {
	v, ok := getS(item, attrProgress)
	if !ok {
		return store.Progress{}, false, nil
	}
	v, filter, _ := strings.Cut(v, "|")
	hw, rest, more := strings.Cut(v, ",")
	p := store.Progress{HighWater: idem.Sequence(hw)}
	if !p.HighWater.Valid() {
		return store.Progress{}, false, fmt.Errorf("corrupt progress %q", v)
	}
	if more {
		p.Above = make([]idem.Sequence, 0, strings.Count(rest, ",")+1)
		for q := range strings.SplitSeq(rest, ",") {
			if q == "" || !idem.Sequence(q).Valid() {
				return store.Progress{}, false, fmt.Errorf("corrupt progress %q", v)
			}
			p.Above = append(p.Above, idem.Sequence(q))
		}
	}
	if filter != "" {
		f, err := unescape(filter)
		if err != nil {
			return store.Progress{}, false, fmt.Errorf("corrupt progress filter: %w", err)
		}
		p.Filter = f
	}
	return p, true, nil
}

// Completed sets done[i] to whether keys[i] holds a mark that expires after
// now: consistent BatchGetItems of the marks' items, 100 keys each. An
// expired mark whose item DynamoDB has not deleted yet is not completed.
func (s *Store) Completed(ctx context.Context, keys []store.MarkKey, now time.Time, done []bool) error {
	if err := s.enter("completed"); err != nil {
		return err
	}
	if len(done) != len(keys) {
		return fmt.Errorf("dynamodb store: completed: %d keys but %d results", len(keys), len(done))
	}
	if len(keys) == 0 {
		return nil
	}
	items, err := s.getMarks(ctx, keys, true)
	if err != nil {
		return fmt.Errorf("dynamodb store: completed: %d marks: %w", len(keys), err)
	}
	t := nanos(now)
	for i, k := range keys {
		exp, ok := getS(items[k], attrExp)
		done[i] = ok && exp > t
	}
	return nil
}

// getMarks reads the items of keys (distinct ones once), consistently, in
// BatchGetItems of up to 100 keys, a few at once: all their attributes, or
// only the key and the mark's expiry when marksOnly. Keys without an item
// are absent from the map.
func (s *Store) getMarks(ctx context.Context, keys []store.MarkKey, marksOnly bool) (map[store.MarkKey]map[string]types.AttributeValue, error) {
	distinct := make([]store.MarkKey, 0, len(keys))
	seen := make(map[store.MarkKey]bool, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			distinct = append(distinct, k)
		}
	}
	type result struct {
		items []map[string]types.AttributeValue
		err   error
	}
	const perCall, atOnce = 100, 8
	results := make(chan result, (len(distinct)+perCall-1)/perCall)
	sem := make(chan struct{}, atOnce)
	n := 0
	for start := 0; start < len(distinct); start += perCall {
		chunk := distinct[start:min(start+perCall, len(distinct))]
		n++
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			items, err := s.batchGet(ctx, chunk, marksOnly)
			results <- result{items, err}
		}()
	}
	out := make(map[store.MarkKey]map[string]types.AttributeValue, len(distinct))
	var errs []error
	for range n {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		for _, it := range r.items {
			pk, _ := getS(it, attrPK)
			k, err := markKeyOf(pk)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out[k] = it
		}
	}
	return out, errors.Join(errs...)
}

// markKeyOf reads the key of a mark's partition key.
func markKeyOf(pk string) (store.MarkKey, error) {
	var k store.MarkKey
	h, ok := strings.CutPrefix(pk, "k#")
	if !ok || len(h) != 2*len(k) {
		return k, fmt.Errorf("corrupt mark key %q", pk)
	}
	for i := range k {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			return k, fmt.Errorf("corrupt mark key %q", pk)
		}
		k[i] = byte(v)
	}
	return k, nil
}

// batchGet reads up to 100 marks' items, asking again for the keys
// DynamoDB left unprocessed (it does under throttling) a few times.
func (s *Store) batchGet(ctx context.Context, keys []store.MarkKey, marksOnly bool) ([]map[string]types.AttributeValue, error) {
	req := types.KeysAndAttributes{ConsistentRead: aws.Bool(true)}
	if marksOnly {
		req.ProjectionExpression = aws.String("#pk, #exp")
		req.ExpressionAttributeNames = map[string]string{"#pk": attrPK, "#exp": attrExp}
	}
	for _, k := range keys {
		req.Keys = append(req.Keys, itemKey(markPK(k), skMark))
	}
	var items []map[string]types.AttributeValue
	for attempt := 1; ; attempt++ {
		out, err := s.api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{*s.table: req}})
		if err != nil {
			return nil, err
		}
		items = append(items, out.Responses[*s.table]...)
		left, ok := out.UnprocessedKeys[*s.table]
		if !ok || len(left.Keys) == 0 {
			return items, nil
		}
		if attempt == maxAttempts {
			return nil, fmt.Errorf("%d keys left unprocessed after %d attempts (throttled)", len(left.Keys), attempt)
		}
		if err := pause(ctx, attempt); err != nil {
			return nil, err
		}
		req.Keys = left.Keys
	}
}

// State returns the committed value of key in namespace, a copy the caller
// owns, or an error wrapping idem.ErrNotFound.
func (s *Store) State(ctx context.Context, namespace, key string) ([]byte, error) {
	if err := s.enter("state"); err != nil {
		return nil, err
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(statePK(namespace, key), skState),
		ConsistentRead: aws.Bool(true)})
	if err == nil && len(out.Item) == 0 {
		err = idem.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("dynamodb store: state %q in namespace %q: %w", key, namespace, err)
	}
	v, _ := getB(out.Item, attrVal)
	return append([]byte{}, v...), nil
}

// DeleteCheckpoint removes a mapping's checkpoint. Deleting a missing
// checkpoint is not an error.
func (s *Store) DeleteCheckpoint(ctx context.Context, key store.CheckpointKey) error {
	if err := s.enter("delete checkpoint"); err != nil {
		return err
	}
	if _, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: s.table, Key: itemKey(checkpointPK(key), skCheckpoint)}); err != nil {
		return fmt.Errorf("dynamodb store: delete checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	return nil
}

// txn is a transaction being built, with what it holds for the messages
// of ErrTooLarge.
type txn struct {
	items   []types.TransactWriteItem
	bytes   int
	marks   int
	release int
	state   int
	failed  int
	spills  []spill
	// markAt is the index of the first mark's Put; markKeys are the
	// marked keys, folded, in the order of their Puts.
	markAt   int
	markKeys []store.MarkKey
}

func (t *txn) add(item types.TransactWriteItem) {
	t.items = append(t.items, item)
	t.bytes += transactItemSize(&item)
}

// check returns an error wrapping ErrTooLarge when t does not fit one
// transaction.
func (t *txn) check() error {
	if len(t.items) > MaxTransactItems || t.bytes > MaxTransactBytes {
		return fmt.Errorf("%w: the write needs %d items of %d bytes (a checkpoint, %d marks, %d claim releases, %d state keys, %d on-failure batches, and the progress and fence); DynamoDB allows %d items and %d bytes in one transaction",
			ErrTooLarge, len(t.items), t.bytes, t.marks, t.release, t.state, t.failed, MaxTransactItems, MaxTransactBytes)
	}
	return nil
}

// Commit applies w in one TransactWriteItems: the checkpoint (a Put
// conditioned on the stored one being at or below it: otherwise an error
// wrapping store.ErrCheckpointBackwards), the fence's ConditionCheck
// (store.ErrFenced), the mapping's item (progress, and the end of its
// range claim), a Put per mark (which replaces the key's record claim), an
// Update per release (removing ReleaseOwner's lease), a Put or Delete per
// state key (the last op of a key wins), and a Put per on-failure batch.
// Repeated marks, releases and state keys are folded, since DynamoDB
// refuses two operations on one item in a transaction. With w.MarkOwner,
// each mark's Put is conditioned on its item (markOwned): the key must
// still be MarkOwner's claim, whatever its lease, or be neither claimed
// nor marked; otherwise the transaction is cancelled, and Commit returns
// an error wrapping store.ErrRecordClaimLost naming the key. The check
// is the mark's own write, in the commit's transaction, so no claim can
// be taken over between it and the commit. When several conditions
// fail, the fence's error comes first, then the checkpoint's, then the
// first lost claim's. A Write that
// cannot fit one transaction is refused before anything is sent, with an
// error wrapping ErrTooLarge. Commit does not keep w.
//
// An error from the connection (a timeout, ctx ended) leaves the outcome
// unknown: the transaction may have landed. A later Commit of the same
// shard moves the checkpoint on either way.
func (s *Store) Commit(ctx context.Context, w *store.Write) error {
	cp := w.Checkpoint
	wrap := func(err error) error {
		return fmt.Errorf("dynamodb store: commit for mapping %q stream %q shard %s: %w", cp.Mapping, cp.Stream, cp.Shard, err)
	}
	if err := s.enter("commit"); err != nil {
		return err
	}
	t, err := s.build(w)
	if err != nil {
		return wrap(err)
	}
	if len(t.spills) > 0 {
		if err := s.writeSpills(ctx, t.spills); err != nil {
			return wrap(fmt.Errorf("writing large on-failure batches: %w", err))
		}
	}
	err = again(ctx, func() error {
		_, err := s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: t.items, ClientRequestToken: requestToken()})
		return err
	})
	if err == nil {
		return nil
	}
	failed, _, cancelled := cancellation(err)
	if cancelled || isValidation(err) {
		// Refused whole: the spilled chunks will never be referred to.
		s.deleteSpills(context.WithoutCancel(ctx), t.spills)
	}
	switch {
	case w.Fence != nil && conditionFailed(err, 1):
		// The fence first, as on the other stores.
		return wrap(s.fenced(ctx, w.Fence))
	case failed == 0:
		stored := "?"
		if c, ok, err := s.Checkpoint(ctx, cp); err == nil && ok {
			stored = string(c.Sequence)
		}
		return wrap(fmt.Errorf("%w: from %q to %q", store.ErrCheckpointBackwards, stored, w.NewCheckpoint.Sequence))
	case w.MarkOwner != (store.MarkKey{}) && failed >= t.markAt && failed < t.markAt+len(t.markKeys):
		return wrap(claimLost(t.markKeys[failed-t.markAt], w.MarkOwner, err, failed))
	}
	return wrap(err)
}

// markOwned is the condition of a mark's Put under a Write's MarkOwner
// (:owner, in hex as ClaimRecords writes attribute owner): the item is
// MarkOwner's claim, whatever its lease (an expired claim nobody took
// over is still its own, and the run it covered may commit), or it holds
// neither a claim nor a mark (no item, or one a release left). Another
// owner in attribute owner took the claim over once its lease ran out; a
// mark's expiry without an owner (the mark's Put replaced the claim)
// means a run committed the key, expired or not: either way the record
// may have run elsewhere, and this commit must not land. A claim over an
// expired mark keeps the mark's expiry but names its owner, so it passes
// as that owner's claim.
const markOwned = "#o = :owner OR (attribute_not_exists(#o) AND attribute_not_exists(#exp))"

// claimLost is the error of a Commit whose mark of key, the transaction's
// item i, failed markOwned. It says what holds the key when DynamoDB
// returned the item with the cancellation (the Put asks for it with
// ReturnValuesOnConditionCheckFailure, at no extra round trip; minidyn
// ignores that on a transaction's Put, so the message stays generic).
func claimLost(key, owner store.MarkKey, err error, i int) error {
	held := "claimed by another owner, or marked"
	if tce, ok := errors.AsType[*types.TransactionCanceledException](err); ok && i < len(tce.CancellationReasons) {
		item := tce.CancellationReasons[i].Item
		if o, ok := getS(item, attrOwner); ok {
			held = "claimed by owner " + o
		} else if exp, ok := getS(item, attrExp); ok {
			held = "marked (expiry " + exp + " ns)"
		}
	}
	return fmt.Errorf("%w: key %x is no longer claimed by owner %x (%s): its record may have run elsewhere, so this commit is refused",
		store.ErrRecordClaimLost, key[:], owner[:], held)
}

// isValidation reports whether DynamoDB refused a request as invalid: it
// applied nothing.
func isValidation(err error) bool {
	var code interface{ ErrorCode() string }
	return errors.As(err, &code) && strings.Contains(code.ErrorCode(), "ValidationException")
}

// build makes the transaction of w.
func (s *Store) build(w *store.Write) (*txn, error) {
	c := &w.NewCheckpoint
	if !c.Sequence.Valid() {
		return nil, fmt.Errorf("checkpoint sequence %q is not a decimal number", c.Sequence)
	}
	t := &txn{items: make([]types.TransactWriteItem, 0, 3+len(w.Marks)+len(w.Release)+len(w.State)+len(w.Failures))}
	cpItem := map[string]types.AttributeValue{
		attrPK: str(checkpointPK(w.Checkpoint)), attrSK: str(skCheckpoint),
		attrOrd:       str(orderKey(c.Sequence)),
		attrProcessed: unum(c.Processed), attrSkipped: unum(c.Skipped), attrDiscarded: unum(c.Discarded), attrLost: unum(c.Lost),
	}
	if c.Sequence != "" {
		cpItem[attrSeq] = str(string(c.Sequence))
	}
	t.add(types.TransactWriteItem{Put: &types.Put{
		TableName:                 s.table,
		Item:                      cpItem,
		ConditionExpression:       aws.String("attribute_not_exists(#ord) OR #ord <= :ord"),
		ExpressionAttributeNames:  map[string]string{"#ord": attrOrd},
		ExpressionAttributeValues: map[string]types.AttributeValue{":ord": str(orderKey(c.Sequence))},
	}})
	if w.Fence != nil {
		t.add(s.fenceCheck(w.Fence))
	}
	if w.HasProgress || w.EndRange {
		item, err := s.mappingUpdate(w)
		if err != nil {
			return nil, err
		}
		t.add(item)
	}

	// Marks, folded by key: the latest expiry wins.
	marked := make(map[store.MarkKey]time.Time, len(w.Marks))
	order := make([]store.MarkKey, 0, len(w.Marks))
	for _, m := range w.Marks {
		if old, ok := marked[m.Key]; !ok {
			order = append(order, m.Key)
			marked[m.Key] = m.Expires
		} else if m.Expires.After(old) {
			marked[m.Key] = m.Expires
		}
	}
	// Under a MarkOwner, each Put is conditioned on the claim it replaces
	// (markOwned): a key marked twice has one Put, so it is checked once.
	var ownedNames map[string]string
	var ownedValues map[string]types.AttributeValue
	if w.MarkOwner != (store.MarkKey{}) {
		ownedNames = map[string]string{"#o": attrOwner, "#exp": attrExp}
		ownedValues = map[string]types.AttributeValue{":owner": str(hex.EncodeToString(w.MarkOwner[:]))}
	}
	t.markAt, t.markKeys = len(t.items), order
	for _, k := range order {
		exp := marked[k]
		put := &types.Put{TableName: s.table, Item: map[string]types.AttributeValue{
			attrPK: str(markPK(k)), attrSK: str(skMark),
			attrExp: str(nanos(exp)), attrExpiration: s.gcExpiration(exp), attrVersion: newVersion(),
		}}
		if ownedNames != nil {
			put.ConditionExpression = aws.String(markOwned)
			put.ExpressionAttributeNames, put.ExpressionAttributeValues = ownedNames, ownedValues
			put.ReturnValuesOnConditionCheckFailure = types.ReturnValuesOnConditionCheckFailureAllOld
		}
		t.add(types.TransactWriteItem{Put: put})
		t.marks++
	}

	// Releases of keys without a mark (the mark replaces the claim).
	released := make(map[store.MarkKey]bool, len(w.Release))
	lease := leaseAttr(w.ReleaseOwner)
	for _, k := range w.Release {
		if _, ok := marked[k]; ok || released[k] {
			continue
		}
		released[k] = true
		t.add(types.TransactWriteItem{Update: &types.Update{
			TableName:                s.table,
			Key:                      itemKey(markPK(k), skMark),
			UpdateExpression:         aws.String("SET #l = :ended, #exp = if_not_exists(#exp, :gc), #v = :v"),
			ExpressionAttributeNames: map[string]string{"#l": lease, "#exp": attrExpiration, "#v": attrVersion},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":ended": str(nanos(time.Time{})), ":gc": s.gcExpiration(time.Now()), ":v": newVersion(),
			},
		}})
		t.release++
	}

	// State, folded by key: the last op wins.
	type stateKey struct{ ns, key string }
	last := make(map[stateKey]int, len(w.State))
	for i := range w.State {
		last[stateKey{w.State[i].Namespace, w.State[i].Key}] = i
	}
	for i := range w.State {
		op := &w.State[i]
		if last[stateKey{op.Namespace, op.Key}] != i {
			continue
		}
		pk := statePK(op.Namespace, op.Key)
		if op.Delete {
			t.add(types.TransactWriteItem{Delete: &types.Delete{TableName: s.table, Key: itemKey(pk, skState)}})
		} else {
			if len(op.Value) > MaxStateValue {
				return nil, fmt.Errorf("%w: state %q in namespace %q is %d bytes; a DynamoDB item holds at most %d",
					ErrTooLarge, op.Key, op.Namespace, len(op.Value), MaxStateValue)
			}
			item := itemKey(pk, skState)
			if len(op.Value) > 0 {
				item[attrVal] = bin(op.Value) // DynamoDB Local and emulators mishandle empty binaries
			}
			t.add(types.TransactWriteItem{Put: &types.Put{TableName: s.table, Item: item}})
		}
		t.state++
	}

	commit := ""
	if len(w.Failures) > 0 {
		commit = failureCommit()
	}
	for i := range w.Failures {
		item, sp, err := s.failureItem(&w.Failures[i], commit, i)
		if err != nil {
			return nil, err
		}
		t.add(types.TransactWriteItem{Put: &types.Put{TableName: s.table, Item: item}})
		t.spills = append(t.spills, sp...)
		t.failed++
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}

// mappingUpdate is the Update of w's mapping item: its progress, when
// w.HasProgress, and the end of its range claim (an empty range), with
// w.EndRange.
func (s *Store) mappingUpdate(w *store.Write) (types.TransactWriteItem, error) {
	names := map[string]string{"#m": attrMapping, "#v": attrVersion}
	values := map[string]types.AttributeValue{
		":m": str(string(appendEscaped(nil, w.ProgressKey.Mapping))), ":v": newVersion(),
	}
	set := []string{"#m = :m", "#v = :v"}
	if w.HasProgress {
		p, err := encodeProgress(&w.Progress)
		if err != nil {
			return types.TransactWriteItem{}, err
		}
		names["#p"], values[":p"] = attrProgress, str(p)
		set = append(set, "#p = :p")
	}
	if w.EndRange {
		names["#r"], values[":none"] = attrRange, str("")
		set = append(set, "#r = :none")
	}
	return types.TransactWriteItem{Update: &types.Update{
		TableName:                 s.table,
		Key:                       itemKey(progressPK(w.ProgressKey), mappingSK(w.ProgressKey.Mapping)),
		UpdateExpression:          aws.String("SET " + strings.Join(set, ", ")),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}}, nil
}

// transactItemSize approximates what an item of a transaction counts
// against MaxTransactBytes: the attributes a Put writes, the key and
// values of the others.
func transactItemSize(it *types.TransactWriteItem) int {
	switch {
	case it.Put != nil:
		return itemSize(it.Put.Item) + itemSize(it.Put.ExpressionAttributeValues)
	case it.Update != nil:
		return itemSize(it.Update.Key) + itemSize(it.Update.ExpressionAttributeValues) + len(aws.ToString(it.Update.UpdateExpression))
	case it.Delete != nil:
		return itemSize(it.Delete.Key)
	case it.ConditionCheck != nil:
		return itemSize(it.ConditionCheck.Key) + itemSize(it.ConditionCheck.ExpressionAttributeValues)
	}
	return 0
}

// itemSize is an item's size as DynamoDB counts it: each attribute's name
// and value.
func itemSize(item map[string]types.AttributeValue) int {
	n := 0
	for name, v := range item {
		n += len(name) + valueSize(v)
	}
	return n
}

// valueSize is DynamoDB's size of one value: bytes of strings and
// binaries, about half the digits of a number plus one, 3 bytes plus the
// elements of lists and maps.
func valueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return (len(v.Value)+1)/2 + 1
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += 1 + valueSize(e)
		}
		return n
	case *types.AttributeValueMemberM:
		n := 3
		for k, e := range v.Value {
			n += 1 + len(k) + valueSize(e)
		}
		return n
	}
	return 0
}
