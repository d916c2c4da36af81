package engine

import (
	"encoding/json"
	"fmt"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/pattern"
)

// MaxFilters is how many filterCriteria patterns a mapping may have, as
// Lambda's default quota.
const MaxFilters = 5

// compileFilters compiles a mapping's filterCriteria patterns; errors name
// the pattern by index.
func compileFilters(format idem.EventFormat, srcs []string) ([]*pattern.Pattern, error) {
	if len(srcs) > MaxFilters {
		return nil, fmt.Errorf("filterCriteria.filters: %d patterns, above the limit of %d", len(srcs), MaxFilters)
	}
	ps := make([]*pattern.Pattern, len(srcs))
	for i, src := range srcs {
		p, err := pattern.CompileFilter(src, string(format))
		if err != nil {
			return nil, fmt.Errorf("filterCriteria.filters[%d].pattern: %w", i, err)
		}
		ps[i] = p
	}
	return ps, nil
}

// dataField is the event field that holds a record's data, as filter
// patterns name it: "value" in a KafkaEvent, "data" in a KinesisEvent. An
// S3Event's patterns name the data's own fields (rejectsS3), a
// DynamoDBEvent's its converted record's (rejectsDDB).
func dataField(format idem.EventFormat) string {
	if format == idem.EventFormatKafka {
		return "value"
	}
	return "data"
}

// filterSet is a mapping's filterCriteria, compiled: the mapping's own, or
// another mapping's of the same scope read back from its progress
// (store.Progress.Filter), to tell the records that mapping ran from those
// it filtered out.
type filterSet struct {
	format   idem.EventFormat
	patterns []*pattern.Pattern // none: every record is selected
	project  *pattern.Projection
	encoded  string // store.Progress.Filter: "" for no filters
}

// storedFilter is a filterSet as a progress keeps it.
type storedFilter struct {
	Format   idem.EventFormat `json:"format,omitempty"`
	Patterns []string         `json:"patterns"`
}

// newFilterSet compiles a mapping's patterns.
func newFilterSet(format idem.EventFormat, srcs []string) (*filterSet, error) {
	ps, err := compileFilters(format, srcs)
	if err != nil {
		return nil, err
	}
	f := &filterSet{format: format, patterns: ps, project: pattern.NewProjection(dataField(format), ps...)}
	if len(srcs) > 0 {
		b, err := json.Marshal(storedFilter{Format: format, Patterns: srcs})
		if err != nil {
			return nil, fmt.Errorf("encoding filterCriteria: %w", err)
		}
		f.encoded = string(b)
	}
	return f, nil
}

// decodeFilterSet compiles a filter as a progress keeps it.
func decodeFilterSet(encoded string) (*filterSet, error) {
	if encoded == "" {
		return &filterSet{}, nil
	}
	var sf storedFilter
	if err := json.Unmarshal([]byte(encoded), &sf); err != nil {
		return nil, fmt.Errorf("decoding a stored filter: %w", err)
	}
	return newFilterSet(sf.Format, sf.Patterns)
}

// rejects reports whether r matches none of the patterns: it is then
// skipped and checkpointed, never delivered nor retried, as Lambda does.
// Data that is not JSON matches only patterns that do not look into it. A
// mapping that sends S3Events also rejects test notifications.
func (f *filterSet) rejects(r *idem.Record) bool {
	switch f.format {
	case idem.EventFormatS3:
		return f.rejectsS3(r)
	case idem.EventFormatDynamoDB:
		return f.rejectsDDB(r)
	}
	if len(f.patterns) == 0 {
		return false
	}
	ev := make(map[string]any, 7)
	if f.format == idem.EventFormatKafka {
		ev["topic"] = r.Stream
		ev["partition"] = float64(r.KafkaPartition())
		ev["offset"] = float64(r.KafkaOffset())
		ev["timestamp"] = float64(r.ArrivalTime.UnixMilli())
		ev["timestampType"] = "CREATE_TIME"
		ev["key"] = r.PartitionKey
	}
	if f.project.Used() {
		if v, err := f.project.Decode(r.Data); err == nil {
			ev[dataField(f.format)] = v
		}
	}
	for _, p := range f.patterns {
		if p.Match(ev) {
			return false
		}
	}
	return true
}
