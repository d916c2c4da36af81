package engine

import (
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
// patterns name it: "value" in a KafkaEvent, "data" in a KinesisEvent.
func dataField(format idem.EventFormat) string {
	if format == idem.EventFormatKafka {
		return "value"
	}
	return "data"
}

// filtered reports whether r matches none of the mapping's filters: it is
// then skipped and checkpointed, never delivered nor retried, as Lambda
// does. Data that is not JSON matches only patterns that do not look into
// it.
func (m *mapping) filtered(r *idem.Record) bool {
	if len(m.filters) == 0 {
		return false
	}
	ev := make(map[string]any, 7)
	if m.cfg.EventFormat == idem.EventFormatKafka {
		ev["topic"] = r.Stream
		ev["partition"] = float64(r.KafkaPartition())
		ev["offset"] = float64(r.KafkaOffset())
		ev["timestamp"] = float64(r.ArrivalTime.UnixMilli())
		ev["timestampType"] = "CREATE_TIME"
		ev["key"] = r.PartitionKey
	}
	if m.project.Used() {
		if v, err := m.project.Decode(r.Data); err == nil {
			ev[dataField(m.cfg.EventFormat)] = v
		}
	}
	for _, p := range m.filters {
		if p.Match(ev) {
			return false
		}
	}
	return true
}
