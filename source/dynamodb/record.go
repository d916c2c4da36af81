package dynamodb

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// encodeRecord returns the JSON of a stream record as a record of Lambda's
// DynamoDBEvent holds it: eventID, eventName, eventVersion, eventSource,
// awsRegion, dynamodb (ApproximateCreationDateTime in epoch seconds, Keys,
// NewImage, OldImage with typed attribute values, SequenceNumber, SizeBytes,
// StreamViewType), eventSourceARN (the stream's ARN) and, for a delete by
// TTL, userIdentity.
func encodeRecord(r types.Record, streamARN string) ([]byte, error) {
	type identity struct {
		Type        string `json:"type"`
		PrincipalID string `json:"principalId"`
	}
	type change struct {
		ApproximateCreationDateTime json.Number     `json:"ApproximateCreationDateTime,omitempty"`
		Keys                        json.RawMessage `json:"Keys,omitempty"`
		NewImage                    json.RawMessage `json:"NewImage,omitempty"`
		OldImage                    json.RawMessage `json:"OldImage,omitempty"`
		SequenceNumber              string          `json:"SequenceNumber"`
		SizeBytes                   int64           `json:"SizeBytes"`
		StreamViewType              string          `json:"StreamViewType,omitempty"`
	}
	type record struct {
		EventID        string    `json:"eventID"`
		EventName      string    `json:"eventName"`
		EventVersion   string    `json:"eventVersion"`
		EventSource    string    `json:"eventSource"`
		AWSRegion      string    `json:"awsRegion"`
		Dynamodb       change    `json:"dynamodb"`
		EventSourceARN string    `json:"eventSourceARN"`
		UserIdentity   *identity `json:"userIdentity,omitempty"`
	}
	out := record{
		EventID:        aws.ToString(r.EventID),
		EventName:      string(r.EventName),
		EventVersion:   aws.ToString(r.EventVersion),
		EventSource:    aws.ToString(r.EventSource),
		AWSRegion:      aws.ToString(r.AwsRegion),
		EventSourceARN: streamARN,
	}
	if u := r.UserIdentity; u != nil {
		out.UserIdentity = &identity{Type: aws.ToString(u.Type), PrincipalID: aws.ToString(u.PrincipalId)}
	}
	if d := r.Dynamodb; d != nil {
		out.Dynamodb = change{
			SequenceNumber: aws.ToString(d.SequenceNumber),
			SizeBytes:      aws.ToInt64(d.SizeBytes),
			StreamViewType: string(d.StreamViewType),
			Keys:           encodeItem(d.Keys),
			NewImage:       encodeItem(d.NewImage),
			OldImage:       encodeItem(d.OldImage),
		}
		if t := d.ApproximateCreationDateTime; t != nil {
			out.Dynamodb.ApproximateCreationDateTime = epochSeconds(*t)
		}
	}
	return json.Marshal(out)
}

// epochSeconds writes t as Lambda does: seconds, with a fraction only when
// t has one.
func epochSeconds(t time.Time) json.Number {
	if t.Nanosecond() == 0 {
		return json.Number(strconv.FormatInt(t.Unix(), 10))
	}
	return json.Number(strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', -1, 64))
}

// encodeItem returns an item's attributes in DynamoDB's JSON ({"S": ...}),
// names sorted; nil for none.
func encodeItem(item map[string]types.AttributeValue) json.RawMessage {
	if item == nil {
		return nil
	}
	b := []byte{'{'}
	for i, name := range slices.Sorted(maps.Keys(item)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, name)
		b = append(b, ':')
		b = appendValue(b, item[name])
	}
	return append(b, '}')
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendValue appends one attribute value as {"<type>": value}.
func appendValue(b []byte, v types.AttributeValue) []byte {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return append(appendString(append(b, `{"S":`...), v.Value), '}')
	case *types.AttributeValueMemberN:
		return append(appendString(append(b, `{"N":`...), v.Value), '}')
	case *types.AttributeValueMemberB:
		return append(appendString(append(b, `{"B":`...), base64.StdEncoding.EncodeToString(v.Value)), '}')
	case *types.AttributeValueMemberBOOL:
		return append(append(b, `{"BOOL":`...), strconv.FormatBool(v.Value)+"}"...)
	case *types.AttributeValueMemberNULL:
		return append(append(b, `{"NULL":`...), strconv.FormatBool(v.Value)+"}"...)
	case *types.AttributeValueMemberSS:
		return append(appendStrings(append(b, `{"SS":`...), v.Value), '}')
	case *types.AttributeValueMemberNS:
		return append(appendStrings(append(b, `{"NS":`...), v.Value), '}')
	case *types.AttributeValueMemberBS:
		enc := make([]string, len(v.Value))
		for i, x := range v.Value {
			enc[i] = base64.StdEncoding.EncodeToString(x)
		}
		return append(appendStrings(append(b, `{"BS":`...), enc), '}')
	case *types.AttributeValueMemberL:
		b = append(b, `{"L":[`...)
		for i, e := range v.Value {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, e)
		}
		return append(b, "]}"...)
	case *types.AttributeValueMemberM:
		m := v.Value
		if m == nil {
			m = map[string]types.AttributeValue{}
		}
		return append(append(append(b, `{"M":`...), encodeItem(m)...), '}')
	}
	return append(b, "{}"...)
}

// keyString is an item's partition key value as a record's PartitionKey:
// a string or number as written, a binary in base64.
func keyString(v types.AttributeValue) string {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return v.Value
	case *types.AttributeValueMemberN:
		return v.Value
	case *types.AttributeValueMemberB:
		return base64.StdEncoding.EncodeToString(v.Value)
	}
	return ""
}
