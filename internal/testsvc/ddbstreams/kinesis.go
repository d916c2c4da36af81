package ddbstreams

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// kinesisDest is a Kinesis data stream a table streams its changes to.
type kinesisDest struct {
	arn, stream string
	precision   string // MILLISECOND or MICROSECOND
}

// kinesisRecord is the data of a Kinesis record that Kinesis Data Streams
// for DynamoDB writes for one change, field for field in AWS' order: no
// SequenceNumber or StreamViewType (the Kinesis record has its own
// sequence number), both images whatever a DynamoDB stream's view type,
// userIdentity null but for TTL deletes, and ApproximateCreationDateTime in
// milliseconds (microseconds, flagged, with precision MICROSECOND).
type kinesisRecord struct {
	AWSRegion    string          `json:"awsRegion"`
	EventID      string          `json:"eventID"`
	EventName    string          `json:"eventName"`
	UserIdentity json.RawMessage `json:"userIdentity"`
	RecordFormat string          `json:"recordFormat"`
	TableName    string          `json:"tableName"`
	Dynamodb     struct {
		ApproximateCreationDateTime          int64                      `json:"ApproximateCreationDateTime"`
		Keys                                 map[string]json.RawMessage `json:"Keys"`
		NewImage                             map[string]json.RawMessage `json:"NewImage,omitempty"`
		OldImage                             map[string]json.RawMessage `json:"OldImage,omitempty"`
		SizeBytes                            int                        `json:"SizeBytes"`
		ApproximateCreationDateTimePrecision string                     `json:"ApproximateCreationDateTimePrecision,omitempty"`
	} `json:"dynamodb"`
	EventSource string `json:"eventSource"`
}

// kinesisDestination answers the streaming destination operations.
func (s *Server) kinesisDestination(w http.ResponseWriter, op string, body []byte) error {
	var in struct {
		TableName, StreamArn                string
		EnableKinesisStreamingConfiguration *struct{ ApproximateCreationDateTimePrecision string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return validation("%v", err)
	}
	t := s.tables[in.TableName]
	if t == nil {
		return notFound("Requested resource not found: Table: %s not found", in.TableName)
	}
	switch op {
	case "DescribeKinesisStreamingDestination":
		dests := []map[string]string{}
		for _, d := range t.kinesis {
			dests = append(dests, map[string]string{"StreamArn": d.arn, "DestinationStatus": "ACTIVE", "ApproximateCreationDateTimePrecision": d.precision})
		}
		writeJSON(w, map[string]any{"TableName": t.name, "KinesisDataStreamDestinations": dests})
		return nil
	case "DisableKinesisStreamingDestination":
		for i, d := range t.kinesis {
			if d.arn == in.StreamArn {
				t.kinesis = append(t.kinesis[:i:i], t.kinesis[i+1:]...)
				writeJSON(w, map[string]string{"TableName": t.name, "StreamArn": d.arn, "DestinationStatus": "DISABLING"})
				return nil
			}
		}
		return validation("Table %s does not stream to %s", t.name, in.StreamArn)
	}
	if s.kinesis == nil {
		return validation("ddbstreams: this server has no Kinesis (ddbstreams.WithKinesis)")
	}
	_, name, ok := strings.Cut(in.StreamArn, ":stream/")
	if !strings.HasPrefix(in.StreamArn, "arn:aws:kinesis:") || !ok || name == "" {
		return validation("StreamArn %q is not a Kinesis data stream ARN", in.StreamArn)
	}
	d := &kinesisDest{arn: in.StreamArn, stream: name, precision: "MILLISECOND"}
	if c := in.EnableKinesisStreamingConfiguration; c != nil && c.ApproximateCreationDateTimePrecision != "" {
		if p := c.ApproximateCreationDateTimePrecision; p != "MILLISECOND" && p != "MICROSECOND" {
			return validation("ApproximateCreationDateTimePrecision %q is not MILLISECOND or MICROSECOND", p)
		}
		d.precision = c.ApproximateCreationDateTimePrecision
	}
	t.kinesis = append(t.kinesis, d)
	writeJSON(w, map[string]any{"TableName": t.name, "StreamArn": d.arn, "DestinationStatus": "ENABLING",
		"EnableKinesisStreamingConfiguration": map[string]string{"ApproximateCreationDateTimePrecision": d.precision}})
	return nil
}

// toKinesis puts change c, named name, into each Kinesis destination of
// its table, before the write is answered.
func (s *Server) toKinesis(c change, name string, now time.Time) error {
	for _, d := range c.table.kinesis {
		var rec kinesisRecord
		sum := md5.Sum([]byte(d.arn + "/" + c.table.name + "/" + strconv.FormatInt(now.UnixNano(), 10) + "/" + s.nextSeq()))
		id := hex.EncodeToString(sum[:])
		rec.AWSRegion = s.region
		rec.EventID = id[:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:]
		rec.EventName = name
		rec.UserIdentity = json.RawMessage("null")
		rec.RecordFormat = "application/json"
		rec.TableName = c.table.name
		rec.Dynamodb.ApproximateCreationDateTime = now.UnixMilli()
		if d.precision == "MICROSECOND" {
			rec.Dynamodb.ApproximateCreationDateTime = now.UnixMicro()
			rec.Dynamodb.ApproximateCreationDateTimePrecision = "MICROSECOND"
		}
		rec.Dynamodb.Keys, rec.Dynamodb.NewImage, rec.Dynamodb.OldImage = c.keys, c.after, c.before
		rec.Dynamodb.SizeBytes = itemSize(c.keys) + itemSize(c.after) + itemSize(c.before)
		rec.EventSource = "aws:dynamodb"
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		pk := md5.Sum(c.keys[c.table.hashKey()])
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = s.kinesis.PutRecord(ctx, &kinesis.PutRecordInput{
			StreamName:   aws.String(d.stream),
			PartitionKey: aws.String(strings.ToUpper(hex.EncodeToString(pk[:]))),
			Data:         data,
		})
		cancel()
		if err != nil {
			return fmt.Errorf("ddbstreams: putting a change of table %s into Kinesis stream %s: %w", c.table.name, d.stream, err)
		}
	}
	return nil
}
