package kinesis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// countingAPI counts the calls a Source makes.
type countingAPI struct {
	api
	iterators, gets atomic.Int64
}

func (c *countingAPI) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	c.iterators.Add(1)
	return c.api.GetShardIterator(ctx, in, opts...)
}

func (c *countingAPI) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	c.gets.Add(1)
	return c.api.GetRecords(ctx, in, opts...)
}

// fakeAPI is one Kinesis shard in memory whose oldest records can be
// trimmed, with the behaviours Kinesis may show around trimmed positions.
type fakeAPI struct {
	mu      sync.Mutex
	recs    []types.Record
	trimmed int // records before this index are gone
	// refuseTrimmed: AT_SEQUENCE_NUMBER of a trimmed record is an
	// InvalidArgumentException. Otherwise the iterator is made, and
	// GetRecords starts at the oldest record kept, unless walkTrimmed:
	// then it answers empty, far behind, one trimmed record at a time.
	refuseTrimmed, walkTrimmed bool
	throttle                   int // calls left to throttle
	expire                     int // GetRecords calls left to answer ExpiredIterator
	// ending, when set, closes the shard (a reshard): ListShards gives it
	// as the ending sequence number, and GetRecords at the end returns no
	// next iterator. gone expires the shard: ListShards no longer lists it
	// and GetShardIterator answers ResourceNotFoundException.
	ending string
	gone   bool
}

const fakeShard = "shardId-000000000000"

// newFake returns a shard of n records whose sequence numbers are 56 digits,
// step apart.
func newFake(n, step int) *fakeAPI {
	f := &fakeAPI{}
	for i := range n {
		f.recs = append(f.recs, types.Record{
			SequenceNumber:              aws.String(fmt.Sprintf("4959033827149025660855969253836157109592157598913%07d", 1000+step*i)),
			PartitionKey:                aws.String("key"),
			Data:                        fmt.Appendf(nil, "rec-%d", i),
			ApproximateArrivalTimestamp: aws.Time(time.UnixMilli(1_700_000_000_000 + int64(i)*1000)),
		})
	}
	return f
}

func (f *fakeAPI) seq(i int) idem.Sequence {
	return idem.Sequence(aws.ToString(f.recs[i].SequenceNumber))
}

func (f *fakeAPI) throttled() error {
	if f.throttle > 0 {
		f.throttle--
		return &types.ProvisionedThroughputExceededException{Message: aws.String("slow down")}
	}
	return nil
}

func (f *fakeAPI) ListShards(ctx context.Context, in *kinesis.ListShardsInput, _ ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return &kinesis.ListShardsOutput{}, nil
	}
	r := &types.SequenceNumberRange{StartingSequenceNumber: aws.String("1")}
	if f.ending != "" {
		r.EndingSequenceNumber = aws.String(f.ending)
	}
	return &kinesis.ListShardsOutput{Shards: []types.Shard{{ShardId: aws.String(fakeShard), SequenceNumberRange: r}}}, nil
}

func (f *fakeAPI) DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, _ ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	return &kinesis.DescribeStreamSummaryOutput{StreamDescriptionSummary: &types.StreamDescriptionSummary{
		StreamName:           in.StreamName,
		RetentionPeriodHours: aws.Int32(24),
		StreamStatus:         types.StreamStatusActive,
	}}, nil
}

func (f *fakeAPI) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, _ ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.throttled(); err != nil {
		return nil, err
	}
	if aws.ToString(in.ShardId) != fakeShard || f.gone {
		return nil, &types.ResourceNotFoundException{Message: aws.String("Shard " + aws.ToString(in.ShardId) + " does not exist")}
	}
	idx := 0
	switch in.ShardIteratorType {
	case types.ShardIteratorTypeTrimHorizon:
		idx = f.trimmed
	case types.ShardIteratorTypeLatest:
		idx = len(f.recs)
	case types.ShardIteratorTypeAtSequenceNumber:
		want := idem.Sequence(aws.ToString(in.StartingSequenceNumber))
		idx = -1
		for i := range f.recs {
			if f.seq(i) == want {
				idx = i
			}
		}
		if idx < 0 || (idx < f.trimmed && f.refuseTrimmed) {
			return nil, &types.InvalidArgumentException{Message: aws.String("StartingSequenceNumber " + string(want) + " is invalid")}
		}
	case types.ShardIteratorTypeAtTimestamp:
		idx = len(f.recs)
		for i := f.trimmed; i < len(f.recs); i++ {
			if !f.recs[i].ApproximateArrivalTimestamp.Before(*in.Timestamp) {
				idx = i
				break
			}
		}
	default:
		return nil, &types.InvalidArgumentException{Message: aws.String("unsupported " + string(in.ShardIteratorType))}
	}
	return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String("it:" + strconv.Itoa(idx))}, nil
}

func (f *fakeAPI) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.throttled(); err != nil {
		return nil, err
	}
	if f.expire > 0 {
		f.expire--
		return nil, &types.ExpiredIteratorException{Message: aws.String("expired")}
	}
	idx, err := strconv.Atoi(strings.TrimPrefix(aws.ToString(in.ShardIterator), "it:"))
	if err != nil {
		return nil, &types.InvalidArgumentException{Message: aws.String("Invalid ShardIterator.")}
	}
	if idx < f.trimmed {
		if f.walkTrimmed {
			return &kinesis.GetRecordsOutput{
				MillisBehindLatest: aws.Int64(int64(25 * time.Hour / time.Millisecond)),
				NextShardIterator:  aws.String("it:" + strconv.Itoa(idx+1)),
			}, nil
		}
		idx = f.trimmed
	}
	end := min(len(f.recs), idx+int(aws.ToInt32(in.Limit)))
	behind := int64(0)
	if end < len(f.recs) {
		behind = 1000
	}
	next := aws.String("it:" + strconv.Itoa(end))
	if f.ending != "" && end == len(f.recs) {
		next = nil // a closed shard read to its end
	}
	return &kinesis.GetRecordsOutput{
		Records:            append([]types.Record(nil), f.recs[idx:end]...),
		MillisBehindLatest: aws.Int64(behind),
		NextShardIterator:  next,
	}, nil
}

func fakeSource(t *testing.T, f *fakeAPI) *Source {
	t.Helper()
	s, err := newSource(context.Background(), f, "fake", options{poll: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func read(t *testing.T, s *Source, after idem.Sequence) source.ReadResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Read(ctx, fakeShard, after, 100, 1<<20)
	if err != nil {
		t.Fatalf("Read after %q: %v", after, err)
	}
	return res
}

func TestLossDetected(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeAPI)
	}{
		{"iterator starts at the oldest kept", func(*fakeAPI) {}},
		{"position refused", func(f *fakeAPI) { f.refuseTrimmed = true }},
		{"empty answers far behind", func(f *fakeAPI) { f.walkTrimmed = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(6, 10)
			f.trimmed = 3
			tc.set(f)
			s := fakeSource(t, f)
			res := read(t, s, f.seq(0))
			if res.Lost != 1 {
				t.Fatalf("Lost = %d, want 1", res.Lost)
			}
			if res.Trimmed.Compare(f.seq(2)) < 0 || res.Trimmed.Compare(f.seq(3)) >= 0 {
				t.Fatalf("Trimmed = %q, want in [%q, %q)", res.Trimmed, f.seq(2), f.seq(3))
			}
			if got := sequences(res.Records); fmt.Sprint(got) != fmt.Sprint([]idem.Sequence{f.seq(3), f.seq(4), f.seq(5)}) {
				t.Fatalf("records %v, want the 3 kept", got)
			}
			// From Trimmed, with a fresh Source: nothing more is lost.
			res = read(t, fakeSource(t, f), res.Trimmed)
			if res.Lost != 0 || len(res.Records) != 3 {
				t.Fatalf("Read from Trimmed: %d records, %d lost; want 3 and 0", len(res.Records), res.Lost)
			}
		})
	}
}

// TestExpiredShardReportsLoss: a closed shard that Kinesis expired while
// its reader was behind is a loss, not its end: Read reports one lost
// record and moves the reader to the shard's ending sequence number, from
// where nothing is read and the shard is finished.
func TestExpiredShardReportsLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := newFake(6, 10)
	f.ending = string(increment(increment(f.seq(5))))
	s := fakeSource(t, f)
	if _, err := s.Shards(ctx); err != nil { // the shard is known, closed
		t.Fatal(err)
	}
	if fin, err := s.Finished(ctx, fakeShard, f.seq(5)); err != nil || !fin {
		t.Fatalf("Finished at the last record of a closed shard = %v, %v; want true", fin, err)
	}
	f.mu.Lock()
	f.gone = true
	f.mu.Unlock()
	if fin, err := s.Finished(ctx, fakeShard, f.seq(2)); err != nil || fin {
		t.Fatalf("Finished behind the end of an expired shard = %v, %v; want false, nil", fin, err)
	}
	for range 2 { // reported again until the reader moves on
		res := read(t, s, f.seq(2))
		if res.Lost != 1 || len(res.Records) != 0 || res.Trimmed != idem.Sequence(f.ending) {
			t.Fatalf("Read behind the end of an expired shard: %d records, Lost %d, Trimmed %q; want 0, 1, %q", len(res.Records), res.Lost, res.Trimmed, f.ending)
		}
	}
	if res := read(t, s, idem.Sequence(f.ending)); res.Lost != 0 || len(res.Records) != 0 {
		t.Fatalf("Read from the ending sequence number: %d records, %d lost; want none", len(res.Records), res.Lost)
	}
	if fin, err := s.Finished(ctx, fakeShard, idem.Sequence(f.ending)); err != nil || !fin {
		t.Fatalf("Finished at the ending sequence number = %v, %v; want true", fin, err)
	}
}

func TestNoFalseLoss(t *testing.T) {
	f := newFake(6, 10)
	f.trimmed = 3
	// The oldest record kept: retained, nothing lost.
	if res := read(t, fakeSource(t, f), f.seq(3)); res.Lost != 0 || len(res.Records) != 2 {
		t.Fatalf("Read after the oldest kept: %d records, %d lost", len(res.Records), res.Lost)
	}
	// Consecutive numbers: the trimmed record's successor is kept, so
	// nothing after the position is missing.
	g := newFake(6, 1)
	g.trimmed = 3
	if res := read(t, fakeSource(t, g), g.seq(2)); res.Lost != 0 || len(res.Records) != 3 {
		t.Fatalf("Read after the newest trimmed record: %d records, %d lost", len(res.Records), res.Lost)
	}
	// TRIM_HORIZON never reports loss.
	if res := read(t, fakeSource(t, f), ""); res.Lost != 0 || len(res.Records) != 3 {
		t.Fatalf("Read from TRIM_HORIZON: %d records, %d lost", len(res.Records), res.Lost)
	}
}

func TestPositionNotOfShard(t *testing.T) {
	f := newFake(6, 10)
	s := fakeSource(t, f)
	_, err := s.Read(context.Background(), fakeShard, increment(increment(f.seq(4))), 10, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "not a sequence number of the shard") {
		t.Fatalf("Read after a number between records that Kinesis refuses: %v", err)
	}
	if _, err := s.Read(context.Background(), "shardId-000000000009", "", 10, 1<<20); !errors.Is(err, source.ErrShardNotFound) {
		t.Fatalf("Read of an unknown shard: %v", err)
	}
}

func TestThrottled(t *testing.T) {
	f := newFake(3, 10)
	f.throttle = 2 // within the retries
	s := fakeSource(t, f)
	if res := read(t, s, ""); len(res.Records) != 3 {
		t.Fatalf("Read after 2 throttled calls: %d records, want 3", len(res.Records))
	}
	f.mu.Lock()
	f.throttle = 1000
	f.mu.Unlock()
	start := time.Now()
	res := read(t, fakeSource(t, f), f.seq(0))
	if len(res.Records) != 0 {
		t.Fatalf("Read while throttled: %d records", len(res.Records))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Read while throttled took %s", d)
	}
	if _, err := fakeSource(t, f).Start(context.Background(), fakeShard, source.Latest, time.Time{}); err == nil {
		t.Fatal("Start while throttled: no error")
	}
}

func TestExpiredIterator(t *testing.T) {
	f := newFake(5, 10)
	s := fakeSource(t, f)
	res := read(t, s, "")
	if len(res.Records) != 5 {
		t.Fatalf("%d records", len(res.Records))
	}
	f.recs = append(f.recs, newFake(7, 10).recs[5:]...)
	f.expire = 1
	res = read(t, s, f.seq(4))
	if res.Lost != 0 || fmt.Sprint(sequences(res.Records)) != fmt.Sprint([]idem.Sequence{f.seq(5), f.seq(6)}) {
		t.Fatalf("after an expired iterator: %v, lost %d", sequences(res.Records), res.Lost)
	}
}

// TestLatestFromPartialRead: a Read of one record still reports the newest
// record fetched with it, since GetRecords asks for the most.
func TestLatestFromPartialRead(t *testing.T) {
	f := newFake(5, 10)
	s := fakeSource(t, f)
	res, err := s.Read(context.Background(), fakeShard, "", 1, 1<<20)
	if err != nil || len(res.Records) != 1 {
		t.Fatalf("Read: %v, %v", res.Records, err)
	}
	if res.Latest != f.seq(4) {
		t.Fatalf("Latest = %q, want %q", res.Latest, f.seq(4))
	}
}

func TestStartPositions(t *testing.T) {
	f := newFake(5, 10)
	s := fakeSource(t, f)
	ctx := context.Background()
	if p, err := s.Start(ctx, fakeShard, source.Latest, time.Time{}); err != nil || p != f.seq(4) {
		t.Fatalf("LATEST = %q, %v; want %q", p, err, f.seq(4))
	}
	at := *f.recs[2].ApproximateArrivalTimestamp
	p, err := s.Start(ctx, fakeShard, source.AtTimestamp, at.Add(-time.Millisecond))
	if err != nil || p != decrement(f.seq(2)) {
		t.Fatalf("AT_TIMESTAMP = %q, %v; want %q", p, err, decrement(f.seq(2)))
	}
	if res := read(t, s, p); fmt.Sprint(sequences(res.Records)) != fmt.Sprint([]idem.Sequence{f.seq(2), f.seq(3), f.seq(4)}) {
		t.Fatalf("from AT_TIMESTAMP: %v", sequences(res.Records))
	}
	if p, err := s.Start(ctx, fakeShard, source.AtTimestamp, at.Add(time.Hour)); err != nil || p != f.seq(4) {
		t.Fatalf("AT_TIMESTAMP after every record = %q, %v; want %q", p, err, f.seq(4))
	}
}

func TestSequenceArithmetic(t *testing.T) {
	for _, tc := range []struct{ in, inc, dec idem.Sequence }{
		{"", "1", ""},
		{"0", "1", ""},
		{"1", "2", "0"},
		{"9", "10", "8"},
		{"10", "11", "9"},
		{"1000", "1001", "999"},
		{"49590338271490256608559692538361571095921575989136588899", "49590338271490256608559692538361571095921575989136588900", "49590338271490256608559692538361571095921575989136588898"},
	} {
		if got := increment(tc.in); got != tc.inc {
			t.Errorf("increment(%q) = %q, want %q", tc.in, got, tc.inc)
		}
		if got := decrement(tc.in); got != tc.dec {
			t.Errorf("decrement(%q) = %q, want %q", tc.in, got, tc.dec)
		}
	}
}
