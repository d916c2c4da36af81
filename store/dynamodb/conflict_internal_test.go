package dynamodb

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/store"
)

// conflicting answers the first n TransactWriteItems and UpdateItems as
// DynamoDB does when another transaction holds one of their items.
type conflicting struct {
	api
	txns, updates atomic.Int64
}

func (c *conflicting) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	if c.txns.Add(-1) >= 0 {
		reasons := make([]types.CancellationReason, len(in.TransactItems))
		for i := range reasons {
			reasons[i].Code = aws.String("None")
		}
		reasons[len(reasons)-1].Code = aws.String("TransactionConflict")
		return nil, &types.TransactionCanceledException{Message: aws.String("conflict"), CancellationReasons: reasons}
	}
	return c.api.TransactWriteItems(ctx, in, opts...)
}

func (c *conflicting) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if c.updates.Add(-1) >= 0 {
		return nil, &types.TransactionConflictException{Message: aws.String("conflict")}
	}
	return c.api.UpdateItem(ctx, in, opts...)
}

// TestConflictsTriedAgain: a commit or a lease's extension that raced
// another transaction on one of its items is sent again, and lands; one
// that keeps racing fails with DynamoDB's error.
func TestConflictsTriedAgain(t *testing.T) {
	ctx := context.Background()
	client, err := NewClient(ctx, "us-east-1", testsvc.DynamoDBEndpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	table := "idemtest-conflicts-" + time.Now().Format("150405.000000")
	s, err := New(ctx, WithClient(client), WithTable(table), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	c := &conflicting{api: s.api}
	s.api = c
	lease, now := store.MarkKeyOf("t", "lease"), time.Now()
	cl, err := s.Claim(ctx, lease, store.PayloadHash{1}, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	c.updates.Store(2)
	if err := s.Extend(ctx, cl, now.Add(2*time.Minute)); err != nil {
		t.Fatalf("Extend after 2 conflicts: %v", err)
	}
	c.txns.Store(maxConflicts - 1)
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}, NewCheckpoint: store.Checkpoint{Sequence: "5"},
		Fence: &store.Fence{Key: lease, Token: cl.Token}}
	if err := s.Commit(ctx, w); err != nil {
		t.Fatalf("Commit after %d conflicts: %v", maxConflicts-1, err)
	}
	c.txns.Store(maxConflicts)
	w.NewCheckpoint.Sequence = "6"
	if err := s.Commit(ctx, w); err == nil || !conflicted(err) {
		t.Fatalf("Commit after %d conflicts: %v, want the conflict", maxConflicts, err)
	}
	if cp, _, _ := s.Checkpoint(ctx, w.Checkpoint); cp.Sequence != "5" {
		t.Fatalf("checkpoint = %q, want 5", cp.Sequence)
	}
}
