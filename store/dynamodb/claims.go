package dynamodb

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem/store"
)

// An idempotency claim (store.Claims) is one item in the attributes of
// Powertools for AWS Lambda's idempotency table, and idem's token.
const (
	attrStatus     = "status"
	attrToken      = "token"
	attrValidation = "validation"
	attrData       = "data"
	attrInProgress = "in_progress_expiration"

	statusInProgress = "INPROGRESS"
	statusCompleted  = "COMPLETED"
)

// neverExpires is the expiration of a record kept for good: the last
// second of the year 9999. An attribute is never removed (an update that
// would remove it sets it instead), which some emulators get wrong.
const neverExpires int64 = 253402300799

// Claim implements store.Claims in one conditional UpdateItem: a record
// that is not live (none, an in-progress one whose lease ended, a
// completed one that expired) becomes an in-progress one with the next
// token (its token plus one, or this host's clock in Unix microseconds for
// a key without a record); a live one fails the condition and comes back
// with the failure (ReturnValuesOnConditionCheckFailure), to be returned
// or refused.
func (s *Store) Claim(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return s.claim(ctx, "claim", false, key, payload, lease, now)
}

// Takeover implements store.ClaimTaker as Claim does, except that an
// in-progress record for the same payload is taken over whatever its
// lease.
func (s *Store) Takeover(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return s.claim(ctx, "take over claim", true, key, payload, lease, now)
}

func (s *Store) claim(ctx context.Context, op string, takeover bool, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	if err := s.enter(op); err != nil {
		return store.Claim{}, err
	}
	wrap := func(err error) error { return fmt.Errorf("dynamodb store: %s %x: %w", op, key, err) }
	until := now.Add(lease)
	hash := hex.EncodeToString(payload[:])
	live := "(#st = :ip AND #ipe > :nowms) OR (#st = :done AND (attribute_not_exists(#exp) OR #exp > :nows))"
	cond := "NOT (" + live + ")"
	if takeover {
		cond = "(NOT (" + live + ")) OR (#st = :ip AND #val = :hash)"
	}
	in := &dynamodb.UpdateItemInput{
		TableName: s.table, Key: itemKey(claimPK(key), skClaim),
		UpdateExpression:    aws.String("SET #st = :ip, #tok = if_not_exists(#tok, :base) + :one, #val = :hash, #ipe = :until, #exp = :gc, #data = :none"),
		ConditionExpression: aws.String(cond),
		ExpressionAttributeNames: map[string]string{
			"#st": attrStatus, "#tok": attrToken, "#val": attrValidation, "#ipe": attrInProgress, "#exp": attrExpiration, "#data": attrData,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":ip": str(statusInProgress), ":done": str(statusCompleted),
			":nowms": num(now.UnixMilli()), ":nows": num(now.Unix()),
			":base": num(time.Now().UnixMicro()), ":one": num(1), ":hash": str(hash),
			":until": num(epochMillis(until)), ":gc": s.gcExpiration(until), ":none": str(""),
		},
		ReturnValues:                        types.ReturnValueUpdatedNew,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	var out *dynamodb.UpdateItemOutput
	err := again(ctx, func() (err error) {
		out, err = s.api.UpdateItem(ctx, in)
		return err
	})
	if err == nil {
		tok, ok, err := getU(out.Attributes, attrToken)
		if err != nil || !ok {
			return store.Claim{}, wrap(fmt.Errorf("no token in the answer (%v)", err))
		}
		return store.Claim{Key: key, Status: store.Acquired, Token: tok, PayloadHash: payload, LeaseUntil: until}, nil
	}
	ccf, ok := errors.AsType[*types.ConditionalCheckFailedException](err)
	if !ok {
		return store.Claim{}, wrap(err)
	}
	// The record that is live at now.
	c, err := decodeClaim(key, ccf.Item)
	if err != nil {
		return store.Claim{}, wrap(err)
	}
	switch {
	case c.PayloadHash != payload:
		return store.Claim{}, wrap(store.ErrPayloadMismatch)
	case c.Status == store.Completed:
		return c, nil
	}
	return store.Claim{}, wrap(fmt.Errorf("until %s: %w", c.LeaseUntil.Format(time.RFC3339Nano), store.ErrClaimHeld))
}

// decodeClaim reads a claim's item; an in-progress record is Acquired.
func decodeClaim(key store.MarkKey, item map[string]types.AttributeValue) (store.Claim, error) {
	c := store.Claim{Key: key}
	st, _ := getS(item, attrStatus)
	switch st {
	case statusInProgress:
		c.Status = store.Acquired
	case statusCompleted:
		c.Status = store.Completed
	default:
		return store.Claim{}, fmt.Errorf("corrupt claim status %q", st)
	}
	var err error
	var ok bool
	if c.Token, ok, err = getU(item, attrToken); err != nil || !ok {
		return store.Claim{}, fmt.Errorf("corrupt claim token (%v)", err)
	}
	h, _ := getS(item, attrValidation)
	if b, err := hex.DecodeString(h); err != nil || len(b) != len(c.PayloadHash) {
		return store.Claim{}, fmt.Errorf("corrupt claim payload hash %q", h)
	} else {
		copy(c.PayloadHash[:], b)
	}
	if ms, ok, err := getI(item, attrInProgress); err != nil {
		return store.Claim{}, err
	} else if ok && ms > 0 {
		c.LeaseUntil = time.UnixMilli(ms)
	}
	if c.Status == store.Completed {
		if sec, ok, err := getI(item, attrExpiration); err != nil {
			return store.Claim{}, err
		} else if ok && sec < neverExpires {
			c.Expires = time.Unix(sec, 0)
		}
	}
	if d, ok := getB(item, attrData); ok && len(d) > 0 {
		c.Result = append([]byte(nil), d...)
	}
	return c, nil
}

// Complete implements store.Claims: the record becomes COMPLETED with
// result, kept until expires, rounded up to the second, when DynamoDB
// deletes it (the zero time: for good, an expiration of neverExpires), if
// c's token still holds it.
func (s *Store) Complete(ctx context.Context, c store.Claim, result []byte, expires time.Time) error {
	if err := s.enter("complete"); err != nil {
		return err
	}
	exp := neverExpires
	if !expires.IsZero() {
		exp = min(epochSeconds(expires), neverExpires)
	}
	var data types.AttributeValue
	switch {
	case len(result) == 0:
		data = str("")
	case utf8.Valid(result):
		data = str(string(result)) // as Powertools keeps it: a string
	default:
		data = bin(result)
	}
	names := map[string]string{"#st": attrStatus, "#tok": attrToken, "#exp": attrExpiration, "#data": attrData}
	values := map[string]types.AttributeValue{":done": str(statusCompleted), ":tok": unum(c.Token), ":exp": num(exp), ":data": data}
	expr := "SET #st = :done, #exp = :exp, #data = :data"
	err := s.update(ctx, &dynamodb.UpdateItemInput{
		TableName: s.table, Key: itemKey(claimPK(c.Key), skClaim),
		UpdateExpression: aws.String(expr), ConditionExpression: aws.String("#tok = :tok"),
		ExpressionAttributeNames: names, ExpressionAttributeValues: values,
	})
	return s.finish(ctx, "complete", c, err, false)
}

// Release implements store.Claims: the record stays, with its lease
// ended (in_progress_expiration 0), so the next token is still higher.
func (s *Store) Release(ctx context.Context, c store.Claim) error {
	if err := s.enter("release"); err != nil {
		return err
	}
	err := s.update(ctx, &dynamodb.UpdateItemInput{
		TableName: s.table, Key: itemKey(claimPK(c.Key), skClaim),
		UpdateExpression:         aws.String("SET #ipe = :zero"),
		ConditionExpression:      aws.String("#tok = :tok AND #st = :ip"),
		ExpressionAttributeNames: map[string]string{"#ipe": attrInProgress, "#tok": attrToken, "#st": attrStatus},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":zero": num(0), ":tok": unum(c.Token), ":ip": str(statusInProgress),
		},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	return s.finish(ctx, "release", c, err, true)
}

// Extend implements store.Claims: the lease of c, if it still holds the
// key, now ends at until, and the item's expiration is one grace later.
func (s *Store) Extend(ctx context.Context, c store.Claim, until time.Time) error {
	if err := s.enter("extend"); err != nil {
		return err
	}
	err := s.update(ctx, &dynamodb.UpdateItemInput{
		TableName: s.table, Key: itemKey(claimPK(c.Key), skClaim),
		UpdateExpression:         aws.String("SET #ipe = :until, #exp = :gc"),
		ConditionExpression:      aws.String("#tok = :tok AND #st = :ip"),
		ExpressionAttributeNames: map[string]string{"#ipe": attrInProgress, "#exp": attrExpiration, "#tok": attrToken, "#st": attrStatus},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":until": num(epochMillis(until)), ":gc": s.gcExpiration(until), ":tok": unum(c.Token), ":ip": str(statusInProgress),
		},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	return s.finish(ctx, "extend", c, err, true)
}

// finish reads the answer of Complete's, Release's or Extend's update: a
// failed condition is ErrFenced, except, when completedOK, for a record
// that c's token completed (left as it is).
func (s *Store) finish(ctx context.Context, op string, c store.Claim, err error, completedOK bool) error {
	if err == nil {
		return nil
	}
	wrap := func(err error) error {
		return fmt.Errorf("dynamodb store: %s claim %x token %d: %w", op, c.Key, c.Token, err)
	}
	ccf, ok := errors.AsType[*types.ConditionalCheckFailedException](err)
	if !ok {
		return wrap(err)
	}
	if completedOK {
		st, _ := getS(ccf.Item, attrStatus)
		tok, _, _ := getU(ccf.Item, attrToken)
		if st == statusCompleted && tok == c.Token {
			return nil
		}
	}
	return wrap(store.ErrFenced)
}

// Lookup implements store.Claims with one consistent GetItem; liveness is
// decided from now and the record's times, whether or not DynamoDB has
// deleted it yet.
func (s *Store) Lookup(ctx context.Context, key store.MarkKey, now time.Time) (store.Claim, bool, error) {
	if err := s.enter("lookup"); err != nil {
		return store.Claim{}, false, err
	}
	wrap := func(err error) error { return fmt.Errorf("dynamodb store: lookup claim %x: %w", key, err) }
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(claimPK(key), skClaim), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return store.Claim{}, false, wrap(err)
	}
	if len(out.Item) == 0 {
		return store.Claim{}, false, nil
	}
	c, err := decodeClaim(key, out.Item)
	if err != nil {
		return store.Claim{}, false, wrap(err)
	}
	if c.Status == store.Completed {
		if !c.Expires.IsZero() && now.Unix() >= c.Expires.Unix() {
			return store.Claim{}, false, nil
		}
		return c, true, nil
	}
	if now.UnixMilli() >= c.LeaseUntil.UnixMilli() {
		return store.Claim{}, false, nil
	}
	c.Status = store.InProgress
	return c, true, nil
}

// update runs one UpdateItem, again while it races transactions.
func (s *Store) update(ctx context.Context, in *dynamodb.UpdateItemInput) error {
	return again(ctx, func() error {
		_, err := s.api.UpdateItem(ctx, in)
		return err
	})
}
