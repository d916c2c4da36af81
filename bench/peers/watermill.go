package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// watermillTopic is the SQL topic the records are published to.
const watermillTopic = "records"

// watermillGroup is the consumer group whose offset row says what is done.
const watermillGroup = "peers"

// watermillPublishChunk is how many messages one Publish call inserts
// (one multi-row INSERT, three parameters a message).
const watermillPublishChunk = 1000

// watermillRun is watermill-sql's exactly-once consumer: a subscriber
// whose query transaction (SELECT ... FOR UPDATE of the consumer group's
// offset row, the batch's messages, the offset upsert, COMMIT) is handed to
// the handler through the message's context (TxFromContext); the handler
// INSERTs the message's row in it, so the row commits with the offset.
type watermillRun struct {
	pool       *pgxpool.Pool
	sub        *wmsql.Subscriber
	cancel     context.CancelFunc // ends the subscription, after sub.Close
	n          int
	effects    string
	offsets    string
	lastOffset int64
}

// prepareWatermill publishes the records to a SQL topic (PostgreSQL
// tables in the run's schema: messages with a BYTEA payload, and the
// consumer groups' offsets) and creates the subscriber. None of it is timed.
func prepareWatermill(ctx context.Context, rc runConfig) (runner, error) {
	pool, err := newPool(ctx, rc.dsn, 4)
	if err != nil {
		return nil, err
	}
	w := &watermillRun{pool: pool, n: len(rc.records), effects: effectsTable(rc.schema),
		offsets: pgx.Identifier{rc.schema, "watermill_offsets_" + watermillTopic}.Sanitize()}
	if err := w.prepare(ctx, rc); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

func (w *watermillRun) prepare(ctx context.Context, rc runConfig) error {
	logger := watermill.NewSlogLogger(rc.log)
	messages := pgx.Identifier{rc.schema, "watermill_" + watermillTopic}.Sanitize()
	schema := wmsql.DefaultPostgreSQLSchema{
		GenerateMessagesTableName: func(string) string { return messages },
		GeneratePayloadType:       func(string) string { return "BYTEA" },
		SubscribeBatchSize:        rc.watermillBatch,
	}
	offsets := wmsql.DefaultPostgreSQLOffsetsAdapter{
		GenerateMessagesOffsetsTableName: func(string) string { return w.offsets },
	}
	db := wmsql.BeginnerFromPgx(w.pool)
	pub, err := wmsql.NewPublisher(db, wmsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	if err != nil {
		return fmt.Errorf("watermill: creating the publisher: %w", err)
	}
	for i := 0; i < len(rc.records); i += watermillPublishChunk {
		chunk := rc.records[i:min(i+watermillPublishChunk, len(rc.records))]
		msgs := make([]*message.Message, len(chunk))
		for j, r := range chunk {
			msgs[j] = message.NewMessage(r.ID, r.Data)
		}
		if err := pub.Publish(watermillTopic, msgs...); err != nil {
			pub.Close()
			return fmt.Errorf("watermill: publishing records %d on: %w", i, err)
		}
	}
	if err := pub.Close(); err != nil {
		return fmt.Errorf("watermill: closing the publisher: %w", err)
	}
	if err := w.pool.QueryRow(ctx, `SELECT max("offset") FROM `+messages).Scan(&w.lastOffset); err != nil {
		return fmt.Errorf("watermill: reading the last offset: %w", err)
	}
	w.sub, err = wmsql.NewSubscriber(db, wmsql.SubscriberConfig{
		ConsumerGroup:  watermillGroup,
		SchemaAdapter:  schema,
		OffsetsAdapter: offsets,
		// Only waits after a query found nothing (the default is 1s).
		PollInterval: 10 * time.Millisecond,
	}, logger)
	if err != nil {
		return fmt.Errorf("watermill: creating the subscriber: %w", err)
	}
	if err := w.sub.SubscribeInitialize(watermillTopic); err != nil {
		return fmt.Errorf("watermill: creating the offsets table: %w", err)
	}
	return warm(ctx, w.pool, 2)
}

// Run subscribes, INSERTs every message's row in the subscriber's
// transaction, and returns once the consumer group's committed offset is
// the last message's.
func (w *watermillRun) Run(ctx context.Context) error {
	ctx, w.cancel = context.WithCancel(ctx)
	ch, err := w.sub.Subscribe(ctx, watermillTopic)
	if err != nil {
		return fmt.Errorf("watermill: subscribing: %w", err)
	}
	q := "INSERT INTO " + w.effects + " (id, body) VALUES ($1, $2)"
	for handled := 0; handled < w.n; handled++ {
		msg, ok := <-ch
		if !ok {
			return errors.New("watermill: the subscription ended early")
		}
		if err := w.handle(msg, q); err != nil {
			msg.Nack()
			return err
		}
		msg.Ack()
	}
	// The last message is acked: the subscriber now upserts the offset and
	// commits. Wait for that commit.
	for {
		var acked int64
		err := w.pool.QueryRow(ctx, "SELECT offset_acked FROM "+w.offsets+" WHERE consumer_group = $1", watermillGroup).Scan(&acked)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("watermill: reading the committed offset: %w", err)
		}
		if acked >= w.lastOffset {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// handle INSERTs msg's row in the transaction that will commit its offset.
func (w *watermillRun) handle(msg *message.Message, q string) error {
	tx, ok := wmsql.TxFromContext(msg.Context())
	if !ok {
		return errors.New("watermill: no transaction in the message's context")
	}
	id, err := idOf(msg.Payload)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(msg.Context(), q, id, []byte(msg.Payload)); err != nil {
		return fmt.Errorf("watermill: inserting %s: %w", id, err)
	}
	return nil
}

// Close closes the subscriber, then ends the subscription's context (so
// that its last, empty query commits rather than fails), and closes the
// pool.
func (w *watermillRun) Close() error {
	var err error
	if w.sub != nil {
		err = w.sub.Close()
	}
	if w.cancel != nil {
		w.cancel()
	}
	w.pool.Close()
	if err != nil {
		return fmt.Errorf("watermill: closing the subscriber: %w", err)
	}
	return nil
}
