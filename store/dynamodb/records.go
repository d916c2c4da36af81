package dynamodb

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// A record claim (store.RecordClaims) lives in its key's mark item: owner,
// the claiming owner in hex, and l_<owner>, its lease end. The lease's
// attribute is named after its owner so that a release, which must not
// end another owner's claim yet cannot be a condition (a failed condition
// cancels the whole commit), ends only its own owner's lease (setting it
// to 0). Only the lease of the owner the item names counts.

// leaseAttr is the attribute of owner's lease in a mark item.
func leaseAttr(owner store.MarkKey) string { return "l_" + hex.EncodeToString(owner[:]) }

// claimsPerTxn is how many keys one transaction of ClaimRecords claims,
// leaving room for the fence's ConditionCheck.
const claimsPerTxn = MaxTransactItems - 1

// ClaimRecords claims c.Keys for c.Owner; see store.RecordClaims. It reads
// the keys' items (consistent BatchGetItems, concurrently), walks the keys
// in window order to the first one another owner holds under a running
// lease, and writes the claims of the keys before it in transactions of up
// to 99 keys and the fence's ConditionCheck, each key's write conditioned
// on its item's version being the one it read. A key another writer
// changed in between is read again and the walk goes on from it. A fence
// that does not hold makes an error wrapping store.ErrFenced: nothing is
// claimed when it did not hold at the first transaction (a window of more
// than 99 keys may keep the claims of its first transactions if the lease
// is lost between them: they are the owner's, whoever holds its lease
// next, and end with their lease). Marks and leases are decided from
// c.Now, never from expiration.
func (s *Store) ClaimRecords(ctx context.Context, c *store.RecordClaims) error {
	c.Reset()
	if err := s.enter("claim records"); err != nil {
		return err
	}
	wrap := func(err error) error {
		return fmt.Errorf("dynamodb store: claim records of owner %x (%d keys): %w", c.Owner[:], len(c.Keys), err)
	}
	if len(c.Keys) == 0 {
		if c.Fence != nil {
			if err := s.checkFence(ctx, c.Fence); err != nil {
				return wrap(err)
			}
		}
		return nil
	}
	items, err := s.getMarks(ctx, c.Keys, false)
	if err != nil {
		return wrap(err)
	}
	w := &claimWalk{s: s, c: c, items: items, now: nanos(c.Now), owner: hex.EncodeToString(c.Owner[:]),
		status: make(map[store.MarkKey]store.ClaimStatus, len(c.Keys))}
	for attempt := 1; ; attempt++ {
		done, retry, err := w.step(ctx)
		if err != nil {
			return wrap(err)
		}
		if done {
			return nil
		}
		if attempt == maxAttempts*4 {
			return wrap(fmt.Errorf("keys kept changing under %d attempts", attempt))
		}
		if retry {
			if err := pause(ctx, min(attempt, 8)); err != nil {
				return wrap(err)
			}
		}
	}
}

// claimWalk is one ClaimRecords: next is the first key whose status is not
// decided yet.
type claimWalk struct {
	s      *Store
	c      *store.RecordClaims
	items  map[store.MarkKey]map[string]types.AttributeValue
	now    string
	owner  string
	next   int
	fenced bool // the fence was checked by a transaction that landed
	status map[store.MarkKey]store.ClaimStatus
}

// step decides the keys from w.next to the first held one or the end,
// and writes the claims of the first transaction's worth. It reports
// whether the walk is over, and whether it must pause before the next
// step (a conflicting transaction).
func (w *claimWalk) step(ctx context.Context) (done, retry bool, err error) {
	c := w.c
	var acquire []store.MarkKey
	end, heldLease := len(c.Keys), ""
	for i := w.next; i < len(c.Keys); i++ {
		k := c.Keys[i]
		if _, ok := w.status[k]; ok {
			continue // decided at its first place
		}
		item := w.items[k]
		if c.Marks {
			if exp, ok := getS(item, attrExp); ok && exp > w.now {
				w.status[k] = store.Completed
				continue
			}
		}
		if holder, ok := getS(item, attrOwner); ok && holder != w.owner {
			if lease, ok := getS(item, "l_"+holder); ok && lease > w.now {
				end, heldLease = i, lease
				break
			}
		}
		if len(acquire) == claimsPerTxn {
			end = i
			break
		}
		acquire = append(acquire, k)
		w.status[k] = store.Acquired
	}
	switch {
	case len(acquire) > 0:
		failed, conflict, err := w.write(ctx, acquire)
		if err != nil {
			return false, false, err
		}
		if failed {
			// Read what changed, forget this pass's decisions, and walk
			// again from w.next.
			for _, k := range acquire {
				delete(w.status, k)
			}
			return false, conflict, w.reread(ctx, acquire)
		}
	case c.Fence != nil && !w.fenced:
		if err := w.s.checkFence(ctx, c.Fence); err != nil {
			return false, false, err
		}
		w.fenced = true
	}
	for i := w.next; i < end; i++ {
		c.Status[i] = w.status[c.Keys[i]]
	}
	w.next = end
	if heldLease != "" {
		t, err := fromNanos(heldLease)
		if err != nil {
			return false, false, fmt.Errorf("record claim %x: %w", c.Keys[end][:], err)
		}
		c.Status[end], c.HeldUntil = store.InProgress, t
		return true, false, nil
	}
	return end == len(c.Keys), false, nil
}

// write claims keys for the owner in one transaction, with the fence's
// ConditionCheck. failed reports that a key's item changed since it was
// read (conflict: that another transaction was writing it).
func (w *claimWalk) write(ctx context.Context, keys []store.MarkKey) (failed, conflict bool, err error) {
	s, c := w.s, w.c
	items := make([]types.TransactWriteItem, 0, len(keys)+1)
	mine := "l_" + w.owner
	for _, k := range keys {
		item := w.items[k]
		names := map[string]string{"#o": attrOwner, "#l": mine, "#v": attrVersion, "#exp": attrExpiration}
		// The item's expiration never moves earlier: it may hold a live
		// mark (claimed without looking marks up), or another's lease.
		gc := epochSeconds(c.LeaseUntil.Add(s.grace))
		if old, ok, _ := getI(item, attrExpiration); ok && old > gc {
			gc = old
		}
		values := map[string]types.AttributeValue{
			":o": str(w.owner), ":l": str(nanos(c.LeaseUntil)), ":v": newVersion(), ":gc": num(gc),
		}
		expr := "SET #o = :o, #l = :l, #v = :v, #exp = :gc"
		cond := "attribute_not_exists(#pk)"
		names["#pk"] = attrPK
		if v, ok := item[attrVersion]; ok {
			cond, values[":seen"] = "#v = :seen", v
			delete(names, "#pk")
		} else if len(item) > 0 {
			cond = "attribute_exists(#pk) AND attribute_not_exists(#v)"
		}
		items = append(items, types.TransactWriteItem{Update: &types.Update{
			TableName: s.table, Key: itemKey(markPK(k), skMark),
			UpdateExpression: aws.String(expr), ConditionExpression: aws.String(cond),
			ExpressionAttributeNames: names, ExpressionAttributeValues: values,
		}})
	}
	fence := -1
	if c.Fence != nil {
		fence = len(items)
		items = append(items, s.fenceCheck(c.Fence))
	}
	_, err = s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items, ClientRequestToken: requestToken()})
	if err == nil {
		w.fenced = w.fenced || c.Fence != nil
		return false, false, nil
	}
	idx, conflict, cancelled := cancellation(err)
	switch {
	case !cancelled:
		return false, false, err
	case fence >= 0 && conditionFailed(err, fence):
		return false, false, s.fenced(ctx, c.Fence)
	case idx >= 0 || conflict:
		return true, conflict, nil
	}
	return false, false, err
}

// reread reads keys' items again after a transaction found them changed.
func (w *claimWalk) reread(ctx context.Context, keys []store.MarkKey) error {
	items, err := w.s.getMarks(ctx, keys, false)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if it, ok := items[k]; ok {
			w.items[k] = it
		} else {
			delete(w.items, k)
		}
	}
	return nil
}

// A range claim (store.RangeClaim) is the attribute range of its
// mapping's item: first and last sequences and the lease's end (20-digit
// ns), ':' between them. The partition's version item (sk "v") orders the
// claims: every ClaimRange writes it, conditioned on the version it read
// with the other mappings' ranges, so two claims that read the same
// ranges cannot both land. A Commit that ends a range (EndRange) only
// frees records, so it leaves the version alone: a claim that read the
// range before it was ended was merely cautious.

type rangeClaim struct {
	from, to idem.Sequence
	lease    string // nanos
}

func decodeRange(v string) (rangeClaim, error) {
	parts := strings.Split(v, ":")
	if len(parts) != 3 || !idem.Sequence(parts[0]).Valid() || !idem.Sequence(parts[1]).Valid() || len(parts[2]) != 20 {
		return rangeClaim{}, fmt.Errorf("corrupt range claim %q", v)
	}
	return rangeClaim{from: idem.Sequence(parts[0]), to: idem.Sequence(parts[1]), lease: parts[2]}, nil
}

// ClaimRange claims [c.From, c.To] of a shard for c.Key.Mapping: a
// consistent Query of the scope's partition (every mapping's progress and
// range claim, and the version), and, unless another mapping's live range
// overlaps (sequences compared as numbers), a transaction that writes the
// mapping's range and the next version, conditioned on the version read,
// with the fence's ConditionCheck. When another claim moved the version in
// between, it reads and decides again. The Progress it returns is the one
// it read: any commit of another mapping in between could only concern
// records of that mapping's live range, which did not overlap this one, or
// the claim would have found it held or its version moved. A fence that
// does not hold makes an error wrapping store.ErrFenced, held or not, and
// nothing is claimed. Leases are decided from c.Now.
func (s *Store) ClaimRange(ctx context.Context, c *store.RangeClaim) error {
	c.Held, c.HeldUntil, c.Progress = false, time.Time{}, nil
	k := c.Key
	wrap := func(err error) error {
		return fmt.Errorf("dynamodb store: claim range [%s, %s] of scope %q mapping %q stream %q shard %s: %w",
			c.From, c.To, k.Scope, k.Mapping, k.Stream, k.Shard, err)
	}
	if err := s.enter("claim range"); err != nil {
		return err
	}
	if !c.From.Valid() || !c.To.Valid() {
		return wrap(errors.New("sequences are not decimal numbers"))
	}
	pk := progressPK(k)
	now, lease := nanos(c.Now), nanos(c.LeaseUntil)
	for attempt := 1; ; attempt++ {
		var items []map[string]types.AttributeValue
		var qerr, ferr error
		if c.Fence != nil {
			// The fence first, as on the other stores: read at once.
			done := make(chan struct{})
			go func() { defer close(done); ferr = s.checkFence(ctx, c.Fence) }()
			items, qerr = s.queryPartition(ctx, pk)
			<-done
			if ferr != nil {
				return wrap(ferr)
			}
		} else {
			items, qerr = s.queryPartition(ctx, pk)
		}
		if qerr != nil {
			return wrap(qerr)
		}
		progress, ranges, version, err := scopeItems(items)
		if err != nil {
			return wrap(err)
		}
		held := ""
		for m, r := range ranges {
			if m == k.Mapping || r.lease <= now {
				continue
			}
			if r.from.Compare(c.To) <= 0 && r.to.Compare(c.From) >= 0 && (held == "" || r.lease < held) {
				held = r.lease
			}
		}
		if held != "" {
			t, err := fromNanos(held)
			if err != nil {
				return wrap(err)
			}
			c.Held, c.HeldUntil = true, t
			return nil
		}
		txItems := []types.TransactWriteItem{{Update: &types.Update{
			TableName: s.table, Key: itemKey(pk, mappingSK(k.Mapping)),
			UpdateExpression:         aws.String("SET #m = :m, #r = :r, #v = :v"),
			ExpressionAttributeNames: map[string]string{"#m": attrMapping, "#r": attrRange, "#v": attrVersion},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":m": str(string(appendEscaped(nil, k.Mapping))),
				":r": str(string(c.From) + ":" + string(c.To) + ":" + lease), ":v": newVersion(),
			},
		}}}
		ver := types.Update{
			TableName: s.table, Key: itemKey(pk, skVersion),
			UpdateExpression:          aws.String("SET #ver = :new"),
			ExpressionAttributeNames:  map[string]string{"#ver": attrVer},
			ExpressionAttributeValues: map[string]types.AttributeValue{":new": newVersion()},
		}
		if version == "" {
			ver.ConditionExpression = aws.String("attribute_not_exists(#ver)")
		} else {
			ver.ConditionExpression = aws.String("#ver = :seen")
			ver.ExpressionAttributeValues[":seen"] = str(version)
		}
		txItems = append(txItems, types.TransactWriteItem{Update: &ver})
		if c.Fence != nil {
			txItems = append(txItems, s.fenceCheck(c.Fence))
		}
		_, err = s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: txItems, ClientRequestToken: requestToken()})
		if err == nil {
			if progress == nil {
				progress = []store.MappingProgress{}
			}
			c.Progress = progress
			return nil
		}
		idx, conflict, cancelled := cancellation(err)
		switch {
		case !cancelled:
			return wrap(err)
		case c.Fence != nil && conditionFailed(err, 2):
			return wrap(s.fenced(ctx, c.Fence))
		case idx < 0 && !conflict:
			return wrap(err)
		}
		if attempt == maxAttempts {
			return wrap(fmt.Errorf("the scope's range claims kept changing under %d attempts", attempt))
		}
		if conflict {
			if err := pause(ctx, attempt); err != nil {
				return wrap(err)
			}
		}
	}
}
