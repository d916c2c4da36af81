package main

import (
	"fmt"
	"hash/fnv"
)

// recordSize is the size of every record's data in bytes.
const recordSize = 100

// idOffset and idLen locate a record's id inside its data: the data is
// {"id":"evt-000000123","pad":"..."}, so every system reads the id the same
// cheap way (idOf) instead of decoding JSON.
const (
	idOffset = len(`{"id":"`)
	idLen    = len("evt-000000000")
)

// record is one input record: a distinct id and about 100 bytes of data
// that carry the id.
type record struct {
	// ID is the record's id, "evt-" and nine digits; it is the row's
	// primary key, DBOS's workflow ID and watermill's message UUID.
	ID string `json:"id"`
	// Data is the record's payload, recordSize bytes of JSON holding ID.
	Data []byte `json:"data"`
}

// makeRecords returns n records with distinct ids, evt-000000000 on.
func makeRecords(n int) []record {
	const prefix, middle, suffix = `{"id":"`, `","pad":"`, `"}`
	pad := recordSize - len(prefix) - idLen - len(middle) - len(suffix)
	recs := make([]record, n)
	for i := range recs {
		id := fmt.Sprintf("evt-%09d", i)
		d := make([]byte, 0, recordSize)
		d = append(d, prefix...)
		d = append(d, id...)
		d = append(d, middle...)
		for j := range pad {
			d = append(d, byte('a'+(i+j)%26))
		}
		d = append(d, suffix...)
		recs[i] = record{ID: id, Data: d}
	}
	return recs
}

// idOf returns the id a record's data carries.
func idOf(data []byte) (string, error) {
	if len(data) < idOffset+idLen {
		return "", fmt.Errorf("record data %q: too short to hold an id", data)
	}
	return string(data[idOffset : idOffset+idLen]), nil
}

// partitionOf returns the partition, 0 to parts-1, that the hand-written
// loop reads id from.
func partitionOf(id string, parts int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(parts))
}
